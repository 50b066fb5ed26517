"""The ``tensorrt`` backend: run an edgeconf engine file with TensorRT and pycuda.

TensorRT and pycuda are imported only when this backend is selected. Two API generations are
supported, one small adapter each (the way torch2trt's runtime keeps one code path per generation):

* ``bindings`` — TensorRT 8.0–8.4 (Jetson Nano, JetPack 4.6.x): binding indices,
  ``set_binding_shape``, ``execute_async_v2``.
* ``tensors`` — TensorRT 8.5+ and 10.x (JetPack 6, desktop GPUs): named tensors,
  ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``.

Everything that decides something (API choice, dtype and shape mapping, batch range checks, output
casts) is a pure function tested without a GPU; the adapters only call TensorRT.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from edgeconf.backends.base import Runner, TensorSpec
from edgeconf.engine_format import (DeviceRuntime, EngineHeader, check_compatible, compatibility, read_engine,
                                    rebuild_command)
from edgeconf.errors import (BackendUnavailableError, ConfigError, EdgeconfError, InputValidationError,
                             MissingDependencyError, ModelLoadError)
from edgeconf.lazy import install_hint, require

BINDINGS = "bindings"
TENSORS = "tensors"
#: First TensorRT release with the named-tensor API (``set_tensor_address`` / ``execute_async_v3``).
TENSOR_API_SINCE = (8, 5)
#: First TensorRT release without the bindings API.
BINDINGS_REMOVED_IN = (10, 0)

#: TensorRT ``DataType`` member name → numpy dtype name.
TRT_TO_NUMPY = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
    "DOUBLE": "float64",
}


class BatchOutOfProfileError(InputValidationError):
    """The batch size is outside the engine's optimisation profile."""


class EngineExecutionError(EdgeconfError):
    """TensorRT refused a shape or failed to execute the engine."""


# -- pure decisions -------------------------------------------------------------------------------
def version_tuple(version: str) -> Tuple[int, ...]:
    out = []
    for part in str(version).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def select_api(version: str, has_tensor_api: bool = True, has_binding_api: bool = True) -> str:
    """Which API generation to drive for TensorRT ``version`` given what the module offers.

    Named tensors from 8.5 on (the bindings API is deprecated there and gone in 10), bindings
    before. If the preferred API is missing from the module, the other one is used when present.
    """
    v = version_tuple(version)
    if not v or v[0] < 8:
        raise BackendUnavailableError(
            "TensorRT %s is not supported by edgeconf (it needs TensorRT 8.0 or newer: JetPack 4.6+ on a Jetson)" % version)
    preferred = TENSORS if v[:2] >= TENSOR_API_SINCE else BINDINGS
    if v[:2] >= BINDINGS_REMOVED_IN:
        has_binding_api = False
    available = {TENSORS: has_tensor_api, BINDINGS: has_binding_api}
    if available[preferred]:
        return preferred
    other = BINDINGS if preferred == TENSORS else TENSORS
    if available[other]:
        return other
    raise BackendUnavailableError(
        "this tensorrt module (version %s) offers neither the named-tensor API (set_tensor_address, execute_async_v3) "
        "nor the bindings API (execute_async_v2); reinstall TensorRT's Python bindings" % version)


def api_of_module(trt: Any) -> str:
    """:func:`select_api` for an imported ``tensorrt`` module, from its version and attributes."""
    ctx = getattr(trt, "IExecutionContext", None)
    eng = getattr(trt, "ICudaEngine", None)
    has_tensor = ctx is not None and hasattr(ctx, "execute_async_v3") and hasattr(ctx, "set_tensor_address")
    has_binding = (ctx is not None and hasattr(ctx, "execute_async_v2") and eng is not None
                   and hasattr(eng, "binding_is_input"))
    return select_api(str(getattr(trt, "__version__", "0")), has_tensor, has_binding)


