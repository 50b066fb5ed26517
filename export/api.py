"""The exporter's Python API: what ``edgeconf export``, ``pair``, ``cascade`` and ``retune`` do, as functions.

The command-line verbs call these functions, so a script and the CLI produce the same artifacts::

    from edgeconf.export import export_model, build_cascade

    export_model(my_torch_model, "tiny.onnx", data="calib.npz", preprocessing={"size": [40, 40], "channels": 3})
    report = build_cascade(["tiny.onnx", "big.onnx"], "calib.npz", calib_fraction=0.5, out="my_bundle")
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from edgeconf.atomic import write_bytes
from edgeconf.errors import ConfigError, ModelLoadError
from edgeconf.export.calibration import CalibrationReport, check_logits_labels, fit_temperature
from edgeconf.export.data import Data, _session, as_data, input_spec, measure_cost, model_ready, run_outputs, split_data
from edgeconf.export.head import (OUTPUT_KINDS, add_confidence_head, as_logits, check_head_values, ends_in_softmax,
                                  load_model, looks_like_probs, read_head_metadata, source_output)
from edgeconf.export.preprocessing import NONE, parse_preprocessing, resolve_preprocessing
from edgeconf.preprocess import Preprocessing

#: accuracy at or below this multiple of chance (1 / classes) on labelled calibration data draws a warning
NEAR_CHANCE = 2.0


def _fmt_value(v: Optional[float]) -> Optional[float]:
    """A float32-stored value as the shortest decimal that round-trips (0.6, not 0.6000000238418579)."""
    return None if v is None else float(str(np.float32(v)))


# ----------------------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    """What :func:`export_model` wrote and what it found on the calibration data."""

    path: str
    logits: str
    output_kind: str
    score: str
    threshold: float
    temperature: float
    preprocessing: Optional[Preprocessing]
    preprocessing_source: str  # given, metadata, inferred or none
    labels: Optional[List[str]] = None
    classes: Optional[int] = None
    calibration: Optional[CalibrationReport] = None
    accuracy: Optional[float] = None
    samples: int = 0
    torch_export: Optional[Dict[str, Any]] = None
    warnings: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {"out": self.path, "logits": self.logits, "output_kind": self.output_kind, "score": self.score,
                "threshold": self.threshold, "temperature": self.temperature,
                "preprocessing": self.preprocessing.to_json() if self.preprocessing else None,
                "preprocessing_source": self.preprocessing_source, "labels": self.labels, "classes": self.classes,
                "calibration": self.calibration.to_json() if self.calibration else None,
                "accuracy": self.accuracy, "samples": self.samples, "torch_export": self.torch_export,
                "warnings": list(self.warnings), "notes": list(self.notes)}


def _is_torch_module(model: Any) -> bool:
    mod = type(model).__module__
    return mod.startswith("torch") or any(c.__module__.startswith("torch.nn") for c in type(model).__mro__)


def _torch_source(model: Any, folder: str, data: Optional[Data], pre: Any, input_shape: Optional[Sequence[int]],
                  weights: Optional[str], opset: int) -> Tuple[str, Dict[str, Any], List[str]]:
    """Export a torch model (an nn.Module or 'module:function') to ONNX; the input shape from what is known."""
    from edgeconf.export.torch_export import export_torch, load_factory, probe_input_shape
    from edgeconf.lazy import require

    torch = require("torch", "exporting PyTorch models")
    notes: List[str] = []
    if isinstance(model, str):
        model = load_factory(model, weights)
    elif weights:
        raise ConfigError("weights= applies to a 'module:function' model; load them into your nn.Module yourself")
    if input_shape is not None:
        shape = tuple(int(d) for d in input_shape)
    elif isinstance(pre, Preprocessing):
        shape = pre.input_shape
    elif data is not None and not data.raw:
        shape = tuple(np.asarray(data.x).shape[1:])
    elif data is not None and data.image_shape() is not None:
        img = data.image_shape()
        h, w = img[0], img[1]
        c = img[2] if len(img) == 3 else 1
        shape, note = probe_input_shape(model, [(c, h, w), (h, w, c)], "input_shape")
        notes.append(note)
    else:
        raise ConfigError("cannot tell the model's input shape: give input_shape (CLI --input-shape C,H,W), a "
                          "preprocessing, or calibration data whose images all have one size")
    gen = torch.Generator().manual_seed(0)
    example = torch.randn((2,) + tuple(shape), generator=gen)
    path = os.path.join(folder, "torch.onnx")
    rep = export_torch(model, example, path, opset=opset)
    info = rep.to_json()
    info["path"] = None
    return path, info, notes


def _check_label_count(labels: Optional[Sequence[str]], classes: Optional[int], logits: str) -> None:
    """One class name per class, checked before the names meet the data's classes (whose errors would mislead)."""
    if labels is not None and classes is not None and len(labels) != classes:
        raise ConfigError("%d labels given but the model's output %r has %d classes; give one label per class"
                          % (len(labels), logits, classes))


