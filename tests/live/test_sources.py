"""Frame sources: real video files (OpenCV MJPG), image folders, demo://, latest-frame semantics, bad input,
and a real RTSP stream on loopback served through ffmpeg, killed and restarted mid-stream."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest

from edgeconf.errors import ConfigError, EdgeconfError, SourceError
from edgeconf.live.sources import (GSTREAMER_HINT, CaptureSource, DemoSource, FolderSource, Frame, SourceState,
                              VideoFileSource, csi_pipeline, gstreamer_available, open_source, parse_size)

W, H = 96, 64


def _frame_bgr(i: int) -> np.ndarray:
    """Frame i: grey level 5*i encodes i (survives JPEG; i < 50), a red bar marks the top rows (checks BGR→RGB)."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:, :, :] = i * 5
    img[:8, :, 2] = 255
    return img


def _write_video(path, n: int, fps: float = 25.0) -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened()
    for i in range(n):
        writer.write(_frame_bgr(i))
    writer.release()
    return str(path)


def _decoded_index(frame: Frame) -> int:
    return int(round(float(frame.image[32:, :, 2].mean()) / 5))


@pytest.fixture()
def video(tmp_path):
    return _write_video(tmp_path / "clip.avi", 40)


# ---- video files -----------------------------------------------------------------------------------------


def test_video_file_lossless_reads_every_frame_in_order_as_rgb(video):
    src = open_source(video, realtime=False)
    assert isinstance(src, VideoFileSource) and src.is_finite and src.state is SourceState.CONNECTING
    with src:
        frames = list(src.frames(timeout=10))
    assert [f.index for f in frames] == list(range(40))
    assert [_decoded_index(f) for f in frames] == list(range(40))
    first = frames[0].image
    assert first.shape == (H, W, 3) and first.dtype == np.uint8
    assert first[:8, :, 0].mean() > 200 and first[:8, :, 2].mean() < 40  # the red bar is red in RGB
    assert all(b.timestamp_s >= a.timestamp_s for a, b in zip(frames, frames[1:]))
    assert src.state is SourceState.ENDED
    assert (src.frames_read, src.frames_delivered, src.frames_dropped, src.frames_corrupt) == (40, 40, 0, 0)
    assert not src.running  # close() joined the reader
    assert src.read(timeout=0.1) is None


def test_file_uri_resize_and_file_fps(video):
    src = open_source("file://" + video, size=(48, 32), realtime=False)
    with src:
        frame = src.read(timeout=10)
    assert frame is not None and frame.image.shape == (32, 48, 3)
    assert src.fps == pytest.approx(25.0)


def test_realtime_file_is_paced_and_a_slow_consumer_gets_the_newest_frame(video):
    src = open_source(video, fps=100.0)  # realtime by default, 40 frames at 100 fps ≈ 0.4 s
    with src:
        time.sleep(0.25)
        frame = src.read(timeout=5)
        assert frame is not None
        # Newest frame semantics: what we got is the last frame the reader captured, never an older one.
        assert frame.index == src.frames_read - 1
        assert src.frames_dropped == frame.index  # every earlier frame was replaced unread
        got = [frame.index]
        while True:
            time.sleep(0.06)  # slower than the source
            f = src.read(timeout=2)
            if f is None:
                break
            got.append(f.index)
    assert got == sorted(got) and len(set(got)) == len(got)
    assert src.frames_read == 40
    assert src.frames_delivered + src.frames_dropped == 40
    assert src.frames_dropped > 20


def test_realtime_file_pacing_takes_the_files_duration(tmp_path):
    path = _write_video(tmp_path / "p.avi", 12, fps=40.0)
    src = open_source(path)  # 12 frames at 40 fps: ~0.28 s
    t0 = time.perf_counter()
    with src:
        n = len(list(src.frames(timeout=5)))
    elapsed = time.perf_counter() - t0
    assert n >= 1 and src.frames_read == 12
    assert elapsed > 0.2  # paced, not dumped at decode speed


def test_loop_restarts_the_file(video):
    src = open_source(video, realtime=False, loop=True)
    assert not src.is_finite
    with src:
        idx = [src.read(timeout=5) for _ in range(90)]
    assert all(f is not None for f in idx)
    assert [_decoded_index(f) for f in idx[38:43]] == [38, 39, 0, 1, 2]


