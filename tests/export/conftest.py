"""Fixtures for the exporter tests: a small learnable task and ONNX classifiers built with onnx.helper."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import pytest

from onnx_models import linear_classifier, save

SHAPE = (1, 6, 6)
CLASSES = 5


@dataclass
class Task:
    """Class prototypes plus noise; linear models with noisy prototype weights make different mistakes."""

    protos: np.ndarray  # (C, F)

    def data(self, n: int, seed: int, noise: float = 2.2) -> Tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        y = np.arange(n) % CLASSES
        rng.shuffle(y)
        x = self.protos[y] + rng.normal(0, noise, (n, self.protos.shape[1]))
        return x.reshape((n,) + SHAPE).astype(np.float32), y.astype(np.int64)

    def model(self, seed: int, noise: float, scale: float = 0.25, **kw):
        rng = np.random.default_rng(seed)
        w = (self.protos.T + rng.normal(0, noise, self.protos.T.shape)) * scale
        return linear_classifier(w, None, input_shape=SHAPE, **kw)


@pytest.fixture(scope="session")
def task() -> Task:
    rng = np.random.default_rng(7)
    return Task(rng.normal(0, 1, (CLASSES, int(np.prod(SHAPE)))))


@pytest.fixture
def pool(task, tmp_path) -> List[str]:
    """Three classifiers of different quality (paths), cheapest-looking first."""
    return [save(task.model(s, n), os.path.join(tmp_path, "m%d.onnx" % i))
            for i, (s, n) in enumerate([(1, 1.2), (2, 0.6), (3, 0.3)])]


@pytest.fixture
def splits(task):
    """(calibration, test) pairs from disjoint seeds."""
    return task.data(400, 11), task.data(400, 12)
