"""Build TensorRT engines from confidence-aware ONNX models.

The decisions are pure and tested without a GPU: options and their defaults from the device
profile, which builder flags a TensorRT version needs for a precision (calibrator flags up to 10.x,
a QDQ model from 11 on), which layers form the confidence head (kept in FP32), the optimisation
profile's shapes, parser error messages with node names, and how calibration data is batched.
:func:`build_engine` is the only function that drives TensorRT.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edgeconf.engine_format import EngineHeader, decode_metadata, sha256_file, write_engine
from edgeconf.errors import ConfigError, DataError, ModelLoadError

#: Names that mark the confidence head's layers: head node names ("edgeconf/…"), its tensors ("edgeconf_…").
HEAD_PREFIXES = ("edgeconf/", "edgeconf_")
HEAD_OUTPUTS = ("probs", "confidence", "exit")
PRECISIONS = ("fp32", "fp16", "int8")
#: Used only when no device profile is known.
FALLBACK_WORKSPACE_MB = 1024
FALLBACK_PRECISION = "fp32"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
#: First TensorRT release without FP16/INT8 builder flags and calibrators.
STRONGLY_TYPED_ONLY_SINCE = (11, 0)
#: First TensorRT release with IBuilderConfig.set_memory_pool_limit.
MEMORY_POOL_SINCE = (8, 4)
#: First TensorRT release with BuilderFlag.OBEY_PRECISION_CONSTRAINTS (STRICT_TYPES before).
OBEY_PRECISION_SINCE = (8, 2)


#: NVIDIA GPU generations by compute capability major version (Jetson: 5.3 Nano, 6.2 TX2, 7.2 Xavier, 8.7 Orin).
ARCHITECTURES = {5: "Maxwell", 6: "Pascal", 7: "Volta/Turing", 8: "Ampere/Ada", 9: "Hopper", 10: "Blackwell"}


def gpu_architecture(compute_capability: Optional[str]) -> str:
    """``"5.3"`` → ``"Maxwell"``; ``""`` when unknown."""
    try:
        return ARCHITECTURES.get(int(str(compute_capability).split(".")[0]), "")
    except ValueError:
        return ""


def version_tuple(version: str) -> Tuple[int, ...]:
    from edgeconf.backends.tensorrt import version_tuple as vt

    return vt(version)


# -- options ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchProfile:
    """The optimisation profile's batch sizes: min ≤ opt ≤ max."""

    min: int = 1
    opt: int = 1
    max: int = 32

    def to_json(self) -> Dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


DEFAULT_PROFILE = BatchProfile()


