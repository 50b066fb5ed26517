"""Fixtures for the bench tests: FashionMNIST-format IDX files and small real bundles built here."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnx_models import linear_classifier, save  # noqa: E402

from edgeconf.bundle import MemoSettings, StageSpec, save_bundle  # noqa: E402
from edgeconf.datasets import FASHION_LABELS  # noqa: E402
from edgeconf.preprocess import Preprocessing  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "edgeconf" / "data" / "fashion_sample.npz"


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an uint8 IDX file (the FashionMNIST format)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    path.write_bytes(head + a.tobytes())


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Linear least-squares classifier weights (features+1 bias row × 10) fitted to one-hot targets."""
    xb = np.hstack([x, np.ones((x.shape[0], 1), np.float32)])
    t = np.eye(10, dtype=np.float32)[y] * 8.0 - 4.0
    return np.linalg.solve(xb.T @ xb + alpha * np.eye(xb.shape[1], dtype=np.float32), xb.T @ t).astype(np.float32)


@pytest.fixture(scope="session")
def sample():
    d = np.load(SAMPLE, allow_pickle=False)
    return d["images"], d["labels"].astype(np.int64)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, sample) -> str:
    """A folder with the FashionMNIST test split made of the shipped 300-image sample."""
    images, labels = sample
    root = tmp_path_factory.mktemp("fmnist")
    write_idx(root / "t10k-images-idx3-ubyte", images)
    write_idx(root / "t10k-labels-idx1-ubyte", labels)
    return str(root)


@pytest.fixture(scope="session")
def models(tmp_path_factory, sample) -> dict:
    """A weak stage 1, a stronger stage 2, a 'big' baseline and an early-exit pair, all real ONNX files."""
    images, labels = sample
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    root = tmp_path_factory.mktemp("models")
    w1 = ridge(x[:100], labels[:100], 30.0)
    w2 = ridge(x, labels, 3.0)
    wb = ridge(x, labels, 1.0)
    paths = {
        "s1": save(linear_classifier(w1[:-1], w1[-1]), root / "s1.onnx"),
        "s2": save(linear_classifier(w2[:-1], w2[-1]), root / "s2.onnx"),
        "big": save(linear_classifier(wb[:-1], wb[-1]), root / "big.onnx"),
        "e1": save(linear_classifier(w1[:-1], w1[-1], extra_outputs=True), root / "e1.onnx"),
        "e2": save(linear_classifier(w2[:-1], w2[-1], input_shape=(784,), input_name="features"), root / "e2.onnx"),
    }
    pre = Preprocessing()
    bundle = str(root / "bundle")
    save_bundle(bundle, [StageSpec("s1", "s1.onnx", "margin", 0.6), StageSpec("s2", "s2.onnx", "margin", 0.0)],
                {"s1.onnx": paths["s1"], "s2.onnx": paths["s2"]}, FASHION_LABELS, pre, "last", MemoSettings(), "test-dual")
    early = str(root / "early")
    save_bundle(early, [StageSpec("e1", "e1.onnx", "margin", 0.6),
                        StageSpec("e2", "e2.onnx", "margin", 0.0, input="features")],
                {"e1.onnx": paths["e1"], "e2.onnx": paths["e2"]}, FASHION_LABELS, pre, "last", MemoSettings(), "test-ee")
    return {"bundle": bundle, "baseline": paths["big"], "early_exit": early, "root": str(root)}
