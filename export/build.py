"""Cascade build: calibrated, head-augmented stage models plus thresholds chosen by a policy, as a bundle.

Temperatures and thresholds are fitted on the calibration split only; the test split (when given) is
used only to report the chosen operating point, both by simulation and by running the written bundle.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from edgeconf.bundle import MemoSettings, StageSpec, load_bundle, memo_settings, save_bundle
from edgeconf.cascade import IMAGE
from edgeconf.errors import ConfigError
from edgeconf.export.calibration import CalibrationReport, check_logits_labels, fit_temperature
from edgeconf.export.data import input_spec, measure_cost, model_ready, run_outputs, _session
from edgeconf.export.head import (add_confidence_head, as_logits, ends_in_softmax, load_model, looks_like_probs,
                                  read_head_metadata, source_output)
from edgeconf.export.thresholds import (OperatingPoint, TradeoffCurve, choose_combine, evaluate, select,
                                       tradeoff_curve)
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
    combine: str = "last"  # the combine rule written into the bundle
    #: with combine="auto": each rule's operating point on the calibration split (None: the policy was not met)
    combine_candidates: Optional[Dict[str, Optional[OperatingPoint]]] = None

    @property
    def thresholds(self) -> List[float]:
        return list(self.operating_point.thresholds)

    def to_json(self) -> dict:
        return {"bundle": self.bundle, "policy": self.policy, "calibration": self.operating_point.to_json(),
                "test": self.test.to_json() if self.test else None, "runtime_test": self.runtime_test,
                "stages": [s.to_json() for s in self.stages], "notes": list(self.notes),
                "int8": self.int8, "combine": self.combine,
                "combine_candidates": None if self.combine_candidates is None else {
                    k: (v.to_json() if v is not None else None) for k, v in self.combine_candidates.items()}}


def infer_preprocessing(shape: Sequence[Any]) -> Optional[Preprocessing]:
    """A plain preprocessing (scale 1/255, no mean/std) inferred from an image-like input shape (no batch), or None."""
    from edgeconf.export.preprocessing import infer_preprocessing as infer

    return infer(shape)[0]


def _as_preprocessing(value: Any) -> Optional[Preprocessing]:
    from edgeconf.export.preprocessing import NONE, parse_preprocessing

    value = parse_preprocessing(value)
    if value == NONE:
        raise ConfigError("a cascade prepares raw images for its stages: it needs a preprocessing, not 'none'")
    return value


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
    kind: str = "logits"  # "probs" when the output is already probabilities (the head takes their log)
    given: str = ""  # the path the user named (``path`` may be an adapted copy)


def _sources(models: Sequence[str], output: Optional[str], output_kind: str = "auto") -> List[_Source]:
    out = []
    for path in models:
        proto, _ = load_model(path)
        name, classes = source_output(proto, output)
        meta = read_head_metadata(proto)
        kind = output_kind
        if kind == "auto" and (ends_in_softmax(proto, name) or meta.get("output_kind") == "probs"):
            kind = "probs"
        out.append(_Source(str(path), name, classes, meta, kind, str(path)))
    return out


def plan_stages(sources: Sequence[_Source], given: Optional[Preprocessing], image_shape: Any,
                shapes: Sequence[Sequence[Any]]) -> Tuple[Preprocessing, List[str], List[bool]]:
    """The bundle's one preprocessing, notes, and which stages need a Transpose in front (their layout differs).

    ``shapes``: each source's model input shape without the batch axis. The bundle takes ``given``, else the first
    model's recorded preprocessing, else one inferred from the first model's input. :class:`ConfigError` for a model
    whose own recorded preprocessing differs (other than in layout) or whose input takes it in neither layout.
    """
    from edgeconf.export.preprocessing import resolve_preprocessing

    first = sources[0]
    pre, origin, notes = resolve_preprocessing(given, first.meta.get("preprocessing") if given is None else None,
                                               shapes[0], image_shape, first.path)
    assert pre is not None
    flips = []
    for src, shape in zip(sources, shapes):
        _check_recorded(src, pre, origin)
        if pre.model_input_problem(shape) is None:
            flips.append(False)
            continue
        flipped = pre.replace(layout="NHWC" if pre.layout == "NCHW" else "NCHW")
        if flipped.model_input_problem(shape) is not None:
            raise ConfigError("%s: %s" % (src.given, pre.model_input_problem(shape)))
        flips.append(True)
    return pre, list(notes), flips


def _check_recorded(src: _Source, pre: Preprocessing, origin: str) -> None:
    """Refuse a source whose recorded preprocessing differs from the bundle's ``pre`` other than in layout."""
    own_raw = src.meta.get("preprocessing")
    own = Preprocessing.from_json(own_raw) if isinstance(own_raw, dict) else None
    if own is None:
        return
    diff = [k for k in own.differences(pre) if k != "layout"]
    if diff:
        a, b = own.values(), pre.values()
        raise ConfigError("%s was exported with preprocessing %s but the cascade's is %s (%s): every stage must "
                          "prepare images the same way; re-export it or build with a matching --preprocessing"
                          % (src.given, ", ".join("%s %s" % (k, json.dumps(a[k])) for k in diff),
                             ", ".join("%s %s" % (k, json.dumps(b[k])) for k in diff), origin))