def _near_chance(accuracy: float, chance: float, pre: Optional[Preprocessing], labels: Optional[Sequence[str]],
                 label_origin: str, cal: Data) -> str:
    """The one-line warning for an accuracy near chance: its usual causes, the class-name order among them."""
    text = ("accuracy on the calibration labels is %.1f %%, near chance (%.1f %%): wrong preprocessing is the usual "
            "cause; check size, channels, color, layout, scale and mean/std against how the model was trained "
            "(recorded: %s)" % (100 * accuracy, 100 * chance, pre.describe() if pre else "none"))
    names = list(cal.dataset.classes or []) if cal.dataset is not None else []
    if labels is None or not names or not all(n in labels for n in names):
        return text + "; or the data's labels are not in the order of the model's outputs"
    where = "folders" if cal.dataset is not None and cal.dataset.kind == "imagefolder" else "class names"
    shown = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
    if label_origin == "data":
        order = ", sorted by name" if where == "folders" else ""
        return text + ("; or the model's outputs are not in the order of the data's %s (%s%s), which named the "
                       "classes: give the class names in the order of the model's outputs (CLI --labels, Python "
                       "labels=)" % (where, shown, order))
    return text + ("; or the class names are not in the order of the model's outputs: the data's %s (%s) are matched "
                   "by name to the class names of %s (%s), which must name the model's outputs in order"
                   % (where, shown, label_origin, ", ".join(list(labels)[:10]) + (", …" if len(labels) > 10 else "")))


