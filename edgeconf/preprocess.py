"""The preprocessing contract: how a raw uint8 image becomes one model input, described by data.

A bundle and every exported model carry it (``edgeconf.preprocessing``), so the runtime prepares images the
way the model was trained. Raw images are H×W grey or H×W×3 **RGB** uint8. Per image, in this order:

1. channels: RGB → grey (ITU-R BT.601 luma) for ``channels: 1``; grey → three equal channels for ``3``;
   ``color: bgr`` then reverses the channel order;
2. ``resize`` to ``size`` [height, width]: ``stretch`` (ignore the aspect ratio), ``letterbox`` (fit inside,
   pad with 0) or ``center-crop`` (fill, crop the centre); images already of that size are left alone;
3. ``(x * scale - mean) / std`` per channel, in float;
4. ``layout``: ``NCHW`` (channels first, PyTorch's habit) or ``NHWC`` (channels last).

docs/data.md documents every key with examples.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeconf.errors import InputValidationError, PreprocessingError
from edgeconf.schema import Float, Int, ListOf, Str, entry, from_json, to_json
from edgeconf.schema.jsonload import depth_problem

LAYOUTS = ("NCHW", "NHWC")
COLORS = ("rgb", "bgr")
RESIZES = ("stretch", "letterbox", "center-crop")
DTYPES = ("float32", "float16", "float64")
#: Largest model input side a bundle may declare (a sanity bound; the model's own input shape decides).
MAX_SIDE = 8192
#: model inputs larger than this many pixels are refused (a typo like [100000, 100000] would allocate 40 GB)
MAX_MODEL_PIXELS = 4096 * 4096


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


@dataclass(frozen=True)
class Preprocessing:
    """How a raw uint8 image (H×W grey or H×W×3 RGB) becomes one model input (see the module doc).

    Each field is declared with its JSON check (``edgeconf.schema``), so a manifest's or a model's
    ``preprocessing`` object is read strictly; ``__post_init__`` checks the same values (and the
    cross-field rules) when Python code builds one. ``color`` and ``resize`` are written only when they
    differ from their defaults, so bundles that do not use them stay readable by older edgeconf versions.
    """

    size: Tuple[int, int] = entry(ListOf(Int(1, MAX_SIDE), 2, 2, tuple), (28, 28))  # (height, width)
    channels: int = entry(Int(), 1)
    scale: float = entry(Float(), 1.0 / 255.0)
    mean: Tuple[float, ...] = entry(ListOf(Float(), 1, 4, tuple), (0.0,))
    std: Tuple[float, ...] = entry(ListOf(Float(), 1, 4, tuple), (1.0,))
    layout: str = entry(Str(LAYOUTS), "NCHW")
    dtype: str = entry(Str(DTYPES), "float32")
    color: str = entry(Str(COLORS), "rgb", write_default=False)
    resize: str = entry(Str(RESIZES), "stretch", write_default=False)

    def __post_init__(self) -> None:
        def bad(msg: str) -> PreprocessingError:
            return PreprocessingError("preprocessing." + msg)

        size = self.size
        if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(_is_int(v) and v >= 1 for v in size):
            raise bad("size must be [height, width] of positive integers, got %r" % (size,))
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        if self.size[0] * self.size[1] > MAX_MODEL_PIXELS:
            raise bad("size %d×%d is %d pixels; model inputs are limited to %d (4096×4096)"
                      % (self.size[0], self.size[1], self.size[0] * self.size[1], MAX_MODEL_PIXELS))
        if not _is_int(self.channels) or self.channels not in (1, 3):
            raise bad("channels must be 1 or 3, got %r" % (self.channels,))
        if self.layout not in LAYOUTS:
            raise bad("layout must be NCHW or NHWC, got %r" % (self.layout,))
        if self.color not in COLORS:
            raise bad("color must be rgb or bgr, got %r" % (self.color,))
        if self.color == "bgr" and self.channels != 3:
            raise bad("color 'bgr' needs channels 3 (a grey input has no channel order)")
        if self.resize not in RESIZES:
            raise bad("resize must be one of %s, got %r" % (", ".join(RESIZES), self.resize))
        if self.dtype not in DTYPES:
            raise bad("dtype must be one of %s, got %r" % (", ".join(DTYPES), self.dtype))
        if not _is_real(self.scale) or not self.scale > 0:
            raise bad("scale must be a finite number > 0, got %r" % (self.scale,))
        for name in ("mean", "std"):
            v = getattr(self, name)
            if _is_real(v):
                v = (v,)
            if not isinstance(v, (tuple, list)) or not v or not all(_is_real(x) for x in v):
                raise bad("%s must be a list of finite numbers, got %r" % (name, getattr(self, name)))
            if len(v) not in (1, self.channels):
                raise bad("%s needs 1 or %d values, got %d" % (name, self.channels, len(v)))
            object.__setattr__(self, name, tuple(float(x) for x in v))
        if any(s <= 0 for s in self.std):
            raise bad("std values must be > 0, got %r" % (self.std,))
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "channels", int(self.channels))
        # (x * scale - mean) / std as one affine map x * gain + offset, shared by every path
        std = np.asarray(self.std, dtype=np.float32)
        object.__setattr__(self, "_gain", (np.float32(self.scale) / std).astype(np.float32))
        object.__setattr__(self, "_offset", (-np.asarray(self.mean, dtype=np.float32) / std).astype(np.float32))

    # -- description ------------------------------------------------------------------------------
    @classmethod
    def from_json(cls, data: Any) -> "Preprocessing":
        """Read a manifest's, a model's or an option's ``preprocessing`` object strictly (unknown keys refused)."""
        return from_json(cls, data, "preprocessing", PreprocessingError)

    def to_json(self) -> Dict[str, Any]:
        return to_json(self)

    def values(self) -> Dict[str, Any]:
        """Every key with its value, defaults included (``to_json`` leaves some defaults out)."""
        return {f.name: list(getattr(self, f.name)) if isinstance(getattr(self, f.name), tuple) else getattr(self, f.name)
                for f in fields(self)}

    def replace(self, **changes: Any) -> "Preprocessing":
        d = self.values()
        d.update(changes)
        return Preprocessing.from_json(d)

    def differences(self, other: "Preprocessing") -> List[str]:
        """Names of the keys whose values differ from ``other``'s."""
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]

    def describe(self) -> str:
        """One line, e.g. ``40×40 RGB, NHWC, stretch, (x·0.00392 − mean) / std, mean [0.5, …]``."""
        h, w = self.size
        chan = "grey" if self.channels == 1 else self.color.upper()
        return ("%d×%d %s, %s, %s, x·%.6g, mean %s, std %s"
                % (h, w, chan, self.layout, self.resize, self.scale, _fmt(self.mean), _fmt(self.std)))

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """One model input's shape (no batch axis)."""
        h, w = self.size
        return (self.channels, h, w) if self.layout == "NCHW" else (h, w, self.channels)

    def model_input_problem(self, shape: Sequence[Any]) -> Optional[str]:
        """Why inputs of this preprocessing cannot feed a model input of ``shape`` (no batch axis), or None.

        Dynamic dimensions (None or a name) fit anything. The message names the key to change.
        """
        dims = [d if _is_int(d) and d > 0 else None for d in shape]
        want = self.input_shape
        if len(dims) == len(want) and all(d is None or d == v for d, v in zip(dims, want)):
            return None
        shown = "(%s)" % ", ".join("?" if d is None else str(d) for d in dims)
        hint = ""
        if len(dims) == 3:
            flipped = self.replace(layout="NHWC" if self.layout == "NCHW" else "NCHW")
            if all(d is None or d == v for d, v in zip(dims, flipped.input_shape)):
                hint = "; set \"layout\": \"%s\" in the preprocessing" % flipped.layout
            elif dims[0] in (1, 3) and self.layout == "NCHW" and dims[0] != self.channels:
                hint = "; set \"channels\": %d" % dims[0]
            elif dims[2] in (1, 3) and self.layout == "NHWC" and dims[2] != self.channels:
                hint = "; set \"channels\": %d" % dims[2]
            else:
                hint = "; set \"size\" (and \"layout\") to match the model"
        return ("the preprocessing makes inputs of shape %s (%s) but the model input expects %s%s"
                % (tuple(want), self.describe(), shown, hint))

    # -- running ----------------------------------------------------------------------------------
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """One raw image → one model input (no batch axis)."""
        if (isinstance(image, np.ndarray) and self.channels == 1 and image.dtype == np.uint8
                and image.shape == self.size and len(self._gain) == 1):
            x = image.astype(np.float32)  # the common case (grey, right size): no copy loop, no resize
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

    def writer(self, out: np.ndarray) -> Optional[Callable[[np.ndarray], None]]:
        """A function that preprocesses one raw image into ``out`` as :meth:`write` does, with everything about
        ``out`` checked once, here (the cascade keeps one for its first stage's bound input). None when
        ``out`` does not have the shape ``(1,) + input_shape`` and this dtype."""
        if out.shape != (1,) + tuple(self.input_shape) or out.dtype != np.dtype(self.dtype):
            return None
        if not (self.channels == 1 and len(self._gain) == 1 and out.dtype == np.float32 and out.flags.c_contiguous):
            def slow(image: np.ndarray) -> None:
                out[0] = self(image)
            return slow
        flat = out.reshape(self.size)
        size, gain, offset, u8 = self.size, self._gain[0], self._offset[0], np.dtype(np.uint8)
        multiply, add = np.multiply, np.add

        def fast(image: np.ndarray) -> None:
            if type(image) is np.ndarray and image.dtype == u8 and image.shape == size:
                flat[...] = image  # cast, scale and shift in place: the values of __call__
                multiply(flat, gain, out=flat)
                if offset:
                    add(flat, offset, out=flat)
            else:
                out[0] = self(image)
        return fast

    def pixels(self, image: np.ndarray) -> np.ndarray:
        """One raw image → uint8 pixels at the model's size and channel count (H×W grey or H×W×3 RGB), before
        the channel order and the float arithmetic: the input of a fused cascade graph, which does the rest."""
        return self._pixels(image, None)

    def _pixels(self, image: np.ndarray, i: Optional[int]) -> np.ndarray:
        """Steps 1–2 of the contract (validation, channels, resize; not ``color``'s channel order)."""
        img = check_image(image, i)
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[:, :, :3]
        if self.channels == 1 and img.ndim == 3:
            import cv2

            img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
        elif self.channels == 3 and img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.shape[:2] != self.size:
            import cv2

            img = self._resize(cv2, img)
        return img

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Raw images → a model batch ``(N, …)``. Images of the right size skip the resize."""
        h, w = self.size
        fast = self._grey_stack(images)
        if fast is not None:  # the common case (grey, right size): one vectorised pass, same values
            x = np.multiply(fast, self._gain[0], dtype=np.float32)  # cast and scale in one pass
            if self._offset[0]:  # adding 0 changes no value
                x += self._offset[0]
            shape = (len(fast), 1, h, w) if self.layout == "NCHW" else (len(fast), h, w, 1)
            return x.reshape(shape).astype(self.dtype, copy=False)
        out = np.empty((len(images), h, w, self.channels), dtype=np.float32)
        for i, img in enumerate(images):
            img = self._pixels(img, i)
            if self.color == "bgr":
                img = img[:, :, ::-1]
            out[i] = img.reshape(h, w, self.channels)
        out *= self._gain
        out += self._offset
        if self.layout == "NCHW":
            out = out.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(out, dtype=self.dtype)

    def _grey_stack(self, images: Sequence[np.ndarray]) -> Optional[np.ndarray]:
        """``(N, H, W)`` uint8 when every image is grey uint8 at the model's size and the model is grey, else None."""
        if self.channels != 1 or len(self._gain) != 1 or not len(images):
            return None
        if isinstance(images, np.ndarray):
            return images if images.dtype == np.uint8 and images.shape[1:] == self.size else None
        size = self.size
        for img in images:
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.shape != size:
                return None
        return np.stack(images)

    def _resize(self, cv2: Any, img: np.ndarray) -> np.ndarray:
        h, w = self.size
        ih, iw = img.shape[:2]
        if self.resize == "stretch":
            return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        if self.resize == "center-crop":
            s = max(h / ih, w / iw)  # crop in source pixels first, so a large image is never resized whole
            ch, cw = min(ih, max(1, int(round(h / s)))), min(iw, max(1, int(round(w / s))))
            y0, x0 = (ih - ch) // 2, (iw - cw) // 2
            return cv2.resize(np.ascontiguousarray(img[y0:y0 + ch, x0:x0 + cw]), (w, h), interpolation=cv2.INTER_AREA)
        s = min(h / ih, w / iw)  # letterbox
        nh, nw = min(h, max(1, int(round(ih * s)))), min(w, max(1, int(round(iw * s))))
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((h, w) + img.shape[2:], dtype=np.uint8)
        y0, x0 = (h - nh) // 2, (w - nw) // 2
        canvas[y0:y0 + nh, x0:x0 + nw] = small
        return canvas


