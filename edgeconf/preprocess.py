"""Image preprocessing described by data, so a bundle carries it: size, channels, scale, mean/std, layout."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Sequence, Tuple

import numpy as np

from edgeconf.errors import BundleError, InputValidationError


@dataclass(frozen=True)
class Preprocessing:
    """How a raw uint8 image (H×W grey or H×W×3 RGB) becomes one model input."""

    size: Tuple[int, int] = (28, 28)  # (height, width)
    channels: int = 1
    scale: float = 1.0 / 255.0
    mean: Tuple[float, ...] = (0.0,)
    std: Tuple[float, ...] = (1.0,)
    layout: str = "NCHW"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise BundleError("preprocessing.channels must be 1 or 3, got %r" % (self.channels,))
        if self.layout not in ("NCHW", "NHWC"):
            raise BundleError("preprocessing.layout must be NCHW or NHWC, got %r" % (self.layout,))
        if len(self.size) != 2 or min(self.size) < 1:
            raise BundleError("preprocessing.size must be [height, width] of positive integers, got %r" % (self.size,))
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) not in (1, self.channels):
                raise BundleError("preprocessing.%s needs 1 or %d values, got %d" % (name, self.channels, len(v)))
        if any(s <= 0 for s in self.std):
            raise BundleError("preprocessing.std values must be > 0")
        # (x * scale - mean) / std as one affine map x * gain + offset, shared by every path
        std = np.asarray(self.std, dtype=np.float32)
        object.__setattr__(self, "_gain", (np.float32(self.scale) / std).astype(np.float32))
        object.__setattr__(self, "_offset", (-np.asarray(self.mean, dtype=np.float32) / std).astype(np.float32))

    @classmethod
    def from_json(cls, data: dict) -> "Preprocessing":
        if not isinstance(data, dict):
            raise BundleError("preprocessing must be an object, got %s" % type(data).__name__)
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BundleError("unknown preprocessing keys %s; known: %s" % (unknown, ", ".join(sorted(known))))
        kw = dict(data)
        for key in ("size", "mean", "std"):
            if key in kw:
                kw[key] = tuple(kw[key])
        try:
            return cls(**kw)
        except TypeError as exc:
            raise BundleError("invalid preprocessing: %s" % exc) from None

    def to_json(self) -> dict:
        d = asdict(self)
        for key in ("size", "mean", "std"):
            d[key] = list(d[key])
        return d

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        h, w = self.size
        return (self.channels, h, w) if self.layout == "NCHW" else (h, w, self.channels)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """One raw image → one model input (no batch axis)."""
        img = image if isinstance(image, np.ndarray) else np.asarray(image)
        if self.channels == 1 and img.dtype == np.uint8 and img.shape == self.size and len(self._gain) == 1:
            x = img.astype(np.float32)  # the common case (grey, right size): no copy loop, no resize
            x *= self._gain[0]
            x += self._offset[0]
            return x.reshape(self.input_shape).astype(self.dtype, copy=False)
        return self.batch([image])[0]

    def write(self, image: np.ndarray, out: np.ndarray) -> bool:
        """Preprocess one raw image straight into ``out`` (``(1,) + input_shape``, e.g. a runner's bound input).

        Same values as :meth:`__call__`. Returns False, writing nothing, unless ``out`` has that shape and this
        dtype; raises like :meth:`__call__` for an image it cannot take.
        """
        if out.shape[1:] != self.input_shape or out.shape[0] != 1 or out.dtype != np.dtype(self.dtype):
            return False
        img = image if isinstance(image, np.ndarray) else np.asarray(image)
        if (self.channels == 1 and img.dtype == np.uint8 and img.shape == self.size and len(self._gain) == 1
                and out.dtype == np.float32 and out.flags.c_contiguous):
            flat = out.reshape(self.size)  # a view: the image is cast, scaled and shifted in place
            flat[...] = img
            flat *= self._gain[0]
            if self._offset[0]:
                flat += self._offset[0]
            return True
        out[0] = self(image)
        return True

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Raw images → a model batch ``(N, …)``. Images of the right size skip the resize."""
        import cv2

        h, w = self.size
        out = np.empty((len(images), h, w, self.channels), dtype=np.float32)
        for i, img in enumerate(images):
            img = np.asarray(img)
            if img.ndim == 3 and img.shape[2] == 1:
                img = img[:, :, 0]
            if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)) or img.size == 0:
                raise InputValidationError("image %d has shape %s; expected H×W grey or H×W×3 RGB" % (i, img.shape))
            if img.dtype != np.uint8:
                raise InputValidationError("image %d has dtype %s; raw images must be uint8" % (i, img.dtype))
            if img.ndim == 3 and img.shape[2] == 4:
                img = img[:, :, :3]
            if self.channels == 1 and img.ndim == 3:
                img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
            elif self.channels == 3 and img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            if img.shape[:2] != (h, w):
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            out[i] = img.reshape(h, w, self.channels)
        out *= self._gain
        out += self._offset
        if self.layout == "NCHW":
            out = out.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(out, dtype=self.dtype)
