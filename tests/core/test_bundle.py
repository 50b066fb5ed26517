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


M = "edgeconf.json: "


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(schema=99), "schema version 99 is not supported"),
    (lambda d: d.update(schema=True), "schema version true is not supported"),
    (lambda d: d.update(format="other"), "'format' must be 'edgeconf.bundle', got 'other'"),
    (lambda d: d["stages"][0].update(threshold=1.5), r"stages\[0\].threshold must be a finite number in \[0, 1\], got 1.5"),
    (lambda d: d["stages"][0].update(threshold="high"), r"stages\[0\].threshold must be a finite number .*got 'high'"),
    (lambda d: d["stages"][0].pop("threshold"), r"stages\[0\] is missing key 'threshold'"),
    (lambda d: d["stages"][1].update(score="vibes"), r"stages\[1\].score must be one of 'maxp', .*got 'vibes'"),
    (lambda d: d["stages"][0].update(temperature=0), r"stages\[0\].temperature must be a finite number > 0, got 0"),
    (lambda d: d["stages"][0].update(name=7), r"stages\[0\].name must be a non-empty string, got 7"),
    (lambda d: d["stages"][1].update(name="a"), "stage names must be unique"),
    (lambda d: d["stages"][0].update(treshold=0.3), r"stages\[0\] has unknown key 'treshold'; known keys: .*threshold"),
    (lambda d: d["stages"][0].update(input="features"), r"stages\[0\].input must be 'image'"),
    (lambda d: d["stages"][0].update(engine=""), r"stages\[0\].engine must be a relative path inside the folder, got ''"),
    (lambda d: d["stages"][0].update(model="a\0.onnx"), r"stages\[0\].model must be a relative path"),
    (lambda d: d["stages"][0].update(cost=[1]), r"stages\[0\].cost must be an object, got a list of 1"),
    (lambda d: d.update(stages=[]), r"stages must be a list of 1 to 64 items \(each an object\), got a list of 0"),
    (lambda d: d.update(stages={"a": 1}), "stages must be a list of 1 to 64 items .*, got an object"),
    (lambda d: d.update(labels=[]), r"labels must be a list of 1 to 100000 items \(each a non-empty string\), got a list of 0"),
    (lambda d: d.update(labels=["x", 3]), r"labels\[1\] must be a non-empty string, got 3"),
    (lambda d: d.update(name=None), "name must be a non-empty string, got None"),
    (lambda d: d["preprocessing"].update(channels=2), "channels must be 1 or 3"),
    (lambda d: d["preprocessing"].update(channels=True), "preprocessing.channels must be an integer, got true"),
    (lambda d: d["preprocessing"].update(size=[28.0, 28]), r"preprocessing.size\[0\] must be an integer in \[1, 8192\], got 28.0"),
    (lambda d: d["preprocessing"].update(size=[100000, 100000]), r"preprocessing.size\[0\] must be an integer in \[1, 8192\]"),
    (lambda d: d["preprocessing"].update(size=[28]), r"preprocessing.size must be a list of 2 items \(each an integer in \[1, 8192\]\), got a list of 1"),
    (lambda d: d["preprocessing"].update(colour="yes"), "preprocessing has unknown key 'colour'"),
    (lambda d: d["preprocessing"].update(dtype="object"), "preprocessing.dtype must be one of 'float32'"),
    (lambda d: d.update(combine="vote"), "combine must be one of 'last', 'best', 'mean', got 'vote'"),
    (lambda d: d["memo"].update(key="md5"), "memo.key must be one of 'exact', "),
    (lambda d: d["memo"].update(enabled="false"), "memo.enabled must be true or false, got 'false'"),
    (lambda d: d["memo"].update(capacity=1.9), r"memo.capacity must be an integer in \[1, 1048576\], got 1.9"),
    (lambda d: d["memo"].update(capacity=10 ** 12), r"memo.capacity must be an integer in \[1, 1048576\]"),
    (lambda d: d["memo"].update(radius="abc"), r"memo.radius must be an integer in \[0, 1023\], got 'abc'"),
    (lambda d: d["memo"].update(radius=300), "memo.radius 300 needs a dHash key with more bits"),
    (lambda d: d.update(memo=None), "memo must be an object, got None"),
    (lambda d: d.update(provenance=[]), "provenance must be an object, got a list of 0"),
    (lambda d: d.update(files=[]), "files must be an object"),
    (lambda d: d["files"]["a.onnx"].update(sha256="xyz"), r"files\['a.onnx'\].sha256 must be a sha256"),
    (lambda d: d["files"]["a.onnx"].update(bytes=-1), r"files\['a.onnx'\].bytes must be an integer >= 0, got -1"),
    (lambda d: d["files"]["a.onnx"].update(bytes=5), "a.onnx has .* bytes but the manifest says 5"),
    (lambda d: d["stages"][0].update(model="../outside.onnx"), r"stages\[0\].model must be a relative path"),
    (lambda d: d["stages"][0].update(model="other.onnx"), "names 'other.onnx' but 'files' has no sha256"),
    (lambda d: d["files"].update({"../outside.onnx": {"sha256": "0" * 64}}), "a key of files must be a relative path"),
    (lambda d: d["files"].update({"/etc/passwd": {"sha256": "0" * 64}}), "a key of files must be a relative path"),
    (lambda d: d["files"]["a.onnx"].update(sha256="0" * 64), "a.onnx has sha256 .* but the manifest says 0000"),
])
def test_bad_manifests_are_refused_before_loading(bundle, edit, message):
    _edit(bundle, edit)
    with pytest.raises(BundleError, match=message) as info:
        load_bundle(str(bundle))
    assert "\n" not in str(info.value)


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
    with pytest.raises(BundleError, match=r"a.onnx has \d+ bytes but the manifest says \d+; the file was changed"):
        load_bundle(str(bundle))


