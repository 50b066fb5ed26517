"""INT8: per-channel QDQ with the head and logits in float, the calibration method chosen on held-out data,
the costliest layer kept in float until the budget holds, the temperature re-fitted, and every bad input."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgeconf.bundle import sha256_file
from edgeconf.errors import ConfigError
from edgeconf.export.errors import CalibrationError, QuantizationBudgetError
from edgeconf.export.head import NODE_PREFIX, add_confidence_head, head_values, read_head_metadata
from edgeconf.export.int8_data import make_calibration_set, stratified_split
from edgeconf.export.quantize import quantize_int8
from onnx_models import mlp_classifier, save

CLASSES, SHAPE = 5, (1, 6, 6)  # as in tests/export/conftest.py

TARGET_ACC, TARGET_ECE = 0.005, 0.005  # the targets: -0.5 accuracy points, +0.5 ECE points


def mlp_with_fragile_output_layer(task, dead_weight: float = 1000.0):
    """An MLP equal to the prototype classifier, plus a hidden unit that is always 0 (bias -1 after ReLU) whose
    outgoing weights are huge: per-channel INT8 of gemm2 then rounds every useful weight to 0, while gemm1
    quantizes well. Keeping gemm2 in float is the fix the layer search must find."""
    protos = task.protos.T * 0.25  # (features, classes)
    w1 = np.concatenate([protos, -protos, np.zeros((protos.shape[0], 1))], axis=1)
    b1 = np.concatenate([np.zeros(2 * CLASSES), [-1.0]])
    w2 = np.concatenate([np.eye(CLASSES), -np.eye(CLASSES), np.full((1, CLASSES), dead_weight)], axis=0)
    return mlp_classifier(w1, b1, w2, np.zeros(CLASSES), input_shape=SHAPE)


@pytest.fixture
def calib_test(task):
    """Easier than the shared splits (about 90 % accurate, like real deployments), so that 2000 held-out samples
    measure ECE to a few tenths of a point."""
    return task.data(3000, 21, noise=1.6), task.data(2000, 22, noise=1.6)


def test_quantize_keeps_head_and_logits_float_and_refits_temperature(task, splits, tmp_path):
    (xc, yc), (xt, yt) = splits
    model = task.model(2, 0.6)
    entry = model.metadata_props.add()
    entry.key, entry.value = "owner", "lab"
    src = save(add_confidence_head(model, score="entropy", threshold=0.4, temperature=1.5), tmp_path / "f.onnx")
    rep = quantize_int8(src, str(tmp_path / "q.onnx"), (xc, yc), test=(xt, yt), cpu_rounds=1)
    q = onnx.load(rep.path)
    ops = [n.op_type for n in q.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    head = [n for n in q.graph.node if n.name.startswith(NODE_PREFIX)]
    assert {n.name for n in head} == set(rep.excluded_nodes) and head
    produced_by_qdq = {o for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") for o in n.output}
    assert not any(i in produced_by_qdq for n in head for i in n.input)  # the head reads float tensors only
    assert "logits" not in produced_by_qdq  # the logits come out of the Gemm in float
    meta = read_head_metadata(q)
    assert meta["precision"] == "int8-qdq" and meta["score"] == "entropy"
    assert {p.key: p.value for p in q.metadata_props}["owner"] == "lab"
    # 400 samples: only minmax has enough (entropy/percentile need 256 + 200 held out), and the report says so
    assert rep.method == "minmax" and list(rep.methods_tried) == ["minmax"] and "skipped" in rep.notes[0]
    # fewer samples than the 2000 asked for set the ranges: said, not silent
    assert rep.calibration_samples == 200
    assert "activation ranges set on 200 samples, fewer than the 2000 asked for: the calibration data holds 400 and " \
           "200 of them are held out" in rep.notes[1]
    t_graph, thr = head_values(q)
    assert t_graph == pytest.approx(rep.temperature, rel=1e-6) == meta["temperature"] and thr == pytest.approx(0.4)
    assert rep.temperature != 1.5 and meta["int8"]["float_temperature"] == pytest.approx(rep.float_temperature)
    assert meta["int8"]["method"] == "minmax" and meta["int8"]["float_layers"] == []
    assert meta["int8"]["calibration"]["sha256"] == rep.calibration["sha256"]
    assert meta["int8"]["float_sha256"] == rep.source_sha256 == sha256_file(src)  # a stale copy is detectable
    assert rep.evaluated_on == "test" and rep.samples == len(yt)
    assert rep.int8_accuracy >= rep.float_accuracy - TARGET_ACC
    assert rep.int8_ece <= rep.float_ece + TARGET_ECE
    assert rep.agreement > 0.97
    assert rep.cpu["float_us"] > 0 and rep.cpu["int8_us"] > 0 and rep.cpu["ratio"] > 0


def test_costliest_layer_kept_in_float_until_the_budget_holds(task, calib_test, tmp_path):
    (xc, yc), (xt, yt) = calib_test
    src = save(mlp_with_fragile_output_layer(task), tmp_path / "mlp.onnx")
    rep = quantize_int8(src, str(tmp_path / "q.onnx"), (xc, yc), test=(xt, yt), method="minmax",
                        fit_samples=1000, cpu_rounds=0)
    assert rep.layer_errors[0]["node"] == "gemm2"  # measured as the layer that adds the most noise
    assert rep.float_layers == ["gemm2"] and rep.quantized_layers == 2
    q = onnx.load(rep.path)
    by_name = {n.name: n for n in q.graph.node}
    dq_out = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert "W2" in by_name["gemm2"].input  # float weights
    assert any(i in dq_out for i in by_name["gemm1"].input)  # gemm1 still runs in INT8
    assert read_head_metadata(q)["int8"]["float_layers"] == ["gemm2"]
    assert rep.selection["met_budget"]
    assert rep.int8_accuracy >= rep.float_accuracy - TARGET_ACC and rep.int8_ece <= rep.float_ece + TARGET_ECE


def test_budget_that_cannot_be_met_names_the_layers(task, calib_test, tmp_path):
    (xc, yc), _ = calib_test
    src = save(mlp_with_fragile_output_layer(task), tmp_path / "mlp.onnx")
    with pytest.raises(QuantizationBudgetError) as exc:
        quantize_int8(src, str(tmp_path / "q.onnx"), (xc, yc), method="minmax", max_float_layers=0,
                      fit_samples=1000, cpu_rounds=0)
    msg = str(exc.value)
    assert "with no layer kept in float" in msg and "gemm1, gemm2 still INT8" in msg
    assert "reaches accuracy" in msg and "vs float" in msg and "\n" not in msg
    assert not (tmp_path / "q.onnx").exists()


def test_auto_method_tries_every_method_with_enough_data(task, calib_test, tmp_path):
    (xc, yc), _ = calib_test
    src = save(task.model(2, 0.6), tmp_path / "f.onnx")
    rep = quantize_int8(src, str(tmp_path / "q.onnx"), (xc, yc), fit_samples=1000, cpu_rounds=0)
    assert set(rep.methods_tried) == {"minmax", "entropy", "percentile"}
    best = max(v["accuracy"] for v in rep.methods_tried.values())
    assert rep.methods_tried[rep.method]["accuracy"] >= best - 1.0 / rep.selection["samples"]
    assert rep.evaluated_on is None and rep.float_accuracy is None  # no test data: no test numbers invented
    assert sum(rep.calibration["per_class"].values()) == rep.calibration_samples == 1000


@pytest.mark.parametrize("method, n, need", [("entropy", 300, 456), ("percentile", 455, 456), ("minmax", 200, 264)])
def test_too_few_samples_for_the_method(task, tmp_path, method, n, need):
    x, y = task.data(n, 3)
    src = save(task.model(1, 1.0), tmp_path / "f.onnx")
    with pytest.raises(CalibrationError, match="%s method needs at least %d samples" % (method, need)):
        quantize_int8(src, str(tmp_path / "q.onnx"), (x, y), method=method)


def test_calibration_data_missing_a_class(task, tmp_path):
    x, y = task.data(800, 3)
    keep = y != 3
    src = save(task.model(1, 1.0), tmp_path / "f.onnx")
    with pytest.raises(CalibrationError, match="no sample of class 3 .of 5.*every class"):
        quantize_int8(src, str(tmp_path / "q.onnx"), (x[keep], y[keep]))


def test_without_calibration_data_or_labels(task, tmp_path):
    src = save(task.model(1, 1.0), tmp_path / "f.onnx")
    for empty in (None, np.zeros((0,) + SHAPE, np.float32)):
        with pytest.raises(ConfigError, match="needs calibration data"):
            quantize_int8(src, str(tmp_path / "q.onnx"), empty)
    x, _ = task.data(300, 3)
    with pytest.raises(ConfigError, match="needs labelled calibration data"):
        quantize_int8(src, str(tmp_path / "q.onnx"), x)
    rep = quantize_int8(src, str(tmp_path / "q.onnx"), x, method="minmax", cpu_rounds=0)  # unlabelled: no budget
    assert rep.temperature is None and rep.budget == {"accuracy_points": None, "ece_points": None}
    with pytest.raises(ConfigError, match="unknown INT8 calibration method"):
        quantize_int8(src, str(tmp_path / "q.onnx"), x, method="kl")


def test_stratified_split_is_disjoint_seeded_and_proportional():
    y = np.repeat(np.arange(4), [100, 200, 300, 400])
    fit, sel = stratified_split(y, 100, 500)
    assert len(fit) == 100 and len(sel) == 500 and not set(fit) & set(sel)
    assert np.bincount(y[fit]).tolist() == [10, 20, 30, 40]
    again = stratified_split(y, 100, 500)
    assert (again[0] == fit).all() and (again[1] == sel).all()
    cs = make_calibration_set(np.zeros((1000, 2), np.float32), y, 4, ["minmax"], fit=900, select=5000)
    assert cs.fit_x.shape[0] == 800 and cs.select_x.shape[0] == 200  # the held-out minimum is kept
