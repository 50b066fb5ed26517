"""Where the annotated video goes, addressed by URI in the manner of jetson-inference (``--output URI``).

==============================  ===================================================================================
``file://PATH`` or ``PATH``     a video file (.mp4, .mkv, .mov, .avi): H.264 through ffmpeg (libx264) where ffmpeg
                                is installed, otherwise MJPG through OpenCV. Written beside the target and renamed
                                onto it when closed, so a run that fails leaves no half file.
``rtp://HOST:PORT``             an RTP stream, H.264 in MPEG-TS (ffmpeg, tuned for low latency); receive it with
                                ``ffplay rtp://HOST:PORT``, ``ffmpeg -i rtp://HOST:PORT …`` or VLC ``rtp://@:PORT``
``display://N``                 a window: OpenCV's own where OpenCV has a GUI (JetPack's has), otherwise ffmpeg's
                                SDL window on the X display ``$DISPLAY`` (``:N`` when ``$DISPLAY`` is not set)
==============================  ===================================================================================

Every output takes frames on the pipeline's thread and writes them on its own: a file gets every frame (the
pipeline waits when the encoder falls behind); a stream or a window shows the newest and drops what it cannot
keep up with, so a slow receiver never slows the pipeline. Opening checks what can be checked at once (scheme,
port, folder, the tools needed), so a bad ``--output`` fails before the pipeline starts.
"""
from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
from abc import ABC, abstractmethod
from typing import Any, List, Optional, Tuple

import cv2
import numpy as np

from edgeconf.atomic import describe_os_error, keep_mode
from edgeconf.errors import ConfigError, OutputError
from edgeconf.pathcheck import refuse_missing_folder

log = logging.getLogger(__name__)

SCHEMES = ("file://", "rtp://", "display://")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi")
_ENCODERS: Optional[str] = None


def ffmpeg_path() -> Optional[str]:
    """The ffmpeg executable on PATH, or None."""
    return shutil.which("ffmpeg")


def ffmpeg_has(encoder: str) -> bool:
    """Whether this machine's ffmpeg can encode with ``encoder`` (e.g. ``libx264``)."""
    global _ENCODERS
    exe = ffmpeg_path()
    if exe is None:
        return False
    if _ENCODERS is None:
        try:
            _ENCODERS = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True,
                                       timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            _ENCODERS = ""
    return re.search(r"\s%s\s" % re.escape(encoder), _ENCODERS) is not None


def opencv_has_gui() -> bool:
    """Whether this OpenCV build can open windows (``cv2.getBuildInformation()`` names a GUI backend)."""
    match = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    return bool(match) and match.group(1).upper() not in ("NONE", "NO")


