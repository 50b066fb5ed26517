"""The confidence head: nodes appended to a classifier graph so the graph itself outputs ``probs``,
``confidence`` and ``exit``, with the temperature and threshold stored as named initializers and the
same facts written as ``edgeconf.*`` metadata (JSON values).

Works on any classifier ONNX (torch, other tools, hand-built graphs): the logits output is the only
2-D float output, or the one named by ``output``. Re-heading a model that already carries a head
replaces the old head, so exported files can be fed back in.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeconf.backends.onnx_file import numpy_dtype
from edgeconf.confidence import SCORES, score as np_score, softmax
from edgeconf.errors import ConfigError, ModelLoadError
from edgeconf.export.errors import ExportError, NotAClassifierError, UnsupportedOpsetError
from edgeconf.pathcheck import not_a_file

SCHEMA = 1
PREFIX = "edgeconf."
T_NAME = "edgeconf_temperature"
THRESHOLD_NAME = "edgeconf_threshold"
HEAD_OUTPUTS = ("probs", "confidence", "exit")
NODE_PREFIX = "edgeconf/"
#: Every op of the head exists with the semantics used here from opset 11 on (ReduceSum is branched at 13).
MIN_OPSET = 11
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)

ModelLike = Union[onnx.ModelProto, str, "os.PathLike[str]"]


# -- loading and inspecting ----------------------------------------------------------------------
def load_model(model: ModelLike) -> Tuple[onnx.ModelProto, str]:
    """Return a copy of the model and the sha256 of its serialised source."""
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy, hashlib.sha256(model.SerializeToString()).hexdigest()
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise ModelLoadError("model file %s %s" % (path, not_a_file(path)))
    with open(path, "rb") as f:
        data = f.read()
    try:
        proto = onnx.load_from_string(data)
        if proto.graph.ByteSize() == 0 and not proto.graph.node:
            raise ValueError("empty graph")
        # external data (e.g. from torch's dynamo exporter) is resolved relative to the file
        onnx.load_external_data_for_model(proto, os.path.dirname(os.path.abspath(path)))
    except Exception as exc:
        raise ModelLoadError("cannot read %s as an ONNX model (%s); is it a complete .onnx file?"
                             % (path, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)) from None
    return proto, hashlib.sha256(data).hexdigest()


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise UnsupportedOpsetError("the model imports no default-domain ONNX opset; the confidence head needs opset >= %d"
                                % MIN_OPSET)


def _check_opset(model: onnx.ModelProto) -> int:
    v = default_opset(model)
    newest = onnx.defs.onnx_opset_version()
    if v < MIN_OPSET:
        raise UnsupportedOpsetError(
            "the model uses ONNX opset %d; the confidence head cannot extend opsets older than %d. Convert it first: "
            "onnx.version_converter.convert_version(model, 17), or re-export with a newer opset" % (v, MIN_OPSET))
    if v > newest:
        raise UnsupportedOpsetError("the model uses ONNX opset %d but this onnx package knows opsets up to %d; "
                                    "upgrade onnx (pip install -U onnx)" % (v, newest))
    return v


def _dims(vi: onnx.ValueInfoProto) -> Optional[List[Union[int, str, None]]]:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out: List[Union[int, str, None]] = []
    for d in t.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return out


def describe_output(vi: onnx.ValueInfoProto) -> str:
    dims = _dims(vi)
    shape = "?" if dims is None else "[" + ",".join("?" if not isinstance(d, int) else str(d) for d in dims) + "]"
    kind = TensorProto.DataType.Name(vi.type.tensor_type.elem_type) if vi.type.HasField("tensor_type") else "non-tensor"
    return "%s%s %s" % (vi.name, shape, kind.lower())


def read_head_metadata(model: ModelLike) -> Dict[str, Any]:
    """The ``edgeconf.*`` metadata of a model as a dict (prefix removed, JSON values parsed); {} if none."""
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model)[0]
    out: Dict[str, Any] = {}
    for p in proto.metadata_props:
        if p.key.startswith(PREFIX):
            try:
                out[p.key[len(PREFIX):]] = json.loads(p.value)
            except (ValueError, RecursionError):  # not JSON (or nested too deep for json): kept as text
                out[p.key[len(PREFIX):]] = p.value
    return out


def has_head(model: onnx.ModelProto) -> bool:
    return any(n.name.startswith(NODE_PREFIX) for n in model.graph.node)


def find_logits_output(model: onnx.ModelProto, output: Optional[str] = None) -> Tuple[str, Optional[int]]:
    """Name and class count (None if dynamic) of the logits output.

    With ``output`` that output is used; otherwise the single 2-D float output (head outputs excluded).
    """
    head = has_head(model)
    meta = read_head_metadata(model) if head else {}
    outputs = [o for o in model.graph.output if not (head and o.name in HEAD_OUTPUTS)]
    listing = ", ".join(describe_output(o) for o in model.graph.output) or "none"
    if output is None and head and isinstance(meta.get("logits"), str):
        output = meta["logits"]
    if output is not None:
        match = [o for o in outputs if o.name == output]
        if not match:
            raise NotAClassifierError("the model has no output %r (outputs: %s)" % (output, listing))
        cand = match[0]
        dims = _dims(cand)
        if cand.type.tensor_type.elem_type not in FLOAT_TYPES or (dims is not None and len(dims) != 2):
            raise NotAClassifierError("output %r is %s; class logits must be a 2-D float tensor (batch, classes)"
                                      % (output, describe_output(cand)))
    else:
        cands = [o for o in outputs if o.type.tensor_type.elem_type in FLOAT_TYPES and _dims(o) is not None
                 and len(_dims(o)) == 2]  # type: ignore[arg-type]
        if not cands:
            raise NotAClassifierError("the model is not a classifier: it has no 2-D float output (batch, classes) to "
                                      "read logits from (outputs: %s)" % listing)
        if len(cands) > 1:
            raise NotAClassifierError("the model has several candidate logits outputs (%s); choose one with "
                                      "output=NAME (CLI: --output NAME)" % ", ".join(describe_output(o) for o in cands))
        cand = cands[0]
        dims = _dims(cand)
    classes = dims[1] if dims is not None and isinstance(dims[1], int) and dims[1] > 0 else None
    if classes is not None and classes < 2:
        raise NotAClassifierError("output %r has %d class; a classifier needs at least 2 classes" % (cand.name, classes))
    return cand.name, classes


OUTPUT_KINDS = ("auto", "logits", "probs")
#: probabilities are clamped here before the logarithm (float32's smallest normal is 1.2e-38)
PROB_FLOOR = 1e-30


def source_output(model: onnx.ModelProto, output: Optional[str] = None) -> Tuple[str, Optional[int]]:
    """The classifier output a head is built on: for a headed model of probabilities, the original one."""
    if output is None and has_head(model):
        meta = read_head_metadata(model)
        if meta.get("output_kind") == "probs" and isinstance(meta.get("source_output"), str):
            output = meta["source_output"]
            match = [o for o in model.graph.output if o.name == output]
            dims = _dims(match[0]) if match else None
            classes = dims[1] if dims and len(dims) == 2 and isinstance(dims[1], int) and dims[1] > 0 else None
            if match:
                return output, classes
    return find_logits_output(model, output)


def ends_in_softmax(model: onnx.ModelProto, output: str) -> bool:
    """True when ``output`` is made by a Softmax over the class axis (through Identity nodes)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    node = producers.get(output)
    while node is not None and node.op_type == "Identity":
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Softmax" or node.name.startswith(NODE_PREFIX):
        return False
    axis = next((a.i for a in node.attribute if a.name == "axis"), None)
    return axis in (None, 1, -1)


