"""Frame sources addressed by URI, each reading on its own thread and keeping only the newest frame.

``open_source(uri)`` understands:

==============================  ==========================================================================
``demo://?seed=1&objects=6…``   the built-in synthetic scene (:mod:`edgeconf.live.demo_scene`), with ground truth
``file://PATH`` or ``PATH``     a video file (OpenCV) or a folder of images (sorted by name); both take
                                ``?realtime=0|1&loop=0|1&fps=N`` (folders also ``sequence=1``)
``v4l2:///dev/videoN``, ``N``   a V4L2 / USB camera, by device path or index
``rtsp://…`` (also http, udp)   a network stream (FFMPEG, low latency, reconnects with back-off)
``csi://N``                     a Jetson CSI camera through GStreamer (``nvarguscamerasrc``)
==============================  ==========================================================================

A :class:`Source` is a small state machine (:class:`SourceState`) whose reader thread captures frames and puts
each in a one-frame slot: a frame that nobody read before the next one arrived is *dropped* and counted, so a
slow consumer always gets the newest frame and never a stale one. Files, folders and the demo scene can instead
be read losslessly (``realtime=False``): the reader then waits for the consumer. Frames are RGB.
"""
from __future__ import annotations

import glob
import logging
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qsl, urlsplit

import cv2
import numpy as np

from edgeconf.datasets.limits import ENV_VAR as PIXELS_ENV
from edgeconf.datasets.limits import max_image_pixels
from edgeconf.errors import ConfigError, DataError, SourceError
from edgeconf.schema.netloc import port_problem, port_text
from edgeconf.live.frames import Frame, TruthObject

log = logging.getLogger(__name__)

Size = Tuple[int, int]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm")

#: Low-latency FFMPEG options for network streams (set in OPENCV_FFMPEG_CAPTURE_OPTIONS before opening).
FFMPEG_LOW_LATENCY = "rtsp_transport;{transport}|fflags;nobuffer|flags;low_delay|max_delay;500000"