def stage_problem(pre: "Preprocessing", metadata: Dict[str, str], input_shape: Optional[Sequence[Any]] = None
                  ) -> Optional[str]:
    """Why a bundle stage cannot run with the bundle's preprocessing ``pre``, or None.

    ``metadata``: the stage model's ``edgeconf.*`` metadata (its own ``edgeconf.preprocessing``, when it
    carries one, must equal ``pre``); ``input_shape``: the model input without the batch axis, to check
    too (None: not checked; :class:`~edgeconf.cascade.Cascade` checks the stages that take the image).
    """
    import json

    raw = metadata.get("edgeconf.preprocessing")
    if raw:
        too_deep = depth_problem(raw, "its edgeconf.preprocessing metadata")
        if too_deep:
            return too_deep
        try:
            own = Preprocessing.from_json(json.loads(raw))
        except (ValueError, PreprocessingError) as exc:
            return "its edgeconf.preprocessing metadata is invalid (%s)" % exc
        diff = own.differences(pre)
        if diff:
            a, b = own.values(), pre.values()
            return ("it was exported with a different preprocessing (%s); every stage of a bundle must prepare "
                    "images the same way" % ", ".join("%s %s vs the bundle's %s" % (k, json.dumps(a[k]),
                                                                                     json.dumps(b[k])) for k in diff))
    if input_shape is not None:
        return pre.model_input_problem(input_shape)
    return None


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join("%.4g" % v for v in values) + "]"


