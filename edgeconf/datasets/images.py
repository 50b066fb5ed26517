"""Image files and image arrays as raw uint8 images (H×W grey or H×W×3 RGB), read safely.

An image file's size is read from its header and checked against the pixel limit
(:mod:`edgeconf.datasets.limits`) before it is decoded; ``.npy``/``.npz`` headers are checked before they are
loaded (:mod:`edgeconf.datasets.arrays`).
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edgeconf.datasets.arrays import read_npy, read_npz
from edgeconf.datasets.imageheader import image_size
from edgeconf.datasets.limits import check_pixels
from edgeconf.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".pbm", ".pnm", ".tif", ".tiff", ".webp",
                    ".gif", ".ras", ".sr")
ARRAY_EXTENSIONS = (".npy", ".npz")
#: the array names an .npz may use for its images, in order of preference
IMAGE_KEYS = ("x", "images")


def is_image_path(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        x = np.nan_to_num(img.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        if x.size and float(x.max()) <= 1.0:
            x = x * 255.0
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return np.clip(img, 0, 255).astype(np.uint8)


@contextlib.contextmanager
def _quiet_opencv(cv2: Any) -> Iterator[None]:
    """OpenCV's own logging silenced for the block (and restored), where this OpenCV has the switch."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None or not hasattr(log, "getLogLevel"):
        yield
        return
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        log.setLogLevel(level)


def read_image(path: str, max_pixels: Optional[int] = None) -> np.ndarray:
    """An image file as uint8 grey (H×W) or RGB (H×W×3); its pixel count is checked before decoding."""
    import cv2

    if not os.path.isfile(path):
        raise DataError("image %s does not exist" % path)
    try:
        with open(path, "rb") as f:
            fmt, w, h = image_size(f, path)
            check_pixels(w, h, "image %s (%s)" % (path, fmt), max_pixels)
            f.seek(0)
            data = np.frombuffer(f.read(), dtype=np.uint8)
    except OSError as exc:
        raise DataError("cannot read %s: %s" % (path, os.strerror(exc.errno) if exc.errno else exc)) from None
    try:
        with _quiet_opencv(cv2):  # a corrupt file is our one-line DataError, not OpenCV's log lines as well
            img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        raise DataError("cannot decode %s as a %s image (corrupt or unsupported variant)" % (path, fmt))
    if img.shape[0] * img.shape[1] > w * h:  # a decoder that found more pixels than the header we checked
        raise DataError("%s decodes to %d×%d but its header says %d×%d; the file is corrupt"
                        % (path, img.shape[1], img.shape[0], w, h))
    img = _to_uint8(img)
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        elif img.shape[2] == 2:  # grey + alpha
            img = np.ascontiguousarray(img[:, :, 0])
        else:
            code = cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB
            img = cv2.cvtColor(img, code)
    return img


def image_array(arr: np.ndarray, what: str, max_pixels: Optional[int] = None) -> np.ndarray:
    """Check an array of raw images: uint8, N×H×W or N×H×W×C (C 1, 3 or 4), not empty, within the pixel limit."""
    if arr.dtype != np.uint8:
        raise DataError("%s holds %s values; raw images must be uint8 (N×H×W or N×H×W×3)" % (what, arr.dtype))
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] not in (1, 3, 4)):
        raise DataError("%s has shape %s; expected N×H×W or N×H×W×3 uint8 images" % (what, arr.shape))
    if arr.size == 0:
        raise DataError("%s holds no images (shape %s); the data set is empty" % (what, arr.shape))
    check_pixels(int(arr.shape[2]), int(arr.shape[1]), "each image of %s" % what, max_pixels)
    return arr


def read_image_array(path: str, max_pixels: Optional[int] = None) -> np.ndarray:
    """The uint8 images of an ``.npy`` file, or of an ``.npz`` archive's ``x`` (or ``images``, or only) array."""
    if path.lower().endswith(".npz"):
        arrays = read_npz(path)
        key = next((k for k in IMAGE_KEYS if k in arrays), None)
        if key is None:
            if len(arrays) != 1:
                raise DataError("%s has no array 'x' (it has: %s); store the images as x"
                                % (path, ", ".join(sorted(arrays)) or "none"))
            key = next(iter(arrays))
        return image_array(arrays[key], "%s[%r]" % (path, key), max_pixels)
    return image_array(read_npy(path), path, max_pixels)


def iter_inputs(paths: Sequence[str], max_pixels: Optional[int] = None) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield (name, image) for every image file, image in a folder, or row of an array file."""
    if not paths:
        raise DataError("no inputs given; pass image files, folders or .npy/.npz files")
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if is_image_path(n))
            if not names:
                raise DataError("folder %s holds no images (%s)" % (path, ", ".join(IMAGE_EXTENSIONS)))
            for n in names:
                yield os.path.join(path, n), read_image(os.path.join(path, n), max_pixels)
        elif path.lower().endswith(ARRAY_EXTENSIONS):
            arr = read_image_array(path, max_pixels)
            base = os.path.basename(path)
            for i in range(arr.shape[0]):
                yield "%s[%d]" % (base, i), np.asarray(arr[i])
        else:
            yield path, read_image(path, max_pixels)


def list_images(folder: str) -> List[str]:
    """The image files directly in ``folder``, sorted by name."""
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if is_image_path(n) and os.path.isfile(os.path.join(folder, n)))


__all__ = ["IMAGE_EXTENSIONS", "read_image", "read_image_array", "image_array", "iter_inputs", "is_image_path",
           "list_images"]
