"""Video outputs by URI: real files read back, a real RTP stream received by ffmpeg on loopback, a real window
on a virtual X display (Xvfb) grabbed back, and the bad URIs."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from xserver import xvfb

from edgeconf.errors import ConfigError, OutputError
from edgeconf.live.outputs import FfmpegFileOutput, OpenCVFileOutput, ffmpeg_has, ffmpeg_has_muxer, open_output

H264 = pytest.mark.skipif(not ffmpeg_has("libx264"), reason="ffmpeg with libx264 is not installed")


def _frame(i: int, w: int = 96, h: int = 64) -> np.ndarray:
    """Grey level 6*i (i < 40) encodes the frame number; survives lossy coding to within a few levels."""
    return np.full((h, w, 3), 6 * i, np.uint8)


def _read_back(path: str) -> list:
    cap = cv2.VideoCapture(path)
    levels = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        levels.append(int(round(float(img.mean()) / 6)))
    cap.release()
    return levels


@H264
def test_file_output_is_h264_through_ffmpeg_and_appears_only_when_closed(tmp_path):
    target = tmp_path / "out.mp4"
    out = open_output("file://%s" % target, fps=25)
    assert isinstance(out, FfmpegFileOutput) and out.codec == "h264"
    for i in range(30):
        out.write(_frame(i))
    assert not target.exists()  # written beside it, renamed on close
    out.close()
    assert _read_back(str(target)) == list(range(30))
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", str(target)],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "h264"
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # a file like any other, not the temporary's 0600


def test_mjpg_file_output_without_ffmpeg_and_frames_of_another_size_are_resized(tmp_path):
    target = tmp_path / "out.avi"
    out = OpenCVFileOutput(str(target), str(target), fps=20)
    for i in range(12):
        out.write(_frame(i) if i != 5 else cv2.resize(_frame(i), (48, 32)))
    out.close()
    cap = cv2.VideoCapture(str(target))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    assert fourcc == "MJPG" and size == (96, 64)
    assert _read_back(str(target)) == list(range(12))
    target.chmod(0o640)
    again = OpenCVFileOutput(str(target), str(target), fps=20)
    again.write(_frame(0))
    again.close()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # a replaced file keeps its permissions


def test_a_failed_file_output_leaves_nothing_and_says_why(tmp_path):
    target = tmp_path / "out.avi"
    out = OpenCVFileOutput(str(target), str(target), fps=20)
    out.close()  # no frame at all: nothing to write
    assert os.listdir(tmp_path) == []


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@H264
@pytest.mark.slow
def test_rtp_stream_is_received_by_ffmpeg_on_loopback(tmp_path):
    port = _free_udp_port()
    got = tmp_path / "received.gray"
    receiver = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", "rtp://127.0.0.1:%d" % port, "-frames:v", "20",
         "-f", "rawvideo", "-pix_fmt", "gray", str(got)], stdin=subprocess.DEVNULL)
    try:
        out = open_output("rtp://127.0.0.1:%d" % port, fps=25)
        assert out.kind == "rtp" and not out.lossless
        deadline = time.monotonic() + 30
        i = 0
        while receiver.poll() is None and time.monotonic() < deadline:  # until the receiver has its 20 frames
            img = np.full((64, 96, 3), 200, np.uint8)
            img[:, : 8 + (i % 80)] = 40  # a bar that grows: the frames differ
            out.write(img)
            i += 1
            time.sleep(0.02)
        out.close()
        assert receiver.wait(timeout=30) == 0
    finally:
        if receiver.poll() is None:
            receiver.kill()
    frames = np.fromfile(str(got), np.uint8).reshape(-1, 64, 96)
    assert len(frames) == 20
    assert abs(float(frames[-1][:, -8:].mean()) - 200) < 20 and abs(float(frames[-1][:, :8].mean()) - 40) < 20


@pytest.mark.slow
def test_display_output_opens_a_window_that_shows_the_frames(tmp_path, monkeypatch):
    if not ffmpeg_has_muxer("sdl2"):
        pytest.skip("ffmpeg with SDL (the window) is not installed")
    with xvfb("320x240x24") as display:
        monkeypatch.setenv("DISPLAY", display)
        out = open_output("display://0", fps=25)
        assert out.kind == "display"
        img = np.zeros((240, 320, 3), np.uint8)
        img[..., 0] = 220  # red
        img[80:160, 120:200] = (0, 220, 0)  # a green square in the middle
        shot = tmp_path / "screen.png"
        for _ in range(200):
            out.write(img)
            time.sleep(0.02)
            if out.frames_written >= 10:
                break
        grab = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "x11grab", "-video_size",
                               "320x240", "-i", display, "-frames:v", "1", str(shot)], capture_output=True, text=True)
        out.close()
        assert grab.returncode == 0, grab.stderr
        screen = cv2.imread(str(shot))[..., ::-1]
        red = (screen[..., 0] > 150) & (screen[..., 1] < 80)
        green = (screen[..., 1] > 150) & (screen[..., 0] < 80)
        assert red.mean() > 0.2 and green.mean() > 0.02  # the window is up and shows the frame


def test_bad_output_uris_fail_at_once_with_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="unknown output scheme 'ftp://'"):
        open_output("ftp://host/x.mp4")
    with pytest.raises(ConfigError, match="no port.*rtp://127.0.0.1:5000"):
        open_output("rtp://127.0.0.1")
    with pytest.raises(ConfigError, match="no port"):
        open_output("rtp://127.0.0.1:")
    with pytest.raises(ConfigError, match="out of range"):
        open_output("rtp://127.0.0.1:70000")
    with pytest.raises(ConfigError, match="rtp://HOST:PORT"):
        open_output("rtp://")
    with pytest.raises(OutputError, match="does not exist; create it first"):
        open_output(str(tmp_path / "missing" / "out.mp4"))
    with pytest.raises(OutputError, match="is a folder"):
        (tmp_path / "dir.mp4").mkdir()
        open_output("file://%s" % (tmp_path / "dir.mp4"))
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="afile is a file, not a folder"):
        open_output(str(blocker / "out.mp4"))  # a file where a folder should be
    with pytest.raises(ConfigError, match=r"\*\.mp4"):
        open_output(str(tmp_path / "out.txt"))
    with pytest.raises(ConfigError, match="display://N"):
        open_output("display://left")
    with pytest.raises(ConfigError, match="empty"):
        open_output(" ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: no folder is unwritable")
def test_unwritable_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            open_output(str(ro / "out.mp4"))
    finally:
        ro.chmod(0o700)


def test_unwritable_target_on_a_read_only_file_system(tmp_path):
    """Writable-looking but not writable, even for root: /proc."""
    with pytest.raises(OutputError):
        open_output("/proc/edgeconf-out.mp4")


def test_run_writes_the_annotated_video_and_refuses_a_bad_output_before_running(fashion_bundle, tmp_path):
    target = tmp_path / "run.mp4"
    cmd = [sys.executable, "-m", "edgeconf", "run", fashion_bundle, "--source", "demo://?seed=2&objects=3&frames=12&realtime=0",
           "--regions", "truth", "--no-live"]
    res = subprocess.run(cmd + ["--output", "file://%s" % target, "--json"], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    assert len(_read_back(str(target))) == 12
    bad = subprocess.run(cmd + ["--output", "rtp://127.0.0.1"], capture_output=True, text=True, timeout=240)
    assert bad.returncode == 1 and "no port" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def _ffmpeg_child(pid: int):
    """The pid of the encoding ffmpeg ``pid`` started (it reads frames from pipe:0), once it runs ffmpeg (so past
    its own session setup), else None."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat_line = f.read()
        except OSError:
            continue
        comm = stat_line[stat_line.index("(") + 1:stat_line.rindex(")")]
        ppid = int(stat_line[stat_line.rindex(")") + 2:].split()[1])
        if ppid == pid and comm == "ffmpeg":
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    if b"pipe:0" in f.read().split(b"\0"):
                        return int(entry)
            except OSError:
                continue
    return None