def export_model(model: Any, out: str, data: Any = None, preprocessing: Any = None,
                 labels: Optional[Sequence[str]] = None, score: str = "margin", threshold: float = 0.5,
                 temperature: Optional[float] = None, output: Optional[str] = None, output_kind: str = "auto",
                 input_shape: Optional[Sequence[int]] = None, weights: Optional[str] = None, opset: int = 17,
                 max_pixels: Optional[int] = None) -> ExportResult:
    """Export a classifier to a confidence-aware ONNX file ``out`` (written atomically).

    ``model``: a ``torch.nn.Module``, ``"module:function"`` / ``"file.py:function"`` (with ``weights``), an
    ``.onnx`` path or an ``onnx.ModelProto``. ``data``: calibration data (any format of
    :func:`edgeconf.datasets.open_dataset`, a Dataset or ``(x, y)``): with labels it fits the temperature and
    reports the model's accuracy (a warning when it is near chance: wrong preprocessing is the usual cause, class
    names in another order than the model's outputs another).
    ``preprocessing``: a Preprocessing, its dict or JSON, ``"none"`` (model-ready arrays), or None: the model's
    metadata, else inferred from its input shape (and noted). Outputs that are already probabilities (a
    trailing Softmax, or rows summing to 1 on the data) get a head on their logarithm; ``output_kind``
    (``logits``/``probs``) overrides the detection.
    """
    if output_kind not in OUTPUT_KINDS:
        raise ConfigError("output_kind must be one of %s, got %r" % (", ".join(OUTPUT_KINDS), output_kind))
    check_head_values(temperature=temperature)  # > 0 and a float32, before any work
    given = parse_preprocessing(preprocessing)
    cal = as_data(data, "calibration data", max_pixels) if data is not None else None
    notes: List[str] = []
    warnings: List[str] = []
    torch_info = None
    with tempfile.TemporaryDirectory(prefix="edgeconf-export-") as tmp:
        if isinstance(model, onnx.ModelProto):
            source = os.path.join(tmp, "model.onnx")
            onnx.save(model, source)
        elif isinstance(model, (str, os.PathLike)) and (str(model).lower().endswith(".onnx") or os.path.isfile(model)):
            if weights or input_shape:
                raise ConfigError("weights and input_shape apply to a PyTorch model, not to an .onnx file")
            source = os.fspath(model)
        elif isinstance(model, str) and ":" in model or _is_torch_module(model):
            source, torch_info, more = _torch_source(model, tmp, cal, given, input_shape, weights, opset)
            notes += more
            if isinstance(model, str) and not weights:
                warnings.append("no weights given: %s is exported with the weights its function builds (for a new "
                                "model, random ones); give the trained weights (CLI --weights FILE, Python weights=: "
                                "a torch.save(model.state_dict()) file or .safetensors)" % model)
        else:
            raise ConfigError("model %r is neither an .onnx file, an onnx.ModelProto, a torch.nn.Module nor "
                              "'module:function'" % (model,))
        proto, _ = load_model(source)
        logits, classes = source_output(proto, output)
        meta = read_head_metadata(proto)
        spec = input_spec(_session(source))
        pre, pre_source, more = resolve_preprocessing(
            given, meta.get("preprocessing") if given is None else None, spec.shape,
            cal.image_shape() if cal is not None else None,
            os.path.basename(source) if torch_info is None else "the exported model")
        notes += more
        label_origin = "--labels" if labels is not None else "the model's metadata"
        labels = [str(v) for v in labels] if labels is not None else meta.get("labels")
        _check_label_count(labels, classes, logits)
        kind = output_kind
        if kind == "auto" and (ends_in_softmax(proto, logits) or meta.get("output_kind") == "probs"):
            kind = "probs"
            notes.append("the output %r comes from a Softmax: the head is built on its logarithm" % logits)
        cal_report, accuracy, samples = None, None, 0
        if cal is not None:
            x = model_ready(cal.x, spec, pre, cal.what)
            raw = run_outputs(source, x, [logits], input_name=spec.name)[logits]
            if kind == "auto" and looks_like_probs(raw):
                kind = "probs"
                notes.append("the output %r holds probabilities (rows sum to 1 on the calibration data): the head is "
                             "built on their logarithm (output_kind='logits' to override)" % logits)
            z = as_logits(raw, "probs" if kind == "probs" else "logits")
            _check_label_count(labels, int(z.shape[1]), logits)
            samples = int(z.shape[0])
            if labels is None and cal.dataset is not None and cal.dataset.classes \
                    and len(cal.dataset.classes) == z.shape[1]:
                labels = list(cal.dataset.classes)
                label_origin = "data"
            y = cal.labels(labels, z.shape[1], need=False)
            if y is not None:
                check_logits_labels(z, y, cal.what)
                accuracy = float((z.argmax(axis=1) == y).mean())
                chance = 1.0 / z.shape[1]
                if accuracy <= NEAR_CHANCE * chance:
                    warnings.append(_near_chance(accuracy, chance, pre, labels, label_origin, cal))
                if temperature is None:
                    cal_report = fit_temperature(z, y)
                    temperature = cal_report.temperature
        if kind == "auto":
            kind = "logits"
        headed = add_confidence_head(proto, score=score, threshold=threshold,
                                     temperature=1.0 if temperature is None else temperature, labels=labels,
                                     preprocessing=pre if pre is not None else NONE, output=logits, output_kind=kind)
        folder = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(folder):
            os.makedirs(folder, exist_ok=True)
        write_bytes(out, headed.SerializeToString())
    head_meta = read_head_metadata(headed)
    return ExportResult(out, head_meta["logits"], kind, score, float(threshold),
                        float(1.0 if temperature is None else temperature), pre, pre_source,
                        head_meta.get("labels"), head_meta.get("classes"), cal_report, accuracy, samples, torch_info,
                        warnings, notes)


def calibrate(model: str, data: Any, preprocessing: Any = None, output: Optional[str] = None,
              output_kind: str = "auto", max_pixels: Optional[int] = None) -> CalibrationReport:
    """Fit a temperature for an ONNX classifier on labelled ``data`` (minimum NLL); the model is not changed."""
    proto, _ = load_model(model)
    logits, _classes = source_output(proto, output)
    meta = read_head_metadata(proto)
    spec = input_spec(_session(model))
    cal = as_data(data, "calibration data", max_pixels, need_labels=True)
    pre, _, _ = resolve_preprocessing(parse_preprocessing(preprocessing),
                                      meta.get("preprocessing") if preprocessing is None else None, spec.shape,
                                      cal.image_shape(), os.path.basename(model))
    raw = run_outputs(model, model_ready(cal.x, spec, pre, cal.what), [logits], input_name=spec.name)[logits]
    kind = output_kind
    if kind == "auto":
        kind = "probs" if ends_in_softmax(proto, logits) or meta.get("output_kind") == "probs" \
            or looks_like_probs(raw) else "logits"
    z = as_logits(raw, kind)
    return fit_temperature(z, cal.labels(meta.get("labels"), z.shape[1]))


