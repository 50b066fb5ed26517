"""Import heavy optional modules at first use, with a message that names what to install."""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

from edgeconf.errors import MissingDependencyError

#: What to install for each optional top-level module.
INSTALL_HINTS = {
    "onnxruntime": "pip install 'edgeconf[cpu]' (on a Jetson: NVIDIA's onnxruntime-gpu wheel instead)",
    "cv2": "pip install 'edgeconf[cpu]' (on a Jetson: JetPack's OpenCV instead)",
    "torch": "pip install 'edgeconf[torch]' (on this machine: pip install torch==2.13.0)",
    "onnxscript": "pip install 'edgeconf[torch]'",
    "safetensors": "pip install 'edgeconf[torch]'",
    "PySide6": "pip install 'edgeconf[gui]'",
    "pyqtgraph": "pip install 'edgeconf[gui]'",
    "tensorrt": "on a Jetson install JetPack's python3-libnvinfer; elsewhere pip install 'edgeconf[tensorrt]'",
    "pycuda": "on a Jetson: pip install pycuda (needs CUDA from JetPack); elsewhere pip install 'edgeconf[tensorrt]'",
    "jtop": "pip install 'edgeconf[jetson]' and run 'sudo jtop --install-service'",
    "pynvml": "pip install nvidia-ml-py",
    "scipy": "pip install 'edgeconf[pipeline]'",
    "matplotlib": "pip install 'edgeconf[bench]'",
    "motmetrics": "pip install motmetrics",
    "tritonclient": "pip install 'edgeconf[fleet]'",
    "paho": "pip install 'edgeconf[fleet]'",
}


#: Jetson Zoo: NVIDIA's onnxruntime-gpu wheels per JetPack (CUDA and TensorRT execution providers).
JETSON_ZOO = "https://elinux.org/Jetson_Zoo#ONNX_Runtime"


def jetson_release(root: str = "/") -> Optional[str]:
    """The L4T release of a Jetson (``"35.4.1"``), or None elsewhere (read from ``/etc/nv_tegra_release``)."""
    from edgeconf.devices.detect import read_l4t

    try:
        return read_l4t(root)
    except OSError:
        return None


def install_hint(top: str, root: str = "/") -> str:
    """What to install for the missing module ``top``; ONNX Runtime and OpenCV differ on a Jetson.

    On a Jetson, pip's CPU builds would replace NVIDIA's: ``onnxruntime`` shares the ``onnxruntime/`` folder
    with the ``onnxruntime-gpu`` wheel, and a pip OpenCV shadows JetPack's GStreamer build (CSI cameras).
    """
    l4t = jetson_release(root) if top in ("onnxruntime", "cv2") else None
    if l4t is not None:
        from edgeconf.devices.detect import jetpack_for

        jp = jetpack_for(l4t)
        board = "this Jetson (L4T %s%s)" % (l4t, ", JetPack %s" % jp if jp else "")
        if top == "onnxruntime":
            return ("on %s install NVIDIA's onnxruntime-gpu wheel for your JetPack and Python from the Jetson Zoo "
                    "(%s) with pip3 install <wheel>; not 'edgeconf[cpu]', whose CPU onnxruntime would replace it"
                    % (board, JETSON_ZOO))
        return ("on %s use JetPack's OpenCV (sudo apt install python3-opencv, or nvidia-opencv), which has GStreamer "
                "for csi:// cameras; do not pip install opencv-python or 'edgeconf[cpu]' there" % board)
    return INSTALL_HINTS.get(top, "pip install %s" % top)


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        hint = install_hint(top)
        what = " for %s" % purpose if purpose else ""
        raise MissingDependencyError(
            "%s is needed%s but cannot be imported (%s); install it: %s" % (module, what, exc, hint)
        ) from exc
