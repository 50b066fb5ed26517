from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from edgeconf.bundle import MANIFEST, MemoSettings, StageSpec, load_bundle, read_manifest, save_bundle
from edgeconf.errors import BundleError
from edgeconf.preprocess import Preprocessing

LABELS = ["c%d" % i for i in range(10)]


@pytest.fixture
def bundle(tmp_path, two_models):
    folder = tmp_path / "bundle"
    save_bundle(str(folder), [StageSpec("a", "a.onnx", "margin", 0.4, 1.5), StageSpec("b", "models/b.onnx", "maxp", 0.2)],
                {"a.onnx": two_models[0], "models/b.onnx": two_models[1]}, LABELS,
                Preprocessing(mean=(0.5,), std=(0.25,)), combine="best",
                memo=MemoSettings(True, "dhash256", 2, 100), name="test", provenance={"dataset": "none"})
    return folder


def test_round_trip(bundle, rng):
    m = read_manifest(str(bundle))
    assert [s.name for s in m.stages] == ["a", "b"]
    assert m.stages[0].temperature == 1.5 and m.stages[1].score == "maxp"
    assert m.combine == "best" and m.labels == LABELS
    assert m.preprocessing.mean == (0.5,) and m.memo.radius == 2 and m.memo.capacity == 100
    assert m.provenance["dataset"] == "none" and m.provenance["tool"].startswith("edgeconf")
    assert set(m.files) == {"a.onnx", "models/b.onnx"}
    cascade = load_bundle(str(bundle))
    assert cascade.combine == "best" and cascade.thresholds == [0.4, 0.2]
    assert cascade.memo is not None and cascade.memo.radius == 2
    assert cascade.stages[0].model_sha256 == m.files["a.onnx"]["sha256"]
    img = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    res = cascade.classify(img)
    assert res.label == LABELS[res.class_id]
    assert load_bundle(str(bundle), memo=False).memo is None


def _edit(bundle, fn):
    path = bundle / MANIFEST
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(schema=99), "schema version 99 is not supported"),
    (lambda d: d.update(format="other"), "'format' must be"),
    (lambda d: d["stages"][0].update(threshold=1.5), "threshold 1.5 is outside"),
    (lambda d: d["stages"][0].update(threshold="high"), "'threshold' must be float"),
    (lambda d: d["stages"][1].update(score="vibes"), "unknown score 'vibes'"),
    (lambda d: d["stages"][0].update(temperature=0), "temperature must be a number > 0"),
    (lambda d: d.update(stages=[]), "'stages' is empty"),
    (lambda d: d.update(labels=[]), "'labels' must be a non-empty list"),
    (lambda d: d["preprocessing"].update(channels=2), "channels must be 1 or 3"),
    (lambda d: d["preprocessing"].update(colour="yes"), "unknown preprocessing keys"),
    (lambda d: d.update(combine="vote"), "combine rule 'vote'"),
    (lambda d: d["memo"].update(key="md5"), "invalid memo settings"),
    (lambda d: d["stages"][0].update(model="../outside.onnx"), "'files' has no sha256"),
    (lambda d: d["files"].update({"../outside.onnx": {"sha256": "0" * 64}}), "leaves the bundle folder"),
    (lambda d: d["files"].update({"/etc/passwd": {"sha256": "0" * 64}}), "must be relative"),
    (lambda d: d["files"]["a.onnx"].update(sha256="0" * 64), "a.onnx has sha256 .* but the manifest says 0000"),
])
def test_bad_manifests_are_refused_before_loading(bundle, edit, message):
    _edit(bundle, edit)
    with pytest.raises(BundleError, match=message):
        load_bundle(str(bundle))


def test_missing_and_malformed(bundle, tmp_path):
    os.remove(bundle / "models" / "b.onnx")
    with pytest.raises(BundleError, match="b.onnx is missing"):
        load_bundle(str(bundle))
    (bundle / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(str(bundle))
    with pytest.raises(BundleError, match="has no edgeconf.json"):
        load_bundle(str(tmp_path))
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(str(tmp_path / "nope"))


def test_symlink_escaping_the_folder_is_refused(bundle, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copy(bundle / "a.onnx", outside)
    os.remove(bundle / "a.onnx")
    os.symlink(outside, bundle / "a.onnx")
    with pytest.raises(BundleError, match="leaves the bundle folder"):
        load_bundle(str(bundle))


def test_model_file_changed_after_export(bundle):
    with open(bundle / "a.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="was changed or corrupted"):
        load_bundle(str(bundle))


def _with_preprocessing(src: str, dst, pre: Preprocessing) -> str:
    import onnx

    model = onnx.load(src)
    entry = model.metadata_props.add()
    entry.key, entry.value = "edgeconf.preprocessing", json.dumps(pre.to_json())
    onnx.save(model, str(dst))
    return str(dst)


def test_stages_with_different_preprocessing_are_refused_at_load(tmp_path, two_models):
    bundle_pre = Preprocessing(mean=(0.5,), std=(0.25,))
    a = _with_preprocessing(two_models[0], tmp_path / "a.onnx", bundle_pre)
    b = _with_preprocessing(two_models[1], tmp_path / "b.onnx", bundle_pre.replace(std=[0.3]))
    folder = str(tmp_path / "mixed")
    save_bundle(folder, [StageSpec("a", "a.onnx"), StageSpec("b", "b.onnx", threshold=0.0)],
                {"a.onnx": a, "b.onnx": b}, LABELS, bundle_pre)
    with pytest.raises(BundleError, match=r"stage b \(b.onnx\) does not fit.*std \[0.3\] vs the bundle's \[0.25\]"):
        load_bundle(folder)
    same = str(tmp_path / "same")
    save_bundle(same, [StageSpec("a", "a.onnx"), StageSpec("b", "b.onnx", threshold=0.0)],
                {"a.onnx": a, "b.onnx": a}, LABELS, bundle_pre)
    load_bundle(same).close()


def test_a_stage_whose_input_does_not_match_the_layout_is_refused(tmp_path, two_models):
    folder = str(tmp_path / "nhwc")
    save_bundle(folder, [StageSpec("a", "a.onnx")], {"a.onnx": two_models[0]}, LABELS,
                Preprocessing(size=(28, 28), channels=1, layout="NHWC"))
    with pytest.raises(BundleError, match=r'expects \(1, 28, 28\); set "layout": "NCHW"'):
        load_bundle(folder)
