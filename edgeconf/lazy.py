"""Import heavy optional modules at first use, with a message that names what to install."""
from __future__ import annotations

import importlib
from types import ModuleType

from edgeconf.errors import MissingDependencyError

#: What to install for each optional top-level module.
INSTALL_HINTS = {
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


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        hint = INSTALL_HINTS.get(top, "pip install %s" % top)
        what = " for %s" % purpose if purpose else ""
        raise MissingDependencyError(
            "%s is needed%s but cannot be imported (%s); install it: %s" % (module, what, exc, hint)
        ) from exc