SCHEMES = ("demo://", "file://", "v4l2://", "csi://", "rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class SourceState(str, Enum):
    """Where a source is in its life; callers show it (the GUI, the CLI panel)."""

    CONNECTING = "connecting"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"


StateListener = Callable[[SourceState], None]


class Source(ABC):
    """Base class: a reader thread, a one-frame slot, state and counters. Subclasses implement ``_run``.

    ``open_source`` returns the source unstarted, so listeners can be added first; ``start()``, the ``with``
    statement or the first ``read()`` starts it. ``close()`` stops and joins the reader thread.
    """

    kind = "source"
    #: True when consecutive frames are unrelated still images (a folder of photos): nothing to track across them.
    stills = False

    #: Whether frames carry ground truth (``Frame.truth``), which ``--regions truth`` and scoring need.
    has_truth = False

    def __init__(self, uri: str, size: Optional[Size] = None, fps: Optional[float] = None,
                 lossless: bool = False, finite: bool = False) -> None:
        if size is not None:
            size = _check_size(size)
        if fps is not None and not fps > 0:
            raise ConfigError("fps must be positive, got %r" % (fps,))
        self.uri = uri
        self.size: Optional[Size] = size
        self.fps: Optional[float] = float(fps) if fps is not None else None
        self.lossless = bool(lossless)
        self._finite = bool(finite)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._listeners: List[StateListener] = []
        self._state = SourceState.CONNECTING
        self._error: Optional[str] = None
        self.detail = ""  # the latest status message (e.g. why it is reconnecting)
        self._pending: Optional[Frame] = None
        self._next_index = 0
        self._frames_read = 0
        self._frames_dropped = 0
        self._frames_delivered = 0
        self._frames_corrupt = 0
        self._reconnects = 0

    # ---- public API ----------------------------------------------------------------------------------------

    @property
    def state(self) -> SourceState:
        return self._state

    @property
    def error(self) -> Optional[str]:
        """Why the source failed (None unless ``state`` is FAILED)."""
        return self._error

    @property
    def frames_read(self) -> int:
        """Good frames the reader captured (delivered + dropped + the one waiting)."""
        return self._frames_read

    @property
    def frames_dropped(self) -> int:
        """Frames replaced by a newer one before anyone read them."""
        return self._frames_dropped

    @property
    def frames_delivered(self) -> int:
        """Frames returned by ``read()``."""
        return self._frames_delivered

    @property
    def frames_corrupt(self) -> int:
        """Frames the reader could not decode and skipped."""
        return self._frames_corrupt

    @property
    def reconnects(self) -> int:
        """How many times a live source lost its stream or device and went reconnecting."""
        return self._reconnects

    @property
    def is_finite(self) -> bool:
        """True when the source ends by itself (files, folders, demo with a frame limit)."""
        return self._finite

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def add_state_listener(self, listener: StateListener) -> None:
        """Call ``listener(state)`` on every state change (from the reader thread; keep it short)."""
        self._listeners.append(listener)

    def remove_state_listener(self, listener: StateListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def start(self) -> "Source":
        """Start the reader thread (once; later calls do nothing)."""
        with self._cond:
            if self._thread is not None or self._stop.is_set():
                return self
            self._thread = threading.Thread(target=self._main, name="edgeconf-source-%s" % self.kind, daemon=True)
        self._thread.start()
        return self

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The newest frame not yet returned; waits up to ``timeout`` s (None: until one comes or the source ends).

        Returns None on timeout, once the source has ended or failed and no frame is waiting, and after ``close()``.
        """
        if self._thread is None and not self._stop.is_set():
            self.start()
        with self._cond:
            self._cond.wait_for(self._readable, timeout)
            frame = self._pending
            if frame is None or self._stop.is_set():
                return None
            self._pending = None
            self._frames_delivered += 1
            self._cond.notify_all()
            return frame

    def frames(self, timeout: Optional[float] = None) -> Iterator[Frame]:
        """Iterate over frames until the source ends (or a read times out)."""
        while True:
            frame = self.read(timeout)
            if frame is None:
                return
            yield frame

    def wait_for_state(self, states: Union[SourceState, Sequence[SourceState]], timeout: Optional[float] = None) -> bool:
        """Block until the state is one of ``states``; False on timeout."""
        wanted = (states,) if isinstance(states, SourceState) else tuple(states)
        with self._cond:
            return self._cond.wait_for(lambda: self._state in wanted, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the reader, join its thread and release the device. Safe to call twice."""
        self._stop.set()
        with self._cond:
            self._pending = None  # a closed source hands out nothing more
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("source %s: reader thread did not stop within %.1f s", self.uri, timeout)
        if thread is None:
            self._release()
            if self._state not in (SourceState.ENDED, SourceState.FAILED):
                self._set_state(SourceState.ENDED)

    def stats(self) -> Dict[str, Any]:
        """Counters and state as a JSON-ready dict."""
        return {
            "uri": self.uri, "kind": self.kind, "state": self._state.value, "error": self._error,
            "frames_read": self._frames_read, "frames_delivered": self._frames_delivered,
            "frames_dropped": self._frames_dropped, "frames_corrupt": self._frames_corrupt,
            "reconnects": self._reconnects,
        }

    def __enter__(self) -> "Source":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<%s %s %s>" % (type(self).__name__, self.uri, self._state.value)

    # ---- for subclasses ------------------------------------------------------------------------------------

    @abstractmethod
    def _run(self) -> None:
        """Implemented by every subclass."""

    def _release(self) -> None:
        """Free the device or file handle (called on the reader thread when it stops)."""

    @property
    def _stopping(self) -> bool:
        return self._stop.is_set()

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless closed meanwhile; False when the source is closing."""
        return not self._stop.wait(max(0.0, seconds))

    def _emit(self, image: np.ndarray, truth: Optional[List[TruthObject]] = None, index: Optional[int] = None,
              timestamp_s: Optional[float] = None) -> bool:
        """Publish a captured RGB frame. Returns False when the source is closing."""
        stamp = time.perf_counter() if timestamp_s is None else timestamp_s
        with self._cond:
            if self.lossless:
                self._cond.wait_for(lambda: self._pending is None or self._stop.is_set())
            if self._stop.is_set():
                return False
            if self._pending is not None:
                self._frames_dropped += 1
            idx = self._next_index if index is None else int(index)
            self._pending = Frame(image=image, index=idx, timestamp_s=stamp, truth=truth)
            self._next_index = idx + 1
            self._frames_read += 1
            self._cond.notify_all()
        if self._state is not SourceState.LIVE:
            self._set_state(SourceState.LIVE)
        return True

    def _corrupt(self, what: str) -> None:
        self._frames_corrupt += 1
        self.detail = what
        log.debug("source %s: skipped a corrupt frame: %s", self.uri, what)

    def _to_rgb(self, image: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """OpenCV BGR/BGRA/grey → RGB uint8, resized to ``size``; None when the image is unusable."""
        if not isinstance(image, np.ndarray) or image.size == 0 or image.ndim not in (2, 3):
            return None
        if image.dtype != np.uint8:
            if image.dtype == np.uint16:
                image = (image >> 8).astype(np.uint8)
            else:
                return None
        if image.ndim == 2 or image.shape[2] == 1:
            rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        elif image.shape[2] == 3:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif image.shape[2] == 4:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        else:
            return None
        if self.size is not None and (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        return rgb

    def _set_state(self, state: SourceState, error: Optional[str] = None) -> None:
        with self._cond:
            if state is self._state and error is None:
                return
            if state is SourceState.RECONNECTING and self._state is SourceState.LIVE:
                self._reconnects += 1
            self._state = state
            if error is not None:
                self._error = error
                self.detail = error
            self._cond.notify_all()
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:  # a broken listener must not kill the reader
                log.exception("source %s: state listener failed", self.uri)

    def _readable(self) -> bool:
        return (self._pending is not None or self._stop.is_set()
                or self._state in (SourceState.ENDED, SourceState.FAILED))

    def _main(self) -> None:
        try:
            self._run()
        except SourceError as exc:
            self._set_state(SourceState.FAILED, str(exc))
        except Exception as exc:  # the reader never dies silently: the state says why
            log.exception("source %s: reader failed", self.uri)
            self._set_state(SourceState.FAILED, "%s: %s" % (type(exc).__name__, exc))
        finally:
            try:
                self._release()
            except Exception:
                log.exception("source %s: release failed", self.uri)
            if self._state not in (SourceState.ENDED, SourceState.FAILED):
                self._set_state(SourceState.ENDED)


class _Pacer:
    """Waits so that frames come out at ``fps``; resynchronises after a long stall instead of bursting."""

    def __init__(self, fps: Optional[float]) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self.next_t: Optional[float] = None

    def wait(self, source: Source) -> bool:
        if not self.period:
            return not source._stopping
        now = time.perf_counter()
        if self.next_t is None or now - self.next_t > 1.0:
            self.next_t = now
        ok = source._sleep(self.next_t - now)
        self.next_t += self.period
        return ok


# ---- files and folders -----------------------------------------------------------------------------------


class VideoFileSource(Source):
    """A video file read with OpenCV. ``realtime=True`` paces to the file's fps (or ``fps``) and drops frames a
    slow consumer misses; ``realtime=False`` hands over every frame. ``loop=True`` starts over at the end."""

    kind = "file"

    def __init__(self, path: str, size: Optional[Size] = None, fps: Optional[float] = None,
                 realtime: bool = True, loop: bool = False) -> None:
        if not os.path.isfile(path):
            raise SourceError("no such video file or image folder: %s" % path)
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            cap.release()
            raise SourceError("cannot open video %s: OpenCV could not decode it (not a video, an unsupported codec, "
                              "or a damaged file)" % path)
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise SourceError("video %s has no frames (empty or unreadable); record it again or check the codec" % path)
        file_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.file_fps = file_fps if 0 < file_fps < 1000 else None
        super().__init__(path, size=size, fps=fps or self.file_fps, lossless=not realtime, finite=not loop)
        self.path = path
        self.loop = bool(loop)
        self.realtime = bool(realtime)
        self.frame_count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self._cap: Optional[Any] = cap
        self._first: Optional[np.ndarray] = first

    def _run(self) -> None:
        pacer = _Pacer(self.fps if self.realtime else None)
        cap = self._cap
        failures = 0
        position = 0  # frames taken from the file in this pass
        decoded = 0  # frames that decoded, over every pass
        while cap is not None and not self._stopping:
            if self._first is not None:
                ok, image = True, self._first
                self._first = None
            else:
                ok, image = cap.read()
            if not ok or image is None:
                # Past the known end (or no count known): the file is over. Before it: a frame that would not decode.
                if self.frame_count and position < self.frame_count and failures < 25:
                    failures += 1
                    position += 1
                    self._corrupt("frame %d of %s did not decode" % (position - 1, self.path))
                    continue
                if self.loop and position > 0:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    position = 0
                    failures = 0
                    continue
                break
            position += 1
            decoded += 1
            failures = 0
            rgb = self._to_rgb(image)
            if rgb is None:
                self._corrupt("frame %d of %s has an unusable shape or type" % (position - 1, self.path))
                continue
            if not pacer.wait(self) or not self._emit(rgb):
                return
        if not self._stopping:
            if self.frame_count and decoded < self.frame_count and not self.loop:
                self.detail = ("%s ended after %d of the %d frames its header announces (truncated or damaged)"
                               % (self.path, decoded, self.frame_count))
                log.warning("%s", self.detail)
            self._set_state(SourceState.ENDED)

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FolderSource(Source):
    """Images in a folder, sorted by file name. With ``fps`` they are paced (realtime); without, read losslessly.

    The images are taken as unrelated stills (``stills`` is True: the pipeline answers every object on every
    image, without waiting for a track to be confirmed) unless ``sequence=True`` says they are the frames of
    one video, to be tracked across images.
    """

    kind = "folder"

    def __init__(self, path: str, size: Optional[Size] = None, fps: Optional[float] = None,
                 realtime: Optional[bool] = None, loop: bool = False, sequence: bool = False) -> None:
        files = sorted(f for f in glob.glob(os.path.join(glob.escape(path), "*"))
                       if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(f))
        if not files:
            raise SourceError("folder %s has no images (looked for %s)" % (path, ", ".join(IMAGE_EXTENSIONS)))
        realtime = bool(fps) if realtime is None else bool(realtime)
        super().__init__(path, size=size, fps=fps, lossless=not realtime, finite=not loop)
        self.path = path
        self.files = files
        self.loop = bool(loop)
        self.realtime = realtime
        self.stills = not sequence

    def _run(self) -> None:
        pacer = _Pacer(self.fps if self.realtime else None)
        bad: List[str] = []  # files that did not decode (each counted once, also when looping)
        while not self._stopping:
            good = 0
            for name in self.files:
                if self._stopping:
                    return
                rgb = self._to_rgb(_imread(name))
                if rgb is None:
                    if name not in bad:
                        bad.append(name)
                        self._corrupt(self._bad_detail(bad))
                    continue
                good += 1
                if not pacer.wait(self) or not self._emit(rgb):
                    return
            if not self.loop or good == 0:
                break
        if self._stopping:
            return
        if self._frames_read == 0:  # like a video without frames: an error, not an empty run
            raise SourceError("no image in folder %s decodes (%d file%s, e.g. %s); check the files"
                              % (self.path, len(self.files), "" if len(self.files) == 1 else "s", bad[0]))
        self._set_state(SourceState.ENDED)

    def _bad_detail(self, bad: List[str]) -> str:
        return "%d of %d images did not decode and were skipped (e.g. %s)" % (len(bad), len(self.files), bad[0])


def _imread(path: str) -> Optional[np.ndarray]:
    """cv2.imread that also works for non-ASCII paths; None when the file does not decode."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


# ---- cameras and streams ---------------------------------------------------------------------------------

_ENV_LOCK = threading.Lock()


class CaptureSource(Source):
    """A live device or stream through ``cv2.VideoCapture``: cameras, CSI, RTSP and other network streams.

    When reads fail (the stream dropped, the camera was unplugged) the source goes RECONNECTING, releases the
    capture and reopens it with exponential back-off (``backoff`` s doubling up to ``backoff_max`` s), then goes
    LIVE again when frames resume. ``retries`` bounds consecutive failed attempts: FAILED after that many (None:
    forever; 0 behaves as 1). ``retry_timeout`` bounds the seconds without frames: each back-off pause and each
    open and read timeout is cut to the time left, and the source is FAILED when none is left. ``clock``
    (monotonic seconds) is injectable for tests.
    """

    def __init__(self, uri: str, target: Union[int, str], api: int = cv2.CAP_ANY, kind: str = "camera",
                 size: Optional[Size] = None, fps: Optional[float] = None, open_now: bool = True,
                 retries: Optional[int] = None, backoff: float = 0.25, backoff_max: float = 4.0,
                 open_timeout: float = 5.0, read_timeout: float = 3.0, ffmpeg_options: Optional[str] = None,
                 fourcc: Optional[str] = None, fail_reads: int = 2, set_size: bool = True,
                 retry_timeout: Optional[float] = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(uri, size=size, fps=fps, lossless=False, finite=False)
        self.clock = clock
        self.kind = kind
        self.retry_timeout = None if retry_timeout is None else float(retry_timeout)
        self.target = target
        self.api = api
        self.retries = retries
        self.backoff = float(backoff)
        self.backoff_max = float(backoff_max)
        self.open_timeout = float(open_timeout)
        self.read_timeout = float(read_timeout)
        self.ffmpeg_options = ffmpeg_options
        self.fourcc = fourcc
        self.fail_reads = max(1, int(fail_reads))
        self.set_size = set_size
        self._cap: Optional[Any] = None
        if open_now:
            cap = self._open()
            if cap is None:
                raise SourceError(self._open_failure_message())
            self._cap = cap

    def _open_failure_message(self) -> str:
        if self.kind == "camera":
            found = sorted(glob.glob("/dev/video*"))
            return ("camera %s cannot be opened: no such camera or it is busy (video devices here: %s); "
                    "check the index or device path, and that no other program holds the camera"
                    % (self.target, ", ".join(found) if found else "none"))
        if self.kind == "csi":
            return ("CSI camera %s cannot be opened through GStreamer; check the sensor id and the ribbon cable, "
                    "and restart the camera daemon (sudo systemctl restart nvargus-daemon)" % self.uri)
        return "cannot open %s" % self.uri

    def _open(self, time_left: Optional[float] = None) -> Optional[Any]:
        """A new capture, or None; its open and read timeouts are cut to ``time_left`` seconds (FFMPEG streams)."""
        params: List[int] = []
        if self.api == cv2.CAP_FFMPEG:
            cap_s = max(0.05, time_left) if time_left is not None else None
            open_s = self.open_timeout if cap_s is None else min(self.open_timeout, cap_s)
            read_s = self.read_timeout if cap_s is None else min(self.read_timeout, cap_s)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_s * 1000), cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_s * 1000)]
        with _ENV_LOCK:
            saved = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
            if self.ffmpeg_options is not None and saved is None:
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = self.ffmpeg_options
            try:
                cap = cv2.VideoCapture(self.target, self.api, params) if params else cv2.VideoCapture(self.target, self.api)
            except cv2.error as exc:
                log.debug("source %s: open failed: %s", self.uri, exc)
                return None
            finally:
                if self.ffmpeg_options is not None and saved is None:
                    os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
        if not cap.isOpened():
            cap.release()
            return None
        if self.kind == "camera":
            if self.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc[:4].ljust(4)))
            if self.size is not None and self.set_size:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def _time_left(self, down_since: float) -> Optional[float]:
        """Seconds left of ``retry_timeout`` since frames stopped at ``down_since`` (None: no bound)."""
        if self.retry_timeout is None:
            return None
        return self.retry_timeout - (self.clock() - down_since)

    def _give_up(self, tries: int, down_since: float, opened: bool) -> None:
        """FAILED, saying why: the source did not open, or (``opened``) it opened but gave no frames."""
        why = "no frames from %s" % self.uri if opened else self._open_failure_message()
        self._set_state(SourceState.FAILED, "%s; gave up after %d attempt%s in %.1f s" % (
            why, tries, "" if tries == 1 else "s", self.clock() - down_since))

    def _run(self) -> None:
        failures = 0  # failed (re)connection attempts in a row
        tries = 0  # (re)connection attempts since the last frame
        opened = False  # the last attempt opened the source (but frames may not have come)
        lost = False  # frames stopped after the source was live: pause before the first reopen too
        failed_reads = 0
        was_live = False
        limit = None if self.retries is None else max(1, self.retries)
        down_since = self.clock()  # when frames stopped coming (or the first open began)
        while not self._stopping:
            if self._cap is None:
                step = failures + (1 if lost else 0)
                if step and self.backoff > 0:
                    delay = min(self.backoff_max, self.backoff * (2 ** (step - 1)))
                    left = self._time_left(down_since)
                    if left is not None:
                        delay = min(delay, max(0.0, left))
                    self.detail = "no frames from %s; retrying in %.2f s (attempt %d)" % (self.uri, delay, failures + 1)
                    if not self._sleep(delay):
                        return
                left = self._time_left(down_since)
                if left is not None and left <= 0:
                    self._give_up(tries, down_since, opened)
                    return
                self._cap = self._open(left)
                tries += 1
                opened = self._cap is not None
                if self._cap is None:
                    failures += 1
                    left = self._time_left(down_since)
                    if (limit is not None and failures >= limit) or (left is not None and left <= 0):
                        self._give_up(tries, down_since, opened)
                        return
                    if was_live:
                        self._set_state(SourceState.RECONNECTING)
                    continue
            ok, image = self._cap.read()
            if self._stopping:
                return
            if not ok or image is None:
                failed_reads += 1
                left = self._time_left(down_since)
                if failed_reads >= self.fail_reads or (left is not None and left <= 0):
                    self.detail = "lost %s; reconnecting" % self.uri
                    self._release()
                    failed_reads = 0
                    lost = lost or was_live
                    if self._state is SourceState.LIVE or was_live:
                        self._set_state(SourceState.RECONNECTING)
                continue
            failed_reads = 0
            rgb = self._to_rgb(image)
            if rgb is None:
                self._corrupt("a frame from %s has an unusable shape or type" % self.uri)
                continue
            if failures or lost:  # frames again: the retry message is history
                self.detail = ""
            failures = tries = 0
            lost = False
            was_live = True
            down_since = self.clock()  # seconds without frames count from the last frame
            if not self._emit(rgb):
                return

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# ---- CSI (Jetson) ----------------------------------------------------------------------------------------