def parse_batch_profile(text: str) -> BatchProfile:
    """``"min,opt,max"`` (or one number for a fixed batch) → :class:`BatchProfile`."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ConfigError("--profile must be min,opt,max batch sizes (e.g. 1,8,32), got %r" % text) from None
    if len(nums) == 1:
        nums = nums * 3
    if len(nums) != 3:
        raise ConfigError("--profile needs three batch sizes min,opt,max (e.g. 1,8,32), got %r" % text)
    lo, opt, hi = nums
    if lo < 1 or not lo <= opt <= hi:
        raise ConfigError("--profile must satisfy 1 <= min <= opt <= max, got %d,%d,%d" % (lo, opt, hi))
    return BatchProfile(lo, opt, hi)


@dataclass
class BuildOptions:
    """Everything :func:`build_engine` needs besides the model."""

    precision: str = FALLBACK_PRECISION
    workspace_mb: int = FALLBACK_WORKSPACE_MB
    profile: BatchProfile = DEFAULT_PROFILE
    calib: Optional[str] = None  # calibration data: .npy/.npz or image folder
    calib_cache: Optional[str] = None  # TensorRT calibration cache file (read if present, written after)
    calib_batch: int = 8
    calib_limit: int = 512  # at most this many calibration samples
    qdq_model: Optional[str] = None  # the exporter's QDQ model (INT8 on TensorRT >= 11)
    device_profile: Optional[str] = None  # id of the device profile the defaults came from
    board: Optional[str] = None
    notes: List[str] = field(default_factory=list)


def resolve_options(device_profile: Any = None, precision: Optional[str] = None, workspace_mb: Optional[int] = None,
                    batch_profile: Optional[str] = None, calib: Optional[str] = None, calib_cache: Optional[str] = None,
                    qdq_model: Optional[str] = None, calib_batch: int = 8, calib_limit: int = 512) -> BuildOptions:
    """Combine command-line choices with the device profile's defaults (``device_profile`` may be None).

    Precision defaults to FP16 where the profile lists it (Jetson Nano: FP16), the workspace to the
    profile's ``trt_workspace_mb`` (Nano: small). Contradictions are :class:`ConfigError`.
    """
    notes: List[str] = []
    prof = device_profile
    if prof is not None and getattr(prof, "kind", "") == "x86":
        raise ConfigError("device profile %s has no NVIDIA GPU; TensorRT engines need one (choose --device, e.g. "
                          "x86-nvidia or jetson-nano-4gb)" % prof.id)
    if precision is None:
        if prof is not None:
            precision = "fp16" if "fp16" in prof.precisions else "fp32"
            notes.append("precision %s from device profile %s" % (precision, prof.id))
        else:
            precision = FALLBACK_PRECISION
    if precision not in PRECISIONS:
        raise ConfigError("unknown precision %r; choose one of %s" % (precision, ", ".join(PRECISIONS)))
    if prof is not None:
        if precision == "int8" and not prof.int8:
            arch = gpu_architecture(prof.cuda_compute)
            raise ConfigError("%s cannot run INT8: its %sGPU (compute capability %s) has no INT8 support; FP16 is the "
                              "fast option there: build with --fp16"
                              % (prof.name, arch + " " if arch else "", prof.cuda_compute or "unknown"))
        if precision == "fp16" and "fp16" not in prof.precisions:
            warnings.warn("%s lists no fast FP16 (precisions: %s); TensorRT will fall back to FP32 kernels"
                          % (prof.name, ", ".join(prof.precisions)), UserWarning, stacklevel=2)
    if workspace_mb is None:
        if prof is not None and prof.trt_workspace_mb > 0:
            workspace_mb = int(prof.trt_workspace_mb)
            notes.append("workspace %d MB from device profile %s" % (workspace_mb, prof.id))
        else:
            workspace_mb = FALLBACK_WORKSPACE_MB
    workspace_mb = int(workspace_mb)
    if workspace_mb <= 0:
        raise ConfigError("--workspace must be a positive number of MB, got %d" % workspace_mb)
    if prof is not None and prof.memory_mb and workspace_mb >= prof.memory_mb:
        raise ConfigError("a %d MB workspace does not fit in %s's %d MB; use at most %d MB (the profile's default)"
                          % (workspace_mb, prof.name, prof.memory_mb, prof.trt_workspace_mb))
    profile = parse_batch_profile(batch_profile) if batch_profile else DEFAULT_PROFILE
    if precision == "int8":
        has_cache = bool(calib_cache) and os.path.isfile(str(calib_cache))
        if not calib and not has_cache and not qdq_model:
            raise ConfigError("INT8 needs calibration data: pass --calib DATA (a .npy/.npz of images or model inputs, or "
                              "an image folder; a few hundred representative samples), an existing --calib-cache, or "
                              "the exporter's QDQ model with --qdq")
        if calib and not os.path.exists(calib):
            raise DataError("calibration data %s does not exist" % calib)
    elif calib:
        notes.append("--calib is ignored for %s builds" % precision)
    if qdq_model and not os.path.isfile(qdq_model):
        raise DataError("QDQ model %s does not exist; give the exporter's INT8 model (edgeconf export --int8 writes "
                        "MODEL_qdq.onnx beside MODEL.onnx)" % qdq_model)
    if qdq_model and precision != "int8":
        notes.append("--qdq is ignored for %s builds: it is for INT8 (add --int8)" % precision)
    if calib_batch < 1 or calib_limit < 1:
        raise ConfigError("calibration batch and limit must be >= 1")
    return BuildOptions(precision, workspace_mb, profile, calib, calib_cache, calib_batch, calib_limit, qdq_model,
                        getattr(prof, "id", None), None, notes)


# -- precision plan per TensorRT version -----------------------------------------------------------
@dataclass(frozen=True)
class PrecisionPlan:
    """Builder flags and sources for one precision on one TensorRT version."""

    flags: Tuple[str, ...]  # BuilderFlag member names
    calibrator: bool  # attach an IInt8EntropyCalibrator2
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED (types come from the model)
    use_qdq_model: bool  # build from the QDQ model instead of the plain one
    keep_head_fp32: bool  # set FP32 layer precision on the confidence head
    qdq_ranges: bool = False  # calibrator fed the exporter's ranges and float layers (from the QDQ model)


def plan_precision(trt_version: str, precision: str, source_has_qdq: bool, qdq_model_given: bool,
                   have_calibration: bool) -> PrecisionPlan:
    """Which flags and inputs a build needs.

    TensorRT 8–10: FP16/INT8 builder flags; INT8 by a calibrator, or explicit quantization when the
    model itself has Q/DQ nodes. Given the exporter's QDQ model, the calibrator serves that model's
    activation scales as its cache and the layers the exporter kept in float stay FP32, so the engine
    makes the same decisions as the ONNX INT8 copy. TensorRT ≥ 11 has neither flags nor calibrators:
    INT8 comes from the exporter's QDQ model built strongly typed, and FP16 needs an FP16 model.
    """
    v = version_tuple(trt_version)
    if not v or v[0] < 8:
        raise ConfigError("TensorRT %s is too old; edgeconf builds engines with TensorRT 8.0 or newer" % trt_version)
    if precision not in PRECISIONS:
        raise ConfigError("unknown precision %r" % precision)
    if v[:2] >= STRONGLY_TYPED_ONLY_SINCE:
        if precision == "fp32":
            return PrecisionPlan((), False, source_has_qdq, False, False)
        if precision == "fp16":
            raise ConfigError("TensorRT %s has no FP16 builder flag: precision comes from the model's types. Export an "
                              "FP16 (or QDQ) ONNX model and build it with --fp32, or use TensorRT 10" % trt_version)
        if source_has_qdq:
            return PrecisionPlan((), False, True, False, False)
        if qdq_model_given:
            return PrecisionPlan((), False, True, True, False)
        raise ConfigError("TensorRT %s has no INT8 calibrator: build INT8 from the exporter's QDQ model "
                          "(pass it with --qdq MODEL_qdq.onnx)" % trt_version)
    if precision == "fp32":
        return PrecisionPlan((), False, False, False, False)
    if precision == "fp16":
        return PrecisionPlan(("FP16",), False, False, False, True)
    if source_has_qdq:
        return PrecisionPlan(("FP16", "INT8"), False, False, False, True)
    if qdq_model_given:
        return PrecisionPlan(("FP16", "INT8"), True, False, False, True, qdq_ranges=True)
    if have_calibration:
        return PrecisionPlan(("FP16", "INT8"), True, False, False, True)
    raise ConfigError("INT8 needs calibration data (--calib DATA or an existing --calib-cache) or a QDQ model (--qdq)")


def model_has_qdq(model: Any) -> bool:
    """Whether an ONNX model (proto) holds explicit quantization (QuantizeLinear/DequantizeLinear)."""
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


# -- the exporter's INT8 decisions, for TensorRT 8.x/10.x calibrator builds ------------------------------
def qdq_activation_scales(model: Any) -> Dict[str, float]:
    """``tensor → scale`` of every activation a QDQ model quantizes (QuantizeLinear of a non-initializer).

    Raises for a zero point other than 0: TensorRT quantizes symmetrically only.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    scales: Dict[str, float] = {}
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits:
            continue
        if n.input[1] not in inits:
            raise ConfigError("QuantizeLinear %r has a computed scale; TensorRT calibration needs constant scales" % n.name)
        scale = numpy_helper.to_array(inits[n.input[1]]).reshape(-1)
        zp = numpy_helper.to_array(inits[n.input[2]]).reshape(-1) if len(n.input) > 2 and n.input[2] in inits else [0]
        if scale.size != 1 or any(int(z) != 0 for z in zp):
            raise ConfigError("tensor %r is quantized per channel or with a zero point; TensorRT needs symmetric "
                              "per-tensor activation scales (export with edgeconf's INT8, which makes them)" % n.input[0])
        scales[n.input[0]] = float(scale[0])
    return scales


