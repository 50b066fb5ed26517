"""The built-in synthetic scene behind ``demo://``: FashionMNIST items crossing a textured floor.

Each object is one FashionMNIST image (from the small sample shipped in ``edgeconf/data``) drawn upscaled as a
bright item on its own dark square patch, the way FashionMNIST looks, so a crop of its box resized to 28×28 grey
is close to the original image. What makes the scene hard for a region proposer and a tracker:

* objects **enter and leave at the borders**: each one crosses the frame on a gently curved path, at a speed
  that varies (stop and go), and a new object (new id, new item) follows after a pause;
* paths **cross** (occlusion: later slots are drawn on top), and some objects travel in **touching pairs** that
  drift apart or together;
* objects **change scale** while they move (coming closer, going away), get motion blur and go in and out of
  focus, and pass under soft shadows;
* **clutter** that is no object: coloured leaves, paper sheets, dark mats (as dark and square as an object's
  patch, with no item on it) and shadows drifting over the floor;
* **lighting drift**: a global gain, a light gradient that turns slowly across the frame, a colour cast, and
  sensor noise.

Every frame is a pure function of ``(seed, index)``: ``render(i)`` gives the same image and truth for the same
scene settings whatever was rendered before, so the scene can be seeked, replayed and evaluated. Truth boxes are
the objects' full (amodal) squares, clipped to the frame; ``visible_fraction`` is the share of the square that
is in the frame and not hidden by an object drawn later.

Seeds 1-99 are the evaluation scenes (``HELD_OUT_SEEDS``): the shipped detector is trained on other seeds only
(``scripts/train_detector.py`` refuses these).
"""
from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from edgeconf import data_path
from edgeconf.errors import ConfigError, DataError
from edgeconf.live.frames import TruthObject

LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SAMPLE_PATH = data_path("fashion_sample.npz")
#: Scene seeds kept for evaluation: never used to train the shipped detector.
HELD_OUT_SEEDS = range(1, 100)

_CLUTTER_KINDS = ("leaf", "sheet", "mat", "shadow")
_MARGIN = 8  # canvas margin around a patch, room for blur to spread
_NOISE_PAD = 32
_sample_cache: Optional[Tuple[np.ndarray, np.ndarray]] = None


def load_sample(path: str = SAMPLE_PATH) -> Tuple[np.ndarray, np.ndarray]:
    """The shipped FashionMNIST sample: ``(images N×28×28 uint8, labels N uint8)``."""
    global _sample_cache
    if path == SAMPLE_PATH and _sample_cache is not None:
        return _sample_cache
    try:
        with np.load(path, allow_pickle=False) as data:
            images, labels = np.asarray(data["images"]), np.asarray(data["labels"])
    except (OSError, KeyError, ValueError) as exc:
        raise DataError("cannot read the demo sample %s (%s); regenerate it with scripts/make_fashion_sample.py"
                        % (path, exc)) from exc
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels) or len(images) == 0:
        raise DataError("the demo sample %s has images of shape %s and %d labels; expected N×28×28 and N labels"
                        % (path, images.shape, len(labels)))
    if path == SAMPLE_PATH:
        _sample_cache = (images, labels)
    return images, labels