class VideoOutput(ABC):
    """Base class: a writer thread fed through a queue. ``write(rgb)`` from the pipeline, ``close()`` at the end.

    ``lossless``: every frame is written (``write`` waits when the queue is full); otherwise the oldest waiting
    frame is dropped and counted in ``frames_dropped``.
    """

    kind = "output"

    def __init__(self, uri: str, fps: float, lossless: bool, depth: int = 8) -> None:
        if not fps > 0:
            raise ConfigError("output fps must be > 0, got %r" % (fps,))
        self.uri = uri
        self.fps = float(fps)
        self.lossless = bool(lossless)
        self.frames_given = 0  # frames passed to write()
        self.frames_written = 0
        self.frames_dropped = 0
        self.error: Optional[str] = None
        self._size: Optional[Tuple[int, int]] = None
        self._queue: "queue.Queue[Optional[np.ndarray]]" = queue.Queue(maxsize=max(1, depth))
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._lock = threading.Lock()

    def write(self, rgb: np.ndarray) -> None:
        """Queue one H×W×3 RGB uint8 frame (resized to the first frame's size if it differs)."""
        if self._closed or self.error is not None:
            return
        self.frames_given += 1
        if self._size is None:
            self._size = (int(rgb.shape[1]), int(rgb.shape[0]))
            self._thread = threading.Thread(target=self._main, name="edgeconf-output-%s" % self.kind, daemon=True)
            self._thread.start()
        if (rgb.shape[1], rgb.shape[0]) != self._size:
            rgb = cv2.resize(rgb, self._size, interpolation=cv2.INTER_AREA)
        frame = np.ascontiguousarray(rgb, dtype=np.uint8)
        if self.lossless:
            self._queue.put(frame)
            return
        while True:
            try:
                self._queue.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.frames_dropped += 1
                except queue.Empty:
                    pass

    def close(self) -> None:
        """Flush what is queued, stop the writer and finalise the output. Raises OutputError if writing failed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        self._finish()
        if self.error is not None:
            raise OutputError("output %s failed: %s" % (self.uri, self.error))

    def _main(self) -> None:
        assert self._size is not None
        try:
            self._start(self._size)
            while True:
                frame = self._queue.get()
                if frame is None:
                    break
                self._write(frame)
                self.frames_written += 1
        except Exception as exc:  # the writer never dies silently: close() reports it
            self.error = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
            log.warning("output %s: %s", self.uri, self.error)
            while self._queue.get() is not None:  # let write() and close() go on
                pass

    @abstractmethod
    def _start(self, size: Tuple[int, int]) -> None:
        """Open the encoder or window for frames of ``size`` (w, h) (on the writer thread)."""

    @abstractmethod
    def _write(self, frame: np.ndarray) -> None:
        """Write one RGB frame (on the writer thread)."""

    def _finish(self) -> None:
        """Finalise after the writer stopped (on the closing thread)."""

    def __enter__(self) -> "VideoOutput":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<%s %s>" % (type(self).__name__, self.uri)


# ---- ffmpeg --------------------------------------------------------------------------------------------------


class FfmpegOutput(VideoOutput):
    """Raw RGB frames piped into an ffmpeg process; ``args`` are ffmpeg's output arguments."""

    def __init__(self, uri: str, fps: float, args: List[str], lossless: bool, kind: str,
                 env: Optional[dict] = None) -> None:
        super().__init__(uri, fps, lossless)
        self.kind = kind
        self.args = list(args)
        self.env = env
        self._proc: Optional[subprocess.Popen] = None
        self._log = tempfile.TemporaryFile()

    def command(self, size: Tuple[int, int]) -> List[str]:
        exe = ffmpeg_path()
        if exe is None:
            raise OutputError("ffmpeg is not installed")
        return [exe, "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "rawvideo", "-pix_fmt", "rgb24",
                "-s", "%dx%d" % size, "-r", "%g" % self.fps, "-i", "pipe:0"] + self.args

    def _start(self, size: Tuple[int, int]) -> None:
        # ffmpeg runs in its own session (process group): Ctrl-C in a terminal signals the whole foreground group,
        # and ffmpeg would die of it with the video unfinished; this way only edgeconf gets it, ends the run, and
        # finalises the video by closing ffmpeg's stdin. ffmpeg still ends when edgeconf dies (its stdin closes).
        self._proc = subprocess.Popen(self.command(size), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=self._log, env=self.env, start_new_session=True)

    def _write(self, frame: np.ndarray) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(frame.tobytes())
        except (BrokenPipeError, OSError):
            raise OutputError("ffmpeg stopped: %s" % self._stderr()) from None

    def _stderr(self) -> str:
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace").strip()
        return text.splitlines()[-1] if text else "exit status %s" % (self._proc.poll() if self._proc else "?")

    def _finish(self) -> None:
        proc = self._proc
        if proc is not None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code != 0 and self.error is None:
                self.error = "ffmpeg exited with status %d: %s" % (code, self._stderr())
        self._log.close()


#: H.264 in yuv420p needs an even width and height: an odd frame (641x479, ``--size 333x177``) gets one black
#: column or row added on the right or bottom, rather than libx264 refusing it
EVEN_SIZE = ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]
H264_LOW_LATENCY = EVEN_SIZE + ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"]


# ---- files ---------------------------------------------------------------------------------------------------


class _AtomicFile:
    """A temporary path beside ``target`` (same extension) that becomes ``target`` on commit."""

    def __init__(self, target: str) -> None:
        self.target = target
        folder = os.path.dirname(os.path.abspath(target))
        ext = os.path.splitext(target)[1]
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(target), suffix=".tmp" + ext, dir=folder)
            os.close(fd)
        except OSError as exc:
            raise OutputError(describe_os_error(target, exc)) from None

    def commit(self) -> None:
        try:
            keep_mode(self.target, self.tmp)  # mkstemp made it 0600; a video is shared like any file
            os.replace(self.tmp, self.target)
        except OSError as exc:
            self.discard()
            raise OutputError(describe_os_error(self.target, exc)) from None

    def discard(self) -> None:
        try:
            os.remove(self.tmp)
        except OSError:
            pass

    def close(self, keep: bool) -> None:
        """Commit the file when ``keep`` (the output ended cleanly and wrote a frame), else discard it."""
        if keep:
            self.commit()
        else:
            self.discard()