def looks_like_probs(values: np.ndarray, atol: float = 1e-3) -> bool:
    """True when every row is non-negative and sums to 1 (within ``atol``): the outputs are probabilities."""
    z = np.asarray(values, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2 or not np.isfinite(z).all():
        return False
    return bool(z.min() >= -1e-6 and np.abs(z.sum(axis=1) - 1.0).max() <= atol)


def as_logits(values: np.ndarray, kind: str) -> np.ndarray:
    """Outputs as logits for temperature fitting and the numpy reference: log-probabilities for ``probs``."""
    if kind == "probs":
        return np.log(np.maximum(np.asarray(values, dtype=np.float32), np.float32(PROB_FLOOR)))
    return np.asarray(values)


def _rename_tensor(g: onnx.GraphProto, old: str, new: str) -> None:
    for n in g.node:
        n.input[:] = [new if x == old else x for x in n.input]
        n.output[:] = [new if x == old else x for x in n.output]
    for coll in (g.output, g.value_info):
        for v in coll:
            if v.name == old:
                v.name = new


# -- building the head -----------------------------------------------------------------------------
def _strip_head(model: onnx.ModelProto) -> None:
    g = model.graph
    removed = set()
    keep = []
    for n in g.node:
        if n.name.startswith(NODE_PREFIX):
            removed.update(n.output)
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    for coll in (g.output, g.value_info):
        kept = [v for v in coll if v.name not in removed]
        del coll[:]
        coll.extend(kept)
    inits = [i for i in g.initializer if not i.name.startswith("edgeconf_")]
    del g.initializer[:]
    g.initializer.extend(inits)


def _all_names(g: onnx.GraphProto) -> set:
    names = {i.name for i in g.input} | {i.name for i in g.initializer} | {o.name for o in g.output}
    for n in g.node:
        names.update(n.output)
    return names


#: The temperatures a float32 initializer holds as given: above the largest float32 it would become inf, below the
#: smallest normal one it would lose its digits or become 0 (every input divided by 0); either way no input exits.
TEMPERATURE_RANGE = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))


