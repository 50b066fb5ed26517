"""Shared fixtures. tests/ is on sys.path so test modules can import the model builders."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from onnx_models import random_classifier, save  # noqa: E402


@pytest.fixture
def two_models(tmp_path):
    """Paths of two small real ONNX classifiers (28×28 grey → 10 logits)."""
    a = save(random_classifier(1), tmp_path / "a.onnx")
    b = save(random_classifier(2), tmp_path / "b.onnx")
    return a, b


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
