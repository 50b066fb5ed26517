"""The exporter's Python API: preprocessing resolved and checked, probability outputs, labelled data of any
format, cascades whose stages must prepare images alike, and retuning bundles."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgeconf.export as api
from edgeconf.bundle import MANIFEST, load_bundle, read_manifest
from edgeconf.confidence import score, softmax
from edgeconf.errors import ConfigError, DataError, InputValidationError, ModelLoadError, OutputError
from edgeconf.export.head import head_values, read_head_metadata
from edgeconf.preprocess import Preprocessing
from onnx_models import linear_classifier, save


# -- small image models: 8×8 RGB, NCHW or NHWC, mean/std normalisation ---------------------------------------
PRE = Preprocessing(size=(8, 8), channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def image_task(n: int, seed: int):
    """Raw uint8 RGB images whose class (0..3) is the brightest channel block, plus labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.integers(40, 120, (n, 8, 8, 3)).astype(np.int32)
    for i, c in enumerate(y):
        if c < 3:
            x[i, :, :, c] += 110
        else:
            x[i] += 60
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


def image_model(layout: str, seed: int, softmax_out: bool = False, output: str = "logits") -> onnx.ModelProto:
    """A linear classifier of PRE-normalised 8×8×3 inputs, least-squares fitted to the task (so it is accurate)."""
    x, y = image_task(400, 100 + seed)
    f = PRE.replace(layout=layout).batch(list(x)).reshape(len(x), -1)
    fb = np.hstack([f, np.ones((len(f), 1), np.float32)])
    t = np.eye(4, dtype=np.float32)[y] * 6.0 - 3.0
    w = np.linalg.solve(fb.T @ fb + 10.0 * np.eye(fb.shape[1]), fb.T @ t).astype(np.float32)
    shape = (3, 8, 8) if layout == "NCHW" else (8, 8, 3)
    model = linear_classifier(w[:-1], w[-1], input_shape=shape, output_name="z" if softmax_out else output)
    if softmax_out:
        g = model.graph
        g.node.append(helper.make_node("Softmax", ["z"], [output], axis=1))
        del g.output[:]
        g.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", 4]))
        onnx.checker.check_model(model)
    return model


@pytest.fixture
def data(tmp_path):
    x, y = image_task(240, 1)
    np.savez(tmp_path / "calib.npz", x=x, y=y)
    return str(tmp_path / "calib.npz")


def _run(path, feed, names):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: feed})))


# -- export ------------------------------------------------------------------------------------------------
def test_export_records_the_preprocessing_and_reports_accuracy(tmp_path, data):
    src = save(image_model("NCHW", 1), tmp_path / "m.onnx")
    res = api.export_model(src, str(tmp_path / "out.onnx"), data=data, preprocessing=PRE.to_json())
    assert res.preprocessing == PRE and res.preprocessing_source == "given"
    assert res.accuracy is not None and res.accuracy > 0.9 and not res.warnings
    assert res.calibration is not None and res.temperature == pytest.approx(res.calibration.temperature)
    meta = read_head_metadata(str(tmp_path / "out.onnx"))
    assert Preprocessing.from_json(meta["preprocessing"]) == PRE and meta["output_kind"] == "logits"


def test_wrong_preprocessing_warns_near_chance(tmp_path, data):
    src = save(image_model("NCHW", 1), tmp_path / "m.onnx")
    wrong = PRE.replace(scale=1.0)  # x instead of x / 255: every input saturates
    res = api.export_model(src, str(tmp_path / "out.onnx"), data=data, preprocessing=wrong)
    assert res.accuracy <= 0.5
    assert len(res.warnings) == 1 and "near chance" in res.warnings[0] and "wrong preprocessing" in res.warnings[0]


def test_inferred_preprocessing_is_said_and_never_null(tmp_path, data):
    src = save(image_model("NHWC", 2), tmp_path / "m.onnx")
    res = api.export_model(src, str(tmp_path / "out.onnx"))
    assert res.preprocessing_source == "inferred"
    assert res.preprocessing == Preprocessing(size=(8, 8), channels=3, layout="NHWC")
    assert any("x/255 with no mean/std is assumed" in n for n in res.notes)
    assert read_head_metadata(str(tmp_path / "out.onnx"))["preprocessing"]["layout"] == "NHWC"
    flat = save(linear_classifier(np.zeros((12, 3), np.float32), input_shape=(12,)), tmp_path / "flat.onnx")
    with pytest.raises(ConfigError, match=r"none can be inferred.*\(12,\) is not an image"):
        api.export_model(flat, str(tmp_path / "flat_out.onnx"))
    res = api.export_model(flat, str(tmp_path / "flat_out.onnx"), preprocessing="none")
    assert res.preprocessing is None and read_head_metadata(str(tmp_path / "flat_out.onnx"))["preprocessing"] is None


