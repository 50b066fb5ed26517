"""Option values of ``edgeconf run`` and ``demo`` are checked before anything loads: a bad value is a usage error
(one line that names the option and the command's --help, exit 2); regions option values are checked for type and
range, not only by name; source query options and frame sizes say what they take."""
from __future__ import annotations

import subprocess
import sys

import pytest

from edgeconf.errors import ConfigError
from edgeconf.live.regions import check_spec, make_regions
from edgeconf.live.sources import open_source


def _edgeconf(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgeconf"] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def _usage_error(proc, command, *words):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("edgeconf: error: "), proc.stderr
    assert lines[0].endswith("(see 'edgeconf %s --help')" % command), proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("spec, words", [
    ("detector:class_score=abc", ["class_score must be a number in [0, 1]", "'abc'"]),
    ("detector:conf=abc", ["conf must be a number in [0, 1]", "'abc'"]),
    ("detector:conf=5", ["conf must be a number in [0, 1]", "got 5"]),
    ("detector:iou=-0.1", ["iou must be a number in [0, 1]"]),
    ("detector:layout=yolo9", ["layout must be one of auto, yolov5, yolov8"]),
    ("detector:max_det=2.5", ["max_det must be a whole number >= 1"]),
    ("motion:guided=maybe", ["guided must be true or false", "'maybe'"]),
    ("motion:scale=0", ["scale must be a number in (0, 1]"]),
    ("motion:method=fast", ["method must be one of mog2, knn"]),
    ("motion:history=0", ["history must be a whole number >= 1"]),
    ("truth:min_visible=2", ["min_visible must be a number in [0, 1]"]),
])
def test_regions_option_values_are_checked_for_type_and_range(spec, words):
    with pytest.raises(ConfigError) as info:
        check_spec(spec)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    with pytest.raises(ConfigError):  # make_regions shares the check: nothing is built from a bad value
        make_regions(spec)


def test_good_regions_option_values_pass_and_are_converted():
    for spec in ("detector:conf=0.4,iou=0.5,class_score=0", "detector:class_score=none", "motion:knn,guided=false",
                 "motion:min_area=300,max_area=0.5,scale=1,light_grid=0,threshold=none", "truth:min_visible=0.5", "full"):
        assert check_spec(spec) == spec
    assert make_regions("motion:guided=0,min_area=300").guided is False
    with pytest.raises(ConfigError, match=r"unknown option\(s\) x for regions 'full'; valid options: none"):
        check_spec("full:x=1")


@pytest.mark.parametrize("args, words", [
    (["--size", "abc"], ["'--size'", "WIDTHxHEIGHT"]),
    (["--size", "0x10"], ["'--size'", "size must be positive"]),
    (["--size", "99999x99999"], ["'--size'", "over the limit", "EDGECONF_MAX_IMAGE_PIXELS"]),
    (["--threads", "0"], ["'--threads'", "--threads must be >= 1"]),
    (["--regions", "grid"], ["'--regions'", "unknown regions 'grid'", "motion"]),
    (["--regions", "detector:class_score=abc"], ["'--regions'", "class_score must be a number"]),
    (["--regions", "detector:conf=5"], ["'--regions'", "conf must be a number in [0, 1]"]),
    (["--regions", "motion:guided=maybe"], ["'--regions'", "guided must be true or false"]),
])
def test_bad_run_option_values_are_usage_errors(args, words):
    _usage_error(_edgeconf("run", "--source", "demo://", "--no-live", *args), "run", *words)


@pytest.mark.parametrize("args, words", [
    (["--regions", "detector:class_score=abc"], ["'--regions'", "class_score must be a number"]),
    (["--size", "12"], ["'--size'", "WIDTHxHEIGHT"]),
    (["--source", "demo://?seed=3", "--seed", "5"], ["--seed set the built-in scene", "demo://?seed=3&objects=10"]),
])
def test_bad_demo_option_values_are_usage_errors(args, words):
    _usage_error(_edgeconf("demo", "--no-live", *args), "demo", *words)


def test_the_pixel_limit_of_a_frame_size_names_what_run_takes(tmp_path):
    from edgeconf.errors import DataError

    with pytest.raises(DataError) as info:
        open_source(str(tmp_path), size=(99999, 99999))
    assert "--max-pixels" not in str(info.value) and "EDGECONF_MAX_IMAGE_PIXELS" in str(info.value)


def test_a_video_source_lists_fps_among_its_options(tmp_path):
    import cv2
    import numpy as np

    video = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 50 * i, np.uint8))
    writer.release()
    with pytest.raises(ConfigError, match="unknown option.*bogus.*valid options: realtime, loop, fps"):
        open_source(video + "?bogus=1")
    src = open_source(video + "?fps=5&realtime=0")  # the documented option is taken
    try:
        assert src.fps == 5.0
    finally:
        src.close()
