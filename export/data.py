"""Data files and model runs shared by the exporter's steps.

Data files are ``.npz`` archives with two arrays: ``x`` (model-ready float32 inputs ``(N, ...)``, or raw
uint8 images ``(N, H, W)`` / ``(N, H, W, 3)`` that the preprocessing turns into model inputs) and ``y``
(``(N,)`` integer class indices). They are read with ``allow_pickle=False``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgeconf.errors import DataError, InputValidationError, ModelLoadError
from edgeconf.preprocess import Preprocessing

DATA_HELP = ("an .npz file with arrays x (model-ready float32 inputs (N, ...), or raw uint8 images (N, H, W) or "
             "(N, H, W, 3) that the preprocessing converts) and y ((N,) integer class indices)")


def load_npz(path: str, need_labels: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``(x, y)`` from an .npz data file (see the module doc)."""
    if not os.path.isfile(path):
        raise DataError("data file %s does not exist" % path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:
        raise DataError("cannot read %s as an .npz archive of arrays (%s); expected %s"
                        % (path, str(exc)[:160], DATA_HELP)) from None
    if "x" not in arrays:
        raise DataError("%s has no array 'x' (it has: %s); expected %s" % (path, ", ".join(arrays) or "none", DATA_HELP))
    x = arrays["x"]
    y = arrays.get("y")
    if need_labels and y is None:
        raise DataError("%s has no array 'y' of labels (it has: %s); expected %s" % (path, ", ".join(arrays), DATA_HELP))
    if y is not None:
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError("%s: y must have shape (%d,) to match x %s, got %s" % (path, x.shape[0], x.shape, y.shape))
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError("%s: y must hold integer class indices, got dtype %s" % (path, y.dtype))
    return x, (y.astype(np.int64) if y is not None else None)


def _session(path: Union[str, bytes], threads: Optional[int] = None, batch: int = 256):
    """An ONNX Runtime CPU session with the runtime's threading policy (``threads`` overrides it)."""
    import onnxruntime as ort

    from edgeconf.backends.threads import choose_threads

    opts = choose_threads(threads, batch).session_options(ort)
    try:
        return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        where = path if isinstance(path, str) else "<model>"
        raise ModelLoadError("ONNX Runtime cannot load %s: %s" % (where, str(exc).splitlines()[0][:300])) from None


@dataclass
class InputSpec:
    name: str
    shape: Tuple[Any, ...]  # without the batch axis; None for dynamic dims
    dtype: str


def input_spec(sess) -> InputSpec:
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ModelLoadError("the model has %d inputs (%s); the exporter handles single-input classifiers"
                             % (len(inputs), ", ".join(i.name for i in inputs)))
    i = inputs[0]
    dtype = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}.get(i.type, i.type)
    return InputSpec(i.name, tuple(d if isinstance(d, int) else None for d in i.shape[1:]), dtype)


def model_ready(x: np.ndarray, spec: InputSpec, preprocessing: Optional[Preprocessing] = None,
                what: str = "data") -> np.ndarray:
    """Raw uint8 images → preprocessing; float arrays → float32. Check the shape against the model input."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        if preprocessing is None:
            raise InputValidationError("%s holds raw uint8 images %s but no preprocessing is known; give model-ready "
                                       "float32 inputs or a preprocessing" % (what, x.shape))
        x = preprocessing.batch(list(x))
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(spec.dtype if spec.dtype.startswith("float") else np.float32, copy=False)
    else:
        raise InputValidationError("%s x has dtype %s; use float32 model inputs or uint8 images" % (what, x.dtype))
    want = tuple(spec.shape)
    got = tuple(x.shape[1:])
    if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
        dims = ",".join("?" if w is None else str(w) for w in want)
        raise InputValidationError("%s has samples of shape %s but the model input %r expects (%s)"
                                   % (what, got, spec.name, dims))
    if not np.isfinite(x).all():
        raise InputValidationError("%s contains NaN or infinite values" % what)
    return np.ascontiguousarray(x)


def run_outputs(model: Union[str, bytes], x: np.ndarray, outputs: Sequence[str], batch: int = 256,
                preprocessing: Optional[Preprocessing] = None, threads: Optional[int] = None,
                input_name: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Run ``model`` over ``x`` in batches and concatenate the named outputs."""
    sess = _session(model, threads)
    if input_name is None:
        spec = input_spec(sess)
        x = model_ready(x, spec, preprocessing)
        input_name = spec.name
    parts: Dict[str, List[np.ndarray]] = {n: [] for n in outputs}
    for i in range(0, x.shape[0], batch):
        vals = sess.run(list(outputs), {input_name: x[i:i + batch]})
        for n, v in zip(outputs, vals):
            parts[n].append(v)
    return {n: np.concatenate(v) if v else np.zeros((0,)) for n, v in parts.items()}


def measure_cost(model: Union[str, bytes], x: np.ndarray, repeats: int = 200, warmup: int = 20,
                 input_name: Optional[str] = None) -> Dict[str, Any]:
    """Median per-image time of ONNX Runtime on this CPU (1 thread, batch 1), over ``repeats`` single-image runs."""
    sess = _session(model, threads=1, batch=1)
    name = input_name or sess.get_inputs()[0].name
    out = [sess.get_outputs()[0].name]
    n = x.shape[0]
    if n == 0:
        raise DataError("cannot measure a model's cost without at least one input")
    for i in range(warmup):
        sess.run(out, {name: x[i % n:i % n + 1]})
    times = []
    for i in range(repeats):
        xi = x[i % n:i % n + 1]
        t0 = time.perf_counter()
        sess.run(out, {name: xi})
        times.append(time.perf_counter() - t0)
    import platform

    return {"ms": round(float(np.median(times)) * 1e3, 5), "how": "median of %d runs, onnxruntime CPU, 1 thread, batch 1"
            % repeats, "device": platform.processor() or platform.machine()}


def split(x: np.ndarray, y: np.ndarray, fraction: float = 0.5, seed: int = 0
          ) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """Seeded random split into (calibration, test) parts; ``fraction`` goes to calibration."""
    if not 0 < fraction < 1:
        raise DataError("the calibration fraction must be between 0 and 1, got %r" % fraction)
    idx = np.random.default_rng(seed).permutation(x.shape[0])
    m = int(round(fraction * x.shape[0]))
    a, b = idx[:m], idx[m:]
    return (x[a], y[a]), (x[b], y[b])


def read_labels(path: str) -> List[str]:
    """Class names from a text file (one per line) or a JSON list."""
    import json

    if not os.path.isfile(path):
        raise DataError("labels file %s does not exist" % path)
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        try:
            labels = json.loads(text)
        except ValueError as exc:
            raise DataError("labels file %s is not valid JSON: %s" % (path, exc)) from None
        if not isinstance(labels, list) or not all(isinstance(s, str) for s in labels):
            raise DataError("labels file %s must hold a JSON list of strings" % path)
        return labels
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise DataError("labels file %s is empty" % path)
    return labels


__all__ = ["load_npz", "run_outputs", "measure_cost", "model_ready", "input_spec", "split", "read_labels", "DATA_HELP"]
