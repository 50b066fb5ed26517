"""The built-in synthetic scene behind ``demo://``: FashionMNIST items moving over a textured background.

Each object is one FashionMNIST image (from the small sample shipped in ``edgeconf/data``) drawn upscaled as a
bright item on its own dark square patch, the way FashionMNIST looks, so a crop of its box resized to 28×28 grey
is close to the original image. Objects move with varying speed and bounce off the frame edges, cross each other
(occlusion), pass under shadows, go in and out of focus and get motion blur; the whole frame has slow lighting
changes and sensor noise. Each object lives for a while, leaves, and a new one (new id, new item) takes its place.

Every frame is a pure function of ``(seed, index)``: ``render(i)`` gives the same image and truth for the same
scene settings whatever was rendered before, so the scene can be seeked, replayed and evaluated.
"""
from __future__ import annotations

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


@dataclass(frozen=True)
class _Life:
    """One object's life in one slot: identity, looks and motion parameters (all drawn from the seed)."""

    id: int
    start: int
    end: int  # exclusive; the slot is empty from ``end`` to the next life's start
    item: int
    class_id: int
    size: int
    p0: Tuple[float, float]
    vel: Tuple[float, float]  # px/s
    wobble: float  # speed modulation depth in [0, 1)
    wobble_w: float
    wobble_phase: float
    shade_w: float
    shade_phase: float
    focus_w: float
    focus_phase: float
    tint: Tuple[float, float, float]


