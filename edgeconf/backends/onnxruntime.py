"""ONNX Runtime backend: CPU by default, CUDA or TensorRT execution providers by name."""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgeconf.backends.base import BoundCall, Runner, TensorSpec
from edgeconf.backends.onnx_file import read_onnx_facts
from edgeconf.backends.threads import Threads, choose_threads
from edgeconf.errors import BackendUnavailableError, ModelLoadError
from edgeconf.lazy import require
from edgeconf.pathcheck import not_a_file

#: Short names accepted for execution providers.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}

ProviderSpec = Union[str, Tuple[str, dict]]


def _import_ort():
    return require("onnxruntime", "running ONNX models")


def available() -> Tuple[bool, str]:
    ort = _import_ort()
    return True, "onnxruntime %s, providers: %s" % (ort.__version__, ", ".join(ort.get_available_providers()))


def resolve_providers(providers: Optional[Sequence[ProviderSpec]], available_providers: Sequence[str]) -> List[ProviderSpec]:
    """Map short provider names to ONNX Runtime's and check they exist; CPU is always appended last."""
    chosen: List[ProviderSpec] = []
    for item in providers or ["cpu"]:
        name, opts = (item, None) if isinstance(item, str) else (item[0], item[1])
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available_providers:
            raise BackendUnavailableError(
                "execution provider %r is not available in this onnxruntime build (available: %s); "
                "install the GPU build (onnxruntime-gpu, or the Jetson wheel for your JetPack), or run on the CPU "
                "(--backend onnxruntime, or providers=['cpu'])"
                % (name, ", ".join(available_providers))
            )
        chosen.append((full, opts) if opts else full)
    names = [c if isinstance(c, str) else c[0] for c in chosen]
    if "CPUExecutionProvider" not in names:
        chosen.append("CPUExecutionProvider")
    return chosen


#: (major, minor, newest default-domain opset) of ONNX Runtime releases, from its compatibility table;
#: 1.11 -> 16 and 1.12 -> 17 were checked here (1.11.1 refuses the shipped opset-17 models, 1.12.0 runs them).
ORT_OPSETS = ((1, 10, 15), (1, 11, 16), (1, 12, 17), (1, 14, 18), (1, 15, 19), (1, 17, 20), (1, 18, 21))
_ORT_SAYS_OPSET = re.compile(r"support for domain (?:ai\.onnx|'') is till opset (\d+)")
_ORT_SAYS_IR = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")
_UPGRADE = ("pip install -U 'onnxruntime>=%s' (on a Jetson: the onnxruntime-gpu wheel for your JetPack from the "
            "Jetson Zoo)")


def _version_tuple(version: str) -> Tuple[int, int]:
    parts = re.findall(r"\d+", version)[:2]
    return (int(parts[0]), int(parts[1])) if len(parts) == 2 else (0, 0)


def newest_opset(ort_version: str) -> Optional[int]:
    """The newest opset an ONNX Runtime release runs, where the table knows it (None for unknown releases)."""
    v = _version_tuple(ort_version)
    known = [op for major, minor, op in ORT_OPSETS if (major, minor) <= v]
    return known[-1] if known and v <= ORT_OPSETS[-1][:2] else None


def first_release_for(opset: int) -> Optional[str]:
    """The first ONNX Runtime release that runs ``opset`` (None when newer than the table)."""
    return next(("%d.%d" % (major, minor) for major, minor, op in ORT_OPSETS if op >= opset), None)


def explain_load_error(path: Optional[str], exc: BaseException, ort_version: str) -> str:
    """One line on why ONNX Runtime refused a model: not ONNX, an opset or IR version too new, or ORT's own words."""
    text = str(exc)
    where = path or "<bytes>"
    facts = None
    if path:
        try:
            facts = read_onnx_facts(path)
        except ModelLoadError as bad:  # not an ONNX file at all
            return str(bad)
    said = _ORT_SAYS_OPSET.search(text)
    supported = int(said.group(1)) if said else newest_opset(ort_version)
    if facts is not None and supported is not None and facts.opset > supported:
        need = first_release_for(facts.opset)
        return ("%s needs ONNX opset %d but onnxruntime %s runs opsets up to %d; upgrade onnxruntime%s or re-export "
                "the model at opset %d or lower" % (where, facts.opset, ort_version, supported,
                                                     " to %s or newer: %s" % (need, _UPGRADE % need) if need else "",
                                                     supported))
    ir = _ORT_SAYS_IR.search(text)
    if ir:
        return ("%s has ONNX IR version %s but onnxruntime %s reads up to IR version %s; upgrade onnxruntime (%s) or "
                "save the model with an older onnx" % (where, ir.group(1), ort_version, ir.group(2),
                                                       _UPGRADE % "1.12"))
    first = (text.strip().splitlines() or [type(exc).__name__])[0]
    return "onnxruntime %s cannot load %s: %s" % (ort_version, where, first[:300])