def test_a_layout_mismatch_names_the_layout_option(tmp_path, data):
    src = save(image_model("NCHW", 1), tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match='expects \\(3, 8, 8\\); set "layout": "NCHW"'):
        api.export_model(src, str(tmp_path / "o.onnx"), data=data, preprocessing=PRE.replace(layout="NHWC"))
    x, y = image_task(40, 3)
    ready = PRE.replace(layout="NHWC").batch(list(x))  # model-ready, but channels last
    with pytest.raises(InputValidationError, match='the data is NHWC and the model NCHW.*"layout" is "NCHW"'):
        api.export_model(src, str(tmp_path / "o.onnx"), data=(ready, y), preprocessing=PRE)


@pytest.mark.parametrize("how", ["softmax_node", "rows_sum_to_one"])
@pytest.mark.parametrize("score_name", ["margin", "maxp", "entropy"])
def test_probability_outputs_get_a_head_on_their_logarithm(tmp_path, data, how, score_name):
    model = image_model("NCHW", 1, softmax_out=True, output="probs")
    if how == "rows_sum_to_one":  # the same probabilities, but no Softmax node to see: x / sum(x) of exp
        g = model.graph
        sm = next(n for n in g.node if n.op_type == "Softmax")
        g.node.remove(sm)
        g.node.extend([helper.make_node("Exp", ["z"], ["e"]),
                       helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=1),
                       helper.make_node("Div", ["e", "s"], ["probs"])])
        g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
        onnx.checker.check_model(model)
    src = save(model, tmp_path / "p.onnx")
    out = str(tmp_path / "out.onnx")
    res = api.export_model(src, out, data=data, preprocessing=PRE, score=score_name, threshold=0.4)
    assert res.output_kind == "probs" and res.logits == "logits"
    x, _ = image_task(64, 5)
    feed = PRE.batch(list(x))
    p_model = _run(src, feed, ["probs"])["probs"]
    got = _run(out, feed, ["logits", "probs", "confidence", "exit"])
    t = res.temperature
    want_p = softmax(np.log(np.maximum(p_model, 1e-30)), t)
    want_c = score(score_name, want_p)
    np.testing.assert_allclose(got["probs"], want_p, atol=1e-5)
    np.testing.assert_allclose(got["confidence"], want_c, atol=1e-5)
    np.testing.assert_array_equal(got["exit"], want_c >= 0.4)
    # no second softmax: at T = 1 the head's probabilities are the model's own
    api.retune(out, temperature=1.0)
    np.testing.assert_allclose(_run(out, feed, ["probs"])["probs"], p_model, atol=1e-5)


def test_output_kind_overrides_the_detection(tmp_path, data):
    src = save(image_model("NCHW", 1, softmax_out=True, output="p"), tmp_path / "p.onnx")
    res = api.export_model(src, str(tmp_path / "o.onnx"), data=data, preprocessing=PRE, output_kind="logits")
    assert res.output_kind == "logits"
    assert read_head_metadata(str(tmp_path / "o.onnx"))["logits"] == "p"


@pytest.mark.parametrize("with_data", [False, True])
def test_export_refuses_a_temperature_no_float32_holds(tmp_path, data, with_data):
    src = save(image_model("NCHW", 1), tmp_path / "m.onnx")
    out = tmp_path / "o.onnx"
    for t in (1e308, 1e-50):
        with pytest.raises(ConfigError, match=re.escape("temperature %r does not fit the float32" % t)):
            api.export_model(src, str(out), data=data if with_data else None, preprocessing=PRE, temperature=t)
    assert not out.exists()
    api.export_model(src, str(out), preprocessing=PRE, temperature=3e38)
    assert head_values(str(out))[0] == pytest.approx(3e38, rel=1e-7)


