"""Out-of-distribution heads: a score per answer that says "this input is no class the model knows".

Fitted at export and appended to a stage's ONNX graph, which then also outputs ``ood`` (float, higher = further
out of distribution) and ``unknown`` (``ood > edgeconf_ood_threshold``, the threshold an initializer); the fitted
arrays are also written to the bundle as a plain ``.npz`` (no pickle) and the threshold to the manifest. Methods:

* ``mahalanobis`` (Lee et al., 2018): class means and one shared covariance of a feature tensor (default: the
  input of the layer that makes the logits), fitted on labelled in-distribution inputs; the score is the smallest
  squared Mahalanobis distance to a class mean. Needs no examples of what is no class.
* ``learned`` (outlier exposure, Hendrycks et al., 2019): a small head on a feature map (a 3×3 convolution, ReLU and
  a linear layer; two linear layers on a flat feature) trained with torch to tell in-distribution inputs from
  examples of what is no class (``negatives``: background, merged objects, slivers); the score is its logit.

The threshold is the ``keep`` quantile of the scores of **held-out** in-distribution inputs (never those the head
was fitted on), so about ``1 - keep`` of in-distribution inputs are answered unknown.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeconf.export.errors import CalibrationError, ExportError

METHODS = ("mahalanobis", "learned")
OOD_OUTPUT = "ood"
#: the bundle's folder of fitted OOD parameters (``ood/STAGE.npz``)
OOD_FOLDER = "ood"
UNKNOWN_OUTPUT = "unknown"
THRESHOLD_NAME = "edgeconf_ood_threshold"
_P = "edgeconf_ood_"
#: at least this many labelled inputs per class for class means, and this many in all for a covariance
MIN_PER_CLASS = 5
MIN_SAMPLES = 50
MIN_NEGATIVES = 20


class OodCalibrationError(CalibrationError):
    """The data given to fit an OOD head cannot fit one (one class, too few samples, no negatives)."""


@dataclass
class OodFit:
    """A fitted OOD score: method, the graph tensor it reads, its arrays, its threshold and how it was chosen."""

    method: str
    feature: str
    params: Dict[str, np.ndarray]
    threshold: float = float("inf")
    calibration: Dict[str, Any] = field(default_factory=dict)
    escalate: Optional[float] = None  # lower edge of the doubt band (edgeconf.cascade.OodRule), when fitted

    def score(self, features: np.ndarray) -> np.ndarray:
        """The OOD score of feature rows (numpy; the graph head computes the same)."""
        return _SCORERS[self.method](self.params, np.asarray(features, dtype=np.float64))

    def manifest(self, params_path: Optional[str]) -> Any:
        """The stage's ``ood`` entry for ``edgeconf.json`` (an :class:`edgeconf.bundle.OodSpec`)."""
        from edgeconf.bundle import OodSpec

        return OodSpec(float(self.threshold), self.method, OOD_OUTPUT, self.feature, params_path,
                       json.loads(json.dumps(self.calibration)),
                       None if self.escalate is None else float(self.escalate))

    def save_params(self, path: str) -> None:
        """The arrays as a plain ``.npz`` (read back with ``allow_pickle=False``)."""
        from edgeconf.atomic import atomic_write

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_write(path, "wb") as f:
            np.savez(f, **{k: np.asarray(v, np.float32) for k, v in self.params.items()})


# -- features ----------------------------------------------------------------------------------
def _producer(graph: onnx.GraphProto, name: str) -> Optional[onnx.NodeProto]:
    return next((n for n in graph.node if name in n.output), None)


def default_feature(model: onnx.ModelProto, logits: str = "logits") -> str:
    """The input of the linear layer that makes the logits (Gemm, or MatMul with an optional Add)."""
    g = model.graph
    node = _producer(g, logits)
    if node is not None and node.op_type == "Add":
        init = {i.name for i in g.initializer}
        src = [i for i in node.input if i not in init]
        node = _producer(g, src[0]) if len(src) == 1 else None
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        raise ExportError("cannot find the linear layer that makes %r (it comes from %s); name the feature tensor "
                          "with --feature" % (logits, node.op_type if node is not None else "nowhere"))
    return node.input[0]


def feature_map(model: onnx.ModelProto, feature: str) -> str:
    """The 4-D tensor a flattened feature comes from (a learned head keeps the spatial layout), else ``feature``."""
    node = _producer(model.graph, feature)
    if node is not None and node.op_type in ("Flatten", "Reshape"):
        return node.input[0]
    return feature