class DemoScene:
    """``DemoScene(seed, objects, size=(w, h), fps, frames)``; ``render(i) -> (RGB uint8 image, truth)``.

    ``frames`` is the number of frames (``None``: endless). ``noise`` is the sensor-noise sigma in grey levels,
    ``lighting`` the depth of the global lighting changes, ``lifetime`` the (min, max) seconds an object lives.
    """

    def __init__(self, seed: int = 0, objects: int = 6, size: Tuple[int, int] = (640, 480), fps: float = 30.0,
                 frames: Optional[int] = None, noise: float = 4.0, lighting: float = 0.15,
                 lifetime: Tuple[float, float] = (8.0, 20.0), object_size: Tuple[int, int] = (56, 96)) -> None:
        width, height = int(size[0]), int(size[1])
        if objects < 0 or objects > 64:
            raise ConfigError("demo scene: objects must be between 0 and 64, got %d" % objects)
        if fps <= 0:
            raise ConfigError("demo scene: fps must be positive, got %r" % fps)
        if frames is not None and frames < 0:
            raise ConfigError("demo scene: frames must be >= 0, got %r" % frames)
        lo, hi = int(object_size[0]), int(object_size[1])
        if not 8 <= lo <= hi:
            raise ConfigError("demo scene: object_size must be (min, max) with 8 <= min <= max, got %r" % (object_size,))
        if width < hi + 2 or height < hi + 2:
            raise ConfigError("demo scene: size %dx%d is too small for objects of up to %d px; use at least %dx%d"
                              % (width, height, hi, hi + 2, hi + 2))
        if not 0 < lifetime[0] <= lifetime[1]:
            raise ConfigError("demo scene: lifetime must be (min, max) seconds with 0 < min <= max")
        self.seed = int(seed)
        self.objects = int(objects)
        self.size = (width, height)
        self.fps = float(fps)
        self.frames = None if frames is None else int(frames)
        self.noise = float(noise)
        self.lighting = float(lighting)
        self.lifetime = (float(lifetime[0]), float(lifetime[1]))
        self.object_size = (lo, hi)
        self.labels = LABELS
        self._images, self._labels = load_sample()
        self._background = self._make_background()
        self._noise_pos, self._noise_neg = self._make_noise()
        self._slots = [self._slot_schedule(j) for j in range(self.objects)]
        self._lives: Dict[Tuple[int, int], _Life] = {}
        self._patches: "OrderedDict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]]" = OrderedDict()
        self._alpha_cache: Dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        if self.frames is None:
            raise TypeError("this demo scene is endless (frames=None)")
        return self.frames

    # ---- scene construction (once) -------------------------------------------------------------------------

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

    def _slot_schedule(self, slot: int) -> Tuple[int, int, int]:
        """(period, offset, gap) in frames: life k of the slot spans ``[k*period - offset, (k+1)*period - offset - gap)``."""
        rng = self._rng(3, slot)
        period = max(2, int(round(rng.uniform(*self.lifetime) * self.fps)))
        offset = int(rng.integers(0, period // 2 + 1))
        gap = min(period - 1, int(round(rng.uniform(0.3, 1.2) * self.fps)))
        return period, offset, gap

    def _life(self, slot: int, k: int) -> _Life:
        key = (slot, k)
        life = self._lives.get(key)
        if life is not None:
            return life
        period, offset, gap = self._slot_schedule(slot) if slot >= len(self._slots) else self._slots[slot]
        rng = self._rng(4, slot, k)
        width, height = self.size
        size = int(rng.integers(self.object_size[0], self.object_size[1] + 1))
        item = int(rng.integers(0, len(self._images)))
        speed = float(rng.uniform(40, 170)) * width / 640.0
        angle = float(rng.uniform(0, 2 * math.pi))
        life = _Life(
            id=k * self.objects + slot + 1,
            start=max(0, k * period - offset),
            end=(k + 1) * period - offset - gap,
            item=item,
            class_id=int(self._labels[item]),
            size=size,
            p0=(float(rng.uniform(0, width - size)), float(rng.uniform(0, height - size))),
            vel=(speed * math.cos(angle), speed * math.sin(angle)),
            wobble=float(rng.uniform(0.3, 0.9)),
            wobble_w=2 * math.pi / float(rng.uniform(2.0, 6.0)),
            wobble_phase=float(rng.uniform(0, 2 * math.pi)),
            shade_w=2 * math.pi / float(rng.uniform(4.0, 10.0)),
            shade_phase=float(rng.uniform(0, 2 * math.pi)),
            focus_w=2 * math.pi / float(rng.uniform(3.0, 9.0)),
            focus_phase=float(rng.uniform(0, 2 * math.pi)),
            tint=tuple(float(c) for c in rng.uniform(0.8, 1.0, 3)),  # type: ignore[arg-type]
        )
        if len(self._lives) > 4 * max(self.objects, 1) + 16:
            self._lives.clear()
        self._lives[key] = life
        return life

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

    def _patch(self, slot: int, k: int, life: _Life) -> Tuple[np.ndarray, np.ndarray]:
        """Premultiplied RGB canvas (float32) and its alpha for one life, cached while the life is current."""
        key = (slot, k)
        hit = self._patches.get(key)
        if hit is not None:
            self._patches.move_to_end(key)
            return hit
        alpha = self._alpha(life.size)
        grey = cv2.resize(self._images[life.item], (life.size, life.size), interpolation=cv2.INTER_LINEAR)
        canvas = np.zeros(alpha.shape[:2] + (3,), np.float32)
        canvas[_MARGIN:_MARGIN + life.size, _MARGIN:_MARGIN + life.size] = grey[..., None].astype(np.float32) * np.asarray(
            life.tint, np.float32)
        canvas *= alpha
        self._patches[key] = (canvas, alpha)
        while len(self._patches) > 2 * max(self.objects, 1) + 4:
            self._patches.popitem(last=False)
        return canvas, alpha

    # ---- per frame -----------------------------------------------------------------------------------------

    def _global_gain(self, i: int) -> float:
        t = i / self.fps
        return 1.0 + self.lighting * (0.7 * math.sin(2 * math.pi * t / 9.0) + 0.3 * math.sin(2 * math.pi * t / 2.3 + 1.0))

    def _state(self, slot: int, i: int) -> Optional[Tuple[_Life, int, float, float, float, float]]:
        """(life, k, x, y, vx, vy) of the object in ``slot`` at frame ``i``, or None while the slot is empty."""
        period, offset, _gap = self._slots[slot]
        k = (i + offset) // period
        life = self._life(slot, k)
        if i >= life.end or i < life.start:
            return None
        t = (i - life.start) / self.fps
        # Speed varies as 1 + wobble*cos(w t + phase); u(t) is its integral, so position is closed-form in t.
        u = t + life.wobble / life.wobble_w * (math.sin(life.wobble_w * t + life.wobble_phase) - math.sin(life.wobble_phase))
        du = 1.0 + life.wobble * math.cos(life.wobble_w * t + life.wobble_phase)
        width, height = self.size
        x, sx = _bounce(life.p0[0] + life.vel[0] * u, width - life.size)
        y, sy = _bounce(life.p0[1] + life.vel[1] * u, height - life.size)
        return life, k, x, y, sx * life.vel[0] * du, sy * life.vel[1] * du

    def truth(self, i: int) -> List[TruthObject]:
        """Ground truth of frame ``i`` without rendering it."""
        return self._layout(i)[1]

    def _layout(self, i: int) -> Tuple[list, List[TruthObject]]:
        placed = []
        for slot in range(self.objects):
            st = self._state(slot, i)
            if st is not None:
                life, k, x, y, vx, vy = st
                placed.append((slot, k, life, int(round(x)), int(round(y)), vx, vy))
        truth = []
        for n, (slot, k, life, x, y, _vx, _vy) in enumerate(placed):
            s = life.size
            covered = np.zeros((s, s), bool)
            for (_s2, _k2, life2, x2, y2, _a, _b) in placed[n + 1:]:  # later slots are drawn on top
                ax1, ay1 = max(x, x2) - x, max(y, y2) - y
                ax2, ay2 = min(x + s, x2 + life2.size) - x, min(y + s, y2 + life2.size) - y
                if ax1 < ax2 and ay1 < ay2:
                    covered[ay1:ay2, ax1:ax2] = True
            visible = 1.0 - float(covered.mean()) if covered.any() else 1.0
            truth.append(TruthObject(id=life.id, box=(float(x), float(y), float(x + s), float(y + s)),
                                     class_id=life.class_id, visible_fraction=visible))
        return placed, truth

    def render(self, i: int) -> Tuple[np.ndarray, List[TruthObject]]:
        """Frame ``i`` as an H×W×3 RGB uint8 image and its ground truth (one entry per object on screen)."""
        if i < 0:
            raise ConfigError("demo scene: frame index must be >= 0, got %d" % i)
        if self.frames is not None and i >= self.frames:
            raise ConfigError("demo scene: frame %d is past the end (frames=%d)" % (i, self.frames))
        gain = self._global_gain(i)
        frame = cv2.convertScaleAbs(self._background, alpha=gain)
        placed, truth = self._layout(i)
        for slot, k, life, x, y, vx, vy in placed:
            canvas, alpha = self._patch(slot, k, life)
            t = (i - life.start) / self.fps
            shade = 1.0 - 0.55 * max(0.0, math.sin(life.shade_w * t + life.shade_phase)) ** 2
            canvas = canvas * (gain * shade)
            focus = 2.6 * math.sin(life.focus_w * t + life.focus_phase) - 1.2
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
        if self.noise > 0:
            height, width = frame.shape[:2]
            h = (i * 2654435761 + self.seed * 40503) & 0xFFFFFFFF
            dy, dx = h % _NOISE_PAD, (h >> 8) % _NOISE_PAD
            dy2, dx2 = (h >> 16) % _NOISE_PAD, (h >> 24) % _NOISE_PAD
            cv2.add(frame, self._noise_pos[dy:dy + height, dx:dx + width], dst=frame)
            cv2.subtract(frame, self._noise_neg[dy2:dy2 + height, dx2:dx2 + width], dst=frame)
        return frame, truth


def _bounce(p: float, span: float) -> Tuple[float, float]:
    """Fold an unbounded coordinate into [0, span] like a ball bouncing between walls; also the direction sign."""
    if span <= 0:
        return 0.0, 1.0
    q = p % (2 * span)
    return (q, 1.0) if q <= span else (2 * span - q, -1.0)


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
