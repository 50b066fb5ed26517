"""Labelled crops cut from the demo scene: what a region proposer hands the classifier, good boxes and bad.

Used to fit the shipped bundle's out-of-distribution head (``scripts/fit_ood.py``, on training seeds) and to
measure it (``benchmarks/bench_unknown.py``, on the held-out seeds). Kinds:

* ``object`` — an object's truth box, at least 90 % of it visible: must keep its class;
* ``object_jitter`` — the same box moved and resized by up to ±6 % of its side, as a detector draws it: must keep its class;
* ``border`` — an object cut by the frame edge with less than half of its square inside (a sliver): no class;
* ``merged`` — the union box of two objects within 20 px of each other, neither filling 70 % of it: no class;
* ``background`` — a random box (36–120 px) that overlaps no object by more than 10 % of its area: no class;
* ``partial`` — cut by the frame edge with half to 90 % inside, or hidden by another object: reported, no target;
* ``sliver`` (only with ``slivers=True``, for fitting) — a strip of 12–45 % of a whole object at one of its sides,
  as the frame edge cuts one: no class.

``fraction`` is the visible share for objects, the share of the square inside the frame for border/partial crops
(estimated from the clipped box), the larger object's share of the union box for merged crops.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np

KINDS = ("object", "object_jitter", "border", "partial", "merged", "background", "sliver")
#: crops that are no class: answering them with a class is a mistake
NO_CLASS = ("border", "merged", "background")
KEEP_CLASS = ("object", "object_jitter")

Box = Tuple[float, float, float, float]


@dataclass
class SceneCrop:
    """One crop (RGB uint8) with what it shows."""

    image: np.ndarray
    kind: str
    class_id: int  # the object's class for object/partial/border crops, -1 otherwise
    fraction: float
    frame: int
    box: Box


def cut(image: np.ndarray, box: Sequence[float], min_side: int = 4) -> Optional[np.ndarray]:
    """The pixels of ``box`` (clipped to the image), or None when fewer than ``min_side`` remain on a side."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 - x1 < min_side or y2 - y1 < min_side:
        return None
    return image[y1:y2, x1:x2].copy()


def _overlap(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy


def frame_crops(image: np.ndarray, truth: Sequence[object], frame: int, rng: np.random.Generator,
                backgrounds: int = 3, jitter: float = 0.06, slivers: bool = False) -> Iterator[SceneCrop]:
    """Every crop of one frame (``truth``: the scene's ``TruthObject``s)."""
    height, width = image.shape[:2]
    boxes = [tuple(float(v) for v in t.box) for t in truth]  # type: ignore[attr-defined]

    def emit(box: Box, kind: str, cid: int, frac: float) -> Iterator[SceneCrop]:
        c = cut(image, box)
        if c is not None:
            yield SceneCrop(c, kind, cid, float(frac), frame, box)

    for t, box in zip(truth, boxes):
        x1, y1, x2, y2 = box
        vis = float(getattr(t, "visible_fraction", 1.0))
        cid = int(getattr(t, "class_id"))
        at_edge = x1 <= 0 or y1 <= 0 or x2 >= width or y2 >= height
        side = max(x2 - x1, y2 - y1)
        inside = (x2 - x1) * (y2 - y1) / (side * side) if side > 0 else 0.0
        if vis >= 0.9 and not (at_edge and inside < 0.9):
            yield from emit(box, "object", cid, vis)
            j = rng.uniform(-jitter, jitter, 4) * side
            yield from emit((x1 + j[0], y1 + j[1], x2 + j[2], y2 + j[3]), "object_jitter", cid, vis)
            if slivers:
                f = float(rng.uniform(0.12, 0.45)) * side
                strip = [(x1, y1, x1 + f, y2), (x2 - f, y1, x2, y2), (x1, y1, x2, y1 + f), (x1, y2 - f, x2, y2)]
                yield from emit(strip[int(rng.integers(0, 4))], "sliver", cid, f / side)
        elif at_edge and inside < 0.5:
            yield from emit(box, "border", cid, inside)
        else:
            yield from emit(box, "partial", cid, min(vis, inside))
    for a in range(len(truth)):
        for b in range(a + 1, len(truth)):
            if min(getattr(truth[a], "visible_fraction", 1.0), getattr(truth[b], "visible_fraction", 1.0)) < 0.3:
                continue
            A, B = boxes[a], boxes[b]
            gap = max(max(A[0], B[0]) - min(A[2], B[2]), max(A[1], B[1]) - min(A[3], B[3]))
            if gap >= 20:
                continue
            u = (min(A[0], B[0]), min(A[1], B[1]), max(A[2], B[2]), max(A[3], B[3]))
            area = (u[2] - u[0]) * (u[3] - u[1])
            share = max((A[2] - A[0]) * (A[3] - A[1]), (B[2] - B[0]) * (B[3] - B[1])) / area
            if share < 0.7:
                yield from emit(u, "merged", -1, share)
    for _ in range(backgrounds):
        for _try in range(30):
            s = int(rng.integers(36, 121))
            ar = float(rng.uniform(0.75, 1.33))
            w, h = min(width - 1, int(s * ar)), min(height - 1, int(s / ar))
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            box = (float(x), float(y), float(x + w), float(y + h))
            if all(_overlap(box, o) < 0.1 * w * h for o in boxes):
                yield from emit(box, "background", -1, 0.0)
                break


def scene_crops(scene: object, frames: Iterable[int], seed: int = 0, backgrounds: int = 3,
                slivers: bool = False) -> Iterator[SceneCrop]:
    """Crops of the given frames of a scene with ``render(i) -> (image, truth)`` (e.g. ``DemoScene``)."""
    rng = np.random.default_rng(seed)
    for i in frames:
        image, truth = scene.render(i)  # type: ignore[attr-defined]
        yield from frame_crops(image, truth, i, rng, backgrounds, slivers=slivers)


__all__ = ["SceneCrop", "scene_crops", "frame_crops", "cut", "KINDS", "NO_CLASS", "KEEP_CLASS"]
