"""Fixtures of the pipeline tests: a real two-stage FashionMNIST bundle fitted here (ridge regression,
written as ONNX), so accuracy against the demo scene's truth means something."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_models import linear_classifier, save


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple:
    xb = np.hstack([x, np.ones((len(x), 1))])
    onehot = np.eye(10)[y]
    w = np.linalg.solve(xb.T @ xb + lam * np.eye(xb.shape[1]), xb.T @ onehot)
    return w[:-1], w[-1]


@pytest.fixture(scope="session")
def fashion_bundle(tmp_path_factory):
    """A bundle folder: stage 1 a ridge classifier on 1500 images, stage 2 one on 12000 (28×28 grey)."""
    from edgeconf.bundle import MemoSettings, StageSpec, save_bundle
    from edgeconf.datasets import load_fashion_mnist
    from edgeconf.live.demo_scene import LABELS
    from edgeconf.preprocess import Preprocessing

    images, labels = load_fashion_mnist("train")
    x = images[:12000].reshape(12000, -1).astype(np.float64) / 255.0
    y = labels[:12000].astype(np.int64)
    folder = tmp_path_factory.mktemp("bundle")
    files = {}
    for name, n, lam in (("small", 1500, 30.0), ("large", 12000, 3.0)):
        w, b = _ridge(x[:n], y[:n], lam)
        # ridge outputs are ~one-hot scale; ×8 makes softmax margins usable as confidence
        files[name + ".onnx"] = save(linear_classifier(w * 8.0, b * 8.0), folder / ("src_" + name + ".onnx"))
    stages = [StageSpec("small", "small.onnx", "margin", 0.5), StageSpec("large", "large.onnx", "margin", 0.0)]
    save_bundle(str(folder / "b"), stages, files, list(LABELS), Preprocessing(size=(28, 28), channels=1),
                memo=MemoSettings(True, "dhash256", 0, 4096), name="test-fashion")
    return str(folder / "b")


@pytest.fixture(scope="session")
def baseline_onnx(fashion_bundle):
    import os

    return os.path.join(fashion_bundle, "large.onnx")
