"""Confidence scores over class probabilities, temperature scaling and calibration error.

All functions are vectorised over a leading batch axis and take ``(N, C)`` arrays.
"""
from __future__ import annotations

from typing import Callable, Dict

import numpy as np

from edgeconf.errors import ConfigError


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax of ``logits / temperature`` over the last axis."""
    if not temperature > 0:
        raise ConfigError("temperature must be > 0, got %r" % (temperature,))
    z = np.array(logits, dtype=np.float64)  # a fresh copy, worked on in place (hot path)
    if temperature != 1.0:
        z /= float(temperature)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def maxp(probs: np.ndarray) -> np.ndarray:
    """Largest class probability."""
    return np.asarray(probs).max(axis=-1)


def margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability (the score of Kinnas et al.)."""
    p = np.asarray(probs)
    if p.shape[-1] < 2:
        return p[..., 0]
    top2 = np.partition(p, -2, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0] if p.ndim > 1 else top2[1] - top2[0]


def entropy_confidence(probs: np.ndarray) -> np.ndarray:
    """One minus the entropy normalised by log(C): 1 for a one-hot, 0 for uniform."""
    p = np.asarray(probs, dtype=np.float64)
    c = p.shape[-1]
    if c < 2:
        return np.ones(p.shape[:-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), p * 0.0).sum(axis=-1)  # (p * 0.0: a NaN probability stays NaN, unsure)
    return np.clip(1.0 - h / np.log(c), 0.0, 1.0)


SCORES: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "maxp": maxp,
    "margin": margin,
    "entropy": entropy_confidence,
}


def score(name: str, probs: np.ndarray) -> np.ndarray:
    """Confidence of each row of ``probs`` under the score called ``name``."""
    try:
        fn = SCORES[name]
    except KeyError:
        raise ConfigError("unknown score %r; choose one of %s" % (name, ", ".join(sorted(SCORES)))) from None
    return fn(probs)


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Energy score ``-T·logsumexp(logits / T)`` (Liu et al., 2020): higher means further out of distribution."""
    if not temperature > 0:
        raise ConfigError("temperature must be > 0, got %r" % (temperature,))
    z = np.array(logits, dtype=np.float64) / float(temperature)
    m = z.max(axis=-1)
    return -float(temperature) * (m + np.log(np.exp(z - m[..., None]).sum(axis=-1)))


#: out-of-distribution scores the runtime computes from the logits alone (others come from the model's OOD head)
OOD_SCORES: Dict[str, Callable[..., np.ndarray]] = {"energy": energy}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE over ``bins`` equal-width bins of max probability (Guo et al., 2017)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise ConfigError("ECE needs probs of shape (N, C) and labels of shape (N,)")
    if p.shape[0] == 0:
        raise ConfigError("ECE needs at least one sample")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    conf_sum = np.bincount(idx, weights=conf, minlength=bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=bins)
    return float(np.abs(acc_sum - conf_sum).sum() / p.shape[0])


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0)).mean())