# ---- motion ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Path:
    """A pass across the frame: from ``p0`` to ``p1`` (both outside the frame), bowed sideways by ``bulge``
    pixels, at ``speed`` px/s modulated by ``1 + wobble*cos(w t + phase)`` (closed form in t)."""

    p0: Tuple[float, float]
    p1: Tuple[float, float]
    bulge: float
    speed: float
    wobble: float
    wobble_w: float
    wobble_phase: float

    @property
    def length(self) -> float:
        return math.hypot(self.p1[0] - self.p0[0], self.p1[1] - self.p0[1])

    def travelled(self, t: float) -> float:
        w, ph = self.wobble_w, self.wobble_phase
        return self.speed * (t + self.wobble / w * (math.sin(w * t + ph) - math.sin(ph)))

    def duration(self) -> float:
        """Seconds until the far end is reached (``travelled`` is increasing: wobble < 1)."""
        lo, hi = 0.0, self.length / (self.speed * (1.0 - self.wobble)) + 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            if self.travelled(mid) < self.length:
                lo = mid
            else:
                hi = mid
        return hi

    def at(self, t: float) -> Tuple[float, float, float, float, float, float]:
        """(x, y, vx, vy, ux, uy) at time ``t``: centre, velocity (px/s) and the unit direction of travel."""
        length = max(self.length, 1e-6)
        s = self.travelled(t)
        ds = self.speed * (1.0 + self.wobble * math.cos(self.wobble_w * t + self.wobble_phase))
        f = s / length
        dx, dy = (self.p1[0] - self.p0[0]) / length, (self.p1[1] - self.p0[1]) / length
        nx, ny = -dy, dx
        side = self.bulge * math.sin(math.pi * f)
        dside = self.bulge * math.pi / length * math.cos(math.pi * f)
        x = self.p0[0] + dx * s + nx * side
        y = self.p0[1] + dy * s + ny * side
        vx, vy = ds * (dx + nx * dside), ds * (dy + ny * dside)
        return x, y, vx, vy, dx, dy


@dataclass(frozen=True)
class _Member:
    """One object of a life: its look and how its size and sharpness change."""

    id: int
    item: int
    class_id: int
    size: float  # base side in px
    scale_amp: float
    scale_w: float
    scale_phase: float
    growth: float  # relative size change from entry to exit (coming closer > 0)
    shade_w: float
    shade_phase: float
    focus_w: float
    focus_phase: float
    tint: Tuple[float, float, float]
    lateral: float  # offset across the path, px (pairs)
    lateral_drift: float  # change of the offset from entry to exit, px
    along: float  # offset along the path, px (pairs)


@dataclass(frozen=True)
class _Life:
    """One pass of a slot: the frames it spans, its path, its objects (one, or a touching pair)."""

    start: int
    end: int  # exclusive
    path: _Path
    members: Tuple[_Member, ...]


@dataclass(frozen=True)
class _Clutter:
    """A pass of something that is no object: a leaf, a paper sheet, a dark mat or a shadow."""

    start: int
    end: int
    path: _Path
    kind: str  # one of _CLUTTER_KINDS
    key: Tuple[int, int]
    gap: int  # frames before the next one


