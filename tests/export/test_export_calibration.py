"""Temperature scaling: recovers a known temperature, agrees with scipy, refuses unusable data."""
from __future__ import annotations

import numpy as np
import pytest

from edgeconf.confidence import softmax
from edgeconf.export.calibration import fit_temperature
from edgeconf.export.errors import CalibrationError


def _overconfident(n=4000, c=6, t_true=2.5, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, c))
    p = softmax(z)
    y = np.array([rng.choice(c, p=row) for row in p])
    return z * t_true, y  # logits t_true times too sharp


def test_recovers_the_temperature_and_improves_calibration():
    logits, y = _overconfident()
    rep = fit_temperature(logits, y)
    assert rep.temperature == pytest.approx(2.5, rel=0.08)
    assert rep.nll_after < rep.nll_before
    assert rep.ece_after < rep.ece_before
    assert rep.samples == 4000 and not rep.at_bound


def test_matches_scipy_minimiser():
    optimize = pytest.importorskip("scipy.optimize")
    logits, y = _overconfident(n=1500, t_true=0.6, seed=3)

    def nll(log_t):
        p = softmax(logits, float(np.exp(log_t)))
        return -np.log(p[np.arange(len(y)), y]).mean()

    ref = optimize.minimize_scalar(nll, bounds=(np.log(0.05), np.log(20)), method="bounded",
                                   options={"xatol": 1e-8})
    rep = fit_temperature(logits, y)
    assert rep.temperature == pytest.approx(float(np.exp(ref.x)), rel=1e-3)
    assert rep.nll_after == pytest.approx(float(ref.fun), abs=1e-6)


def test_one_class_refused():
    logits, _ = _overconfident(n=100)
    with pytest.raises(CalibrationError, match="only 1 class"):
        fit_temperature(logits, np.zeros(100, np.int64))


def test_too_few_samples_refused():
    logits, y = _overconfident(n=10)
    with pytest.raises(CalibrationError, match="at least 20 samples, got 10"):
        fit_temperature(logits, y)


@pytest.mark.parametrize("logits,labels,msg", [
    (np.zeros(30), np.zeros(30, np.int64), "shape \\(samples, classes\\)"),
    (np.zeros((30, 4)), np.zeros(29, np.int64), "labels must have shape \\(30,\\)"),
    (np.zeros((30, 4)), np.full(30, 7), "class indices in \\[0, 4\\)"),
    (np.full((30, 4), np.nan), np.arange(30) % 4, "finite"),
    (np.zeros((30, 4)), np.linspace(0, 1, 30), "integer class indices"),
])
def test_wrong_shapes_refused(logits, labels, msg):
    with pytest.raises(CalibrationError, match=msg):
        fit_temperature(logits, labels)