def _check_value(name: str, value: float, low: float, high: Optional[float]) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError("%s must be a number, got %r" % (name, value)) from None
    if not np.isfinite(v) or v < low or (high is not None and v > high) or (name == "temperature" and v <= 0):
        rng = "> 0" if high is None else "in [%g, %g]" % (low, high)
        raise ConfigError("%s must be %s, got %r" % (name, rng, value))
    if name == "temperature":
        with np.errstate(over="ignore"):
            stored = float(np.float32(v))  # what the initializer would hold
        if not TEMPERATURE_RANGE[0] <= stored <= TEMPERATURE_RANGE[1]:
            raise ConfigError("temperature %r does not fit the float32 the graph stores it in; give one from %.8g to "
                              "%.8g" % (value, *TEMPERATURE_RANGE))
    return v


def check_head_values(threshold: Optional[float] = None, temperature: Optional[float] = None) -> None:
    """Raise a ConfigError for a threshold outside [0, 1] or a temperature that is not > 0 or does not fit a
    float32 (:data:`TEMPERATURE_RANGE`); None is not checked."""
    if threshold is not None:
        _check_value("threshold", threshold, 0.0, 1.0)
    if temperature is not None:
        _check_value("temperature", temperature, 0.0, None)


def _head_nodes(logits: str, score: str, opset: int, elem_type: int) -> Tuple[list, list]:
    """Nodes and extra initializers computing probs/confidence/exit from ``logits``."""
    P = NODE_PREFIX
    nodes = []
    inits = [numpy_helper.from_array(np.array(0, np.int64), "edgeconf_idx0"),
             numpy_helper.from_array(np.array(1, np.int64), "edgeconf_idx1")]
    src = logits
    if elem_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [logits], ["edgeconf_logits_f32"], to=TensorProto.FLOAT, name=P + "cast"))
        src = "edgeconf_logits_f32"
    nodes.append(helper.make_node("Div", [src, T_NAME], ["edgeconf_scaled"], name=P + "temperature"))
    nodes.append(helper.make_node("Softmax", ["edgeconf_scaled"], ["probs"], axis=1, name=P + "softmax"))
    if score == "maxp":
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "edgeconf_k1"))
        nodes.append(helper.make_node("TopK", ["probs", "edgeconf_k1"], ["edgeconf_top1", "edgeconf_top1_idx"], axis=1,
                                      name=P + "top1"))
        nodes.append(helper.make_node("Gather", ["edgeconf_top1", "edgeconf_idx0"], ["confidence"], axis=1,
                                      name=P + "maxp"))
    elif score == "margin":
        inits.append(numpy_helper.from_array(np.array([2], np.int64), "edgeconf_k2"))
        nodes.append(helper.make_node("TopK", ["probs", "edgeconf_k2"], ["edgeconf_top2", "edgeconf_top2_idx"], axis=1,
                                      name=P + "top2"))
        nodes.append(helper.make_node("Gather", ["edgeconf_top2", "edgeconf_idx0"], ["edgeconf_p1"], axis=1, name=P + "p1"))
        nodes.append(helper.make_node("Gather", ["edgeconf_top2", "edgeconf_idx1"], ["edgeconf_p2"], axis=1, name=P + "p2"))
        nodes.append(helper.make_node("Sub", ["edgeconf_p1", "edgeconf_p2"], ["confidence"], name=P + "margin"))
    elif score == "entropy":
        # 1 - H / log(C), H = -sum(p * log_softmax): finite even where p underflows to 0
        inits += [numpy_helper.from_array(np.array(0.0, np.float32), "edgeconf_zero"),
                  numpy_helper.from_array(np.array(1.0, np.float32), "edgeconf_one")]
        nodes.append(helper.make_node("LogSoftmax", ["edgeconf_scaled"], ["edgeconf_logp"], axis=1, name=P + "logsoftmax"))
        nodes.append(helper.make_node("Mul", ["probs", "edgeconf_logp"], ["edgeconf_plogp"], name=P + "plogp"))
        if opset >= 13:
            inits.append(numpy_helper.from_array(np.array([1], np.int64), "edgeconf_axes1"))
            nodes.append(helper.make_node("ReduceSum", ["edgeconf_plogp", "edgeconf_axes1"], ["edgeconf_negh"], keepdims=0,
                                          name=P + "sum"))
        else:
            nodes.append(helper.make_node("ReduceSum", ["edgeconf_plogp"], ["edgeconf_negh"], axes=[1], keepdims=0,
                                          name=P + "sum"))
        nodes.append(helper.make_node("Shape", ["probs"], ["edgeconf_shape"], name=P + "shape"))
        nodes.append(helper.make_node("Gather", ["edgeconf_shape", "edgeconf_idx1"], ["edgeconf_c_i64"], axis=0,
                                      name=P + "classes"))
        nodes.append(helper.make_node("Cast", ["edgeconf_c_i64"], ["edgeconf_c"], to=TensorProto.FLOAT, name=P + "classes_f"))
        nodes.append(helper.make_node("Log", ["edgeconf_c"], ["edgeconf_logc"], name=P + "logc"))
        nodes.append(helper.make_node("Div", ["edgeconf_negh", "edgeconf_logc"], ["edgeconf_negh_n"], name=P + "normalise"))
        nodes.append(helper.make_node("Add", ["edgeconf_one", "edgeconf_negh_n"], ["edgeconf_ent_raw"], name=P + "one_minus"))
        nodes.append(helper.make_node("Min", ["edgeconf_ent_raw", "edgeconf_one"], ["edgeconf_ent_hi"], name=P + "clip_hi"))
        nodes.append(helper.make_node("Max", ["edgeconf_ent_hi", "edgeconf_zero"], ["confidence"], name=P + "clip_lo"))
    else:
        raise ConfigError("unknown score %r; choose one of %s" % (score, ", ".join(SCORES)))
    nodes.append(helper.make_node("Less", ["confidence", THRESHOLD_NAME], ["edgeconf_unsure"], name=P + "less"))
    nodes.append(helper.make_node("Not", ["edgeconf_unsure"], ["exit"], name=P + "exit"))
    return nodes, inits


