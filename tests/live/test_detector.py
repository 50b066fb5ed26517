"""The shipped region detector: what the file is (small, one class, its operating point and provenance), that it
finds the objects of a held-out demo scene with tight boxes and leaves the clutter alone, and that the training
script reproduces a loadable detector end to end (a tiny run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from edgeconf.live.defaults import DEFAULT_REGIONS, DETECTOR_MODEL
from edgeconf.live.demo_scene import HELD_OUT_SEEDS, DemoScene
from edgeconf.live.regions import DetectorRegions, make_regions
from edgeconf.live.tracking import assign, iou_matrix

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_the_shipped_detector_file():
    assert os.path.getsize(DETECTOR_MODEL) <= 3 * 1024 * 1024
    model = onnx.load(DETECTOR_MODEL)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["names"]) == {"0": "object"}
    info = json.loads(meta["edgeconf.detector"])
    assert 0 < info["conf"] < 1 and 0 < info["iou"] < 1 and info["script"] == "scripts/train_detector.py"
    first, last = info["train_seeds"]
    assert not set(range(first, last + 1)) & set(HELD_OUT_SEEDS)  # evaluation scenes were never trained on
    assert info["held_out_seeds"] == [HELD_OUT_SEEDS.start, HELD_OUT_SEEDS.stop - 1]


def test_detector_is_the_default_and_reads_its_operating_point():
    regions = make_regions(DEFAULT_REGIONS)
    assert isinstance(regions, DetectorRegions) and regions.path == DETECTOR_MODEL
    info = json.loads({p.key: p.value for p in onnx.load(DETECTOR_MODEL).metadata_props}["edgeconf.detector"])
    assert (regions.conf, regions.iou) == (info["conf"], info["iou"])
    assert regions.layout == "yolov5" and regions.num_classes == 1
    assert make_regions("detector:conf=0.6").conf == 0.6  # an option still wins


def test_detector_finds_held_out_objects_with_tight_boxes_and_no_class():
    """On a held-out scene: objects at least 90 % visible are found (IoU >= 0.5) almost always, boxes are
    tight, and most proposals are real objects (clutter: leaves, sheets, dark mats, shadows)."""
    regions = make_regions(DEFAULT_REGIONS)
    scene = DemoScene(seed=7, objects=8, frames=900)
    found = required = proposals = real = 0
    ious = []
    for i in range(0, 900, 45):
        image, truth = scene.render(i)
        dets = [d for d in regions.propose(image) if d.score >= 0.5]
        assert all(d.class_id is None for d in dets)  # the cascade gives the class, not the detector
        gt = [t.box for t in truth if t.visible_fraction >= 0.9]
        any_gt = [t.box for t in truth]
        required += len(gt)
        proposals += len(dets)
        if gt and dets:
            m = iou_matrix(gt, [d.box for d in dets])
            pairs, _, _ = assign(1.0 - m, 0.5)
            found += len(pairs)
            ious += [m[a, b] for a, b in pairs]
        if any_gt and dets:
            real += int((iou_matrix(any_gt, [d.box for d in dets]).max(axis=0) >= 0.3).sum())
    assert required > 60
    # measured on this scene: recall 0.99, mean IoU 0.93, 97 % of confident proposals on objects
    assert found / required > 0.9, (found, required)
    assert np.mean(ious) > 0.85
    assert real / proposals > 0.85, (real, proposals)


@pytest.mark.torch
@pytest.mark.slow
def test_training_script_produces_a_loadable_detector(tmp_path):
    """A tiny run of the real script (2 scenes, 1 epoch): it renders, trains, exports, checks the ONNX file
    against torch and validates through DetectorRegions."""
    pytest.importorskip("torch")
    out = tmp_path / "det"
    res = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train_detector.py"), "--out", str(out),
                          "--scenes", "2", "--epochs", "1", "--val-scenes", "1"], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "validation (seeds 1900-1900)" in res.stderr
    det = DetectorRegions(str(out / "detector.onnx"))
    info = json.loads({p.key: p.value for p in onnx.load(str(out / "detector.onnx")).metadata_props}["edgeconf.detector"])
    assert info["train_seeds"] == [1000, 1001] and info["epochs"] == 1
    assert det.layout == "yolov5" and det.input_size == (240, 320)
