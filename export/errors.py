"""Typed errors of the exporter. Each subclasses a core error, so the CLI prints it in one line."""
from __future__ import annotations

from edgeconf.errors import ConfigError, DataError, EdgeconfError, ModelLoadError


class ExportError(EdgeconfError):
    """An export step failed (torch → ONNX, graph surgery, validation)."""


class ParityError(ExportError):
    """The exported graph's outputs differ from the source model's beyond the tolerance."""


class NotAClassifierError(ModelLoadError):
    """The model has no usable 2-D float logits output, or several candidates and no choice."""


class UnsupportedOpsetError(ModelLoadError):
    """The model's ONNX opset is one the confidence head cannot extend."""


class UnsafeWeightsError(ModelLoadError):
    """A weights file is not plain tensors (e.g. a pickle of arbitrary objects) and was refused."""


class CalibrationError(DataError):
    """Calibration data is unusable: too few samples, one class only, wrong shapes."""


class QuantizationBudgetError(ExportError):
    """INT8 quantization cannot meet the accuracy/ECE budget, even with the allowed layers kept in float."""


class PolicyError(ConfigError):
    """A threshold policy is malformed or cannot be met by any operating point."""


__all__ = ["ExportError", "ParityError", "NotAClassifierError", "UnsupportedOpsetError", "UnsafeWeightsError",
           "CalibrationError", "PolicyError", "QuantizationBudgetError"]
