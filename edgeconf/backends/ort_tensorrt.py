"""The second TensorRT route: ONNX Runtime's TensorRT execution provider, with a safe engine cache.

ONNX Runtime can cache the engines it builds (``trt_engine_cache_enable``), but it does not notice
when the TensorRT version or the GPU changes, and then reuses a stale engine. So the cache folder
here is keyed by everything that makes an engine: the model's sha256, the ONNX Runtime and TensorRT
versions, the GPU and compute capability, and the precision. When the TensorRT version or the GPU
cannot be found out, the cache is switched off rather than risk a stale engine.

Everything but :func:`prepare` is pure and tested without a GPU.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import subprocess
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgeconf.errors import ConfigError

PROVIDER = "TensorrtExecutionProvider"
CACHE_ENV = "EDGECONF_CACHE"
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class CacheIdentity:
    """Everything an engine built by the TensorRT EP depends on."""

    model_sha256: str
    ort_version: str
    tensorrt_version: str
    gpu: str
    compute_capability: str = ""
    precision: str = "fp32"

    def key(self) -> str:
        """A stable folder name: readable prefix + hash of the whole identity."""
        blob = json.dumps([self.model_sha256, self.ort_version, self.tensorrt_version, self.gpu,
                           self.compute_capability, self.precision], separators=(",", ":"))
        digest = hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
        parts = [self.model_sha256[:12], "ort" + self.ort_version, "trt" + self.tensorrt_version,
                 _slug(self.gpu) + (("-sm" + self.compute_capability.replace(".", "")) if self.compute_capability else ""),
                 self.precision, digest]
        return "_".join(_slug(p) for p in parts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(text)).strip("-")[:48] or "unknown"


def default_cache_root() -> str:
    """``$EDGECONF_CACHE/ort-tensorrt`` or ``~/.cache/edgeconf/ort-tensorrt``."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "edgeconf")
    return os.path.join(base, "ort-tensorrt")


def cache_dir(root: str, identity: CacheIdentity) -> str:
    return os.path.join(root, identity.key())


def precision_of(fp16: bool, int8: bool) -> str:
    return "int8" if int8 else ("fp16" if fp16 else "fp32")


def provider_options(cache_path: Optional[str], fp16: bool = False, int8: bool = False,
                     workspace_mb: Optional[int] = None, device_id: int = 0,
                     int8_calibration_table: Optional[str] = None, timing_cache: bool = False) -> Dict[str, Any]:
    """Options for ONNX Runtime's TensorRT execution provider (names as its documentation gives them).

    ``cache_path`` None switches the engine cache off. The timing cache is off by default: older
    ONNX Runtime builds (JetPack 4.6 wheels) reject option names they do not know.
    """
    if workspace_mb is not None and int(workspace_mb) <= 0:
        raise ConfigError("the TensorRT workspace must be a positive number of MB, got %r" % (workspace_mb,))
    if int8 and not int8_calibration_table:
        raise ConfigError("INT8 with ONNX Runtime's TensorRT provider needs a calibration table "
                          "(trt_int8_calibration_table_name) or a QDQ model; pass int8_calibration_table=… or use fp16")
    opts: Dict[str, Any] = {"device_id": int(device_id), "trt_fp16_enable": bool(fp16 or int8),
                            "trt_int8_enable": bool(int8)}
    if workspace_mb is not None:
        opts["trt_max_workspace_size"] = int(workspace_mb) * (1 << 20)
    if int8_calibration_table:
        opts["trt_int8_calibration_table_name"] = int8_calibration_table
    if cache_path:
        opts["trt_engine_cache_enable"] = True
        opts["trt_engine_cache_path"] = cache_path
        if timing_cache:
            opts["trt_timing_cache_enable"] = True
            opts["trt_timing_cache_path"] = cache_path
    else:
        opts["trt_engine_cache_enable"] = False
    return opts


def decode_infer_lib_version(value: int) -> str:
    """``getInferLibVersion()`` → "major.minor.patch" (8.x: M*1000+m*100+p; 9+: M*10000+m*100+p)."""
    v = int(value)
    if v >= 90000:
        major, rest = divmod(v, 10000)
    else:
        major, rest = divmod(v, 1000)
    minor, patch = divmod(rest, 100)
    return "%d.%d.%d" % (major, minor, patch)


