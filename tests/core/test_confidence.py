from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgeconf.confidence import (SCORES, entropy_confidence, expected_calibration_error, margin, maxp,
                                 negative_log_likelihood, score, softmax)
from edgeconf.errors import ConfigError

logits_arrays = arrays(np.float64, st.tuples(st.integers(1, 16), st.integers(2, 12)),
                       elements=st.floats(-30, 30, allow_nan=False, allow_infinity=False))


@given(logits_arrays, st.floats(0.05, 20))
@settings(max_examples=80, deadline=None)
def test_scores_are_in_unit_interval(logits, t):
    p = softmax(logits, t)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    for name in SCORES:
        c = score(name, p)
        assert c.shape == (logits.shape[0],)
        assert np.all(c >= -1e-12) and np.all(c <= 1 + 1e-12), name


@given(logits_arrays)
@settings(max_examples=50, deadline=None)
def test_temperature_one_is_plain_softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(softmax(logits, 1.0), e / e.sum(axis=1, keepdims=True), rtol=1e-12, atol=1e-15)


@given(logits_arrays, st.floats(0.05, 20))
@settings(max_examples=50, deadline=None)
def test_temperature_keeps_argmax(logits, t):
    # ties in the logits may resolve either way; compare only rows with a unique maximum
    top = np.sort(logits, axis=1)
    unique = top[:, -1] - top[:, -2] > 1e-9
    assert np.array_equal(softmax(logits, t).argmax(1)[unique], logits.argmax(1)[unique])


def test_known_values():
    p = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(maxp(p), [0.7, 1 / 3, 1.0])
    np.testing.assert_allclose(margin(p), [0.5, 0.0, 1.0], atol=1e-12)
    ent = entropy_confidence(p)
    h = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))
    np.testing.assert_allclose(ent, [1 - h / np.log(3), 0.0, 1.0], atol=1e-12)


def test_ece_of_perfectly_calibrated_set_is_near_zero():
    rng = np.random.default_rng(0)
    n, c = 200_000, 4
    conf = rng.uniform(0.25, 1.0, n)
    top = rng.integers(0, c, n)
    probs = np.full((n, c), 0.0)
    rest = (1 - conf) / (c - 1)
    probs[:] = rest[:, None]
    probs[np.arange(n), top] = conf
    # the label equals the top class with probability conf, otherwise another class
    correct = rng.uniform(size=n) < conf
    other = (top + rng.integers(1, c, n)) % c
    labels = np.where(correct, top, other)
    assert expected_calibration_error(probs, labels) < 0.01
    # an overconfident model has a large ECE
    sharp = softmax(np.log(probs) * 4)
    assert expected_calibration_error(sharp, labels) > 0.1


def test_ece_counts_boundaries_and_nll():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.0)
    assert expected_calibration_error(probs, np.array([1, 0])) == pytest.approx(1.0)
    assert negative_log_likelihood(np.array([[0.5, 0.5]]), np.array([0])) == pytest.approx(np.log(2))


def test_bad_arguments_are_typed_errors():
    with pytest.raises(ConfigError, match="temperature"):
        softmax(np.zeros((1, 3)), 0)
    with pytest.raises(ConfigError, match="unknown score 'bogus'"):
        score("bogus", np.ones((1, 2)) / 2)
    with pytest.raises(ConfigError, match="shape"):
        expected_calibration_error(np.ones((3, 2)) / 2, np.zeros(2))


def test_a_nan_probability_gives_a_nan_confidence_for_every_score():
    p = np.array([[np.nan, 0.5, 0.5], [0.7, 0.2, 0.1]])
    for name, fn in SCORES.items():
        c = fn(p)
        assert np.isnan(c[0]) and np.isfinite(c[1]), name  # never a confident answer from a broken stage