def run_features(model: onnx.ModelProto, x: np.ndarray, tensors: Sequence[str], batch: int = 256,
                 threads: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Values of inner ``tensors`` of ``model`` over model-ready inputs ``x``."""
    from edgeconf.export.data import run_outputs

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    known = {o for n in m.graph.node for o in n.output} | {i.name for i in m.graph.input}
    for t in tensors:
        if t not in known:
            raise ExportError("the model has no tensor %r; pick one of its node outputs" % t)
        if t not in have:
            m.graph.output.append(helper.make_empty_tensor_value_info(t))
    input_name = m.graph.input[0].name
    return run_outputs(m.SerializeToString(), np.ascontiguousarray(x), list(tensors), batch=batch, threads=threads,
                       input_name=input_name)


# -- fitting -----------------------------------------------------------------------------------
def _flat(f: np.ndarray) -> np.ndarray:
    return np.asarray(f, dtype=np.float64).reshape(len(f), -1)


def check_labelled(y: np.ndarray, what: str = "the OOD calibration data") -> np.ndarray:
    """Class counts of ``y``; raises when there is one class or too few samples to fit class statistics."""
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise OodCalibrationError("%s needs integer class labels of shape (N,), got %s %s" % (what, y.dtype, y.shape))
    if len(y) < MIN_SAMPLES:
        raise OodCalibrationError("%s has %d samples; an OOD score needs at least %d in-distribution samples"
                                  % (what, len(y), MIN_SAMPLES))
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise OodCalibrationError("%s has one class only (%d); an OOD score needs in-distribution samples of at least "
                                  "two classes" % (what, int(classes[0])))
    small = classes[counts < MIN_PER_CLASS]
    if len(small):
        raise OodCalibrationError("%s has fewer than %d samples of class(es) %s; give at least %d of every class"
                                  % (what, MIN_PER_CLASS, ", ".join(str(int(c)) for c in small[:8]), MIN_PER_CLASS))
    return counts


def fit_mahalanobis(features: np.ndarray, y: np.ndarray, shrinkage: float = 0.01) -> Dict[str, np.ndarray]:
    """Class means and the Cholesky factor ``L`` of the shared precision (``d_c = ||(f - mu_c) L||²``).

    The covariance is shrunk towards a multiple of the identity (``shrinkage`` of its mean variance) so it stays
    invertible when the features outnumber the samples.
    """
    check_labelled(y)
    f = _flat(features)
    classes = np.unique(y)
    means = np.stack([f[y == c].mean(axis=0) for c in classes])
    centred = f - means[np.searchsorted(classes, y)]
    cov = centred.T @ centred / len(f)
    cov += max(shrinkage, 1e-6) * (np.trace(cov) / cov.shape[0] + 1e-12) * np.eye(cov.shape[0])
    try:
        chol = np.linalg.cholesky(np.linalg.inv(cov))
    except np.linalg.LinAlgError:
        raise OodCalibrationError("the feature covariance is singular; give more samples or a larger shrinkage") from None
    return {"means": means, "chol": chol}


def _score_mahalanobis(p: Dict[str, np.ndarray], f: np.ndarray) -> np.ndarray:
    z = _flat(f) @ p["chol"]
    mz = p["means"] @ p["chol"]
    d = (z * z).sum(1)[:, None] - 2.0 * z @ mz.T + (mz * mz).sum(1)[None]
    return d.min(axis=1)


def fit_learned(positives: np.ndarray, negatives: np.ndarray, seed: int = 0, epochs: int = 20, width: int = 16,
                weight_decay: float = 1e-3, threads: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Train the small head (torch, CPU, fixed seed) to output a high logit for ``negatives`` and a low one for
    ``positives``; classes are weighted equally whatever their sizes."""
    from edgeconf.lazy import require

    torch = require("torch", "fitting a learned OOD head")
    if len(negatives) < MIN_NEGATIVES:
        raise OodCalibrationError("a learned OOD head needs at least %d negatives (crops that are no class), got %d; "
                                  "give more or use --method mahalanobis" % (MIN_NEGATIVES, len(negatives)))
    if len(positives) < MIN_SAMPLES:
        raise OodCalibrationError("a learned OOD head needs at least %d in-distribution samples, got %d"
                                  % (MIN_SAMPLES, len(positives)))
    if positives.shape[1:] != negatives.shape[1:]:
        raise OodCalibrationError("positive and negative features differ in shape: %s vs %s"
                                  % (positives.shape[1:], negatives.shape[1:]))
    nn = torch.nn
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    shape = tuple(positives.shape[1:])
    x = torch.from_numpy(np.concatenate([positives, negatives]).astype(np.float32))
    y = torch.from_numpy(np.r_[np.zeros(len(positives)), np.ones(len(negatives))].astype(np.float32))
    mean = x.mean(0, keepdim=True)
    std = x.std(0, keepdim=True) + 1e-2
    x = (x - mean) / std
    if len(shape) == 3:
        net = nn.Sequential(nn.Conv2d(shape[0], width, 3, padding=1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(width * shape[1] * shape[2], 1))
    else:
        x = x.reshape(len(x), -1)
        net = nn.Sequential(nn.Linear(x.shape[1], 4 * width), nn.ReLU(), nn.Linear(4 * width, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=weight_decay)
    w_neg = 0.5 / float(y.mean())
    w_pos = 0.5 / (1.0 - float(y.mean()))
    try:
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), 128):
                b = perm[i:i + 128]
                z = net(x[b]).squeeze(1)
                w = torch.where(y[b] > 0, w_neg, w_pos)
                loss = (nn.functional.binary_cross_entropy_with_logits(z, y[b], reduction="none") * w).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(old_threads)
    net.eval()
    sd = [t.detach().numpy().astype(np.float64) for t in net.state_dict().values()]
    p = {"mean": mean[0].numpy().astype(np.float64), "std": std[0].numpy().astype(np.float64)}
    if len(shape) == 3:
        p.update(conv_w=sd[0], conv_b=sd[1], fc_w=sd[2], fc_b=sd[3])
    else:
        p.update(fc1_w=sd[0], fc1_b=sd[1], fc_w=sd[2], fc_b=sd[3])
    return p


def _score_learned(p: Dict[str, np.ndarray], f: np.ndarray) -> np.ndarray:
    x = (f.reshape((len(f),) + p["mean"].shape) - p["mean"]) / p["std"]
    if "conv_w" in p:
        h = np.maximum(_conv3x3(x, p["conv_w"], p["conv_b"]), 0.0).reshape(len(x), -1)
    else:
        h = np.maximum(x.reshape(len(x), -1) @ p["fc1_w"].T + p["fc1_b"], 0.0)
    return (h @ p["fc_w"].T + p["fc_b"])[:, 0]


def _conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Same-padded 3×3 convolution (N, C, H, W) → (N, K, H, W), as ONNX/torch compute it."""
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, wd))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("nchw,kc->nkhw", xp[:, :, dy:dy + h, dx:dx + wd], w[:, :, dy, dx])
    return out + b[None, :, None, None]


_SCORERS = {"mahalanobis": _score_mahalanobis, "learned": _score_learned}


def choose_threshold(scores: np.ndarray, keep: float) -> float:
    """The score below which a share ``keep`` of held-out in-distribution inputs lies."""
    if not 0.5 <= keep < 1.0:
        raise OodCalibrationError("keep must be in [0.5, 1), got %r" % keep)
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise OodCalibrationError("no held-out in-distribution samples to choose the OOD threshold on")
    return float(np.quantile(s, keep, method="higher"))


# -- the graph head ----------------------------------------------------------------------------
def _const(name: str, value: np.ndarray, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _head_nodes(fit: OodFit, opset: int) -> Tuple[List[onnx.NodeProto], List[onnx.TensorProto]]:
    p = fit.params
    nodes: List[onnx.NodeProto] = []
    inits: List[onnx.TensorProto] = []
    mk = helper.make_node
    if fit.method == "mahalanobis":
        chol = np.asarray(p["chol"], np.float64)
        mz = np.asarray(p["means"], np.float64) @ chol
        inits += [_const(_P + "chol", chol), _const(_P + "mz_t", mz.T), _const(_P + "mz2", (mz * mz).sum(1)[None]),
                  _const(_P + "minus2", np.array(-2.0))]
        nodes += [mk("Flatten", [fit.feature], [_P + "f"], axis=1, name=_P + "flatten"),
                  mk("MatMul", [_P + "f", _P + "chol"], [_P + "z"], name=_P + "whiten"),
                  mk("Mul", [_P + "z", _P + "z"], [_P + "zz"], name=_P + "square"),
                  mk("MatMul", [_P + "z", _P + "mz_t"], [_P + "zm"], name=_P + "cross"),
                  mk("Mul", [_P + "zm", _P + "minus2"], [_P + "zm2"], name=_P + "cross2"),
                  mk("Add", [_P + "zm2", _P + "mz2"], [_P + "part"], name=_P + "part")]
        nodes += _reduce("ReduceSum", _P + "zz", _P + "z2", opset, keepdims=1, inits=inits)
        nodes.append(mk("Add", [_P + "part", _P + "z2"], [_P + "dist"], name=_P + "dist"))
        nodes += _reduce("ReduceMin", _P + "dist", OOD_OUTPUT, opset, keepdims=0, inits=inits)
    elif fit.method == "learned":
        inits += [_const(_P + "mean", p["mean"][None]), _const(_P + "std", p["std"][None]),
                  _const(_P + "fc_w", p["fc_w"]), _const(_P + "fc_b", p["fc_b"]),
                  _const(_P + "out_shape", np.array([-1]), np.int64)]
        src = fit.feature
        nodes += [mk("Sub", [src, _P + "mean"], [_P + "c"], name=_P + "centre"),
                  mk("Div", [_P + "c", _P + "std"], [_P + "x"], name=_P + "scale")]
        if "conv_w" in p:
            inits += [_const(_P + "conv_w", p["conv_w"]), _const(_P + "conv_b", p["conv_b"])]
            nodes += [mk("Conv", [_P + "x", _P + "conv_w", _P + "conv_b"], [_P + "h0"], pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3], name=_P + "conv"),
                      mk("Relu", [_P + "h0"], [_P + "h1"], name=_P + "relu"),
                      mk("Flatten", [_P + "h1"], [_P + "h"], axis=1, name=_P + "flatten")]
        else:
            inits += [_const(_P + "fc1_w", p["fc1_w"]), _const(_P + "fc1_b", p["fc1_b"])]
            nodes += [mk("Flatten", [_P + "x"], [_P + "xf"], axis=1, name=_P + "flatten"),
                      mk("Gemm", [_P + "xf", _P + "fc1_w", _P + "fc1_b"], [_P + "h0"], transB=1, name=_P + "fc1"),
                      mk("Relu", [_P + "h0"], [_P + "h"], name=_P + "relu")]
        nodes += [mk("Gemm", [_P + "h", _P + "fc_w", _P + "fc_b"], [_P + "logit"], transB=1, name=_P + "fc"),
                  mk("Reshape", [_P + "logit", _P + "out_shape"], [OOD_OUTPUT], name=_P + "score")]
    else:
        raise ExportError("unknown OOD method %r; use one of %s" % (fit.method, ", ".join(METHODS)))
    nodes.append(mk("Greater", [OOD_OUTPUT, THRESHOLD_NAME], [UNKNOWN_OUTPUT], name=_P + "unknown"))
    inits.append(_const(THRESHOLD_NAME, np.array(fit.threshold if np.isfinite(fit.threshold) else 3.0e38)))
    return nodes, inits


def _reduce(op: str, src: str, dst: str, opset: int, keepdims: int, inits: list) -> List[onnx.NodeProto]:
    """``op`` over axis 1 (axes as an input from opset 18 for ReduceMin, 13 for ReduceSum)."""
    takes_input = opset >= (13 if op == "ReduceSum" else 18)
    if takes_input:
        name = _P + "axis1"
        if not any(i.name == name for i in inits):
            inits.append(_const(name, np.array([1]), np.int64))
        return [helper.make_node(op, [src, name], [dst], keepdims=keepdims, name=_P + op.lower() + dst)]
    return [helper.make_node(op, [src], [dst], axes=[1], keepdims=keepdims, name=_P + op.lower() + dst)]


def strip_ood_head(model: onnx.ModelProto) -> None:
    """Remove an earlier OOD head (nodes, initializers, outputs, metadata), in place."""
    g = model.graph
    keep = [n for n in g.node if not n.name.startswith(_P)]
    del g.node[:]
    g.node.extend(keep)
    inits = [i for i in g.initializer if not i.name.startswith(_P)]
    del g.initializer[:]
    g.initializer.extend(inits)
    outs = [o for o in g.output if o.name not in (OOD_OUTPUT, UNKNOWN_OUTPUT)]
    del g.output[:]
    g.output.extend(outs)
    props = [p for p in model.metadata_props if p.key != "edgeconf.ood"]
    del model.metadata_props[:]
    model.metadata_props.extend(props)


def add_ood_head(model: onnx.ModelProto, fit: OodFit) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``ood`` and ``unknown``; an earlier OOD head is replaced."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    strip_ood_head(m)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset < 11:
        raise ExportError("the model uses ONNX opset %d; the OOD head needs 11 or newer" % opset)
    names = {o for n in m.graph.node for o in n.output} | {i.name for i in m.graph.initializer}
    if OOD_OUTPUT in names or UNKNOWN_OUTPUT in names:
        raise ExportError("the model already has tensors named %r/%r; rename them before adding the OOD head"
                          % (OOD_OUTPUT, UNKNOWN_OUTPUT))
    nodes, inits = _head_nodes(fit, opset)
    m.graph.node.extend(nodes)
    m.graph.initializer.extend(inits)
    m.graph.output.extend([helper.make_tensor_value_info(OOD_OUTPUT, TensorProto.FLOAT, ["N"]),
                           helper.make_tensor_value_info(UNKNOWN_OUTPUT, TensorProto.BOOL, ["N"])])
    entry = m.metadata_props.add()
    entry.key = "edgeconf.ood"
    entry.value = json.dumps({"score": fit.method, "feature": fit.feature, "threshold": float(fit.threshold)},
                             sort_keys=True)
    return m


def validate_ood_head(model: onnx.ModelProto, fit: OodFit, x: np.ndarray, rtol: float = 1e-3) -> float:
    """onnx.checker, then ONNX Runtime on ``x``: the graph's ``ood`` must equal the numpy score. Returns the max
    relative difference."""
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ExportError("the model with the OOD head fails onnx.checker: %s" % str(exc).splitlines()[0][:300]) from None
    vals = run_features(model, x, [OOD_OUTPUT, fit.feature])
    want = fit.score(vals[fit.feature])
    got = vals[OOD_OUTPUT].astype(np.float64)
    scale = np.maximum(np.abs(want), 1.0)
    diff = float((np.abs(got - want) / scale).max()) if len(want) else 0.0
    if diff > rtol:
        raise ExportError("the OOD head's output differs from the numpy score (max relative diff %.3g); please "
                          "report this" % diff)
    return diff


# -- fitting a bundle stage ----------------------------------------------------------------------
@dataclass
class OodReport:
    """What ``fit_stage_ood`` did and measured (rates on the held-out parts)."""

    stage: str
    fit: OodFit
    model: str
    params: str
    held_out_known: float  # share of held-out in-distribution inputs below the threshold
    held_out_negatives_unknown: Optional[float]  # share of held-out negatives above it

    def to_json(self) -> Dict[str, Any]:
        return {"stage": self.stage, "method": self.fit.method, "feature": self.fit.feature,
                "threshold": self.fit.threshold, "escalate": self.fit.escalate, "model": self.model, "params": self.params,
                "held_out_known": self.held_out_known, "held_out_negatives_unknown": self.held_out_negatives_unknown,
                "calibration": self.fit.calibration}


def _split_idx(n: int, holdout: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    idx = rng.permutation(n)
    m = int(round(n * holdout))
    return np.sort(idx[m:]), np.sort(idx[:m])


def fit_stage_ood(folder: str, x: np.ndarray, y: np.ndarray, negatives: Optional[np.ndarray] = None,
                  stage: int = 0, method: str = "auto", keep: float = 0.995, holdout: float = 0.3,
                  feature: Optional[str] = None, seed: int = 0, threads: Optional[int] = None,
                  extra_positives: Optional[np.ndarray] = None, progress: Any = None,
                  escalate_keep: Optional[float] = None) -> OodReport:
    """Fit an OOD score for one stage of the bundle in ``folder`` and write it into the bundle.

    ``x``/``y``: labelled in-distribution inputs (raw uint8 images or model-ready arrays); ``extra_positives``:
    more in-distribution inputs without labels (e.g. crops of real objects from the deployment's camera), used by
    the ``learned`` method and for the threshold; ``negatives``: inputs that are no class. A share ``holdout`` of
    each set (seeded) is kept out of the fit and chooses the threshold (``keep`` quantile) and the reported rates.
    ``method="auto"``: ``learned`` with negatives, ``mahalanobis`` without. ``escalate_keep`` (< ``keep``) also
    fits a doubt band: its lower edge is that quantile of the same held-out scores, so a share ``keep -
    escalate_keep`` of in-distribution inputs goes on to the next stage, whose own rule judges them.
    """
    from edgeconf.bundle import read_manifest
    from edgeconf.export.data import _session, input_spec, model_ready

    manifest = read_manifest(folder, verify=True)
    if not 0 <= stage < len(manifest.stages):
        raise ExportError("stage %d does not exist; the bundle has %d stages (1…%d)"
                          % (stage + 1, len(manifest.stages), len(manifest.stages)))
    _check_ood_folder(os.path.join(folder, OOD_FOLDER))  # before the fit, which may take minutes
    if method == "auto":
        method = "learned" if negatives is not None and len(negatives) else "mahalanobis"
    if method not in METHODS:
        raise ExportError("unknown OOD method %r; use one of %s" % (method, ", ".join(METHODS)))
    if method == "learned" and (negatives is None or not len(negatives)):
        raise OodCalibrationError("the learned OOD head needs negatives (inputs that are no class); give --negatives "
                                  "or use --method mahalanobis")
    if escalate_keep is not None and not 0.5 <= escalate_keep < keep:
        raise OodCalibrationError("escalate_keep must be at least 0.5 and below keep (%r), got %r" % (keep, escalate_keep))
    if escalate_keep is not None and stage + 1 >= len(manifest.stages):
        raise OodCalibrationError("a doubt band sends inputs on to the next stage; stage %d is the last"
                                  % (stage + 1))
    if not 0.05 <= holdout <= 0.8:
        raise OodCalibrationError("holdout must be between 0.05 and 0.8, got %r" % holdout)
    check_labelled(np.asarray(y))
    spec = manifest.stages[stage]
    if spec.input != "image":
        raise ExportError("stage %s reads another stage's features; fit the OOD score on a stage that takes the image"
                          % spec.name)
    path = os.path.join(folder, spec.model)
    proto = onnx.load(path)
    strip_ood_head(proto)
    sess_spec = input_spec(_session(proto.SerializeToString()))
    pre = manifest.preprocessing

    def ready(a: np.ndarray, what: str) -> np.ndarray:
        return model_ready(np.asarray(a), sess_spec, pre, what)

    xs = ready(x, "the in-distribution data")
    ys = np.asarray(y)
    if feature is None:
        feature = default_feature(proto, spec.logits)
        if method == "learned":
            feature = feature_map(proto, feature)
    rng = np.random.default_rng(seed)
    fit_i, cal_i = _split_idx(len(xs), holdout, rng)
    check_labelled(ys[fit_i], "the fitting part of the in-distribution data")
    feats = run_features(proto, xs, [feature], threads=threads)[feature]
    pos_cal = [feats[cal_i]]
    pos_fit = [feats[fit_i]]
    if extra_positives is not None and len(extra_positives):
        fe = run_features(proto, ready(extra_positives, "the extra positives"), [feature], threads=threads)[feature]
        a, b = _split_idx(len(fe), holdout, rng)
        pos_fit.append(fe[a])
        pos_cal.append(fe[b])
    neg_fit = neg_cal = None
    if negatives is not None and len(negatives):
        fn = run_features(proto, ready(negatives, "the negatives"), [feature], threads=threads)[feature]
        a, b = _split_idx(len(fn), holdout, rng)
        neg_fit, neg_cal = fn[a], fn[b]
    if method == "mahalanobis":
        params = fit_mahalanobis(feats[fit_i], ys[fit_i])
    else:
        assert neg_fit is not None and negatives is not None
        if len(neg_fit) < MIN_NEGATIVES:  # say what the hold-out took, or the count in fit_learned's message puzzles
            need = next(n for n in range(MIN_NEGATIVES, 100 * MIN_NEGATIVES) if n - int(round(n * holdout)) >= MIN_NEGATIVES)
            raise OodCalibrationError("a learned OOD head needs at least %d negatives (crops that are no class) to fit "
                                      "on; %d of the %d given are held out (holdout %g) for the threshold, leaving %d: "
                                      "give at least %d negatives, or use --method mahalanobis"
                                      % (MIN_NEGATIVES, len(neg_cal), len(negatives), holdout, len(neg_fit), need))
        params = fit_learned(np.concatenate(pos_fit), neg_fit, seed=seed, threads=threads)
    fit = OodFit(method, feature, params)
    cal_scores = fit.score(np.concatenate(pos_cal))
    fit.threshold = choose_threshold(cal_scores, keep)
    if escalate_keep is not None:
        fit.escalate = choose_threshold(cal_scores, escalate_keep)
    known = float((cal_scores <= fit.threshold).mean())
    neg_rate = float((fit.score(neg_cal) > fit.threshold).mean()) if neg_cal is not None and len(neg_cal) else None
    fit.calibration = {"keep": keep, "holdout": holdout, "seed": seed, "fit_samples": int(sum(len(p) for p in pos_fit)),
                       "held_out_samples": int(sum(len(p) for p in pos_cal)),
                       "negatives": None if neg_fit is None else int(len(neg_fit) + len(neg_cal)),  # type: ignore[arg-type]
                       "held_out_known": round(known, 6),
                       "held_out_negatives_unknown": None if neg_rate is None else round(neg_rate, 6)}
    if escalate_keep is not None:
        fit.calibration["escalate_keep"] = escalate_keep
    headed = add_ood_head(proto, fit)
    validate_ood_head(headed, fit, xs[cal_i[:64]])
    params_rel = "%s/%s.npz" % (OOD_FOLDER, spec.name)
    _write_ood(folder, manifest, stage, path, headed, fit, params_rel)
    return OodReport(spec.name, fit, spec.model, params_rel, known, neg_rate)


def _check_ood_folder(ood_dir: str) -> None:
    """Refuse, in one line, a bundle whose ``ood`` is something other than a folder (a file in the way)."""
    from edgeconf.errors import OutputError

    if os.path.lexists(ood_dir) and not os.path.isdir(ood_dir):
        raise OutputError("%s exists and is not a folder; the fitted OOD scores go into the bundle's %s/ folder: move "
                          "or delete that file, then run edgeconf ood again" % (ood_dir, OOD_FOLDER))


def _write_ood(folder: str, manifest: Any, stage: int, path: str, headed: onnx.ModelProto, fit: OodFit,
               params_rel: str) -> None:
    """Put the fitted head into the bundle: its arrays, the stage's graph and the manifest, replaced together
    (:class:`edgeconf.atomic.FileSet`) while the bundle is locked; the manifest must still be the one the fit
    started from (another command that changed the bundle meanwhile is not overwritten)."""
    import io

    from edgeconf.atomic import FileSet, folder_lock
    from edgeconf.bundle import MANIFEST, manifest_text, read_manifest
    from edgeconf.errors import OutputError

    spec = manifest.stages[stage]
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v, np.float32) for k, v in fit.params.items()})
    ood_dir = os.path.dirname(os.path.join(folder, params_rel))
    made = not os.path.isdir(ood_dir)
    with folder_lock(folder, "bundle %s" % folder):
        if read_manifest(folder, verify=True).to_json() != manifest.to_json():
            raise OutputError("bundle %s was changed by another command while the OOD score was fitted; run "
                              "edgeconf ood again" % folder)
        try:
            _check_ood_folder(ood_dir)
            try:
                os.makedirs(ood_dir, exist_ok=True)
            except OSError as exc:
                raise OutputError("cannot create the folder %s: %s" % (ood_dir, (exc.strerror or str(exc)).lower())) \
                    from None
            with FileSet() as files:
                params = files.write(os.path.join(folder, params_rel), buf.getvalue())
                model = files.write(path, headed.SerializeToString())
                spec.ood = fit.manifest(params_rel)
                for rel, (sha, size) in ((spec.model, model), (params_rel, params)):
                    manifest.files[rel] = {"sha256": sha, "bytes": size}
                files.write(os.path.join(folder, MANIFEST), manifest_text(manifest))
                files.commit()
                read_manifest(folder, verify=True)
        except BaseException:
            if made:
                try:
                    os.rmdir(ood_dir)
                except OSError:
                    pass
            raise


def load_params(path: str) -> Dict[str, np.ndarray]:
    """Arrays of a fitted OOD score from its ``.npz`` (never unpickles)."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k].astype(np.float64) for k in f.files}

__all__ = ["OodFit", "OodReport", "OodCalibrationError", "METHODS", "fit_mahalanobis", "fit_learned",
           "choose_threshold", "add_ood_head", "strip_ood_head", "validate_ood_head", "fit_stage_ood",
           "default_feature", "feature_map", "run_features", "check_labelled", "load_params"]