def test_same_size_change_is_caught_by_the_hash(bundle):
    data = bytearray((bundle / "a.onnx").read_bytes())
    data[-5] ^= 0xFF
    (bundle / "a.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="a.onnx has sha256 .* the file was changed or corrupted"):
        load_bundle(str(bundle))


def _raw(bundle, text):
    (bundle / MANIFEST).write_text(text)
    with pytest.raises(BundleError) as info:
        load_bundle(str(bundle))
    assert "\n" not in str(info.value)
    return str(info.value)


def test_manifest_size_depth_and_numbers_are_bounded(bundle):
    assert "nests arrays/objects 200000 levels deep; at most 32" in _raw(bundle, "[" * 200000 + "]" * 200000)
    assert "nests arrays/objects 200001 levels deep" in _raw(bundle, '{"a": ' + "[" * 200000 + "]" * 200000 + "}")
    assert "larger than 8388608 bytes" in _raw(bundle, " " * (9 << 20))
    assert "holds an integer with 5000 digits" in _raw(bundle, '{"n": %s}' % ("9" * 5000))
    assert "holds Infinity, which is not a JSON number" in _raw(bundle, '{"t": Infinity}')
    assert "holds NaN" in _raw(bundle, '[NaN]')


def test_non_finite_and_non_utf8(bundle):
    good = (bundle / MANIFEST).read_text()
    msg = _raw(bundle, good.replace('"temperature": 1.5', '"temperature": 1e999'))
    assert "stages[0].temperature must be a finite number > 0, got inf" in msg
    (bundle / MANIFEST).write_bytes(b"\xff\xfe{}")
    with pytest.raises(BundleError, match="is not UTF-8 text"):
        load_bundle(str(bundle))
    assert "holds an unpaired surrogate" in _raw(bundle, good.replace('"name": "a"', '"name": "\\ud800"'))
    assert "must hold a JSON object, got a list of 0" in _raw(bundle, "[]")


def _external(tmp_path, name="ext.onnx", location="w.bin"):
    from onnx_models import random_classifier
    import onnx

    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    onnx.save_model(random_classifier(3), str(src / name), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=location, size_threshold=0)
    return src / name


def test_external_data_is_listed_hashed_and_checked(tmp_path, rng):
    model = _external(tmp_path)
    folder = tmp_path / "b"
    m = save_bundle(str(folder), [StageSpec("s", "models/s.onnx", "margin", 0.0)], {"models/s.onnx": str(model)},
                    LABELS, Preprocessing())
    assert set(m.files) == {"models/s.onnx", "models/w.bin"}  # brought along and listed
    img = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    before = load_bundle(str(folder), memo=False).classify(img)
    weights = folder / "models" / "w.bin"
    raw = np.frombuffer(weights.read_bytes(), np.float32).copy()
    raw[:] = raw[::-1]  # same size, other weights: a different answer if it loaded
    weights.write_bytes(raw.tobytes())
    with pytest.raises(BundleError, match="models/w.bin has sha256 .* changed or corrupted"):
        load_bundle(str(folder))
    _edit(folder, lambda d: d["files"].pop("models/w.bin"))
    with pytest.raises(BundleError, match="stage s: model models/s.onnx keeps weights in models/w.bin, which 'files' "
                                          "does not list"):
        load_bundle(str(folder))
    assert before.label == LABELS[before.class_id]


def test_external_data_outside_the_folder_is_refused(tmp_path):
    import onnx

    model = _external(tmp_path)
    proto = onnx.load(str(model), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../w.bin"
    folder = tmp_path / "b"
    folder.mkdir()
    onnx.save(proto, str(folder / "s.onnx"))
    (tmp_path / "w.bin").write_bytes((model.parent / "w.bin").read_bytes())
    from edgeconf.hashing import sha256_file
    (folder / MANIFEST).write_text(json.dumps({
        "format": "edgeconf.bundle", "schema": 1, "labels": LABELS, "preprocessing": {},
        "stages": [{"model": "s.onnx", "threshold": 0.0}],
        "files": {"s.onnx": {"sha256": sha256_file(str(folder / "s.onnx"))}}}))
    with pytest.raises(BundleError, match="external data location must be a relative path inside the folder, got "
                                          "'../w.bin'"):
        load_bundle(str(folder))


def test_labels_and_class_counts_are_checked_at_load(tmp_path):
    from onnx_models import random_classifier, save

    ten = save(random_classifier(1), tmp_path / "ten.onnx")
    five = save(random_classifier(2, classes=5), tmp_path / "five.onnx")
    save_bundle(str(tmp_path / "b1"), [StageSpec("s", "ten.onnx", "margin", 0.0)], {"ten.onnx": ten}, LABELS[:5],
                Preprocessing())
    with pytest.raises(BundleError, match="stage s answers over 10 classes but there are 5 labels"):
        load_bundle(str(tmp_path / "b1"))
    save_bundle(str(tmp_path / "b2"), [StageSpec("a", "ten.onnx", "margin", 0.5), StageSpec("b", "five.onnx", "margin", 0.0)],
                {"ten.onnx": ten, "five.onnx": five}, LABELS, Preprocessing())
    with pytest.raises(BundleError, match="stage b answers over 5 classes but there are 10 labels"):
        load_bundle(str(tmp_path / "b2"))


def test_preprocessing_must_fit_the_first_model(bundle):
    _edit(bundle, lambda d: d["preprocessing"].update(size=[32, 32]))
    with pytest.raises(BundleError, match=r"preprocessing makes inputs of shape 1x32x32 \(NCHW\) but stage a takes 1x28x28"):
        load_bundle(str(bundle))
    _edit(bundle, lambda d: d["preprocessing"].update(size=[28, 28], channels=3, mean=[0.5], std=[0.25]))
    with pytest.raises(BundleError, match="makes inputs of shape 3x28x28"):
        load_bundle(str(bundle))
    _edit(bundle, lambda d: d["preprocessing"].update(channels=1, dtype="float16"))
    with pytest.raises(BundleError, match="preprocessing makes float16 inputs but stage a takes float32"):
        load_bundle(str(bundle))


def test_unknown_top_level_keys_are_kept_as_plain_json(bundle):
    _edit(bundle, lambda d: d.update(operating_point={"policy": "x", "values": [1, 2.5]}))
    m = read_manifest(str(bundle))
    assert m.extra == {"operating_point": {"policy": "x", "values": [1, 2.5]}}
    assert m.to_json()["operating_point"] == m.extra["operating_point"]


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
    with pytest.raises(BundleError, match=r'stage a takes 1x28x28; set "layout": "NCHW"'):
        load_bundle(folder)


# -- load_bundle's arguments (QA pass f25) ----------------------------------------------------------------------
def test_memo_argument_takes_settings_or_refuses(bundle):
    from edgeconf.errors import ConfigError

    assert load_bundle(str(bundle)).memo.settings()["key"] == "dhash256"  # the manifest's
    assert load_bundle(str(bundle), memo=False).memo is None
    got = load_bundle(str(bundle), memo=MemoSettings(key="exact", capacity=10)).memo
    assert (got.kind, got.capacity, got.radius) == ("exact", 10, 0)
    got = load_bundle(str(bundle), memo={"key": "dhash64", "radius": 3, "adaptive": False}).memo
    assert (got.kind, got.radius, got.capacity, got.sampling) == ("dhash64", 3, 4096, None)
    assert load_bundle(str(bundle), memo=MemoSettings(enabled=False)).memo is None
    for bad, match in [("exact", "memo must be an edgeconf.bundle.MemoSettings"),
                       (1, "memo must be an edgeconf.bundle.MemoSettings"),
                       ({"kee": "exact"}, "memo has unknown key 'kee'"),
                       ({"capacity": 10 ** 12}, r"memo.capacity must be an integer in \[1, 1048576\]"),
                       (MemoSettings(capacity=0), r"memo.capacity must be an integer in \[1, 1048576\]")]:
        with pytest.raises(ConfigError, match=match):
            load_bundle(str(bundle), memo=bad)


def test_a_single_provider_name_is_a_list_of_one(bundle):
    c = load_bundle(str(bundle), providers="cpu")
    assert c.stages[0].runner.providers == ["CPUExecutionProvider"]


@pytest.mark.parametrize("folder", [None, 3, "", ["a"]])
def test_a_bundle_is_given_by_its_path(folder):
    with pytest.raises(BundleError, match="a bundle is given by the path of its folder"):
        load_bundle(folder)


def test_a_file_given_as_the_bundle_folder_says_so(bundle, tmp_path):
    with pytest.raises(BundleError, match=r"a\.onnx is an ONNX model file, not a bundle folder \(a folder with "
                                          r"edgeconf\.json.*edgeconf\.backends\.prepare.*edgeconf cascade"):
        load_bundle(str(bundle / "a.onnx"))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(BundleError, match=r"notes\.txt is a file, not a bundle folder"):
        read_manifest(str(text))
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(str(tmp_path / "nope"))
    odd = tmp_path / "odd"
    (odd / MANIFEST).mkdir(parents=True)
    with pytest.raises(BundleError, match=r"edgeconf\.json is a folder, not the bundle's manifest file"):
        load_bundle(str(odd))


def test_a_stage_input_the_stage_before_does_not_output_names_both_stages(bundle):
    _edit(bundle, lambda d: d["stages"][1].update(input="nope"))
    with pytest.raises(BundleError, match=r"stage 2 \(b\) takes input 'nope', which stage 1 \(a\) does not output "
                                          r"\(its outputs: .*\); .*stages\[1\].input in a bundle's edgeconf.json") as err:
        load_bundle(str(bundle))
    assert "\n" not in str(err.value)
