"""Data and model runs shared by the exporter's steps.

Data is anything :func:`edgeconf.datasets.open_dataset` reads (an .npz of ``x``/``y``, an ImageFolder, IDX
files, a CSV or JSON-lines list, …), a :class:`~edgeconf.datasets.Dataset`, or an ``(x, y)`` pair of arrays:
``x`` raw uint8 images (that a preprocessing turns into model inputs) or model-ready float32 inputs
``(N, ...)``, ``y`` integer class indices. Files are read with their headers checked first, never unpickled.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgeconf.datasets import FORMATS_HELP, Dataset, open_dataset
from edgeconf.errors import DataError, InputValidationError, ModelLoadError
from edgeconf.preprocess import Preprocessing, channel_mismatch

DATA_HELP = FORMATS_HELP
Images = Union[np.ndarray, List[np.ndarray]]


@dataclass
class Data:
    """Inputs (raw images, or model-ready arrays) and labels, with the data set they came from (for class names)."""

    x: Images
    y: Optional[np.ndarray]
    what: str
    dataset: Optional[Dataset] = None
    index: Optional[np.ndarray] = None  # the rows of ``dataset`` this data holds, after a split

    def __len__(self) -> int:
        return len(self.x)

    @property
    def raw(self) -> bool:
        """True for raw uint8 images (a preprocessing makes model inputs of them)."""
        return isinstance(self.x, list) or self.x.dtype == np.uint8

    def image_shape(self) -> Optional[Tuple[int, ...]]:
        """The one shape every raw image has, or None when they differ (or the data is model-ready)."""
        if not self.raw:
            return None
        if isinstance(self.x, list):
            shapes = {im.shape for im in self.x}
            return next(iter(shapes)) if len(shapes) == 1 else None
        return tuple(self.x.shape[1:])

    def labels(self, model_labels: Optional[Sequence[str]], classes: Optional[int], need: bool = True
               ) -> Optional[np.ndarray]:
        """Labels as indices into the model's classes (class names matched by name), range-checked."""
        if self.y is None:
            if need:
                raise DataError("%s has no labels; labelled data is needed: an .npz with y, an ImageFolder (one "
                                "subfolder per class), IDX files with their labels file, or a list of path,label"
                                % self.what)
            return None
        if self.dataset is not None:
            mapped = self.dataset.labels_for(model_labels, classes)
            return mapped if mapped is None or self.index is None else mapped[self.index]
        y = self.y
        if classes is not None and y.size and (int(y.min()) < 0 or int(y.max()) >= classes):
            raise DataError("%s has labels %d..%d but the model answers over %d classes (0..%d); the labels do not "
                            "fit the model" % (self.what, int(y.min()), int(y.max()), classes, classes - 1))
        return y

    def take(self, idx: np.ndarray, what: str) -> "Data":
        x = [self.x[i] for i in idx] if isinstance(self.x, list) else self.x[idx]
        index = idx if self.index is None else self.index[idx]
        return Data(x, None if self.y is None else self.y[idx], what, self.dataset, index)


def as_data(value: Any, what: str = "data", max_pixels: Optional[int] = None, need_labels: bool = False) -> Data:
    """Data from a path or name (any format open_dataset reads), a Dataset, a Data or an ``(x, y)`` pair."""
    if isinstance(value, Data):
        data = value
    elif isinstance(value, (tuple, list)) and len(value) == 2 and not isinstance(value[0], str):
        x, y = value
        if not isinstance(x, list):
            x = np.asarray(x)
            if x.ndim < 2 or x.shape[0] == 0:
                raise DataError("%s x must have a batch axis with at least one sample, got shape %s" % (what, x.shape))
        y = None if y is None else np.asarray(y)
        if y is not None:
            if y.ndim != 1 or y.shape[0] != len(x):
                raise DataError("%s y must have shape (%d,) to match x, got %s" % (what, len(x), y.shape))
            if not np.issubdtype(y.dtype, np.integer):
                if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
                    y = y.astype(np.int64)
                else:
                    raise DataError("%s y must hold integer class indices, got dtype %s" % (what, y.dtype))
            y = y.astype(np.int64)
        data = Data(x, y, what)
    else:
        ds = value if isinstance(value, Dataset) else open_dataset(value, max_pixels=max_pixels)
        x, y = ds.load()
        data = Data(x, y, "%s %s" % (what, ds.source), ds)
    if need_labels and data.y is None:
        raise DataError("%s has no labels; labelled data is needed: an .npz with y, an ImageFolder (one subfolder per "
                        "class), IDX files with their labels file, or a list of path,label" % data.what)
    return data


