"""Device profiles: what each supported board offers (memory, versions, precisions, power modes, rails).

Profiles are TOML data files shipped in ``devices/profiles/``; the exporter and the TensorRT builder
read them to choose precisions and a builder workspace that fits the board.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from edgeconf.devices.errors import ProfileError, UnknownProfileError

try:
    import tomllib as _toml  # novermin (Python 3.11+; tomli below)
except ImportError:  # pragma: no cover - the Python 3.8 Jetson images
    import tomli as _toml  # type: ignore[no-redef]

if TYPE_CHECKING:
    from edgeconf.devices.detect import Board

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
KINDS = ("jetson", "x86", "x86-nvidia")
SENSORS = ("iio", "hwmon", "rapl", "nvml", "none", "auto")
PRECISIONS = ("fp32", "fp16", "int8")
#: Profile used when a Jetson's model string matches no profile.
GENERIC_JETSON = "jetson-generic"
#: Profile used for hosts that are neither a known Jetson nor an x86 with an NVIDIA GPU.
GENERIC_CPU = "x86-cpu"
GENERIC_NVIDIA = "x86-nvidia"


class UnknownBoardWarning(UserWarning):
    """The board is not one of the profiles: a generic profile with conservative values is used."""


@dataclass(frozen=True)
class PowerMode:
    """One nvpmodel mode: ``sudo nvpmodel -m <id>``."""

    id: int
    name: str
    watts: float


@dataclass(frozen=True)
class Rail:
    """A power-monitor channel; ``whole_board`` marks the one that measures the board's input."""

    name: str
    whole_board: bool = False


@dataclass(frozen=True)
class ThreadHints:
    """ONNX Runtime intra-op threads for this board: for batch-1 work and for batches (``[threads]`` table)."""

    batch1: int = 1
    batched: int = 1
    spinning: bool = False

    def to_json(self) -> Dict[str, Any]:
        return {"batch1": self.batch1, "batched": self.batched, "spinning": self.spinning}


@dataclass(frozen=True)
class DeviceProfile:
    """What a board offers. ``memory_mb == 0`` means "not fixed: read the host"."""

    id: str
    name: str
    kind: str
    memory_mb: int
    jetpack: Optional[str]
    tensorrt: Optional[str]  # expected major.minor, e.g. "8.2"
    cuda_compute: Optional[str]  # e.g. "5.3"
    precisions: Tuple[str, ...]  # precisions the GPU runs fast
    int8: bool
    trt_workspace_mb: int  # a TensorRT builder workspace that fits in memory
    power_modes: Tuple[PowerMode, ...]
    rails: Tuple[Rail, ...]
    match: Tuple[str, ...]  # substrings of /proc/device-tree/model
    sensor: str = "auto"  # which power-sensor layout the board has
    source_file: str = ""
    threads: ThreadHints = ThreadHints()  # ONNX Runtime threading (edgeconf.backends.threads reads it)

    @property
    def whole_board_rail(self) -> Optional[str]:
        """Name of the rail that measures the whole board, if one does."""
        for r in self.rails:
            if r.whole_board:
                return r.name
        return None

    @property
    def fp16(self) -> bool:
        return "fp16" in self.precisions

    def power_mode(self, mode_id: int) -> PowerMode:
        for m in self.power_modes:
            if m.id == mode_id:
                return m
        raise ProfileError("%s has no power mode %d (modes: %s)"
                           % (self.name, mode_id, ", ".join("%d=%s" % (m.id, m.name) for m in self.power_modes) or "none"))

    def to_json(self) -> Dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "kind": self.kind, "memory_mb": self.memory_mb,
            "jetpack": self.jetpack, "tensorrt": self.tensorrt, "cuda_compute": self.cuda_compute,
            "precisions": list(self.precisions), "int8": self.int8, "trt_workspace_mb": self.trt_workspace_mb,
            "power_modes": [{"id": m.id, "name": m.name, "watts": m.watts} for m in self.power_modes],
            "rails": [{"name": r.name, "whole_board": r.whole_board} for r in self.rails],
            "match": list(self.match), "sensor": self.sensor, "threads": self.threads.to_json(),
        }


def _opt_str(data: Dict[str, Any], key: str, where: str) -> Optional[str]:
    v = data.get(key)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise ProfileError("%s: %s must be a string, got %r" % (where, key, v))
    return v


def _req(data: Dict[str, Any], key: str, typ: Any, where: str) -> Any:
    if key not in data:
        raise ProfileError("%s: missing required key %r" % (where, key))
    v = data[key]
    if typ is int and isinstance(v, bool) or not isinstance(v, typ):
        raise ProfileError("%s: %s must be %s, got %r" % (where, key, getattr(typ, "__name__", typ), v))
    return v