def trt_version_number(version: str) -> int:
    """The ``NV_TENSORRT_VERSION`` number TensorRT writes into calibration caches (8.6.1 → 8601, 10.3.0 → 100300)."""
    v = (list(version_tuple(version)) + [0, 0, 0])[:3]
    return v[0] * (10000 if v[0] >= 10 else 1000) + v[1] * 100 + v[2]


def calibration_cache_text(scales: Dict[str, float], trt_version: str, algorithm: str = "EntropyCalibration2") -> bytes:
    """A TensorRT calibration cache: a ``TRT-<version>-<algorithm>`` line, then ``tensor: <scale>`` lines with
    each scale as the hex of its big-endian IEEE-754 float32 (the layout TensorRT writes and reads)."""
    import struct

    lines = ["TRT-%d-%s" % (trt_version_number(trt_version), algorithm)]
    for name in sorted(scales):
        lines.append("%s: %s" % (name, struct.pack(">f", float(scales[name])).hex()))
    return ("\n".join(lines) + "\n").encode("ascii")


def int8_float_layers(model: Any) -> List[str]:
    """The layers the exporter kept in float (``edgeconf.int8`` metadata of its QDQ model)."""
    meta = decode_metadata({p.key: p.value for p in model.metadata_props})
    plan = meta.get("int8")
    layers = plan.get("float_layers") if isinstance(plan, dict) else None
    return [str(x) for x in layers] if isinstance(layers, list) else []