def detect_tensorrt_version() -> Optional[str]:
    """The TensorRT version ONNX Runtime will load: Python bindings, else libnvinfer's own answer."""
    try:
        import tensorrt

        version = getattr(tensorrt, "__version__", None)  # None for an unrelated namespace package
        if version:
            return str(version)
    except ImportError:
        pass
    for name in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"):
        try:
            lib = ctypes.CDLL(name)
            fn = lib.getInferLibVersion
            fn.restype = ctypes.c_int32
            return decode_infer_lib_version(fn())
        except (OSError, AttributeError):
            continue
    return None


def parse_nvidia_smi(text: str) -> Optional[Tuple[str, str]]:
    """First line of ``nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader`` → (name, cc)."""
    for line in text.splitlines():
        if "," in line:
            name, cc = [p.strip() for p in line.split(",", 1)]
            if name:
                return name, cc
    return None


def detect_gpu(root: str = "/") -> Optional[Tuple[str, str]]:
    """(GPU name, compute capability) by pycuda, nvidia-smi, or the Jetson device tree; None if unknown."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        dev = cuda.Device(0)
        return str(dev.name()), "%d.%d" % dev.compute_capability()
    except Exception:  # ImportError, or no driver
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            found = parse_nvidia_smi(out.stdout)
            if found:
                return found
    except (OSError, subprocess.SubprocessError):
        pass
    from edgeconf.backends.tensorrt import board_model

    model = board_model(root)
    return (model, "") if model else None


def tensorrt_providers(model_sha256: str, fp16: bool = False, int8: bool = False, workspace_mb: Optional[int] = None,
                       cache_root: Optional[str] = None, device_id: int = 0, ort_version: Optional[str] = None,
                       tensorrt_version: Optional[str] = None, gpu: Optional[Tuple[str, str]] = None,
                       int8_calibration_table: Optional[str] = None, cache: bool = True) -> List[Any]:
    """The ``providers`` list for the onnxruntime backend: TensorRT EP (keyed cache), then CUDA and CPU.

    Versions and GPU are detected when not given; if either stays unknown the engine cache is off.
    """
    if ort_version is None:
        import onnxruntime

        ort_version = onnxruntime.__version__
        if PROVIDER not in onnxruntime.get_available_providers():  # refused where the session is made: no cache talk
            cache = False
    trt_version = tensorrt_version if tensorrt_version is not None else detect_tensorrt_version()
    gpu_info = gpu if gpu is not None else detect_gpu()
    path: Optional[str] = None
    if cache:
        if trt_version and gpu_info:
            ident = CacheIdentity(model_sha256, ort_version, trt_version, gpu_info[0], gpu_info[1], precision_of(fp16, int8))
            path = cache_dir(cache_root or default_cache_root(), ident)
            os.makedirs(path, exist_ok=True)
        else:
            warnings.warn("the TensorRT version or the GPU could not be determined, so ONNX Runtime's TensorRT engine "
                          "cache is off (engines are rebuilt for every session)", UserWarning, stacklevel=2)
    opts = provider_options(path, fp16, int8, workspace_mb, device_id, int8_calibration_table)
    return [(PROVIDER, opts), "CUDAExecutionProvider", "CPUExecutionProvider"]


def prepare(model_path: str, fp16: bool = False, int8: bool = False, workspace_mb: Optional[int] = None,
            cache_root: Optional[str] = None, device_id: int = 0, threads: Optional[int] = None,
            int8_calibration_table: Optional[str] = None, providers: Optional[Sequence[Any]] = None,
            **_: object):
    """An onnxruntime runner on the TensorRT execution provider (with the keyed engine cache)."""
    from edgeconf.backends.onnxruntime import OnnxRuntimeRunner
    from edgeconf.engine_format import sha256_file

    chosen = providers or tensorrt_providers(sha256_file(model_path), fp16, int8, workspace_mb, cache_root, device_id,
                                             int8_calibration_table=int8_calibration_table)
    return OnnxRuntimeRunner(model_path, providers=chosen, threads=threads)


__all__ = ["CacheIdentity", "cache_dir", "default_cache_root", "provider_options", "tensorrt_providers",
           "decode_infer_lib_version", "detect_tensorrt_version", "detect_gpu", "parse_nvidia_smi", "precision_of",
           "prepare"]