def gstreamer_available() -> bool:
    """Whether this OpenCV build has GStreamer (needed for csi://)."""
    match = re.search(r"GStreamer:\s*(\S+)", cv2.getBuildInformation())
    return bool(match) and match.group(1).upper().startswith("YES")


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: float = 30.0, flip: int = 0) -> str:
    """The GStreamer pipeline for a Jetson CSI camera, ending in a BGR appsink that drops old frames."""
    return ("nvarguscamerasrc sensor-id=%d ! video/x-raw(memory:NVMM),width=%d,height=%d,framerate=%d/1 ! "
            "nvvidconv flip-method=%d ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
            "appsink drop=1 max-buffers=1 sync=false" % (sensor_id, width, height, int(round(fps)), flip))


GSTREAMER_HINT = (
    "this OpenCV build has no GStreamer support (cv2.getBuildInformation() shows 'GStreamer: NO'), which csi:// "
    "needs. On a Jetson with JetPack 5/6 use JetPack's OpenCV: `pip uninstall opencv-python opencv-python-headless` here and "
    "create the venv with --system-site-packages (install edgeconf without the [cpu] extra); on a Nano's Python 3.8 "
    "(JetPack's OpenCV is for 3.6) build OpenCV with -D WITH_GSTREAMER=ON. A USB camera works without GStreamer: "
    "use v4l2:///dev/video0"
)