def test_corrupt_frame_in_a_video_is_skipped_and_counted(tmp_path):
    path = _write_video(tmp_path / "c.avi", 30)
    data = bytearray(open(path, "rb").read())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(starts) == 30
    data[starts[10]:starts[10] + 300] = bytes(300)  # wipe the JPEG header of frame 10
    bad = tmp_path / "bad.avi"
    bad.write_bytes(bytes(data))
    src = open_source(str(bad), realtime=False)
    with src:
        frames = list(src.frames(timeout=10))
    assert src.state is SourceState.ENDED
    assert src.frames_corrupt == 1
    decoded = [_decoded_index(f) for f in frames]
    assert len(frames) == 29 and 10 not in decoded and decoded[-1] == 29


@pytest.mark.parametrize("form", ["plain", "file"])
def test_query_options_on_plain_paths_and_file_uris(video, form):
    base = video if form == "plain" else "file://" + video
    src = open_source(base + "?realtime=0")
    assert isinstance(src, VideoFileSource) and src.lossless
    with src:
        time.sleep(0.2)  # a realtime source would replace unread frames meanwhile; a lossless one waits
        frames = list(src.frames(timeout=10))
    assert [_decoded_index(f) for f in frames] == list(range(40)) and src.frames_dropped == 0
    paced = open_source(base + "?fps=12.5&loop=1")
    assert not paced.lossless and paced.fps == pytest.approx(12.5) and paced.loop and not paced.is_finite
    paced.close()
    assert open_source(base + "?fps=12.5", fps=30.0).fps == pytest.approx(30.0)  # the keyword wins


def test_query_options_bad_values_and_literal_question_marks(video, tmp_path):
    with pytest.raises(ConfigError, match="unknown option.*speed"):
        open_source(video + "?speed=2")
    with pytest.raises(ConfigError, match="fps must be a positive number"):
        open_source(video + "?fps=fast")
    with pytest.raises(ConfigError, match="realtime"):
        open_source("file://" + video + "?realtime=sometimes")
    odd = _write_video(tmp_path / "what?.avi", 3)  # a name with a '?' that exists is taken as written
    src = open_source(odd, realtime=False)
    with src:
        assert len(list(src.frames(timeout=10))) == 3


# ---- folders ---------------------------------------------------------------------------------------------


def _write_folder(folder, n: int, corrupt=()):
    folder.mkdir()
    for i in range(n):
        name = folder / ("img_%03d.png" % i)
        if i in corrupt:
            name.write_bytes(b"not a png at all")
        else:
            cv2.imwrite(str(name), _frame_bgr(i))
    (folder / "notes.txt").write_text("ignored")
    return str(folder)


def test_folder_sorted_lossless_skips_corrupt_images(tmp_path):
    folder = _write_folder(tmp_path / "imgs", 8, corrupt={3})
    src = open_source(folder)
    assert isinstance(src, FolderSource) and src.is_finite and src.lossless  # no fps: every image
    with src:
        frames = list(src.frames(timeout=5))
    assert [_decoded_index(f) for f in frames] == [0, 1, 2, 4, 5, 6, 7]
    assert src.frames_corrupt == 1 and src.state is SourceState.ENDED
    assert frames[0].image[:8, :, 0].mean() > 250  # RGB


def test_folder_frames_are_stills_unless_a_sequence(tmp_path):
    folder = _write_folder(tmp_path / "imgs", 3)
    assert open_source(folder).stills
    seq = open_source(folder + "?sequence=1&realtime=0")
    assert not seq.stills and seq.lossless
    assert not open_source("demo://?frames=2").stills


def test_folder_with_fps_is_paced(tmp_path):
    folder = _write_folder(tmp_path / "imgs", 6)
    src = open_source("file://" + folder, fps=50.0)
    assert not src.lossless
    t0 = time.perf_counter()
    with src:
        while src.read(timeout=2) is not None:
            pass
    assert time.perf_counter() - t0 > 0.08 and src.frames_read == 6


# ---- demo ------------------------------------------------------------------------------------------------


def test_demo_source_matches_the_scene_and_carries_truth():
    from edgeconf.live.demo_scene import DemoScene

    src = open_source("demo://?seed=3&objects=4&size=320x240&fps=30&frames=12", realtime=False)
    assert isinstance(src, DemoSource) and src.is_finite
    with src:
        frames = list(src.frames(timeout=10))
    assert [f.index for f in frames] == list(range(12))
    scene = DemoScene(seed=3, objects=4, size=(320, 240), fps=30, frames=12)
    image, truth = scene.render(7)
    assert np.array_equal(frames[7].image, image)
    assert frames[7].truth == truth and len(truth) >= 1
    assert frames[7].image.shape == (240, 320, 3)


