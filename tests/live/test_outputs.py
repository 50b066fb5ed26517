"""Outputs of run/demo and engines: a full disk or a folder that takes no files is one line, and an earlier file is
never clobbered by a run that fails. (As root, permission bits do not stop writes, so /proc stands in for a
read-only file system.)"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edgeconf.errors import OutputError


def _edgeconf(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgeconf"] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=180, cwd=cwd)


def _one_line_error(proc, text):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("edgeconf: error: ") and text in lines[0], proc.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_event_log_on_a_full_disk_is_one_line_after_the_run(fashion_bundle):
    proc = _edgeconf("demo", "--bundle", fashion_bundle, "--frames", 20, "--no-live", "--events", "/dev/full")
    _one_line_error(proc, "cannot write the event log /dev/full: no space left on device")


@pytest.mark.parametrize("option, name, text", [
    ("--events", "e.jsonl", "cannot write the event log /proc/e.jsonl: that folder does not accept new files"),
    ("--record", "r.avi", "cannot record to /proc/r.avi: OpenCV cannot write codec MJPG there"),
])
def test_outputs_into_a_folder_that_takes_no_files(fashion_bundle, option, name, text):
    proc = _edgeconf("demo", "--bundle", fashion_bundle, "--frames", 5, "--no-live", option, "/proc/" + name)
    _one_line_error(proc, text)


def test_a_failed_run_leaves_an_earlier_recording_untouched(fashion_bundle, tmp_path):
    video = tmp_path / "run.avi"
    video.write_bytes(b"an earlier recording")
    proc = _edgeconf("run", fashion_bundle, "--source", tmp_path / "missing.mp4", "--record", video, "--no-live")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert video.read_bytes() == b"an earlier recording"
    proc = _edgeconf("demo", "--bundle", fashion_bundle, "--frames", 10, "--no-live", "--record", video)
    assert proc.returncode == 0, proc.stderr
    assert video.read_bytes()[:4] == b"RIFF"  # replaced by the new, finalised recording
    assert sorted(os.listdir(tmp_path)) == ["run.avi"]  # no temporary file left behind


def test_engines_are_written_atomically(tmp_path):
    from edgeconf.engine_format import EngineHeader, write_engine

    with pytest.raises(OutputError, match="cannot write /proc/x.engine: that folder does not accept new files"):
        write_engine("/proc/x.engine", b"plan", EngineHeader())
    target = tmp_path / "m.engine"
    write_engine(str(target), b"plan-bytes", EngineHeader())
    assert target.read_bytes().endswith(b"plan-bytes") and (tmp_path / "m.engine.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["m.engine", "m.engine.json"]


def test_an_output_over_the_source_or_under_a_regular_file_is_refused_before_anything_is_written(fashion_bundle,
                                                                                                 tmp_path):
    import cv2
    import numpy as np

    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for i in range(6):
        writer.write(np.full((64, 64, 3), 30 * i, np.uint8))
    writer.release()
    before = video.read_bytes()
    (tmp_path / "afile").write_text("x")
    same = str(tmp_path / "afile" / ".." / "v.avi")  # the source again, through '..'
    for option, value in (("--record", video), ("--events", same), ("--output", "file://%s" % video)):
        proc = _edgeconf("run", fashion_bundle, "--source", video, "--regions", "full", "--no-live", "--frames", 5,
                         option, value)
        assert video.read_bytes() == before, proc.stderr
        _one_line_error(proc, "%s %s is one of this run's inputs; writing there would destroy it" % (
            option, str(value).replace("file://", "")))
    import shutil

    bundle = tmp_path / "B"  # a copy: a regression must not damage the session's bundle
    shutil.copytree(fashion_bundle, str(bundle))
    manifest = (bundle / "edgeconf.json").read_bytes()
    proc = _edgeconf("run", bundle, "--source", "file://%s?loop=1" % video, "--no-live", "--frames", 5,
                     "--events", bundle / "edgeconf.json")
    assert (bundle / "edgeconf.json").read_bytes() == manifest, proc.stderr
    _one_line_error(proc, "is a file of bundle %s, an input of this run" % bundle)
    for option, name in (("--events", "e.jsonl"), ("--record", "r.avi"), ("--output", "r.mp4")):
        proc = _edgeconf("demo", "--bundle", fashion_bundle, "--frames", 3, "--no-live", option,
                         tmp_path / "afile" / name)
        _one_line_error(proc, "cannot write %s %s: %s is a file, not a folder" % (option, tmp_path / "afile" / name,
                                                                                  tmp_path / "afile"))
    assert sorted(os.listdir(tmp_path)) == ["B", "afile", "v.avi"] and (tmp_path / "afile").read_text() == "x"