def numpy_dtype(trt_dtype: Any) -> str:
    """TensorRT ``DataType`` (or its name) → numpy dtype name; unsupported types raise."""
    name = getattr(trt_dtype, "name", None) or str(trt_dtype)
    name = name.split(".")[-1].upper()
    try:
        return TRT_TO_NUMPY[name]
    except KeyError:
        raise BackendUnavailableError(
            "engine tensor type %s has no numpy equivalent; rebuild the engine with float32/float16/int32 I/O" % name) from None


def shape_from_dims(dims: Iterable[int]) -> Tuple[Optional[int], ...]:
    """TensorRT dims (``-1`` for dynamic) → a TensorSpec shape (``None`` for dynamic)."""
    return tuple(None if int(d) < 0 else int(d) for d in dims)


@dataclass(frozen=True)
class BatchRange:
    """The batch sizes an engine's optimisation profile accepts."""

    min: int
    opt: int
    max: int

    def check(self, batch: int, name: str, engine: str = "the engine") -> None:
        if not self.min <= batch <= self.max:
            raise BatchOutOfProfileError(
                "batch size %d for input %r is outside %s's optimisation profile (%d..%d); split the batch into chunks "
                "of at most %d, or rebuild the engine with a wider range: edgeconf engine MODEL.onnx --profile %d,%d,%d"
                % (batch, name, engine, self.min, self.max, self.max, min(self.min, batch), self.opt, max(self.max, batch)))

    def to_json(self) -> Dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


def batch_range(min_shape: Sequence[int], opt_shape: Sequence[int], max_shape: Sequence[int]) -> BatchRange:
    """The batch range of one input from its profile's min/opt/max shapes (batch = axis 0)."""
    if not len(min_shape):
        return BatchRange(1, 1, 1)
    return BatchRange(int(min_shape[0]), int(opt_shape[0]), int(max_shape[0]))


def check_static_dims(name: str, engine_shape: Sequence[Optional[int]], value_shape: Sequence[int],
                      profile: Optional[Tuple[Sequence[int], Sequence[int], Sequence[int]]] = None) -> None:
    """Non-batch dims must equal the engine's (or lie in the profile for dynamic ones)."""
    if len(engine_shape) != len(value_shape):
        raise InputValidationError("input %r needs %d dimensions, got shape %s" % (name, len(engine_shape), tuple(value_shape)))
    for axis in range(1, len(engine_shape)):
        want, got = engine_shape[axis], int(value_shape[axis])
        if want is not None and want != got:
            raise InputValidationError("input %r dimension %d must be %d, got %d" % (name, axis, want, got))
        if want is None and profile is not None:
            lo, hi = int(profile[0][axis]), int(profile[2][axis])
            if not lo <= got <= hi:
                raise BatchOutOfProfileError("input %r dimension %d is %d, outside the engine's profile (%d..%d)"
                                             % (name, axis, got, lo, hi))


def public_dtypes(engine_dtypes: Dict[str, str], header_specs: Sequence[Dict[str, Any]]) -> Dict[str, str]:
    """The dtype each tensor has for the caller: the source ONNX's (from the header) where it is known.

    TensorRT 8 has no int64 I/O and turns ONNX int64 tensors into int32; the runner casts back so it
    returns what the ONNX runner returns.
    """
    known = {s.get("name"): s.get("dtype") for s in header_specs if isinstance(s, dict)}
    out = {}
    for name, dt in engine_dtypes.items():
        want = known.get(name)
        out[name] = want if isinstance(want, str) and _castable(dt, want) else dt
    return out


def _castable(engine_dt: str, public_dt: str) -> bool:
    if engine_dt == public_dt:
        return True
    pairs = {("int32", "int64"), ("float16", "float32"), ("int32", "bool"), ("uint8", "bool"), ("int8", "bool")}
    return (engine_dt, public_dt) in pairs or (public_dt, engine_dt) in pairs