# ------------------------------------------------------------------------------------------ pair
@dataclass
class PairingResult:
    """Every model alone and every ordered pair as a two-stage cascade; the first buildable pair that meets the
    policy is recommended, none when no pair meets it (``policy_met`` False, ``policy_shortfall`` says how near)."""

    names: List[str]
    models: Dict[str, Dict[str, Any]]
    costs: Dict[str, Dict[str, Any]]
    complementarity: Any
    pairs: List[Any]
    policy: str
    calibration_samples: int
    test_samples: int
    cost_unit: str
    notes: List[str] = field(default_factory=list)

    @property
    def recommended(self) -> Any:
        """The best pair ``edgeconf cascade`` can build that meets the policy, or None when none does."""
        from edgeconf.export.pairing import recommended_pair

        return recommended_pair(self.pairs)

    @property
    def policy_met(self) -> bool:
        """Whether a pair that can be built meets the policy on the calibration data."""
        return any(p.buildable and p.feasible for p in self.pairs)

    @property
    def policy_shortfall(self) -> Optional[str]:
        """When pairs can be built but none meets the policy: that, and how near the nearest comes; else None."""
        from edgeconf.export.pairing import policy_shortfall

        return policy_shortfall(self.pairs, self.policy, "ms" if self.cost_unit == "ms" else "")

    def to_json(self) -> Dict[str, Any]:
        best = self.recommended
        return {"models": self.models, "costs": self.costs, "complementarity": self.complementarity.to_json(),
                "pairs": [p.to_json() for p in self.pairs], "recommended": best.to_json() if best else None,
                "policy_met": self.policy_met, "policy_shortfall": self.policy_shortfall,
                "calibration_samples": self.calibration_samples, "test_samples": self.test_samples,
                "policy": self.policy, "cost_unit": self.cost_unit, "notes": list(self.notes)}


def model_names(paths: Sequence[str]) -> List[str]:
    """Short unique names for model files (the file name without .onnx; _2, _3 for repeats)."""
    names: List[str] = []
    for p in paths:
        base = os.path.splitext(os.path.basename(str(p)))[0]
        name, i = base, 2
        while name in names:
            name, i = "%s_%d" % (base, i), i + 1
        names.append(name)
    return names


def _pair_refusals(names: Sequence[str], sources: Sequence[Any], shapes: Sequence[Any], given: Any,
                   image_shape: Any) -> Dict[Tuple[str, str], str]:
    """Why each ordered pair that ``edgeconf cascade FIRST SECOND`` would refuse cannot be built."""
    from edgeconf.export.build import stage_refusal

    out = {}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            why = None if i == j else stage_refusal([sources[i], sources[j]], [shapes[i], shapes[j]], given,
                                                    image_shape)
            if why is not None:
                out[(a, b)] = why
    return out


