"""Annotated video recording (OpenCV, MJPG in .avi), finalised (playable) on close, also after Ctrl-C.

The writer opens on the first frame (size taken from it) and is released by :meth:`close`, which the
CLI calls from a ``finally`` block; an ``atexit`` hook releases it too if the process exits otherwise.
Like every output, the file appears complete or not at all: frames go to a temporary file beside it, renamed
over the target when the recording is finalised.
"""
from __future__ import annotations

import atexit
import os
import threading
from typing import Any, Optional

import numpy as np

from edgeconf.atomic import describe_os_error
from edgeconf.errors import ConfigError, OutputError
from edgeconf.pathcheck import refuse_missing_folder
from edgeconf.live.overlay import OverlayOptions, draw_overlays


class Recorder:
    """``write(frame_result)`` draws the overlays and appends the frame; ``close()`` finalises the file."""

    def __init__(self, path: str, fps: float = 30.0, options: Optional[OverlayOptions] = None, fourcc: str = "MJPG") -> None:
        if not path.lower().endswith(".avi"):
            raise ConfigError("recordings are MJPG in an .avi container; name the file *.avi (got %s)" % path)
        folder = os.path.dirname(os.path.abspath(path))
        refuse_missing_folder(path, "cannot record to %s" % path)
        if not os.access(folder, os.W_OK):
            raise OutputError("cannot record to %s: folder %s is not writable; choose a folder you can write to"
                              % (path, folder))
        if os.path.isdir(path):
            raise OutputError("cannot record to %s: it is a folder; give a file name" % path)
        if not fps > 0:
            raise ConfigError("recording fps must be > 0, got %r" % fps)
        self.path = path
        # frames go to a hidden file beside the target (same file system), renamed over it when finalised: an
        # earlier recording at ``path`` stays untouched until a new one is complete
        self._tmp = os.path.join(folder, ".%s.%d.tmp.avi" % (os.path.basename(path), os.getpid()))
        self.fps = float(fps)
        self.options = options or OverlayOptions()
        self.fourcc = fourcc
        self.frames = 0
        self._writer: Any = None
        self._size: Optional[tuple] = None
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)

    def _open(self, w: int, h: int) -> None:
        import cv2

        writer = cv2.VideoWriter(self._tmp, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (w, h))
        if not writer.isOpened():
            _remove(self._tmp)
            raise OutputError("cannot record to %s: OpenCV cannot write codec %s there" % (self.path, self.fourcc))
        self._writer = writer
        self._size = (w, h)

    def write_image(self, rgb: np.ndarray) -> None:
        """Append one RGB uint8 frame (resized to the first frame's size if it differs)."""
        import cv2

        with self._lock:
            if self._closed:
                return
            h, w = rgb.shape[:2]
            if self._writer is None:
                self._open(w, h)
            if (w, h) != self._size:
                rgb = cv2.resize(rgb, self._size)
            self._writer.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
            self.frames += 1

    def write(self, frame_result: Any) -> None:
        """Draw the overlays of ``frame_result`` on its image and append it."""
        self.write_image(draw_overlays(frame_result.image, frame_result, self.options))

    def close(self) -> None:
        """Release the writer so the file has its index and is playable (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._writer is None:
                return
            self._writer.release()
            self._writer = None
        try:
            atexit.unregister(self.close)
        except Exception:
            pass
        problem = incomplete_video(self._tmp, self.frames)
        if problem is not None:  # OpenCV's writer does not report failed writes: the file is checked instead
            _remove(self._tmp)
            raise OutputError("cannot record to %s: %s; free some space or choose another location (an earlier "
                              "file there is left as it was)" % (self.path, problem))
        try:
            os.replace(self._tmp, self.path)
        except OSError as exc:
            _remove(self._tmp)
            raise OutputError(describe_os_error(self.path, exc)) from None

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def incomplete_video(path: str, frames: int) -> Optional[str]:
    """Why the finalised video at ``path`` does not hold the ``frames`` frames written to it (the disk filled up,
    a file size limit), or None when it does. OpenCV's VideoWriter only logs failed writes, so its file is read
    back: its header's frame count (no decoding), which a write that failed leaves short or unreadable."""
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else -1
    finally:
        cap.release()
    if count == frames:
        return None
    reason = "the video could not be written completely (%s of %d frames in the file)" % (
        "none" if count <= 0 else count, frames)
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
        if st.f_bavail * st.f_frsize < 1 << 20:
            reason += ": no space left on the device"
    except OSError:
        pass
    return reason


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
