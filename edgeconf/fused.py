"""The fused cascade at run time: the whole bundle in one ONNX graph, one runtime call per request.

``edgeconf fuse BUNDLE`` (``edgeconf.export.fuse``) writes ``fused.onnx`` into a bundle; ``load_bundle(…,
form="fused")`` returns a :class:`FusedCascade`. It is a :class:`~edgeconf.cascade.Cascade` (same stages,
labels, memo cache, counters and fingerprint, so ``classify``, ``run``, ``demo``, ``bench`` and the GUI work
unchanged) whose ``classify``/``classify_batch`` answer through the single graph:

* the host does only what the graph cannot: decode, colour conversion and resizing to the model's size
  (none of it for images already at that size), then feeds uint8 pixels;
* the graph's stored thresholds and temperatures are overridable initializers: a threshold changed at run
  time (``set_threshold``, the GUI) is fed with the call, no rebuild;
* a setting the graph cannot carry (another score or combine rule, e.g. from the GUI) sends inputs through
  the staged stages until it is set back — answers are the same either way;
* ``run``/``run_batch`` take model-ready float arrays, which the graph does not: they use the staged stages.

Per-stage time is not separable inside one call: a result's ``stage_seconds`` holds one entry, the call's
time (its batch share), counted on the first stage in ``counters.stage_seconds``; ``stage`` and
``stages_run`` are as in the staged form.

Which form ``load_bundle(form="auto")`` picks (:func:`choose_form`): the staged form unless the bundle has an
up-to-date fused graph and the stages run on an ONNX Runtime GPU execution provider (CUDA or TensorRT), where
each stage boundary of the staged form costs a device-to-host copy and a synchronisation. On ONNX Runtime's
CPU provider the fused graph is no cheaper than the staged path (the ``--batch 1`` graph costs about what the
staged path does at batch 1, the any-batch graph more; ``benchmarks/bench_fused.py``, docs/fused.md), so
staged stays the default there; the native ``tensorrt`` backend runs one engine per stage.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeconf.cascade import (_EPOCH, COMBINE_RULES, Answers, BatchResult, Cascade, CascadeResult, Stage,
                              check_temperature, check_threshold, label_of)
from edgeconf.confidence import SCORES
from edgeconf.errors import BundleError, ConfigError, InputValidationError
from edgeconf.schema import Int, ListOf, Optional_, Path, Str, Struct, entry, to_json

FUSED_FILE = "fused.onnx"
FUSED_KEY = "fused"  # the manifest's entry describing the fused graph
FUSED_INPUT = "image"
FUSED_OUTPUTS = ("class", "confidence", "stage", "stages_run", "probs")
FUSED_SCHEMA = 1
FORMS = ("auto", "staged", "fused")
#: ``NonZero`` (the gather of the unsure subset) has data-dependent shapes: TensorRT's parser takes it from 8.5.
TENSORRT_MIN = "8.5"
#: a batch-1 graph has only ``If`` on scalar conditions (conditional layers came with TensorRT 8.0).
TENSORRT_MIN_BATCH1 = "8.0"
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_OUTPUTS = list(FUSED_OUTPUTS)


#: names of the fused graph's initializers a call may override (thresholds, temperatures, OOD thresholds)
TUNABLE_PREFIXES = ("edgeconf_fused_threshold_", "edgeconf_fused_temperature_", "edgeconf_fused_ood_threshold_",
                    "edgeconf_fused_ood_escalate_")


def threshold_name(stage: int) -> str:
    """Initializer holding stage ``stage``'s exit threshold (0-based) in a fused graph."""
    return "edgeconf_fused_threshold_%d" % stage


def temperature_name(stage: int) -> str:
    """Initializer holding stage ``stage``'s softmax temperature (0-based) in a fused graph."""
    return "edgeconf_fused_temperature_%d" % stage


def ceil_f32(value: float) -> float:
    """The smallest float32 >= ``value``: for a float32 confidence c, ``c < value`` iff ``c < ceil_f32(value)``,
    so the graph's float32 comparison escalates exactly the inputs the staged cascade's float64 one does."""
    v = np.float32(value)
    if float(v) < float(value):
        v = np.nextafter(v, np.float32(np.inf))
    return float(v)


def floor_f32(value: float) -> float:
    """The largest float32 <= ``value``: for a float32 score s, ``s > value`` iff ``s > floor_f32(value)``."""
    v = np.float32(value)
    if float(v) > float(value):
        v = np.nextafter(v, np.float32(-np.inf))
    return float(v)


