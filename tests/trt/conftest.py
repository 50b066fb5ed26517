"""Fixtures of the TensorRT tests (tests/trt is on sys.path for trt_fakes)."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
