"""Which board is this: a Jetson (model string, L4T release, JetPack guess), x86 with or without an NVIDIA GPU.

Every reader takes a ``root`` path (default ``/``) so tests run against fake ``/proc`` and ``/sys`` trees.
"""
from __future__ import annotations

import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from edgeconf.devices.profiles import GENERIC_CPU, GENERIC_NVIDIA, match_model

PathLike = Union[str, Path]

#: L4T release -> JetPack release (NVIDIA's JetPack archive). Longest matching prefix wins.
L4T_TO_JETPACK: Dict[str, str] = {
    "32.4.3": "4.4", "32.4.4": "4.4.1", "32.5": "4.5", "32.5.1": "4.5.1", "32.5.2": "4.5.1",
    "32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4",
    "32.7.5": "4.6.5", "32.7.6": "4.6.6",
    "35.1": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5": "5.1.3", "35.6": "5.1.4",
    "36.2": "6.0 DP", "36.3": "6.0", "36.4": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1",
}
_TEGRA_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")
_NVIDIA_VENDOR = "0x10de"
_DISPLAY_CLASSES = ("0x0300", "0x0302")  # VGA controller, 3D controller


@dataclass(frozen=True)
class Board:
    """What :func:`detect_board` found. ``profile_id`` is None when no profile matches the board."""

    kind: str  # "jetson" | "x86" | "x86-nvidia" | "other"
    model: str  # /proc/device-tree/model, or the CPU model name elsewhere
    l4t: Optional[str]  # e.g. "32.7.1"
    jetpack: Optional[str]  # guessed from the L4T release, e.g. "4.6.1"
    has_nvidia_gpu: bool
    profile_id: Optional[str]
    machine: str = ""  # platform.machine(): x86_64, aarch64, ...
    memory_mb: Optional[int] = None  # MemTotal from /proc/meminfo

    @property
    def is_jetson(self) -> bool:
        return self.kind == "jetson"

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


def _read_text(path: Path) -> Optional[str]:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return None


def read_model(root: PathLike = "/") -> Optional[str]:
    """``/proc/device-tree/model`` without its trailing NUL, or None where the file is absent."""
    text = _read_text(Path(root) / "proc/device-tree/model")
    if text is None:
        return None
    text = text.replace("\x00", "").strip()
    return text or None


def read_l4t(root: PathLike = "/") -> Optional[str]:
    """The L4T release from ``/etc/nv_tegra_release`` (``# R32 (release), REVISION: 7.1`` -> ``32.7.1``)."""
    text = _read_text(Path(root) / "etc/nv_tegra_release")
    if not text:
        return None
    m = _TEGRA_RE.search(text)
    if not m:
        return None
    return "%s.%s" % (m.group(1), m.group(2).strip("."))


def jetpack_for(l4t: Optional[str]) -> Optional[str]:
    """Best guess of the JetPack release for an L4T release (None when unknown)."""
    if not l4t:
        return None
    best, best_len = None, -1
    for key, jp in L4T_TO_JETPACK.items():
        if (l4t == key or l4t.startswith(key + ".")) and len(key) > best_len:
            best, best_len = jp, len(key)
    return best


def read_memory_mb(root: PathLike = "/") -> Optional[int]:
    text = _read_text(Path(root) / "proc/meminfo")
    if not text:
        return None
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) // 1024 if m else None


def _cpu_model(root: Path) -> str:
    text = _read_text(root / "proc/cpuinfo") or ""
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else ""


def cpu_model(root: PathLike = "/") -> Optional[str]:
    """The CPU's model name from /proc/cpuinfo (None where it has none, e.g. many ARM boards)."""
    return _cpu_model(Path(root)) or None


def cpu_flags(root: PathLike = "/") -> List[str]:
    """The vector-extension flags of the CPU that matter for INT8 kernels (AVX, AVX2, AVX-512, VNNI, AMX), sorted."""
    text = _read_text(Path(root) / "proc/cpuinfo") or ""
    m = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
    flags = m.group(1).split() if m else []
    return sorted(f for f in flags if f.startswith(("avx512", "avx_vnni", "amx")) or f in ("avx2", "avx"))


def has_nvidia_pci_gpu(root: PathLike = "/") -> bool:
    """True when the NVIDIA driver is loaded or a PCI display device has NVIDIA's vendor id."""
    root = Path(root)
    if (root / "proc/driver/nvidia/version").exists():
        return True
    pci = root / "sys/bus/pci/devices"
    try:
        devices = sorted(pci.iterdir())
    except OSError:
        return False
    for dev in devices:
        vendor = (_read_text(dev / "vendor") or "").strip().lower()
        cls = (_read_text(dev / "class") or "").strip().lower()
        if vendor == _NVIDIA_VENDOR and cls[:6] in _DISPLAY_CLASSES:
            return True
    return False


def detect_board(root: PathLike = "/", machine: Optional[str] = None) -> Board:
    """Detect the board under ``root``. ``machine`` overrides ``platform.machine()`` (for fake trees)."""
    root = Path(root)
    machine = machine if machine is not None else platform.machine()
    model = read_model(root)
    l4t = read_l4t(root)
    memory = read_memory_mb(root)
    is_jetson = (model is not None and "jetson" in model.lower()) or l4t is not None
    if is_jetson:
        prof = match_model(model or "")
        return Board("jetson", model or "unknown Jetson", l4t, jetpack_for(l4t), True,
                     prof.id if prof else None, machine, memory)
    gpu = has_nvidia_pci_gpu(root)
    if machine.lower() in ("x86_64", "amd64", "i386", "i686", "x86"):
        kind = "x86-nvidia" if gpu else "x86"
        return Board(kind, model or _cpu_model(root) or machine, None, None, gpu,
                     GENERIC_NVIDIA if gpu else GENERIC_CPU, machine, memory)
    # Neither a Jetson nor x86 (a Raspberry Pi, an Arm server...): no profile, profile_for() warns.
    return Board("other", model or _cpu_model(root) or machine or "unknown", None, None, gpu, None, machine, memory)
