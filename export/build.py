"""Cascade build: calibrated, head-augmented stage models plus thresholds chosen by a policy, as a bundle.

Temperatures and thresholds are fitted on the calibration split only; the test split (when given) is
used only to report the chosen operating point, both by simulation and by running the written bundle.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from edgeconf.bundle import MemoSettings, StageSpec, load_bundle, save_bundle
from edgeconf.cascade import IMAGE
from edgeconf.errors import ConfigError
from edgeconf.export.calibration import CalibrationReport, check_logits_labels, fit_temperature
from edgeconf.export.data import input_spec, measure_cost, model_ready, run_outputs, _session
from edgeconf.export.head import add_confidence_head, find_logits_output, load_model, read_head_metadata
from edgeconf.export.thresholds import OperatingPoint, TradeoffCurve, evaluate, select, tradeoff_curve
from edgeconf.preprocess import Preprocessing

Split = Tuple[np.ndarray, np.ndarray]


@dataclass
class StageReport:
    """One stage of the built cascade."""

    name: str
    source: str
    temperature: float
    calibration: CalibrationReport
    cost: Dict[str, Any]
    calib_accuracy: float
    test_accuracy: Optional[float] = None

    def to_json(self) -> dict:
        return {"name": self.name, "source": self.source, "temperature": self.temperature,
                "calibration": self.calibration.to_json(), "cost": self.cost, "calib_accuracy": self.calib_accuracy,
                "test_accuracy": self.test_accuracy}


@dataclass
class BuildReport:
    """What was built and how it performs: chosen on calibration data, reported on test data."""

    bundle: str
    policy: str
    operating_point: OperatingPoint  # on the calibration split
    stages: List[StageReport]
    curve: TradeoffCurve
    test: Optional[OperatingPoint] = None  # same thresholds, simulated on the test split
    runtime_test: Optional[Dict[str, Any]] = None  # the written bundle run on the test split
    notes: List[str] = field(default_factory=list)
    int8: Optional[List[Dict[str, Any]]] = None  # per stage: the INT8 quantization report (cascade --int8)

    @property
    def thresholds(self) -> List[float]:
        return list(self.operating_point.thresholds)

    def to_json(self) -> dict:
        return {"bundle": self.bundle, "policy": self.policy, "calibration": self.operating_point.to_json(),
                "test": self.test.to_json() if self.test else None, "runtime_test": self.runtime_test,
                "stages": [s.to_json() for s in self.stages], "notes": list(self.notes),
                "int8": self.int8}


def infer_preprocessing(shape: Sequence[Any]) -> Optional[Preprocessing]:
    """A plain preprocessing (scale 1/255, no mean/std) guessed from an image-like input shape (no batch)."""
    if len(shape) != 3 or not all(isinstance(d, int) for d in shape):
        return None
    if shape[0] in (1, 3):
        return Preprocessing(size=(shape[1], shape[2]), channels=shape[0], layout="NCHW")
    if shape[2] in (1, 3):
        return Preprocessing(size=(shape[0], shape[1]), channels=shape[2], layout="NHWC")
    return None


def _as_preprocessing(value: Any) -> Optional[Preprocessing]:
    if value is None or isinstance(value, Preprocessing):
        return value
    if isinstance(value, dict):
        return Preprocessing.from_json(value)
    raise ConfigError("preprocessing must be an edgeconf.preprocess.Preprocessing or its JSON dict")


def _check_split(data: Any, what: str) -> Split:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ConfigError("%s must be a pair (x, y) of arrays" % what)
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if x.ndim < 2:
        raise ConfigError("%s x must have a batch axis and sample dimensions, got shape %s" % (what, x.shape))
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ConfigError("%s y must have shape (%d,) to match x, got %s" % (what, x.shape[0], y.shape))
    return x, y


@dataclass
class _Source:
    path: str
    logits: str
    classes: Optional[int]
    meta: Dict[str, Any]


def _sources(models: Sequence[str], output: Optional[str]) -> List[_Source]:
    out = []
    for path in models:
        proto, _ = load_model(path)
        name, classes = find_logits_output(proto, output)
        out.append(_Source(str(path), name, classes, read_head_metadata(proto)))
    return out


def assemble_bundle(sources: Sequence[_Source], stage_inputs: Sequence[str], calib_logits: Sequence[np.ndarray],
                    calib_y: np.ndarray, costs: Sequence[Dict[str, Any]], out: str, policy: str, score: str,
                    combine: str, labels: Sequence[str], preprocessing: Preprocessing, memo: Optional[MemoSettings],
                    name: str, test_logits: Optional[Sequence[np.ndarray]] = None, test_y: Optional[np.ndarray] = None,
                    n: int = 2000, extra_provenance: Optional[Dict[str, Any]] = None) -> BuildReport:
    """Fit temperatures, pick thresholds, add heads and write the bundle (shared by cascades and early exits)."""
    k = len(sources)
    cal = [fit_temperature(z, calib_y) for z in calib_logits]
    temps = [c.temperature for c in cal]
    cost_values = [float(c.get("ms", c.get("value", 0.0))) for c in costs]
    curve = tradeoff_curve(list(calib_logits), calib_y, cost_values, score, temps, combine, n=n)
    op = select(curve, policy)
    thresholds = list(op.thresholds) + [0.0]  # the last stage always answers
    test_op = None
    if test_logits is not None and test_y is not None:
        test_op = evaluate(list(test_logits), test_y, op.thresholds, cost_values, score, temps, combine, policy)
    with tempfile.TemporaryDirectory(prefix="edgeconf-build-") as tmp:
        specs, files = [], {}
        for i, src in enumerate(sources):
            headed = add_confidence_head(src.path, score=score, threshold=thresholds[i], temperature=temps[i],
                                         labels=labels, preprocessing=preprocessing, output=src.logits)
            fname = "stage%d.onnx" % (i + 1)
            onnx.save(headed, os.path.join(tmp, fname))
            files[fname] = os.path.join(tmp, fname)
            specs.append(StageSpec(name="stage%d" % (i + 1), model=fname, score=score, threshold=float(thresholds[i]),
                                   temperature=float(temps[i]), input=stage_inputs[i], logits=src.logits,
                                   cost=dict(costs[i])))
        prov = {"sources": [os.path.basename(s.path) for s in sources],
                "source_sha256": [read_head_metadata(onnx.load(files["stage%d.onnx" % (i + 1)])).get("source_sha256")
                                  for i in range(k)]}
        prov.update(extra_provenance or {})
        extra = {"operating_point": {"policy": policy, "calibration": op.to_json(),
                                     "test": test_op.to_json() if test_op else None,
                                     "calibration_samples": int(calib_y.shape[0]),
                                     "test_samples": int(test_y.shape[0]) if test_y is not None else None}}
        save_bundle(out, specs, files, labels, preprocessing, combine, memo, name, prov, extra)
    stages = []
    for i, src in enumerate(sources):
        acc_c = float((np.asarray(calib_logits[i]).argmax(1) == calib_y).mean())
        acc_t = float((np.asarray(test_logits[i]).argmax(1) == test_y).mean()) if test_logits is not None else None
        stages.append(StageReport("stage%d" % (i + 1), src.path, temps[i], cal[i], dict(costs[i]), acc_c, acc_t))
    return BuildReport(out, policy, op, stages, curve, test_op)


def _labels_for(labels: Optional[Sequence[str]], sources: Sequence[_Source], classes: int) -> List[str]:
    if labels is None:
        labels = next((s.meta["labels"] for s in sources if isinstance(s.meta.get("labels"), list)), None)
    if labels is None:
        return [str(i) for i in range(classes)]
    labels = [str(x) for x in labels]
    if len(labels) != classes:
        raise ConfigError("%d labels given but the models have %d classes; give one label per class"
                          % (len(labels), classes))
    return labels


def runtime_check(bundle: str, x: np.ndarray, y: np.ndarray, expected: Optional[OperatingPoint]) -> Dict[str, Any]:
    """Run the written bundle on model-ready ``x``; accuracy, escalation and agreement with the simulation."""
    with load_bundle(bundle, memo=False, threads=1) as cascade:
        res = cascade.run_batch(x)
    out: Dict[str, Any] = {"accuracy": float((res.class_ids == y).mean()),
                           "escalation": float((res.stages_run > 1).mean()),
                           "stage_share": [float((res.stage == k).mean()) for k in range(len(cascade.stages))]}
    if expected is not None:
        out["matches_simulation"] = bool(abs(out["accuracy"] - expected.accuracy) <= 2.0 / max(1, y.shape[0])
                                         and abs(out["escalation"] - expected.escalation) <= 2.0 / max(1, y.shape[0]))
    return out


def _quantize_stages(sources: Sequence[_Source], xc: np.ndarray, yc: np.ndarray, test: Optional[Split], spec: Any,
                     pre: Optional[Preprocessing], options: Dict[str, Any], tmp: str
                     ) -> Tuple[List[_Source], List[Dict[str, Any]]]:
    """Each stage's INT8 copy (in ``tmp``) and its report: float vs INT8 on the test data when given."""
    from edgeconf.export.quantize import quantize_int8

    test_xy = None
    if test is not None:
        xt, yt = _check_split(test, "test data")
        test_xy = (model_ready(xt, spec, pre, "test data"), yt)
    out_sources, reports = [], []
    for i, s in enumerate(sources):
        base = os.path.splitext(os.path.basename(s.path))[0]
        dst = os.path.join(tmp, "stage%d" % (i + 1), base + ".int8.onnx")
        rep = quantize_int8(s.path, dst, (xc, yc), test=test_xy, output=s.logits, **options)
        out_sources.append(_Source(dst, s.logits, s.classes, read_head_metadata(dst)))
        reports.append(dict(rep.to_json(), stage="stage%d" % (i + 1), path=None))
    return out_sources, reports