def keep_layers_fp32(trt: Any, network: Any, onnx_nodes: Sequence[str]) -> List[str]:
    """FP32 on the TensorRT layers made from the named ONNX nodes (the parser names layers after nodes)."""
    wanted = set(onnx_nodes)
    floats = (trt.float32, trt.float16)
    kept = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        tokens = {t.strip() for t in _SPLIT.split(layer.name or "") if t.strip()}
        if layer.name not in wanted and not (tokens & wanted):
            continue
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outs or not all(o.dtype in floats for o in outs):
            continue
        layer.precision = trt.float32
        for j in range(len(outs)):
            layer.set_output_type(j, trt.float32)
        kept.append(layer.name)
    return kept


# -- confidence head --------------------------------------------------------------------------------
_SPLIT = re.compile(r"[\s\[\]()]+")


def is_head_layer(layer_name: str, output_names: Sequence[str] = ()) -> bool:
    """A TensorRT layer belongs to the confidence head if its name (from the ONNX node name) or one of
    its output tensors carries the head's prefix, or it produces ``probs``/``confidence``/``exit``."""
    for token in _SPLIT.split(layer_name or ""):
        t = token.lstrip("/")
        if t.startswith(HEAD_PREFIXES):
            return True
    for out in output_names:
        if out in HEAD_OUTPUTS or out.lstrip("/").startswith(HEAD_PREFIXES):
            return True
    return False


def keep_head_fp32(trt: Any, network: Any) -> List[str]:
    """Set FP32 precision on the head's float layers (names of the layers changed)."""
    floats = (trt.float32, trt.float16)
    kept = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not is_head_layer(layer.name, [o.name for o in outs]):
            continue
        if not outs or not all(o.dtype in floats for o in outs):
            continue  # shape, index and comparison layers have no float precision to keep
        layer.precision = trt.float32
        for j in range(len(outs)):
            layer.set_output_type(j, trt.float32)
        kept.append(layer.name)
    return kept