def check_stage_labels(sources: Sequence[_Source]) -> None:
    """Refuse stages whose recorded class names differ (other names, or the same in another order)."""
    named = [s for s in sources if isinstance(s.meta.get("labels"), list)]
    for s in named[1:]:
        a, b = named[0].meta["labels"], s.meta["labels"]
        if [str(v) for v in a] != [str(v) for v in b]:
            raise ConfigError("%s names its classes %s but %s names them %s: every stage must answer over the same "
                              "classes in the same order; re-export one with the other's class names (edgeconf export "
                              "--labels)" % (named[0].given, _short(a), s.given, _short(b)))


def _short(names: Sequence[Any], most: int = 6) -> str:
    shown = ", ".join(str(v) for v in names[:most])
    return "[%s%s]" % (shown, ", …" if len(names) > most else "")


def stage_refusal(sources: Sequence[_Source], shapes: Sequence[Sequence[Any]], given: Any = None,
                  image_shape: Any = None) -> Optional[str]:
    """Why :func:`build_cascade` would refuse ``sources`` as the stages of one cascade (in this order), or None.

    The same checks the build makes: a preprocessing every stage can take, and the same class names.
    """
    try:
        check_stage_labels(sources)
        plan_stages(sources, _as_preprocessing(given), image_shape, shapes)
    except ConfigError as exc:
        return str(exc)
    return None


def stage_preprocessing(sources: List[_Source], given: Optional[Preprocessing], image_shape: Any,
                        folder: str) -> Tuple[Preprocessing, List[str]]:
    """The bundle's one preprocessing, and notes; every stage must prepare images the same way.

    The bundle takes ``given``, else the first model's recorded preprocessing, else one inferred from the first
    model's input. A model whose own recorded preprocessing differs is refused; one that differs only in the
    layout (an NHWC model among NCHW ones) gets a Transpose in front (a copy in ``folder``) and is noted.
    """
    from edgeconf.export.preprocessing import with_input_layout

    shapes = [input_spec(_session(src.path)).shape for src in sources]
    pre, notes, flips = plan_stages(sources, given, image_shape, shapes)
    for i, (src, flip) in enumerate(zip(sources, flips)):
        if not flip:
            continue
        adapted = with_input_layout(load_model(src.path)[0], pre.layout)
        src.path = os.path.join(folder, "adapted%d.onnx" % i)
        onnx.save(adapted, src.path)
        notes.append("%s takes %s input: a Transpose in front of it makes it take the bundle's %s"
                     % (os.path.basename(src.given), "NHWC" if pre.layout == "NCHW" else "NCHW", pre.layout))
    return pre, notes


def write_bundle(out: str, *args: Any) -> None:
    """:func:`~edgeconf.bundle.save_bundle` into a new folder beside ``out``, then renamed into place.

    A build that fails half-way leaves no half-written bundle, and an earlier bundle at ``out`` stays whole
    until the new one is complete. A folder at ``out`` that is not a bundle is never replaced.
    """
    from edgeconf.bundle import MANIFEST
    from edgeconf.errors import OutputError

    out = os.path.abspath(os.path.expanduser(out))  # '--out=~/x' reaches us unexpanded: never make a folder named ~
    if os.path.exists(out) and not (os.path.isdir(out) and (os.path.isfile(os.path.join(out, MANIFEST))
                                                            or not os.listdir(out))):
        raise OutputError("cannot write the bundle to %s: it exists and is not a bundle folder; choose a new folder"
                          % out)
    from edgeconf.atomic import describe_os_error, folder_beside, swap_folder

    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise OutputError(describe_os_error(out, exc)) from None
    with folder_beside(out) as tmp:  # errors name the bundle the user asked for, not the hidden folder
        save_bundle(tmp, *args)
        swap_folder(tmp, out)


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
    candidates = None
    if combine == "auto":  # every rule, keep the one whose operating point the policy prefers (ties: last)
        combine, curve, op, candidates = choose_combine(list(calib_logits), calib_y, cost_values, score, temps,
                                                         policy, n=n)
    else:
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
                                         labels=labels, preprocessing=preprocessing, output=src.logits,
                                         output_kind=src.kind)
            fname = "stage%d.onnx" % (i + 1)
            onnx.save(headed, os.path.join(tmp, fname))
            files[fname] = os.path.join(tmp, fname)
            specs.append(StageSpec(name="stage%d" % (i + 1), model=fname, score=score, threshold=float(thresholds[i]),
                                   temperature=float(temps[i]), input=stage_inputs[i],
                                   logits=read_head_metadata(headed)["logits"], cost=dict(costs[i])))
        prov = {"sources": [os.path.basename(s.given or s.path) for s in sources],
                "source_sha256": [read_head_metadata(onnx.load(files["stage%d.onnx" % (i + 1)])).get("source_sha256")
                                  for i in range(k)]}
        prov.update(extra_provenance or {})
        extra = {"operating_point": {"policy": policy, "calibration": op.to_json(),
                                     "test": test_op.to_json() if test_op else None,
                                     "calibration_samples": int(calib_y.shape[0]),
                                     "test_samples": int(test_y.shape[0]) if test_y is not None else None}}
        write_bundle(out, specs, files, labels, preprocessing, combine, memo, name, prov, extra)
    stages = []
    for i, src in enumerate(sources):
        acc_c = float((np.asarray(calib_logits[i]).argmax(1) == calib_y).mean())
        acc_t = float((np.asarray(test_logits[i]).argmax(1) == test_y).mean()) if test_logits is not None else None
        stages.append(StageReport("stage%d" % (i + 1), src.given or src.path, temps[i], cal[i], dict(costs[i]), acc_c,
                                  acc_t))
    return BuildReport(out, policy, op, stages, curve, test_op, combine=combine, combine_candidates=candidates)


