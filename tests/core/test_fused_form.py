"""The fused form at run time: broken (non-finite) stage outputs answered as the staged form answers them, and a
fused graph that was altered after `edgeconf fuse` refused at load with one line."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edgeconf.bundle import StageSpec, load_bundle, save_bundle
from edgeconf.cascade import UNKNOWN
from edgeconf.export.fuse import fuse_bundle
from edgeconf.preprocess import Preprocessing
from onnx_models import linear_classifier, save

LABELS = ["c%d" % i for i in range(10)]


def _overflowing(seed: int, block: int):
    """A real linear classifier whose logits overflow to inf (softmax: NaN) where pixels 4·block..4·block+3 are 255."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.05, (784, 10)).astype(np.float32)
    w[4 * block:4 * block + 4, 0] = 1e38
    return linear_classifier(w, rng.normal(0, 0.1, 10))


def _broken_bundle(tmp_path, combine: str, batch=None) -> str:
    folder = str(tmp_path / "b")
    specs = [StageSpec("s%d" % k, "s%d.onnx" % k, "margin", 0.0) for k in range(3)]  # finite: exits at once
    files = {"s%d.onnx" % k: save(_overflowing(30 + k, k), tmp_path / ("m%d.onnx" % k)) for k in range(3)}
    save_bundle(folder, specs, files, LABELS, Preprocessing(), combine=combine)
    fuse_bundle(folder, batch=batch, check=False)
    return folder


def _images(n: int = 8) -> np.ndarray:
    """Rows 2+ break stage 1; 4+ stage 2 too; 6+ every stage."""
    x = np.random.default_rng(5).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    flat = x.reshape(n, -1)
    flat[:, :12] = 0
    flat[2:, 0:4] = flat[4:, 4:8] = flat[6:, 8:12] = 255
    return x


def _same(a, b) -> None:
    assert [(r.class_id, r.stage, r.stages_run, r.unknown, r.label) for r in a] == \
        [(r.class_id, r.stage, r.stages_run, r.unknown, r.label) for r in b]
    np.testing.assert_allclose([r.confidence for r in a], [r.confidence for r in b], atol=1e-5, rtol=0)


@pytest.mark.parametrize("combine, batch", [("last", None), ("best", None), ("mean", None), ("last", 1)])
def test_broken_stage_outputs_get_the_staged_answers(tmp_path, combine, batch):
    folder = _broken_bundle(tmp_path, combine, batch)
    staged = load_bundle(folder, memo=False, threads=1, form="staged")
    fused = load_bundle(folder, memo=False, threads=1, form="fused")
    images = _images()
    want = staged.classify_batch(list(images))
    assert [r.stage for r in want] == ([0, 0, 2, 2, 2, 2, 2, 2] if combine == "mean" else [0, 0, 1, 1, 2, 2, 2, 2])
    assert want[7].unknown and want[7].class_id == UNKNOWN
    _same(fused.classify_batch(list(images)), want)
    _same([fused.classify(img) for img in images], want)
    _same([staged.classify(img) for img in images], want)
    assert fused.counters.exits == staged.counters.exits and fused.counters.calls == staged.counters.calls
    assert all(json.dumps(r.to_json(), allow_nan=False) for r in fused.classify_batch(list(images)))