class FfmpegFileOutput(FfmpegOutput):
    """H.264 (libx264) in the container the file name says, through ffmpeg."""

    def __init__(self, uri: str, path: str, fps: float) -> None:
        self.file = _AtomicFile(path)
        fmt = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".avi": "avi"}[os.path.splitext(path)[1].lower()]
        args = EVEN_SIZE + ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"]
        if fmt in ("mp4", "mov"):
            args += ["-movflags", "+faststart"]
        super().__init__(uri, fps, args + ["-f", fmt, "-y", self.file.tmp], lossless=True, kind="file")
        self.path = path
        self.codec = "h264"

    def _finish(self) -> None:
        super()._finish()
        self.file.close(self.error is None and self._size is not None)


class OpenCVFileOutput(VideoOutput):
    """MJPG through OpenCV's VideoWriter (when ffmpeg with libx264 is not available)."""

    kind = "file"

    def __init__(self, uri: str, path: str, fps: float) -> None:
        super().__init__(uri, fps, lossless=True)
        self.file = _AtomicFile(path)
        self.path = path
        self.codec = "mjpg"
        self._writer: Any = None

    def _start(self, size: Tuple[int, int]) -> None:
        self._writer = cv2.VideoWriter(self.file.tmp, cv2.VideoWriter_fourcc(*"MJPG"), self.fps, size)
        if not self._writer.isOpened():
            raise OutputError("OpenCV cannot write MJPG video to %s" % self.path)

    def _write(self, frame: np.ndarray) -> None:
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.release()
            if self.error is None:  # OpenCV only logs a failed write (disk full): read the file's frame count back
                from edgeconf.live.recording import incomplete_video

                self.error = incomplete_video(self.file.tmp, self.frames_written)
        self.file.close(self.error is None and self._size is not None)


# ---- windows -------------------------------------------------------------------------------------------------


