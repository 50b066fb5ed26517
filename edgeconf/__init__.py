"""edgeconf: confidence-aware classifier cascades with a memo cache, for NVIDIA Jetson boards.

The base package needs only numpy, onnx, onnxruntime, OpenCV, click and rich; torch, PySide6,
TensorRT and pycuda are optional and imported at first use.
"""
from __future__ import annotations

import os

__version__ = "0.1.0"

from edgeconf.errors import EdgeconfError  # noqa: E402

#: Folder of the files shipped inside the package: the model zoo and the demo scene's FashionMNIST sample.
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def data_path(*parts: str) -> str:
    """Path of a file or folder shipped in the package data, e.g. ``data_path("zoo", "bundle")``."""
    return os.path.join(DATA_DIR, *parts)


__all__ = ["__version__", "EdgeconfError", "DATA_DIR", "data_path"]