def pair_models(models: Sequence[str], data: Any, policy: str = "max-accuracy", score: str = "margin",
                combine: str = "last", calib_fraction: float = 0.5, costs: Optional[Sequence[float]] = None,
                preprocessing: Any = None, output: Optional[str] = None, repeats: int = 200,
                output_kind: str = "auto", max_pixels: Optional[int] = None, progress: Any = None) -> PairingResult:
    """Rank ordered pairs of ONNX classifiers as two-stage cascades on labelled ``data``.

    ``data`` is split (seed 0): temperatures and thresholds (``policy``) come from the calibration part, the
    ranking too (accuracy, then the cheaper pair among ties); accuracy, cost and escalation are also reported
    on the test part. Each model prepares images its own way (``preprocessing`` for all, else each model's
    metadata, else inferred). Costs default to measured ms per image (ONNX Runtime, 1 thread, batch 1).
    A pair :func:`~edgeconf.export.build.build_cascade` would refuse (the two models prepare images differently,
    or name their classes differently) is reported with ``buildable`` False and ``why``, and never recommended;
    nor is a pair that does not meet ``policy`` (``feasible`` False, shown at its max-accuracy threshold).
    """
    from edgeconf.export.build import _Source
    from edgeconf.export.pairing import complementarity_matrix, rank_pairs
    from edgeconf.export.thresholds import parse_policy

    if isinstance(models, (str, os.PathLike)):  # one path, not a list of one-letter names
        models = [models]
    if len(models) < 2:
        raise ConfigError("pairing needs at least 2 models (a list of .onnx paths), got %d" % len(models))
    parse_policy(policy)
    given = parse_preprocessing(preprocessing)
    cal, tst = split_data(as_data(data, "pairing data", max_pixels, need_labels=True), calib_fraction)
    names = model_names(models)
    cal_logits, test_logits, ready, notes = [], [], [], []
    sources, shapes = [], []
    model_labels = None
    for path in models:
        proto, _ = load_model(path)
        logits, _classes = source_output(proto, output)
        meta = read_head_metadata(proto)
        model_labels = model_labels or meta.get("labels")
        spec = input_spec(_session(path))
        sources.append(_Source(str(path), logits, _classes, meta, given=str(path)))
        shapes.append(spec.shape)
        pre = None
        if cal.raw:  # model-ready arrays need no preprocessing
            pre, _, more = resolve_preprocessing(given, meta.get("preprocessing") if given is None else None,
                                                 spec.shape, cal.image_shape(), os.path.basename(path))
            notes += ["%s: %s" % (os.path.basename(path), n) for n in more]
        kind = output_kind
        if kind == "auto" and (ends_in_softmax(proto, logits) or meta.get("output_kind") == "probs"):
            kind = "probs"
        outs = []
        for part in (cal, tst):
            x = model_ready(part.x, spec, pre, "%s for %s" % (part.what, os.path.basename(path)))
            raw = run_outputs(path, x, [logits], input_name=spec.name)[logits]
            if kind == "auto":
                kind = "probs" if looks_like_probs(raw) else "logits"
            outs.append(as_logits(raw, kind))
            if part is cal:
                ready.append(x)
        cal_logits.append(outs[0])
        test_logits.append(outs[1])
        if progress is not None:
            progress(1)
    classes = cal_logits[0].shape[1]
    for n, z in zip(names, cal_logits):
        if z.shape[1] != classes:
            raise ConfigError("%s answers over %d classes but %s over %d; paired models must share the classes"
                              % (n, z.shape[1], names[0], classes))
    yc, yt = cal.labels(model_labels, classes), tst.labels(model_labels, classes)
    if costs is None:
        cost_info = [measure_cost(p, xr[:64], repeats=repeats) for p, xr in zip(models, ready)]
        unit = "ms"
    else:
        if len(costs) != len(models):
            raise ConfigError("costs has %d values but %d models were given" % (len(costs), len(models)))
        cost_info = [{"value": float(c), "how": "given"} for c in costs]
        unit = "cost"
    cost_values = {n: float(c.get("ms", c.get("value", 0.0))) for n, c in zip(names, cost_info)}
    temps = {n: fit_temperature(z, yc).temperature for n, z in zip(names, cal_logits)}
    comp = complementarity_matrix({n: z.argmax(1) for n, z in zip(names, test_logits)}, yt)
    refusals = _pair_refusals(names, sources, shapes, given, cal.image_shape())
    pairs = rank_pairs(dict(zip(names, cal_logits)), yc, cost_values, policy, score, temps, combine,
                       test=(dict(zip(names, test_logits)), yt), refusals=refusals)
    singles = {n: {"calib_accuracy": float((zc.argmax(1) == yc).mean()),
                   "test_accuracy": float((zt.argmax(1) == yt).mean()), "cost": cost_values[n],
                   "temperature": temps[n]}
               for n, zc, zt in zip(names, cal_logits, test_logits)}
    return PairingResult(names, singles, dict(zip(names, cost_info)), comp, pairs, policy, int(yc.size),
                         int(yt.size), unit, notes)


# ----------------------------------------------------------------------------------------- retune
@dataclass
class RetuneResult:
    """The values a retuned model (and its bundle stage) now stores, as given."""

    model: str
    threshold: float
    temperature: float
    bundle: Optional[str] = None
    stage: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {"model": self.model, "threshold": self.threshold, "temperature": self.temperature,
                "bundle": self.bundle, "stage": self.stage, "notes": list(self.notes)}