# ---- demo ------------------------------------------------------------------------------------------------


class DemoSource(Source):
    """The synthetic scene (:class:`edgeconf.live.demo_scene.DemoScene`) as a source; frames carry ground truth."""

    kind = "demo"

    has_truth = True  # every frame carries the scene's ground-truth boxes

    def __init__(self, uri: str, scene: Any, realtime: bool = True, loop: bool = False) -> None:
        super().__init__(uri, size=None, fps=scene.fps, lossless=not realtime,
                         finite=scene.frames is not None and not loop)
        self.scene = scene
        self.realtime = bool(realtime)
        self.loop = bool(loop)

    def _run(self) -> None:
        pacer = _Pacer(self.fps if self.realtime else None)
        total = self.scene.frames
        index = 0
        while not self._stopping:
            if total is not None and index >= total:
                if not self.loop or total == 0:
                    break
                index = 0
            if not pacer.wait(self):
                return
            image, truth = self.scene.render(index)
            if not self._emit(image, truth, index=index):
                return
            index += 1
        if not self._stopping:
            self._set_state(SourceState.ENDED)


# ---- URI parsing -----------------------------------------------------------------------------------------

_FILE_OPTIONS = ("realtime", "loop", "fps")  # fps is read before the others are checked
_CAPTURE_OPTIONS = ("retries", "retry_timeout", "backoff", "backoff_max", "open_timeout", "read_timeout", "fail_reads")


