"""Import heavy optional modules at first use, with a message that names what to install."""
from __future__ import annotations

import importlib
import re
import sys
from types import ModuleType
from typing import Dict, Optional, Sequence, Tuple

from edgeconf.errors import MissingDependencyError

#: pyproject.toml's extras, as the packages they install (environment markers dropped; tests/test_install.py keeps
#: the two the same). edgeconf is not on PyPI, so a hint names these packages, never 'edgeconf[extra]'.
EXTRAS: Dict[str, Tuple[str, ...]] = {
    "cpu": ("onnxruntime>=1.12.0", "opencv-python-headless>=4.5.1"),
    "torch": ("torch>=2.1", "onnxscript", "safetensors"),
    "gui": ("PySide6-Essentials>=6.5,!=6.12.0", "pyqtgraph>=0.13"),
    "tensorrt": ("tensorrt", "pycuda"),
    "jetson": ("jetson-stats>=4.2",),
    "pipeline": ("scipy>=1.5", "motmetrics>=1.4"),
    "bench": ("matplotlib>=3.3",),
    "fleet": ("tritonclient[grpc,http]>=2.30", "paho-mqtt>=1.6"),
}
#: Extras that install nothing on an older Python (``python_version >= '3.10'`` in pyproject.toml).
EXTRA_MIN_PYTHON: Dict[str, Tuple[int, int]] = {"torch": (3, 10), "gui": (3, 10)}

#: Each optional top-level module: the extra that provides it and its package there (None: in no extra).
MODULES: Dict[str, Tuple[Optional[str], str]] = {
    "onnxruntime": ("cpu", "onnxruntime"),
    "cv2": ("cpu", "opencv-python-headless"),
    "torch": ("torch", "torch"),
    "onnxscript": ("torch", "onnxscript"),
    "safetensors": ("torch", "safetensors"),
    "PySide6": ("gui", "PySide6-Essentials"),
    "pyqtgraph": ("gui", "pyqtgraph"),
    "tensorrt": ("tensorrt", "tensorrt"),
    "pycuda": ("tensorrt", "pycuda"),
    "jtop": ("jetson", "jetson-stats"),
    "pynvml": (None, "nvidia-ml-py"),
    "scipy": ("pipeline", "scipy"),
    "motmetrics": ("pipeline", "motmetrics"),
    "matplotlib": ("bench", "matplotlib"),
    "tritonclient": ("fleet", "tritonclient"),
    "paho": ("fleet", "paho-mqtt"),
}
#: More to say after the pip command (off a Jetson; on one, install_hint says what applies to that board).
NOTES = {
    "onnxruntime": "on a Jetson: NVIDIA's onnxruntime-gpu wheel instead",
    "cv2": "on a Jetson: JetPack's OpenCV instead",
    "torch": ("CPU-only: pip install torch --index-url https://download.pytorch.org/whl/cpu; "
              "on a Jetson: NVIDIA's PyTorch wheel for its JetPack"),
    "tensorrt": "on a Jetson: JetPack's python3-libnvinfer",
    "pycuda": "on a Jetson it builds against JetPack's CUDA",
    "jtop": "then run 'sudo jtop --install-service'",
}
#: The Python that JetPack's own Python packages (python3-opencv, python3-libnvinfer) are built for, per L4T
#: major release: JetPack 4 (R32) Ubuntu 18.04, JetPack 5 (R34, R35) Ubuntu 20.04, JetPack 6 (R36) Ubuntu 22.04.
JETPACK_PYTHON: Dict[str, Tuple[int, int]] = {"32": (3, 6), "34": (3, 8), "35": (3, 8), "36": (3, 10)}


def _requirement_name(requirement: str) -> str:
    m = re.match(r"[\w.-]+", requirement)
    return m.group(0) if m else requirement


def _pip(requirements: Sequence[str]) -> str:
    """``pip install`` with each requirement quoted for the shell where it needs it."""
    return "pip install " + " ".join("'%s'" % r if re.search(r"[^\w.-]", r) else r for r in requirements)


def _python(python: Optional[Sequence[int]]) -> Tuple[int, int]:
    v = tuple(python if python is not None else sys.version_info)[:2]
    return int(v[0]), int(v[1])


def python_too_old(extra: Optional[str], python: Optional[Sequence[int]] = None) -> Optional[str]:
    """Why ``extra`` installs nothing on this Python (one line), or None where it does."""
    py = _python(python)
    need = EXTRA_MIN_PYTHON.get(extra or "")
    if need is None or py >= need:
        return None
    return ("this needs Python >= %d.%d, and this is Python %d.%d, on which edgeconf's [%s] extra installs "
            "nothing: run it where Python %d.%d or newer is installed" % (need + py + (extra,) + need))


def needs_newer_python(top: str, python: Optional[Sequence[int]] = None) -> bool:
    """Whether the module ``top`` comes from an extra that installs nothing on this Python."""
    return python_too_old(MODULES.get(top, (None, top))[0], python) is not None