def ood_threshold_name(stage: int) -> str:
    """Initializer holding stage ``stage``'s OOD threshold (0-based) in a fused graph (stages with an OOD rule)."""
    return "edgeconf_fused_ood_threshold_%d" % stage


def ood_escalate_name(stage: int) -> str:
    """Initializer holding the lower edge of stage ``stage``'s OOD doubt band in a fused graph (stages with one)."""
    return "edgeconf_fused_ood_escalate_%d" % stage


def _ood_kind(rule: Any) -> Optional[str]:
    """What a graph bakes in of an OOD rule: its score, its output and whether it has a doubt band."""
    if rule is None:
        return None
    return "%s:%s" % (rule.score, rule.output) + (":band" if getattr(rule, "escalate", None) is not None else "")


def stage_fingerprint(spec: Any, model_sha256: str) -> "FusedStage":
    """What a fused graph bakes in from one stage: the model file and the settings it cannot override."""
    return FusedStage(model_sha256, spec.score, spec.input, spec.logits, _ood_kind(getattr(spec, "ood", None)))


@dataclass
class FusedStage:
    """What a fused graph bakes in from one stage (see :func:`stage_fingerprint`)."""

    model_sha256: str = entry(Str(pattern=r"[0-9a-f]{64}", what="a sha256 (64 lower-case hex digits)"))
    score: str = entry(Str(SCORES))
    input: str = entry(Str(max_len=256))
    logits: str = entry(Str(max_len=256))
    ood: Optional[str] = entry(Optional_(Str(max_len=600)), None, write_default=False)  # "score:output" of its rule

    def to_json(self) -> Dict[str, Any]:
        return to_json(self)


@dataclass
class FusedInfo:
    """The manifest's ``fused`` entry: the graph's file and what it was built from."""

    stages: List[FusedStage] = entry(ListOf(Struct(FusedStage), 1, 64))  # what each stage was at fuse time
    model: str = entry(Path(), FUSED_FILE)
    combine: str = entry(Str(COMBINE_RULES), "last")
    opset: int = entry(Int(1, 1000), 17)
    classes: int = entry(Int(0), 0)
    batch: Optional[int] = entry(Optional_(Int(1, 1)), None)  # None: any batch; 1: one input per call
    tensorrt_min: str = entry(Str(max_len=16), TENSORRT_MIN)  # oldest TensorRT whose parser takes the graph

    def to_json(self) -> Dict[str, Any]:
        return to_json(self)


def fused_info(manifest: Any) -> Optional[FusedInfo]:
    """The bundle's fused-graph entry, or None when it has none."""
    return getattr(manifest, "fused", None)


def stale_reason(manifest: Any, info: FusedInfo) -> Optional[str]:
    """Why the fused graph no longer matches the bundle's stages (None when it does)."""
    if info.model not in manifest.files:
        return "the manifest lists no sha256 for %s" % info.model
    if len(info.stages) != len(manifest.stages):
        return "it was built for %d stages, the bundle has %d" % (len(info.stages), len(manifest.stages))
    if info.combine != manifest.combine:
        return "it combines answers by %r, the bundle by %r" % (info.combine, manifest.combine)
    for k, spec in enumerate(manifest.stages):
        if spec.is_remote:
            return "stage %d is served remotely; a fused graph holds local models only" % (k + 1)
        want = stage_fingerprint(spec, manifest.files.get(spec.model, {}).get("sha256", "")).to_json()
        have = info.stages[k].to_json()
        if have != want:
            changed = [key for key in want if have.get(key) != want[key]]
            return "stage %d changed since it was fused (%s)" % (k + 1, ", ".join(changed))
    return None


def remote_stage_problem(manifest: Any) -> Optional[str]:
    """Why the bundle can have no fused graph at all (its first remote stage), or None when every stage is local.

    ``edgeconf fuse`` refuses such a bundle, so a message about it must not send the user there.
    """
    for k, spec in enumerate(manifest.stages):
        if spec.is_remote:
            return ("stage %d (%s) is served remotely (%s) and a fused graph holds local models only, so this bundle "
                    "has no fused form" % (k + 1, spec.name, spec.backend))
    return None


