"""Shared fixtures. tests/ is on sys.path so test modules can import the model builders."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from onnx_models import random_classifier, save  # noqa: E402

try:  # property-based tests draw the same examples on every run (a CI run must not depend on luck);
    # HYPOTHESIS_PROFILE=explore draws new ones, for a developer hunting bugs
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("repeatable", derandomize=True, database=None)
    _hypothesis_settings.register_profile("explore", derandomize=False)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
except ImportError:  # the Python 3.8 floor environment runs without hypothesis
    pass


@pytest.fixture
def two_models(tmp_path):
    """Paths of two small real ONNX classifiers (28×28 grey → 10 logits)."""
    a = save(random_classifier(1), tmp_path / "a.onnx")
    b = save(random_classifier(2), tmp_path / "b.onnx")
    return a, b


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