def test_image_folder_calibration_gives_class_names(tmp_path):
    x, y = image_task(120, 7)
    names = ["red", "green", "blue", "grey"]
    for i, (img, c) in enumerate(zip(x, y)):
        os.makedirs(tmp_path / "f" / names[c], exist_ok=True)
        cv2.imwrite(str(tmp_path / "f" / names[c] / ("%d.png" % i)), img[:, :, ::-1])  # files are BGR on disk
    src = save(image_model("NCHW", 1), tmp_path / "m.onnx")
    with pytest.raises(DataError, match="classes the model does not know"):  # folder names vs given labels
        api.export_model(src, str(tmp_path / "o.onnx"), data=str(tmp_path / "f"), preprocessing=PRE,
                         labels=["a", "b", "c", "d"])
    res = api.export_model(src, str(tmp_path / "o.onnx"), data=str(tmp_path / "f"), preprocessing=PRE,
                           labels=names)
    assert res.accuracy > 0.9 and res.labels == names


# -- cascades ------------------------------------------------------------------------------------------------
def _exported(tmp_path, name, layout, seed, pre, data):
    src = save(image_model(layout, seed), tmp_path / ("%s_src.onnx" % name))
    out = str(tmp_path / ("%s.onnx" % name))
    api.export_model(src, out, data=data, preprocessing=pre)
    return out


def test_an_nchw_and_an_nhwc_model_share_one_bundle(tmp_path, data):
    a = _exported(tmp_path, "a", "NCHW", 1, PRE, data)
    b = _exported(tmp_path, "b", "NHWC", 2, PRE.replace(layout="NHWC"), data)
    out = str(tmp_path / "bundle")
    rep = api.build_cascade([a, b], data, calib_fraction=0.5, out=out, costs=[1, 3], n=200)
    assert any("b.onnx takes NHWC input: a Transpose" in n for n in rep.notes)
    assert rep.runtime_test["matches_simulation"]
    man = read_manifest(out)
    assert man.preprocessing == PRE
    x, y = image_task(50, 9)
    with load_bundle(out, memo=False) as cascade:
        answers = [r.class_id for r in cascade.classify_batch(list(x))]
    assert np.mean(np.asarray(answers) == y) > 0.9


def test_stages_with_different_preprocessing_are_refused(tmp_path, data):
    a = _exported(tmp_path, "a", "NCHW", 1, PRE, data)
    b = _exported(tmp_path, "b", "NCHW", 2, PRE.replace(std=[0.5, 0.5, 0.5]), data)
    with pytest.raises(ConfigError, match=r"b.onnx was exported with preprocessing std \[0.5, 0.5, 0.5\] but the "
                                          r"cascade's is std \[0.2, 0.25, 0.3\]"):
        api.build_cascade([a, b], data, calib_fraction=0.5, out=str(tmp_path / "x"), costs=[1, 2])
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.parametrize("make, message", [
    (lambda p, x, y: np.savez(p, x=x[:0], y=y[:0]), "holds no images"),
    (lambda p, x, y: np.savez(p, x=x, y=np.full_like(y, 7)), "labels 7..7 but the model answers over 4"),
    (lambda p, x, y: np.savez(p, x=x), "has no labels"),
])
def test_bad_cascade_data(tmp_path, data, make, message):
    a = _exported(tmp_path, "a", "NCHW", 1, PRE, data)
    b = _exported(tmp_path, "b", "NCHW", 2, PRE, data)
    x, y = image_task(60, 4)
    make(str(tmp_path / "bad.npz"), x, y)
    with pytest.raises(DataError, match=message):
        api.build_cascade([a, b], str(tmp_path / "bad.npz"), calib_fraction=0.5, out=str(tmp_path / "x"),
                          costs=[1, 2])