@H264
@pytest.mark.parametrize("kind", ["file", "rtp"])
def test_ctrl_c_on_the_process_group_finalises_the_output_and_prints_the_summary(fashion_bundle, tmp_path, kind):
    """A terminal's Ctrl-C signals the whole foreground process group; ffmpeg must not die of it mid-video."""
    import json
    import signal

    target = tmp_path / "int.mp4"
    uri = str(target) if kind == "file" else "rtp://127.0.0.1:%d" % _free_udp_port()
    cmd = [sys.executable, "-m", "edgeconf", "run", fashion_bundle, "--source", "demo://?seed=2&objects=3&frames=0&realtime=0",
           "--regions", "truth", "--no-live", "--json", "--output", uri]
    # its own process group, as a shell gives a foreground job: killpg reaches edgeconf and all it did not detach
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120  # only a bound for a broken run; the signal waits for ffmpeg to run
        while _ffmpeg_child(proc.pid) is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "error" not in err, err
    summary = json.loads(out)
    assert summary["interrupted"] is True and summary["outputs"][0]["frames"] > 0
    if kind == "file":
        assert len(_read_back(str(target))) == summary["outputs"][0]["frames"]  # finalised, every frame in it
        assert sorted(os.listdir(tmp_path)) == ["int.mp4"]


@H264
@pytest.mark.parametrize("kind", ["file", "rtp"])
def test_odd_frame_sizes_are_padded_to_even_for_h264(tmp_path, kind):
    """yuv420p H.264 needs an even width and height; a 641x479 frame (or --size 333x177) gets one black column and
    row instead of ffmpeg refusing the whole output."""
    target = tmp_path / "odd.mp4"
    out = open_output(str(target) if kind == "file" else "rtp://127.0.0.1:%d" % _free_udp_port(), fps=25)
    for i in range(12):
        out.write(_frame(i, w=641, h=479))
    out.close()  # raised "ffmpeg exited with status ..." before: width not divisible by 2
    assert out.error is None and out.frames_written + out.frames_dropped == 12  # a stream may drop, never fail
    if kind == "file":
        assert _read_back(str(target)) == list(range(12))
        cap = cv2.VideoCapture(str(target))
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        cap.release()
        assert size == (642, 480)


def test_a_file_in_the_way_of_an_output_folder_is_said_as_such(tmp_path):
    """The live writers (video output, recording, event log) tell a file where a folder should be from a missing
    folder, as the CLI's checks do: 'create it first' cannot help there."""
    from edgeconf.errors import OutputError
    from edgeconf.live.events import check_log_path
    from edgeconf.live.recording import Recorder

    (tmp_path / "afile").write_text("x")
    for make in (lambda: open_output("file://%s" % (tmp_path / "afile" / "o.mp4"), fps=25),
                 lambda: Recorder(str(tmp_path / "afile" / "r.avi")),
                 lambda: check_log_path(str(tmp_path / "afile" / "e.jsonl"))):
        with pytest.raises(OutputError, match="afile is a file, not a folder; choose a path in a folder"):
            make()
    assert (tmp_path / "afile").read_text() == "x"
