"""The INT8 calibration set: a stratified part that sets the activation ranges and a held-out part that
chooses the calibration method, checks the accuracy budget and re-fits the temperature.

The split is seeded, stratified by class (every class gets its share of the range-fitting part) and
validated before any work: too few samples for the chosen method or a class missing is a
:class:`~edgeconf.export.errors.CalibrationError` that says what to give instead.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeconf.export.errors import CalibrationError

METHODS = ("minmax", "entropy", "percentile")
#: Fewest range-fitting samples per method. Min-max needs only the extremes; entropy (KL over a
#: 2048-bin histogram) and percentile (the 99.999th percentile of each tensor) need enough samples per
#: class for the histogram's tail to be the data's, not a handful of images'.
MIN_FIT = {"minmax": 64, "entropy": 256, "percentile": 256}
#: Fewest held-out samples for choosing a method and checking the budget (0.5 points is 1 sample in 200).
MIN_SELECT = 200
DEFAULT_FIT = 2000
DEFAULT_SELECT = 5000
SEED = 0


@dataclass
class CalibrationSet:
    """Model-ready calibration arrays: ``fit_x`` sets activation ranges, ``(select_x, select_y)`` is held out."""

    fit_x: np.ndarray
    fit_y: Optional[np.ndarray]
    select_x: Optional[np.ndarray]
    select_y: Optional[np.ndarray]
    classes: Optional[int]
    sha256: str  # of fit_x: names the exact samples the ranges came from (TensorRT reuses them)

    @property
    def labelled(self) -> bool:
        return self.select_y is not None

    def per_class(self) -> Dict[int, int]:
        if self.fit_y is None:
            return {}
        ids, counts = np.unique(self.fit_y, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts)}

    def to_json(self) -> dict:
        return {"fit_samples": int(self.fit_x.shape[0]),
                "select_samples": int(self.select_x.shape[0]) if self.select_x is not None else 0,
                "per_class": {str(k): v for k, v in self.per_class().items()}, "sha256": self.sha256,
                "stratified": self.fit_y is not None, "seed": SEED}


def array_sha256(x: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str((x.dtype.str, x.shape)).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def stratified_split(y: np.ndarray, fit: int, select: int, seed: int = SEED) -> Tuple[np.ndarray, np.ndarray]:
    """Indices of a class-stratified ``fit``-sample part and a disjoint ``select``-sample part.

    Each class gives ``fit`` in proportion to its frequency (at least one sample); the held-out part is
    a seeded random draw from the rest. Both index arrays are sorted.
    """
    rng = np.random.default_rng(seed)
    n = y.shape[0]
    classes, counts = np.unique(y, return_counts=True)
    quota = np.maximum(1, np.floor(counts / float(n) * fit)).astype(int)
    while quota.sum() < fit and (quota < counts).any():  # hand out the rounding remainder, largest class first
        open_ = np.where(quota < counts)[0]
        quota[open_[np.argmax(counts[open_] - quota[open_])]] += 1
    picked: List[np.ndarray] = []
    for c, q in zip(classes, quota):
        idx = np.flatnonzero(y == c)
        picked.append(rng.choice(idx, size=min(int(q), idx.size), replace=False))
    fit_idx = np.sort(np.concatenate(picked))
    rest = np.setdiff1d(np.arange(n), fit_idx, assume_unique=True)
    sel_idx = np.sort(rng.permutation(rest)[:select])
    return fit_idx, sel_idx


def check_counts(method: str, n: int, labelled: bool, fit: int, select: int) -> None:
    """Raise when ``n`` samples cannot give ``method`` its range-fitting minimum plus the held-out part."""
    need_fit = MIN_FIT[method]
    need = need_fit + (MIN_SELECT if labelled else 0)
    if n < need:
        what = ("%d to fit the activation ranges plus %d held out to choose the method and check the accuracy "
                "budget" % (need_fit, MIN_SELECT)) if labelled else "%d to fit the activation ranges" % need_fit
        alt = "" if method == "minmax" else ", or use the minmax method (needs %d)" % (MIN_FIT["minmax"] + (
            MIN_SELECT if labelled else 0))
        raise CalibrationError("INT8 calibration with the %s method needs at least %d samples (%s), got %d; give more "
                               "representative data%s" % (method, need, what, n, alt))
    if fit < need_fit:
        raise CalibrationError("%d range-fitting samples are too few for the %s method (it needs %d); raise the "
                               "calibration sample count" % (fit, method, need_fit))
    if labelled and select < MIN_SELECT:
        raise CalibrationError("%d held-out samples are too few to check the accuracy budget (need %d); give more "
                               "calibration data or fewer range-fitting samples" % (select, MIN_SELECT))


def check_classes(y: np.ndarray, classes: int) -> None:
    """Every class the model predicts must be present in the calibration data."""
    present = set(int(v) for v in np.unique(y))
    bad = sorted(v for v in present if v < 0 or v >= classes)
    if bad:
        raise CalibrationError("calibration labels %s are outside the model's %d classes [0, %d)"
                               % (bad[:5], classes, classes))
    missing = sorted(set(range(classes)) - present)
    if missing:
        raise CalibrationError("calibration data has no sample of class%s %s (of %d); the ranges and the accuracy "
                               "budget would ignore %s: give data that covers every class"
                               % ("es" if len(missing) > 1 else "", ", ".join(map(str, missing[:10])), classes,
                                  "them" if len(missing) > 1 else "it"))


def make_calibration_set(x: np.ndarray, y: Optional[np.ndarray], classes: Optional[int], methods: Sequence[str],
                         fit: int = DEFAULT_FIT, select: int = DEFAULT_SELECT) -> CalibrationSet:
    """Split model-ready ``x`` (and labels ``y``) for INT8 calibration; validate against every method in ``methods``.

    With labels: ``fit`` stratified samples (fewer when the data is small: what is left after the held-out
    minimum) and up to ``select`` held out. Without labels: the first ``fit`` samples, nothing held out.
    """
    n = int(x.shape[0])
    if n == 0:
        raise CalibrationError("INT8 calibration data holds no samples; give a few thousand representative inputs")
    if y is None:
        fit = min(fit, n)
        for m in methods:
            check_counts(m, n, False, fit, 0)
        fx = np.ascontiguousarray(x[:fit])
        return CalibrationSet(fx, None, None, None, classes, array_sha256(fx))
    y = np.asarray(y).astype(np.int64)
    if y.shape != (n,):
        raise CalibrationError("calibration labels must have shape (%d,), got %s" % (n, y.shape))
    if classes is not None:
        check_classes(y, classes)
    fit_n = min(fit, n - MIN_SELECT) if n - fit < MIN_SELECT else fit
    sel_n = min(select, n - max(fit_n, 0))
    for m in methods:
        check_counts(m, n, True, fit_n, sel_n)
    fit_idx, sel_idx = stratified_split(y, fit_n, sel_n)
    fx = np.ascontiguousarray(x[fit_idx])
    return CalibrationSet(fx, y[fit_idx], np.ascontiguousarray(x[sel_idx]), y[sel_idx], classes, array_sha256(fx))


__all__ = ["CalibrationSet", "make_calibration_set", "stratified_split", "check_counts", "check_classes",
           "array_sha256", "METHODS", "MIN_FIT", "MIN_SELECT", "DEFAULT_FIT", "DEFAULT_SELECT"]
