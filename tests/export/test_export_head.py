"""The confidence head: graph outputs equal the numpy computation; metadata, retune and bad models."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgeconf.confidence import score as np_score, softmax
from edgeconf.errors import ConfigError, ModelLoadError
from edgeconf.export.errors import NotAClassifierError, UnsupportedOpsetError
from edgeconf.export.head import (T_NAME, THRESHOLD_NAME, add_confidence_head, head_values, read_head_metadata,
                                  retune)
from onnx_models import save


def _run(model, x, names=None):
    sess = ort.InferenceSession(model.SerializeToString() if isinstance(model, onnx.ModelProto) else model,
                                providers=["CPUExecutionProvider"])
    names = names or [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: x})))


@pytest.mark.parametrize("score", ["maxp", "margin", "entropy"])
def test_graph_outputs_equal_numpy_on_a_hand_built_graph(task, score):
    # not made by torch: input 'pixels', logits output 'scores'
    model = task.model(4, 0.8, input_name="pixels", output_name="scores")
    x, _ = task.data(300, 5)
    t, thr = 1.7, 0.35
    headed = add_confidence_head(model, score=score, threshold=thr, temperature=t)
    out = _run(headed, x)
    assert list(out)[:1] == ["scores"] and {"probs", "confidence", "exit"} <= set(out)
    p = softmax(out["scores"], t)
    c = np_score(score, p)
    np.testing.assert_allclose(out["probs"], p, atol=1e-6)
    np.testing.assert_allclose(out["confidence"], c, atol=1e-5)
    assert out["exit"].dtype == np.bool_
    clear = np.abs(c - thr) > 1e-5
    assert np.array_equal(out["exit"][clear], (c >= thr)[clear])
    assert 0 < out["exit"].mean() < 1  # the threshold splits this data
    assert read_head_metadata(headed)["logits"] == "scores"


def test_entropy_is_one_minus_normalised_entropy(task):
    headed = add_confidence_head(task.model(1, 1.0), score="entropy")
    x = np.zeros((1,) + task.data(1, 0)[0].shape[1:], np.float32)  # zero input → zero logits → uniform
    out = _run(headed, x)
    assert out["confidence"][0] == pytest.approx(0.0, abs=1e-6)


def test_initializers_metadata_and_existing_metadata_kept(task):
    model = task.model(1, 1.0)
    entry = model.metadata_props.add()
    entry.key, entry.value = "author", "someone else"
    labels = ["a", "b", "c", "d", "e"]
    pre = {"size": [6, 6], "channels": 1, "scale": 1.0}
    headed = add_confidence_head(model, score="maxp", threshold=0.6, temperature=2.0, labels=labels, preprocessing=pre)
    props = {p.key: p.value for p in headed.metadata_props}
    assert props["author"] == "someone else"
    for key in ("schema", "score", "threshold", "temperature", "labels", "preprocessing", "source_sha256"):
        json.loads(props["edgeconf." + key])  # every value is JSON
    meta = read_head_metadata(headed)
    assert meta["score"] == "maxp" and meta["threshold"] == 0.6 and meta["temperature"] == 2.0
    assert meta["labels"] == labels and meta["preprocessing"]["size"] == [6, 6]
    assert len(meta["source_sha256"]) == 64
    assert head_values(headed) == pytest.approx((2.0, 0.6))
    assert {T_NAME, THRESHOLD_NAME} <= {i.name for i in headed.graph.initializer}
    # ONNX Runtime reads the same metadata
    sess = ort.InferenceSession(headed.SerializeToString(), providers=["CPUExecutionProvider"])
    assert json.loads(sess.get_modelmeta().custom_metadata_map["edgeconf.labels"]) == labels
    # re-heading replaces the head: no duplicate keys, nodes or outputs; source hash stays the original's
    again = add_confidence_head(headed, score="margin", threshold=0.2)
    keys = [p.key for p in again.metadata_props]
    assert len(keys) == len(set(keys)) and "author" in keys
    assert [o.name for o in again.graph.output] == ["logits", "probs", "confidence", "exit"]
    assert read_head_metadata(again)["source_sha256"] == meta["source_sha256"]
    assert read_head_metadata(again)["labels"] == labels
    assert len(again.graph.node) < len(headed.graph.node) + 3


def test_original_outputs_kept_and_output_choice(task):
    model = task.model(1, 1.0, extra_outputs=True)  # outputs logits (N,5) and features (N,36): both 2-D float
    with pytest.raises(NotAClassifierError, match="several candidate.*--output"):
        add_confidence_head(model)
    headed = add_confidence_head(model, output="logits")
    assert [o.name for o in headed.graph.output] == ["logits", "features", "probs", "confidence", "exit"]
    with pytest.raises(NotAClassifierError, match="no output 'nope'"):
        add_confidence_head(model, output="nope")


def test_not_a_classifier():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(NotAClassifierError, match="not a classifier.*2-D float"):
        add_confidence_head(model)


def test_old_opset_refused_and_opset_11_supported(task):
    old = task.model(1, 1.0)
    old.opset_import[0].version = 9
    with pytest.raises(UnsupportedOpsetError, match="opset 9.*convert_version"):
        add_confidence_head(old)
    m11 = task.model(1, 1.0)
    m11.opset_import[0].version = 11  # ReduceSum takes axes as an attribute here
    x, _ = task.data(50, 1)
    out = _run(add_confidence_head(m11, score="entropy", temperature=1.3), x)
    np.testing.assert_allclose(out["confidence"], np_score("entropy", softmax(out["logits"], 1.3)), atol=1e-5)


def test_labels_must_match_class_count(task):
    with pytest.raises(ConfigError, match="3 labels.*5 classes"):
        add_confidence_head(task.model(1, 1.0), labels=["a", "b", "c"])


def test_bad_values(task):
    with pytest.raises(ConfigError, match="threshold"):
        add_confidence_head(task.model(1, 1.0), threshold=1.5)
    with pytest.raises(ConfigError, match="temperature"):
        add_confidence_head(task.model(1, 1.0), temperature=0)
    with pytest.raises(ConfigError, match="unknown score"):
        add_confidence_head(task.model(1, 1.0), score="vibes")


def test_retune_changes_initializers_and_metadata(task, tmp_path):
    path = save(add_confidence_head(task.model(2, 0.8), threshold=0.5), tmp_path / "m.onnx")
    x, _ = task.data(200, 3)
    before = _run(path, x)
    retune(path, threshold=0.1, temperature=3.0)
    assert head_values(path) == pytest.approx((3.0, 0.1))
    meta = read_head_metadata(path)
    assert meta["threshold"] == 0.1 and meta["temperature"] == 3.0
    after = _run(path, x)
    np.testing.assert_allclose(after["logits"], before["logits"])
    c = np_score("margin", softmax(after["logits"], 3.0))
    np.testing.assert_allclose(after["confidence"], c, atol=1e-5)
    assert after["exit"].mean() != before["exit"].mean()
    out = retune(path, threshold=0.9, out=str(tmp_path / "copy.onnx"))
    assert head_values(out)[1] == pytest.approx(0.9) and head_values(path)[1] == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="threshold"):
        retune(path, threshold=2.0)


def test_retune_needs_a_head(task, tmp_path):
    path = save(task.model(1, 1.0), tmp_path / "plain.onnx")
    with pytest.raises(ModelLoadError, match="no edgeconf confidence head"):
        retune(path, threshold=0.3)


def test_unreadable_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file at all")
    with pytest.raises(ModelLoadError, match="cannot read"):
        add_confidence_head(str(bad))