def _bundle_of(model_path: str) -> Optional[Tuple[str, str]]:
    """(bundle folder, path relative to it) when ``model_path`` is a file a bundle lists, else None."""
    from edgeconf.bundle import MANIFEST, read_manifest

    folder = os.path.dirname(os.path.abspath(model_path))
    while True:
        if os.path.isfile(os.path.join(folder, MANIFEST)):
            rel = os.path.relpath(os.path.abspath(model_path), folder).replace(os.sep, "/")
            try:
                files = read_manifest(folder, verify=False).files
            except Exception:
                return None
            return (folder, rel) if rel in files else None
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _stage_index(manifest: Any, stage: Any, folder: str) -> int:
    n = len(manifest.stages)
    names = [s.name for s in manifest.stages]
    if stage is None:
        if n == 1:
            return 0
        raise ConfigError("bundle %s has %d stages (%s); say which with stage=K (CLI --stage K, 1..%d) or a stage name"
                          % (folder, n, ", ".join(names), n))
    if isinstance(stage, str) and stage in names:
        return names.index(stage)
    try:
        k = int(stage)
    except (TypeError, ValueError):
        raise ConfigError("bundle %s has no stage %r; its stages are 1..%d (%s)" % (folder, stage, n, ", ".join(names))) \
            from None
    if not 1 <= k <= n:
        raise ConfigError("bundle %s has no stage %d; its stages are 1..%d (%s)" % (folder, k, n, ", ".join(names)))
    return k - 1


def _retune_bundle(folder: str, k: Any, threshold: Optional[float], temperature: Optional[float]) -> RetuneResult:
    """Change stage ``k``'s threshold/temperature in its ONNX file and in the manifest, hashes included.

    ``k``: the stage index, or a callable that picks it from the manifest. The bundle is locked while it is read
    and changed (:func:`edgeconf.atomic.folder_lock`: two retunes take turns, neither change is lost), and the
    stage file, the fused graph (when the bundle has one) and the manifest are replaced together
    (:class:`edgeconf.atomic.FileSet`): a run that fails leaves the bundle as it was."""
    from edgeconf.atomic import FileSet, folder_lock
    from edgeconf.bundle import MANIFEST, manifest_text, read_manifest
    from edgeconf.export.head import set_head_values, validate_head

    with folder_lock(folder, "bundle %s" % folder), FileSet() as files:
        manifest = read_manifest(folder, verify=True)
        if callable(k):
            k = k(manifest)
        spec = manifest.stages[k]
        path = os.path.join(folder, spec.model)
        proto, _ = load_model(path)
        set_head_values(proto, threshold, temperature)
        validate_head(proto)
        if threshold is not None:
            spec.threshold = float(threshold)
        if temperature is not None:
            spec.temperature = float(temperature)
        notes = []
        if k == len(manifest.stages) - 1 and threshold is not None:
            notes.append("stage %s is the last stage: it always answers, its threshold only matters if stages are "
                         "added" % spec.name)
        if spec.engine:
            notes.append("stage %s has a TensorRT engine (%s) built with the old values; edgeconf reads the threshold "
                         "from the manifest, but rebuild the engine (edgeconf engine) to refresh its own outputs"
                         % (spec.name, spec.engine))
        sha, size = files.write(path, proto.SerializeToString())
        manifest.files[spec.model] = dict(manifest.files[spec.model], sha256=sha, bytes=size)
        if manifest.fused is not None:  # the fused graph holds the same values as initializers: change them too
            from edgeconf.export.fuse import retune_fused

            retune_fused(folder, manifest, k, threshold, temperature, files)
            notes.append("the bundle's fused graph (%s) was updated with the stage" % manifest.fused.model)
        files.write(os.path.join(folder, MANIFEST), manifest_text(manifest))  # last: it lists the others
        files.commit()
        read_manifest(folder, verify=True)  # raises (and the old files come back) if anything does not match
    return RetuneResult(path, float(spec.threshold), float(spec.temperature), folder, spec.name, notes)


def _copy_files(src: str, dst: str) -> None:
    """The files and folders of bundle ``src`` into the existing folder ``dst`` (not ``src``'s own permissions)."""
    for name in os.listdir(src):
        full = os.path.join(src, name)
        if os.path.isdir(full):
            shutil.copytree(full, os.path.join(dst, name))
        else:
            shutil.copy2(full, os.path.join(dst, name))


