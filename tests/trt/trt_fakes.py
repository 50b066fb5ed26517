"""Fake ``tensorrt`` and ``pycuda.driver`` modules for machines without a GPU.

They follow the documented Python API shapes of each generation, and nothing more:

* TensorRT 8.0–8.4: bindings API only (``num_bindings``, ``get_binding_*``, ``binding_is_input``,
  ``get_profile_shape``, ``set_binding_shape``, ``execute_async_v2``); 8.0–8.3 have no memory pools.
* TensorRT 8.5+/10.x: named tensors (``num_io_tensors``, ``get_tensor_name/mode/dtype/shape``,
  ``get_tensor_profile_shape``, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``);
  10.x has no bindings API.
* TensorRT 11: no FP16/INT8 builder flags and no calibrators.

The "plan" a fake builder serialises is the ONNX model's bytes and a fake engine executes it with
ONNX Runtime, so outputs are real and the runner's data path (buffers, addresses, shapes) is exercised.
Fake device memory is a dict of numpy byte arrays keyed by integer addresses.
"""
from __future__ import annotations

import enum
import itertools
import sys
import types
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

# -- pycuda.driver ----------------------------------------------------------------------------------


class FakeCuda(types.ModuleType):
    """``pycuda.driver`` with host-backed "device" memory."""

    def __init__(self, gpu: str = "NVIDIA Tegra X1", cc: Tuple[int, int] = (5, 3)) -> None:
        super().__init__("pycuda.driver")
        self.memory: Dict[int, np.ndarray] = {}
        self.freed: List[int] = []
        self._addr = itertools.count(0x1000, 0x1000)
        self.gpu, self.cc = gpu, cc
        self.context_depth = 0
        self.detached = 0
        self.initialised = False
        cuda = self

        class Allocation:
            def __init__(self, nbytes: int) -> None:
                self.ptr = next(cuda._addr)
                cuda.memory[self.ptr] = np.zeros(nbytes, np.uint8)

            def __int__(self) -> int:
                return self.ptr

            def free(self) -> None:
                if self.ptr in cuda.memory:
                    del cuda.memory[self.ptr]
                    cuda.freed.append(self.ptr)

        class Context:
            def push(self) -> None:
                cuda.context_depth += 1

            def pop(self) -> None:
                cuda.context_depth -= 1

            def detach(self) -> None:
                cuda.detached += 1

        class Device:
            def __init__(self, index: int) -> None:
                self.index = index

            def name(self) -> str:
                return cuda.gpu

            def compute_capability(self) -> Tuple[int, int]:
                return cuda.cc

            def retain_primary_context(self) -> Context:
                return Context()

        class Stream:
            handle = 7

            def synchronize(self) -> None:
                pass

        self.Allocation, self.Device, self.Stream = Allocation, Device, Stream

    def init(self) -> None:
        self.initialised = True

    def mem_alloc(self, nbytes: int) -> Any:
        return self.Allocation(nbytes)

    def pagelocked_empty(self, shape: Any, dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype)

    def _view(self, ptr: int) -> np.ndarray:
        if ptr not in self.memory:
            raise RuntimeError("fake cuda: invalid device pointer %#x" % ptr)
        return self.memory[ptr]

    def memcpy_htod(self, dest: Any, src: np.ndarray) -> None:
        raw = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        self._view(int(dest))[:raw.size] = raw

    def memcpy_htod_async(self, dest: Any, src: np.ndarray, stream: Any = None) -> None:
        self.memcpy_htod(dest, src)

    def memcpy_dtoh_async(self, dest: np.ndarray, src: Any, stream: Any = None) -> None:
        raw = dest.view(np.uint8).reshape(-1)
        raw[:] = self._view(int(src))[:raw.size]

    def read(self, ptr: int, shape: Sequence[int], dtype: Any) -> np.ndarray:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self._view(ptr)[:n].view(dtype).reshape(shape).copy()

    def write(self, ptr: int, value: np.ndarray) -> None:
        self.memcpy_htod(ptr, value)