def test_demo_options_and_kwargs():
    endless = open_source("demo://", size=(200, 150), fps=60)
    assert not endless.is_finite and endless.fps == 60.0
    with endless:
        frame = endless.read(timeout=5)
    assert frame is not None and frame.image.shape == (150, 200, 3)
    assert open_source("demo:?frames=5").is_finite
    with pytest.raises(ConfigError, match="unknown option"):
        open_source("demo://?sede=1")
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        open_source("demo://?size=big")
    with pytest.raises(ConfigError, match="objects must be an integer, got 'many'"):
        open_source("demo://?objects=many")
    with pytest.raises(ConfigError, match="seed must be an integer, got 'abc'"):
        open_source("demo://?seed=abc")
    with pytest.raises(ConfigError, match="noise must be a number, got 'loud'"):
        open_source("demo://?noise=loud")


def test_a_plus_in_a_source_query_is_kept_so_an_exponent_round_trips(tmp_path):
    demo = open_source("demo://?seed=1&objects=8&size=640x480&fps=1e+16&frames=3&realtime=false")
    assert demo.fps == 1e16  # was "fps must be a number, got '1e 16'": '+' decoded as a space
    assert open_source("demo://?fps=2.5e%2B1&frames=3").fps == 25.0  # an escaped '+' still works
    folder = _write_folder(tmp_path / "imgs", 2)
    assert open_source(folder + "?fps=1e+2&realtime=0").fps == 100.0


def test_latest_frame_semantics_with_a_slow_consumer_on_demo():
    src = open_source("demo://?seed=1&objects=2&size=160x120&fps=200&frames=80")
    with src:
        got = []
        while True:
            f = src.read(timeout=3)
            if f is None:
                break
            got.append(f)
            time.sleep(0.03)  # ~33 fps consumer on a 200 fps source
    assert src.frames_read == 80
    assert src.frames_dropped > 40
    assert src.frames_delivered == len(got)
    assert src.frames_delivered + src.frames_dropped == 80
    idx = [f.index for f in got]
    assert idx == sorted(idx) and idx[-1] == 79
    # every delivered frame still matches its own truth (index and truth travel together)
    from edgeconf.live.demo_scene import DemoScene

    scene = DemoScene(seed=1, objects=2, size=(160, 120), fps=200, frames=80)
    assert got[1].truth == scene.truth(got[1].index)


# ---- state, listeners, lifecycle ----------------------------------------------------------------------------


def test_state_listeners_and_a_broken_listener_does_not_kill_the_reader(video):
    seen = []

    def broken(state):
        raise RuntimeError("listener bug")

    src = open_source(video, realtime=False)
    src.add_state_listener(seen.append)
    src.add_state_listener(broken)
    with src:
        n = len(list(src.frames(timeout=5)))
    assert n == 40
    assert seen == [SourceState.LIVE, SourceState.ENDED]


def test_close_while_a_lossless_reader_waits_for_the_consumer(video):
    src = open_source(video, realtime=False).start()
    assert src.read(timeout=5) is not None
    time.sleep(0.05)  # the reader is now blocked handing over the next frame
    src.close(timeout=5)
    assert not src.running and src.state is SourceState.ENDED
    assert src.read(timeout=0.1) is None
    src.close()  # twice is fine


def test_close_without_start():
    src = open_source("demo://?frames=3")
    src.close()
    assert src.state is SourceState.ENDED and src.read(timeout=0.1) is None


def test_read_times_out_when_no_frame_comes():
    port = _free_port()
    src = open_source("rtsp://127.0.0.1:%d/none" % port, retries=None, backoff=0.05, open_timeout=1)
    with src:
        t0 = time.perf_counter()
        assert src.read(timeout=0.3) is None
        assert time.perf_counter() - t0 < 2.0
        assert src.state is SourceState.CONNECTING


def test_stream_that_never_connects_fails_after_its_retries():
    port = _free_port()
    src = open_source("rtsp://127.0.0.1:%d/none" % port, retries=2, backoff=0.05, open_timeout=1)
    states = []
    src.add_state_listener(states.append)
    with src:
        assert src.read(timeout=15) is None
    assert src.state is SourceState.FAILED and states[-1] is SourceState.FAILED
    assert "gave up after 2 attempts" in src.error  # --retry 2: at most 2 failed attempts
    assert src.stats()["state"] == "failed"


