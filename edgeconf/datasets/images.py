"""Read classification inputs from image files, folders, and .npy/.npz arrays."""
from __future__ import annotations

import os
from typing import Iterator, List, Sequence, Tuple

import numpy as np

from edgeconf.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")


def read_image(path: str) -> np.ndarray:
    """An image file as uint8 grey (H×W) or RGB (H×W×3)."""
    import cv2

    if not os.path.isfile(path):
        raise DataError("image %s does not exist" % path)
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise DataError("cannot read %s as an image (unsupported or corrupt file)" % path)
    if img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(1, int(img.max())))
    if img.ndim == 3:
        code = cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB
        img = cv2.cvtColor(img, code)
    return img


def _array_items(path: str) -> List[Tuple[str, np.ndarray]]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError("cannot read %s as a numpy array file: %s" % (path, exc)) from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            key = "x" if "x" in loaded.files else ("images" if "images" in loaded.files else None)
            if key is None:
                if not loaded.files:
                    raise DataError("%s holds no arrays" % path)
                key = loaded.files[0]
            arr = loaded[key]
    else:
        arr = loaded
    if arr.dtype != np.uint8:
        raise DataError("%s holds %s values; raw images must be uint8 (N×H×W or N×H×W×3)" % (path, arr.dtype))
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim not in (3, 4) or arr.shape[0] == 0:
        raise DataError("%s has shape %s; expected N×H×W or N×H×W×3 uint8 images" % (path, arr.shape))
    base = os.path.basename(path)
    return [("%s[%d]" % (base, i), arr[i]) for i in range(arr.shape[0])]


def iter_inputs(paths: Sequence[str]) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield (name, image) for every image file, image in a folder, or row of an array file."""
    if not paths:
        raise DataError("no inputs given; pass image files, folders or .npy/.npz files")
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
            if not names:
                raise DataError("folder %s holds no images (%s)" % (path, ", ".join(IMAGE_EXTENSIONS)))
            for n in names:
                yield os.path.join(path, n), read_image(os.path.join(path, n))
        elif path.lower().endswith((".npy", ".npz")):
            if not os.path.isfile(path):
                raise DataError("array file %s does not exist" % path)
            for item in _array_items(path):
                yield item
        else:
            yield path, read_image(path)