_KIND = {1: "grey", 3: "colour"}


def channel_mismatch(images: Any, preprocessing: "Preprocessing") -> Optional[Tuple[str, str]]:
    """(what the preprocessing takes, what the images are) — e.g. ``("colour", "grey")`` — when raw images are of
    another kind than ``preprocessing.channels`` says, else None. Grey: H×W or H×W×1; colour: H×W×3 (or ×4 with
    alpha). ``images``: a list of images (the first 256 are looked at) or a stack (N, H, W[, C])."""
    if isinstance(images, list):
        shapes = {tuple(np.shape(im)) for im in images[:256]}
    else:
        shapes = {tuple(np.shape(images)[1:])}
    chans = sorted({1 if len(s) == 2 or s[2] == 1 else 3 for s in shapes})
    if chans == [preprocessing.channels]:
        return None
    return _KIND[preprocessing.channels], " and ".join(_KIND[c] for c in chans)


def check_image(image: Any, index: Optional[int] = None) -> np.ndarray:
    """A raw image as a numpy array, or :class:`InputValidationError` saying what is wrong with it.

    Raw images are uint8 arrays H×W (grey) or H×W×C with C 1, 3 (RGB) or 4 (RGBA), with at least one pixel.
    """
    what = "the image" if index is None else "image %d" % index
    if image is None:
        raise InputValidationError("%s is None; pass a uint8 numpy array H×W or H×W×3 (RGB)" % what)
    given = type(image).__name__
    if not isinstance(image, np.ndarray):
        ragged = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy < 1.24 warns on ragged lists, then makes an object array
                image = np.asarray(image)
            ragged = image.dtype == object
        except (ValueError, TypeError):
            ragged = True
        if ragged:
            raise InputValidationError("%s is a %s that is not an array; pass a uint8 numpy array H×W or H×W×3"
                                       % (what, given))
    if image.dtype != np.uint8:
        kind = "dtype %s" % image.dtype if given == "ndarray" else "%s of dtype %s" % (given, image.dtype)
        raise InputValidationError("%s has %s; raw images must be uint8 numpy arrays (convert with "
                                   "np.clip(x, 0, 255).astype(np.uint8))" % (what, kind))
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)) or image.size == 0:
        raise InputValidationError("%s has shape %s; expected H×W grey or H×W×3 RGB with at least one pixel"
                                   % (what, image.shape))
    return image


__all__ = ["Preprocessing", "channel_mismatch", "check_image", "stage_problem", "LAYOUTS", "COLORS", "RESIZES", "MAX_MODEL_PIXELS"]
