"""INT8: QDQ graph, head kept in float, float vs INT8 accuracy/ECE side by side, no data → error."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgeconf.errors import ConfigError
from edgeconf.export.head import NODE_PREFIX, add_confidence_head, read_head_metadata
from edgeconf.export.quantize import quantize_int8
from onnx_models import save


def test_quantize_keeps_head_float(task, splits, tmp_path):
    (xc, yc), (xt, yt) = splits
    model = task.model(2, 0.6)
    entry = model.metadata_props.add()
    entry.key, entry.value = "owner", "lab"
    src = save(add_confidence_head(model, score="entropy", threshold=0.4, temperature=1.5), tmp_path / "f.onnx")
    rep = quantize_int8(src, str(tmp_path / "q.onnx"), (xc, yc), test=(xt, yt))
    q = onnx.load(rep.path)
    ops = [n.op_type for n in q.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    head = [n for n in q.graph.node if n.name.startswith(NODE_PREFIX)]
    assert {n.name for n in head} == set(rep.excluded_nodes) and head
    produced_by_q = {o for n in q.graph.node if n.op_type == "QuantizeLinear" for o in n.output}
    assert not any(i in produced_by_q for n in head for i in n.input)  # the head reads float tensors only
    meta = read_head_metadata(q)
    assert meta["precision"] == "int8-qdq" and meta["score"] == "entropy" and meta["temperature"] == 1.5
    assert {p.key: p.value for p in q.metadata_props}["owner"] == "lab"
    assert rep.evaluated_on == "test" and rep.samples == len(yt)
    assert abs(rep.float_accuracy - rep.int8_accuracy) < 0.05
    assert rep.float_ece is not None and rep.int8_ece is not None
    assert rep.agreement > 0.9


def test_int8_without_calibration_data(task, tmp_path):
    src = save(task.model(1, 1.0), tmp_path / "f.onnx")
    for empty in (None, np.zeros((0, 1, 6, 6), np.float32)):
        with pytest.raises(ConfigError, match="needs calibration data"):
            quantize_int8(src, str(tmp_path / "q.onnx"), empty)