def build_cascade(models: Sequence[str], calib: Split, test: Optional[Split] = None, out: str = "bundle",
                  policy: str = "max-accuracy", score: str = "margin", combine: str = "last",
                  labels: Optional[Sequence[str]] = None, preprocessing: Any = None,
                  costs: Optional[Sequence[float]] = None, memo: Optional[MemoSettings] = None,
                  output: Optional[str] = None, name: str = "cascade", n: int = 2000,
                  cost_repeats: int = 200, int8: Optional[Dict[str, Any]] = None) -> BuildReport:
    """Build a cascade bundle from ONNX classifiers (first = cheapest stage, run on every input).

    ``calib``/``test`` are ``(x, y)``: x model-ready float32 or raw uint8 images (then ``preprocessing``,
    or the models' ``edgeconf.preprocessing`` metadata, converts them). ``costs`` (one per model, any unit)
    default to each model's measured per-image ONNX Runtime time in ms (1 thread, batch 1).
    ``int8`` (keyword arguments of :func:`~edgeconf.export.quantize.quantize_int8`, ``{}`` for its defaults):
    every stage is quantized on the calibration data first, so temperatures, thresholds and costs are
    those of the INT8 stages the bundle holds.
    """
    with tempfile.TemporaryDirectory(prefix="edgeconf-int8-stages-") as qtmp:
        return _build_cascade(models, calib, test, out, policy, score, combine, labels, preprocessing, costs, memo,
                              output, name, n, cost_repeats, int8, qtmp)


