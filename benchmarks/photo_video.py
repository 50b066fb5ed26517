"""A test video made from real photographs that ship inside scikit-image's wheel (no download, ever).

Only files present on disk are used: ``find_photos()`` looks for scikit-image's bundled ``data`` folder through
``importlib`` without importing scikit-image (so none of its fetch-on-demand data can be triggered) and keeps the
photographs listed in ``PHOTOS`` that are there. ``write_video`` pans and zooms over each of them.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Iterator, List, Optional, Tuple

import numpy as np

#: photographs in scikit-image's wheel (drawings, microscopy and scans of text left out)
PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
          "gravel.png", "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "rocket.jpg", "retina.jpg")
#: other pictures of the wheel: ``scripts/fit_ood.py`` fits the OOD heads with them as no-class examples, and
#: ``benchmarks/bench_class_evidence.py`` makes its training-side video of them; none is one of ``PHOTOS``
NEGATIVES = ("cell.png", "clock_motion.png", "color.png", "ihc.png", "microaneurysms.png", "phantom.png",
             "page.png", "text.png", "chessboard_RGB.png", "horse.png", "logo.png")


def photo_folder() -> Optional[str]:
    """scikit-image's bundled data folder, or None when scikit-image is not installed."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "data")
    return folder if os.path.isdir(folder) else None


def find_photos() -> List[str]:
    """Paths of the photographs of ``PHOTOS`` that are on disk."""
    folder = photo_folder()
    if folder is None:
        return []
    return [os.path.join(folder, n) for n in PHOTOS if os.path.isfile(os.path.join(folder, n))]


def pan_zoom(photo: np.ndarray, frames: int, size: Tuple[int, int] = (640, 480)) -> Iterator[np.ndarray]:
    """``frames`` RGB frames of ``size`` (w, h): the view pans across the photo and zooms in and out."""
    import cv2

    w, h = size
    s = max(w / photo.shape[1], h / photo.shape[0]) * 1.8
    big = cv2.resize(photo, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
    for f in range(frames):
        t = f / max(1, frames - 1)
        zoom = 1.0 + 0.6 * np.sin(np.pi * t)
        vw, vh = min(int(w * 1.7 / zoom), big.shape[1]), min(int(h * 1.7 / zoom), big.shape[0])
        x = int((big.shape[1] - vw) * t)
        y = int((big.shape[0] - vh) * (0.5 + 0.5 * np.sin(2 * np.pi * t)))
        yield cv2.resize(np.ascontiguousarray(big[y:y + vh, x:x + vw]), (w, h), interpolation=cv2.INTER_AREA)


def read_rgb(path: str) -> np.ndarray:
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError("cannot read %s" % path)
    return np.ascontiguousarray(img[:, :, ::-1])


def frames(photos: List[str], per_photo: int = 40, size: Tuple[int, int] = (640, 480)) -> Iterator[Tuple[str, np.ndarray]]:
    """(photo name, RGB frame) for every frame of the video."""
    for p in photos:
        for fr in pan_zoom(read_rgb(p), per_photo, size):
            yield os.path.basename(p), fr


def write_video(path: str, photos: List[str], per_photo: int = 40, fps: float = 30.0,
                size: Tuple[int, int] = (640, 480)) -> int:
    """Write the pan-and-zoom video (MJPG .avi); returns the number of frames."""
    import cv2

    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise OSError("OpenCV cannot write %s" % path)
    n = 0
    try:
        for _name, fr in frames(photos, per_photo, size):
            writer.write(cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
            n += 1
    finally:
        writer.release()
    return n