class OpenCVWindowOutput(VideoOutput):
    """An OpenCV window (OpenCV built with a GUI backend, e.g. JetPack's GTK build)."""

    kind = "display"

    def __init__(self, uri: str, fps: float, title: str = "edgeconf") -> None:
        super().__init__(uri, fps, lossless=False, depth=1)
        self.title = title

    def _start(self, size: Tuple[int, int]) -> None:
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        cv2.resizeWindow(self.title, *size)

    def _write(self, frame: np.ndarray) -> None:
        cv2.imshow(self.title, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        cv2.waitKey(1)

    def _finish(self) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass


# ---- URIs ----------------------------------------------------------------------------------------------------


def _file_output(uri: str, path: str, fps: float) -> VideoOutput:
    path = os.path.expanduser(path)
    if not path or path.endswith(os.sep):
        raise ConfigError("--output %s names no file; give a file name such as out.mp4" % uri)
    ext = os.path.splitext(path)[1].lower()
    if ext not in VIDEO_EXTENSIONS:
        raise ConfigError("--output %s: name the video file %s" % (uri, " / ".join("*" + e for e in VIDEO_EXTENSIONS)))
    if os.path.isdir(path):
        raise OutputError("cannot write %s: it is a folder; give a file name" % path)
    folder = os.path.dirname(os.path.abspath(path))
    refuse_missing_folder(path, "cannot write %s" % path)
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise OutputError("cannot write %s: permission denied; choose a folder you can write to" % path)
    if ffmpeg_has("libx264"):
        return FfmpegFileOutput(uri, path, fps)
    return OpenCVFileOutput(uri, path, fps)


def _rtp_output(uri: str, rest: str, fps: float) -> VideoOutput:
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:/?#\[\]]+)(?::(\d*))?/?", rest)
    if match is None or not match.group(1):
        raise ConfigError("--output %s: expected rtp://HOST:PORT, e.g. rtp://127.0.0.1:5000" % uri)
    host, port = match.group(1), match.group(2)
    if not port:
        raise ConfigError("--output %s has no port; RTP needs one: rtp://%s:5000 (any free UDP port the receiver "
                          "listens on)" % (uri, host))
    if not 1 <= int(port) <= 65535:
        raise ConfigError("--output %s: port %s is out of range (1-65535)" % (uri, port))
    if not ffmpeg_has("libx264"):
        raise OutputError("--output %s needs ffmpeg with libx264 (apt install ffmpeg) to encode the stream" % uri)
    target = "rtp://%s:%s?pkt_size=1316" % (host, port)
    return FfmpegOutput(uri, fps, H264_LOW_LATENCY + ["-g", str(max(1, int(round(fps)))), "-f", "rtp_mpegts", target],
                        lossless=False, kind="rtp")


def x_display_running(display: str) -> Optional[bool]:
    """Whether the local X display ``display`` (``:0``, ``unix:1.0``) has a server: its socket in /tmp/.X11-unix or
    in the abstract namespace (/proc/net/unix). None when that cannot be told (a remote ``host:N``, another form)."""
    m = re.fullmatch(r"(?:unix)?:(\d+)(?:\.\d+)?", display.strip())
    if not m:
        return None
    path = "/tmp/.X11-unix/X%s" % m.group(1)
    if os.path.exists(path):
        return True
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
            return any(line.rstrip().endswith("@" + path) for line in f)
    except OSError:
        return None


def _display_output(uri: str, rest: str, fps: float) -> VideoOutput:
    if not re.fullmatch(r"\d*/?", rest):
        raise ConfigError("--output %s: expected display://N (N: the display number, e.g. display://0)" % uri)
    number = rest.rstrip("/") or "0"
    if opencv_has_gui():
        return OpenCVWindowOutput(uri, fps)
    display = os.environ.get("DISPLAY") or ":%s" % number
    if ffmpeg_path() is None or not ffmpeg_has_muxer("sdl2"):
        raise OutputError("--output %s needs a window system: this OpenCV has no GUI (opencv-python-headless) and "
                          "ffmpeg with SDL is not installed; install ffmpeg, use the operator window (edgeconf gui), "
                          "or stream with --output rtp://HOST:PORT" % uri)
    if x_display_running(display) is False and not os.environ.get("WAYLAND_DISPLAY"):
        raise OutputError("--output %s: no X display %s is running here; run on the desktop, set DISPLAY, or stream "
                          "with --output rtp://HOST:PORT" % (uri, display))
    return FfmpegOutput(uri, fps, ["-pix_fmt", "yuv420p", "-window_title", "edgeconf", "-f", "sdl2", "edgeconf"],
                        lossless=False, kind="display", env=dict(os.environ, DISPLAY=display))


_MUXERS: Optional[str] = None


def ffmpeg_has_muxer(name: str) -> bool:
    """Whether this machine's ffmpeg has the output format (muxer or device) ``name``."""
    global _MUXERS
    exe = ffmpeg_path()
    if exe is None:
        return False
    if _MUXERS is None:
        try:
            _MUXERS = subprocess.run([exe, "-hide_banner", "-muxers"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            _MUXERS = ""
    return re.search(r"[\s,]%s[\s,]" % re.escape(name), _MUXERS) is not None


def open_output(uri: str, fps: float = 30.0) -> VideoOutput:
    """The output named by ``uri`` (see the module docstring), checked and ready for ``write``."""
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError("empty --output; use file://out.mp4, rtp://HOST:PORT or display://0")
    uri = uri.strip()
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", uri)
    if match is None:
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:(?![\\/])", uri) and not os.path.splitext(uri)[1]:
            raise ConfigError("unknown output %r; use %s or a file path" % (uri, ", ".join(s + "…" for s in SCHEMES)))
        return _file_output(uri, uri, fps)
    scheme, rest = match.group(1).lower(), uri[match.end():]
    if scheme == "file":
        return _file_output(uri, rest, fps)
    if scheme == "rtp":
        return _rtp_output(uri, rest, fps)
    if scheme == "display":
        return _display_output(uri, rest, fps)
    raise ConfigError("unknown output scheme %r in %r; use file://PATH, rtp://HOST:PORT or display://N"
                      % (scheme + "://", uri))


__all__ = ["VideoOutput", "FfmpegOutput", "FfmpegFileOutput", "OpenCVFileOutput", "OpenCVWindowOutput", "open_output",
           "ffmpeg_path", "ffmpeg_has", "ffmpeg_has_muxer", "opencv_has_gui", "SCHEMES", "VIDEO_EXTENSIONS"]