def test_a_probs_model_in_a_cascade_answers_like_numpy(tmp_path, data):
    a = _exported(tmp_path, "a", "NCHW", 1, PRE, data)
    src = save(image_model("NCHW", 3, softmax_out=True, output="probs"), tmp_path / "p.onnx")
    out = str(tmp_path / "bundle")
    rep = api.build_cascade([a, src], data, out=out, costs=[1, 2], n=200, preprocessing=PRE)
    assert any("p.onnx outputs probabilities" in n for n in rep.notes)
    man = read_manifest(out)
    assert man.stages[1].logits == "logits"
    x, _ = image_task(30, 8)
    feed = PRE.batch(list(x))
    p_model = _run(src, feed, ["probs"])["probs"]
    with load_bundle(out, memo=False) as cascade:
        st = cascade.stages[1]
        probs, conf = st.answer(st.runner.run(feed, output_names=st.needed_outputs(None)))
    want = softmax(np.log(np.maximum(p_model, 1e-30)), man.stages[1].temperature)
    np.testing.assert_allclose(probs, want, atol=1e-5)
    np.testing.assert_allclose(conf, score("margin", want), atol=1e-5)


# -- retune ---------------------------------------------------------------------------------------------------
@pytest.fixture
def bundle(tmp_path, data):
    a = _exported(tmp_path, "a", "NCHW", 1, PRE, data)
    b = _exported(tmp_path, "b", "NCHW", 2, PRE, data)
    out = str(tmp_path / "bundle")
    api.build_cascade([a, b], data, out=out, costs=[1, 2], n=100)
    return out


def test_retune_a_bundle_stage_changes_model_manifest_and_hashes_together(bundle):
    res = api.retune(bundle, stage=1, threshold=0.6, temperature=1.7)
    assert (res.threshold, res.temperature, res.stage) == (0.6, 1.7, "stage1")
    man = read_manifest(bundle)  # verifies every sha256
    assert man.stages[0].threshold == 0.6 and man.stages[0].temperature == 1.7
    meta = read_head_metadata(os.path.join(bundle, "stage1.onnx"))
    assert meta["threshold"] == 0.6 and meta["temperature"] == 1.7
    t, thr = head_values(os.path.join(bundle, "stage1.onnx"))
    assert thr == pytest.approx(0.6) and t == pytest.approx(1.7)
    with load_bundle(bundle) as cascade:
        assert cascade.thresholds[0] == 0.6
    assert '"threshold": 0.6,' in open(os.path.join(bundle, MANIFEST)).read()  # as given, not 0.6000000238…


def test_retune_a_stage_model_by_path_updates_its_bundle(bundle):
    res = api.retune(os.path.join(bundle, "stage1.onnx"), threshold=0.25)
    assert res.bundle == bundle and "bundle's manifest and hashes were updated" in res.notes[0]
    with load_bundle(bundle) as cascade:
        assert cascade.thresholds[0] == 0.25


@pytest.mark.parametrize("stage, message", [(3, "has no stage 3; its stages are 1..2"), (0, "has no stage 0"),
                                            ("nope", "has no stage 'nope'"), (None, "has 2 stages")])
def test_retune_bad_stage(bundle, stage, message):
    before = open(os.path.join(bundle, MANIFEST)).read()
    with pytest.raises(ConfigError, match=message):
        api.retune(bundle, stage=stage, threshold=0.5)
    assert open(os.path.join(bundle, MANIFEST)).read() == before


def test_retune_out_copies_the_bundle(bundle, tmp_path):
    out = str(tmp_path / "copy")
    api.retune(bundle, stage="stage2", temperature=2.5, out=out)
    assert read_manifest(out).stages[1].temperature == 2.5 and read_manifest(bundle).stages[1].temperature != 2.5
    with pytest.raises(ModelLoadError, match="does not exist"):
        api.retune(str(tmp_path / "missing.onnx"), threshold=0.5)
    with pytest.raises(ModelLoadError, match="does not exist"):  # not "stage= applies to a bundle folder"
        api.retune(str(tmp_path / "missing"), stage=1, threshold=0.5)


@pytest.mark.parametrize("temperature", [1e308, -1e308, 1e-50, 0.0])
def test_retune_refuses_a_temperature_no_float32_holds(bundle, tmp_path, temperature):
    """The graph stores T as a float32: a value that would become inf or 0 there is refused before anything is
    copied or changed, for a bundle, a copy of it and a model file alike."""
    before = _files(bundle)
    model = os.path.join(bundle, "stage1.onnx")
    for kwargs in ({"target": bundle, "stage": 1}, {"target": bundle, "stage": 1, "out": str(tmp_path / "copy")},
                   {"target": model}):
        with pytest.raises(ConfigError, match="temperature"):
            api.retune(temperature=temperature, **kwargs)
    assert _files(bundle) == before and not os.path.exists(tmp_path / "copy")
    if temperature > 0:
        with pytest.raises(ConfigError, match="does not fit the float32 the graph stores it in; give one from "
                                              "1.1754944e-38 to 3.4028235e[+]38"):
            api.retune(bundle, stage=1, temperature=temperature)


