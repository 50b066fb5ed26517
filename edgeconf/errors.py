"""Typed errors a user can cause. Each message says what is wrong and what to do."""
from __future__ import annotations

from typing import Optional


class EdgeconfError(Exception):
    """Base class of every error edgeconf raises on purpose; the CLI prints it in one line."""


class ModelLoadError(EdgeconfError):
    """A model file is missing, truncated, not ONNX, or cannot be loaded by the backend."""


class InputValidationError(EdgeconfError):
    """An input array has the wrong shape, dtype or non-finite values."""


class BundleError(EdgeconfError):
    """A bundle folder or its edgeconf.json manifest is invalid."""


class BackendUnavailableError(EdgeconfError):
    """A backend (or one of its execution providers) cannot be used on this machine."""


class MissingDependencyError(EdgeconfError):
    """An optional dependency (a pip extra or a JetPack package) is not installed."""


class DataError(EdgeconfError):
    """Input data (images, folders, arrays, datasets) is missing or unreadable."""


class ConfigError(EdgeconfError):
    """An option or a combination of options is invalid."""


class SourceError(EdgeconfError):
    """A frame source URI cannot be opened: unknown scheme, missing file or camera, unreadable video."""


class OutputError(EdgeconfError):
    """An output file or folder cannot be written (permissions, read-only or full file system, a folder in the way)."""


class PreprocessingError(BundleError, ConfigError):
    """A preprocessing description is invalid (in a bundle manifest, in model metadata or given as an option)."""


class RemoteStageError(EdgeconfError):
    """A remote stage gave no answer: the server was slow (deadline), down, answered an error, or its circuit
    breaker is open. The cascade catches it and keeps the last local stage's answer, marked as a remote failure.

    ``reason`` is one of ``timeout``, ``unavailable``, ``error``, ``circuit_open``. ``sent`` says whether the inputs
    went out in a request at all: not when the breaker was open (``circuit_open``, the default then) or when the
    deadline passed while they waited behind a request in flight; the server never saw those.
    """

    def __init__(self, message: str, reason: str = "error", sent: Optional[bool] = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.sent = reason != "circuit_open" if sent is None else bool(sent)