# -- device information ---------------------------------------------------------------------------
def board_model(root: str = "/") -> Optional[str]:
    """The board's model string from the device tree (Jetson), or None."""
    path = os.path.join(root, "proc", "device-tree", "model")
    try:
        with open(path, "rb") as f:
            text = f.read().replace(b"\x00", b"").decode("utf-8", "replace").strip()
        return text or None
    except OSError:
        return None


def runtime_of(trt: Any, cuda: Any, device: int = 0) -> DeviceRuntime:
    """TensorRT version and GPU (name, compute capability) of ``device``, through pycuda."""
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return DeviceRuntime(str(trt.__version__), str(dev.name()), "%d.%d" % (major, minor), board_model())


def import_tensorrt() -> Tuple[Any, Any]:
    """``tensorrt`` and ``pycuda.driver``, or a MissingDependencyError naming what to install."""
    trt = require("tensorrt", "the tensorrt backend")
    if not hasattr(trt, "__version__"):  # an empty namespace package (e.g. a folder named tensorrt on sys.path)
        raise MissingDependencyError("tensorrt is needed for the tensorrt backend but %r is not TensorRT's Python "
                                     "package; install it: %s" % (getattr(trt, "__path__", trt), install_hint("tensorrt")))
    cuda = require("pycuda.driver", "the tensorrt backend (device buffers)")
    return trt, cuda


# -- API adapters (the only code that touches TensorRT objects) -----------------------------------
class _BindingsIO:
    """TensorRT 8.0–8.4: binding indices (``get_binding_*``, ``set_binding_shape``, ``execute_async_v2``)."""

    generation = BINDINGS

    def __init__(self, trt: Any, engine: Any, context: Any) -> None:
        self.engine, self.context = engine, context
        per_profile = engine.num_bindings // max(1, int(getattr(engine, "num_optimization_profiles", 1)))
        self.names = [engine.get_binding_name(i) for i in range(per_profile)]
        self.index = {n: engine.get_binding_index(n) for n in self.names}

    def tensors(self) -> List[Tuple[str, bool, Any, Tuple[int, ...]]]:
        e = self.engine
        return [(n, bool(e.binding_is_input(self.index[n])), e.get_binding_dtype(self.index[n]),
                 tuple(e.get_binding_shape(self.index[n]))) for n in self.names]

    def profile(self, name: str) -> Tuple[Sequence[int], Sequence[int], Sequence[int]]:
        lo, opt, hi = self.engine.get_profile_shape(0, self.index[name])
        return tuple(lo), tuple(opt), tuple(hi)

    def set_input_shape(self, name: str, shape: Tuple[int, ...]) -> bool:
        return bool(self.context.set_binding_shape(self.index[name], shape))

    def shape(self, name: str) -> Tuple[int, ...]:
        return tuple(self.context.get_binding_shape(self.index[name]))

    def execute(self, addresses: Dict[str, int], stream_handle: int) -> bool:
        bindings = [0] * self.engine.num_bindings
        for name, ptr in addresses.items():
            bindings[self.index[name]] = int(ptr)
        return bool(self.context.execute_async_v2(bindings=bindings, stream_handle=stream_handle))


class _TensorsIO:
    """TensorRT 8.5+ / 10.x: named tensors (``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``)."""

    generation = TENSORS

    def __init__(self, trt: Any, engine: Any, context: Any) -> None:
        self.engine, self.context = engine, context
        self.input_mode = trt.TensorIOMode.INPUT
        self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]

    def tensors(self) -> List[Tuple[str, bool, Any, Tuple[int, ...]]]:
        e = self.engine
        return [(n, e.get_tensor_mode(n) == self.input_mode, e.get_tensor_dtype(n), tuple(e.get_tensor_shape(n)))
                for n in self.names]

    def profile(self, name: str) -> Tuple[Sequence[int], Sequence[int], Sequence[int]]:
        if hasattr(self.engine, "get_tensor_profile_shape"):
            lo, opt, hi = self.engine.get_tensor_profile_shape(name, 0)
        else:  # 8.5/8.6 builds without the tensor form
            lo, opt, hi = self.engine.get_profile_shape(0, name)
        return tuple(lo), tuple(opt), tuple(hi)

    def set_input_shape(self, name: str, shape: Tuple[int, ...]) -> bool:
        return bool(self.context.set_input_shape(name, shape))

    def shape(self, name: str) -> Tuple[int, ...]:
        return tuple(self.context.get_tensor_shape(name))

    def execute(self, addresses: Dict[str, int], stream_handle: int) -> bool:
        for name, ptr in addresses.items():
            if not self.context.set_tensor_address(name, int(ptr)):
                return False
        return bool(self.context.execute_async_v3(stream_handle))


