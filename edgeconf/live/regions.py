"""Region proposers: where in a frame the objects to classify are.

``make_regions(spec)`` builds one from a short spec:

* ``full`` — the whole frame is one region (score 1.0);
* ``motion`` — OpenCV background subtraction (MOG2, or ``motion:method=knn``) + morphology + contours;
  options ``min_area`` (px), ``max_area`` (fraction of the frame), ``scale``, ``history``, ``threshold``,
  ``merge_gap`` (px), ``shadows``;
* ``truth`` — the ground-truth boxes that ``demo://`` frames carry (for tests and evaluation);
* ``detector:PATH.onnx`` — a YOLO-style detection model run with the edgeconf runner (letterbox, decode,
  confidence filter, class-aware NMS); options ``conf``, ``iou``, ``layout``, ``classes``, ``backend``…;
  ``detector`` without a path is the shipped one (trained on demo scenes, the default of demo/run/gui).

Options follow the kind after a colon, comma-separated: ``motion:method=knn,min_area=300``,
``detector:yolo.onnx,conf=0.4``, ``detector:conf=0.5``. Every proposer returns a list of :class:`Detection`
in frame pixels.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgeconf.errors import ConfigError, ModelLoadError
from edgeconf.schema.jsonload import MAX_DEPTH, nesting_depth

log = logging.getLogger(__name__)

Box = Tuple[float, float, float, float]


@dataclass
class Detection:
    """A proposed region: box (x1, y1, x2, y2) in frame pixels, a score in [0, 1], a class when a detector gives one."""

    box: Box
    score: float
    class_id: Optional[int] = None


class RegionProposer(ABC):
    """Base class. ``propose(image, frame=None)`` takes an H×W×3 RGB uint8 image (and optionally its Frame)."""

    name = "regions"
    #: True when ``propose`` needs the Frame (its ground truth), not only the image.
    needs_frame = False

    @abstractmethod
    def propose(self, image: np.ndarray, frame: Any = None) -> List[Detection]:
        """Implemented by every subclass."""

    def propose_frame(self, frame: Any) -> List[Detection]:
        """Regions of a :class:`edgeconf.live.sources.Frame`."""
        return self.propose(frame.image, frame)

    def observe_tracks(self, predicted: Sequence[Box]) -> None:
        """The tracker's predicted boxes for the frame about to be proposed (the pipeline calls this first).
        Proposers that can use them (``motion``: split and merge blobs) override it; the others ignore it."""

    def reset(self) -> None:
        """Forget any state (background model); call when the source changes or restarts."""

    def close(self) -> None:
        """Free what the proposer holds (models)."""

    def __call__(self, image: np.ndarray, frame: Any = None) -> List[Detection]:
        return self.propose(image, frame)

    def __enter__(self) -> "RegionProposer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_image(image: Any) -> Tuple[int, int]:
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise ConfigError("regions need an H×W×3 (or H×W) image array, got %s"
                          % (getattr(image, "shape", type(image).__name__),))
    return int(image.shape[0]), int(image.shape[1])


class FullFrame(RegionProposer):
    """The whole frame as one region."""

    name = "full"

    def propose(self, image: np.ndarray, frame: Any = None) -> List[Detection]:
        height, width = _check_image(image)
        return [Detection((0.0, 0.0, float(width), float(height)), 1.0)]


class TruthRegions(RegionProposer):
    """Ground-truth boxes of synthetic (``demo://``) frames; score = the visible fraction of the object.

    Objects less visible than ``min_visible`` are left out (an object hidden behind another cannot be seen).
    """

    name = "truth"
    needs_frame = True

    def __init__(self, min_visible: float = 0.25) -> None:
        self.min_visible = float(min_visible)

    def propose(self, image: np.ndarray, frame: Any = None) -> List[Detection]:
        truth = getattr(frame, "truth", None)
        if truth is None:
            raise ConfigError("regions 'truth' need frames that carry ground truth (demo:// sources); "
                              "use 'motion' or 'detector:MODEL.onnx' for other sources")
        height, width = _check_image(image)
        out = []
        for obj in truth:
            if obj.visible_fraction < self.min_visible:
                continue
            x1, y1, x2, y2 = obj.box
            box = (max(0.0, float(x1)), max(0.0, float(y1)), min(float(width), float(x2)), min(float(height), float(y2)))
            if box[2] > box[0] and box[3] > box[1]:
                out.append(Detection(box, float(obj.visible_fraction)))
        return out


class MotionRegions(RegionProposer):
    """Moving things, by background subtraction (MOG2 or KNN) on a downscaled frame, guided by the tracker.

    The foreground mask (shadows removed) is opened to drop noise and closed/dilated to join the pieces of one
    object. Blobs are then read with the tracker's predicted boxes (:meth:`observe_tracks`, which the pipeline
    calls before each frame; ``guided=false`` turns this off): the pieces of one object that came apart (blobs that
    touch the same single prediction) are *merged* into one region, and a blob that covers two or more predicted
    objects is *split* by k-means on its foreground pixels started from the predicted centres. Blobs that touch no prediction are regions as they are, pieces closer than
    ``merge_gap`` frame pixels joined. Slow changes of light across the frame are divided out first (``light_grid``:
    each cell of an N×N raster is brought to the background model's median brightness; 0 turns it off), and
    the model forgets in about
    ``history`` frames, so a drifting light or an object that left is not foreground for long. Each region of at least ``min_area`` frame
    pixels is scored by the share of its box that is foreground; boxes are shrunk back by the dilation. Regions
    larger than ``max_area`` of the frame (a camera shake, a lighting jump) are ignored, and nothing is proposed
    during the first ``warmup`` frames while the model learns.
    """

    name = "motion"

    def __init__(self, method: str = "mog2", min_area: float = 400.0, max_area: float = 0.5, scale: float = 0.5,
                 history: int = 150, threshold: Optional[float] = None, learning_rate: float = -1.0,
                 dilate: int = 2, warmup: int = 5, shadows: bool = True, close: int = 5, fill: bool = True,
                 merge_gap: float = 6.0, guided: bool = True, light_grid: int = 4) -> None:
        method = method.lower()
        if method not in ("mog2", "knn"):
            raise ConfigError("motion method must be mog2 or knn, got %r" % method)
        if not 0 < scale <= 1:
            raise ConfigError("motion scale must be in (0, 1], got %r" % scale)
        if not 0 < max_area <= 1:
            raise ConfigError("motion max_area is a fraction of the frame in (0, 1], got %r" % max_area)
        self.method = method
        self.min_area = float(min_area)
        self.max_area = float(max_area)
        self.scale = float(scale)
        self.history = int(history)
        self.threshold = threshold
        self.learning_rate = float(learning_rate)
        self.dilate = int(dilate)
        self.warmup = int(warmup)
        self.shadows = bool(shadows)
        self.fill = bool(fill)
        self.merge_gap = float(merge_gap)
        self.guided = bool(guided)
        if light_grid < 0:
            raise ConfigError("motion light_grid must be >= 0 (0: off), got %r" % light_grid)
        self.light_grid = int(light_grid)
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self._close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(1, int(close)), max(1, int(close))))
        self._predicted: List[Box] = []
        self.reset()

    def reset(self) -> None:
        if self.method == "mog2":
            thr = 16.0 if self.threshold is None else float(self.threshold)
            self._sub = cv2.createBackgroundSubtractorMOG2(history=self.history, varThreshold=thr, detectShadows=self.shadows)
        else:
            thr = 400.0 if self.threshold is None else float(self.threshold)
            self._sub = cv2.createBackgroundSubtractorKNN(history=self.history, dist2Threshold=thr, detectShadows=self.shadows)
        self._frames = 0
        self._shape: Optional[Tuple[int, int]] = None
        self._predicted = []
        self._last_fg: Optional[np.ndarray] = None

    def observe_tracks(self, predicted: Sequence[Box]) -> None:
        self._predicted = [tuple(float(v) for v in b) for b in predicted] if self.guided else []  # type: ignore[misc]

    def mask(self, image: np.ndarray) -> np.ndarray:
        """Update the background model with ``image`` and return the cleaned foreground mask (downscaled)."""
        height, width = _check_image(image)
        if self._shape != (height, width):
            if self._shape is not None:
                self.reset()
            self._shape = (height, width)
        small = image
        if self.scale != 1.0:
            small = cv2.resize(image, (max(1, int(round(width * self.scale))), max(1, int(round(height * self.scale)))),
                               interpolation=cv2.INTER_AREA)
        rate = self.learning_rate
        if rate < 0 and self._frames >= self.warmup:
            # OpenCV's automatic rate is 1/frames-seen early on, which absorbs a slow object within a few
            # frames of a fresh model; after the warm-up learn at the steady 1/history instead.
            rate = 1.0 / max(1, self.history)
        if self.light_grid and self._frames >= self.warmup:
            small = _match_light(small, self._sub.getBackgroundImage(), self.light_grid, self._last_fg)
        fg = self._sub.apply(small, learningRate=rate)
        self._frames += 1
        _, fg = cv2.threshold(fg, 200, 255, cv2.THRESH_BINARY)  # shadows are 127
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._open)
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, self._close)
        if self.dilate > 0:
            fg = cv2.dilate(fg, self._open, iterations=self.dilate)
        if self.fill:
            contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(fg, contours, -1, 255, thickness=cv2.FILLED)
        self._last_fg = fg
        return fg

    def propose(self, image: np.ndarray, frame: Any = None) -> List[Detection]:
        height, width = _check_image(image)
        fg = self.mask(image)
        predicted, self._predicted = self._predicted, []
        if self._frames <= self.warmup:
            return []
        contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        inv = 1.0 / self.scale
        frame_area = float(width * height)
        rects = [cv2.boundingRect(c) for c in contours]
        if predicted and rects:
            preds = [(x1 * self.scale, y1 * self.scale, x2 * self.scale, y2 * self.scale) for x1, y1, x2, y2 in predicted]
            rects = _guided_rects(fg, rects, preds, self.merge_gap * self.scale)
        elif self.merge_gap > 0 and len(rects) > 1:
            rects = _merge_rects(rects, self.merge_gap * self.scale)
        out = []
        for x, y, w, h in rects:
            area = w * h * inv * inv
            if area < self.min_area or area > self.max_area * frame_area:
                continue
            fill = float(np.count_nonzero(fg[y:y + h, x:x + w])) / float(max(1, w * h))
            m = self.dilate if w > 2 * self.dilate + 2 and h > 2 * self.dilate + 2 else 0  # undo the dilation
            box = ((x + m) * inv, (y + m) * inv, min(float(width), (x + w - m) * inv), min(float(height), (y + h - m) * inv))
            out.append(Detection(box, min(1.0, fill)))
        out.sort(key=lambda d: -d.score)
        return out


Rect = Tuple[int, int, int, int]


def _match_light(image: np.ndarray, background: Optional[np.ndarray], grid: int,
                 moving: Optional[np.ndarray] = None) -> np.ndarray:
    """``image`` with its light brought back to the background model's: per cell of a ``grid``×``grid`` raster,
    the median grey of the image over the median grey of the background, both over the pixels that were not
    foreground on the previous frame (``moving``), smoothed over the frame; slow light changes across the frame
    then stop looking like motion, and the objects do not take part in the estimate."""
    if background is None or background.shape != image.shape or grid < 1:
        return image
    g_img = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    g_bg = cv2.cvtColor(background, cv2.COLOR_RGB2GRAY) if background.ndim == 3 else background
    h, w = g_img.shape
    ratio = np.ones((grid, grid), np.float32)
    still = None if moving is None or moving.shape != g_img.shape else moving == 0
    for r in range(grid):
        for c in range(grid):
            ys, xs = slice(r * h // grid, (r + 1) * h // grid), slice(c * w // grid, (c + 1) * w // grid)
            a, b = g_img[ys, xs], g_bg[ys, xs]
            if still is not None:
                keep = still[ys, xs]
                if np.count_nonzero(keep) < keep.size // 4:
                    continue  # mostly objects: keep this cell's light as it is
                a, b = a[keep], b[keep]
            den = float(np.median(b))
            if den > 8:
                ratio[r, c] = float(np.median(a)) / den
    gain = cv2.resize(np.clip(ratio, 0.5, 2.0), (w, h), interpolation=cv2.INTER_LINEAR)
    if image.ndim == 3:
        gain = cv2.merge([gain] * image.shape[2])
    return cv2.divide(image.astype(np.float32), gain).clip(0, 255).astype(np.uint8)


def _guided_rects(fg: np.ndarray, rects: List[Rect], preds: List[Box], gap: float) -> List[Rect]:
    """Blobs (x, y, w, h) read with predicted boxes (x1, y1, x2, y2), all in mask pixels: see MotionRegions."""
    free: List[Rect] = []
    touched: Dict[int, List[int]] = {}  # prediction -> blobs
    for i, (x, y, w, h) in enumerate(rects):
        hit = False
        for k, (px1, py1, px2, py2) in enumerate(preds):
            ix = min(x + w, px2) - max(x, px1)
            iy = min(y + h, py2) - max(y, py1)
            # a blob belongs with a prediction when it lies mostly inside it (a piece of that object) or holds
            # most of it (the object, perhaps with another one): a blob that only grazes a box is something else
            if ix > 0 and iy > 0 and ix * iy >= 0.5 * min(w * h, max(1.0, (px2 - px1) * (py2 - py1))):
                touched.setdefault(k, []).append(i)
                hit = True
        if not hit:
            free.append((x, y, w, h))
    # connected groups of blobs and predictions
    parent = list(range(len(rects)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for blobs in touched.values():
        for b in blobs[1:]:
            parent[find(b)] = find(blobs[0])
    groups: Dict[int, Tuple[List[int], List[int]]] = {}
    for k, blobs in touched.items():
        root = find(blobs[0])
        g = groups.setdefault(root, ([], []))
        g[1].append(k)
        for b in blobs:
            if b not in g[0]:
                g[0].append(b)
    out: List[Rect] = []
    for blobs, ks in groups.values():
        x1 = min(rects[b][0] for b in blobs)
        y1 = min(rects[b][1] for b in blobs)
        x2 = max(rects[b][0] + rects[b][2] for b in blobs)
        y2 = max(rects[b][1] + rects[b][3] for b in blobs)
        region = np.zeros((y2 - y1, x2 - x1), np.uint8)
        for b in blobs:
            bx, by, bw, bh = rects[b]
            region[by - y1:by - y1 + bh, bx - x1:bx - x1 + bw] = fg[by:by + bh, bx:bx + bw]
        biggest = max((preds[k][2] - preds[k][0]) * (preds[k][3] - preds[k][1]) for k in ks)
        if len(ks) == 1 or (x2 - x1) * (y2 - y1) < 1.5 * biggest:
            # pieces of one object, or a blob too small to hold two of the objects it touches: one region
            out.append((x1, y1, x2 - x1, y2 - y1))
            continue
        ys, xs = np.nonzero(region)
        if not len(xs):
            continue
        # several objects in one blob: k-means on the foreground pixels' positions, started from the predicted
        # centres: each pixel goes to the nearest centre, each centre moves to the mean of its pixels. The
        # predicted sizes are not used, so a box that came out too small once cannot shrink its track further.
        xs_f, ys_f = xs.astype(np.float32) + x1, ys.astype(np.float32) + y1
        centre = np.array([[(preds[k][0] + preds[k][2]) / 2, (preds[k][1] + preds[k][3]) / 2] for k in ks], np.float32)
        owner = np.zeros(len(xs), np.int64)
        for _ in range(5):
            dist = (xs_f[None] - centre[:, :1]) ** 2 + (ys_f[None] - centre[:, 1:]) ** 2
            owner = np.argmin(dist, axis=0)
            for row in range(len(ks)):
                sel = owner == row
                if np.count_nonzero(sel):
                    centre[row] = (float(xs_f[sel].mean()), float(ys_f[sel].mean()))
        for row in range(len(ks)):
            sel = owner == row
            if np.count_nonzero(sel) < 4:
                continue  # the predicted object is not in this blob (stopped, hidden, gone)
            sx, sy = xs[sel] + x1, ys[sel] + y1
            out.append((int(sx.min()), int(sy.min()), int(sx.max() - sx.min() + 1), int(sy.max() - sy.min() + 1)))
    if len(free) > 1 and gap > 0:
        free = _merge_rects(free, gap)
    return out + free


def _merge_rects(rects: List[Tuple[int, int, int, int]], gap: float) -> List[Tuple[int, int, int, int]]:
    """Merge (x, y, w, h) rectangles closer than ``gap`` pixels to each other, until none are."""
    boxes = [[x, y, x + w, y + h] for x, y, w, h in rects]
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] - gap <= b[2] and b[0] - gap <= a[2] and a[1] - gap <= b[3] and b[1] - gap <= a[3]:
                    boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return [(x1, y1, x2 - x1, y2 - y1) for x1, y1, x2, y2 in boxes]


# ---- YOLO-style detector ---------------------------------------------------------------------------------

LAYOUTS = ("yolov5", "yolov8")
ACCEPTED_LAYOUTS = ("(N, A, 4+1+C) or (N, 4+1+C, A) YOLOv5 style (cx, cy, w, h, objectness, class scores); "
                    "(N, 4+C, A) or (N, A, 4+C) YOLOv8 style (cx, cy, w, h, class scores)")


def letterbox(image: np.ndarray, size: Tuple[int, int], pad_value: int = 114) -> Tuple[np.ndarray, float, Tuple[float, float]]:
    """Resize keeping the aspect ratio and pad to ``size`` (h, w). Returns (image, ratio, (pad_x, pad_y))."""
    height, width = image.shape[:2]
    out_h, out_w = size
    ratio = min(out_w / float(width), out_h / float(height))
    new_w, new_h = max(1, int(round(width * ratio))), max(1, int(round(height * ratio)))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if (new_w, new_h) != (width, height) else image
    pad_x, pad_y = (out_w - new_w) / 2.0, (out_h - new_h) / 2.0
    top, left = int(round(pad_y - 0.1)), int(round(pad_x - 0.1))
    bottom, right = out_h - new_h - top, out_w - new_w - left
    boxed = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    return boxed, ratio, (float(left), float(top))


def _metadata(path: str) -> Dict[str, str]:
    """The model's ``metadata_props`` (empty when it cannot be read: loading reports that better)."""
    try:
        import onnx

        model = onnx.load(path, load_external_data=False)
    except Exception:
        return {}
    return {p.key: p.value for p in model.metadata_props}


def _bounded_json(text: str) -> Any:
    """A metadata value parsed as JSON (or a Python literal, as Ultralytics writes ``names``), or None when it is
    too big or too deep to be what it claims: refused before any parser recurses into it."""
    text = text.strip()
    if not text or len(text) > (1 << 20) or nesting_depth(text) > MAX_DEPTH:
        return None
    try:
        return json.loads(text)
    except ValueError:
        try:
            import ast

            return ast.literal_eval(text)
        except (ValueError, SyntaxError, RecursionError, MemoryError):
            return None


def _metadata_classes(meta: Dict[str, str]) -> Optional[int]:
    """Number of classes from Ultralytics-style ``names`` metadata, if the model carries it."""
    names = _bounded_json(meta.get("names", ""))
    return len(names) if isinstance(names, (dict, list)) and names else None


def _operating_point(meta: Dict[str, str]) -> Dict[str, float]:
    """``conf``/``iou`` the model was tuned for (edgeconf's own detectors store them under ``edgeconf.detector``)."""
    info = _bounded_json(meta.get("edgeconf.detector", ""))
    if not isinstance(info, dict):
        return {}
    return {k: float(info[k]) for k in ("conf", "iou") if isinstance(info.get(k), (int, float))}


class DetectorRegions(RegionProposer):
    """A YOLO-style detection ONNX model. See :data:`ACCEPTED_LAYOUTS` for the outputs it decodes.

    ``layout`` is ``auto`` (from ``classes``, the model's ``names`` metadata, or the usual export: channels-last
    means YOLOv5, channels-first YOLOv8), ``yolov5`` or ``yolov8``. Boxes are (cx, cy, w, h) in input pixels, or
    normalised to [0, 1] (detected, or ``normalized=true``). ``conf`` and ``iou`` default to the operating point
    stored in the model's ``edgeconf.detector`` metadata, else 0.25 and 0.45. A one-class detector proposes
    regions without a class (the cascade gives the class). ``class_score``: a track on this detector's boxes shows a
    class only once the mean score of its detections reaches it, or enough answers named a class (the pipeline's
    ``class_answers``); None (the default for your own model; the shipped one's is ``DETECTOR_CLASS_SCORE``) or 0: no
    such rule.
    """

    name = "detector"

    def __init__(self, path: str, conf: Optional[float] = None, iou: Optional[float] = None, layout: str = "auto",
                 classes: Optional[int] = None, imgsz: Optional[Sequence[int]] = None, max_det: int = 100,
                 backend: str = "onnxruntime", threads: Optional[int] = None, output: Optional[str] = None,
                 normalized: Optional[bool] = None, class_agnostic: bool = False, runner: Any = None,
                 class_score: Optional[float] = None) -> None:
        if layout not in ("auto",) + LAYOUTS:
            raise ConfigError("detector layout must be auto, yolov5 or yolov8, got %r" % layout)
        if runner is None and not os.path.isfile(path):
            raise ModelLoadError("detector model not found: %s" % path)
        self.path = path
        meta = _metadata(path) if runner is None else {}
        tuned = _operating_point(meta)
        self.conf = float(conf if conf is not None else tuned.get("conf", 0.25))
        self.iou = float(iou if iou is not None else tuned.get("iou", 0.45))
        self.max_det = int(max_det)
        if class_score is not None and not 0.0 <= float(class_score) <= 1.0:
            raise ConfigError("detector class_score must be in [0, 1] (a detection score), got %r" % (class_score,))
        self.class_score: Optional[float] = float(class_score) if class_score else None
        self.class_agnostic = bool(class_agnostic)
        self.normalized = normalized
        self._layout_hint = layout
        self._classes_hint = classes if classes is not None else _metadata_classes(meta)
        if runner is None:
            from edgeconf.backends import prepare

            runner = prepare(path, backend=backend, threads=threads)
        self.runner = runner
        if len(runner.inputs) != 1:
            raise ModelLoadError("detector %s has %d inputs; a YOLO-style detector has one image input (N, 3, H, W)"
                                 % (path, len(runner.inputs)))
        spec = runner.inputs[0]
        channels = spec.shape[1] if len(spec.shape) == 4 else None
        if len(spec.shape) != 4 or (isinstance(channels, int) and channels > 0 and channels != 3):
            raise ModelLoadError("detector %s input is %s; expected an image tensor (N, 3, H, W)" % (path, spec.describe()))
        self.input_name = spec.name
        self.input_dtype = np.dtype(spec.dtype if spec.dtype in ("float32", "float16") else "float32")
        fixed = [d if isinstance(d, int) and d > 0 else None for d in spec.shape[2:]]
        if imgsz is not None:
            size = (int(imgsz[0]), int(imgsz[-1]))
            if any(f is not None and f != s for f, s in zip(fixed, size)):
                raise ConfigError("detector %s has a fixed input of %sx%s; imgsz=%s does not fit"
                                  % (path, fixed[0], fixed[1], "x".join(map(str, size))))
        else:
            size = (fixed[0] or 640, fixed[1] or 640)
        self.input_size: Tuple[int, int] = size  # (h, w)
        names = [s.name for s in runner.outputs]
        if output is not None and output not in names:
            raise ModelLoadError("detector %s has no output %r (outputs: %s)" % (path, output, ", ".join(names)))
        self.output_name = output or names[0]
        self.layout: Optional[str] = None
        self.num_classes: Optional[int] = None
        self._channels_last: Optional[bool] = None
        # One run on a blank image checks the output layout now, not on the first camera frame.
        blank = np.full((size[0], size[1], 3), 114, np.uint8)
        self._decode(self._infer(blank))

    def _infer(self, boxed: np.ndarray) -> np.ndarray:
        tensor = boxed.transpose(2, 0, 1)[None].astype(self.input_dtype) / np.asarray(255.0, self.input_dtype)
        out = self.runner.run({self.input_name: np.ascontiguousarray(tensor)}, [self.output_name])
        return np.asarray(out[self.output_name])

    def _resolve_layout(self, shape: Tuple[int, ...]) -> Tuple[str, bool, int]:
        """(layout, channels_last, classes) for an output of ``shape``; ModelLoadError if it fits none."""
        bad = ModelLoadError("detector %s output %r has shape %s, which is not a layout it can decode; accepted: %s"
                             % (self.path, self.output_name, tuple(shape), ACCEPTED_LAYOUTS))
        if len(shape) != 3 or shape[0] < 1 or min(shape[1:]) < 1:
            raise bad
        a, b = int(shape[1]), int(shape[2])
        hint, classes = self._layout_hint, self._classes_hint
        candidates = []  # (layout, channels_last, classes)
        for channels_last, k in ((True, b), (False, a)):
            for layout, extra in (("yolov5", 5), ("yolov8", 4)):
                c = k - extra
                if c < 1 or (hint != "auto" and hint != layout) or (classes is not None and c != classes):
                    continue
                candidates.append((layout, channels_last, c))
        if not candidates:
            raise bad
        if len({c[1] for c in candidates}) > 1:
            # Both axes could be channels: anchors outnumber channels in any real export.
            want_last = b < a if a != b else True
            candidates = [c for c in candidates if c[1] == want_last] or candidates
        if len({c[0] for c in candidates}) > 1:
            # No hint: YOLOv5 exports are channels-last, YOLOv8 exports channels-first.
            preferred = "yolov5" if candidates[0][1] else "yolov8"
            candidates = [c for c in candidates if c[0] == preferred] or candidates
        return candidates[0]

    def _decode(self, raw: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw output → (boxes N×4 as x1,y1,x2,y2 in input pixels, scores N, classes N) above ``conf``."""
        if self.layout is None or raw.ndim != 3:
            self.layout, self._channels_last, self.num_classes = self._resolve_layout(tuple(raw.shape))
        rows = raw[0] if self._channels_last else raw[0].T
        extra = 5 if self.layout == "yolov5" else 4
        if rows.ndim != 2 or rows.shape[1] != extra + self.num_classes:
            raise ModelLoadError("detector %s output %r changed shape to %s (expected %d channels); accepted: %s"
                                 % (self.path, self.output_name, tuple(raw.shape), extra + self.num_classes, ACCEPTED_LAYOUTS))
        rows = rows.astype(np.float32, copy=False)
        cls_scores = rows[:, extra:]
        if self.layout == "yolov5":
            cls_scores = cls_scores * rows[:, 4:5]
        classes = np.argmax(cls_scores, axis=1)
        scores = cls_scores[np.arange(len(rows)), classes]
        keep = np.isfinite(scores) & (scores >= self.conf)
        xywh = rows[keep, :4]
        scores, classes = scores[keep], classes[keep]
        normalized = self.normalized
        if normalized is None:
            normalized = bool(len(xywh)) and float(np.abs(xywh).max()) <= 1.5
        if normalized:
            xywh = xywh * np.asarray([self.input_size[1], self.input_size[0]] * 2, np.float32)
        boxes = np.empty_like(xywh)
        boxes[:, 0] = xywh[:, 0] - xywh[:, 2] / 2
        boxes[:, 1] = xywh[:, 1] - xywh[:, 3] / 2
        boxes[:, 2] = xywh[:, 0] + xywh[:, 2] / 2
        boxes[:, 3] = xywh[:, 1] + xywh[:, 3] / 2
        return boxes, scores.astype(np.float32), classes.astype(np.int64)

    def _nms(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> List[int]:
        if len(boxes) == 0:
            return []
        # Class-aware NMS in one call: shift each class's boxes far apart so boxes of different classes never overlap.
        offset = 0.0 if self.class_agnostic else float(max(np.abs(boxes).max(), 1.0) + 1.0) * 2.0
        shifted = boxes + (classes.astype(np.float32) * offset)[:, None]
        rects = [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)] for x1, y1, x2, y2 in shifted]
        idx = cv2.dnn.NMSBoxes(rects, [float(s) for s in scores], self.conf, self.iou, top_k=self.max_det)
        return [int(i) for i in np.asarray(idx).reshape(-1)][: self.max_det]

    def propose(self, image: np.ndarray, frame: Any = None) -> List[Detection]:
        height, width = _check_image(image)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        boxed, ratio, (pad_x, pad_y) = letterbox(image, self.input_size)
        boxes, scores, classes = self._decode(self._infer(boxed))
        out = []
        for i in self._nms(boxes, scores, classes):
            x1, y1, x2, y2 = boxes[i]
            x1 = min(max((x1 - pad_x) / ratio, 0.0), float(width))
            x2 = min(max((x2 - pad_x) / ratio, 0.0), float(width))
            y1 = min(max((y1 - pad_y) / ratio, 0.0), float(height))
            y2 = min(max((y2 - pad_y) / ratio, 0.0), float(height))
            if x2 > x1 and y2 > y1:
                cls = int(classes[i]) if self.num_classes != 1 else None
                out.append(Detection((float(x1), float(y1), float(x2), float(y2)), float(scores[i]), cls))
        out.sort(key=lambda d: -d.score)
        return out

    def close(self) -> None:
        close = getattr(self.runner, "close", None)
        if callable(close):
            close()


# ---- spec parsing ----------------------------------------------------------------------------------------

_KINDS = ("detector (the shipped one)", "detector:PATH.onnx", "motion", "full", "truth (oracle)")


def _convert(value: str) -> Any:
    text = value.strip()
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> Tuple[str, Optional[str], Dict[str, Any]]:
    """``"motion:method=knn,min_area=300"`` → ("motion", None, {...}); ``"detector:m.onnx,conf=0.4"`` → ("detector", "m.onnx", {...})."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("empty regions spec; use one of %s" % ", ".join(_KINDS))
    kind, _, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    target: Optional[str] = None
    opts: Dict[str, Any] = {}
    parts = [p for p in rest.split(",")] if rest else []
    if kind == "detector" and parts and "=" not in parts[0]:
        target = parts.pop(0).strip()
    for part in parts:
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        if not eq:
            if kind == "motion" and key.strip().lower() in ("mog2", "knn"):
                opts["method"] = key.strip().lower()
                continue
            raise ConfigError("regions option %r in %r must look like key=value" % (part, spec))
        opts[key.strip()] = _convert(value)
    return kind, target, opts


def _checked(spec: str, options: Dict[str, Any]) -> Tuple[str, Optional[str], Dict[str, Any]]:
    """``parse_spec`` with ``options`` merged in, refused in one line (ConfigError) for an unknown kind, an
    option the kind's proposer does not take, or a value the option does not take (a type or a range)."""
    kind, target, opts = parse_spec(spec)
    opts.update(options)
    classes = {"detector": DetectorRegions, "full": FullFrame, "motion": MotionRegions, "truth": TruthRegions}
    if kind not in classes:
        raise ConfigError("unknown regions %r; use one of %s" % (spec, ", ".join(_KINDS)))
    params = inspect.signature(classes[kind].__init__).parameters.values()
    allowed = [p.name for p in params if p.name not in ("self", "path", "runner")
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]  # FullFrame has object's (*args, **kwargs)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ConfigError("unknown option(s) %s for regions %r; valid options: %s"
                          % (", ".join(unknown), kind, ", ".join(allowed) or "none"))
    return kind, target, {key: _checked_value(kind, key, value) for key, value in opts.items()}


# What each option of a proposer takes: (type, low, high, low_open, none_ok) for numbers, or the allowed words.
# ``_checked_value`` checks a value against it, so a wrong value is refused before anything runs, in one line.
_NUMBER_OPTIONS: Dict[Tuple[str, str], Tuple[type, Optional[float], Optional[float], bool, bool]] = {
    ("detector", "conf"): (float, 0.0, 1.0, False, True),
    ("detector", "iou"): (float, 0.0, 1.0, False, True),
    ("detector", "class_score"): (float, 0.0, 1.0, False, True),
    ("detector", "classes"): (int, 1, None, False, True),
    ("detector", "max_det"): (int, 1, None, False, False),
    ("detector", "threads"): (int, 1, None, False, True),
    ("motion", "min_area"): (float, 0.0, None, False, False),
    ("motion", "max_area"): (float, 0.0, 1.0, True, False),
    ("motion", "scale"): (float, 0.0, 1.0, True, False),
    ("motion", "history"): (int, 1, None, False, False),
    ("motion", "threshold"): (float, 0.0, None, True, True),
    ("motion", "learning_rate"): (float, -1.0, 1.0, False, False),
    ("motion", "dilate"): (int, 0, None, False, False),
    ("motion", "warmup"): (int, 0, None, False, False),
    ("motion", "close"): (int, 1, None, False, False),
    ("motion", "merge_gap"): (float, 0.0, None, False, False),
    ("motion", "light_grid"): (int, 0, None, False, False),
    ("truth", "min_visible"): (float, 0.0, 1.0, False, False),
}
_WORD_OPTIONS: Dict[Tuple[str, str], Tuple[str, ...]] = {
    ("detector", "layout"): ("auto",) + LAYOUTS,
    ("motion", "method"): ("mog2", "knn"),
}
_BOOL_OPTIONS = {("detector", "normalized"), ("detector", "class_agnostic"), ("motion", "shadows"),
                 ("motion", "fill"), ("motion", "guided")}


def _checked_value(kind: str, key: str, value: Any) -> Any:
    """``value`` (as :func:`parse_spec` converted it) when option ``key`` of regions ``kind`` takes it, else a
    one-line ConfigError naming the option, the value and what it takes."""
    def refuse(takes: str) -> ConfigError:
        return ConfigError("regions %s option %s must be %s, got %r" % (kind, key, takes, value))

    if (kind, key) in _BOOL_OPTIONS:
        if key == "normalized" and value is None:
            return None
        if isinstance(value, bool):
            return value
        if value in (0, 1) and isinstance(value, int):
            return bool(value)
        raise refuse("true or false")
    if (kind, key) in _WORD_OPTIONS:
        words = _WORD_OPTIONS[kind, key]
        if isinstance(value, str) and value.lower() in words:
            return value.lower()
        raise refuse("one of %s" % ", ".join(words))
    if (kind, key) in _NUMBER_OPTIONS:
        cast, low, high, low_open, none_ok = _NUMBER_OPTIONS[kind, key]
        if value is None and none_ok:
            return None
        whole = cast is int
        if low is None or high is None:
            span = "%s %s" % (">" if low_open else ">=", _fmt(low)) if low is not None else ""
        else:
            span = "in %s%s, %s]" % ("(" if low_open else "[", _fmt(low), _fmt(high))
        takes = "%s %s%s" % ("a whole number" if whole else "a number", span, " (or none)" if none_ok else "")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
            raise refuse(takes.strip())
        if value != value or (low is not None and (value <= low if low_open else value < low)) or \
                (high is not None and value > high):
            raise refuse(takes.strip())
        return cast(value)
    if (kind, key) == ("detector", "imgsz"):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return (value, value)
        match = re.fullmatch(r"(\d+)x(\d+)", str(value).strip().lower())
        if match and min(int(match.group(1)), int(match.group(2))) >= 1:
            return (int(match.group(1)), int(match.group(2)))
        raise refuse("a positive size: N or HEIGHTxWIDTH (e.g. 640 or 384x640)")
    return value  # free text (backend, output): checked where it is used


def _fmt(number: Optional[float]) -> str:
    return "%g" % number if number is not None else ""


def check_spec(spec: str) -> str:
    """``spec`` when :func:`make_regions` could build it, else the one-line ConfigError it would give, without
    loading a model: the kind, its options and, for ``detector:PATH``, that the file exists. Cheap enough for a
    command line or for settings read at start."""
    _, target, _ = _checked(spec, {})
    if target and not os.path.isfile(os.path.expanduser(target)):
        raise ConfigError("regions %r: no such detector model %s; pass an existing .onnx file or plain 'detector' "
                          "(the shipped one)" % (spec, target))
    return spec


def make_regions(spec: str, **options: Any) -> RegionProposer:
    """Build the region proposer named by ``spec`` (see the module docstring); ``options`` override spec options."""
    kind, target, opts = _checked(spec, options)
    factories: Dict[str, Any] = {"full": FullFrame, "motion": MotionRegions, "truth": TruthRegions}
    if kind == "detector":
        if not target:
            from edgeconf.live.defaults import DETECTOR_CLASS_SCORE, DETECTOR_MODEL

            target = DETECTOR_MODEL
            opts.setdefault("class_score", DETECTOR_CLASS_SCORE)
            if not os.path.isfile(target):
                raise ModelLoadError("the shipped detector is missing at %s; reinstall edgeconf, retrain it with "
                                     "scripts/train_detector.py, or pass detector:PATH.onnx" % target)
        factory: Any = lambda **kw: DetectorRegions(target, **kw)  # noqa: E731
    else:
        factory = factories[kind]
    return factory(**opts)


__all__ = ["Detection", "RegionProposer", "FullFrame", "MotionRegions", "TruthRegions", "DetectorRegions",
           "make_regions", "check_spec", "parse_spec", "letterbox", "ACCEPTED_LAYOUTS"]