def choose_form(requested: str, manifest: Any, backend: str, providers: Optional[Sequence[Any]]) -> Tuple[str, str]:
    """(form, why) for ``load_bundle(form=requested)``; raises for a fused form that cannot be had."""
    if requested not in FORMS:
        raise ConfigError("unknown form %r; choose one of %s" % (requested, ", ".join(FORMS)))
    if requested == "staged":
        return "staged", "asked for"
    info = fused_info(manifest)
    problem = remote_stage_problem(manifest)
    if problem:
        if requested == "fused":
            raise BundleError("cannot use the fused form: %s; run it staged (--form staged, or auto)" % problem)
    elif info is None:
        problem = "the bundle has no fused graph (write one with: edgeconf fuse BUNDLE)"
    else:
        stale = stale_reason(manifest, info)
        if stale:
            problem = "its fused graph is out of date: %s; rebuild it with: edgeconf fuse BUNDLE" % stale
        elif backend not in ("onnxruntime", "ort-tensorrt"):
            problem = ("the %s backend runs one engine per stage; the fused graph runs on ONNX Runtime "
                       "(--backend onnxruntime or ort-tensorrt)" % backend)
    if requested == "fused":
        if problem:
            raise BundleError("cannot use the fused form: %s" % problem)
        return "fused", "asked for"
    if problem:
        return "staged", problem
    names = [p if isinstance(p, str) else p[0] for p in (providers or ["cpu"])]
    gpu = [n for n in names if n in _GPU_PROVIDERS or str(n).lower() in ("cuda", "tensorrt", "trt")]
    if backend == "ort-tensorrt" or gpu:
        return "fused", "stages run on a GPU execution provider: one call per answer saves a host round trip per stage"
    return "staged", ("ONNX Runtime CPU: the fused graph is no cheaper than the staged path there "
                      "(benchmarks/bench_fused.py; use --form fused to ask for it)")


# -- TensorRT's parser, checked statically ----------------------------------------------------------------
#: Oldest TensorRT whose ONNX parser imports each op the fused graph (or a typical CNN stage) uses, from the
#: onnx-tensorrt operator support tables. Ops not listed are reported as unknown, never assumed to work.
TENSORRT_OPS = {op: "8.0" for op in (
    "Add", "And", "ArgMax", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape",
    "Conv", "ConvTranspose", "Div", "Dropout", "Equal", "Erf", "Exp", "Flatten", "Gather", "Gemm",
    "GlobalAveragePool", "GlobalMaxPool", "Greater", "HardSigmoid", "HardSwish", "Identity", "If", "LeakyRelu",
    "Less", "Log", "LogSoftmax", "Or", "ReduceLogSumExp", "Xor", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Not", "Pad", "Pow", "PRelu",
    "Range", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu", "Reshape", "Resize", "Shape",
    "Sigmoid", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "TopK", "Transpose",
    "Unsqueeze", "Where", "QuantizeLinear", "DequantizeLinear")}
TENSORRT_OPS.update({"ScatterND": "8.2", "NonZero": "8.5"})


def _version_key(v: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in v.split(".") if p.isdigit())


#: the manifest's ``tensorrt_min`` when no TensorRT version's parser takes the fused graph
NO_TENSORRT = "none"


def tensorrt_verdict(trt: Dict[str, Any]) -> Tuple[str, Optional[str]]:
    """(the manifest's ``tensorrt_min``, why no version parses the graph or None) for a :func:`tensorrt_check`."""
    why = []
    if trt["unknown_ops"]:
        why.append("ops not in its operator tables: %s" % ", ".join(trt["unknown_ops"]))
    if trt["problems"]:
        why.append("; ".join(trt["problems"][:3]) + ("; …" if len(trt["problems"]) > 3 else ""))
    if not why:
        return trt["min_version"], None
    return NO_TENSORRT, "no TensorRT version is known to parse this graph (%s)" % "; ".join(why)


def fused_tensorrt_reason(path: str) -> Optional[str]:
    """Why no TensorRT parser takes the fused graph at ``path`` (None when one does or it cannot be read)."""
    import onnx

    try:
        model = onnx.load(path)
    except Exception:  # a missing or unreadable file: inspect reports the bundle without the op list
        return None
    return tensorrt_verdict(tensorrt_check(model))[1]