def _check_size(size: Any) -> Size:
    try:
        width, height = int(size[0]), int(size[1])
    except (TypeError, ValueError, IndexError):
        raise ConfigError("size must be (width, height), got %r" % (size,)) from None
    if width <= 0 or height <= 0:
        raise ConfigError("size must be positive, got %dx%d" % (width, height))
    limit = max_image_pixels()  # frames are allocated at this size
    if width * height > limit:
        raise DataError("frame size %dx%d = %d pixels is over the limit of %d; choose a smaller size (or raise the "
                          "limit with the environment variable %s)" % (width, height, width * height, limit, PIXELS_ENV))
    return width, height


def parse_size(text: str) -> Size:
    """``"640x480"`` → (640, 480)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×,]\s*(\d+)\s*", text)
    if not match:
        raise ConfigError("size must look like WIDTHxHEIGHT (e.g. 640x480), got %r" % text)
    return _check_size((int(match.group(1)), int(match.group(2))))


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError("option %s must be true or false, got %r" % (name, value))


def _check_options(kind: str, opts: Dict[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ConfigError("unknown option(s) %s for a %s source; valid options: %s"
                          % (", ".join(unknown), kind, ", ".join(allowed) or "none"))


def _capture_kwargs(opts: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key in ("backoff", "backoff_max", "open_timeout", "read_timeout"):
        if key in opts:
            out[key] = float(opts[key])
    if opts.get("retry_timeout") is not None:
        out["retry_timeout"] = float(opts["retry_timeout"])
    if "retries" in opts:
        out["retries"] = None if opts["retries"] is None else int(opts["retries"])
    if "fail_reads" in opts:
        out["fail_reads"] = int(opts["fail_reads"])
    return out


def _parse_query(query: str) -> Dict[str, Any]:
    """A source URI's ``?key=value&…`` options; ``+`` stays ``+`` (``fps=1e+16`` is a number, not ``1e 16``: no option
    value holds a space), ``%XX`` escapes are decoded."""
    return dict(parse_qsl(query.replace("+", "%2B"), keep_blank_values=True))


def _split_query(path: str, opts: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """``clip.mp4?realtime=0&fps=10`` → ("clip.mp4", {...}); a path that exists as written keeps its ``?``.
    Keyword options given to ``open_source`` win over the query."""
    if "?" not in path or os.path.exists(os.path.expanduser(path)):
        return path, dict(opts)
    path, query = path.split("?", 1)
    merged: Dict[str, Any] = _parse_query(query)
    merged.update(opts)
    return path, merged


def _parse_fps(value: Any) -> float:
    try:
        fps = float(value)
    except (TypeError, ValueError):
        raise ConfigError("option fps must be a positive number, got %r" % (value,)) from None
    if not fps > 0:
        raise ConfigError("option fps must be a positive number, got %r" % (value,))
    return fps


def _open_path(uri: str, path: str, size: Optional[Size], fps: Optional[float], opts: Dict[str, Any]) -> Source:
    path, opts = _split_query(path, opts)
    path = os.path.expanduser(path)
    if "fps" in opts:
        query_fps = _parse_fps(opts.pop("fps"))
        fps = fps or query_fps
    if os.path.isdir(path):
        _check_options("folder", opts, _FILE_OPTIONS + ("sequence",))
        realtime = _parse_bool("realtime", opts["realtime"]) if "realtime" in opts else None
        return FolderSource(path, size=size, fps=fps, realtime=realtime, loop=_parse_bool("loop", opts.get("loop", False)),
                            sequence=_parse_bool("sequence", opts.get("sequence", False)))
    if not os.path.exists(path):
        raise SourceError("no such video file or image folder: %s (source %r)" % (path, uri))
    if path.lower().endswith(IMAGE_EXTENSIONS):
        raise SourceError("%s is a single image; put images in a folder and pass the folder, or use "
                          "`edgeconf classify` for single images" % path)
    _check_options("video file", opts, _FILE_OPTIONS)
    return VideoFileSource(path, size=size, fps=fps, realtime=_parse_bool("realtime", opts.get("realtime", True)),
                           loop=_parse_bool("loop", opts.get("loop", False)))


def _open_demo(uri: str, size: Optional[Size], fps: Optional[float], opts: Dict[str, Any]) -> Source:
    from edgeconf.live.demo_scene import DemoScene

    query = uri.split("?", 1)[1] if "?" in uri else ""
    params: Dict[str, Any] = _parse_query(query)
    params.update(opts)
    allowed = ("seed", "objects", "size", "fps", "frames", "noise", "lighting", "clutter", "realtime", "loop")
    _check_options("demo", params, allowed)

    def number(key: str, kind: type, default: Any) -> Any:
        value = params.get(key, default)
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError("bad demo option in %r: %s must be %s, got %r"
                              % (uri, key, "an integer" if kind is int else "a number", value)) from None

    try:
        scene_size = size or (parse_size(params["size"]) if isinstance(params.get("size"), str)
                              else _check_size(params["size"]) if "size" in params else (640, 480))
        frames = params.get("frames")
        frames = None if frames in (None, "", "0", 0, "none", "inf") else number("frames", int, None)
        scene = DemoScene(
            seed=number("seed", int, 0), objects=number("objects", int, 6), size=scene_size,
            fps=float(fps) if fps else number("fps", float, 30.0), frames=frames,
            noise=number("noise", float, 4.0), lighting=number("lighting", float, 0.15),
            clutter=None if params.get("clutter") in (None, "") else number("clutter", int, None),
        )
    except ValueError as exc:
        raise ConfigError("bad demo option in %r: %s" % (uri, exc)) from None
    return DemoSource(uri, scene, realtime=_parse_bool("realtime", params.get("realtime", True)),
                      loop=_parse_bool("loop", params.get("loop", False)))


def _stream_host(uri: str, scheme: str, rest: str) -> Optional[str]:
    """The host of a stream URI (``rest``: what follows ``scheme://``); a malformed IPv6 address or a port that is
    no number 1..65535 is refused with one line."""
    netloc = re.split(r"[/?#]", rest, 1)[0]
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed '[', or brackets around what is no IPv6 address
        raise SourceError("%r is not a valid stream URI (%s); an IPv6 address goes in brackets, e.g. %s://[::1]:8554/PATH"
                          % (uri, exc, scheme)) from None
    port = port_text(netloc)
    problem = port_problem(port)
    if problem:
        hint = "" if port.isascii() and port.isdigit() else "; a stream URI looks like %s://HOST[:PORT]/PATH" % scheme
        raise SourceError("%r: %s%s" % (uri, problem, hint))
    return parts.hostname if "@" in netloc or "[" in rest else netloc.split(":")[0]


def open_source(uri: str, size: Optional[Size] = None, fps: Optional[float] = None, **opts: Any) -> Source:
    """Open the frame source named by ``uri`` (see the module docstring). The source is returned unstarted.

    ``size`` (w, h) resizes frames (and asks cameras for that mode); ``fps`` paces files and demo frames or asks
    cameras for a rate. Options: files/folders ``realtime``, ``loop``; demo the query keys; cameras and streams
    ``retries`` (consecutive failed opens before FAILED; None: forever), ``retry_timeout`` (s without frames before
    FAILED), ``backoff``, ``backoff_max``, ``open_timeout``, ``read_timeout`` (s); RTSP ``transport``
    (tcp|udp) and ``listen`` (wait for an encoder to push the stream to this address instead of pulling it);
    cameras ``fourcc``; CSI ``flip``. Raises :class:`SourceError` when it cannot be opened.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise SourceError("empty source URI; use e.g. demo://, a video path, a folder, 0, rtsp://host/stream")
    uri = uri.strip()
    if size is not None:
        size = _check_size(size)
    if re.fullmatch(r"\d+", uri):
        _check_options("camera", opts, _CAPTURE_OPTIONS + ("fourcc",))
        return CaptureSource(uri, int(uri), kind="camera", size=size, fps=fps, fourcc=opts.get("fourcc"),
                             **_capture_kwargs(opts))
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", uri)
    if match is None:
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:(?![\\/])", uri) and not os.path.exists(uri):
            scheme = uri.split(":", 1)[0]
            if scheme == "demo":
                return _open_demo(uri, size, fps, opts)
            raise SourceError("unknown source scheme %r in %r; use one of %s, a file or folder path, or a camera index"
                              % (scheme + ":", uri, ", ".join(SCHEMES)))
        return _open_path(uri, uri, size, fps, opts)
    scheme = match.group(1).lower()
    rest = uri[match.end():]
    if scheme == "demo":
        return _open_demo(uri, size, fps, opts)
    if scheme == "file":
        return _open_path(uri, rest, size, fps, opts)
    if scheme == "v4l2":
        device = rest if rest.startswith("/") else "/" + rest
        _check_options("camera", opts, _CAPTURE_OPTIONS + ("fourcc",))
        if not os.path.exists(device):
            found = sorted(glob.glob("/dev/video*"))
            raise SourceError("no such camera device %s (video devices here: %s)" % (device, ", ".join(found) or "none"))
        index_match = re.fullmatch(r"/dev/video(\d+)", device)
        target: Union[int, str] = int(index_match.group(1)) if index_match else device
        return CaptureSource(uri, target, api=getattr(cv2, "CAP_V4L2", cv2.CAP_ANY), kind="camera", size=size, fps=fps,
                             fourcc=opts.get("fourcc"), **_capture_kwargs(opts))
    if scheme == "csi":
        _check_options("CSI camera", opts, _CAPTURE_OPTIONS + ("flip",))
        if not re.fullmatch(r"\d+/?", rest):
            raise SourceError("csi:// needs a sensor id, e.g. csi://0, got %r" % uri)
        if not gstreamer_available():
            raise SourceError("cannot open %s: %s" % (uri, GSTREAMER_HINT))
        width, height = size or (1280, 720)
        pipeline = csi_pipeline(int(rest.rstrip("/")), width, height, fps or 30.0, int(opts.get("flip", 0)))
        return CaptureSource(uri, pipeline, api=cv2.CAP_GSTREAMER, kind="csi", size=size, fps=fps, set_size=False,
                             **_capture_kwargs(opts))
    if scheme in ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp"):
        _check_options("stream", opts, _CAPTURE_OPTIONS + ("transport", "listen"))
        host = _stream_host(uri, scheme, rest)
        if not host:
            raise SourceError("%r names no host; a stream URI looks like %s://HOST[:PORT]/PATH" % (uri, scheme))
        transport = str(opts.get("transport", "tcp")).lower()
        if transport not in ("tcp", "udp"):
            raise ConfigError("transport must be tcp or udp, got %r" % transport)
        kwargs = _capture_kwargs(opts)
        listen = _parse_bool("listen", opts.get("listen", False))
        if listen and not scheme.startswith("rtsp"):
            raise ConfigError("listen=True is only for rtsp:// (edgeconf waits for an encoder to push the stream)")
        ffmpeg_options = FFMPEG_LOW_LATENCY.format(transport=transport) if scheme.startswith("rtsp") else \
            "fflags;nobuffer|flags;low_delay"
        if listen:
            # FFmpeg's RTSP demuxer acts as the server and waits for a publisher (ANNOUNCE/RECORD); its default
            # listen_timeout of -1 is rejected by FFmpeg 5.x, so always pass one.
            wait = max(1, int(round(kwargs.get("open_timeout", 5.0))))
            ffmpeg_options = "rtsp_flags;listen|listen_timeout;%d|%s" % (wait, ffmpeg_options)
            kwargs.setdefault("backoff", 0.0)  # the listen wait paces the retries; a pause would refuse publishers
        return CaptureSource(uri, uri, api=cv2.CAP_FFMPEG, kind="stream", size=size, fps=fps, open_now=False,
                             ffmpeg_options=ffmpeg_options, **kwargs)
    raise SourceError("unknown source scheme %r in %r; use one of %s, a file or folder path, or a camera index"
                      % (scheme + "://", uri, ", ".join(SCHEMES)))


__all__ = [
    "Frame", "TruthObject", "SourceState", "Source", "VideoFileSource", "FolderSource", "CaptureSource", "DemoSource",
    "open_source", "csi_pipeline", "gstreamer_available", "parse_size", "GSTREAMER_HINT", "IMAGE_EXTENSIONS",
]