def _spec(arg) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type, arg.type)
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorSpec(arg.name, shape, dtype)


class _IoBoundCall(BoundCall):
    """A bound call through ONNX Runtime's IO binding: the input and outputs stay bound to numpy arrays."""

    def __init__(self, runner: "OnnxRuntimeRunner", input: np.ndarray, output_names: Sequence[str],
                 binding: Any, outputs: Dict[str, np.ndarray]) -> None:
        super().__init__(runner, runner.inputs[0].name, input, output_names)
        self._run = runner.session.run_with_iobinding
        self._binding = binding
        self._outputs = outputs

    def run(self) -> Dict[str, np.ndarray]:
        self._run(self._binding)
        return self._outputs


class OnnxRuntimeRunner(Runner):
    """A model loaded in an ``onnxruntime.InferenceSession``, with the threading of :mod:`edgeconf.backends.threads`.

    :meth:`bind` gives batch-1 calls through IO binding (input and outputs bound once to numpy arrays), ONNX
    Runtime's cheapest public call; :meth:`run_trusted` is the plain ``InferenceSession.run``.
    """

    backend = "onnxruntime"

    def __init__(self, model: Union[str, bytes], providers: Optional[Sequence[ProviderSpec]] = None,
                 threads: Union[None, int, Threads] = None) -> None:
        ort = _import_ort()
        if isinstance(model, str):
            if not os.path.isfile(model):
                raise ModelLoadError("model file %s %s" % (model, not_a_file(model)))
            self.path: Optional[str] = model
        else:
            self.path = None
        self.threads = choose_threads(threads)
        opts = self.threads.session_options(ort)
        chosen = resolve_providers(providers, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(model, sess_options=opts, providers=chosen)
        except Exception as exc:  # ORT raises several private exception types
            raise ModelLoadError(explain_load_error(self.path, exc, ort.__version__)) from exc
        self.providers = self.session.get_providers()
        self.inputs = tuple(_spec(a) for a in self.session.get_inputs())
        self.outputs = tuple(_spec(a) for a in self.session.get_outputs())
        self.metadata: Dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self._all_names = [s.name for s in self.outputs]

    def run_trusted(self, feeds: Dict[str, np.ndarray], output_names: Optional[list]) -> Dict[str, np.ndarray]:
        names = output_names or self._all_names
        values = self.session.run(names, feeds)
        return dict(zip(names, values))

    def bind(self, shape: Tuple[int, ...], dtype: Union[str, np.dtype], output_names: Sequence[str]) -> BoundCall:
        """IO binding on the CPU provider (outputs sized by one plain run); the plain call elsewhere."""
        names = list(output_names)
        buf = np.zeros(shape, dtype=dtype)
        if self.providers[0] != "CPUExecutionProvider" or len(self.inputs) != 1:
            return BoundCall(self, self.inputs[0].name, buf, names)
        ort = _import_ort()
        try:
            plain = self.session.run(names, {self.inputs[0].name: buf})  # the outputs' shapes for this input
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self.inputs[0].name, ort.OrtValue.ortvalue_from_numpy(buf))
            outputs = {}
            for name, value in zip(names, plain):
                arr = np.empty_like(np.ascontiguousarray(value))
                binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(arr))
                outputs[name] = arr
            self.session.run_with_iobinding(binding)
        except Exception:  # a model ONNX Runtime cannot run with bound buffers keeps the plain call
            return BoundCall(self, self.inputs[0].name, buf, names)
        return _IoBoundCall(self, buf, names, binding, outputs)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


def prepare(model_path: Union[str, bytes], providers: Optional[Sequence[ProviderSpec]] = None,
            threads: Union[None, int, Threads] = None, **_: object) -> OnnxRuntimeRunner:
    """Backend entry point used by :func:`edgeconf.backends.prepare`."""
    return OnnxRuntimeRunner(model_path, providers=providers, threads=threads)


prepare.available = available  # type: ignore[attr-defined]
