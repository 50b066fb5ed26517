"""INT8 that keeps its accuracy and its confidence: static QDQ quantization fitted to small classifiers.

* Weights per channel (symmetric INT8, 7-bit range by default: x86 CPUs without VNNI multiply u8×s8
  pairs into saturating 16-bit sums, which wrecks accuracy with full-range weights; 7 bits cannot
  saturate and cost little). Activations symmetric INT8, the form TensorRT consumes.
* Activation ranges from a class-stratified calibration part; the calibration method (min-max,
  entropy, percentile) is chosen on a held-out part of the same data.
* While the held-out accuracy (or ECE) misses the budget, the layer that adds the most quantization
  noise (measured per layer with ONNX Runtime's ``qdq_loss_debug``) is kept in float.
* The confidence head (``edgeconf/`` nodes) and the logits it reads stay float; the temperature is
  fitted again on the INT8 model's own held-out outputs and stored in its graph and metadata.

The decisions are recorded as ``edgeconf.int8`` metadata so TensorRT builds make the same ones.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from edgeconf.atomic import write_bytes
from edgeconf.confidence import expected_calibration_error, negative_log_likelihood, softmax
from edgeconf.errors import ConfigError
from edgeconf.export.calibration import fit_temperature
from edgeconf.export.data import _session, input_spec, model_ready, run_outputs
from edgeconf.export.errors import ExportError, QuantizationBudgetError
from edgeconf.export.head import (NODE_PREFIX, _set_metadata, find_logits_output, has_head, load_model,
                                  read_head_metadata, set_head_values, validate_head)
from edgeconf.export.int8_data import (DEFAULT_FIT, DEFAULT_SELECT, METHODS, MIN_FIT, MIN_SELECT, CalibrationSet,
                                       make_calibration_set)
from edgeconf.export.int8_layers import COMPUTE_OPS, layer_errors, quantized_layers
from edgeconf.preprocess import Preprocessing

DEFAULT_BUDGET = 0.5  # accuracy points the INT8 model may lose on held-out data
DEFAULT_ECE_BUDGET = 0.5  # ECE points it may add (each model at its own fitted temperature)
PERCENTILE = 99.999
DEBUG_SAMPLES = 256  # samples the per-layer error measurement runs on
CALIB_CHUNK = 256  # calibration samples per collection pass (bounds the histogram calibrators' memory)


@dataclass
class Evaluation:
    """Accuracy and confidence of one model on one labelled set (probabilities at ``temperature``)."""

    accuracy: float
    ece: float
    nll: float
    temperature: float

    def to_json(self) -> dict:
        return {k: round(v, 6) for k, v in asdict(self).items()}


@dataclass
class QuantReport:
    """Where the INT8 model went, how it was made, and how it compares with the float one."""

    path: str
    source: str
    source_sha256: str = ""  # of the float model file the copy was made from (a stale copy is detectable)
    excluded_nodes: List[str] = field(default_factory=list)  # the confidence head's nodes (always float)
    calibration_samples: int = 0
    method: Optional[str] = None
    methods_tried: Dict[str, Any] = field(default_factory=dict)  # method -> held-out Evaluation (all layers INT8)
    float_layers: List[str] = field(default_factory=list)  # layers kept in float to meet the budget
    quantized_layers: int = 0
    layer_errors: List[Dict[str, Any]] = field(default_factory=list)  # first measurement, worst first
    per_channel: bool = True
    reduce_range: bool = True
    budget: Dict[str, Optional[float]] = field(default_factory=dict)
    calibration: Dict[str, Any] = field(default_factory=dict)
    selection: Dict[str, Any] = field(default_factory=dict)  # held-out calibration part: float vs INT8
    float_temperature: Optional[float] = None
    temperature: Optional[float] = None  # re-fitted on the INT8 model's held-out outputs
    evaluated_on: Optional[str] = None  # "test" (data the calibration did not see) or None
    samples: int = 0
    float_accuracy: Optional[float] = None
    int8_accuracy: Optional[float] = None
    float_ece: Optional[float] = None
    int8_ece: Optional[float] = None
    int8_ece_float_temperature: Optional[float] = None  # what the ECE would be without the re-fit
    agreement: Optional[float] = None  # share of samples where both predict the same class
    cpu: Optional[Dict[str, Any]] = None  # per-image CPU time, float and INT8, and the ratio
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


class _DropAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return "pre-processing" not in msg and "pre-process" not in msg


def array_reader(x: np.ndarray, input_name: str, batch: int = 32):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over a model-ready array (equal-size batches)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _ArrayReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rewind()

        def get_next(self):
            i = next(self._it, None)
            return None if i is None else {input_name: x[i:i + batch]}

        def rewind(self) -> None:
            self._it = iter(range(0, x.shape[0] - batch + 1, batch) if x.shape[0] >= batch else [0])

    return _ArrayReader()


def _split_xy(data: Any, what: str) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    if data is None:
        return None, None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return np.asarray(data[0]), (None if data[1] is None else np.asarray(data[1]))
    if isinstance(data, np.ndarray):
        return data, None
    raise ConfigError("%s must be an array x or a pair (x, y)" % what)


def _evaluate(logits: np.ndarray, y: np.ndarray, temperature: Optional[float] = None) -> Evaluation:
    """At a given temperature; or fitted, with ECE/NLL cross-fitted (T from one half, measured on the other)."""
    if temperature is not None:
        p = softmax(logits, float(temperature))
        return Evaluation(float((p.argmax(1) == y).mean()), expected_calibration_error(p, y),
                          negative_log_likelihood(p, y), float(temperature))
    halves = (np.arange(y.shape[0]) % 2 == 0, np.arange(y.shape[0]) % 2 == 1)
    ece, nll = 0.0, 0.0
    for a, b in (halves, halves[::-1]):
        t = fit_temperature(logits[a], y[a]).temperature
        p = softmax(logits[b], t)
        ece += expected_calibration_error(p, y[b]) * b.sum() / y.shape[0]
        nll += negative_log_likelihood(p, y[b]) * b.sum() / y.shape[0]
    return Evaluation(float((logits.argmax(1) == y).mean()), float(ece), float(nll), fit_temperature(logits, y).temperature)


def ece_difference_se(p_float: np.ndarray, p_int8: np.ndarray, y: np.ndarray, bins: int = 15, rounds: int = 200,
                      seed: int = 0) -> float:
    """Standard error of ``ECE(int8) - ECE(float)`` on the same samples (seeded paired bootstrap).

    ECE over a few thousand samples moves by tenths of a point from sampling alone; the budget check
    allows for that noise so a model is not rejected (or a layer kept in float) for a difference that
    is not there.
    """
    n = y.shape[0]
    edges = np.linspace(0.0, 1.0, bins + 1)

    def parts(p: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        conf = p.max(axis=1)
        idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
        return idx, (p.argmax(axis=1) == y).astype(np.float64) - conf

    (i_f, d_f), (i_q, d_q) = parts(p_float), parts(p_int8)
    rng = np.random.default_rng(seed)
    diffs = np.empty(rounds)
    for b in range(rounds):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        e_f = np.abs(np.bincount(i_f, weights=w * d_f, minlength=bins)).sum() / n
        e_q = np.abs(np.bincount(i_q, weights=w * d_q, minlength=bins)).sum() / n
        diffs[b] = e_q - e_f
    return float(diffs.std(ddof=1))


def _name_nodes(proto: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (layers are excluded from quantization by name)."""
    taken = {n.name for n in proto.graph.node if n.name}
    for i, n in enumerate(proto.graph.node):
        if not n.name:
            name = "%s_%d" % (n.op_type, i)
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)