def _build_cascade(models: Sequence[str], calib: Split, test: Optional[Split], out: str, policy: str, score: str,
                   combine: str, labels: Optional[Sequence[str]], preprocessing: Any, costs: Optional[Sequence[float]],
                   memo: Optional[MemoSettings], output: Optional[str], name: str, n: int, cost_repeats: int,
                   int8: Optional[Dict[str, Any]], qtmp: str) -> BuildReport:
    if len(models) < 2:
        raise ConfigError("a cascade needs at least 2 models, got %d" % len(models))
    xc, yc = _check_split(calib, "calibration data")
    sources = _sources(models, output)
    pre = _as_preprocessing(preprocessing)
    if pre is None:
        pre = next((_as_preprocessing(s.meta["preprocessing"]) for s in sources if s.meta.get("preprocessing")), None)
    notes: List[str] = []
    sess0 = _session(sources[0].path)
    spec0 = input_spec(sess0)
    if pre is None:
        pre = infer_preprocessing(spec0.shape)
        if pre is None:
            raise ConfigError("no preprocessing given and none can be guessed from the input shape %s; pass "
                              "preprocessing=Preprocessing(...)" % (spec0.shape,))
        notes.append("preprocessing guessed from the input shape (scale 1/255, no mean/std): %s" % pre.to_json())
    xc = model_ready(xc, spec0, pre, "calibration data")
    int8_reports: Optional[List[Dict[str, Any]]] = None
    if int8 is not None:
        sources, int8_reports = _quantize_stages(sources, xc, yc, test, spec0, pre, int8, qtmp)
        notes.append("stages quantized to INT8 (QDQ); temperatures, thresholds and costs are the INT8 stages'")
    calib_logits = []
    for s in sources:
        sess_spec = input_spec(_session(s.path))
        model_ready(xc[:1], sess_spec, None, "calibration data for %s" % os.path.basename(s.path))
        calib_logits.append(run_outputs(s.path, xc, [s.logits], input_name=sess_spec.name)[s.logits])
    classes = calib_logits[0].shape[1]
    for s, z in zip(sources, calib_logits):
        if z.ndim != 2 or z.shape[1] != classes:
            raise ConfigError("%s outputs %s logits but the first model has %d classes; all stages must share the "
                              "classes" % (s.path, z.shape, classes))
    check_logits_labels(calib_logits[0], yc, "calibration data")
    names = _labels_for(labels, sources, classes)
    if costs is None:
        cost_info = [measure_cost(s.path, xc[:64], repeats=cost_repeats) for s in sources]
    else:
        if len(costs) != len(sources):
            raise ConfigError("costs has %d entries but there are %d models" % (len(costs), len(sources)))
        cost_info = [{"value": float(c), "how": "given"} for c in costs]
    test_logits, xt, yt = None, None, None
    if test is not None:
        xt, yt = _check_split(test, "test data")
        xt = model_ready(xt, spec0, pre, "test data")
        test_logits = [run_outputs(s.path, xt, [s.logits])[s.logits] for s in sources]
        check_logits_labels(test_logits[0], yt, "test data", min_samples=1, min_classes=1)
    report = assemble_bundle(sources, [IMAGE] * len(sources), calib_logits, yc, cost_info, out, policy, score,
                             combine, names, pre, memo, name, test_logits, yt, n=n,
                             extra_provenance={"precision": "int8-qdq"} if int8 is not None else None)
    report.notes.extend(notes)
    report.int8 = int8_reports
    if xt is not None and yt is not None:
        report.runtime_test = runtime_check(out, xt, yt, report.test)
    return report


__all__ = ["build_cascade", "BuildReport", "StageReport", "assemble_bundle", "runtime_check", "infer_preprocessing"]
