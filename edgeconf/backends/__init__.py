"""Backend registry. Backends register by name and are imported only when selected."""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Tuple

from edgeconf.backends.base import Runner, TensorSpec, validate_input
from edgeconf.errors import BackendUnavailableError, ConfigError

#: name -> "module:callable" returning a Runner: ``prepare(model_path, **options)``.
_REGISTRY: Dict[str, str] = {
    "onnxruntime": "edgeconf.backends.onnxruntime:prepare",
    "tensorrt": "edgeconf.backends.tensorrt:prepare",
    "ort-tensorrt": "edgeconf.backends.ort_tensorrt:prepare",
    "triton": "edgeconf.backends.triton:prepare",
}


def register_backend(name: str, target: str) -> None:
    """Register a backend as ``"module:function"``; the module is imported only when used."""
    if ":" not in target:
        raise ConfigError("backend target must look like 'package.module:function', got %r" % target)
    _REGISTRY[name] = target


def backend_names() -> List[str]:
    return sorted(_REGISTRY)


def _resolve(name: str) -> Callable[..., Runner]:
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ConfigError("unknown backend %r; choose one of %s" % (name, ", ".join(backend_names()))) from None
    module, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError("backend %r cannot be loaded: %s" % (name, exc)) from exc
    return getattr(mod, attr)


def prepare(model_path: str, backend: str = "onnxruntime", **options: object) -> Runner:
    """Load ``model_path`` on ``backend`` and return a ready :class:`Runner`.

    ``providers`` (ONNX Runtime execution providers) is a list, or one name (``"cuda"``)."""
    if isinstance(options.get("providers"), str):  # one provider, not a list of one-letter names
        options["providers"] = [options["providers"]]
    return _resolve(backend)(model_path, **options)


def availability() -> List[Tuple[str, bool, str]]:
    """(name, usable, detail) for every registered backend, for ``edgeconf inspect`` and docs."""
    rows = []
    for name in backend_names():
        try:
            fn = _resolve(name)
            probe = getattr(fn, "available", None)
            ok, detail = probe() if callable(probe) else (True, "")
        except Exception as exc:  # a backend that cannot load is only reported
            ok, detail = False, str(exc)
        rows.append((name, ok, detail))
    return rows


__all__ = ["Runner", "TensorSpec", "validate_input", "prepare", "register_backend", "backend_names", "availability"]