def _labels_for(labels: Optional[Sequence[str]], sources: Sequence[_Source], classes: int,
                data: Any = None) -> List[str]:
    """Class names: given, else the models' metadata, else the data's class names (an ImageFolder's folders), else
    the class indices as text."""
    if labels is None:
        labels = next((s.meta["labels"] for s in sources if isinstance(s.meta.get("labels"), list)), None)
    if labels is None and data is not None and data.dataset is not None:
        names = data.dataset.classes
        if names and len(names) == classes and not all(n.strip().isdigit() for n in names):
            labels = list(names)
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


def _stage_logits(src: _Source, x: np.ndarray) -> np.ndarray:
    """A source model's outputs on model-ready ``x``, as logits (the log of probabilities for a probs model)."""
    raw = run_outputs(src.path, x, [src.logits], input_name=input_spec(_session(src.path)).name)[src.logits]
    if src.kind == "auto":
        src.kind = "probs" if looks_like_probs(raw) else "logits"
    return as_logits(raw, src.kind)


def _quantize_stages(sources: Sequence[_Source], xc: np.ndarray, yc: np.ndarray,
                     test_xy: Optional[Tuple[np.ndarray, np.ndarray]], options: Dict[str, Any], tmp: str
                     ) -> Tuple[List[_Source], List[Dict[str, Any]]]:
    """Each stage's INT8 copy (in ``tmp``) and its report: float vs INT8 on the test data when given."""
    from edgeconf.export.quantize import quantize_int8

    out_sources, reports = [], []
    for i, s in enumerate(sources):
        base = os.path.splitext(os.path.basename(s.given or s.path))[0]
        dst = os.path.join(tmp, "stage%d" % (i + 1), base + ".int8.onnx")
        rep = quantize_int8(s.path, dst, (xc, yc), test=test_xy, output=s.logits, **options)
        out_sources.append(_Source(dst, s.logits, s.classes, read_head_metadata(dst), s.kind, s.given))
        reports.append(dict(rep.to_json(), stage="stage%d" % (i + 1), path=None))
    return out_sources, reports