# -- tensorrt -------------------------------------------------------------------------------------------
class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 6
    BF16 = 7


_ONNX_TO_TRT = {onnx.TensorProto.FLOAT: DataType.FLOAT, onnx.TensorProto.FLOAT16: DataType.HALF,
                onnx.TensorProto.INT8: DataType.INT8, onnx.TensorProto.INT32: DataType.INT32,
                onnx.TensorProto.BOOL: DataType.BOOL, onnx.TensorProto.UINT8: DataType.UINT8,
                onnx.TensorProto.INT64: DataType.INT64}
_TRT_TO_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32,
              DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT64: np.int64}


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


def _vtuple(version: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:3])


class _Graph:
    """What a fake engine knows about its ONNX "plan": I/O names, dtypes, shapes; runs it with ORT."""

    def __init__(self, plan: bytes, int64_as_int32: bool, profile: Tuple[int, int, int]) -> None:
        import onnxruntime as ort

        model = onnx.load_from_string(plan)
        self.session = ort.InferenceSession(plan, providers=["CPUExecutionProvider"])
        inits = {i.name for i in model.graph.initializer}

        def spec(vi: Any) -> Tuple[str, DataType, Tuple[int, ...]]:
            dt = _ONNX_TO_TRT[vi.type.tensor_type.elem_type]
            if dt == DataType.INT64 and int64_as_int32:
                dt = DataType.INT32  # TensorRT 8 has no int64 I/O
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
            return vi.name, dt, dims

        self.inputs = [spec(i) for i in model.graph.input if i.name not in inits]
        self.outputs = [spec(o) for o in model.graph.output]
        self.profile = profile

    def io(self) -> List[Tuple[str, bool, DataType, Tuple[int, ...]]]:
        return [(n, True, d, s) for n, d, s in self.inputs] + [(n, False, d, s) for n, d, s in self.outputs]

    def profile_shapes(self, name: str) -> List[Tuple[int, ...]]:
        dims = dict((n, s) for n, _, s in self.inputs)[name]
        return [tuple(b if d < 0 else d for d in dims) for b in self.profile]

    def execute(self, cuda: FakeCuda, addresses: Dict[str, int], shapes: Dict[str, Tuple[int, ...]]) -> None:
        feeds = {}
        for name, dt, _ in self.inputs:
            onnx_dt = np.int64 if dt == DataType.INT32 else _TRT_TO_NP[dt]
            feeds[name] = cuda.read(addresses[name], shapes[name], _TRT_TO_NP[dt]).astype(onnx_dt)
        names = [n for n, _, _ in self.outputs]
        values = self.session.run(names, feeds)
        for (name, dt, _), value in zip(self.outputs, values):
            cuda.write(addresses[name], np.asarray(value).astype(_TRT_TO_NP[dt]))


