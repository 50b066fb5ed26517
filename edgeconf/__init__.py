"""edgeconf: confidence-aware classifier cascades with a memo cache, for NVIDIA Jetson boards.

The base package needs only numpy, onnx, onnxruntime, OpenCV, click and rich; torch, PySide6,
TensorRT and pycuda are optional and imported at first use.
"""
from __future__ import annotations

__version__ = "0.1.0"

from edgeconf.errors import EdgeconfError  # noqa: E402

__all__ = ["__version__", "EdgeconfError"]