# -- shapes and parser errors ----------------------------------------------------------------------
def profile_shapes(name: str, shape: Sequence[int], batch: BatchProfile) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
    """min/opt/max shapes for one network input: the batch axis from ``batch``, the rest fixed."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims[1:]):
        raise ConfigError("input %r has dynamic dimensions besides the batch (%s); export the model with a fixed "
                          "image size" % (name, dims))
    if not dims or dims[0] >= 0:
        return tuple(dims), tuple(dims), tuple(dims)
    rest = tuple(dims[1:])
    return (batch.min,) + rest, (batch.opt,) + rest, (batch.max,) + rest


@dataclass(frozen=True)
class ParserIssue:
    desc: str
    node: int = -1
    node_name: str = ""
    node_op: str = ""


def parser_issue(err: Any) -> ParserIssue:
    """One TensorRT ``ParserError`` → :class:`ParserIssue` (node name/op exist from TensorRT 8.6 on)."""
    def call(attr: str, default: Any) -> Any:
        fn = getattr(err, attr, None)
        try:
            return fn() if callable(fn) else default
        except Exception:
            return default
    return ParserIssue(str(call("desc", str(err))), int(call("node", -1)), str(call("node_name", "") or ""),
                       str(call("node_operator", "") or ""))


def format_parser_errors(issues: Sequence[ParserIssue], nodes: Sequence[Tuple[str, str]], model_path: str,
                         trt_version: str) -> str:
    """A message naming each failing ONNX node (name and operator), from the parser's node index when
    TensorRT does not give the name itself. ``nodes`` is [(name, op_type)] of the ONNX graph."""
    lines = []
    ops = []
    for it in issues:
        name, op = it.node_name, it.node_op
        if 0 <= it.node < len(nodes):
            name = name or nodes[it.node][0] or "#%d" % it.node
            op = op or nodes[it.node][1]
        where = "node %r (%s)" % (name, op) if name or op else "the graph"
        if op:
            ops.append(op)
        lines.append("%s: %s" % (where, it.desc.strip()))
    if not lines:
        lines.append("the parser gave no details")
    hint = ("TensorRT %s may not support %s; re-export with another opset or replace the operator"
            % (trt_version, ", ".join(sorted(set(ops))))) if ops else "check the model with onnx.checker"
    return "TensorRT %s cannot parse %s: %s. %s" % (trt_version, model_path, "; ".join(lines), hint)


# -- calibration data ------------------------------------------------------------------------------
class CalibrationBatcher:
    """Fixed-size batches of model inputs for INT8 calibration (TensorRT wants every batch full).

    The last partial batch is dropped; a dataset smaller than one batch becomes one smaller batch.
    """

    def __init__(self, data: np.ndarray, batch_size: int, input_shape: Sequence[Optional[int]],
                 dtype: str = "float32", limit: Optional[int] = None) -> None:
        data = np.asarray(data)
        if batch_size < 1:
            raise ConfigError("calibration batch size must be >= 1, got %d" % batch_size)
        if data.ndim != len(input_shape):
            raise DataError("calibration data has shape %s but the model input needs %d dimensions (%s)"
                            % (data.shape, len(input_shape), list(input_shape)))
        for axis in range(1, data.ndim):
            want = input_shape[axis]
            if want is not None and want > 0 and data.shape[axis] != want:
                raise DataError("calibration data dimension %d is %d but the model needs %d (data shape %s, model %s)"
                                % (axis, data.shape[axis], want, data.shape, list(input_shape)))
        if data.shape[0] == 0:
            raise DataError("calibration data holds no samples")
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            raise DataError("calibration data contains NaN or infinite values")
        if limit is not None:
            data = data[:limit]
        self.batch_size = min(int(batch_size), int(data.shape[0]))
        self.num_batches = data.shape[0] // self.batch_size
        self.dropped = int(data.shape[0] - self.num_batches * self.batch_size)
        self.data = np.ascontiguousarray(data[:self.num_batches * self.batch_size], dtype=dtype)
        self.sample_shape = tuple(self.data.shape[1:])
        self._next = 0

    def __len__(self) -> int:
        return self.num_batches

    def reset(self) -> None:
        self._next = 0

    def next_batch(self) -> Optional[np.ndarray]:
        """The next full batch (C-contiguous), or None when all were given."""
        if self._next >= self.num_batches:
            return None
        i = self._next
        self._next += 1
        return self.data[i * self.batch_size:(i + 1) * self.batch_size]

    def __iter__(self) -> Iterator[np.ndarray]:
        self.reset()
        while True:
            b = self.next_batch()
            if b is None:
                return
            yield b


def make_entropy_calibrator(trt: Any, cuda: Any, batcher: CalibrationBatcher, cache_path: Optional[str],
                            input_name: str) -> Any:
    """An ``IInt8EntropyCalibrator2`` fed by ``batcher`` (the class is defined here so TensorRT stays lazy)."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = 0
            self.device = cuda.mem_alloc(max(1, batcher.batch_size * int(np.prod(batcher.sample_shape)) *
                                             batcher.data.dtype.itemsize))

        def get_batch_size(self) -> int:
            return batcher.batch_size

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            batch = batcher.next_batch()
            if batch is None:
                return None
            if list(names) != [input_name]:
                raise ConfigError("INT8 calibration feeds one input %r, TensorRT asked for %s" % (input_name, list(names)))
            cuda.memcpy_htod(self.device, np.ascontiguousarray(batch))
            self.batches += 1
            return [int(self.device)]

        def read_calibration_cache(self) -> Optional[bytes]:
            if cache_path and os.path.isfile(cache_path):
                with open(cache_path, "rb") as f:
                    return f.read()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_path:
                os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
                with open(cache_path, "wb") as f:
                    f.write(bytes(cache))

        def free(self) -> None:
            if self.device is not None:
                self.device.free()
                self.device = None

    return EntropyCalibrator()


