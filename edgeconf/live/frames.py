"""The values a frame source produces: a frame and, for synthetic scenes, the ground truth of its objects.

Kept apart from the sources so the scenes that make frames (``demo_scene``) and the sources that deliver
them import the same types without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np


@dataclass
class TruthObject:
    """Ground truth of one object in a synthetic frame: track id, box (x1, y1, x2, y2) in pixels, class, and the
    index of the sample image it shows (``item``; None where unknown)."""

    id: int
    box: Tuple[float, float, float, float]
    class_id: int
    visible_fraction: float = 1.0
    item: Optional[int] = None


@dataclass
class Frame:
    """One captured frame: H×W×3 uint8 RGB image, its index in the stream, capture time (perf_counter)."""

    image: np.ndarray
    index: int
    timestamp_s: float
    truth: Optional[List[TruthObject]] = None