def make_tensorrt(version: str, cuda: FakeCuda, profile: Tuple[int, int, int] = (1, 4, 16),
                  unsupported_ops: Sequence[str] = ()) -> types.ModuleType:
    """A fake ``tensorrt`` module with exactly the API generation of ``version``."""
    v = _vtuple(version)
    bindings_api = v < (10, 0)
    tensor_api = v >= (8, 5)
    memory_pools = v >= (8, 4)
    int64_as_int32 = v < (10, 0)
    reduced_flags = v < (11, 0)
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.DataType = DataType
    trt.float32, trt.float16, trt.int8, trt.int32, trt.bool = (DataType.FLOAT, DataType.HALF, DataType.INT8,
                                                                DataType.INT32, DataType.BOOL)
    if tensor_api:
        trt.TensorIOMode = TensorIOMode
    trt.calls = []  # record of builder/runtime calls for assertions

    class Logger:
        WARNING = 2
        INFO = 3

        def __init__(self, severity: int = 2) -> None:
            self.severity = severity

    trt.Logger = Logger

    # -- runtime -----------------------------------------------------------------------------------
    class ICudaEngine:
        def __init__(self, graph: _Graph) -> None:
            self.graph = graph
            self._io = graph.io()
            self.num_optimization_profiles = 1

        def create_execution_context(self) -> "IExecutionContext":
            return IExecutionContext(self)

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self.shapes: Dict[str, Tuple[int, ...]] = {}
            self.addresses: Dict[str, int] = {}

        def _input_shape(self, name: str, shape: Sequence[int]) -> bool:
            dims = dict((n, s) for n, _, s in self.engine.graph.inputs)[name]
            lo, _, hi = self.engine.graph.profile_shapes(name)
            shape = tuple(int(d) for d in shape)
            if len(shape) != len(dims) or any(not a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self.shapes[name] = shape
            return True

        def _output_shape(self, name: str) -> Tuple[int, ...]:
            dims = dict((n, s) for n, _, s in self.engine.graph.outputs)[name]
            batches = [s[0] for s in self.shapes.values()]
            if -1 in dims[:1] and not batches:
                return dims
            return tuple((batches[0] if d < 0 else d) for d in dims)

        def _run(self, addresses: Dict[str, int]) -> bool:
            shapes = dict(self.shapes)
            for name, _, dims in self.engine.graph.inputs:
                shapes.setdefault(name, dims)
                if any(d < 0 for d in shapes[name]):
                    return False  # input shape not specified
            for name, _, _ in self.engine.graph.outputs:
                shapes[name] = self._output_shape(name)
            if any(not addresses.get(n) for n, _, _, _ in self.engine._io):
                return False
            self.engine.graph.execute(cuda, addresses, shapes)
            trt.calls.append(("execute", dict(shapes)))
            return True

    if bindings_api:
        def _names(self: ICudaEngine) -> List[str]:
            return [n for n, _, _, _ in self._io]

        ICudaEngine.num_bindings = property(lambda self: len(self._io))
        ICudaEngine.get_binding_name = lambda self, i: self._io[i][0]
        ICudaEngine.get_binding_index = lambda self, name: _names(self).index(name)
        ICudaEngine.binding_is_input = lambda self, i: self._io[i][1]
        ICudaEngine.get_binding_dtype = lambda self, i: self._io[i][2]
        ICudaEngine.get_binding_shape = lambda self, i: self._io[i][3]

        def get_profile_shape(self: ICudaEngine, profile_index: int, binding: Any) -> List[Tuple[int, ...]]:
            name = binding if isinstance(binding, str) else self._io[binding][0]
            return self.graph.profile_shapes(name)

        ICudaEngine.get_profile_shape = get_profile_shape
        IExecutionContext.set_binding_shape = lambda self, i, shape: self._input_shape(self.engine._io[i][0], shape)

        def get_binding_shape(self: IExecutionContext, i: int) -> Tuple[int, ...]:
            name, is_input, _, dims = self.engine._io[i]
            return self.shapes.get(name, dims) if is_input else self._output_shape(name)

        IExecutionContext.get_binding_shape = get_binding_shape

        def execute_async_v2(self: IExecutionContext, bindings: Sequence[int], stream_handle: int) -> bool:
            if len(bindings) != len(self.engine._io):
                return False
            return self._run({n: int(p) for (n, _, _, _), p in zip(self.engine._io, bindings)})

        IExecutionContext.execute_async_v2 = execute_async_v2

    if tensor_api:
        ICudaEngine.num_io_tensors = property(lambda self: len(self._io))
        ICudaEngine.get_tensor_name = lambda self, i: self._io[i][0]
        ICudaEngine.get_tensor_mode = lambda self, name: (TensorIOMode.INPUT if dict((n, x) for n, x, _, _ in self._io)[name]
                                                          else TensorIOMode.OUTPUT)
        ICudaEngine.get_tensor_dtype = lambda self, name: dict((n, d) for n, _, d, _ in self._io)[name]
        ICudaEngine.get_tensor_shape = lambda self, name: dict((n, s) for n, _, _, s in self._io)[name]
        ICudaEngine.get_tensor_profile_shape = lambda self, name, profile_index: self.graph.profile_shapes(name)
        IExecutionContext.set_input_shape = lambda self, name, shape: self._input_shape(name, shape)

        def get_tensor_shape(self: IExecutionContext, name: str) -> Tuple[int, ...]:
            is_input = dict((n, x) for n, x, _, _ in self.engine._io)[name]
            return self.shapes.get(name, self.engine.get_tensor_shape(name)) if is_input else self._output_shape(name)

        IExecutionContext.get_tensor_shape = get_tensor_shape

        def set_tensor_address(self: IExecutionContext, name: str, ptr: int) -> bool:
            self.addresses[name] = int(ptr)
            return True

        IExecutionContext.set_tensor_address = set_tensor_address
        IExecutionContext.execute_async_v3 = lambda self, stream_handle: self._run(dict(self.addresses))

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, plan: bytes) -> Optional[ICudaEngine]:
            trt.calls.append(("deserialize", len(plan)))
            try:
                return ICudaEngine(_Graph(bytes(plan), int64_as_int32, profile))
            except Exception:
                return None  # TensorRT logs and returns None for plans it cannot read

    trt.ICudaEngine, trt.IExecutionContext, trt.Runtime = ICudaEngine, IExecutionContext, Runtime

    # -- builder -----------------------------------------------------------------------------------
    flags = ["FP16", "INT8"] if reduced_flags else []
    if (8, 2) <= v:
        flags.append("OBEY_PRECISION_CONSTRAINTS")
    if v < (10, 0):
        flags.append("STRICT_TYPES")
    trt.BuilderFlag = enum.Enum("BuilderFlag", flags + ["TF32"])
    creation = ["EXPLICIT_BATCH"] + (["STRONGLY_TYPED"] if v >= (9, 1) else [])
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", creation, start=0)
    if memory_pools:
        trt.MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM"])

    class Tensor:
        def __init__(self, name: str, dtype: DataType, shape: Tuple[int, ...] = ()) -> None:
            self.name, self.dtype, self.shape = name, dtype, shape

    class Layer:
        def __init__(self, name: str, outputs: List[Tensor]) -> None:
            self.name = name
            self._outputs = outputs
            self.precision = DataType.FLOAT
            self.precision_set = False
            self.output_types: Dict[int, DataType] = {}

        def __setattr__(self, key: str, value: Any) -> None:
            if key == "precision" and hasattr(self, "precision_set"):
                object.__setattr__(self, "precision_set", True)
            object.__setattr__(self, key, value)

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        def get_output(self, j: int) -> Tensor:
            return self._outputs[j]

        def set_output_type(self, j: int, dtype: DataType) -> None:
            self.output_types[j] = dtype

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.layers: List[Layer] = []
            self.inputs: List[Tensor] = []
            self.onnx: Optional[bytes] = None

        num_layers = property(lambda self: len(self.layers))
        num_inputs = property(lambda self: len(self.inputs))
        get_layer = lambda self, i: self.layers[i]  # noqa: E731
        get_input = lambda self, i: self.inputs[i]  # noqa: E731

    class ParserError:
        def __init__(self, desc: str, node: int, name: str, op: str) -> None:
            self._desc, self._node, self._name, self._op = desc, node, name, op

        def desc(self) -> str:
            return self._desc

        def node(self) -> int:
            return self._node

        def code(self) -> int:
            return 8

    if v >= (8, 6):
        ParserError.node_name = lambda self: self._name
        ParserError.node_operator = lambda self: self._op

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network = network
            self.errors: List[ParserError] = []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i: int) -> ParserError:
            return self.errors[i]

        def parse_from_file(self, path: str) -> bool:
            with open(path, "rb") as f:
                return self.parse(f.read())

        def parse(self, data: bytes) -> bool:
            model = onnx.shape_inference.infer_shapes(onnx.load_from_string(data))
            for i, node in enumerate(model.graph.node):
                if node.op_type in unsupported_ops:
                    self.errors.append(ParserError("No importer registered for op: %s" % node.op_type, i, node.name,
                                                   node.op_type))
            if self.errors:
                return False
            types_ = {vi.name: vi.type.tensor_type.elem_type for vi in
                      list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
            inits = {i.name for i in model.graph.initializer}
            for vi in model.graph.input:
                if vi.name not in inits:
                    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
                    self.network.inputs.append(Tensor(vi.name, _ONNX_TO_TRT[vi.type.tensor_type.elem_type], dims))
            for node in model.graph.node:
                outs = [Tensor(o, _ONNX_TO_TRT.get(types_.get(o, 1), DataType.FLOAT)) for o in node.output]
                self.network.layers.append(Layer(node.name or "(Unnamed Layer* %d)" % len(self.network.layers), outs))
            self.network.onnx = data
            return True

    class OptimizationProfile:
        def __init__(self) -> None:
            self.shapes: Dict[str, Tuple[Tuple[int, ...], ...]] = {}

        def set_shape(self, name: str, lo: Sequence[int], opt: Sequence[int], hi: Sequence[int]) -> None:
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class BuilderConfig:
        def __init__(self) -> None:
            self.flags: List[str] = []
            self.profiles: List[OptimizationProfile] = []
            self.int8_calibrator: Any = None
            self.calibration_profile: Optional[OptimizationProfile] = None
            self.pool_limits: Dict[str, int] = {}
            if not memory_pools:
                self.max_workspace_size = 0

        def set_flag(self, flag: Any) -> None:
            self.flags.append(flag.name)

        def add_optimization_profile(self, profile: OptimizationProfile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_calibration_profile(self, profile: OptimizationProfile) -> bool:
            self.calibration_profile = profile
            return True

    if memory_pools:
        def set_memory_pool_limit(self: BuilderConfig, pool: Any, size: int) -> None:
            self.pool_limits[pool.name] = size

        BuilderConfig.set_memory_pool_limit = set_memory_pool_limit

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            trt.calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> OptimizationProfile:
            return OptimizationProfile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> Optional[bytes]:
            trt.calls.append(("build", config))
            calib = config.int8_calibrator
            if calib is not None:
                cache = calib.read_calibration_cache()
                if cache is None:
                    names = [t.name for t in network.inputs]
                    batches = 0
                    while True:
                        ptrs = calib.get_batch(names)
                        if not ptrs:
                            break
                        shape = config.calibration_profile.shapes[names[0]][1]
                        batch = cuda.read(ptrs[0], shape, np.float32)
                        assert np.isfinite(batch).all()
                        batches += 1
                    trt.calls.append(("calibrated", batches, calib.get_batch_size()))
                    calib.write_calibration_cache(memoryview(b"fake-calibration-cache"))
                else:
                    trt.calls.append(("calibration-cache", bytes(cache)))
            return network.onnx

    trt.Builder, trt.OnnxParser, trt.ParserError = Builder, OnnxParser, ParserError
    if reduced_flags:
        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    return trt


def install(monkeypatch: Any, version: str, gpu: str = "NVIDIA Tegra X1", cc: Tuple[int, int] = (5, 3),
            **kw: Any) -> Tuple[types.ModuleType, FakeCuda]:
    """Put a fake ``tensorrt`` of ``version`` and a fake ``pycuda.driver`` into ``sys.modules``."""
    cuda = FakeCuda(gpu, cc)
    trt = make_tensorrt(version, cuda, **kw)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    return trt, cuda