def extra_hint(extra: str, python: Optional[Sequence[int]] = None) -> str:
    """What to install for pyproject.toml's extra ``extra`` here: its packages, or the Python it needs."""
    too_old = python_too_old(extra, python)
    if too_old:
        return too_old
    return "%s (edgeconf's [%s] extra; in a clone of edgeconf: pip install '.[%s]')" % (_pip(EXTRAS[extra]), extra, extra)


#: Jetson Zoo: NVIDIA's onnxruntime-gpu wheels per JetPack (CUDA and TensorRT execution providers).
JETSON_ZOO = "https://elinux.org/Jetson_Zoo#ONNX_Runtime"


def jetson_release(root: str = "/") -> Optional[str]:
    """The L4T release of a Jetson (``"35.4.1"``), or None elsewhere (read from ``/etc/nv_tegra_release``)."""
    from edgeconf.devices.detect import read_l4t

    try:
        return read_l4t(root)
    except OSError:
        return None


def jetpack_python(l4t: Optional[str]) -> Optional[Tuple[int, int]]:
    """The Python JetPack's own Python packages are built for on L4T release ``l4t`` (None when unknown)."""
    return JETPACK_PYTHON.get((l4t or "").split(".")[0])


def install_hint(top: str, root: str = "/", python: Optional[Sequence[int]] = None) -> str:
    """What to install for the missing module ``top``, on this board and this Python (``python``: for tests).

    On a Jetson, pip's CPU builds would replace NVIDIA's: ``onnxruntime`` shares the ``onnxruntime/`` folder
    with the ``onnxruntime-gpu`` wheel, and a pip OpenCV shadows JetPack's GStreamer build (CSI cameras).
    JetPack's OpenCV and TensorRT bindings exist only for its own Python (3.6 on JetPack 4, as on a Nano,
    whose edgeconf runs in a Python 3.8 venv); on another Python the hint says what works there instead.
    """
    py = _python(python)
    extra, package = MODULES.get(top, (None, top))
    too_old = python_too_old(extra, py)
    if too_old:
        return too_old
    l4t = jetson_release(root) if top in ("onnxruntime", "cv2", "tensorrt") else None
    if l4t is not None:
        return _jetson_hint(top, l4t, py)
    requirement = [r for r in EXTRAS.get(extra or "", ()) if _requirement_name(r) == package] or [package]
    notes = (["edgeconf's [%s] extra" % extra] if extra else []) + ([NOTES[top]] if top in NOTES else [])
    return _pip(requirement) + (" (%s)" % "; ".join(notes) if notes else "")


def _jetson_hint(top: str, l4t: str, python: Tuple[int, int]) -> str:
    from edgeconf.devices.detect import jetpack_for

    jp = jetpack_for(l4t)
    board = "this Jetson (L4T %s%s)" % (l4t, ", JetPack %s" % jp if jp else "")
    here = "Python %d.%d" % python
    own = jetpack_python(l4t)
    venv = "in a venv, create it with --system-site-packages"
    if top == "onnxruntime":
        return ("on %s install NVIDIA's onnxruntime-gpu wheel for %s and %s from the Jetson Zoo (%s), or one "
                "built from source, with pip3 install <wheel>; not pip's onnxruntime (the [cpu] extra), which "
                "would replace it" % (board, "JetPack %s" % jp if jp else "its JetPack", here, JETSON_ZOO))
    if own is not None and own != python:
        what = "OpenCV is" if top == "cv2" else "TensorRT bindings (python3-libnvinfer) are"
        other = "JetPack's %s built for Python %d.%d only, not this %s" % (what, own[0], own[1], here)
        if top == "cv2":
            return ("on %s %s: pip install opencv-python-headless for USB cameras (v4l2://), video files and "
                    "folders, or build OpenCV for %s with -D WITH_GSTREAMER=ON for csi:// cameras"
                    % (board, other, here))
        return ("on %s %s: use the onnxruntime backend with its TensorRT provider (onnxruntime-gpu), or build "
                "TensorRT's Python bindings for %s from NVIDIA's TensorRT OSS sources" % (board, other, here))
    if top == "cv2":
        return ("on %s use JetPack's OpenCV (sudo apt install python3-opencv, or nvidia-opencv; %s), which has "
                "GStreamer for csi:// cameras; do not pip install opencv-python or the [cpu] extra there"
                % (board, venv))
    return "on %s use JetPack's TensorRT bindings (sudo apt install python3-libnvinfer; %s)" % (board, venv)


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        hint = install_hint(top)
        what = " for %s" % purpose if purpose else ""
        raise MissingDependencyError(
            "%s is needed%s but cannot be imported (%s); %s%s"
            % (module, what, exc, "" if needs_newer_python(top) else "install it: ", hint)
        ) from exc