# ---- bad input -------------------------------------------------------------------------------------------


def test_unknown_scheme():
    with pytest.raises(SourceError, match="unknown source scheme 'foo://'.*demo://"):
        open_source("foo://bar")
    with pytest.raises(SourceError, match="empty source"):
        open_source("  ")


def test_missing_file_and_folder_problems(tmp_path):
    with pytest.raises(SourceError, match="no such video file or image folder"):
        open_source(str(tmp_path / "missing.avi"))
    with pytest.raises(SourceError, match="no such"):
        open_source("file://" + str(tmp_path / "missing.mp4"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="has no images"):
        open_source(str(empty))
    img = tmp_path / "one.png"
    cv2.imwrite(str(img), _frame_bgr(0))
    with pytest.raises(SourceError, match="single image"):
        open_source(str(img))


def test_zero_frame_and_non_video_files(tmp_path):
    writer = cv2.VideoWriter(str(tmp_path / "zero.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (W, H))
    writer.release()
    zero = tmp_path / "zero.avi"
    if not zero.exists():
        zero.write_bytes(b"")
    with pytest.raises(SourceError, match="zero.avi"):
        open_source(str(zero))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="empty.mp4"):
        open_source(str(empty))
    text = tmp_path / "text.avi"
    text.write_text("this is not a video\n" * 100)
    with pytest.raises(SourceError, match="cannot open video|no frames"):
        open_source(str(text))


def test_zero_frame_video_message(tmp_path):
    """A real AVI container with a header and no frames."""
    path = tmp_path / "hdr.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (W, H))
    writer.release()
    if not path.exists() or path.stat().st_size == 0:
        pytest.skip("this OpenCV writes no header for an empty video")
    with pytest.raises(SourceError, match="no frames|cannot open video"):
        open_source(str(path))


def test_camera_that_does_not_exist():
    missing = next(i for i in range(60, 100) if not os.path.exists("/dev/video%d" % i))
    with pytest.raises(SourceError, match="camera %d cannot be opened" % missing):
        open_source(str(missing))
    with pytest.raises(SourceError, match="no such camera device /dev/video%d" % missing):
        open_source("v4l2:///dev/video%d" % missing)


def test_csi_pipeline_and_missing_gstreamer():
    pipe = csi_pipeline(1, 1920, 1080, 30)
    assert pipe.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1")
    assert "nvvidconv" in pipe and "format=BGRx" in pipe and "videoconvert" in pipe and pipe.split(" ! ")[-1].startswith("appsink drop=1")
    with pytest.raises(SourceError, match="sensor id"):
        open_source("csi://front")
    if gstreamer_available():
        pytest.skip("this OpenCV has GStreamer; the missing-GStreamer message cannot be shown")
    with pytest.raises(SourceError) as info:
        open_source("csi://0")
    assert "GStreamer" in str(info.value) and "Jetson" in str(info.value)
    assert GSTREAMER_HINT in str(info.value)


def test_bad_options():
    with pytest.raises(ConfigError, match="unknown option.*realtim"):
        open_source("demo://?realtim=0")
    with pytest.raises(ConfigError, match="unknown option.*loops"):
        open_source("demo://", loops=True)
    with pytest.raises(ConfigError, match="size"):
        open_source("demo://", size=(0, 10))
    with pytest.raises(ConfigError, match="transport"):
        open_source("rtsp://127.0.0.1:1/x", transport="quic")
    with pytest.raises(ConfigError, match="unknown option"):
        open_source("rtsp://127.0.0.1:1/x", loop=True)
    with pytest.raises(ConfigError, match="realtime"):
        open_source("demo://?realtime=maybe")
    assert parse_size("640x480") == (640, 480)
    assert issubclass(SourceError, EdgeconfError)


# ---- RTSP on loopback ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Publisher:
    """``ffmpeg`` pushing a looping clip over RTSP/TCP to 127.0.0.1; restarts itself until stopped."""

    def __init__(self, clip: str, url: str, log_path: str) -> None:
        self.cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i", clip,
                    "-c:v", "mpeg4", "-q:v", "5", "-f", "rtsp", "-rtsp_transport", "tcp", url]
        self.log_path = log_path
        self.proc = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        # The source listens only while it is (re)connecting; until then ffmpeg is refused and exits: retry.
        with open(self.log_path, "ab") as log:
            while not self._stop.is_set():
                self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
                while self.proc.poll() is None and not self._stop.is_set():
                    time.sleep(0.05)
                if not self._stop.is_set():
                    time.sleep(0.2)

    def start(self) -> "_Publisher":
        self._thread.start()
        return self

    def kill(self) -> None:
        self._stop.set()
        self._thread.join(5)
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (Debian package ffmpeg)")
def test_rtsp_stream_on_loopback_drops_and_resumes(tmp_path):
    """A real RTSP session over 127.0.0.1 with ffmpeg: frames arrive; killing the server mid-stream sends the
    source to RECONNECTING; a new server on the same port brings it back LIVE with fresh frames.

    FFmpeg's RTSP *muxer* cannot serve clients (``-rtsp_flags listen`` is a demuxer flag), so the roles are the
    ones FFmpeg supports: the source listens (``listen=True``) and ffmpeg publishes to it (ANNOUNCE/RECORD).
    """
    clip = _write_video(tmp_path / "clip.avi", 50, fps=25.0)
    port = _free_port()
    url = "rtsp://127.0.0.1:%d/live" % port
    log_path = str(tmp_path / "ffmpeg.log")
    states = []
    src = open_source(url, listen=True, open_timeout=2, read_timeout=2)
    assert isinstance(src, CaptureSource) and not src.is_finite
    src.add_state_listener(states.append)
    publishers = []
    try:
        src.start()
        publishers.append(_Publisher(clip, url, log_path).start())
        assert src.wait_for_state(SourceState.LIVE, 15), "never went live: %s / %s" % (src.detail, open(log_path).read())
        first = src.read(timeout=5)
        assert first is not None and first.image.shape == (H, W, 3)
        time.sleep(0.5)
        before = src.frames_read
        assert before > 3

        publishers[0].kill()  # the server dies mid-stream
        assert src.wait_for_state(SourceState.RECONNECTING, 10), "state stayed %s" % src.state
        assert src.reconnects == 1
        while src.read(timeout=0.2) is not None:  # drain what was buffered before the drop
            pass
        time.sleep(0.3)
        assert src.read(timeout=0.3) is None and src.state is SourceState.RECONNECTING

        restart = time.perf_counter()
        publishers.append(_Publisher(clip, url, log_path).start())  # a new server on the same port
        assert src.wait_for_state(SourceState.LIVE, 15), "did not resume: %s" % src.detail
        frame = src.read(timeout=5)
        assert frame is not None and frame.timestamp_s > restart and frame.index >= before
        assert states[:1] == [SourceState.LIVE] and SourceState.RECONNECTING in states and states[-1] is SourceState.LIVE
    finally:
        for pub in publishers:
            pub.kill()
        src.close(timeout=10)
    assert not src.running


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (Debian package ffmpeg)")
def test_pulled_network_stream_reconnects_with_backoff(tmp_path):
    """The pull path (the source is the client, as with an RTSP camera) against ffmpeg serving MPEG-TS over HTTP
    on 127.0.0.1: server killed → RECONNECTING with back-off retries refused → new server → LIVE."""
    clip = _write_video(tmp_path / "clip.avi", 50, fps=25.0)
    url = "http://127.0.0.1:%d/live.ts" % _free_port()
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i", clip,
           "-c:v", "mpeg4", "-f", "mpegts", "-listen", "1", url]
    servers = []
    src = open_source(url, backoff=0.1, backoff_max=0.4, open_timeout=2, read_timeout=2)
    try:
        servers.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        src.start()
        assert src.wait_for_state(SourceState.LIVE, 15), src.detail
        assert src.read(timeout=5) is not None
        servers[0].kill()
        servers[0].wait(5)
        assert src.wait_for_state(SourceState.RECONNECTING, 10)
        time.sleep(1.0)  # several refused attempts, spaced by the back-off
        assert src.state is SourceState.RECONNECTING and "retrying" in src.detail
        restart = time.perf_counter()
        servers.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        assert src.wait_for_state(SourceState.LIVE, 15), src.detail
        frame = src.read(timeout=5)
        assert frame is not None and frame.timestamp_s > restart and src.reconnects == 1
    finally:
        for proc in servers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        src.close(timeout=10)


