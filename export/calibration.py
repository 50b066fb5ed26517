"""Temperature scaling: one scalar T fitted on held-out logits by minimising the negative log-likelihood.

The NLL of ``softmax(z / T)`` is convex in ``1/T``, hence unimodal in ``log T``: a golden-section search
over ``log T`` in [log T_min, log T_max] finds the optimum without scipy.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Tuple

import numpy as np

from edgeconf.confidence import expected_calibration_error, negative_log_likelihood, softmax
from edgeconf.export.errors import CalibrationError

MIN_SAMPLES = 20
T_MIN, T_MAX = 0.05, 20.0


@dataclass
class CalibrationReport:
    """The fitted temperature and the calibration quality before (T = 1) and after."""

    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    samples: int = 0
    at_bound: bool = False  # the optimum lies on the search bound (suspicious logits)

    def to_json(self) -> dict:
        return asdict(self)


def check_logits_labels(logits: np.ndarray, labels: np.ndarray, what: str = "calibration",
                        min_samples: int = MIN_SAMPLES, min_classes: int = 2) -> Tuple[np.ndarray, np.ndarray]:
    """Validate ``(N, C)`` finite logits and ``(N,)`` integer labels in ``[0, C)``; return them as arrays."""
    z = np.asarray(logits)
    y = np.asarray(labels)
    if z.ndim != 2:
        raise CalibrationError("%s logits must have shape (samples, classes), got shape %s" % (what, z.shape))
    if z.shape[1] < 2:
        raise CalibrationError("%s logits have %d class column; a classifier needs at least 2" % (what, z.shape[1]))
    if not np.issubdtype(z.dtype, np.number) or not np.isfinite(z).all():
        raise CalibrationError("%s logits must be finite numbers" % what)
    if y.ndim != 1 or y.shape[0] != z.shape[0]:
        raise CalibrationError("%s labels must have shape (%d,) to match the logits, got shape %s"
                               % (what, z.shape[0], y.shape))
    if y.size and (not np.issubdtype(y.dtype, np.integer)):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise CalibrationError("%s labels must be integer class indices, got dtype %s" % (what, y.dtype))
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise CalibrationError("%s labels must be class indices in [0, %d), got values from %d to %d"
                               % (what, z.shape[1], int(y.min()), int(y.max())))
    if z.shape[0] < min_samples:
        raise CalibrationError("%s needs at least %d samples, got %d; use a larger held-out set"
                               % (what, min_samples, z.shape[0]))
    if np.unique(y).size < min_classes:
        raise CalibrationError("%s labels hold only %d class (%s); use a held-out set with at least %d classes"
                               % (what, np.unique(y).size, ", ".join(map(str, np.unique(y)[:5])), min_classes))
    return z.astype(np.float64), y.astype(np.int64)


def _nll(z: np.ndarray, y: np.ndarray, t: float) -> float:
    zt = z / t
    zt = zt - zt.max(axis=1, keepdims=True)
    lse = np.log(np.exp(zt).sum(axis=1))
    return float((lse - zt[np.arange(len(y)), y]).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bins: int = 15, tol: float = 1e-5) -> CalibrationReport:
    """Fit T minimising the NLL of ``softmax(logits / T)``; report ECE (``bins`` bins) and NLL before/after."""
    z, y = check_logits_labels(logits, labels)
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = _nll(z, y, math.exp(c)), _nll(z, y, math.exp(d))
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = _nll(z, y, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = _nll(z, y, math.exp(d))
    t = math.exp((a + b) / 2.0)
    if _nll(z, y, 1.0) <= _nll(z, y, t):  # never report a worse fit than no scaling
        t = 1.0
    p0, p1 = softmax(z, 1.0), softmax(z, t)
    return CalibrationReport(
        temperature=float(t),
        ece_before=expected_calibration_error(p0, y, bins), ece_after=expected_calibration_error(p1, y, bins),
        nll_before=negative_log_likelihood(p0, y), nll_after=negative_log_likelihood(p1, y),
        samples=int(z.shape[0]), at_bound=bool(abs(math.log(t) - lo) < 1e-3 or abs(math.log(t) - hi) < 1e-3),
    )


__all__ = ["CalibrationReport", "fit_temperature", "check_logits_labels", "MIN_SAMPLES"]