def load_model_inputs(path: str, input_shape: Sequence[Optional[int]], preprocessing: Any = None,
                      limit: Optional[int] = None) -> np.ndarray:
    """Model-ready inputs from ``path``: a float .npy/.npz already shaped like the model input, or raw
    uint8 images (files, a folder, .npy/.npz) run through ``preprocessing`` (an edgeconf Preprocessing)."""
    if path.lower().endswith((".npy", ".npz")) and os.path.isfile(path):
        try:
            loaded = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError("cannot read %s: %s" % (path, exc)) from None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                key = next((k for k in ("x", "inputs", "images") if k in loaded.files), loaded.files[0] if loaded.files else None)
                if key is None:
                    raise DataError("%s holds no arrays" % path)
                arr = loaded[key]
        else:
            arr = loaded
        if arr.dtype.kind == "f" and arr.ndim == len(input_shape):
            return arr[:limit] if limit else arr
    if preprocessing is None:
        raise DataError("%s holds raw images but the model carries no preprocessing metadata; pass model-ready "
                        "float arrays (.npy shaped %s) instead" % (path, list(input_shape)))
    from edgeconf.datasets import iter_inputs

    images = []
    for _name, img in iter_inputs([path]):
        images.append(img)
        if limit and len(images) >= limit:
            break
    return preprocessing.batch(images)


def preprocessing_from_metadata(meta: Dict[str, Any]) -> Any:
    raw = meta.get("preprocessing")
    if not isinstance(raw, dict):
        return None
    from edgeconf.preprocess import Preprocessing

    return Preprocessing.from_json(raw)


