"""Events and recordings lose nothing: JSON lines flushed while running and on SIGINT/SIGTERM, and a
playable .avi after Ctrl-C; overlays are a pure function."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgeconf.live.events import EventLog
from edgeconf.live.overlay import OverlayOptions, confidence_colour, draw_overlays
from edgeconf.live.pipeline import FrameResult, FrameTimings, PipelineCounters, TrackResult


def test_event_log_flushes_within_a_second_without_close(tmp_path):
    path = tmp_path / "e.jsonl"
    log = EventLog(str(path), flush_s=0.2)
    log.emit("frame", frame=1, arr=np.arange(3), value=np.float32(1.5))
    deadline = time.time() + 30.0  # the writer flushes within 0.5 s; the margin only absorbs a loaded machine
    while time.time() < deadline and not path.read_text():
        time.sleep(0.05)
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["type"] == "frame" and rec["arr"] == [0, 1, 2] and rec["value"] == 1.5
    log.close()
    log.close()  # idempotent
    log.emit("late")  # after close: ignored, no exception
    assert len(path.read_text().splitlines()) == 1


def _wait_lines(path, n, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                if sum(1 for line in f if '"type":"frame"' in line) >= n:
                    return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_run_interrupted_keeps_events_and_recording(fashion_bundle, tmp_path, sig):
    import cv2

    events = str(tmp_path / "events.jsonl")
    video = str(tmp_path / "rec.avi")
    cmd = [sys.executable, "-m", "edgeconf", "run", fashion_bundle, "--source", "demo://?seed=1&objects=4&frames=0",
           "--regions", "truth", "--events", events, "--record", video, "--no-live"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert _wait_lines(events, 20, 60), "no frame events were flushed while running"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err.decode()  # 130 for Ctrl-C, 143 for SIGTERM, after the logs closed
    assert b"[interrupted]" in out
    with open(events, encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]  # every line is complete JSON
    types = [r["type"] for r in recs]
    assert types[0] == "start" and types[-2:] == ["summary", "stop"]
    frames = [r for r in recs if r["type"] == "frame"]
    assert len(frames) >= 20 and [r["frame"] for r in frames] == sorted(r["frame"] for r in frames)
    assert recs[-2]["interrupted"] is True and recs[-2]["frames"] == len(frames)
    cap = cv2.VideoCapture(video)
    assert cap.isOpened()
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        n += 1
        assert img.shape == (480, 640, 3)
    cap.release()
    assert n == len(frames)


def _frame_result(conf=0.9, memo=True):
    img = np.full((120, 160, 3), 100, np.uint8)
    t = TrackResult(id=3, box=(40.0, 30.0, 100.0, 90.0), class_id=1, label="Trouser", confidence=conf, stage=0,
                    memo_hit=memo, uncertainty_px=3.0, frames_since_match=0, velocity=(1.0, 0.0), ellipse=(6.0, 4.0, 0.0))
    return FrameResult(7, img, [t], FrameTimings(), PipelineCounters(tracks=1))


def test_draw_overlays_is_pure_and_colours_by_confidence():
    fr = _frame_result(conf=0.95)
    before = fr.image.copy()
    out = draw_overlays(fr.image, fr)
    assert np.array_equal(fr.image, before) and out is not fr.image
    edge = out[60, 40]  # left edge of the box
    assert tuple(edge) == confidence_colour(0.95)
    assert confidence_colour(0.95)[1] > confidence_colour(0.95)[0]  # green-ish
    low = draw_overlays(fr.image, _frame_result(conf=0.05))
    assert low[60, 40][0] > low[60, 40][1]  # red-ish
    # uncertainty ellipse: drawn around the centre (70, 60), 6 px semi-major
    assert not np.array_equal(out[60, 76], before[60, 76])
    bare = draw_overlays(fr.image, fr, OverlayOptions(boxes=False, labels=False, uncertainty=False, hud=False))
    assert np.array_equal(bare, before)


def test_recorder_writes_a_playable_file(tmp_path):
    import cv2

    from edgeconf.errors import ConfigError
    from edgeconf.live.recording import Recorder

    with pytest.raises(ConfigError):
        Recorder(str(tmp_path / "x.mp4"))
    rec = Recorder(str(tmp_path / "r.avi"), fps=10)
    for _ in range(5):
        rec.write(_frame_result())
    rec.close()
    rec.close()
    cap = cv2.VideoCapture(str(tmp_path / "r.avi"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 5


def test_a_signal_delivered_twice_at_once_is_one_interrupt_and_a_later_one_insists():
    """``timeout -s INT`` signals the process and then its group: the same Ctrl-C twice within microseconds must
    end the run like one (summary printed), while a second Ctrl-C a second later still aborts at once."""
    import threading

    from edgeconf.live.events import StopSignals

    now = [100.0]
    stop = threading.Event()
    seen = []
    signals = StopSignals(stop, on_signal=seen.append, insist_after_s=1.0, clock=lambda: now[0])
    try:
        signals._handle(signal.SIGINT, None)
        now[0] += 0.001
        signals._handle(signal.SIGINT, None)  # the same interrupt again: ignored
        assert stop.is_set() and seen == [signal.SIGINT]
        now[0] += 1.0
        with pytest.raises(KeyboardInterrupt):
            signals._handle(signal.SIGINT, None)  # the user insists
    finally:
        signals.restore()


def test_each_run_starts_the_event_log_anew(tmp_path):
    """A second run does not append to the first run's log, nor keep an unrelated line that was in the file."""
    path = tmp_path / "e.jsonl"
    path.write_text("an unrelated line\n")
    for run in (1, 2):
        log = EventLog(str(path))
        log.emit("start", run=run)
        log.emit("summary", run=run)
        log.emit("stop", run=run)
        log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(rec["type"], rec["run"]) for rec in lines] == [("start", 2), ("summary", 2), ("stop", 2)]


def _with_file_size_limit(limit: int):
    """For a child process: files it writes stop growing at ``limit`` bytes (RLIMIT_FSIZE; works as root, unlike
    a read-only folder). Python ignores SIGXFSZ, so a write past it fails with EFBIG, as on a full disk."""
    import resource

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("option", ["--record", "--output"])
def test_a_recording_that_could_not_be_written_is_an_error_and_keeps_the_earlier_file(fashion_bundle, tmp_path, option):
    target = tmp_path / ("r.avi" if option == "--record" else "o.avi")
    target.write_bytes(b"an earlier recording")
    env = dict(os.environ, PATH="/nonexistent") if option == "--output" else None  # --output: MJPG through OpenCV
    proc = subprocess.run([sys.executable, "-m", "edgeconf", "run", fashion_bundle, "--source",
                           "demo://?seed=2&objects=3&frames=60&realtime=0", "--regions", "truth", "--no-live",
                           "--threads", "1", option, str(target)],
                          capture_output=True, text=True, timeout=240, preexec_fn=_with_file_size_limit(150_000), env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("edgeconf: error: ") and "could not be written completely" in lines[0]
    assert target.read_bytes() == b"an earlier recording"  # untouched
    assert sorted(os.listdir(tmp_path)) == [target.name]  # no temporary file left


def test_a_non_finite_confidence_is_written_as_null():
    import json

    t = _frame_result(conf=float("nan")).tracks[0]
    assert t.to_json()["confidence"] is None
    json.dumps(t.to_json(), allow_nan=False)  # strict JSON
    assert _frame_result(conf=0.91234).tracks[0].to_json()["confidence"] == 0.9123