_ADAPTERS = {BINDINGS: _BindingsIO, TENSORS: _TensorsIO}


# -- buffers --------------------------------------------------------------------------------------
class _Buffer:
    """One tensor's device allocation and page-locked host staging array, grown on demand."""

    def __init__(self, cuda: Any, dtype: str) -> None:
        self.cuda = cuda
        self.dtype = np.dtype(dtype)
        self.capacity = 0  # elements
        self.device: Any = None
        self.host: Optional[np.ndarray] = None

    def ensure(self, elements: int) -> None:
        if elements <= self.capacity and self.device is not None:
            return
        self.free()
        n = max(1, int(elements))
        self.device = self.cuda.mem_alloc(n * self.dtype.itemsize)
        self.host = self.cuda.pagelocked_empty(n, self.dtype)
        self.capacity = n

    @property
    def address(self) -> int:
        return int(self.device)

    def free(self) -> None:
        if self.device is not None:
            self.device.free()
        self.device, self.host, self.capacity = None, None, 0


# -- the runner -----------------------------------------------------------------------------------
class TensorRTRunner(Runner):
    """An engine file loaded in TensorRT, with pycuda device buffers; outputs match the ONNX runner's."""

    backend = "tensorrt"

    def __init__(self, path: str, device: int = 0, check_version: bool = True) -> None:
        self.path = path
        self._closed = True
        engine_file = read_engine(path, verify=True, warn_plain=False)  # typed errors before importing TensorRT
        self.header: Optional[EngineHeader] = engine_file.header
        trt, cuda = import_tensorrt()
        self._trt, self._cuda = trt, cuda
        self.api = api_of_module(trt)
        try:
            cuda.init()
            self._ctx = cuda.Device(device).retain_primary_context()
        except Exception as exc:  # pycuda raises its own error types
            raise BackendUnavailableError("CUDA device %d cannot be used (%s); is the NVIDIA driver loaded?" % (device, exc)) from exc
        self._ctx.push()
        try:
            self.runtime_info = runtime_of(trt, cuda, device)
            if check_version:
                check_compatible(self.header, self.runtime_info, path)
            self._load(engine_file.read_plan())
        except BaseException:
            self._release()
            self._ctx.pop()
            self._detach()
            raise
        self._ctx.pop()
        self._closed = False

    def _load(self, plan: bytes) -> None:
        trt, cuda = self._trt, self._cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            result = compatibility(self.header, self.runtime_info, self.path) if self.header else None
            raise ModelLoadError("TensorRT could not deserialise %s (see its log above)%s; rebuild it on this device: %s"
                                 % (self.path, "; " + result.message if result and not result.ok else "",
                                    rebuild_command(self.header, self.path)))
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise ModelLoadError("TensorRT could not create an execution context for %s (out of GPU memory?)" % self.path)
        self._io = _ADAPTERS[self.api](trt, self._engine, self._context)
        self._stream = cuda.Stream()
        self._engine_shapes: Dict[str, Tuple[Optional[int], ...]] = {}
        self._engine_dtypes: Dict[str, str] = {}
        self._profiles: Dict[str, Tuple[Sequence[int], Sequence[int], Sequence[int]]] = {}
        self._input_names: List[str] = []
        self._output_names: List[str] = []
        for name, is_input, dtype, dims in self._io.tensors():
            self._engine_dtypes[name] = numpy_dtype(dtype)
            self._engine_shapes[name] = shape_from_dims(dims)
            (self._input_names if is_input else self._output_names).append(name)
            if is_input and any(d is None for d in self._engine_shapes[name]):
                self._profiles[name] = self._io.profile(name)
        specs_in = self.header.inputs if self.header else []
        specs_out = self.header.outputs if self.header else []
        self._public = public_dtypes(self._engine_dtypes, list(specs_in) + list(specs_out))
        self.inputs = tuple(TensorSpec(n, self._engine_shapes[n], self._public[n]) for n in self._input_names)
        self.outputs = tuple(TensorSpec(n, self._engine_shapes[n], self._public[n]) for n in self._output_names)
        self.metadata: Dict[str, str] = self.header.metadata_props() if self.header else {}
        self._buffers = {n: _Buffer(cuda, self._engine_dtypes[n]) for n in self._input_names + self._output_names}

    @property
    def batch_range(self) -> Optional[BatchRange]:
        """The batch sizes the engine accepts (None when the batch axis is static)."""
        for name in self._input_names:
            if name in self._profiles and self._engine_shapes[name][:1] == (None,):
                return batch_range(*self._profiles[name])
        return None

    def run_trusted(self, feeds: Dict[str, np.ndarray], output_names: Optional[list]) -> Dict[str, np.ndarray]:
        if self._closed:
            raise EngineExecutionError("runner for %s is closed" % self.path)
        cuda, io = self._cuda, self._io
        self._ctx.push()
        try:
            for name in self._input_names:
                value = feeds[name]
                profile = self._profiles.get(name)
                check_static_dims(name, self._engine_shapes[name], value.shape, profile)
                if profile is not None:
                    if self._engine_shapes[name][:1] == (None,):
                        batch_range(*profile).check(int(value.shape[0]), name, self.path)
                    if not io.set_input_shape(name, tuple(int(d) for d in value.shape)):
                        raise EngineExecutionError("TensorRT refused input shape %s for %r" % (tuple(value.shape), name))
            addresses: Dict[str, int] = {}
            for name in self._input_names:
                value = np.ascontiguousarray(feeds[name], dtype=self._engine_dtypes[name])
                buf = self._buffers[name]
                buf.ensure(value.size)
                buf.host[:value.size] = value.reshape(-1)
                cuda.memcpy_htod_async(buf.device, buf.host[:max(1, value.size)], self._stream)
                addresses[name] = buf.address
            shapes: Dict[str, Tuple[int, ...]] = {}
            for name in self._output_names:
                shape = io.shape(name)
                if any(int(d) < 0 for d in shape):
                    raise EngineExecutionError("TensorRT could not infer the shape of output %r (%s)" % (name, shape))
                shapes[name] = shape
                buf = self._buffers[name]
                buf.ensure(int(np.prod(shape)))
                addresses[name] = buf.address
            if not io.execute(addresses, self._stream.handle):
                raise EngineExecutionError("TensorRT failed to execute %s (see its log above)" % self.path)
            wanted = output_names or self._output_names
            for name in wanted:
                n = int(np.prod(shapes[name]))
                cuda.memcpy_dtoh_async(self._buffers[name].host[:max(1, n)], self._buffers[name].device, self._stream)
            self._stream.synchronize()
            out = {}
            for name in wanted:
                n = int(np.prod(shapes[name]))
                arr = self._buffers[name].host[:n].reshape(shapes[name]).copy()
                out[name] = arr.astype(self._public[name], copy=False)
            return out
        finally:
            self._ctx.pop()

    def _release(self) -> None:
        for buf in getattr(self, "_buffers", {}).values():
            buf.free()
        self._buffers = {}
        self._context = None
        self._engine = None
        self._runtime = None

    def close(self) -> None:
        """Free device buffers, the execution context and the engine, then release the CUDA context."""
        if self._closed:
            return
        self._closed = True
        self._ctx.push()
        try:
            self._release()
            self._stream = None
        finally:
            self._ctx.pop()
        self._detach()

    def _detach(self) -> None:
        detach = getattr(self._ctx, "detach", None)
        if callable(detach):
            detach()

    def __del__(self) -> None:  # pragma: no cover - best effort when a caller forgets close()
        try:
            if not getattr(self, "_closed", True):
                self.close()
        except Exception:
            pass