def build_cascade(models: Sequence[str], calib: Any, test: Any = None, out: str = "bundle",
                  policy: str = "max-accuracy", score: str = "margin", combine: str = "auto",
                  labels: Optional[Sequence[str]] = None, preprocessing: Any = None,
                  costs: Optional[Sequence[float]] = None, memo: Optional[MemoSettings] = None,
                  output: Optional[str] = None, name: str = "cascade", n: int = 2000,
                  cost_repeats: int = 200, int8: Optional[Dict[str, Any]] = None,
                  calib_fraction: Optional[float] = None, output_kind: str = "auto",
                  max_pixels: Optional[int] = None) -> BuildReport:
    """Build a cascade bundle from ONNX classifiers (first = cheapest stage, run on every input).

    ``calib``/``test``: labelled data: a path or name :func:`edgeconf.datasets.open_dataset` reads (an .npz, an
    ImageFolder, IDX files, a list…), a Dataset, or ``(x, y)`` with x raw uint8 images or model-ready float32.
    Without ``test``, ``calib_fraction`` (e.g. 0.5) splits ``calib`` (seed 0) into calibration and test parts;
    with neither, all of ``calib`` calibrates and nothing is reported on held-out data.

    Every stage prepares images the same way: ``preprocessing`` (a Preprocessing, its dict or JSON), else the
    first model's ``edgeconf.preprocessing`` metadata, else one inferred from its input shape; a model whose
    recorded preprocessing differs is refused, one that differs only in layout gets a Transpose in front.
    Outputs that are already probabilities are detected (a trailing Softmax, or rows summing to 1) unless
    ``output_kind`` says ``logits`` or ``probs``. ``costs`` (one per model, any unit) default to each model's
    measured per-image ONNX Runtime time in ms (1 thread, batch 1). ``combine``: ``last``, ``best``, ``mean``, or
    ``auto`` (every rule's thresholds are searched on the calibration data and the rule whose operating point the
    policy prefers is kept; ties keep ``last``; the report lists each rule's point). ``int8`` (keyword arguments of
    :func:`~edgeconf.export.quantize.quantize_int8`, ``{}`` for its defaults): every stage is quantized on the
    calibration data first, so temperatures, thresholds and costs are those of the INT8 stages the bundle holds.
    """
    if isinstance(models, (str, os.PathLike)):  # one path, not a list of one-letter names
        models = [models]
    if len(models) < 2:
        raise ConfigError("a cascade needs at least 2 models (a list of .onnx paths, cheapest first), got %d"
                          % len(models))
    if memo is not None:
        memo = memo_settings(memo)
    from edgeconf.export.data import as_data, split_data

    cal = as_data(calib, "calibration data", max_pixels, need_labels=True)
    tst = as_data(test, "test data", max_pixels, need_labels=True) if test is not None else None
    if tst is None and calib_fraction is not None:
        cal, tst = split_data(cal, calib_fraction)
    with tempfile.TemporaryDirectory(prefix="edgeconf-cascade-") as tmp:
        sources = _sources(models, output, output_kind)
        check_stage_labels(sources)
        given = _as_preprocessing(preprocessing)
        pre, notes = stage_preprocessing(sources, given, cal.image_shape(), tmp)
        spec0 = input_spec(_session(sources[0].path))
        xc = model_ready(cal.x, spec0, pre, cal.what)
        xt = model_ready(tst.x, spec0, pre, tst.what) if tst is not None else None
        calib_logits = [_stage_logits(s, xc) for s in sources]
        classes = calib_logits[0].shape[1]
        for s, z in zip(sources, calib_logits):
            if z.ndim != 2 or z.shape[1] != classes:
                raise ConfigError("%s outputs %s logits but the first model has %d classes; all stages must share the "
                                  "classes" % (s.given, z.shape, classes))
        names = _labels_for(labels, sources, classes, cal)
        known = None if names == [str(i) for i in range(classes)] else names  # class indices are not names
        yc = cal.labels(known, classes)
        yt = tst.labels(known, classes) if tst is not None else None
        check_logits_labels(calib_logits[0], yc, cal.what)
        notes += ["%s outputs probabilities: its head is built on their logarithm" % os.path.basename(s.given)
                  for s in sources if s.kind == "probs"]
        int8_reports: Optional[List[Dict[str, Any]]] = None
        if int8 is not None:
            test_xy = (xt, yt) if xt is not None and yt is not None else None
            sources, int8_reports = _quantize_stages(sources, xc, yc, test_xy, int8, os.path.join(tmp, "int8"))
            notes.append("stages quantized to INT8 (QDQ); temperatures, thresholds and costs are the INT8 stages'")
            calib_logits = [_stage_logits(s, xc) for s in sources]
        if costs is None:
            cost_info = [measure_cost(s.path, xc[:64], repeats=cost_repeats) for s in sources]
        else:
            if len(costs) != len(sources):
                raise ConfigError("costs has %d entries but there are %d models" % (len(costs), len(sources)))
            cost_info = [{"value": float(c), "how": "given"} for c in costs]
        test_logits = None
        if xt is not None and yt is not None:
            test_logits = [_stage_logits(s, xt) for s in sources]
            check_logits_labels(test_logits[0], yt, tst.what, min_samples=1, min_classes=1)  # type: ignore[union-attr]
        report = assemble_bundle(sources, [IMAGE] * len(sources), calib_logits, yc, cost_info, out, policy, score,
                                 combine, names, pre, memo, name, test_logits, yt, n=n,
                                 extra_provenance={"precision": "int8-qdq"} if int8 is not None else None)
    report.notes.extend(notes)
    report.int8 = int8_reports
    if xt is not None and yt is not None:
        report.runtime_test = runtime_check(out, xt, yt, report.test)
    return report


__all__ = ["build_cascade", "BuildReport", "StageReport", "assemble_bundle", "runtime_check", "infer_preprocessing",
           "stage_preprocessing", "plan_stages", "check_stage_labels", "stage_refusal"]