def split_data(data: Data, fraction: float = 0.5, seed: int = 0) -> Tuple[Data, Data]:
    """Seeded random split into (calibration, test) parts; ``fraction`` goes to calibration."""
    if not 0 < fraction < 1:
        raise DataError("the calibration fraction must be between 0 and 1, got %r" % fraction)
    n = len(data)
    idx = np.random.default_rng(seed).permutation(n)
    m = int(round(fraction * n))
    if m < 1 or m >= n:
        raise DataError("%s has %d samples: too few to split into calibration and test parts" % (data.what, n))
    return data.take(idx[:m], "calibration part of " + data.what), data.take(idx[m:], "test part of " + data.what)


def load_npz(path: str, need_labels: bool = True) -> Tuple[Images, Optional[np.ndarray]]:
    """``(x, y)`` of a data file (any format :func:`as_data` reads; the name is historical)."""
    d = as_data(path, need_labels=need_labels)
    return d.x, d.y


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
    batch = i.shape[0] if i.shape else None
    if isinstance(batch, int):
        raise ModelLoadError("the model's input %r has a fixed batch size of %d; edgeconf runs a model on batches of "
                             "any size: export it with a dynamic batch axis (torch: torch.onnx.export(..., "
                             "dynamic_axes={%r: {0: \"batch\"}, <each output>: {0: \"batch\"}})) and try again"
                             % (i.name, batch, i.name))
    dtype = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}.get(i.type, i.type)
    return InputSpec(i.name, tuple(d if isinstance(d, int) else None for d in i.shape[1:]), dtype)


def check_channels(images: Images, preprocessing: Preprocessing, what: str) -> None:
    """Refuse grey images for a colour preprocessing, or the reverse, as ``edgeconf bench`` does: the
    preprocessing would convert them, and calibrating on images unlike the model's would mean nothing."""
    wrong = channel_mismatch(images, preprocessing)
    if wrong:
        raise DataError("the model takes %s images (preprocessing channels %d) but %s holds %s images; calibrate it "
                        "on the kind of images it was trained on, or give a --preprocessing with the channels it takes"
                        % (wrong[0], preprocessing.channels, what, wrong[1]))


def model_ready(x: Images, spec: InputSpec, preprocessing: Optional[Preprocessing] = None,
                what: str = "data") -> np.ndarray:
    """Raw uint8 images → preprocessing; float arrays → float32. Check the shape against the model input, and
    raw images' channels against the preprocessing's."""
    if isinstance(x, list) or np.asarray(x).dtype == np.uint8:
        if preprocessing is None:
            raise InputValidationError("%s holds raw uint8 images but no preprocessing is known; give model-ready "
                                       "float32 inputs or a preprocessing" % what)
        problem = preprocessing.model_input_problem(spec.shape)
        if problem:
            raise InputValidationError("%s: %s" % (what, problem))
        check_channels(x, preprocessing, what)
        images = list(x)
        x = np.concatenate([preprocessing.batch(images[i:i + 1024]) for i in range(0, len(images), 1024)])
    else:
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.floating):
            x = x.astype(spec.dtype if spec.dtype.startswith("float") else np.float32, copy=False)
        else:
            raise InputValidationError("%s x has dtype %s; use float32 model inputs or uint8 images" % (what, x.dtype))
    want = tuple(spec.shape)
    got = tuple(x.shape[1:])
    if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
        dims = ",".join("?" if w is None else str(w) for w in want)
        hint = ""
        if len(got) == 3 and len(want) == 3:
            if all(w is None or w == g for w, g in zip(want, (got[2], got[0], got[1]))):
                hint = ("; the data is NHWC and the model NCHW: transpose it (x.transpose(0, 3, 1, 2)), or give uint8 "
                        "images with a preprocessing whose \"layout\" is \"NCHW\"")
            elif all(w is None or w == g for w, g in zip(want, (got[1], got[2], got[0]))):
                hint = ("; the data is NCHW and the model NHWC: transpose it (x.transpose(0, 2, 3, 1)), or give uint8 "
                        "images with a preprocessing whose \"layout\" is \"NHWC\"")
        raise InputValidationError("%s has samples of shape %s but the model input %r expects (%s)%s"
                                   % (what, got, spec.name, dims, hint))
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
    from edgeconf.schema.jsonload import loads

    if not os.path.isfile(path):
        raise DataError("labels file %s does not exist" % path)
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise DataError("labels file %s is not UTF-8 text (byte %d); save it as UTF-8" % (path, exc.start)) from None
    except OSError as exc:
        raise DataError("cannot read labels file %s: %s" % (path, os.strerror(exc.errno) if exc.errno else exc)) from None
    if text.lstrip().startswith("["):
        labels = loads(text, "labels file %s" % path, DataError)  # refuses deep nesting before json recurses
        if not isinstance(labels, list) or not all(isinstance(s, str) for s in labels):
            raise DataError("labels file %s must hold a JSON list of strings" % path)
        return labels
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise DataError("labels file %s is empty" % path)
    return labels


__all__ = ["Data", "as_data", "split_data", "load_npz", "run_outputs", "measure_cost", "model_ready", "input_spec", "split",
           "read_labels", "DATA_HELP", "check_channels"]