def tensorrt_check(model: Any) -> Dict[str, Any]:
    """What TensorRT's ONNX parser needs for this graph, checked without TensorRT (it cannot run here).

    Returns ``{"min_version", "unknown_ops", "problems"}``: the oldest TensorRT whose parser knows every op,
    ops missing from :data:`TENSORRT_OPS`, and conditionals TensorRT would refuse (a condition that is not a
    0-d bool, branches whose outputs differ in number or element type).
    """
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: Dict[str, Any] = {}

    def collect(g: onnx.GraphProto) -> None:
        for vi in list(g.value_info) + list(g.input) + list(g.output):
            t = vi.type.tensor_type
            shapes[vi.name] = (t.elem_type, [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
                               if t.HasField("shape") else None)
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    collect(a.g)

    collect(inferred.graph)
    need, unknown, problems = "8.0", set(), []

    def walk(g: onnx.GraphProto) -> None:
        nonlocal need
        for n in g.node:
            v = TENSORRT_OPS.get(n.op_type)
            if v is None:
                unknown.add(n.op_type)
            elif _version_key(v) > _version_key(need):
                need = v
            if n.op_type == "If":
                cond = shapes.get(n.input[0])
                if cond is None or cond[0] != TensorProto.BOOL or cond[1] != []:
                    problems.append("If %s: condition %s is not a 0-d bool" % (n.name, n.input[0]))
                br = {a.name: a.g for a in n.attribute}
                t_out, e_out = br["then_branch"].output, br["else_branch"].output
                if len(t_out) != len(e_out) or any(
                        a.type.tensor_type.elem_type != b.type.tensor_type.elem_type for a, b in zip(t_out, e_out)):
                    problems.append("If %s: branches differ in their outputs" % n.name)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    walk(model.graph)
    return {"min_version": need, "unknown_ops": sorted(unknown), "problems": problems}


_REBUILD = "rebuild it with: edgeconf fuse BUNDLE"


def _graph_meta(model: Any) -> Optional[Dict[str, Any]]:
    """The graph's ``edgeconf.fused`` metadata, or None where it has none or it is not a JSON object."""
    text = next((p.value for p in model.metadata_props if p.key == "edgeconf.fused"), None)
    try:
        meta = json.loads(text) if text is not None else None
    except (ValueError, RecursionError):  # (nested too deep for json: as invalid)
        return None
    return meta if isinstance(meta, dict) else None


def _tunable_problem(model: Any, meta: Optional[Dict[str, Any]]) -> Optional[str]:
    """Why a threshold or temperature initializer cannot be used: a value the manifest would refuse, or one that
    differs from what the graph's metadata (compared with the manifest at load) says."""
    from onnx import numpy_helper

    stages = meta.get("stages") if meta else None
    for init in model.graph.initializer:
        name = init.name
        for prefix, key, check, stored in (("edgeconf_fused_threshold_", "threshold", check_threshold, ceil_f32),
                                           ("edgeconf_fused_temperature_", "temperature", check_temperature, float)):
            if not name.startswith(prefix):
                continue
            value = numpy_helper.to_array(init)
            if value.size != 1:
                return "initializer %s holds %d values, not one %s" % (name, value.size, key)
            v = float(value.reshape(-1)[0])
            try:
                check(v, "initializer %s" % name)
            except ConfigError as exc:
                return str(exc)
            k = name[len(prefix):]
            said = stages[int(k)].get(key) if isinstance(stages, list) and k.isdigit() and int(k) < len(stages) \
                and isinstance(stages[int(k)], dict) else None
            if isinstance(said, (int, float)) and np.float32(v) != np.float32(stored(float(said))):
                return ("initializer %s holds %r but the graph's edgeconf.fused metadata says %r (changed after "
                        "`edgeconf fuse`)" % (name, v, said))
    return None


def fused_graph_problem(model: Any) -> Optional[str]:
    """Why a loaded fused graph cannot be run (None when it can): no graph, an input or output the runtime needs
    missing or of another type, or a threshold or temperature initializer out of range."""
    from onnx import TensorProto

    g = model.graph
    if not model.HasField("graph") or not g.node:
        return "it holds no graph"
    inits = {i.name for i in g.initializer}
    inputs = {i.name: i for i in g.input if i.name not in inits}
    image = inputs.get(FUSED_INPUT)
    if image is None:
        return "it has no input %r (inputs: %s)" % (FUSED_INPUT, ", ".join(sorted(inputs)) or "none")
    t = image.type.tensor_type
    if t.elem_type != TensorProto.UINT8:
        return "its input %r is %s, but the runtime feeds uint8 pixels" % (
            FUSED_INPUT, TensorProto.DataType.Name(t.elem_type).lower() if t.elem_type else "untyped")
    if t.HasField("shape") and len(t.shape.dim) not in (3, 4):
        return "its input %r has %d axes, but the runtime feeds (N, H, W) or (N, H, W, 3) pixels" % (
            FUSED_INPUT, len(t.shape.dim))
    meta = _graph_meta(model)
    want = list(FUSED_OUTPUTS)
    if meta and any(isinstance(s, dict) and s.get("ood") for s in meta.get("stages") or ()):
        want += ["unknown", "ood"]
    have = {o.name for o in g.output}
    missing = [name for name in want if name not in have]
    if missing:
        return "it lacks the output%s %s that the runtime reads" % ("s" if len(missing) > 1 else "", ", ".join(missing))
    return _tunable_problem(model, meta)


def load_fused(path: str) -> Any:
    """The fused graph at ``path`` as an ONNX model, checked (:func:`fused_graph_problem`); else a one-line
    :class:`BundleError` naming the file."""
    import onnx

    try:
        model = onnx.load(path)
    except OSError as exc:
        raise BundleError("cannot read the fused graph %s: %s" % (path, exc.strerror or exc)) from None
    except Exception as exc:  # protobuf's DecodeError and the like: not an ONNX file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BundleError("the fused graph %s is not an ONNX model (%s); %s" % (path, first[:200], _REBUILD)) from None
    problem = fused_graph_problem(model)
    if problem:
        raise BundleError("the fused graph %s cannot be used: %s; %s" % (path, problem, _REBUILD))
    return model


def runtime_model(path: str) -> bytes:
    """The fused graph as ONNX Runtime gets it, serialised; the file on disk is not changed.

    * The file must parse and have what the runtime feeds and reads, with thresholds and temperatures as the
      manifest's are checked (:func:`load_fused`): else a one-line :class:`BundleError` naming the file.

    * Thresholds and temperatures are also listed as graph inputs: initializers that are inputs are defaults
      a call may override, so ``set_threshold`` needs no rebuild. (On disk they stay plain initializers,
      which is what TensorRT and other consumers expect.)
    * Each later stage's weights are moved into its ``If`` branch (:func:`scope_initializers`; graphs fused
      since that change already have them there).
    """
    import onnx

    model = load_fused(path)
    g = model.graph
    listed = {i.name for i in g.input}
    for init in g.initializer:
        if init.name.startswith(TUNABLE_PREFIXES) and init.name not in listed:
            g.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    scope_initializers(g)
    return model.SerializeToString()


def _reads(g: Any) -> set:
    """Every name the nodes of graph ``g`` and of its subgraphs read, and ``g``'s outputs."""
    names = {o.name for o in g.output}
    for n in g.node:
        names.update(n.input)
        for a in n.attribute:
            if a.type == a.GRAPH:
                names |= _reads(a.g)
    return names


def scope_initializers(g: Any) -> None:
    """Move every initializer that only one ``If`` branch reads into that branch (the innermost), in place.

    ONNX Runtime gives a convolution its fast CPU layout (NCHWc) only when the weights are initializers of the
    convolution's own graph: with a later stage's weights in the outer scope, the stage ran 1.6–1.9× slower
    inside its branch (docs/fused.md). The tunable values (thresholds, temperatures) stay at the top, where
    ONNX Runtime can take them as overridable inputs.
    """
    subs = [a.g for n in g.node for a in n.attribute if a.type == a.GRAPH]
    if not subs:
        return
    direct = {o.name for o in g.output} | {x for n in g.node for x in n.input}
    reads = [_reads(s) for s in subs]
    kept = []
    for init in g.initializer:
        users = [s for s, r in zip(subs, reads) if init.name in r]
        if init.name in direct or len(users) != 1 or init.name.startswith(TUNABLE_PREFIXES):
            kept.append(init)
        else:
            users[0].initializer.add().CopyFrom(init)
    if len(kept) != len(g.initializer):
        kept = [copy.deepcopy(t) for t in kept]
        del g.initializer[:]
        g.initializer.extend(kept)
    for s in subs:
        scope_initializers(s)


class FusedCascade(Cascade):
    """A cascade whose raw-image calls run one fused ONNX graph (see the module doc)."""

    form = "fused"

    def __init__(self, stages: Sequence[Stage], runner: Any, combine: str = "last",
                 labels: Optional[Sequence[str]] = None, preprocessing: Any = None, memo: Any = None,
                 name: str = "cascade") -> None:
        super().__init__(stages, combine, labels, preprocessing, memo, name)
        if preprocessing is None:
            raise ConfigError("a fused cascade needs the bundle's preprocessing")
        self.fused_runner = runner
        meta = getattr(runner, "metadata", {}) or {}
        try:
            graph = json.loads(meta["edgeconf.fused"])
            self._graph_combine = str(graph["combine"])
            self._one = graph.get("batch") == 1
            self._graph_stages = [(s["score"], float(s["threshold"]), float(s["temperature"]), s["input"])
                                  for s in graph["stages"]]
            self._graph_ood = [None if not s.get("ood") else (s["ood"]["score"], s["ood"]["output"],
                                                              float(s["ood"]["threshold"]), s["ood"].get("escalate"))
                               for s in graph["stages"]]
        except (KeyError, ValueError, TypeError, RecursionError):
            raise BundleError("the fused graph has no valid edgeconf.fused metadata; rebuild it with: edgeconf fuse "
                              "BUNDLE") from None
        if len(self._graph_stages) != len(self.stages):
            raise BundleError("the fused graph has %d stages, the bundle %d; rebuild it with: edgeconf fuse BUNDLE"
                              % (len(self._graph_stages), len(self.stages)))
        session = getattr(runner, "session", None)  # ONNX Runtime lists overridable initializers apart
        names = {s.name for s in runner.inputs} | {i.name for i in (
            session.get_overridable_initializers() if hasattr(session, "get_overridable_initializers") else ())}
        k_all = len(self.stages)
        self._overridable = (all(threshold_name(k) in names for k in range(k_all - 1))
                             and all(temperature_name(k) in names for k in range(k_all))
                             and all(ood_threshold_name(k) in names for k in range(k_all) if self._graph_ood[k])
                             and all(ood_escalate_name(k) in names for k in range(k_all - 1)
                                     if self._graph_ood[k] and self._graph_ood[k][3] is not None))
        self._with_ood = any(self._graph_ood)
        self._outputs = _OUTPUTS + (["unknown", "ood"] if self._with_ood else [])
        h, w = preprocessing.size
        self._pixel_shape = (h, w) if preprocessing.channels == 1 else (h, w, 3)
        self._check_io(runner)
        self._sync_epoch = -1
        self._extra: Dict[str, np.ndarray] = {}
        self._graph_ok = True
        self._bound: Any = None  # the batch-1 call with its input and outputs bound (ONNX Runtime IO binding)

    def _check_io(self, runner: Any) -> None:
        """The graph must take the uint8 pixels the bundle's preprocessing makes and give every output read."""
        spec = next((s for s in runner.inputs if s.name == FUSED_INPUT), None)
        want = (None,) + self._pixel_shape
        if spec is None or str(spec.dtype) != "uint8" or len(spec.shape) != len(want) or any(
                isinstance(d, int) and isinstance(e, int) and d != e for d, e in zip(spec.shape[1:], want[1:])):
            raise BundleError("the fused graph takes %s, but the runtime feeds uint8 pixels of shape (N, %s) for this "
                              "bundle's preprocessing; %s" % (spec.describe() if spec else "no input %r" % FUSED_INPUT,
                                                             ", ".join(map(str, self._pixel_shape)), _REBUILD))
        missing = [name for name in self._outputs if name not in {o.name for o in runner.outputs}]
        if missing:
            raise BundleError("the fused graph lacks the output%s %s that the runtime reads; %s"
                              % ("s" if len(missing) > 1 else "", ", ".join(missing), _REBUILD))

    # -- settings --------------------------------------------------------------------------------
    def _sync(self) -> bool:
        """Whether the graph can answer under the current settings; refreshes the override feeds.

        Recomputed only after a stage or the cascade changed (the cascade's configuration epoch)."""
        if self._sync_epoch == _EPOCH[0]:
            return self._graph_ok
        self._sync_epoch = _EPOCH[0]
        ok = self.combine == self._graph_combine
        extra: Dict[str, np.ndarray] = {}
        for k, (st, (score, thr, temp, inp)) in enumerate(zip(self.stages, self._graph_stages)):
            if st.score != score or st.input != inp:
                ok = False
            if float(st.threshold) != thr and k + 1 < len(self.stages):
                extra[threshold_name(k)] = np.array(ceil_f32(st.threshold), np.float32)
            if float(st.temperature) != temp:
                extra[temperature_name(k)] = np.array(st.temperature, np.float32)
            rule, graph_rule = st.ood, self._graph_ood[k]
            if (rule is None) != (graph_rule is None):
                ok = False  # an OOD rule the graph lacks, or one loaded off (ood=False): the stages answer
            elif rule is not None and graph_rule is not None:
                if (rule.score, rule.output) != graph_rule[:2] or (rule.escalate is None) != (graph_rule[3] is None):
                    ok = False
                else:
                    if float(rule.threshold) != graph_rule[2]:
                        extra[ood_threshold_name(k)] = np.array(floor_f32(rule.threshold), np.float32)
                    if rule.escalate is not None and float(rule.escalate) != float(graph_rule[3]) \
                            and k + 1 < len(self.stages):
                        extra[ood_escalate_name(k)] = np.array(floor_f32(rule.escalate), np.float32)
        if extra and not self._overridable:
            ok = False
        self._extra = extra
        self._graph_ok = ok
        return ok

    @property
    def graph_active(self) -> bool:
        """True while the fused graph answers (False while a setting sends inputs through the stages)."""
        return self._sync()

    # -- running -----------------------------------------------------------------------------------
    def pixels(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Raw images → the graph's uint8 input ``(N, H, W[, 3])``: images already at the model's size and
        channel count are stacked as they are; others are converted and resized as the staged form does."""
        shape = self._pixel_shape
        if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.shape[1:] == shape:
            return images
        out = np.empty((len(images),) + shape, dtype=np.uint8)
        for i, img in enumerate(images):
            if isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape == shape:
                out[i] = img
            else:
                out[i] = self._convert(img, i)
        return out

    def _convert(self, image: Any, index: int) -> np.ndarray:
        return self.preprocessing._pixels(image, index).reshape(self._pixel_shape)

    def run_pixels(self, pixels: np.ndarray) -> BatchResult:
        """One graph call on uint8 pixels ``(N, H, W[, 3])`` at the model's size (see :meth:`pixels`)."""
        if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.shape[1:] != self._pixel_shape:
            raise InputValidationError("the fused graph takes uint8 pixels of shape (N, %s), got %s %s"
                                       % (", ".join(map(str, self._pixel_shape)), getattr(pixels, "dtype", type(pixels).__name__),
                                          getattr(pixels, "shape", "")))
        if not self._sync():
            return self.run_batch(self.preprocessing.batch(list(pixels)))
        return self._call(pixels)

    def _call(self, pixels: np.ndarray) -> BatchResult:
        n = pixels.shape[0]
        if n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return BatchResult(empty, np.zeros(0), empty, empty, np.zeros((0, 0)), [], [], [])
        extra = self._extra
        run = self.fused_runner.run_trusted
        t0 = time.perf_counter()
        names = self._outputs
        if self._one and n > 1:  # a batch-1 graph: one call per input
            parts = [run(dict(extra, **{FUSED_INPUT: pixels[i:i + 1]}), names) for i in range(n)]
            out = {k: np.concatenate([p[k] for p in parts]) for k in names}
        else:
            out = run(dict(extra, **{FUSED_INPUT: pixels}) if extra else {FUSED_INPUT: pixels}, names)
        t1 = time.perf_counter()
        if self.energy_hook is not None:
            self.energy_hook(0, t0, t1)
        broken = ~np.isfinite(out["confidence"])
        if broken.any():
            return self._mend(pixels, out, broken, t0, t1)
        return self._counted(out, t0, t1)

    def _mend(self, pixels: np.ndarray, out: Dict[str, np.ndarray], broken: np.ndarray, t0: float,
              t1: float) -> BatchResult:
        """The graph's answers, but the stages' for the inputs it answered with a non-finite confidence.

        The graph's exit test lets a NaN confidence leave at its stage; the staged cascade sends it on (and answers
        ``unknown`` where no stage is left), so those inputs are answered again by the stages."""
        good = self._counted({k: v[~broken] for k, v in out.items()}, t0, t1)
        again = self._run_batch(self._model_batch(list(pixels[broken])))
        n = len(broken)

        def merge(a: Optional[np.ndarray], b: Optional[np.ndarray], fill: Any, dtype: Any) -> np.ndarray:
            shape = (n,) + (a.shape[1:] if a is not None else b.shape[1:])  # type: ignore[union-attr]
            m = np.full(shape, fill, dtype)
            m[~broken] = fill if a is None else a
            m[broken] = fill if b is None else b
            return m

        return BatchResult(merge(good.class_ids, again.class_ids, 0, np.int64),
                           merge(good.confidence, again.confidence, np.nan, np.float64),
                           merge(good.stage, again.stage, 0, np.int64), merge(good.stages_run, again.stages_run, 0, np.int64),
                           merge(good.probs, again.probs, np.nan, np.float64), [time.perf_counter() - t0], [n], [(t0, t1)],
                           {}, merge(good.unknown, again.unknown, False, bool), merge(good.ood, again.ood, np.nan, np.float64))

    def _counted(self, out: Dict[str, np.ndarray], t0: float, t1: float) -> BatchResult:
        """The graph's answers as a batch, counted (exits, stage calls, time, unknown answers)."""
        stage, run = out["stage"], out["stages_run"]
        n = len(stage)
        c = self.counters
        c.inputs += n
        k_all = len(self.stages)
        exits = np.bincount(stage, minlength=k_all)
        reach = np.bincount(run, minlength=k_all + 1)[::-1].cumsum()[::-1]  # inputs that ran >= j stages
        for k in range(k_all):
            c.exits[k] += int(exits[k])
            c.calls[k] += int(reach[k + 1])
        c.stage_seconds[0] += t1 - t0
        unknown = ood = None
        if self._with_ood:
            unknown, ood = out["unknown"], out["ood"].astype(np.float64)
            c.unknown += int(unknown.sum())
        return BatchResult(out["class"], out["confidence"], stage, run, out["probs"], [t1 - t0], [n], [(t0, t1)],
                           {}, unknown, ood)

    def _answer(self, batch: BatchResult, i: int) -> CascadeResult:
        cid = int(batch.class_ids[i])
        n = len(batch)
        unknown = bool(batch.unknown[i]) if batch.unknown is not None else False
        ood = float(batch.ood[i]) if batch.ood is not None and np.isfinite(batch.ood[i]) else None
        return CascadeResult(cid, float(batch.confidence[i]), int(batch.stage[i]), batch.probs[i],
                             (batch.stage_seconds[0] / n,), int(batch.stages_run[i]), label_of(cid, self.labels),
                             unknown=unknown, ood_score=ood)

    def _classify_misses(self, images: Sequence[np.ndarray]) -> Answers:
        if not self._sync():
            return Answers.of_batch(self.run_batch(self.preprocessing.batch(images)), self.labels)
        batch = self._call(self.pixels(images))
        return Answers(batch, lambda: [self._answer(batch, j) for j in range(len(images))])

    def _classify_one(self, image: np.ndarray) -> CascadeResult:
        """One raw image, one graph call: pixels copied into the bound input, only the answer copied out."""
        if not self._sync():
            return Cascade._classify_one(self, image)  # the staged batch-1 path
        shape = self._pixel_shape
        px = image if (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape == shape) \
            else self._convert(image, 0)
        extra = self._extra
        clock = time.perf_counter
        if extra:  # overridden values are extra feeds: the plain call
            feeds = {FUSED_INPUT: px[None]}
            feeds.update(extra)
            t0 = clock()
            out = self.fused_runner.run_trusted(feeds, self._outputs)
        else:
            call = self._bound
            if call is None:
                call = self._bound = self.fused_runner.bind((1,) + shape, np.uint8, self._outputs)
            call.input[0] = px
            t0 = clock()
            out = call.run()
        t1 = clock()
        if self.energy_hook is not None:
            self.energy_hook(0, t0, t1)
        conf = float(out["confidence"][0])
        if conf - conf != 0.0:  # NaN or inf: the graph let a broken output exit; the stages answer it (see _mend)
            return Cascade._classify_one(self, image)
        k, ran, cid = int(out["stage"][0]), int(out["stages_run"][0]), int(out["class"][0])
        c = self.counters
        c.inputs += 1
        c.exits[k] += 1
        calls = c.calls
        for j in range(ran):
            calls[j] += 1
        c.stage_seconds[0] += t1 - t0
        unknown, ood = False, None
        if self._with_ood:
            unknown = bool(out["unknown"][0])
            c.unknown += int(unknown)
            o = float(out["ood"][0])
            ood = o if np.isfinite(o) else None
        return CascadeResult(cid, conf, k, out["probs"][0].copy(), (t1 - t0,), ran,
                             label_of(cid, self.labels), unknown=unknown, ood_score=ood)

    def close(self) -> None:
        super().close()
        self.fused_runner.close()


__all__ = ["FusedCascade", "FusedInfo", "FusedStage", "choose_form", "fused_info", "stale_reason", "threshold_name",
           "temperature_name", "ood_threshold_name", "ood_escalate_name", "ceil_f32", "floor_f32", "stage_fingerprint",
           "runtime_model", "load_fused", "fused_graph_problem", "scope_initializers", "FORMS", "FUSED_FILE", "remote_stage_problem",
           "FUSED_KEY", "FUSED_INPUT", "FUSED_OUTPUTS", "TENSORRT_MIN", "TENSORRT_OPS", "NO_TENSORRT", "tensorrt_check",
           "tensorrt_verdict", "fused_tensorrt_reason"]