class DemoScene:
    """``DemoScene(seed, objects, size=(w, h), fps, frames)``; ``render(i) -> (RGB uint8 image, truth)``.

    ``objects`` is how many objects can be on screen at once (some travel in touching pairs), ``frames`` the
    number of frames (``None``: endless), ``noise`` the sensor-noise sigma in grey levels, ``lighting`` the
    depth of the lighting drift, ``clutter`` how many distractors drift over the floor (None: about half as
    many as objects), ``object_size`` the (min, max) side of an object in pixels. ``sample`` (images N×28×28
    uint8, labels N) replaces the shipped sample as the items to draw (the detector's training script draws
    FashionMNIST's train split, so the items of the demo are new to the detector too).
    """

    def __init__(self, seed: int = 0, objects: int = 6, size: Tuple[int, int] = (640, 480), fps: float = 30.0,
                 frames: Optional[int] = None, noise: float = 4.0, lighting: float = 0.15,
                 clutter: Optional[int] = None, object_size: Tuple[int, int] = (44, 104),
                 sample: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> None:
        width, height = int(size[0]), int(size[1])
        if objects < 0 or objects > 64:
            raise ConfigError("demo scene: objects must be between 0 and 64, got %d" % objects)
        if fps <= 0:
            raise ConfigError("demo scene: fps must be positive, got %r" % fps)
        if frames is not None and frames < 0:
            raise ConfigError("demo scene: frames must be >= 0, got %r" % frames)
        if clutter is not None and not 0 <= clutter <= 64:
            raise ConfigError("demo scene: clutter must be between 0 and 64, got %r" % clutter)
        lo, hi = int(object_size[0]), int(object_size[1])
        if not 8 <= lo <= hi:
            raise ConfigError("demo scene: object_size must be (min, max) with 8 <= min <= max, got %r" % (object_size,))
        if width < hi + 2 or height < hi + 2:
            raise ConfigError("demo scene: size %dx%d is too small for objects of up to %d px; use at least %dx%d"
                              % (width, height, hi, hi + 2, hi + 2))
        self.seed = int(seed)
        self.objects = int(objects)
        self.size = (width, height)
        self.fps = float(fps)
        self.frames = None if frames is None else int(frames)
        self.noise = float(noise)
        self.lighting = float(lighting)
        self.object_size = (lo, hi)
        self.clutter = self.objects // 2 + 1 if clutter is None else int(clutter)
        self.labels = LABELS
        self._images, self._labels = load_sample() if sample is None else (np.asarray(sample[0]), np.asarray(sample[1]))
        if self._images.ndim != 3 or len(self._images) != len(self._labels) or not len(self._images):
            raise ConfigError("demo scene: sample must be (images N×H×W uint8, labels N) with N > 0")
        pairs = self.objects // 5
        # slot kinds in drawing order (later slots are drawn on top): 1 = single object, 2 = touching pair
        kinds = [1] * (self.objects - 2 * pairs) + [2] * pairs
        order = self._rng(5).permutation(len(kinds))
        self._slot_kinds = [kinds[i] for i in order]
        self._schedules: List[List[int]] = [[] for _ in self._slot_kinds]  # start frame of each life
        self._lives: Dict[Tuple[int, int], _Life] = {}
        self._clutter_starts: List[List[int]] = [[] for _ in range(self.clutter)]
        self._clutter_lives: Dict[Tuple[int, int], _Clutter] = {}
        self._background = self._make_background()
        self._noise_pos, self._noise_neg = self._make_noise()
        self._patches: "OrderedDict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]]" = OrderedDict()
        self._alpha_cache: Dict[int, np.ndarray] = {}
        self._clutter_cache: "OrderedDict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]]" = OrderedDict()

    def __len__(self) -> int:
        if self.frames is None:
            raise TypeError("this demo scene is endless (frames=None)")
        return self.frames

    # ---- scene construction --------------------------------------------------------------------------------

    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF] + [int(k) for k in keys])

    def _make_background(self) -> np.ndarray:
        """A mid-bright textured floor: smooth colour field, tiles with grout lines, shapes and fine grain."""
        width, height = self.size
        rng = self._rng(1)
        coarse = rng.uniform(105, 175, (5, 7, 3)).astype(np.float32)
        img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        tile = int(rng.integers(48, 80))
        ys, xs = np.mgrid[0:height, 0:width]
        grout = ((xs % tile) < 2) | ((ys % tile) < 2)
        img[grout] *= 0.82
        for _ in range(int(width * height / 9000)):
            colour = tuple(float(c) for c in rng.uniform(90, 200, 3))
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            if rng.random() < 0.5:
                cv2.circle(img, centre, int(rng.integers(4, 22)), colour, -1, cv2.LINE_AA)
            else:
                axes = (int(rng.integers(4, 26)), int(rng.integers(2, 10)))
                cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        img = cv2.GaussianBlur(img, (0, 0), 1.2)
        grain = cv2.GaussianBlur(rng.normal(0, 10, (height, width)).astype(np.float32), (0, 0), 0.8)
        img += grain[..., None]
        return np.clip(img, 0, 255).astype(np.uint8)

    def _make_noise(self) -> Tuple[np.ndarray, np.ndarray]:
        """Two non-negative noise fields (positive and negative parts), a bit larger than the frame to slide."""
        width, height = self.size
        rng = self._rng(2)
        field = rng.normal(0, max(self.noise, 0.0), (height + _NOISE_PAD, width + _NOISE_PAD, 3))
        pos = np.clip(field, 0, 255).astype(np.uint8)
        neg = np.clip(-field, 0, 255).astype(np.uint8)
        return pos, neg

    def _make_path(self, rng: np.random.Generator, reach: float, speed: Tuple[float, float]) -> _Path:
        """A pass from outside one border to outside another; ``reach`` is how far outside (px) the ends lie."""
        width, height = self.size

        def point(side: int) -> Tuple[float, float]:
            f = float(rng.uniform(0.1, 0.9))
            if side == 0:
                return -reach, f * height
            if side == 1:
                return width + reach, f * height
            if side == 2:
                return f * width, -reach
            return f * width, height + reach

        side_in = int(rng.integers(0, 4))
        side_out = int(rng.choice([s for s in range(4) if s != side_in]))
        p0, p1 = point(side_in), point(side_out)
        scale = width / 640.0
        return _Path(p0, p1, bulge=float(rng.uniform(-0.15, 0.15)) * math.hypot(p1[0] - p0[0], p1[1] - p0[1]),
                     speed=float(rng.uniform(*speed)) * scale, wobble=float(rng.uniform(0.2, 0.92)),
                     wobble_w=2 * math.pi / float(rng.uniform(2.0, 7.0)), wobble_phase=float(rng.uniform(0, 2 * math.pi)))

    def _member(self, rng: np.random.Generator, ident: int, lateral: float = 0.0, drift: float = 0.0,
                along: float = 0.0, size: Optional[float] = None) -> _Member:
        lo, hi = self.object_size
        item = int(rng.integers(0, len(self._images)))
        return _Member(
            id=ident, item=item, class_id=int(self._labels[item]),
            size=float(rng.uniform(lo, hi)) if size is None else float(size),
            scale_amp=float(rng.uniform(0.0, 0.18)), scale_w=2 * math.pi / float(rng.uniform(3.0, 9.0)),
            scale_phase=float(rng.uniform(0, 2 * math.pi)), growth=float(rng.uniform(-0.35, 0.35)),
            shade_w=2 * math.pi / float(rng.uniform(4.0, 10.0)), shade_phase=float(rng.uniform(0, 2 * math.pi)),
            focus_w=2 * math.pi / float(rng.uniform(3.0, 9.0)), focus_phase=float(rng.uniform(0, 2 * math.pi)),
            tint=tuple(float(c) for c in rng.uniform(0.8, 1.0, 3)),  # type: ignore[arg-type]
            lateral=lateral, lateral_drift=drift, along=along)

    def _new_life(self, slot: int, k: int, start: int) -> _Life:
        rng = self._rng(4, slot, k)
        lo, hi = self.object_size
        n_slots = len(self._slot_kinds)
        first_id = 1 + 2 * (k * n_slots + slot)
        if self._slot_kinds[slot] == 2:
            a = self._member(rng, first_id, size=float(rng.uniform(lo, (lo + hi) / 2)))
            b_size = float(rng.uniform(lo, (lo + hi) / 2))
            mean = (a.size + b_size) / 2
            gap = float(rng.uniform(-0.12, 0.06)) * mean  # slightly overlapping to just apart: touching
            lateral = (a.size + b_size) / 2 + gap
            b = self._member(rng, first_id + 1, lateral=lateral * float(rng.choice([-1.0, 1.0])),
                             drift=float(rng.uniform(-0.1, 0.9)) * mean, along=float(rng.uniform(-0.35, 0.35)) * mean,
                             size=b_size)
            members: Tuple[_Member, ...] = (a, b)
        else:
            members = (self._member(rng, first_id),)
        # far enough outside that the whole object (and its partner) is out of the frame at both ends
        reach = hi / 2 + max(abs(m.lateral) + abs(m.lateral_drift) + abs(m.along) for m in members) + 2
        path = self._make_path(rng, reach, (35.0, 150.0))
        frames = max(2, int(math.ceil(path.duration() * self.fps)))
        if k == 0:
            start = -int(rng.uniform(0.15, 0.85) * frames)  # the scene starts with objects already on screen
        return _Life(start=start, end=start + frames, path=path, members=members)

    def _life_at(self, slot: int, i: int) -> Optional[Tuple[int, _Life]]:
        """(k, life) of ``slot`` on screen at frame ``i``, or None during a pause between lives."""
        starts = self._schedules[slot]
        while not starts or starts[-1] <= i:
            k = len(starts)
            if k == 0:
                start = 0
            else:
                prev = self._life(slot, k - 1)
                start = prev.end + int(round(float(self._rng(6, slot, k).uniform(0.1, 1.0)) * self.fps))
            life = self._new_life(slot, k, start)
            self._lives[(slot, k)] = life
            starts.append(life.start)
        k = bisect.bisect_right(starts, i) - 1
        if k < 0:
            return None
        life = self._life(slot, k)
        return (k, life) if life.start <= i < life.end else None

    def _life(self, slot: int, k: int) -> _Life:
        life = self._lives.get((slot, k))
        if life is None:  # forgotten by the bounded cache: rebuild it (a pure function of seed, slot, k, start)
            life = self._new_life(slot, k, self._schedules[slot][k])
        if len(self._lives) > 64 * max(1, len(self._slot_kinds)):
            self._lives.clear()
        self._lives[(slot, k)] = life
        return life

    def _new_clutter(self, slot: int, k: int, start: int) -> _Clutter:
        rng = self._rng(7, slot, k)
        kind = str(rng.choice(_CLUTTER_KINDS, p=[0.35, 0.25, 0.2, 0.2]))
        path = self._make_path(rng, 140.0 * self.size[0] / 640.0, (15.0, 80.0) if kind != "shadow" else (20.0, 60.0))
        frames = max(2, int(math.ceil(path.duration() * self.fps)))
        gap = int(round(float(rng.uniform(0.5, 4.0)) * self.fps))
        if k == 0:
            start = -int(rng.uniform(0.1, 0.9) * frames)
        return _Clutter(start, start + frames, path, kind, (slot, k), gap)

    def _clutter_life(self, slot: int, k: int) -> _Clutter:
        life = self._clutter_lives.get((slot, k))
        if life is None:
            life = self._new_clutter(slot, k, self._clutter_starts[slot][k])
        if len(self._clutter_lives) > 64 * max(1, self.clutter):
            self._clutter_lives.clear()
        self._clutter_lives[(slot, k)] = life
        return life

    def _clutter_at(self, slot: int, i: int) -> Optional[_Clutter]:
        starts = self._clutter_starts[slot]
        while not starts or starts[-1] <= i:
            k = len(starts)
            start = 0
            if k:
                prev = self._clutter_life(slot, k - 1)
                start = prev.end + prev.gap
            life = self._new_clutter(slot, k, start)
            self._clutter_lives[(slot, k)] = life
            starts.append(life.start)
        k = bisect.bisect_right(starts, i) - 1
        if k < 0:
            return None
        life = self._clutter_life(slot, k)
        return life if life.start <= i < life.end else None

    # ---- drawing helpers -----------------------------------------------------------------------------------

    def _alpha(self, size: int) -> np.ndarray:
        """Feathered square mask of a patch on its canvas (size + 2*margin), float32 H×W×1."""
        alpha = self._alpha_cache.get(size)
        if alpha is None:
            ramp = np.minimum(np.arange(size, dtype=np.float32) + 1, np.arange(size, dtype=np.float32)[::-1] + 1)
            ramp = np.minimum(ramp / 2.0, 1.0)
            alpha = np.zeros((size + 2 * _MARGIN, size + 2 * _MARGIN, 1), np.float32)
            alpha[_MARGIN:_MARGIN + size, _MARGIN:_MARGIN + size, 0] = np.minimum.outer(ramp, ramp)
            self._alpha_cache[size] = alpha
        return alpha

    def _patch(self, member: _Member, size: int) -> Tuple[np.ndarray, np.ndarray]:
        """Premultiplied RGB canvas (float32) and its alpha for one object at one size, cached."""
        key = (member.id, size)
        hit = self._patches.get(key)
        if hit is not None:
            self._patches.move_to_end(key)
            return hit
        alpha = self._alpha(size)
        grey = cv2.resize(self._images[member.item], (size, size), interpolation=cv2.INTER_LINEAR)
        canvas = np.zeros(alpha.shape[:2] + (3,), np.float32)
        canvas[_MARGIN:_MARGIN + size, _MARGIN:_MARGIN + size] = grey[..., None].astype(np.float32) * np.asarray(
            member.tint, np.float32)
        canvas *= alpha
        self._patches[key] = (canvas, alpha)
        while len(self._patches) > 8 * max(self.objects, 1) + 8:
            self._patches.popitem(last=False)
        return canvas, alpha

    def _clutter_patch(self, life: _Clutter) -> Tuple[np.ndarray, np.ndarray]:
        hit = self._clutter_cache.get(life.key)
        if hit is not None:
            self._clutter_cache.move_to_end(life.key)
            return hit
        rng = self._rng(8, *life.key)
        scale = self.size[0] / 640.0
        side = int(rng.uniform(50, 150) * scale) + 2 * _MARGIN
        canvas = np.zeros((side, side, 3), np.float32)
        alpha = np.zeros((side, side), np.float32)
        c = side // 2
        inner = side - 2 * _MARGIN
        angle = float(rng.uniform(0, 180))
        if life.kind == "leaf":
            axes = (max(4, int(inner * rng.uniform(0.35, 0.5))), max(3, int(inner * rng.uniform(0.15, 0.35))))
            colour = rng.choice([(70, 140, 40), (150, 110, 40), (180, 60, 40), (200, 170, 60), (90, 90, 160)])
            cv2.ellipse(alpha, (c, c), axes, angle, 0, 360, 1.0, -1, cv2.LINE_AA)
            tex = 0.75 + 0.5 * cv2.GaussianBlur(rng.random((side, side)).astype(np.float32), (0, 0), 2.0)
            canvas[...] = np.asarray(colour, np.float32) * tex[..., None]
            cv2.line(canvas, (c - int(axes[0] * math.cos(math.radians(angle))), c - int(axes[0] * math.sin(math.radians(angle)))),
                     (c + int(axes[0] * math.cos(math.radians(angle))), c + int(axes[0] * math.sin(math.radians(angle)))),
                     (60, 60, 30), 1, cv2.LINE_AA)
            alpha *= 0.95
        elif life.kind == "mat":  # a dark woven mat: square and dark like an object's patch, with no item on it
            w, h = int(inner * rng.uniform(0.55, 0.95)), int(inner * rng.uniform(0.55, 0.95))
            box = cv2.boxPoints(((c, c), (w, h), float(rng.uniform(-20, 20)))).astype(np.int32)
            cv2.fillConvexPoly(alpha, box, 1.0, cv2.LINE_AA)
            period = int(rng.integers(3, 7))
            ys, xs = np.mgrid[0:side, 0:side]
            weave = ((xs // period + ys // period) % 2).astype(np.float32)
            canvas[...] = (float(rng.uniform(15, 45)) + float(rng.uniform(5, 20)) * weave)[..., None]
        elif life.kind == "sheet":
            w, h = int(inner * rng.uniform(0.5, 0.9)), int(inner * rng.uniform(0.35, 0.7))
            box = cv2.boxPoints(((c, c), (w, h), angle)).astype(np.int32)
            cv2.fillConvexPoly(alpha, box, 1.0, cv2.LINE_AA)
            canvas[...] = float(rng.uniform(200, 245))
            for _ in range(int(rng.integers(3, 8))):  # printed lines
                y = int(rng.integers(0, side))
                cv2.line(canvas, (0, y), (side, y), (90, 90, 100), 1, cv2.LINE_AA)
            m = cv2.getRotationMatrix2D((c, c), -angle, 1.0)
            canvas = cv2.warpAffine(canvas, m, (side, side), borderValue=(220, 220, 220))
            alpha *= 0.97
        else:  # shadow: a soft dark blob that darkens what is under it
            axes = (max(4, int(inner * rng.uniform(0.35, 0.5))), max(4, int(inner * rng.uniform(0.2, 0.45))))
            cv2.ellipse(alpha, (c, c), axes, angle, 0, 360, float(rng.uniform(0.25, 0.5)), -1, cv2.LINE_AA)
            alpha = cv2.GaussianBlur(alpha, (0, 0), max(2.0, inner / 10))
        canvas = canvas * alpha[..., None]
        out = (canvas.astype(np.float32), alpha[..., None].astype(np.float32))
        self._clutter_cache[life.key] = out
        while len(self._clutter_cache) > 2 * max(self.clutter, 1) + 4:
            self._clutter_cache.popitem(last=False)
        return out

    def _gain_map(self, i: int) -> np.ndarray:
        """Per-pixel lighting gain ×128 as uint8 H×W×3: a global drift, a turning gradient and a colour cast."""
        t = i / self.fps
        width, height = self.size
        base = 1.0 + self.lighting * (0.7 * math.sin(2 * math.pi * t / 9.0) + 0.3 * math.sin(2 * math.pi * t / 2.3 + 1.0))
        theta = 2 * math.pi * t / 31.0 + 0.7 * (self.seed % 7)
        ys, xs = np.mgrid[0:12, 0:16].astype(np.float32)
        ramp = ((xs / 15.0 - 0.5) * math.cos(theta) + (ys / 11.0 - 0.5) * math.sin(theta)) * (1.6 * self.lighting)
        cast = np.asarray([1.0 + 0.3 * self.lighting * math.sin(2 * math.pi * t / 17.0 + k * 2.1) for k in range(3)],
                          np.float32)
        gain = (base * (1.0 + ramp))[..., None] * cast
        small = np.clip(gain * 128.0, 0, 255).astype(np.uint8)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)

    # ---- per frame -----------------------------------------------------------------------------------------

    def _placed(self, i: int) -> List[Tuple[_Life, _Member, int, int, int, float, float]]:
        """Objects on screen at frame ``i`` in drawing order: (life, member, x, y, side, vx, vy)."""
        width, height = self.size
        lo, hi = self.object_size
        out = []
        for slot in range(len(self._slot_kinds)):
            found = self._life_at(slot, i)
            if found is None:
                continue
            _k, life = found
            t = (i - life.start) / self.fps
            f = min(1.0, max(0.0, (i - life.start) / max(1, life.end - life.start - 1)))
            cx, cy, vx, vy, ux, uy = life.path.at(t)
            for m in life.members:
                side_px = m.size * (1.0 + m.growth * (f - 0.5)) * (1.0 + m.scale_amp * math.sin(m.scale_w * t + m.scale_phase))
                s = int(round(min(hi, max(lo, side_px))))
                lat = m.lateral + m.lateral_drift * f
                mx = cx - uy * lat + ux * m.along
                my = cy + ux * lat + uy * m.along
                x, y = int(round(mx - s / 2)), int(round(my - s / 2))
                if x + s <= 0 or y + s <= 0 or x >= width or y >= height:
                    continue
                out.append((life, m, x, y, s, vx, vy))
        return out

    def truth(self, i: int) -> List[TruthObject]:
        """Ground truth of frame ``i`` without rendering it."""
        return self._truth(self._placed(i))

    def _truth(self, placed: list) -> List[TruthObject]:
        width, height = self.size
        truth = []
        for n, (_life, m, x, y, s, _vx, _vy) in enumerate(placed):
            seen = np.zeros((s, s), bool)
            fx1, fy1, fx2, fy2 = max(x, 0), max(y, 0), min(x + s, width), min(y + s, height)
            seen[fy1 - y:fy2 - y, fx1 - x:fx2 - x] = True
            for (_l2, _m2, x2, y2, s2, _a, _b) in placed[n + 1:]:  # later ones are drawn on top
                ax1, ay1 = max(x, x2) - x, max(y, y2) - y
                ax2, ay2 = min(x + s, x2 + s2) - x, min(y + s, y2 + s2) - y
                if ax1 < ax2 and ay1 < ay2:
                    seen[ay1:ay2, ax1:ax2] = False
            truth.append(TruthObject(id=m.id, box=(float(fx1), float(fy1), float(fx2), float(fy2)),
                                     class_id=m.class_id, visible_fraction=float(seen.mean()), item=m.item))
        return truth

    def render(self, i: int) -> Tuple[np.ndarray, List[TruthObject]]:
        """Frame ``i`` as an H×W×3 RGB uint8 image and its ground truth (one entry per object on screen)."""
        if i < 0:
            raise ConfigError("demo scene: frame index must be >= 0, got %d" % i)
        if self.frames is not None and i >= self.frames:
            raise ConfigError("demo scene: frame %d is past the end (frames=%d)" % (i, self.frames))
        frame = self._background.copy()
        shadows = []
        for slot in range(self.clutter):
            life = self._clutter_at(slot, i)
            if life is None:
                continue
            canvas, alpha = self._clutter_patch(life)
            x, y, _vx, _vy, _ux, _uy = life.path.at((i - life.start) / self.fps)
            x0, y0 = int(round(x)) - canvas.shape[1] // 2, int(round(y)) - canvas.shape[0] // 2
            if life.kind == "shadow":
                shadows.append((canvas, alpha, x0, y0))
            else:
                _composite(frame, canvas, alpha, x0, y0)
        placed = self._placed(i)
        truth = self._truth(placed)
        for life, m, x, y, s, vx, vy in placed:
            canvas, alpha = self._patch(m, s)
            t = (i - life.start) / self.fps
            shade = 1.0 - 0.5 * max(0.0, math.sin(m.shade_w * t + m.shade_phase)) ** 2
            canvas = canvas * shade
            focus = 2.6 * math.sin(m.focus_w * t + m.focus_phase) - 1.2
            streak = math.hypot(vx, vy) / self.fps * 0.8  # pixels travelled while the shutter is open
            if streak >= 1.5:
                kernel = _line_kernel(streak, math.atan2(vy, vx))
                canvas = cv2.filter2D(canvas, -1, kernel, borderType=cv2.BORDER_CONSTANT)
                alpha = cv2.filter2D(alpha, -1, kernel, borderType=cv2.BORDER_CONSTANT)[..., None]
            if focus > 0.3:
                canvas = cv2.GaussianBlur(canvas, (0, 0), focus, borderType=cv2.BORDER_CONSTANT)
                alpha = cv2.GaussianBlur(alpha, (0, 0), focus, borderType=cv2.BORDER_CONSTANT)
                if alpha.ndim == 2:
                    alpha = alpha[..., None]
            _composite(frame, canvas, alpha, x - _MARGIN, y - _MARGIN)
        for canvas, alpha, x0, y0 in shadows:
            _composite(frame, canvas, alpha, x0, y0)
        if self.lighting > 0:
            frame = cv2.multiply(frame, self._gain_map(i), scale=1.0 / 128.0)
        if self.noise > 0:
            height, width = frame.shape[:2]
            h = (i * 2654435761 + self.seed * 40503) & 0xFFFFFFFF
            dy, dx = h % _NOISE_PAD, (h >> 8) % _NOISE_PAD
            dy2, dx2 = (h >> 16) % _NOISE_PAD, (h >> 24) % _NOISE_PAD
            cv2.add(frame, self._noise_pos[dy:dy + height, dx:dx + width], dst=frame)
            cv2.subtract(frame, self._noise_neg[dy2:dy2 + height, dx2:dx2 + width], dst=frame)
        return frame, truth


def _line_kernel(length: float, angle: float) -> np.ndarray:
    """Normalised motion-blur kernel: a line of ``length`` pixels at ``angle`` radians."""
    n = min(2 * _MARGIN - 1, int(math.ceil(length)) | 1)
    kernel = np.zeros((n, n), np.float32)
    c = n // 2
    dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
    cv2.line(kernel, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1, cv2.LINE_AA)
    total = float(kernel.sum())
    if total <= 0:
        kernel[c, c] = 1.0
        total = 1.0
    return kernel / total


def _composite(frame: np.ndarray, canvas: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> None:
    """Blend a premultiplied canvas with its alpha into ``frame`` at (x0, y0), clipped to the frame."""
    height, width = frame.shape[:2]
    ch, cw = canvas.shape[:2]
    fx1, fy1 = max(x0, 0), max(y0, 0)
    fx2, fy2 = min(x0 + cw, width), min(y0 + ch, height)
    if fx1 >= fx2 or fy1 >= fy2:
        return
    cx1, cy1 = fx1 - x0, fy1 - y0
    cx2, cy2 = cx1 + (fx2 - fx1), cy1 + (fy2 - fy1)
    region = frame[fy1:fy2, fx1:fx2]
    a = alpha[cy1:cy2, cx1:cx2]
    out = region.astype(np.float32) * (1.0 - a) + canvas[cy1:cy2, cx1:cx2]
    np.clip(out, 0, 255, out=out)
    region[...] = out.astype(np.uint8)