# -- I/O specs from the ONNX model ------------------------------------------------------------------
def onnx_io_specs(model: Any) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Inputs and outputs of an ONNX proto as TensorSpec JSON (dynamic dims → None)."""
    import onnx

    from edgeconf.backends.onnx_file import numpy_dtype

    def spec(vi: Any) -> Dict[str, Any]:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        dtype = numpy_dtype(vi.type.tensor_type.elem_type).name
        return {"name": vi.name, "shape": dims, "dtype": dtype}

    inits = {i.name for i in model.graph.initializer}
    return ([spec(i) for i in model.graph.input if i.name not in inits], [spec(o) for o in model.graph.output])


# -- TensorRT-touching part -------------------------------------------------------------------------
def set_workspace(trt: Any, config: Any, workspace_mb: int) -> str:
    """Cap the builder workspace: memory pool limit (8.4+), ``max_workspace_size`` before. Returns which."""
    nbytes = int(workspace_mb) << 20
    if hasattr(config, "set_memory_pool_limit") and hasattr(trt, "MemoryPoolType"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)
        return "set_memory_pool_limit"
    config.max_workspace_size = nbytes
    return "max_workspace_size"


def network_flags(trt: Any, strongly_typed: bool) -> int:
    """``create_network`` flags: explicit batch before TensorRT 10, strongly typed when asked."""
    enum = trt.NetworkDefinitionCreationFlag
    flags = 0
    if version_tuple(trt.__version__)[:1] < (10,) and hasattr(enum, "EXPLICIT_BATCH"):
        flags |= 1 << int(enum.EXPLICIT_BATCH)
    if strongly_typed:
        if not hasattr(enum, "STRONGLY_TYPED"):
            raise ConfigError("TensorRT %s cannot build strongly typed networks (QDQ builds need 9.1+)" % trt.__version__)
        flags |= 1 << int(enum.STRONGLY_TYPED)
    return flags


def precision_constraint_flag(trt: Any) -> Optional[str]:
    """The builder flag that makes TensorRT obey layer precisions (None if neither exists)."""
    for name in ("OBEY_PRECISION_CONSTRAINTS", "STRICT_TYPES"):
        if hasattr(trt.BuilderFlag, name):
            return name
    return None


def build_engine(onnx_path: str, options: BuildOptions, out_path: str,
                 log: Optional[Callable[[str], None]] = None) -> EngineHeader:
    """Parse ``onnx_path`` with TensorRT, build with ``options`` and write an edgeconf engine file."""
    import onnx

    from edgeconf.backends.tensorrt import import_tensorrt, runtime_of

    say = log or (lambda _msg: None)
    trt, cuda = import_tensorrt()
    version = str(trt.__version__)
    try:
        source_proto = onnx.load(onnx_path, load_external_data=False)
    except Exception as exc:
        raise ModelLoadError("%s is not a readable ONNX model (%s)" % (onnx_path, str(exc)[:200])) from None
    meta = decode_metadata({p.key: p.value for p in source_proto.metadata_props})
    have_calib = bool(options.calib) or bool(options.calib_cache and os.path.isfile(options.calib_cache))
    plan = plan_precision(version, options.precision, model_has_qdq(source_proto), bool(options.qdq_model), have_calib)
    build_path = options.qdq_model if plan.use_qdq_model else onnx_path
    build_proto = onnx.load(build_path, load_external_data=False) if build_path != onnx_path else source_proto
    nodes = [(n.name, n.op_type) for n in build_proto.graph.node]

    cuda.init()
    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    calibrator = None
    try:
        runtime = runtime_of(trt, cuda, 0)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(network_flags(trt, plan.strongly_typed))
        parser = trt.OnnxParser(network, logger)
        say("parsing %s with TensorRT %s" % (build_path, version))
        if hasattr(parser, "parse_from_file"):  # resolves external weights next to the file
            ok = parser.parse_from_file(build_path)
        else:
            with open(build_path, "rb") as f:
                ok = parser.parse(f.read())
        if not ok:
            issues = [parser_issue(parser.get_error(i)) for i in range(parser.num_errors)]
            raise ModelLoadError(format_parser_errors(issues, nodes, build_path, version))
        config = builder.create_builder_config()
        set_workspace(trt, config, options.workspace_mb)
        profile = builder.create_optimization_profile()
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        for t in inputs:
            profile.set_shape(t.name, *profile_shapes(t.name, tuple(t.shape), options.profile))
        config.add_optimization_profile(profile)
        for flag in plan.flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        kept: List[str] = []
        float_layers: List[str] = []
        qdq_proto = None
        if plan.qdq_ranges:
            qdq_proto = onnx.load(str(options.qdq_model), load_external_data=False)
            float_layers = keep_layers_fp32(trt, network, int8_float_layers(qdq_proto))
            say("layers the exporter kept in float, FP32 here: %s" % (", ".join(float_layers) or "none"))
        if plan.keep_head_fp32:
            kept = keep_head_fp32(trt, network)
            constraint = precision_constraint_flag(trt)
            if (kept or float_layers) and constraint:
                config.set_flag(getattr(trt.BuilderFlag, constraint))
            say("confidence head kept in FP32: %d layers" % len(kept))
        if plan.calibrator:
            if len(inputs) != 1:
                raise ConfigError("INT8 calibration supports one model input; this model has %d" % len(inputs))
            data = None
            cache_path = options.calib_cache
            if qdq_proto is not None:  # the exporter's scales become the cache: TensorRT asks for no batches
                cache_path = cache_path or os.path.join(os.path.dirname(os.path.abspath(out_path)),
                                                        os.path.basename(out_path) + ".calib")
                from edgeconf.atomic import write_bytes

                write_bytes(cache_path, calibration_cache_text(qdq_activation_scales(qdq_proto), version))
                shape = [max(1, int(d)) for d in inputs[0].shape]
                data = np.zeros([1] + shape[1:], np.float32)
                say("INT8 ranges from %s (the exporter's calibration)" % os.path.basename(str(options.qdq_model)))
            elif options.calib:
                shape = [None if int(d) < 0 else int(d) for d in inputs[0].shape]
                data = load_model_inputs(options.calib, shape, preprocessing_from_metadata(meta), options.calib_limit)
            else:  # a cache alone: TensorRT reads it and asks for no batches
                shape = [max(1, int(d)) for d in inputs[0].shape]
                data = np.zeros([1] + shape[1:], np.float32)
            batcher = CalibrationBatcher(data, options.calib_batch, shape, "float32", options.calib_limit)
            calibrator = make_entropy_calibrator(trt, cuda, batcher, cache_path, inputs[0].name)
            config.int8_calibrator = calibrator
            calib_profile = builder.create_optimization_profile()
            fixed = (batcher.batch_size,) + batcher.sample_shape
            calib_profile.set_shape(inputs[0].name, fixed, fixed, fixed)
            config.set_calibration_profile(calib_profile)
            say("INT8 calibration: %d batches of %d" % (len(batcher), batcher.batch_size))
        say("building (%s, workspace %d MB, batch %d..%d)" % (options.precision, options.workspace_mb,
                                                               options.profile.min, options.profile.max))
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ModelLoadError("TensorRT could not build %s (see its log above); try a larger --workspace (now %d MB) "
                                 "or another precision" % (build_path, options.workspace_mb))
        plan_bytes = bytes(serialized)
    finally:
        if calibrator is not None:
            calibrator.free()
        ctx.pop()
        detach = getattr(ctx, "detach", None)
        if callable(detach):
            detach()
    ins, outs = onnx_io_specs(source_proto)
    header = EngineHeader(
        tensorrt=version, gpu=runtime.gpu, compute_capability=runtime.compute_capability,
        board=options.device_profile or runtime.board, precision=options.precision, inputs=ins, outputs=outs,
        profile=options.profile.to_json(), workspace_mb=options.workspace_mb, source_onnx=os.path.basename(onnx_path),
        source_onnx_sha256=sha256_file(onnx_path), edgeconf=meta,
        extra={"head_fp32_layers": len(kept), "built_from": os.path.basename(build_path),
               "int8_float_layers": float_layers,
               "int8_ranges_from": os.path.basename(str(options.qdq_model)) if plan.qdq_ranges else None},
    )
    return write_engine(out_path, plan_bytes, header)


__all__ = ["BatchProfile", "BuildOptions", "PrecisionPlan", "CalibrationBatcher", "ParserIssue", "parse_batch_profile",
           "resolve_options", "plan_precision", "model_has_qdq", "is_head_layer", "keep_head_fp32", "profile_shapes",
           "parser_issue", "format_parser_errors", "make_entropy_calibrator", "load_model_inputs", "onnx_io_specs",
           "set_workspace", "network_flags", "precision_constraint_flag", "build_engine", "DEFAULT_PROFILE",
           "qdq_activation_scales", "calibration_cache_text", "trt_version_number", "int8_float_layers",
           "keep_layers_fp32", "gpu_architecture"]
