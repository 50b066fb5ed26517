"""``edgeconf run`` when the source misbehaves: bounded retries, URIs without a host, regions that need ground
truth, truncated videos. Every failure is one line on stderr and a non-zero exit; streams are on 127.0.0.1."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edgeconf.errors import SourceError
from edgeconf.live.sources import open_source


def _edgeconf(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgeconf"] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def _one_line_error(proc, text):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("edgeconf: error: ") and text in lines[0], proc.stderr


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused at once
    return port


@pytest.mark.parametrize("uri", ["rtsp://", "rtsp:///stream", "rtsp://user:pw@/x", "http://:8080/x"])
def test_a_stream_uri_without_a_host_is_refused_when_parsed(uri):
    with pytest.raises(SourceError, match="names no host; a stream URI looks like"):
        open_source(uri)


@pytest.mark.parametrize("uri, words", [
    ("rtsp://[::1/x", "'rtsp://[::1/x' is not a valid stream URI (Invalid IPv6 URL); an IPv6 address goes in brackets"),
    ("http://[x/y", "'http://[x/y' is not a valid stream URI (Invalid IPv6 URL)"),
    ("rtsp://h:abc/x", "'rtsp://h:abc/x': port 'abc' is not a number; a stream URI looks like rtsp://HOST[:PORT]/PATH"),
    ("rtsp://user:pw@h:x1/x", "port 'x1' is not a number"),
    ("rtsp://h:0/x", "'rtsp://h:0/x': port 0 is out of range; a port is 1..65535"),
    ("rtsp://[::1]:70000/x", "port 70000 is out of range"),
])
def test_a_stream_uri_with_a_bad_address_or_port_is_refused_when_parsed(uri, words):
    with pytest.raises(SourceError) as err:
        open_source(uri)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_stream_uris_with_a_port_or_an_ipv6_address_are_taken():
    for uri in ("rtsp://[::1]:8554/x", "rtsp://user:pw@127.0.0.1:554/x", "rtsp://h:/x", "http://h:8080/x?a=1"):
        open_source(uri).close()


def test_run_refuses_a_stream_port_that_is_not_a_number_in_one_line(fashion_bundle):
    proc = _edgeconf("run", fashion_bundle, "--source", "rtsp://h:abc/x", "--retry", 0, "--retry-timeout", 5,
                     "--frames", 3, "--no-live")
    _one_line_error(proc, "port 'abc' is not a number")


def test_run_gives_up_on_a_dead_stream_with_one_line(fashion_bundle, tmp_path):
    uri = "rtsp://127.0.0.1:%d/cam" % _closed_port()
    events = tmp_path / "events.jsonl"
    proc = _edgeconf("run", fashion_bundle, "--source", uri, "--retry", 2, "--retry-timeout", 60, "--no-live",
                     "--events", events)
    _one_line_error(proc, "cannot open %s; gave up after 2 attempts in" % uri)  # at most --retry failed attempts
    types = [json.loads(line)["type"] for line in events.read_text().splitlines()]
    assert types[0] == "start" and types[-1] == "stop"  # the log is complete


def test_run_retry_timeout_bounds_the_wait(fashion_bundle):
    uri = "rtsp://127.0.0.1:%d/cam" % _closed_port()
    proc = _edgeconf("run", fashion_bundle, "--source", uri, "--retry", 1000, "--retry-timeout", 0.5, "--no-live")
    _one_line_error(proc, "cannot open %s; gave up after" % uri)


def test_truth_regions_need_a_source_with_ground_truth(fashion_bundle, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    proc = _edgeconf("run", fashion_bundle, "--source", video, "--regions", "truth", "--no-live")
    _one_line_error(proc, "regions 'truth' use the ground-truth boxes that only demo:// frames carry")


def test_a_truncated_video_reports_the_frames_read(fashion_bundle, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(40):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    proc = _edgeconf("run", fashion_bundle, "--source", "%s?realtime=0" % video, "--regions", "full", "--no-live",
                     "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["source_state"] == "ended"
    assert summary["source_detail"] == ("%s ended after %d of the 40 frames its header announces (truncated or damaged)"
                                        % (video, summary["frames"]))
    assert 0 < summary["frames"] < 40


def test_verbosity_flags_set_the_log_level(monkeypatch):
    from edgeconf.cli import configure_logging

    monkeypatch.delenv("OPENCV_LOG_LEVEL", raising=False)
    monkeypatch.delenv("OPENCV_FFMPEG_LOGLEVEL", raising=False)
    assert configure_logging(0, 0) == logging.WARNING
    assert os.environ["OPENCV_LOG_LEVEL"] == "ERROR" and os.environ["OPENCV_FFMPEG_LOGLEVEL"] == "-8"
    assert configure_logging(2, 0) == logging.DEBUG and configure_logging(1, 0) == logging.INFO
    assert configure_logging(0, 1) == logging.ERROR and configure_logging(0, 5) == logging.CRITICAL
    assert logging.getLogger("edgeconf.live.sources").getEffectiveLevel() == logging.CRITICAL
    configure_logging(0, 0)
    handlers = [h for h in logging.getLogger("edgeconf").handlers if getattr(h, "_edgeconf", False)]
    assert len(handlers) == 1  # configuring twice adds no second handler


@pytest.mark.parametrize("uri, size", [("demo://?size=100000x100000", None), ("demo://", (100000, 100000))])
def test_frame_sizes_over_the_pixel_limit_are_refused_before_allocating(uri, size):
    from edgeconf.errors import DataError

    with pytest.raises(DataError, match="frame size 100000x100000 = 10000000000 pixels is over the limit"):
        open_source(uri, size=size)


@pytest.mark.parametrize("given", ["clip", "rtsp://127.0.0.1:9/cam", "0"])
def test_a_source_given_as_the_bundle_argument_names_the_option_to_use(tmp_path, given):
    # what a new user types first: `edgeconf run clip.mp4`; BUNDLE is the optional first argument
    if given == "clip":
        given = str(tmp_path / "clip.mp4")
        (tmp_path / "clip.mp4").write_bytes(b"\0" * 16)  # a file, not a folder: never opened as a bundle
    proc = _edgeconf("run", given, "--no-live", "--frames", 1)
    _one_line_error(proc, "%s is a source, not a bundle folder" % given)
    assert "edgeconf run --source %s" % given in proc.stderr


def test_a_missing_bundle_folder_is_still_named_as_one(tmp_path):
    proc = _edgeconf("run", tmp_path / "no_such_bundle", "--no-live", "--frames", 1)
    _one_line_error(proc, "bundle folder %s does not exist" % (tmp_path / "no_such_bundle"))


def test_demo_names_a_missing_bundle_folder_it_was_given(tmp_path):
    proc = _edgeconf("demo", "--bundle", tmp_path / "nothere", "--frames", 5, "--no-live")
    _one_line_error(proc, "bundle folder %s does not exist" % (tmp_path / "nothere"))
    assert "shipped" not in proc.stderr.split("does not exist")[0] and "reinstall" not in proc.stderr


def test_demo_refuses_a_baseline_file_that_does_not_exist(tmp_path):
    """A --baseline the user gave that is not there is an error, not a silent 'not measured' comparison."""
    proc = _edgeconf("demo", "--frames", 3, "--no-live", "--baseline", tmp_path / "big.onnx")
    _one_line_error(proc, "baseline model %s does not exist" % (tmp_path / "big.onnx"))


def test_run_on_a_folder_with_corrupt_images_counts_them_and_fails_when_none_decodes(fashion_bundle, tmp_path):
    good = tmp_path / "imgs"
    good.mkdir()
    for i in range(3):
        cv2.imwrite(str(good / ("%02d.png" % (i + 2))), np.full((48, 64, 3), 60 * i, np.uint8))
    (good / "00.jpg").write_bytes(b"")
    (good / "01.png").write_bytes(b"garbage")
    proc = _edgeconf("run", fashion_bundle, "--source", good, "--regions", "full", "--no-live", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["frames"] == 3 and summary["source_corrupt"] == 2
    assert summary["source_detail"].startswith("2 of 5 images did not decode")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"")
    (bad / "b.png").write_bytes(b"garbage")
    _one_line_error(_edgeconf("run", fashion_bundle, "--source", bad, "--regions", "full", "--no-live"),
                    "no image in folder %s decodes" % bad)


def test_the_summary_says_not_measured_for_a_latency_without_frames(capsys):
    from edgeconf.live.cli import _latency_text

    assert _latency_text({"p50": None, "p95": None}) == "not measured (no frame processed)"
    assert _latency_text({"p50": 3.1, "p95": 5.0}) == "p50 3.1 ms, p95 5.0 ms"
