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


# -- a fused graph altered after `edgeconf fuse` (and re-hashed, so the sha256 check passes) ---------------------
@pytest.fixture(scope="module")
def fused_zoo(tmp_path_factory) -> str:
    import shutil

    from edgeconf import data_path

    folder = str(tmp_path_factory.mktemp("zoo") / "bundle")
    shutil.copytree(data_path("zoo", "bundle"), folder)
    fuse_bundle(folder, check=False)
    return folder


def _altered(fused_zoo: str, tmp_path, change) -> str:
    """A copy of the fused bundle whose fused.onnx is ``change(model)`` (or its bytes), with the manifest re-hashed."""
    import shutil

    import onnx

    from edgeconf.hashing import sha256_file

    folder = str(tmp_path / "b")
    shutil.copytree(fused_zoo, folder)
    path = os.path.join(folder, "fused.onnx")
    data = change(onnx.load(path))
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.SerializeToString())
    manifest = os.path.join(folder, "edgeconf.json")
    doc = json.load(open(manifest))
    doc["files"]["fused.onnx"] = {"sha256": sha256_file(path), "bytes": os.path.getsize(path)}
    json.dump(doc, open(manifest, "w"))
    return folder


def _drop_probs(m):
    del m.graph.output[4]
    return m


def _float_input(m):
    m.graph.input[0].type.tensor_type.elem_type = 1  # FLOAT
    return m


def _initializer(name: str, value: float):
    def change(m):
        from onnx import numpy_helper

        init = next(i for i in m.graph.initializer if i.name == name)
        init.CopyFrom(numpy_helper.from_array(np.array(value, np.float32), name))
        return m
    return change


@pytest.mark.parametrize("change, message", [
    (lambda m: b"text", "is not an ONNX model .*; rebuild it with: edgeconf fuse BUNDLE"),
    (lambda m: b"", "cannot be used: it holds no graph; rebuild it with: edgeconf fuse BUNDLE"),
    (_drop_probs, "it lacks the output probs that the runtime reads"),
    (_float_input, "its input 'image' is float, but the runtime feeds uint8 pixels"),
    (_initializer("edgeconf_fused_temperature_0", 0.0), "initializer edgeconf_fused_temperature_0: temperature must "
                                                         "be a finite number > 0, got 0.0"),
    (_initializer("edgeconf_fused_temperature_1", float("nan")), "edgeconf_fused_temperature_1: .* got nan"),
    (_initializer("edgeconf_fused_threshold_0", 2.0), "edgeconf_fused_threshold_0: threshold must be in \\[0, 1\\]"),
    (_initializer("edgeconf_fused_threshold_1", float("nan")), "edgeconf_fused_threshold_1: threshold .* got nan"),
    (_initializer("edgeconf_fused_threshold_0", 0.25), "edgeconf_fused_threshold_0 holds 0.25 but the graph's "
                                                       "edgeconf.fused metadata says"),
])
def test_an_altered_fused_graph_is_refused_in_one_line_naming_the_file(fused_zoo, tmp_path, capsys, change, message):
    from edgeconf import data_path
    from edgeconf.cli import main
    from edgeconf.errors import BundleError

    folder = _altered(fused_zoo, tmp_path, change)
    with pytest.raises(BundleError, match="the fused graph %s/fused.onnx .*%s" % (folder, message)):
        load_bundle(folder, form="fused")
    load_bundle(folder, form="staged").close()  # the stages still run
    with pytest.raises(SystemExit) as exit_:
        main(["classify", folder, data_path("fashion_sample.npz"), "--form", "fused"])
    err = capsys.readouterr().err
    assert exit_.value.code != 0 and err.count("\n") == 1 and "Traceback" not in err and "fused.onnx" in err
    info = __import__("edgeconf.commands.inspect", fromlist=["describe"]).describe(folder)
    assert "fused.onnx" in info["form"]["fused"]["problem"]  # inspect flags it too


def test_an_intact_fused_graph_has_no_problem(fused_zoo):
    info = __import__("edgeconf.commands.inspect", fromlist=["describe"]).describe(fused_zoo)
    assert "problem" not in info["form"]["fused"]
    load_bundle(fused_zoo, form="fused").close()
