"""`edgeconf demo` and `edgeconf run` from the command line: the summary's keys, --source, and the one
definition of defaults shared with the GUI."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edgeconf.live import defaults

DEMO_KEYS = ("regions", "mota", "idf1", "accuracy", "unknown_rate", "fps", "memo_hit_rate")


def _edgeconf(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeconf"] + list(args), capture_output=True, text=True, timeout=timeout)


def test_demo_json_has_the_headline_figures_and_labels_the_oracle(fashion_bundle):
    res = _edgeconf("demo", "--bundle", fashion_bundle, "--frames", "40", "--objects", "4", "--seed", "2", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    s = json.loads(res.stdout)
    for key in DEMO_KEYS:
        assert key in s, key
    assert s["regions"] == "detector" and s["regions_note"] is None
    assert 0.0 <= s["accuracy"] <= 1.0 and s["mota"] <= 1.0 and 0.0 <= s["idf1"] <= 1.0 and s["fps"] > 0
    assert s["source"].startswith("demo://?seed=2&objects=4") and s["frames"] == 40
    assert s["classification"]["scored"] > 0 and s["tracking"]["frames"] == 40
    assert s["protocol"]["required_visible"] == 0.5
    oracle = json.loads(_edgeconf("demo", "--bundle", fashion_bundle, "--frames", "20", "--objects", "3",
                                  "--regions", "truth", "--json").stdout)
    assert oracle["regions"] == "truth" and "oracle" in oracle["regions_note"]
    text = _edgeconf("demo", "--bundle", fashion_bundle, "--frames", "20", "--objects", "3", "--regions", "truth",
                     "--no-live").stdout
    assert "truth  (oracle regions" in text


def test_demo_source_scores_any_source_with_ground_truth(fashion_bundle, tmp_path):
    uri = "demo://?seed=5&objects=3&frames=25&realtime=0"
    res = _edgeconf("demo", "--bundle", fashion_bundle, "--source", uri, "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    s = json.loads(res.stdout)
    assert s["source"] == uri and s["frames"] == 25 and s["mota"] is not None and s["protocol"]["scored_frames"] == 25
    limited = json.loads(_edgeconf("demo", "--bundle", fashion_bundle, "--source", uri, "--frames", "10", "--json").stdout)
    assert limited["frames"] == 10
    clash = _edgeconf("demo", "--bundle", fashion_bundle, "--source", uri, "--seed", "3", "--objects", "2")
    assert clash.returncode == 2 and "--objects, --seed set the built-in scene" in clash.stderr  # a usage error
    assert len(clash.stderr.strip().splitlines()) == 1
    video = tmp_path / "clip.avi"  # a source without ground truth: the figures are "not measured", never invented
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 120))
    for i in range(12):
        writer.write(np.full((120, 160, 3), 100 + i, np.uint8))
    writer.release()
    blind = json.loads(_edgeconf("demo", "--bundle", fashion_bundle, "--source", str(video) + "?realtime=0",
                                 "--json").stdout)
    assert blind["frames"] == 12 and blind["mota"] is None and blind["accuracy"] is None
    assert "no ground truth" in blind["tracking"]["note"] and "no ground truth" in blind["classification"]["note"]


def test_run_without_arguments_uses_the_shared_defaults():
    res = _edgeconf("run", "--source", "demo://?seed=3&objects=3&frames=8&realtime=0", "--json", "--no-live")
    assert res.returncode == 0, res.stderr[-2000:]
    s = json.loads(res.stdout)
    assert s["bundle"] == defaults.DEFAULT_BUNDLE and s["regions"] == defaults.DEFAULT_REGIONS and s["frames"] == 8


def test_one_definition_of_defaults_for_demo_run_and_gui():
    from edgeconf.live.cli import demo_cmd, run_cmd

    def default(cmd, name):
        return next(p.default for p in cmd.params if p.name == name)

    assert default(run_cmd, "regions") == default(demo_cmd, "regions") == defaults.DEFAULT_REGIONS
    assert default(run_cmd, "source_uri") == defaults.DEFAULT_SOURCE
    pytest.importorskip("PySide6")
    from edgeconf.gui.cli import shipped_bundle
    from edgeconf.gui.model import GuiModel
    from edgeconf.gui.worker import WorkerConfig

    assert shipped_bundle() == defaults.DEFAULT_BUNDLE
    assert GuiModel().regions == defaults.DEFAULT_REGIONS and GuiModel().source_uri == defaults.DEFAULT_SOURCE
    assert WorkerConfig(bundle="b", source="s").regions == defaults.DEFAULT_REGIONS


@pytest.mark.parametrize("verb", ["demo", "run"])
def test_demo_and_run_json_record_the_onnx_runtime_threads(verb, fashion_bundle):
    where = ["--bundle", fashion_bundle] if verb == "demo" else [fashion_bundle, "--source",
                                                                 "demo://?seed=3&objects=3&frames=8&realtime=0"]
    res = _edgeconf(verb, *where, "--frames", "8", "--no-live", "--json", "--threads", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    threads = json.loads(res.stdout)["threads"]
    assert threads["intra_op"] == 2 and threads["reason"] == "--threads 2"
    assert set(threads) >= {"intra_op", "inter_op", "spinning", "sequential", "reason"}


def test_demo_takes_a_huge_fps_that_its_uri_writes_with_an_exponent(fashion_bundle):
    res = _edgeconf("demo", "--bundle", fashion_bundle, "--frames", "3", "--objects", "2", "--no-live", "--fps",
                    "1e16", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "fps=1e+16" in json.loads(res.stdout)["source"]
