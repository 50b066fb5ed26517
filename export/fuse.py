"""The fused cascade: a whole bundle as one ONNX graph, so one runtime call answers an input.

Layout of the graph (``edgeconf fuse BUNDLE`` writes it into the bundle as ``fused.onnx``):

* input ``image``: uint8 pixels at the model's size, ``(N, H, W)`` grey or ``(N, H, W, 3)`` RGB. The
  preprocessing contract's arithmetic runs in the graph (channel order, ``(x * scale - mean) / std``,
  layout, dtype); decoding, colour conversion and resizing to ``size`` stay on the host, where the runtime
  does them exactly as the staged form does (ONNX has no resize equal to OpenCV's area filter).
* stage 1 on every input and its calibrated confidence; then, per later stage, the unsure inputs are
  gathered (``NonZero``/``Gather``), the stage runs on them under an ``If`` whose condition is the scalar
  "any unsure left", and its answers are scattered back (``ScatterND``). Stages fed by an earlier stage's
  features (early-exit bundles) gather those features instead of the image.
* outputs ``class`` (int64), ``confidence`` (float32), ``stage`` (int64, the answering stage),
  ``stages_run`` (int64) and ``probs`` (float32, the answer's calibrated probabilities).
* each stage's temperature and threshold are initializers with stable names (:func:`temperature_name`,
  :func:`threshold_name`, stage index from 0), mirrored in the ``edgeconf.fused`` metadata, so retuning
  rewrites values, never the graph.

Every node is a standard ONNX op; conditionals have a scalar bool condition and branches with matching
outputs, which TensorRT's ONNX parser accepts from 8.0 on. ``NonZero`` needs TensorRT 8.5 or newer
(data-dependent shapes): :data:`TENSORRT_MIN` records that, and ``edgeconf inspect`` reports it.
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeconf.atomic import FileSet, atomic_write
from edgeconf.bundle import MANIFEST, Manifest, manifest_text, read_manifest, write_manifest
from edgeconf.cascade import COMBINE_RULES, IMAGE
from edgeconf.errors import BundleError, ConfigError
from edgeconf.export.errors import ExportError
from edgeconf.export.head import (HEAD_OUTPUTS, NODE_PREFIX, T_NAME, _head_nodes, check_head_values, default_opset,
                                  find_logits_output, load_model)
from edgeconf.fused import (FUSED_FILE, FUSED_INPUT, FUSED_SCHEMA, FusedInfo, ceil_f32, floor_f32, ood_escalate_name,
                            ood_threshold_name, scope_initializers, stage_fingerprint, temperature_name, threshold_name)
# TensorRT's parser, checked statically: in the core (inspect reads it too), re-exported here
from edgeconf.fused import (NO_TENSORRT, TENSORRT_OPS, fused_tensorrt_reason, tensorrt_check,  # noqa: F401
                            tensorrt_verdict)
from edgeconf.hashing import sha256_file
from edgeconf.preprocess import Preprocessing

#: the fused graph needs ops with the opset-13 signatures (Squeeze/Unsqueeze axes as inputs, ReduceSum axes)
MIN_OPSET = 13
#: control flow inside a stage cannot be nested in the fused graph's branches (names would need scoping)
CONTROL_FLOW = ("If", "Loop", "Scan")
#: preprocessing keys the graph knows how to carry (or, for ``resize``, leaves to the host by design)
KNOWN_PREPROCESSING = {"size", "channels", "scale", "mean", "std", "layout", "dtype", "color", "resize"}
ELEM = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "float64": TensorProto.DOUBLE}


class FuseError(ExportError):
    """The bundle cannot be written as one graph (stages disagree, an op the fused form cannot carry)."""


@dataclass
class FuseReport:
    """What ``fuse`` wrote and how it was checked."""

    bundle: str
    path: str
    sha256: str
    bytes: int
    opset: int
    stages: int
    combine: str
    batch: Optional[int]
    nodes: int
    tensorrt_min: str  # as in the manifest: "none" when no TensorRT parses the graph (tensorrt_reason says why)
    checked_inputs: int
    max_confidence_diff: float
    notes: List[str] = field(default_factory=list)
    tensorrt_reason: Optional[str] = None  # why no TensorRT version's parser takes the graph (None: one does)

    def to_json(self) -> Dict[str, Any]:
        return {"bundle": self.bundle, "path": self.path, "sha256": self.sha256, "bytes": self.bytes,
                "opset": self.opset, "stages": self.stages, "combine": self.combine, "batch": self.batch,
                "nodes": self.nodes,
                "tensorrt_min": None if self.tensorrt_min == NO_TENSORRT else self.tensorrt_min,
                "tensorrt_reason": self.tensorrt_reason, "checked_inputs": self.checked_inputs,
                "max_confidence_diff": self.max_confidence_diff, "notes": list(self.notes)}


# -- reading the stages --------------------------------------------------------------------------------
@dataclass
class _StageGraph:
    name: str
    proto: onnx.ModelProto
    input: str  # the model's own input name
    input_dims: List[Any]
    logits: str
    classes: Optional[int]
    forward: Optional[str]  # output the next stage reads (early exit), if any
    opset: int


def _dims(vi: onnx.ValueInfoProto) -> List[Any]:
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


def _read_stage(folder: str, manifest: Manifest, k: int) -> _StageGraph:
    spec = manifest.stages[k]
    where = "stage %d (%s)" % (k + 1, spec.model)
    if spec.is_remote:
        raise FuseError("%s is served remotely (%s); a fused graph holds local models only — keep the staged form "
                        "for this bundle" % (where, spec.backend))
    path = os.path.join(folder, spec.model)
    proto, _ = load_model(path)
    try:
        opset = default_opset(proto)
    except Exception as exc:
        raise FuseError("%s: %s" % (where, exc)) from None
    for imp in proto.opset_import:
        if imp.domain not in ("", "ai.onnx"):
            ops = sorted({n.op_type for n in proto.graph.node if n.domain == imp.domain})
            if ops:
                raise FuseError("%s uses %s from the %r op domain, which the fused graph cannot carry (standard ONNX "
                                "ops only, so TensorRT and Triton can run it); re-export the stage without custom "
                                "ops, or keep the staged form" % (where, ", ".join(ops), imp.domain))
    bad = sorted({n.op_type for n in proto.graph.node if n.op_type in CONTROL_FLOW})
    if bad:
        raise FuseError("%s contains %s; the fused form cannot nest a stage's own control flow inside its "
                        "conditionals — keep the staged form for this bundle" % (where, ", ".join(bad)))
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise FuseError("%s has %d inputs; a cascade stage has exactly one" % (where, len(inputs)))
    try:
        logits, classes = find_logits_output(proto, spec.logits)
    except Exception as exc:
        raise FuseError("%s: %s" % (where, exc)) from None
    nxt = manifest.stages[k + 1] if k + 1 < len(manifest.stages) else None
    forward = nxt.input if nxt is not None and nxt.input != IMAGE else None
    if forward is not None and forward not in {o.name for o in proto.graph.output}:
        raise FuseError("stage %d reads %r from stage %d, but %s has no such output"
                        % (k + 2, forward, k + 1, spec.model))
    return _StageGraph(spec.name, proto, inputs[0].name, _dims(inputs[0]), logits, classes, forward, opset)


def _check_stages(stages: List[_StageGraph], manifest: Manifest) -> int:
    """Stages must agree on input size and class count; returns the opset of the fused graph."""
    pre = manifest.preprocessing
    want = list(pre.input_shape)
    for k, st in enumerate(stages):
        spec = manifest.stages[k]
        if spec.input == IMAGE:
            got = st.input_dims[1:]
            if len(got) != len(want) or any(g is not None and g != w for g, w in zip(got, want)):
                raise FuseError("stage %d (%s) takes inputs of shape %s but the bundle's preprocessing makes %s "
                                "(stage 1: %s); the stages disagree on the input size, so one graph cannot feed them "
                                "the same image" % (k + 1, spec.model, _shape(got), _shape(want),
                                                    _shape(stages[0].input_dims[1:])))
    classes = [st.classes for st in stages]
    known = [c for c in classes if c is not None]
    if len(set(known)) > 1:
        raise FuseError("the stages disagree on the class count (%s); every stage of a cascade answers over the "
                        "same classes" % ", ".join("stage %d: %s" % (k + 1, c) for k, c in enumerate(classes)))
    if known and known[0] != len(manifest.labels):
        raise FuseError("the stages output %d classes but the manifest has %d labels" % (known[0], len(manifest.labels)))
    unknown = set(pre.to_json()) - KNOWN_PREPROCESSING
    if unknown:
        raise FuseError("the preprocessing has keys %s that the fused graph does not know how to carry; keep the "
                        "staged form or upgrade edgeconf" % sorted(unknown))
    return max([MIN_OPSET] + [st.opset for st in stages])


def _shape(dims: Sequence[Any]) -> str:
    return "(%s)" % ", ".join("?" if d is None else str(d) for d in dims)


def _at_opset(st: _StageGraph, opset: int, where: str) -> onnx.ModelProto:
    if st.opset == opset:
        return st.proto
    from onnx import version_converter

    try:
        return version_converter.convert_version(st.proto, opset)
    except Exception as exc:
        raise FuseError("%s uses ONNX opset %d and cannot be converted to opset %d for the fused graph (%s); "
                        "re-export it at opset %d" % (where, st.opset, opset, str(exc).splitlines()[0][:200], opset)) from None


# -- graph pieces -----------------------------------------------------------------------------------------
class _Builder:
    """Collects initializers and hands out unique names; nodes go to whichever list the caller builds."""

    def __init__(self) -> None:
        self.inits: List[onnx.TensorProto] = []
        self._consts: Dict[Tuple[str, bytes, Tuple[int, ...]], str] = {}
        self._names: Set[str] = set()

    def add(self, tensor: onnx.TensorProto) -> None:
        """Add an initializer once (stage weights are shared by every path that runs the stage)."""
        if tensor.name not in self._names:
            self._names.add(tensor.name)
            self.inits.append(tensor)

    def const(self, value: Any, dtype: Any) -> str:
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.tobytes(), arr.shape)
        if key not in self._consts:
            name = "edgeconf_fused_c%d" % len(self._consts)
            self.add(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return self._consts[key]


def _prune(graph: onnx.GraphProto, wanted: Sequence[str]) -> List[onnx.NodeProto]:
    """The nodes ``wanted`` depends on, in graph order (head nodes of an exported stage are dropped)."""
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output}
    need: Set[int] = set()
    stack = [producer[w] for w in wanted if w in producer]
    while stack:
        i = stack.pop()
        if i in need:
            continue
        need.add(i)
        stack.extend(producer[x] for x in graph.node[i].input if x in producer)
    return [n for i, n in enumerate(graph.node) if i in need]


def _stage_nodes(proto: onnx.ModelProto, k: int, feed: str, wanted: Sequence[str], b: _Builder, tag: str = ""
                 ) -> Tuple[List[onnx.NodeProto], Dict[str, str]]:
    """Stage ``k``'s nodes computing ``wanted``, every name prefixed; its input renamed to ``feed``.

    Initializers go to the builder once (the top graph: branches read them from the outer scope); the nodes'
    own names also carry ``tag``, so one stage can appear on several paths. Returns the nodes and the map
    from the stage's own names of ``wanted`` to their names in the fused graph.
    """
    g = proto.graph
    prefix = "s%d/" % k
    inits = {i.name for i in g.initializer}
    inp = next(i.name for i in g.input if i.name not in inits)

    def rename(name: str) -> str:
        if not name:
            return name  # an omitted optional input
        if name == inp:
            return feed
        return prefix + name if name in inits else prefix + tag + name

    nodes = _prune(g, wanted)
    used = {x for n in nodes for x in n.input}
    for init in g.initializer:
        if init.name in used:
            t = copy.deepcopy(init)
            t.name = rename(init.name)
            b.add(t)
    out = []
    for i, n in enumerate(nodes):
        m = copy.deepcopy(n)
        del m.input[:]
        m.input.extend(rename(x) for x in n.input)
        del m.output[:]
        m.output.extend(rename(x) for x in n.output)
        m.name = prefix + tag + (n.name or "node%d" % i)
        out.append(m)
    return out, {w: rename(w) for w in wanted}


def _head(logits: str, score: str, opset: int, elem: int, k: int, b: _Builder, tag: str = ""
          ) -> Tuple[List[onnx.NodeProto], str, str]:
    """Stage ``k``'s confidence head — the very nodes ``edgeconf export`` appends (bit-equal answers) — renamed.

    Returns nodes, probs name, confidence name.
    """
    nodes, inits = _head_nodes(logits, score, opset, elem)
    nodes = [n for n in nodes if "exit" not in n.output and "edgeconf_unsure" not in n.output]
    prefix = "s%d/%shead/" % (k, tag)
    mapping = {o: prefix + o for n in nodes for o in n.output}
    mapping[T_NAME] = temperature_name(k)
    for init in inits:
        t = copy.deepcopy(init)
        mapping[init.name] = t.name = "s%d/head/%s" % (k, init.name)
        b.add(t)
    out = []
    for n in nodes:
        m = copy.deepcopy(n)
        del m.input[:]
        m.input.extend(mapping.get(x, x) for x in n.input)
        del m.output[:]
        m.output.extend(mapping[x] for x in n.output)
        m.name = prefix + n.name[len(NODE_PREFIX):]
        out.append(m)
    return out, mapping["probs"], mapping["confidence"]


def _score_nodes(probs: str, score: str, prefix: str, b: _Builder, classes_log: Optional[str]) -> Tuple[List[onnx.NodeProto], str]:
    """Confidence of averaged probabilities (the ``mean`` rule), as edgeconf.confidence computes it."""
    mk = helper.make_node
    i0, i1 = b.const(0, np.int64), b.const(1, np.int64)
    conf = prefix + "conf"
    if score == "maxp":
        return [mk("TopK", [probs, b.const([1], np.int64)], [prefix + "top1", prefix + "top1_i"], axis=1),
                mk("Gather", [prefix + "top1", i0], [conf], axis=1)], conf
    if score == "margin":
        return [mk("TopK", [probs, b.const([2], np.int64)], [prefix + "top2", prefix + "top2_i"], axis=1),
                mk("Gather", [prefix + "top2", i0], [prefix + "p1"], axis=1),
                mk("Gather", [prefix + "top2", i1], [prefix + "p2"], axis=1),
                mk("Sub", [prefix + "p1", prefix + "p2"], [conf])], conf
    # entropy: 1 - H / log C with 0 * log 0 = 0, clipped to [0, 1]
    zero, one = b.const(0.0, np.float32), b.const(1.0, np.float32)
    return [mk("Greater", [probs, zero], [prefix + "pos"]),
            mk("Log", [probs], [prefix + "logp"]),
            mk("Mul", [probs, prefix + "logp"], [prefix + "plogp_raw"]),
            mk("Where", [prefix + "pos", prefix + "plogp_raw", zero], [prefix + "plogp"]),
            mk("ReduceSum", [prefix + "plogp", b.const([1], np.int64)], [prefix + "negh"], keepdims=0),
            mk("Div", [prefix + "negh", classes_log], [prefix + "negh_n"]),  # type: ignore[list-item]
            mk("Add", [one, prefix + "negh_n"], [prefix + "raw"]),
            mk("Min", [prefix + "raw", one], [prefix + "hi"]),
            mk("Max", [prefix + "hi", zero], [conf])], conf


def _preprocess_nodes(pre: Preprocessing, b: _Builder) -> Tuple[List[onnx.NodeProto], str]:
    """uint8 pixels (N, H, W[, 3]) → the model input, with the same float32 arithmetic as Preprocessing."""
    mk = helper.make_node
    nodes = [mk("Cast", [FUSED_INPUT], ["pre/f"], to=TensorProto.FLOAT, name="pre/cast")]
    cur = "pre/f"
    color = getattr(pre, "color", "rgb")
    if pre.channels == 3 and color == "bgr":
        nodes.append(mk("Gather", [cur, b.const([2, 1, 0], np.int64)], ["pre/bgr"], axis=3, name="pre/bgr"))
        cur = "pre/bgr"
    gain = np.asarray(pre._gain, np.float32)  # the same float32 constants the host path multiplies by
    offset = np.asarray(pre._offset, np.float32)
    g = gain.reshape(()) if gain.size == 1 else gain
    o = offset.reshape(()) if offset.size == 1 else offset
    nodes.append(mk("Mul", [cur, b.const(g, np.float32)], ["pre/scaled"], name="pre/scale"))
    cur = "pre/scaled"
    if offset.any():  # adding 0 changes no value (the host path skips it too)
        nodes.append(mk("Add", [cur, b.const(o, np.float32)], ["pre/norm"], name="pre/shift"))
        cur = "pre/norm"
    if pre.channels == 1:
        axis = 1 if pre.layout == "NCHW" else 3
        nodes.append(mk("Unsqueeze", [cur, b.const([axis], np.int64)], ["pre/chan"], name="pre/channel_axis"))
        cur = "pre/chan"
    elif pre.layout == "NCHW":
        nodes.append(mk("Transpose", [cur], ["pre/nchw"], perm=[0, 3, 1, 2], name="pre/layout"))
        cur = "pre/nchw"
    if pre.dtype != "float32":
        nodes.append(mk("Cast", [cur], ["pre/typed"], to=ELEM[pre.dtype], name="pre/dtype"))
        cur = "pre/typed"
    return nodes, cur


@dataclass
class _State:
    """Names of the running answer (whole batch) and of what the last stage hands to the next."""

    probs: str
    conf: str
    stage: str
    run: str
    exit_conf: str  # confidence the exit test uses, per input the last stage ran on
    summed: Optional[str]  # running sum of probabilities per such input (mean rule)
    forward: Optional[str]  # the last stage's output the next stage reads (early exit), per such input
    active: str = ""  # batch path: global indices of the inputs the last stage ran on
    unknown: Optional[str] = None  # whole batch: answered "unknown" (bundles with OOD rules)
    ood: Optional[str] = None  # whole batch: OOD score of the last stage with a rule that ran (NaN: none)
    exit_unknown: Optional[str] = None  # per input the last stage ran on: it called the input unknown
    exit_doubt: Optional[str] = None  # per input the last stage ran on: in its OOD doubt band (must go on)

    def held(self, with_ood: bool) -> List[str]:
        return [self.probs, self.conf, self.stage, self.run] + ([self.unknown, self.ood] if with_ood else [])  # type: ignore[list-item]


_TYPES = ((TensorProto.FLOAT, "probs"), (TensorProto.FLOAT, "conf"), (TensorProto.INT64, "stage"),
          (TensorProto.INT64, "run"), (TensorProto.BOOL, "unknown"), (TensorProto.FLOAT, "ood"))
OUTPUT_NAMES = {"probs": "probs", "conf": "confidence", "stage": "stage", "run": "stages_run", "unknown": "unknown",
                "ood": "ood"}
mk = helper.make_node


def _i64(name: str, value: int) -> onnx.NodeProto:
    """A (1,) int64 constant made inside a branch (a branch output must be produced in the branch)."""
    return mk("Constant", [], [name], value=helper.make_tensor(name + "_v", TensorProto.INT64, [1], [value]))


class _Fuser:
    """Builds the graph: stage 1 on the whole batch, then per later stage either the any-batch path (the unsure
    subset gathered, run under an ``If`` on "any unsure left", scattered back) or, for a batch-1 graph, an
    ``If`` on the scalar "unsure" around the stage (nothing gathered: no ``NonZero``, so TensorRT 8.0+).

    A stage with an OOD rule also yields its score and "unknown" verdict: an unknown input keeps that stage's
    answer, leaves the cascade there, and is answered class -1 (the staged form's ``UNKNOWN``)."""

    def __init__(self, stages: List[onnx.ModelProto], graphs: List[_StageGraph], manifest: Manifest, opset: int,
                 classes: int, batch: Optional[int] = None) -> None:
        self.stages = stages
        self.batch = batch
        self.graphs = graphs
        self.manifest = manifest
        self.opset = opset
        self.classes = classes
        self.b = _Builder()
        self.combine = manifest.combine
        self.x = ""
        self.rules = [getattr(s, "ood", None) for s in manifest.stages]
        self.with_ood = any(r is not None for r in self.rules)
        self.types = _TYPES if self.with_ood else _TYPES[:4]
        self.doubt: Dict[Tuple[int, str], str] = {}  # (stage, tag) -> its doubt-band flags, for stages with a band

    def _stage(self, k: int, feed: str, tag: str) -> Tuple[List[onnx.NodeProto], str, str, Optional[str],
                                                            Optional[Tuple[str, str]]]:
        """Stage k's nodes: (nodes, probs, confidence, forwarded output, (OOD score, unknown) or None)."""
        st, spec = self.graphs[k], self.manifest.stages[k]
        rule = self.rules[k]
        wanted = [st.logits] + ([st.forward] if st.forward else [])
        if rule is not None and rule.output is not None and rule.output not in wanted:
            wanted.append(rule.output)
        nodes, names = _stage_nodes(self.stages[k], k, feed, wanted, self.b, tag)
        elem = next(o for o in self.stages[k].graph.output if o.name == st.logits).type.tensor_type.elem_type
        head, probs, conf = _head(names[st.logits], spec.score, self.opset, elem, k, self.b, tag)
        nodes += head
        ood = None
        if rule is not None:
            o = "s%d/%sood/" % (k, tag)
            if rule.output is not None:
                nodes += [mk("Cast", [names[rule.output]], [o + "f"], to=TensorProto.FLOAT),
                          mk("Reshape", [o + "f", self.b.const([-1], np.int64)], [o + "score"])]
            else:  # energy: -T * logsumexp(logits / T), on the head's scaled logits
                scaled = probs.rsplit("/", 1)[0] + "/edgeconf_scaled"
                if self.opset >= 18:
                    nodes.append(mk("ReduceLogSumExp", [scaled, self.b.const([1], np.int64)], [o + "lse"], keepdims=0))
                else:
                    nodes.append(mk("ReduceLogSumExp", [scaled], [o + "lse"], axes=[1], keepdims=0))
                nodes += [mk("Neg", [temperature_name(k)], [o + "negt"]),
                          mk("Mul", [o + "lse", o + "negt"], [o + "score"])]
            nodes.append(mk("Greater", [o + "score", ood_threshold_name(k)], [o + "unknown"]))
            ood = (o + "score", o + "unknown")
            if rule.escalate is not None and k + 1 < len(self.stages):  # the doubt band: may not answer here
                nodes.append(mk("Greater", [o + "score", ood_escalate_name(k)], [o + "doubt"]))
                self.doubt[k, tag] = o + "doubt"
        return nodes, probs, conf, names[st.forward] if st.forward else None, ood

    def _mean(self, k: int, summed: str, pk: str, t: str) -> Tuple[List[onnx.NodeProto], str, str, str]:
        """Running sum, mean and its confidence after stage k (the ``mean`` rule): nodes, sum, mean, conf."""
        b = self.b
        nodes = [mk("Add", [summed, pk], [t + "sum"]),
                 mk("Div", [t + "sum", b.const(float(k + 1), np.float32)], [t + "mean"])]
        sc, cm = _score_nodes(t + "mean", self.manifest.stages[k].score, t + "ens/", b,
                              b.const(np.log(np.float32(self.classes)), np.float32))
        return nodes + sc, t + "sum", t + "mean", cm

    def _unsure(self, prev: _State, k: int, d: str) -> List[onnx.NodeProto]:
        """``d + "unsure"``: the last stage's inputs that go on to stage k (not confident or in the stage's doubt
        band, and not unknown)."""
        less = mk("Less", [prev.exit_conf, threshold_name(k - 1)], [d + ("lower" if prev.exit_unknown else "unsure")])
        if prev.exit_unknown is None:
            return [less]
        nodes = [less]
        lower = d + "lower"
        if prev.exit_doubt is not None:
            nodes.append(mk("Or", [lower, prev.exit_doubt], [d + "lower_or_doubt"]))
            lower = d + "lower_or_doubt"
        return nodes + [mk("Not", [prev.exit_unknown], [d + "known"]), mk("And", [lower, d + "known"], [d + "unsure"])]

    def _if(self, cond: str, d: str, then_nodes: List[onnx.NodeProto], then_out: Sequence[str],
            held: Sequence[str], name: str) -> Tuple[onnx.NodeProto, List[str]]:
        """``If cond: then_nodes → then_out; else: held``, outputs named ``d + probs|conf|stage|run[|unknown|ood]``."""
        shapes = {"probs": ["N", self.classes], "conf": ["N"], "stage": ["N"], "run": ["N"], "unknown": ["N"],
                  "ood": ["N"]}
        vi = [helper.make_tensor_value_info(o, ty, shapes[key]) for o, (ty, key) in zip(then_out, self.types)]
        then_g = helper.make_graph(then_nodes, name + "_runs", [], vi)
        e = d + "else/"
        else_nodes = [mk("Identity", [h], [e + key]) for h, (_, key) in zip(held, self.types)]
        else_g = helper.make_graph(else_nodes, name + "_skipped", [],
                                   [helper.make_tensor_value_info(e + key, ty, shapes[key]) for ty, key in self.types])
        res = [d + key for _, key in self.types]
        return mk("If", [cond], res, then_branch=then_g, else_branch=else_g, name=name), res

    def _result(self, names: Sequence[str], prev: _State, exit_conf: str, summed: Optional[str], fwd: Optional[str],
                active: str, exit_unknown: Optional[str], exit_doubt: Optional[str] = None) -> _State:
        st = _State(names[0], names[1], names[2], names[3], exit_conf, summed, fwd, active,
                    exit_unknown=exit_unknown, exit_doubt=exit_doubt)
        if self.with_ood:
            st.unknown, st.ood = names[4], names[5]
        return st

    # -- batch 1 ---------------------------------------------------------------------------------
    def _single(self, k: int, prev: _State) -> Tuple[List[onnx.NodeProto], List[str]]:
        """Run stage k when the one input is unsure after stage k-1; nested for the stages after it."""
        b = self.b
        d = "one%d/" % k
        t = d + "then/"
        feed = self.x if self.manifest.stages[k].input == IMAGE else prev.forward
        nodes = self._unsure(prev, k, d)
        nodes.append(mk("Reshape", [d + "unsure", b.const(np.zeros(0, np.int64), np.int64)], [d + "go"]))
        tn, pk, ck, fwd, ood = self._stage(k, feed, "one/")  # type: ignore[arg-type]
        tn += [_i64(t + "kvec", k), _i64(t + "run", k + 1)]
        summed, exit_conf = None, ck
        if self.combine == "last":
            probs, conf, stage = pk, ck, t + "kvec"
        elif self.combine == "best":
            tn.append(mk("Greater", [ck, prev.conf], [t + "higher"]))
            if ood is not None:
                tn.append(mk("Or", [t + "higher", ood[1]], [t + "take"]))
            tn += [mk("Identity", [t + "higher"], [t + "take"])] if ood is None else []
            tn += [mk("Unsqueeze", [t + "take", b.const([1], np.int64)], [t + "take2"]),
                   mk("Where", [t + "take2", pk, prev.probs], [t + "probs"]),
                   mk("Where", [t + "take", ck, prev.conf], [t + "conf"]),
                   mk("Where", [t + "take", t + "kvec", prev.stage], [t + "stage"])]
            probs, conf, stage = t + "probs", t + "conf", t + "stage"
        else:
            m_nodes, summed, probs, conf = self._mean(k, prev.summed, pk, t)  # type: ignore[arg-type]
            tn += m_nodes
            stage, exit_conf = t + "kvec", conf
        out = [probs, conf, stage, t + "run"]
        if self.with_ood:
            out += [ood[1], ood[0]] if ood is not None else [prev.unknown, prev.ood]  # type: ignore[list-item]
            if ood is None:  # a branch output must be made in the branch
                tn += [mk("Identity", [prev.unknown], [t + "unknown"]), mk("Identity", [prev.ood], [t + "ood"])]  # type: ignore[list-item]
                out[4:] = [t + "unknown", t + "ood"]
        if k + 1 < len(self.stages):
            inner, out = self._single(k + 1, self._result(out, prev, exit_conf, summed, fwd, "",
                                                          ood[1] if ood is not None else None,
                                                          self.doubt.get((k, "one/"))))
            tn += inner
        if_node, res = self._if(d + "go", d, tn, out, prev.held(self.with_ood), "stage%d_one" % (k + 1))
        return nodes + [if_node], res

    # -- any batch ------------------------------------------------------------------------------
    def _batch(self, k: int, prev: _State) -> Tuple[List[onnx.NodeProto], List[str]]:
        """Gather the inputs still unsure after stage k-1, run stage k on them, scatter the answers back."""
        b = self.b
        d = "many%d/" % k
        t = d + "then/"
        nodes = self._unsure(prev, k, d) + [
            mk("NonZero", [d + "unsure"], [d + "nz"]),
            mk("Reshape", [d + "nz", b.const([-1], np.int64)], [d + "sel"]),
            mk("Gather", [prev.active, d + "sel"], [d + "active"], axis=0),
            mk("Shape", [d + "active"], [d + "m"]),
            mk("Squeeze", [d + "m", b.const([0], np.int64)], [d + "m_s"]),
            mk("Greater", [d + "m_s", b.const(0, np.int64)], [d + "any"])]
        if self.manifest.stages[k].input == IMAGE:
            tn = [mk("Gather", [self.x, d + "active"], [t + "feed"], axis=0)]
        else:
            tn = [mk("Gather", [prev.forward, d + "sel"], [t + "feed"], axis=0)]  # type: ignore[list-item]
        s_nodes, pk, ck, fwd, ood = self._stage(k, t + "feed", "many/")
        tn += s_nodes
        tn += [mk("Unsqueeze", [d + "active", b.const([1], np.int64)], [t + "idx"]),
               mk("ConstantOfShape", [d + "m"], [t + "kvec"], value=helper.make_tensor("v", TensorProto.INT64, [1], [k])),
               mk("ConstantOfShape", [d + "m"], [t + "rvec"], value=helper.make_tensor("v", TensorProto.INT64, [1], [k + 1])),
               mk("ScatterND", [prev.run, t + "idx", t + "rvec"], [t + "run"])]
        summed, exit_conf = None, ck
        if self.combine == "best":
            tn += [mk("Gather", [prev.conf, d + "active"], [t + "held"], axis=0),
                   mk("Greater", [ck, t + "held"], [t + "higher"])]
            tn.append(mk("Or", [t + "higher", ood[1]], [t + "take"]) if ood is not None
                      else mk("Identity", [t + "higher"], [t + "take"]))
            tn += [mk("NonZero", [t + "take"], [t + "take_nz"]),
                   mk("Reshape", [t + "take_nz", b.const([-1], np.int64)], [t + "tsel"]),
                   mk("Gather", [d + "active", t + "tsel"], [t + "tact"], axis=0),
                   mk("Unsqueeze", [t + "tact", b.const([1], np.int64)], [t + "tidx"]),
                   mk("Shape", [t + "tact"], [t + "tm"]),
                   mk("ConstantOfShape", [t + "tm"], [t + "tkvec"],
                      value=helper.make_tensor("v", TensorProto.INT64, [1], [k])),
                   mk("Gather", [pk, t + "tsel"], [t + "tp"], axis=0),
                   mk("Gather", [ck, t + "tsel"], [t + "tc"], axis=0)]
            idx, vals = t + "tidx", (t + "tp", t + "tc", t + "tkvec")
        elif self.combine == "mean":
            tn.append(mk("Gather", [prev.summed, d + "sel"], [t + "sum_prev"], axis=0))  # type: ignore[list-item]
            m_nodes, summed, mean, exit_conf = self._mean(k, t + "sum_prev", pk, t)
            tn += m_nodes
            idx, vals = t + "idx", (mean, exit_conf, t + "kvec")
        else:
            idx, vals = t + "idx", (pk, ck, t + "kvec")
        tn += [mk("ScatterND", [prev.probs, idx, vals[0]], [t + "probs"]),
               mk("ScatterND", [prev.conf, idx, vals[1]], [t + "conf"]),
               mk("ScatterND", [prev.stage, idx, vals[2]], [t + "stage"])]
        out = [t + "probs", t + "conf", t + "stage", t + "run"]
        if self.with_ood:
            if ood is not None:  # this stage's verdict for the inputs it ran on
                tn += [mk("ScatterND", [prev.unknown, t + "idx", ood[1]], [t + "unknown"]),  # type: ignore[list-item]
                       mk("ScatterND", [prev.ood, t + "idx", ood[0]], [t + "ood"])]  # type: ignore[list-item]
            else:
                tn += [mk("Identity", [prev.unknown], [t + "unknown"]), mk("Identity", [prev.ood], [t + "ood"])]  # type: ignore[list-item]
            out += [t + "unknown", t + "ood"]
        if k + 1 < len(self.stages):
            inner, out = self._batch(k + 1, self._result(out, prev, exit_conf, summed, fwd, d + "active",
                                                         ood[1] if ood is not None else None,
                                                         self.doubt.get((k, "many/"))))
            tn += inner
        if_node, res = self._if(d + "any", d, tn, out, prev.held(self.with_ood), "stage%d_many" % (k + 1))
        return nodes + [if_node], res

    # -- the whole graph ------------------------------------------------------------------------
    def build(self, pre: Preprocessing) -> onnx.ModelProto:
        b = self.b
        nodes, self.x = _preprocess_nodes(pre, b)
        s_nodes, p0, c0, fwd, ood0 = self._stage(0, self.x, "")
        nodes += s_nodes
        summed = p0 if self.combine == "mean" else None
        i64 = lambda v: helper.make_tensor("v", TensorProto.INT64, [1], [v])  # noqa: E731
        if self.batch == 1:  # stage 1's stage and run count are constants: no nodes on every input's path
            stage0, run0 = b.const([0], np.int64), b.const([1], np.int64)
        else:
            nodes += [mk("Shape", [c0], ["top/n"]),
                      mk("ConstantOfShape", ["top/n"], ["top/stage0"], value=i64(0)),
                      mk("ConstantOfShape", ["top/n"], ["top/run0"], value=i64(1))]
            stage0, run0 = "top/stage0", "top/run0"
        first = _State(p0, c0, stage0, run0, c0, summed, fwd, exit_unknown=ood0[1] if ood0 is not None else None,
                       exit_doubt=self.doubt.get((0, "")))
        if self.with_ood:
            if ood0 is not None:
                first.unknown, first.ood = ood0[1], ood0[0]
            elif self.batch == 1:
                first.unknown, first.ood = b.const([False], np.bool_), b.const([np.nan], np.float32)
            else:
                nodes += [mk("ConstantOfShape", ["top/n"], ["top/unknown0"],
                             value=helper.make_tensor("v", TensorProto.BOOL, [1], [False])),
                          mk("ConstantOfShape", ["top/n"], ["top/ood0"],
                             value=helper.make_tensor("v", TensorProto.FLOAT, [1], [float("nan")]))]
                first.unknown, first.ood = "top/unknown0", "top/ood0"
        if len(self.stages) == 1:
            final = first.held(self.with_ood)
        elif self.batch == 1:
            o_nodes, final = self._single(1, first)
            nodes += o_nodes
        else:
            nodes += [mk("Squeeze", ["top/n", b.const([0], np.int64)], ["top/n_s"]),
                      mk("Range", [b.const(0, np.int64), "top/n_s", b.const(1, np.int64)], ["top/all"])]
            first.active = "top/all"
            m_nodes, final = self._batch(1, first)
            nodes += m_nodes
        # the last If's outputs become the graph's outputs (no copies)
        keys = [key for _, key in self.types]
        rename = {f: OUTPUT_NAMES[key] for f, key in zip(final, keys)}
        last = nodes[-1]
        if last.op_type == "If" and list(last.output) == list(final):
            del last.output[:]
            last.output.extend(rename[o] for o in final)
        else:
            nodes += [mk("Identity", [o], [rename[o]], name="out/" + rename[o]) for o in final]
        if self.with_ood:  # an unknown answer is class -1, as the staged form's UNKNOWN
            nodes += [mk("ArgMax", ["probs"], ["out/argmax"], axis=1, keepdims=0, name="out/argmax"),
                      mk("Where", ["unknown", b.const(-1, np.int64), "out/argmax"], ["class"], name="out/class")]
        else:
            nodes.append(mk("ArgMax", ["probs"], ["class"], axis=1, keepdims=0, name="out/class"))
        for k, spec in enumerate(self.manifest.stages):
            if k + 1 < len(self.manifest.stages):  # the last stage always answers: its threshold is unused
                b.add(numpy_helper.from_array(np.array(ceil_f32(spec.threshold), np.float32), threshold_name(k)))
            b.add(numpy_helper.from_array(np.array(spec.temperature, np.float32), temperature_name(k)))
            if self.rules[k] is not None:
                b.add(numpy_helper.from_array(np.array(floor_f32(self.rules[k].threshold), np.float32),
                                              ood_threshold_name(k)))
                if self.rules[k].escalate is not None and k + 1 < len(self.manifest.stages):
                    b.add(numpy_helper.from_array(np.array(floor_f32(self.rules[k].escalate), np.float32),
                                                  ood_escalate_name(k)))
        h, w = pre.size
        n = 1 if self.batch == 1 else "N"
        in_shape = [n, h, w] if pre.channels == 1 else [n, h, w, 3]
        outputs = [helper.make_tensor_value_info("class", TensorProto.INT64, [n]),
                   helper.make_tensor_value_info("confidence", TensorProto.FLOAT, [n]),
                   helper.make_tensor_value_info("stage", TensorProto.INT64, [n]),
                   helper.make_tensor_value_info("stages_run", TensorProto.INT64, [n]),
                   helper.make_tensor_value_info("probs", TensorProto.FLOAT, [n, self.classes])]
        if self.with_ood:
            outputs += [helper.make_tensor_value_info("unknown", TensorProto.BOOL, [n]),
                        helper.make_tensor_value_info("ood", TensorProto.FLOAT, [n])]
        graph = helper.make_graph(nodes, "edgeconf_fused_cascade",
                                  [helper.make_tensor_value_info(FUSED_INPUT, TensorProto.UINT8, in_shape)], outputs,
                                  b.inits)
        _declare_conditions(graph)
        scope_initializers(graph)  # a later stage's weights into its branch (see edgeconf.fused)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="edgeconf.fuse")
        model.ir_version = min(8, onnx.IR_VERSION)
        return model


def _declare_conditions(g: onnx.GraphProto) -> None:
    """Declare every If condition a 0-d bool where it is made (TensorRT's rule; the checker verifies it)."""
    for n in g.node:
        if n.op_type == "If" and n.input[0] not in {v.name for v in g.value_info}:
            g.value_info.append(helper.make_tensor_value_info(n.input[0], TensorProto.BOOL, []))
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _declare_conditions(a.g)


# -- public entry points ---------------------------------------------------------------------------------
def build_fused(folder: str, batch: Optional[int] = None) -> Tuple[onnx.ModelProto, Manifest, FusedInfo]:
    """The fused graph of the bundle in ``folder`` (not written), its manifest and the manifest entry for it.

    ``batch=None``: any batch (the unsure subset gathered and scattered; TensorRT 8.5+). ``batch=1``: a graph
    for one input per call, each later stage under an ``If`` on the scalar "unsure" (TensorRT 8.0+).
    """
    if batch not in (None, 1):
        raise ConfigError("batch must be None (any batch) or 1, got %r" % (batch,))
    manifest = read_manifest(folder, verify=True)
    if manifest.combine not in COMBINE_RULES:
        raise FuseError("combine rule %r cannot be fused" % manifest.combine)
    graphs = [_read_stage(folder, manifest, k) for k in range(len(manifest.stages))]
    opset = _check_stages(graphs, manifest)
    protos = [_at_opset(g, opset, "stage %d (%s)" % (k + 1, manifest.stages[k].model)) for k, g in enumerate(graphs)]
    classes = next((g.classes for g in graphs if g.classes is not None), len(manifest.labels))
    model = _Fuser(protos, graphs, manifest, opset, classes, batch).build(manifest.preprocessing)
    trt = tensorrt_check(model)
    info = FusedInfo(model=FUSED_FILE, combine=manifest.combine, opset=opset, classes=classes, batch=batch,
                     stages=[stage_fingerprint(s, manifest.files[s.model]["sha256"]) for s in manifest.stages],
                     tensorrt_min=tensorrt_verdict(trt)[0])
    meta = {"fused": {"schema": FUSED_SCHEMA, "combine": manifest.combine, "classes": classes, "batch": batch,
                      "stages": [{"name": s.name, "score": s.score, "threshold": s.threshold,
                                  "temperature": s.temperature, "input": s.input,
                                  "ood": None if getattr(s, "ood", None) is None else {
                                      "threshold": s.ood.threshold, "score": s.ood.score, "output": s.ood.output,
                                      **({"escalate": s.ood.escalate} if s.ood.escalate is not None else {})}}
                                 for s in manifest.stages]},
            "labels": manifest.labels, "preprocessing": manifest.preprocessing.to_json()}
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key = "edgeconf." + key
        entry.value = json.dumps(value, sort_keys=True)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError("the fused graph fails onnx.checker (%s); please report this"
                          % str(exc).splitlines()[0][:300]) from None
    return model, manifest, info


def _probe_images(pre: Preprocessing, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = pre.size
    shape = (n, h, w) if pre.channels == 1 else (n, h, w, 3)
    imgs = rng.integers(0, 256, shape, dtype=np.uint8)
    imgs[: n // 4] = 0  # blank images: the extremes of the confidence range
    imgs[n // 4: n // 2] = (imgs[n // 4: n // 2] // 64) * 64  # coarse, blocky images
    return imgs


def check_fused(folder: str, images: Optional[np.ndarray] = None, atol: float = 1e-5) -> Tuple[int, float]:
    """Run the bundle staged and fused on the same images; class and stage must be identical, confidence
    within ``atol``. Returns (inputs checked, largest confidence difference)."""
    from edgeconf.bundle import load_bundle

    staged = load_bundle(folder, memo=False, threads=1, form="staged")
    fused = load_bundle(folder, memo=False, threads=1, form="fused")
    try:
        imgs = _probe_images(staged.preprocessing, 96) if images is None else images
        a = staged.classify_batch(list(imgs))
        f = fused.classify_batch(list(imgs))
    finally:
        staged.close()
        fused.close()
    worst = 0.0
    for i, (x, y) in enumerate(zip(a, f)):
        diff = abs(x.confidence - y.confidence)
        worst = max(worst, diff)
        if (x.class_id != y.class_id or x.stage != y.stage or x.stages_run != y.stages_run or diff > atol
                or x.unknown != y.unknown):
            raise ExportError("the fused graph answers input %d differently from the staged cascade (class %d/%d, "
                              "stage %d/%d, confidence %.7f/%.7f); please report this"
                              % (i, x.class_id, y.class_id, x.stage, y.stage, x.confidence, y.confidence))
    return len(a), worst


def fuse_bundle(folder: str, batch: Optional[int] = None, check: bool = True) -> FuseReport:
    """Write the fused graph into the bundle (``fused.onnx``, listed and hashed in the manifest), then check it
    against the staged cascade on probe images (class and stage identical, confidence within 1e-5)."""
    from edgeconf.atomic import folder_lock

    read_manifest(folder, verify=False)  # a missing folder, a file or a folder without a manifest, named as such

    path = os.path.join(folder, FUSED_FILE)
    # locked while read and changed; the graph and the manifest are replaced together, and a failed check puts
    # the earlier files back, so a run that fails leaves the bundle as it was
    with folder_lock(folder, "bundle %s" % folder), FileSet() as files:
        model, manifest, info = build_fused(folder, batch)
        sha, size = files.write(path, model.SerializeToString())
        manifest.files[FUSED_FILE] = {"sha256": sha, "bytes": size}
        manifest.fused = info
        files.write(os.path.join(folder, MANIFEST), manifest_text(manifest))
        files.commit()
        read_manifest(folder, verify=True)
        n, worst = check_fused(folder) if check else (0, 0.0)
    notes = []
    if any(s.input != IMAGE for s in manifest.stages):
        notes.append("early-exit stages: each later stage gathers the features of the stage before it")
    reason = tensorrt_verdict(tensorrt_check(model))[1] if info.tensorrt_min == NO_TENSORRT else None
    return FuseReport(folder, path, sha, size, info.opset, len(manifest.stages), manifest.combine, batch,
                      len(model.graph.node), info.tensorrt_min, n, worst, notes, reason)


def set_fused_values(model: onnx.ModelProto, stage: int, threshold: Optional[float] = None,
                     temperature: Optional[float] = None) -> onnx.ModelProto:
    """Change one stage's threshold and/or temperature in a fused graph (initializers and metadata), in place."""
    check_head_values(threshold, temperature)
    meta = next((p for p in model.metadata_props if p.key == "edgeconf.fused"), None)
    if meta is None:
        raise ConfigError("the model is not an edgeconf fused cascade (no edgeconf.fused metadata)")
    try:
        info = json.loads(meta.value)
        n_stages = len(info["stages"])
    except (ValueError, RecursionError, KeyError, TypeError):
        raise ConfigError("the fused cascade's edgeconf.fused metadata is not valid; rebuild it with: edgeconf fuse "
                          "BUNDLE") from None
    if not 0 <= stage < n_stages:
        raise ConfigError("stage %d does not exist; the fused cascade has %d stages" % (stage, len(info["stages"])))
    inits = {i.name: i for i in model.graph.initializer}
    for value, name, key, conv in ((threshold, threshold_name(stage), "threshold", ceil_f32),
                                   (temperature, temperature_name(stage), "temperature", float)):
        if value is None:
            continue
        if name not in inits and not (key == "threshold" and stage + 1 == len(info["stages"])):
            raise BundleError("the fused graph has no initializer %r; rebuild it with edgeconf fuse" % name)
        if name in inits:
            inits[name].CopyFrom(numpy_helper.from_array(np.array(conv(value), np.float32), name))
        info["stages"][stage][key] = float(value)
    meta.value = json.dumps(info, sort_keys=True)
    return model


def retune_fused(folder: str, manifest: Manifest, stage: int, threshold: Optional[float] = None,
                 temperature: Optional[float] = None, files: Optional[FileSet] = None) -> Optional[str]:
    """Bring a bundle's fused graph in line after ``retune`` changed one stage (call it after the stage file and
    before the manifest are written). Updates ``manifest`` in place: the fused file's hash and the stage's
    recorded fingerprint. ``files``: the :class:`edgeconf.atomic.FileSet` that replaces the stage file and the
    manifest, so the fused graph changes with them (else it is written at once). Returns the fused file's path,
    or None when the bundle has no fused graph."""
    info = manifest.fused
    if info is None:
        return None
    path = os.path.join(folder, info.model)
    model, _ = load_model(path)
    set_fused_values(model, stage, threshold, temperature)
    data = model.SerializeToString()
    if files is not None:
        sha, size = files.write(path, data)
    else:
        with atomic_write(path, "wb") as f:
            f.write(data)
        sha, size = sha256_file(path), len(data)
    manifest.files[info.model] = {"sha256": sha, "bytes": size}
    spec = manifest.stages[stage]
    if stage < len(info.stages):
        info.stages[stage] = stage_fingerprint(spec, manifest.files[spec.model]["sha256"])
    return path


def unfuse_bundle(folder: str) -> bool:
    """Remove the fused graph from a bundle (file and manifest entries). Returns whether there was one."""
    from edgeconf.atomic import folder_lock

    read_manifest(folder, verify=False)  # a missing folder, a file or a folder without a manifest, named as such

    with folder_lock(folder, "bundle %s" % folder):
        manifest = read_manifest(folder, verify=True)
        if manifest.fused is None:
            return False
        model = manifest.fused.model
        manifest.fused = None
        manifest.files.pop(model, None)
        write_manifest(folder, manifest)  # first: a manifest that no longer lists the graph, then the graph goes
        path = os.path.join(folder, model)
        if os.path.exists(path):
            os.remove(path)
    return True


__all__ = ["fuse_bundle", "build_fused", "check_fused", "set_fused_values", "retune_fused", "unfuse_bundle",
           "FuseError", "FuseReport", "HEAD_OUTPUTS", "NO_TENSORRT", "tensorrt_check", "tensorrt_verdict",
           "fused_tensorrt_reason"]
