"""INT8: static quantisation to QDQ ONNX with ONNX Runtime's tools, calibrated on user data.

The confidence head (nodes named ``edgeconf/...``) is excluded and stays in float: reduced precision is
known to wreck confidence scores, so the softmax, score and threshold compare run on dequantised logits.
Symmetric INT8 for weights and activations by default, the form TensorRT consumes (TensorRT 11 takes
reduced precision only from explicit Q/DQ nodes). Accuracy and ECE of the float and INT8 models are
reported side by side.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, List, Optional, Tuple

import numpy as np
import onnx

from edgeconf.confidence import expected_calibration_error, softmax
from edgeconf.errors import ConfigError
from edgeconf.export.data import _session, input_spec, model_ready, run_outputs
from edgeconf.export.errors import ExportError
from edgeconf.export.head import (NODE_PREFIX, _set_metadata, find_logits_output, has_head, load_model,
                                  read_head_metadata, validate_head)
from edgeconf.preprocess import Preprocessing


@dataclass
class QuantReport:
    """Where the INT8 model went and how it compares with the float one (on ``evaluated_on`` data)."""

    path: str
    source: str
    excluded_nodes: List[str] = field(default_factory=list)
    calibration_samples: int = 0
    evaluated_on: Optional[str] = None  # "test", "calibration" or None (no labels)
    samples: int = 0
    float_accuracy: Optional[float] = None
    int8_accuracy: Optional[float] = None
    float_ece: Optional[float] = None
    int8_ece: Optional[float] = None
    agreement: Optional[float] = None  # share of samples where both predict the same class

    def to_json(self) -> dict:
        return asdict(self)


class _DropAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def array_reader(x: np.ndarray, input_name: str, batch: int = 32):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over a model-ready array."""
    from onnxruntime.quantization import CalibrationDataReader

    class _ArrayReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(range(0, x.shape[0], batch))

        def get_next(self):
            i = next(self._it, None)
            return None if i is None else {input_name: x[i:i + batch]}

        def rewind(self) -> None:
            self._it = iter(range(0, x.shape[0], batch))

    return _ArrayReader()


def _split_xy(data: Any, what: str) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    if data is None:
        return None, None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1])
    if isinstance(data, np.ndarray):
        return data, None
    raise ConfigError("%s must be an array x, a pair (x, y) or a CalibrationDataReader" % what)


def _evaluate(path: str, x: np.ndarray, y: np.ndarray, logits: str) -> Tuple[np.ndarray, float, float]:
    proto = onnx.load(path)
    if has_head(proto):
        probs = run_outputs(path, x, ["probs"], input_name=input_spec(_session(path)).name)["probs"]
    else:
        probs = softmax(run_outputs(path, x, [logits], input_name=input_spec(_session(path)).name)[logits])
    pred = probs.argmax(axis=1)
    return pred, float((pred == y).mean()), expected_calibration_error(probs, y)


def quantize_int8(onnx_path: str, out_path: str, calib: Any, test: Any = None, preprocessing: Any = None,
                  per_channel: bool = True, symmetric: bool = True, max_calib: int = 512, batch: int = 32,
                  output: Optional[str] = None) -> QuantReport:
    """Write a QDQ INT8 copy of ``onnx_path`` to ``out_path``, calibrated on ``calib``.

    ``calib``: model-ready array x (or raw uint8 images with a preprocessing), a pair (x, y), or a
    ``CalibrationDataReader``. ``test`` (x, y) is used for the float-vs-INT8 report; without it the
    report uses ``calib`` when it has labels. Missing calibration data is an error, never a guess.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if calib is None or (isinstance(calib, np.ndarray) and calib.size == 0) or \
            (isinstance(calib, (tuple, list)) and (len(calib) == 0 or np.asarray(calib[0]).size == 0)):
        raise ConfigError("INT8 quantisation needs calibration data (a few hundred representative inputs); give "
                          "calib=x or (x, y) (CLI: --int8 --calib DATA.npz)")
    proto, _ = load_model(onnx_path)
    meta = read_head_metadata(proto)
    logits, _ = find_logits_output(proto, output)
    pre = preprocessing
    if isinstance(pre, dict):
        pre = Preprocessing.from_json(pre)
    if pre is None and isinstance(meta.get("preprocessing"), dict):
        pre = Preprocessing.from_json(meta["preprocessing"])
    spec = input_spec(_session(onnx_path))
    excluded = [n.name for n in proto.graph.node if n.name.startswith(NODE_PREFIX)]
    cx, cy = (None, None)
    if isinstance(calib, CalibrationDataReader):
        reader = calib
    else:
        cx, cy = _split_xy(calib, "calib")
        cx = model_ready(cx, spec, pre, "INT8 calibration data")[:max_calib]
        if cy is not None:
            cy = np.asarray(cy)[: cx.shape[0]]
        reader = array_reader(cx, spec.name, batch)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeconf-int8-") as tmp:
        src = os.path.join(tmp, "float.onnx")
        onnx.save(proto, src)
        tmp_out = os.path.join(tmp, "int8.onnx")
        quiet = _DropAdvice()
        logging.getLogger().addFilter(quiet)  # ORT logs pre-processing advice on the root logger
        try:
            quantize_static(src, tmp_out, reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": symmetric})
        except Exception as exc:
            raise ExportError("ONNX Runtime could not quantise %s: %s" % (onnx_path, str(exc).splitlines()[0][:300])) from exc
        finally:
            logging.getLogger().removeFilter(quiet)
        q = onnx.load(tmp_out)
    kept = {p.key for p in q.metadata_props}
    for p in proto.metadata_props:  # keep every source entry (ours and the user's)
        if p.key not in kept:
            e = q.metadata_props.add()
            e.key, e.value = p.key, p.value
    _set_metadata(q, {"precision": "int8-qdq"})
    onnx.checker.check_model(q)
    if has_head(q):
        float_nodes = {n.name for n in q.graph.node if n.name.startswith(NODE_PREFIX)}
        if float_nodes != set(excluded):
            raise ExportError("quantisation changed the confidence head's nodes; please report this")
        validate_head(q)
    onnx.save(q, out_path)
    report = QuantReport(out_path, onnx_path, excluded, int(cx.shape[0]) if cx is not None else 0)
    tx, ty = _split_xy(test, "test")
    where = "test"
    if tx is None and cx is not None and cy is not None:
        tx, ty, where = cx, cy, "calibration"
    elif tx is not None:
        tx = model_ready(tx, spec, pre, "test data")
    if tx is not None and ty is not None:
        pf, report.float_accuracy, report.float_ece = _evaluate(onnx_path, tx, ty, logits)
        pq, report.int8_accuracy, report.int8_ece = _evaluate(out_path, tx, ty, logits)
        report.agreement = float((pf == pq).mean())
        report.evaluated_on, report.samples = where, int(ty.shape[0])
    return report


__all__ = ["quantize_int8", "QuantReport", "array_reader"]