def keep_output_float(proto: onnx.ModelProto, tensor: str) -> bool:
    """Remove the Q→DQ pair ONNX Runtime puts on ``tensor`` (the logits): the head reads them in float."""
    nodes = list(proto.graph.node)
    dq = next((n for n in nodes if n.op_type == "DequantizeLinear" and tensor in n.output), None)
    if dq is None:
        return False
    q = next((n for n in nodes if n.op_type == "QuantizeLinear" and dq.input[0] in n.output), None)
    if q is None:
        return False
    src = q.input[0]
    if sum(src in n.input for n in nodes) != 1 or sum(q.output[0] in n.input for n in nodes) != 1:
        return False  # the quantized value feeds something else too: leave the graph as it is
    producer = next((n for n in nodes if src in n.output), None)
    if producer is None:
        return False
    producer.output[list(producer.output).index(src)] = tensor
    proto.graph.node.remove(q)
    proto.graph.node.remove(dq)
    used = {i for n in proto.graph.node for i in n.input}
    for init in list(proto.graph.initializer):
        if init.name not in used:
            proto.graph.initializer.remove(init)
    return True


class _Quantizer:
    """Calibrates once per method (ranges cached) and re-quantizes cheaply with different float layers."""

    def __init__(self, src: str, tmp: str, input_name: str, cs: CalibrationSet, head: Sequence[str], logits: str,
                 per_channel: bool, reduce_range: bool) -> None:
        self.src, self.tmp, self.input_name, self.cs = src, tmp, input_name, cs
        self.head, self.logits = list(head), logits
        self.per_channel, self.reduce_range = per_channel, reduce_range
        self.caches: Dict[str, str] = {}
        self.count = 0

    def _method(self, method: str):
        from onnxruntime.quantization import CalibrationMethod

        return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile}[method]

    def calibrate(self, method: str) -> str:
        if method in self.caches:
            return self.caches[method]
        from onnxruntime.quantization import create_calibrator, save_tensors_data

        extra: Dict[str, Any] = {"symmetric": True}
        if method == "percentile":
            extra["percentile"] = PERCENTILE
        x = self.cs.fit_x
        batch = min(32, x.shape[0])
        calibrator = create_calibrator(self.src, None, augmented_model_path=os.path.join(self.tmp, "aug_%s.onnx" % method),
                                       calibrate_method=self._method(method), extra_options=extra)
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress on stdout
            for start in range(0, x.shape[0], CALIB_CHUNK):
                chunk = x[start:start + CALIB_CHUNK]
                usable = (chunk.shape[0] // batch) * batch  # histogram collectors need equal-size batches
                if usable:
                    calibrator.collect_data(array_reader(chunk[:usable], self.input_name, batch))
            ranges = calibrator.compute_data()
        del calibrator
        path = os.path.join(self.tmp, "ranges_%s.json" % method)
        save_tensors_data(ranges, path)
        self.caches[method] = path
        return path

    def quantize(self, method: str, float_layers: Sequence[str]) -> str:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        cache = self.calibrate(method)
        self.count += 1
        out = os.path.join(self.tmp, "int8_%d.onnx" % self.count)
        quiet = _DropAdvice()
        logging.getLogger().addFilter(quiet)  # ORT logs pre-processing advice on the root logger
        try:
            quantize_static(self.src, out, None, quant_format=QuantFormat.QDQ, per_channel=self.per_channel,
                            reduce_range=self.reduce_range, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=self.head + list(float_layers),
                            calibrate_method=self._method(method), calibration_cache_path=cache,
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        except Exception as exc:
            raise ExportError("ONNX Runtime could not quantise %s: %s" % (self.src, str(exc).splitlines()[0][:300])) from exc
        finally:
            logging.getLogger().removeFilter(quiet)
        q = onnx.load(out)
        if keep_output_float(q, self.logits):
            onnx.save(q, out)
        return out


def quantize_int8(onnx_path: str, out_path: str, calib: Any, test: Any = None, preprocessing: Any = None,
                  method: str = "auto", budget: Optional[float] = DEFAULT_BUDGET,
                  ece_budget: Optional[float] = DEFAULT_ECE_BUDGET, fit_samples: int = DEFAULT_FIT,
                  select_samples: int = DEFAULT_SELECT, per_channel: bool = True, reduce_range: bool = True,
                  max_float_layers: Optional[int] = None, output: Optional[str] = None, cpu_rounds: int = 7,
                  progress: Optional[Callable[[str], None]] = None) -> QuantReport:
    """Write a QDQ INT8 copy of ``onnx_path`` to ``out_path``, calibrated on ``calib``; report against ``test``.

    ``calib``: labelled ``(x, y)`` (x model-ready, or raw uint8 images converted with the preprocessing) —
    part of it sets activation ranges, the rest is held out to choose ``method`` (``auto``: the best of
    minmax/entropy/percentile), keep layers in float until the INT8 model loses at most ``budget``
    accuracy points and adds at most ``ece_budget`` ECE points, and re-fit the temperature. Unlabelled
    ``x`` allows only a fixed method, with no budget and no re-fit. ``test`` ``(x, y)`` is data the
    calibration did not see: the float-vs-INT8 report (accuracy, ECE, agreement, CPU time) is on it.
    ``max_float_layers`` caps the layers kept in float (default: all but one quantizable layer).
    """
    say = progress or (lambda _msg: None)
    cx, cy = _split_xy(calib, "calib")
    if cx is None or cx.size == 0:
        raise ConfigError("INT8 quantisation needs calibration data (a few thousand representative inputs, labelled); "
                          "give calib=(x, y) (CLI: --int8 --calib DATA.npz)")
    if method != "auto" and method not in METHODS:
        raise ConfigError("unknown INT8 calibration method %r; choose auto, %s" % (method, ", ".join(METHODS)))
    for name, value in (("budget", budget), ("ece_budget", ece_budget)):
        if value is not None and not (0.0 <= value <= 100.0):
            raise ConfigError("the INT8 %s is in percentage points between 0 and 100, got %r" % (name, value))
    proto, source_sha = load_model(onnx_path)  # sha256 of the file: recorded, so a stale INT8 copy is detectable
    meta = read_head_metadata(proto)
    logits_name, classes = find_logits_output(proto, output)
    pre = preprocessing
    if isinstance(pre, dict):
        pre = Preprocessing.from_json(pre)
    if pre is None and isinstance(meta.get("preprocessing"), dict):
        pre = Preprocessing.from_json(meta["preprocessing"])
    spec = input_spec(_session(onnx_path))
    cx = model_ready(cx, spec, pre, "INT8 calibration data")
    labelled = cy is not None
    if method == "auto" and not labelled:
        raise ConfigError("choosing the INT8 calibration method needs labelled calibration data (x, y); give labels, or "
                          "name a method (minmax, entropy or percentile)")
    n = int(cx.shape[0])
    if method == "auto":
        methods = [m for m in METHODS if n >= MIN_FIT[m] + MIN_SELECT] or ["minmax"]
    else:
        methods = [method]
    cs = make_calibration_set(cx, cy, classes, methods, fit_samples, select_samples)
    notes: List[str] = []
    skipped = [m for m in METHODS if method == "auto" and m not in methods]
    if skipped:
        notes.append("methods %s skipped: %d samples are fewer than they need (%s) plus %d held out"
                     % (", ".join(skipped), n, ", ".join("%s %d" % (m, MIN_FIT[m]) for m in skipped), MIN_SELECT))
    fit_n = int(cs.fit_x.shape[0])
    if fit_n < fit_samples:
        held = int(cs.select_y.shape[0]) if cs.select_y is not None else 0
        notes.append("activation ranges set on %d samples, fewer than the %d asked for: the calibration data holds %d%s"
                     % (fit_n, fit_samples, n, " and %d of them are held out for the choices" % held if held else ""))
    head_nodes = [nd.name for nd in proto.graph.node if nd.name.startswith(NODE_PREFIX)]
    report = QuantReport(out_path, onnx_path, source_sha, head_nodes, int(cs.fit_x.shape[0]), per_channel=per_channel,
                         reduce_range=reduce_range, calibration=cs.to_json(), notes=notes,
                         budget={"accuracy_points": budget if labelled else None,
                                 "ece_points": ece_budget if labelled else None})
    _name_nodes(proto)
    candidates = [nd.name for nd in proto.graph.node if not nd.name.startswith(NODE_PREFIX) and nd.op_type in COMPUTE_OPS]
    with tempfile.TemporaryDirectory(prefix="edgeconf-int8-") as tmp:
        src = os.path.join(tmp, "float.onnx")
        onnx.save(proto, src)
        qz = _Quantizer(src, tmp, spec.name, cs, head_nodes, logits_name, per_channel, reduce_range)
        float_eval = None
        sel_logits = None
        if labelled:
            sel_logits = run_outputs(src, cs.select_x, [logits_name], input_name=spec.name)[logits_name]
            float_eval = _evaluate(sel_logits, cs.select_y)
            report.float_temperature = float_eval.temperature

        held_probs: Dict[str, np.ndarray] = {}

        def held_out(path: str) -> Evaluation:
            z = run_outputs(path, cs.select_x, [logits_name], input_name=spec.name)[logits_name]
            ev = _evaluate(z, cs.select_y)
            held_probs[path] = softmax(z, ev.temperature)
            return ev

        def meets(ev: Evaluation, path: str) -> bool:
            assert float_eval is not None and sel_logits is not None
            if budget is not None and (float_eval.accuracy - ev.accuracy) * 100.0 > budget + 1e-9:
                return False
            if ece_budget is None or (ev.ece - float_eval.ece) * 100.0 <= ece_budget + 1e-9:
                return True
            se = ece_difference_se(softmax(sel_logits, float_eval.temperature), held_probs[path], cs.select_y)
            return (ev.ece - float_eval.ece - se) * 100.0 <= ece_budget + 1e-9  # over by less than its noise

        chosen = methods[0]
        best_path = None
        if labelled:
            results: Dict[str, Tuple[Evaluation, str]] = {}
            for m in methods:
                say("calibrating with %s on %d samples" % (m, cs.fit_x.shape[0]))
                path = qz.quantize(m, [])
                results[m] = (held_out(path), path)
                report.methods_tried[m] = results[m][0].to_json()
            # among the methods that meet the budget (all, if none does) the most accurate on held-out data;
            # among equals (within one sample) the better calibrated
            pool = [m for m in methods if meets(*results[m])] or list(methods)
            tol = 1.0 / max(1, cs.select_y.shape[0])
            top = max(results[m][0].accuracy for m in pool)
            chosen = min((m for m in pool if results[m][0].accuracy >= top - tol), key=lambda m: results[m][0].nll)
            current, best_path = results[chosen]
        else:
            say("calibrating with %s on %d samples" % (chosen, cs.fit_x.shape[0]))
            best_path = qz.quantize(chosen, [])
            current = None
        report.method = chosen
        q0 = onnx.load(best_path)
        quantizable = [nd.name for nd in quantized_layers(q0, candidates)]
        report.quantized_layers = len(quantizable)
        if not quantizable:
            raise ExportError("ONNX Runtime quantized no layer of %s (no Conv/Gemm/MatMul-like operator); INT8 would "
                              "change nothing" % onnx_path)
        cap = len(quantizable) - 1 if max_float_layers is None else min(int(max_float_layers), len(quantizable) - 1)
        float_layers: List[str] = []
        if labelled:
            xdbg = cs.select_x[:DEBUG_SAMPLES]
            first = True
            while not meets(current, best_path):
                errs = layer_errors(src, best_path, xdbg, [c for c in quantizable if c not in float_layers])
                if first:
                    report.layer_errors = [e.to_json() for e in errs]
                    first = False
                if len(float_layers) >= cap or not errs:
                    raise QuantizationBudgetError(_budget_message(onnx_path, float_eval, current, float_layers,
                                                                  quantizable, budget, ece_budget, chosen))
                worst = errs[0].node
                float_layers.append(worst)
                say("keeping %s in float (adds the most quantization noise)" % worst)
                best_path = qz.quantize(chosen, float_layers)
                current = held_out(best_path)
            report.selection = {"samples": int(cs.select_y.shape[0]), "float": float_eval.to_json(),
                                "int8": current.to_json(), "met_budget": True}
        report.float_layers = float_layers
        q = onnx.load(best_path)
    kept = {p.key for p in q.metadata_props}
    for p in proto.metadata_props:  # keep every source entry (ours and the user's)
        if p.key not in kept:
            e = q.metadata_props.add()
            e.key, e.value = p.key, p.value
    if labelled and current is not None:
        report.temperature = current.temperature
        if has_head(q):
            set_head_values(q, temperature=current.temperature)
        else:
            _set_metadata(q, {"temperature": current.temperature})
    _set_metadata(q, {"precision": "int8-qdq", "int8": {
        "float_sha256": source_sha, "method": chosen, "per_channel": per_channel, "reduce_range": reduce_range,
        "activations": "int8 symmetric",
        "weights": "int8 symmetric" + (" per channel" if per_channel else ""), "float_layers": float_layers,
        "head_float": True, "logits_float": True, "calibration": cs.to_json(),
        "float_temperature": report.float_temperature, "budget": report.budget}})
    onnx.checker.check_model(q)
    if has_head(q):
        float_nodes = {nd.name for nd in q.graph.node if nd.name.startswith(NODE_PREFIX)}
        if float_nodes != set(head_nodes):
            raise ExportError("quantisation changed the confidence head's nodes; please report this")
        validate_head(q)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    write_bytes(out_path, q.SerializeToString())
    tx, ty = _split_xy(test, "test")
    if tx is not None:
        tx = model_ready(tx, spec, pre, "test data")
        if ty is not None:
            _report_test(report, onnx_path, out_path, tx, np.asarray(ty).astype(np.int64), logits_name, spec.name)
    if cpu_rounds > 0:
        from edgeconf.export.cpu_cost import PROTOCOL, interleaved_cpu_us

        xs = (tx if tx is not None else (cs.select_x if cs.select_x is not None else cs.fit_x))[:256]
        say("timing float and INT8 (%d interleaved rounds)" % cpu_rounds)
        t = interleaved_cpu_us({"float": (onnx_path, xs), "int8": (out_path, xs)}, rounds=cpu_rounds)
        report.cpu = {"float_us": t["float"]["cpu_us"], "int8_us": t["int8"]["cpu_us"],
                      "ratio": round(t["int8"]["cpu_us"] / t["float"]["cpu_us"], 4), "protocol": PROTOCOL}
    return report


def _report_test(report: QuantReport, float_path: str, int8_path: str, x: np.ndarray, y: np.ndarray, logits: str,
                 input_name: str) -> None:
    """Float vs INT8 on data the calibration did not see, each model at the temperature it ships with."""
    zf = run_outputs(float_path, x, [logits], input_name=input_name)[logits]
    zq = run_outputs(int8_path, x, [logits], input_name=input_name)[logits]
    tf = _shipped_temperature(float_path, report.float_temperature)
    tq = _shipped_temperature(int8_path, report.temperature)
    ef, eq = _evaluate(zf, y, tf), _evaluate(zq, y, tq)
    report.evaluated_on, report.samples = "test", int(y.shape[0])
    report.float_accuracy, report.int8_accuracy = ef.accuracy, eq.accuracy
    report.float_ece, report.int8_ece = ef.ece, eq.ece
    report.int8_ece_float_temperature = _evaluate(zq, y, tf).ece
    report.agreement = float((zf.argmax(1) == zq.argmax(1)).mean())


def _shipped_temperature(path: str, fallback: Optional[float]) -> float:
    t = read_head_metadata(path).get("temperature")
    if isinstance(t, (int, float)):
        return float(t)
    return float(fallback) if fallback is not None else 1.0


def _budget_message(path: str, f: Any, q: Any, kept: Sequence[str], quantizable: Sequence[str], budget: Optional[float],
                    ece_budget: Optional[float], method: str) -> str:
    left = [n for n in quantizable if n not in kept]
    return ("INT8 cannot meet the budget for %s (accuracy −%s points, ECE +%s points on held-out calibration data): with "
            "%s kept in float and %s still INT8 (%s calibration), it reaches accuracy %.2f %% vs float %.2f %%, ECE "
            "%.2f %% vs %.2f %%; raise the budget, give more calibration data, or deploy the float model"
            % (os.path.basename(path), budget, ece_budget, ", ".join(kept) if kept else "no layer",
               ", ".join(left) or "none", method, q.accuracy * 100, f.accuracy * 100, q.ece * 100, f.ece * 100))


__all__ = ["quantize_int8", "QuantReport", "Evaluation", "array_reader", "keep_output_float", "DEFAULT_BUDGET",
           "DEFAULT_ECE_BUDGET"]