def prepare(model_path: str, providers: Any = None, threads: Any = None, device: int = 0,
            check_version: bool = True, **_: object) -> TensorRTRunner:
    """Backend entry point used by :func:`edgeconf.backends.prepare` (``providers``/``threads`` are ignored)."""
    if not isinstance(model_path, str):
        raise ConfigError("the tensorrt backend loads engine files by path; build one with: edgeconf engine MODEL.onnx --out MODEL.engine")
    return TensorRTRunner(model_path, device=device, check_version=check_version)


def available() -> Tuple[bool, str]:
    """Whether TensorRT and pycuda import here (without touching the GPU)."""
    try:
        trt, _ = import_tensorrt()
    except EdgeconfError as exc:
        return False, str(exc)
    return True, "TensorRT %s (%s API)" % (trt.__version__, api_of_module(trt))


prepare.available = available  # type: ignore[attr-defined]


# -- bundles: prefer a stage's engine --------------------------------------------------------------
def engine_usable_here(engine_path: str, device: int = 0) -> Tuple[bool, str]:
    """(usable, reason): TensorRT and pycuda import, and the engine's header matches this device."""
    try:
        header = read_engine(engine_path, verify=True, warn_plain=False).header
        trt, cuda = import_tensorrt()
        cuda.init()
        info = runtime_of(trt, cuda, device)
    except Exception as exc:  # ImportError, pycuda errors, engine format errors: fall back
        return False, str(exc)
    if header is None:
        return False, "plain plan without a header: not checked, not used automatically"
    result = compatibility(header, info, engine_path)
    return result.ok, result.message