def _set_metadata(model: onnx.ModelProto, items: Dict[str, Any]) -> None:
    """Add or update ``edgeconf.<key>`` entries, leaving every other entry as it was."""
    existing = {p.key: p for p in model.metadata_props}
    for k, v in items.items():
        key = PREFIX + k
        value = json.dumps(v, sort_keys=True)
        if key in existing:
            existing[key].value = value
        else:
            entry = model.metadata_props.add()
            entry.key = key
            entry.value = value


def _preprocessing_json(preprocessing: Any) -> Any:
    if preprocessing is None or preprocessing == "none":
        return None
    if hasattr(preprocessing, "to_json"):
        return preprocessing.to_json()
    if isinstance(preprocessing, dict):
        from edgeconf.preprocess import Preprocessing

        Preprocessing.from_json(preprocessing)  # validates
        return dict(preprocessing)
    raise ConfigError("preprocessing must be an edgeconf.preprocess.Preprocessing or its JSON dict")


def add_confidence_head(model: ModelLike, score: str = "margin", threshold: float = 0.5, temperature: float = 1.0,
                        labels: Optional[Sequence[str]] = None, preprocessing: Any = None, output: Optional[str] = None,
                        validate: bool = True, output_kind: str = "auto") -> onnx.ModelProto:
    """Return a copy of ``model`` whose graph also outputs ``probs``, ``confidence`` and ``exit``.

    ``probs = softmax(logits / T)``; ``confidence`` is ``score`` (maxp, margin or entropy = 1 - H/log C);
    ``exit = confidence >= threshold``. T and the threshold are the initializers ``edgeconf_temperature``
    and ``edgeconf_threshold``. Existing outputs and metadata are kept.

    ``output_kind``: ``logits``, ``probs`` (the output is already probabilities: the head is built on their
    logarithm, exposed as the output ``logits``, so no second softmax flattens them) or ``auto`` (``probs``
    when the output comes from a Softmax node). ``preprocessing``: a Preprocessing or its JSON dict, None to
    keep what the model's metadata says, or ``"none"`` to record explicitly that the model takes model-ready
    arrays.
    """
    proto, sha = load_model(model)
    if score not in SCORES:
        raise ConfigError("unknown score %r; choose one of %s" % (score, ", ".join(SCORES)))
    threshold = _check_value("threshold", threshold, 0.0, 1.0)
    temperature = _check_value("temperature", temperature, 0.0, None)
    opset = _check_opset(proto)
    old_meta = read_head_metadata(proto)
    if output_kind not in OUTPUT_KINDS:
        raise ConfigError("output_kind must be one of %s, got %r" % (", ".join(OUTPUT_KINDS), output_kind))
    logits, classes = source_output(proto, output)
    if has_head(proto):
        _strip_head(proto)
    kind = output_kind
    if kind == "auto":
        kind = "probs" if (old_meta.get("output_kind") == "probs" and old_meta.get("source_output") == logits) \
            or ends_in_softmax(proto, logits) else "logits"
    if logits in HEAD_OUTPUTS:  # e.g. a model whose probabilities are called "probs": the head owns that name
        renamed = "source_" + logits
        if renamed in _all_names(proto.graph):
            raise ExportError("the model's output %r clashes with the edgeconf head and %r is taken too; rename it"
                              % (logits, renamed))
        _rename_tensor(proto.graph, logits, renamed)
        logits = renamed
    if labels is not None:
        labels = [str(x) for x in labels]
        if classes is not None and len(labels) != classes:
            raise ConfigError("%d labels given but the model's output %r has %d classes; give one label per class"
                              % (len(labels), logits, classes))
    g = proto.graph
    clash = sorted(_all_names(g) & set(HEAD_OUTPUTS + (T_NAME, THRESHOLD_NAME)))
    if clash:
        raise ExportError("the model already has tensors named %s; rename them before adding the edgeconf head" % clash)
    elem = next(o for o in g.output if o.name == logits).type.tensor_type.elem_type
    source, runtime_logits, pre_nodes, pre_inits = logits, logits, [], []
    if kind == "probs":  # logits = log(max(p, floor)): softmax(logits / T) is p at T = 1, no second softmax
        runtime_logits = "logits" if "logits" not in _all_names(g) else "edgeconf_logits"
        src = source
        if elem != TensorProto.FLOAT:
            pre_nodes.append(helper.make_node("Cast", [src], ["edgeconf_probs_f32"], to=TensorProto.FLOAT,
                                              name=NODE_PREFIX + "cast_probs"))
            src = "edgeconf_probs_f32"
        pre_inits.append(numpy_helper.from_array(np.array(PROB_FLOOR, np.float32), "edgeconf_prob_floor"))
        pre_nodes.append(helper.make_node("Max", [src, "edgeconf_prob_floor"], ["edgeconf_probs_floored"],
                                          name=NODE_PREFIX + "floor"))
        pre_nodes.append(helper.make_node("Log", ["edgeconf_probs_floored"], [runtime_logits], name=NODE_PREFIX + "log"))
        elem = TensorProto.FLOAT
    nodes, inits = _head_nodes(runtime_logits, score, opset, elem)
    nodes, inits = pre_nodes + nodes, pre_inits + inits
    clash = sorted(_all_names(g) & ({o for n in nodes for o in n.output} | {i.name for i in inits}))
    if clash:
        raise ExportError("the model already has tensors named %s, which the edgeconf head uses" % clash)
    g.node.extend(nodes)
    g.initializer.extend(inits)
    g.initializer.append(numpy_helper.from_array(np.array(temperature, np.float32), T_NAME))
    g.initializer.append(numpy_helper.from_array(np.array(threshold, np.float32), THRESHOLD_NAME))
    dims = _dims(next(o for o in g.output if o.name == logits)) or ["N", None]
    batch = dims[0] if dims[0] is not None else "N"
    if kind == "probs":
        g.output.append(helper.make_tensor_value_info(runtime_logits, TensorProto.FLOAT, [batch, dims[1]]))
    g.output.extend([
        helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, dims[1]]),
        helper.make_tensor_value_info("confidence", TensorProto.FLOAT, [batch]),
        helper.make_tensor_value_info("exit", TensorProto.BOOL, [batch]),
    ])
    meta: Dict[str, Any] = {
        "schema": SCHEMA, "score": score, "threshold": threshold, "temperature": temperature,
        "logits": runtime_logits, "output_kind": kind, "source_output": source,
        "classes": classes, "labels": labels if labels is not None else old_meta.get("labels"),
        "preprocessing": _preprocessing_json(preprocessing) if preprocessing is not None else old_meta.get("preprocessing"),
        "source_sha256": old_meta.get("source_sha256", sha),
    }
    _set_metadata(proto, meta)
    if validate:
        validate_head(proto)
    return proto