def parse_profile(data: Dict[str, Any], where: str = "<profile>") -> DeviceProfile:
    """Validate one profile's TOML table and build the dataclass (errors name the file and key)."""
    pid = _req(data, "id", str, where)
    kind = _req(data, "kind", str, where)
    if kind not in KINDS:
        raise ProfileError("%s: kind must be one of %s, got %r" % (where, ", ".join(KINDS), kind))
    precisions = tuple(_req(data, "precisions", list, where))
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ProfileError("%s: precisions must be a non-empty subset of %s, got %r" % (where, PRECISIONS, list(precisions)))
    modes = []
    for i, m in enumerate(data.get("power_modes", [])):
        w = "%s: power_modes[%d]" % (where, i)
        watts = _req(m, "watts", (int, float), w)
        modes.append(PowerMode(int(_req(m, "id", int, w)), _req(m, "name", str, w), float(watts)))
    rails = []
    for i, r in enumerate(data.get("rails", [])):
        w = "%s: rails[%d]" % (where, i)
        rails.append(Rail(_req(r, "name", str, w), bool(r.get("whole_board", False))))
    if sum(r.whole_board for r in rails) > 1:
        raise ProfileError("%s: at most one rail can be whole_board" % where)
    sensor = data.get("sensor", "auto")
    if sensor not in SENSORS:
        raise ProfileError("%s: sensor must be one of %s, got %r" % (where, ", ".join(SENSORS), sensor))
    threads = _thread_hints(data.get("threads", {}), where)
    memory = _req(data, "memory_mb", int, where)
    workspace = _req(data, "trt_workspace_mb", int, where)
    if memory < 0 or workspace < 0:
        raise ProfileError("%s: memory_mb and trt_workspace_mb must be >= 0" % where)
    return DeviceProfile(
        id=pid, name=_req(data, "name", str, where), kind=kind, memory_mb=memory,
        jetpack=_opt_str(data, "jetpack", where), tensorrt=_opt_str(data, "tensorrt", where),
        cuda_compute=_opt_str(data, "cuda_compute", where), precisions=precisions,
        int8=bool(_req(data, "int8", bool, where)), trt_workspace_mb=workspace,
        power_modes=tuple(modes), rails=tuple(rails),
        match=tuple(str(s) for s in data.get("match", [])), sensor=sensor, source_file=where, threads=threads,
    )


def _thread_hints(data: Any, where: str) -> ThreadHints:
    if not isinstance(data, dict):
        raise ProfileError("%s: threads must be a table (batch1, batched, spinning), got %r" % (where, data))
    unknown = sorted(set(data) - {"batch1", "batched", "spinning"})
    if unknown:
        raise ProfileError("%s: unknown threads keys %s; known: batch1, batched, spinning" % (where, unknown))
    counts = []
    for key in ("batch1", "batched"):
        v = data.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ProfileError("%s: threads.%s must be an integer >= 1, got %r" % (where, key, v))
        counts.append(v)
    spinning = data.get("spinning", False)
    if not isinstance(spinning, bool):
        raise ProfileError("%s: threads.spinning must be true or false, got %r" % (where, spinning))
    return ThreadHints(counts[0], counts[1], spinning)


def load_profile_file(path: Path) -> DeviceProfile:
    """Read and validate one profile TOML file."""
    try:
        with open(path, "rb") as fh:
            data = _toml.load(fh)
    except OSError as exc:
        raise ProfileError("cannot read device profile %s: %s" % (path, exc)) from exc
    except _toml.TOMLDecodeError as exc:
        raise ProfileError("device profile %s is not valid TOML: %s" % (path, exc)) from exc
    prof = parse_profile(data, str(path))
    if prof.id != path.stem:
        raise ProfileError("device profile %s has id %r; the id must match the file name" % (path, prof.id))
    return prof


_CACHE: Dict[str, DeviceProfile] = {}


def _load_all() -> Dict[str, DeviceProfile]:
    if not _CACHE:
        files = sorted(PROFILE_DIR.glob("*.toml"))
        if not files:
            raise ProfileError("no device profiles found in %s; the installation is incomplete" % PROFILE_DIR)
        for f in files:
            p = load_profile_file(f)
            _CACHE[p.id] = p
    return _CACHE


def list_profiles() -> List[DeviceProfile]:
    """Every shipped profile, sorted by id."""
    return [p for _, p in sorted(_load_all().items())]


def get_profile(profile_id: str) -> DeviceProfile:
    """The profile with this id; :class:`UnknownProfileError` names the known ids otherwise."""
    profiles = _load_all()
    if profile_id not in profiles:
        raise UnknownProfileError("unknown device profile %r; known profiles: %s" % (profile_id, ", ".join(sorted(profiles))))
    return profiles[profile_id]


def match_model(model: str) -> Optional[DeviceProfile]:
    """The profile whose ``match`` substring is the longest one found in a device-tree model string."""
    best: Optional[DeviceProfile] = None
    best_len = 0
    low = model.lower()
    for p in list_profiles():
        for s in p.match:
            if s and s.lower() in low and len(s) > best_len:
                best, best_len = p, len(s)
    return best


def profile_for(board: "Board") -> DeviceProfile:
    """The profile of a detected board; an unknown board gets a generic profile and a warning."""
    if board.profile_id:
        return get_profile(board.profile_id)
    if board.kind == "jetson":
        fallback = GENERIC_JETSON
    elif board.has_nvidia_gpu:
        fallback = GENERIC_NVIDIA
    else:
        fallback = GENERIC_CPU
    warnings.warn("unknown board %r (%s): using the generic profile %r with conservative values; "
                  "pass an explicit profile id if you know better" % (board.model or "no model string", board.kind, fallback),
                  UnknownBoardWarning, stacklevel=2)
    return get_profile(fallback)