# ---- retry policy, on a simulated clock ------------------------------------------------------------------


class _FakeCapture:
    """What cv2.VideoCapture gives for a stream that delivers ``frames`` frames and then stops (reads fail)."""

    def __init__(self, frames: int, then=None) -> None:
        self.frames = frames
        self.then = then  # called when the frames run out (the test ends the run there)

    def read(self):
        if self.frames > 0:
            self.frames -= 1
            return True, np.full((8, 8, 3), 100, np.uint8)
        if self.then is not None:
            self.then()
        return False, None

    def release(self) -> None:
        pass


class _ScriptedStream(CaptureSource):
    """A stream source on a simulated clock: ``script`` says what each open gives (None: it fails after taking
    ``open_cost(time_left)`` seconds), back-off pauses advance the clock instead of sleeping. Run on the test's
    own thread (``_run``), so nothing depends on timing."""

    def __init__(self, script, open_cost=lambda left: 0.0, **options) -> None:
        self.now = 0.0
        self.script = list(script)
        self.open_cost = open_cost
        self.opens = []  # (time, time_left) of each open
        self.sleeps = []
        super().__init__("rtsp://127.0.0.1:9/cam", "rtsp://127.0.0.1:9/cam", api=cv2.CAP_FFMPEG, kind="stream",
                         open_now=False, clock=lambda: self.now, **options)

    def _sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.now += seconds
        return not self._stopping

    def _open(self, time_left=None):
        self.opens.append((self.now, time_left))
        cap = self.script.pop(0) if self.script else None
        if cap is None:
            self.now += self.open_cost(time_left)
        return cap