# -- validation and retuning ---------------------------------------------------------------------------
def _example_feeds(model: onnx.ModelProto, batch: int = 3, seed: int = 0) -> Optional[Dict[str, np.ndarray]]:
    """Random feeds for every graph input, or None when a non-batch dimension is unknown."""
    rng = np.random.default_rng(seed)
    init = {i.name for i in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in init:
            continue
        dims = _dims(vi)
        if dims is None:
            return None
        shape = []
        for axis, d in enumerate(dims):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif axis == 0:
                shape.append(batch)
            else:
                return None
        dtype = numpy_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = rng.normal(0, 1, shape).astype(dtype) if np.issubdtype(dtype, np.floating) \
            else np.zeros(shape, dtype)
    return feeds


def numpy_head(logits: np.ndarray, score: str, temperature: float, threshold: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """probs, confidence and exit as edgeconf.confidence computes them (the graph must agree)."""
    p = softmax(logits, temperature)
    c = np_score(score, p)
    return p, c, c >= threshold


def validate_head(model: onnx.ModelProto, atol: float = 1e-5) -> None:
    """onnx.checker, then ONNX Runtime: the graph's probs/confidence/exit must equal the numpy computation."""
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ExportError("the model with the confidence head fails onnx.checker: %s" % str(exc).splitlines()[0][:300]) from None
    import onnxruntime as ort

    from edgeconf.backends.threads import Threads

    opts = Threads(reason="export head check").session_options(ort)
    try:
        sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError("ONNX Runtime cannot load the model with the confidence head: %s"
                          % str(exc).splitlines()[0][:300]) from None
    feeds = _example_feeds(model)
    if feeds is None:
        return  # an input has unknown non-batch dimensions: nothing sensible to feed
    meta = read_head_metadata(model)
    names = [meta["logits"], "probs", "confidence", "exit"]
    try:
        logits, probs, conf, ext = sess.run(names, feeds)
    except Exception as exc:
        raise ExportError("ONNX Runtime cannot run the model with the confidence head on random input: %s"
                          % str(exc).splitlines()[0][:300]) from None
    t = float(numpy_helper.to_array(_initializer(model, T_NAME)))
    thr = float(numpy_helper.to_array(_initializer(model, THRESHOLD_NAME)))
    labels = meta.get("labels")
    if labels is not None and len(labels) != logits.shape[1]:
        raise ConfigError("%d labels given but the model outputs %d classes; give one label per class"
                          % (len(labels), logits.shape[1]))
    p, c, e = numpy_head(logits, meta["score"], t, thr)
    if not np.allclose(probs, p, atol=atol) or not np.allclose(conf, c, atol=atol):
        raise ExportError("the head's outputs differ from the numpy computation (max diff %.3g); please report this"
                          % float(np.abs(conf - c).max()))
    borderline = np.abs(c - thr) < 1e-5
    if not np.array_equal(ext[~borderline], e[~borderline]):
        raise ExportError("the head's exit flags differ from the numpy computation; please report this")


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    for init in model.graph.initializer:
        if init.name == name:
            return init
    raise ModelLoadError("the model has no initializer %r; was it exported by edgeconf (add the head first)?" % name)


def head_values(model: ModelLike) -> Tuple[float, float]:
    """(temperature, threshold) as stored in the graph's initializers."""
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model)[0]
    return (float(numpy_helper.to_array(_initializer(proto, T_NAME))),
            float(numpy_helper.to_array(_initializer(proto, THRESHOLD_NAME))))


def set_head_values(model: onnx.ModelProto, threshold: Optional[float] = None,
                    temperature: Optional[float] = None) -> onnx.ModelProto:
    """Change the stored threshold/temperature (initializers and metadata) of a headed model, in place."""
    if not has_head(model):
        raise ModelLoadError("the model has no edgeconf confidence head; add one first (edgeconf export MODEL --out OUT)")
    updates: Dict[str, Any] = {}
    for name, value, init_name, high in (("threshold", threshold, THRESHOLD_NAME, 1.0),
                                         ("temperature", temperature, T_NAME, None)):
        if value is None:
            continue
        v = _check_value(name, value, 0.0, high)
        init = _initializer(model, init_name)
        init.CopyFrom(numpy_helper.from_array(np.array(v, np.float32), init_name))
        updates[name] = v
    _set_metadata(model, updates)
    return model


def retune(path: str, threshold: Optional[float] = None, temperature: Optional[float] = None,
           out: Optional[str] = None) -> str:
    """Change a headed model's threshold and/or temperature without re-export; write to ``out`` (default: in place)."""
    if threshold is None and temperature is None:
        raise ConfigError("nothing to change: give a threshold and/or a temperature")
    proto, _ = load_model(path)
    set_head_values(proto, threshold, temperature)
    validate_head(proto)
    dest = out or path
    tmp = dest + ".tmp"
    onnx.save(proto, tmp)
    os.replace(tmp, dest)
    return dest


__all__ = ["add_confidence_head", "read_head_metadata", "retune", "find_logits_output", "validate_head",
           "head_values", "set_head_values", "numpy_head", "load_model", "has_head", "SCHEMA", "T_NAME",
           "THRESHOLD_NAME", "HEAD_OUTPUTS", "MIN_OPSET", "check_head_values", "TEMPERATURE_RANGE"]