def test_retune_keeps_a_temperature_at_the_ends_of_the_float32_range(bundle):
    for t in (3.4028235e38, 1.1754944e-38):
        res = api.retune(bundle, stage=1, temperature=t)
        assert res.temperature == t and read_manifest(bundle).stages[0].temperature == t
        assert head_values(os.path.join(bundle, "stage1.onnx"))[0] == pytest.approx(t, rel=1e-7)


def _files(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_a_retune_that_cannot_write_the_manifest_leaves_the_bundle_as_it_was(bundle, monkeypatch):
    before = _files(bundle)
    real = os.replace

    def replace(src, dst):  # the disk fills up just as the manifest is replaced
        if os.path.basename(dst) == MANIFEST:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputError, match="edgeconf.json: no space left on device; free some space"):
        api.retune(bundle, stage=1, threshold=0.3)
    monkeypatch.undo()
    assert _files(bundle) == before  # stage1.onnx is back too, and no temporary file is left
    read_manifest(bundle, verify=True)


def test_two_retunes_of_one_bundle_at_once_keep_both_changes(bundle):
    """Two processes retune different stages of one bundle, many times, at the same time: the bundle lock makes
    them take turns, so each one's last value is what the bundle holds and every hash matches."""
    code = ("import sys, edgeconf.export as api\n"
            "for i in range(6):\n"
            "    api.retune(sys.argv[1], stage=int(sys.argv[2]), temperature=1.0 + int(sys.argv[2]) + i / 10)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, bundle, str(k)], stderr=subprocess.PIPE) for k in (1, 2)]
    errs = [p.communicate()[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    man = read_manifest(bundle, verify=True)
    assert [s.temperature for s in man.stages] == [2.5, 3.5]
    assert [head_values(os.path.join(bundle, s.model))[0] for s in man.stages] == [pytest.approx(2.5), pytest.approx(3.5)]


def test_retune_out_that_fails_leaves_no_partial_copy(bundle, tmp_path):
    with pytest.raises(OutputError, match="does not exist; create it first"):
        api.retune(bundle, stage=1, threshold=0.4, out=str(tmp_path / "no" / "copy"))
    (tmp_path / "afile").write_text("x")  # a file where the folder should be: said as such
    with pytest.raises(OutputError, match="afile is a file, not a folder; choose a path in a folder"):
        api.retune(bundle, stage=1, threshold=0.4, out=str(tmp_path / "afile" / "copy"))
    (tmp_path / "afile").unlink()
    manifest = os.path.join(bundle, "edgeconf.json")  # the API refuses what the CLI refuses: a file of the bundle
    before = open(manifest, "rb").read()
    with pytest.raises(ConfigError, match="is a file of bundle .*, an input of this run; writing there would destroy"):
        api.retune(bundle, stage=1, threshold=0.4, out=manifest)
    assert open(manifest, "rb").read() == before
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ConfigError, match="threshold"):  # refused while changing the copy
        api.retune(bundle, stage=1, threshold=1.5, out=str(tmp_path / "copy"))
    assert sorted(os.listdir(tmp_path)) == before  # no copy, no hidden temporary folder
    res = api.retune(bundle, stage=1, threshold=0.4, out=str(tmp_path / "copy"))
    assert res.bundle == str(tmp_path / "copy") and res.model == str(tmp_path / "copy" / "stage1.onnx")
    assert oct(os.stat(tmp_path / "copy").st_mode & 0o777) == oct(0o777 & ~_umask())
    assert read_manifest(res.bundle, verify=True).stages[0].threshold == 0.4


def test_a_bundle_build_that_fills_the_disk_names_the_bundle_not_its_hidden_folder(tmp_path, data, monkeypatch):
    import edgeconf.bundle

    a = _exported(tmp_path, "a", "NCHW", 1, PRE, data)
    b = _exported(tmp_path, "b", "NCHW", 2, PRE, data)
    (tmp_path / "out").mkdir()

    def full(src, dst):  # the disk fills up while the models are copied in
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(edgeconf.bundle.shutil, "copyfile", full)
    out = str(tmp_path / "out" / "cb")
    with pytest.raises(OutputError) as err:
        api.build_cascade([a, b], data, out=out, costs=[1, 2], n=100)
    assert out in str(err.value) and ".tmp" not in str(err.value) and "free some space" in str(err.value)
    assert os.listdir(str(tmp_path / "out")) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_public_api_is_documented():
    for name in api.__all__:
        obj = getattr(api, name)
        assert obj.__doc__ and obj.__doc__.strip(), name


def test_a_failed_cascade_build_keeps_the_earlier_bundle_whole(tmp_path, data, monkeypatch):
    a = _exported(tmp_path, "a", "NCHW", 1, PRE, data)
    b = _exported(tmp_path, "b", "NCHW", 2, PRE, data)
    out = str(tmp_path / "bundle")
    api.build_cascade([a, b], data, out=out, costs=[1, 2], n=100)
    before = {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)}
    import edgeconf.export.build as build

    def broken(folder, *args):  # the disk fills up half-way through writing the new bundle
        open(os.path.join(folder, "stage1.onnx"), "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(build, "save_bundle", broken)
    with pytest.raises(OutputError, match="cannot write %s: no space left on device" % out):
        api.build_cascade([b, a], data, out=out, costs=[1, 2], n=100)
    assert {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)} == before
    assert sorted(os.listdir(tmp_path)) == sorted(n for n in os.listdir(tmp_path) if not n.startswith("."))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    monkeypatch.undo()
    with pytest.raises(Exception, match="exists and is not a bundle folder"):
        api.build_cascade([a, b], data, out=str(tmp_path / "mine"), costs=[1, 2], n=100)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# -- argument checks (QA pass f25) ------------------------------------------------------------------------------
def test_an_array_given_as_data_says_what_data_is(tmp_path, data):
    src = save(image_model("NCHW", 1), tmp_path / "m.onnx")
    x, y = image_task(40, 5)
    want = r"data given as an array: arrays are given as a pair \(x, y\) of images and integer labels"
    with pytest.raises(DataError, match=want):
        api.calibrate(src, x, preprocessing=PRE.to_json())
    with pytest.raises(DataError, match=want):
        api.export_model(src, str(tmp_path / "out.onnx"), data=x, preprocessing=PRE.to_json())
    with pytest.raises(DataError, match=want):
        api.build_cascade([src, src], x, out=str(tmp_path / "b"), costs=[1, 2])
    with pytest.raises(DataError, match=r"data given as a list of 3 items"):
        api.calibrate(src, [x, y, y], preprocessing=PRE.to_json())
    with pytest.raises(DataError, match=r"no data given \(got type int\)"):
        api.calibrate(src, 5, preprocessing=PRE.to_json())
    rep = api.calibrate(src, (x, y), preprocessing=PRE.to_json())  # the pair is what works
    assert rep.temperature > 0


def test_one_model_path_is_not_read_as_letters(tmp_path, data):
    with pytest.raises(ConfigError, match=r"a cascade needs at least 2 models \(a list of .onnx paths"):
        api.build_cascade("tiny.onnx", data, out=str(tmp_path / "b"))
    with pytest.raises(ConfigError, match=r"pairing needs at least 2 models \(a list of .onnx paths\), got 1"):
        api.pair_models("tiny.onnx", data)


def test_build_cascade_memo_takes_settings_or_their_dict(tmp_path, data):
    a = _exported(tmp_path, "a", "NCHW", 1, PRE, data)
    b = _exported(tmp_path, "b", "NCHW", 2, PRE, data)
    for bad, match in [({"kee": "exact"}, "memo has unknown key 'kee'"),
                       ("exact", "memo must be an edgeconf.bundle.MemoSettings")]:
        with pytest.raises(ConfigError, match=match):
            api.build_cascade([a, b], data, out=str(tmp_path / "x"), costs=[1, 2], memo=bad)
    assert not os.path.exists(tmp_path / "x")
    out = str(tmp_path / "bundle")
    api.build_cascade([a, b], data, out=out, costs=[1, 2], n=100, memo={"key": "exact", "capacity": 64})
    m = read_manifest(out).memo
    assert (m.key, m.capacity) == ("exact", 64)
