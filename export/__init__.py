"""edgeconf.export: turn classifiers into confidence-aware ONNX artifacts, bundles and engines.

Torch is imported only inside the PyTorch paths (the ``[torch]`` extra).
"""
from __future__ import annotations