def retune(target: str, threshold: Optional[float] = None, temperature: Optional[float] = None,
           stage: Any = None, out: Optional[str] = None) -> RetuneResult:
    """Change a stored exit threshold and/or temperature, without re-exporting.

    ``target``: a bundle folder (``stage`` = 1-based index or name; the stage's ONNX initializers and
    metadata, the manifest and its sha256 change together), or an exported ``.onnx``. A model that a bundle
    lists, retuned in place, updates that bundle the same way. ``out``: write a changed copy there instead
    (a folder for a bundle, a file for a model). Values are stored and reported as given.
    """
    from edgeconf.bundle import MANIFEST, read_manifest
    from edgeconf.export.head import head_values, set_head_values, validate_head

    if threshold is None and temperature is None:
        raise ConfigError("nothing to change: give a threshold and/or a temperature")
    check_head_values(threshold, temperature)  # before any copy or lock
    if out:
        _check_out(target, out)
    if os.path.isdir(target):
        if not os.path.isfile(os.path.join(target, MANIFEST)):
            raise ConfigError("%s is a folder without %s; retune takes a bundle folder or an .onnx file"
                              % (target, MANIFEST))
        _stage_index(read_manifest(target, verify=False), stage, target)  # a bad stage is refused before any copy (the locked read verifies)
        pick = lambda m: _stage_index(m, stage, target)  # noqa: E731 - on the manifest read under the lock
        if not out:
            return _retune_bundle(target, pick, threshold, temperature)
        from edgeconf.atomic import folder_beside

        if os.path.lexists(out):
            raise ConfigError("%s exists; give a new folder for the retuned bundle" % out)
        with folder_beside(out) as tmp:  # a copy changed in a hidden folder, then renamed: all or nothing
            _copy_files(target, tmp)
            res = _retune_bundle(tmp, pick, threshold, temperature)
            os.rename(tmp, out)
        res.model = os.path.join(out, os.path.relpath(res.model, tmp))
        res.bundle = out
        return res
    if not os.path.isfile(target):
        raise ModelLoadError("%s does not exist; retune takes a bundle folder or an exported .onnx file" % target)
    if stage is not None:
        raise ConfigError("stage= applies to a bundle folder; %s is a model file" % target)
    owner = _bundle_of(target) if out is None else None
    if owner is not None:
        folder, rel = owner
        chosen: List[int] = []

        def only_stage(manifest: Any) -> int:
            ks = [i for i, s in enumerate(manifest.stages) if s.model == rel]
            chosen[:] = ks
            if len(ks) != 1:
                raise ConfigError("%s belongs to bundle %s but is not exactly one stage's model; retune the bundle "
                                  "(edgeconf retune %s --stage K ...) or write a copy with --out"
                                  % (target, folder, folder))
            return ks[0]

        res = _retune_bundle(folder, only_stage, threshold, temperature)
        res.notes.insert(0, "%s is stage %d of bundle %s: the bundle's manifest and hashes were updated with it"
                         % (rel, chosen[0] + 1, folder))
        return res
    proto, _ = load_model(target)
    set_head_values(proto, threshold, temperature)
    validate_head(proto)
    dest = out or target
    write_bytes(dest, proto.SerializeToString())
    meta = read_head_metadata(proto)
    t, thr = head_values(proto)
    return RetuneResult(dest, float(meta.get("threshold", _fmt_value(thr))),
                        float(meta.get("temperature", _fmt_value(t))))


def _check_out(target: str, out: str) -> None:
    """Refuse, before anything is copied, a retune ``out`` that names ``target``, a file of the bundle ``target`` is
    or lies in, or a path whose folder is missing or a file."""
    from edgeconf.atomic import refuse_overwriting_inputs, same_path
    from edgeconf.pathcheck import refuse_missing_folder

    if os.path.exists(out) and same_path(out, target):
        raise ConfigError("--out %s is %s itself; leave --out out to retune it in place" % (out, target))
    refuse_overwriting_inputs(out, "--out", [target])
    refuse_missing_folder(out, "cannot write %s" % out)


__all__ = ["export_model", "ExportResult", "calibrate", "pair_models", "PairingResult", "retune", "RetuneResult",
           "model_names"]