@pytest.mark.parametrize("retries, attempts", [(8, 8), (2, 2), (1, 1), (0, 1)])
def test_retry_gives_up_after_at_most_that_many_failed_attempts(retries, attempts):
    src = _ScriptedStream([], retries=retries)
    src._run()
    assert src.state is SourceState.FAILED and len(src.opens) == attempts
    assert "gave up after %d attempt%s in" % (attempts, "" if attempts == 1 else "s") in src.error


@pytest.mark.parametrize("open_cost", [lambda left: 0.0, lambda left: min(5.0, left)],
                         ids=["refused at once", "a listener that never answers"])
def test_retry_timeout_cuts_pauses_and_open_timeouts_to_the_time_left(open_cost):
    src = _ScriptedStream([], open_cost=open_cost, retries=1000, retry_timeout=2.0)
    src._run()
    assert src.state is SourceState.FAILED and "in 2.0 s" in src.error
    assert src.now <= 2.0 + 1e-9  # never more than --retry-timeout without frames
    assert all(left is not None and left <= 2.0 - at + 1e-9 for at, left in src.opens)  # each open bounded too


def test_the_retry_detail_is_cleared_when_frames_resume():
    holder = {}
    script = [_FakeCapture(3), None, None, _FakeCapture(2, then=lambda: holder["src"]._stop.set())]
    src = holder["src"] = _ScriptedStream(script, retries=8, backoff=0.25)
    states = []
    src.add_state_listener(states.append)
    src._run()
    assert SourceState.RECONNECTING in states and states[-1] is SourceState.LIVE
    assert src.reconnects == 1 and src.frames_read == 5
    assert src.sleeps == [0.25, 0.5, 1.0]  # back-off after the drop, then after each failed reopen
    assert src.detail == ""  # not "no frames from ...; retrying ..." while live again


def _folder_with_bad_images(folder, good=3):
    folder.mkdir()
    for i in range(good):
        cv2.imwrite(str(folder / ("%02d.png" % (i + 2))), np.full((48, 64, 3), 50 * i, np.uint8))
    (folder / "00.jpg").write_bytes(b"")  # 0 bytes
    (folder / "01.png").write_bytes(b"garbage, not a PNG\n")
    return str(folder)


def test_a_folder_counts_its_corrupt_images_and_names_one(tmp_path):
    src = open_source(_folder_with_bad_images(tmp_path / "imgs"))
    with src:
        frames = list(src.frames(timeout=10))
    assert len(frames) == 3 and src.frames_corrupt == 2 and src.state is SourceState.ENDED
    assert src.detail == "2 of 5 images did not decode and were skipped (e.g. %s)" % (tmp_path / "imgs" / "00.jpg")


def test_a_folder_where_no_image_decodes_fails_like_an_empty_video(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    (folder / "b.png").write_bytes(b"x")
    src = open_source(str(folder))
    with src:
        assert list(src.frames(timeout=10)) == []
    assert src.state is SourceState.FAILED and src.frames_corrupt == 2
    assert "no image in folder %s decodes (2 files, e.g. %s)" % (folder, folder / "a.jpg") in src.error
