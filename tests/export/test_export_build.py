"""build_cascade: thresholds chosen on calibration data, bundle written and its runtime agrees."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

from edgeconf.bundle import load_bundle, read_manifest
from edgeconf.errors import ConfigError, InputValidationError
from edgeconf.export.build import build_cascade
from edgeconf.export.calibration import fit_temperature
from edgeconf.export.errors import CalibrationError
from edgeconf.export.head import head_values, read_head_metadata
from edgeconf.export.thresholds import select, tradeoff_curve
from edgeconf.preprocess import Preprocessing
from onnx_models import save


def _logits(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


def test_two_stage_build(pool, splits, tmp_path):
    (xc, yc), (xt, yt) = splits
    out = str(tmp_path / "bundle")
    labels = list("abcde")
    rep = build_cascade(pool[:2], (xc, yc), (xt, yt), out=out, policy="max-accuracy", labels=labels,
                        costs=[1.0, 4.0], n=500, combine="last")
    # what was chosen is exactly what the calibration split alone gives
    temps = [fit_temperature(_logits(p, xc), yc).temperature for p in pool[:2]]
    curve = tradeoff_curve([_logits(p, xc) for p in pool[:2]], yc, [1.0, 4.0], "margin", temps, n=500)
    assert rep.operating_point.thresholds == select(curve, "max-accuracy").thresholds
    assert [s.temperature for s in rep.stages] == pytest.approx(temps)
    # the bundle: stage files, thresholds, temperatures, costs, heads
    man = read_manifest(out)
    assert [s.model for s in man.stages] == ["stage1.onnx", "stage2.onnx"]
    assert man.stages[0].threshold == pytest.approx(rep.thresholds[0])
    assert man.stages[0].cost == {"value": 1.0, "how": "given"}
    assert man.labels == labels
    assert json.load(open(os.path.join(out, "edgeconf.json")))["operating_point"]["policy"] == "max-accuracy"
    for i, spec in enumerate(man.stages):
        t, thr = head_values(os.path.join(out, spec.model))
        assert t == pytest.approx(spec.temperature, rel=1e-6) and thr == pytest.approx(spec.threshold, abs=1e-6)
        assert read_head_metadata(os.path.join(out, spec.model))["labels"] == labels
    # test split: simulated and real runs agree
    assert rep.test is not None and rep.runtime_test is not None
    assert rep.runtime_test["matches_simulation"]
    assert rep.runtime_test["accuracy"] == pytest.approx(rep.test.accuracy, abs=1 / len(yt))
    single = max(s.test_accuracy for s in rep.stages)
    assert rep.test.accuracy >= single - 0.03
    with load_bundle(out, memo=False) as cascade:
        res = cascade.run_batch(xt)
    assert (res.class_ids == yt).mean() == pytest.approx(rep.runtime_test["accuracy"])


def test_measured_costs_three_stages_and_raw_images(task, pool, tmp_path):
    # raw uint8 images through a preprocessing that maps them back onto the task's inputs
    xc = task.data(200, 21)[0]
    lo, hi = float(xc.min()), float(xc.max())
    raw = np.clip((xc[:, 0] - lo) / (hi - lo) * 255, 0, 255).round().astype(np.uint8)
    pre = Preprocessing(size=(6, 6), channels=1, scale=(hi - lo) / 255.0, mean=(-lo,), std=(1.0,))
    out = str(tmp_path / "b3")
    rep = build_cascade(pool, (raw, task.data(200, 21)[1]), None, out=out, preprocessing=pre, n=200, cost_repeats=10,
                        policy="max-accuracy")
    man = read_manifest(out)
    assert len(man.stages) == 3 and len(rep.thresholds) == 2
    assert all(s.cost["ms"] > 0 and "1 thread, batch 1" in s.cost["how"] for s in man.stages)
    assert man.preprocessing == pre
    assert rep.test is None and rep.runtime_test is None


def test_bad_inputs(pool, splits, tmp_path, task):
    (xc, yc), _ = splits
    with pytest.raises(InputValidationError, match=r"shape \(1, 5, 5\).*expects \(1,6,6\)"):
        build_cascade(pool[:2], (xc[:, :, :5, :5], yc), out=str(tmp_path / "x"), costs=[1, 2])
    with pytest.raises(CalibrationError, match="only 1 class"):
        build_cascade(pool[:2], (xc, np.zeros_like(yc)), out=str(tmp_path / "x"), costs=[1, 2])
    with pytest.raises(CalibrationError, match="at least 20 samples"):
        build_cascade(pool[:2], (xc[:10], yc[:10]), out=str(tmp_path / "x"), costs=[1, 2])
    with pytest.raises(ConfigError, match="2 labels given but the models have 5 classes"):
        build_cascade(pool[:2], (xc, yc), out=str(tmp_path / "x"), costs=[1, 2], labels=["a", "b"])
    with pytest.raises(ConfigError, match="at least 2 models"):
        build_cascade(pool[:1], (xc, yc), out=str(tmp_path / "x"))
    other = save(onnx.load(pool[0]), tmp_path / "copy.onnx")
    three_class = task.model(1, 1.0)
    w = onnx.numpy_helper.to_array(three_class.graph.initializer[0])[:, :3].copy()
    from onnx_models import linear_classifier
    bad = save(linear_classifier(w, input_shape=(1, 6, 6)), tmp_path / "three.onnx")
    with pytest.raises(ConfigError, match="share the classes"):
        build_cascade([other, bad], (xc, yc), out=str(tmp_path / "x"), costs=[1, 2])