def stage_model_path(spec: Any, backend: str, folder: str) -> Tuple[str, str]:
    """The file and backend to load for a bundle stage (``spec`` is an ``edgeconf.bundle.StageSpec``).

    ``tensorrt`` uses the stage's engine and falls back to its ONNX model on onnxruntime (with a
    warning) when the stage has none; ``auto`` uses the engine only when it can run here and falls
    back silently; any other backend loads the ONNX model.
    """
    onnx_path = _inside(folder, spec.model)
    if backend not in ("tensorrt", "auto"):
        return onnx_path, backend
    if not getattr(spec, "engine", None):
        if backend == "tensorrt":
            warnings.warn("bundle stage %s has no TensorRT engine; running its ONNX model on onnxruntime. Build engines "
                          "with: edgeconf engine %s --out %s" % (spec.name, folder, folder), UserWarning, stacklevel=2)
        return onnx_path, "onnxruntime"
    engine_path = _inside(folder, spec.engine)
    if backend == "tensorrt":
        return engine_path, "tensorrt"
    usable, _why = engine_usable_here(engine_path)
    return (engine_path, "tensorrt") if usable else (onnx_path, "onnxruntime")


def _inside(folder: str, rel: str) -> str:
    root = os.path.realpath(folder)
    full = os.path.realpath(os.path.join(root, rel))
    if os.path.isabs(rel) or os.path.commonpath([root, full]) != root:
        raise ConfigError("bundle path %r must stay inside the bundle folder %s" % (rel, folder))
    return full


__all__ = ["TensorRTRunner", "prepare", "available", "select_api", "api_of_module", "numpy_dtype", "shape_from_dims",
           "BatchRange", "batch_range", "BatchOutOfProfileError", "EngineExecutionError", "public_dtypes",
           "runtime_of", "board_model", "import_tensorrt", "stage_model_path", "engine_usable_here"]
