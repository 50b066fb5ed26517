"""Fitting OOD heads at export: the numbers, the graph head against numpy, the bundle, and bad calibration data."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

from edgeconf.bundle import StageSpec, load_bundle, read_manifest, save_bundle
from edgeconf.errors import OutputError
from edgeconf.export.ood import (OodCalibrationError, OodFit, add_ood_head, check_labelled, choose_threshold,
                                 default_feature, fit_mahalanobis, fit_stage_ood, load_params, validate_ood_head)
from edgeconf.preprocess import Preprocessing
from onnx_models import random_classifier, save

LABELS = ["c%d" % i for i in range(10)]


def _blobs(rng, n, classes=10, dim=784):
    """Raw uint8 28×28 images: class c is a dark image with a bright square at a class-specific place."""
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 20, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(y):
        r, q = divmod(int(c), 4)
        x[i, 2 + 8 * r:8 + 8 * r, 2 + 6 * q:8 + 6 * q] = 230
    return x, y


def test_mahalanobis_matches_a_direct_computation(rng):
    f = rng.normal(size=(300, 6))
    y = np.repeat(np.arange(3), 100)
    f[y == 1] += 3.0
    p = fit_mahalanobis(f, y, shrinkage=0.0)
    fit = OodFit("mahalanobis", "f", p)
    mu = np.stack([f[y == c].mean(0) for c in range(3)])
    r = f - mu[y]
    prec = np.linalg.inv(r.T @ r / len(f) + 1e-6 * np.trace(r.T @ r / len(f)) / 6 * np.eye(6))
    q = rng.normal(size=(20, 6)) * 4
    want = np.min([np.einsum("nd,de,ne->n", q - m, prec, q - m) for m in mu], axis=0)
    np.testing.assert_allclose(fit.score(q), want, rtol=1e-6)


@pytest.mark.parametrize("y, match", [
    (np.zeros(100, int), "one class"),
    (np.arange(10).repeat(3), "has 30 samples"),
    (np.r_[np.zeros(97, int), np.ones(3, int)], "fewer than 5 samples of class"),
    (np.linspace(0, 1, 100), "integer class labels"),
])
def test_bad_calibration_sets_are_refused(y, match):
    with pytest.raises(OodCalibrationError, match=match):
        check_labelled(y)


def test_threshold_keeps_the_asked_share():
    s = np.arange(1000.0)
    t = choose_threshold(s, 0.99)
    assert (s <= t).mean() == pytest.approx(0.99, abs=0.002)
    with pytest.raises(OodCalibrationError):
        choose_threshold(s, 1.0)


def test_graph_head_equals_numpy_on_opsets(tmp_path, rng):
    for opset in (13, 17, 18):
        model = random_classifier(1)
        model.opset_import[0].version = opset
        feat = default_feature(model)
        assert feat == "flat"
        f = rng.normal(size=(200, 784)).astype(np.float32)
        fit = OodFit("mahalanobis", feat, fit_mahalanobis(f, np.arange(200) % 4), threshold=900.0)
        headed = add_ood_head(model, fit)
        x = rng.normal(size=(32, 1, 28, 28)).astype(np.float32)
        assert validate_ood_head(headed, fit, x) < 1e-3
        again = add_ood_head(headed, fit)  # re-heading replaces the head
        assert sum(o.name == "ood" for o in again.graph.output) == 1


def _bundle(tmp_path, stages=1):
    src = save(random_classifier(7), tmp_path / "m.onnx")
    folder = str(tmp_path / "b")
    names = ["stage%d" % (k + 1) for k in range(stages)]
    save_bundle(folder, [StageSpec(n, n + ".onnx", threshold=0.0) for n in names], {n + ".onnx": src for n in names},
                LABELS, Preprocessing(scale=1.0 / 255.0))
    return folder


@pytest.mark.slow
def test_fit_stage_writes_head_params_and_manifest(tmp_path, rng):
    folder = _bundle(tmp_path)
    x, y = _blobs(rng, 600)
    rep = fit_stage_ood(folder, x, y, method="mahalanobis", keep=0.99)
    assert rep.fit.method == "mahalanobis" and rep.held_out_known >= 0.98
    m = read_manifest(folder)  # sha256 of the rewritten model and of the params file are in 'files'
    ood = m.stages[0].ood
    assert ood.output == "ood" and ood.params == "ood/stage1.npz" and "ood/stage1.npz" in m.files
    params = load_params(os.path.join(folder, "ood", "stage1.npz"))
    assert set(params) == {"means", "chol"}
    with load_bundle(folder) as c:
        res = c.classify_batch(list(x[:50]) + [np.full((28, 28), 128, np.uint8), rng.integers(0, 256, (28, 28)).astype(np.uint8)])
    assert sum(r.unknown for r in res[:50]) <= 3
    assert res[-1].unknown and res[-2].unknown  # flat grey and noise are no class
    meta = {p.key: p.value for p in onnx.load(os.path.join(folder, "stage1.onnx")).metadata_props}
    assert json.loads(meta["edgeconf.ood"])["score"] == "mahalanobis"


def test_fit_stage_refuses_one_class_and_missing_negatives(tmp_path, rng):
    folder = _bundle(tmp_path)
    x, _ = _blobs(rng, 200)
    with pytest.raises(OodCalibrationError, match="one class"):
        fit_stage_ood(folder, x, np.zeros(200, int), method="mahalanobis")
    with pytest.raises(OodCalibrationError, match="needs negatives"):
        fit_stage_ood(folder, x, np.arange(200) % 10, method="learned")
    with pytest.raises(OodCalibrationError, match="at least 20 negatives"):
        fit_stage_ood(folder, x, np.arange(200) % 10, negatives=x[:10], method="learned")
    # 20 negatives are enough in number, but the hold-out leaves 14 to fit on: the message says so and what is enough
    with pytest.raises(OodCalibrationError, match=r"6 of the 20 given are held out \(holdout 0.3\) for the threshold, "
                                                  r"leaving 14: give at least 28 negatives"):
        fit_stage_ood(folder, x, np.arange(200) % 10, negatives=x[:20], method="learned")


@pytest.mark.slow
@pytest.mark.torch
def test_learned_head_separates_given_negatives(tmp_path, rng):
    pytest.importorskip("torch")
    folder = _bundle(tmp_path)
    x, y = _blobs(rng, 600)
    neg = rng.integers(100, 256, (300, 28, 28)).astype(np.uint8)  # bright noise: no class
    rep = fit_stage_ood(folder, x, y, negatives=neg, method="auto", keep=0.99)
    assert rep.fit.method == "learned"
    assert rep.held_out_negatives_unknown is not None and rep.held_out_negatives_unknown >= 0.95
    with load_bundle(folder) as c:
        b = c.run_batch(c.preprocessing.batch(list(neg[:40]) + list(x[:40])))
    assert b.unknown[:40].mean() >= 0.9 and b.unknown[40:].mean() <= 0.1


def _run(capsys, *args):
    from edgeconf.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def test_ood_command_end_to_end_and_one_line_errors(tmp_path, rng, capsys):
    folder = _bundle(tmp_path)
    x, y = _blobs(rng, 300)
    good, one = tmp_path / "d.npz", tmp_path / "one.npz"
    np.savez(good, x=x, y=y)
    np.savez(one, x=x, y=np.zeros(300, int))
    code, out, err = _run(capsys, "ood", folder, "--data", one)
    assert code == 1 and "one class" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, out, err = _run(capsys, "ood", folder, "--data", good, "--method", "mahalanobis", "--keep", "0.99", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["method"] == "mahalanobis" and rep["params"] == "ood/stage1.npz"
    assert read_manifest(folder).stages[0].ood.threshold == pytest.approx(rep["threshold"])
    code, out, err = _run(capsys, "ood", folder, "--data", good, "--method", "mahalanobis", "--keep", "0.99",
                          "--escalate-keep", "0.9")  # one stage: no next stage for a doubt band
    assert code == 1 and "stage 1 is the last" in err and len(err.strip().splitlines()) == 1


def test_an_ood_fit_that_cannot_write_the_manifest_leaves_the_bundle_as_it_was(tmp_path, rng, monkeypatch):
    folder = _bundle(tmp_path)
    x, y = _blobs(rng, 200)
    before = {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}
    real = os.replace

    def replace(src, dst):  # the disk fills up just as the manifest is replaced
        if os.path.basename(dst) == "edgeconf.json":
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputError, match="no space left on device"):
        fit_stage_ood(folder, x, y, method="mahalanobis", keep=0.99)
    monkeypatch.undo()
    assert {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))} == before  # no ood/
    read_manifest(folder, verify=True)
    fit_stage_ood(folder, x, y, method="mahalanobis", keep=0.99)  # and the bundle still takes a fit
    assert read_manifest(folder, verify=True).stages[0].ood is not None


def test_fit_stage_refuses_a_doubt_band_it_cannot_use(tmp_path, rng):
    folder = _bundle(tmp_path)
    x, y = _blobs(rng, 200)
    with pytest.raises(OodCalibrationError, match="below keep"):
        fit_stage_ood(folder, x, y, method="mahalanobis", keep=0.99, escalate_keep=0.995)
    with pytest.raises(OodCalibrationError, match="stage 1 is the last"):  # no next stage to send doubtful inputs to
        fit_stage_ood(folder, x, y, method="mahalanobis", keep=0.99, escalate_keep=0.9)


@pytest.mark.slow
def test_fit_stage_with_a_doubt_band(tmp_path, rng):
    """``escalate_keep`` writes the band's lower edge: that quantile of the same held-out scores, below the threshold;
    the bundle then sends the inputs in the band on to stage 2."""
    folder = _bundle(tmp_path, stages=2)
    x, y = _blobs(rng, 600)
    rep = fit_stage_ood(folder, x, y, method="mahalanobis", keep=0.99, escalate_keep=0.8)
    ood = read_manifest(folder).stages[0].ood
    assert ood.escalate == rep.fit.escalate < ood.threshold and ood.calibration["escalate_keep"] == 0.8
    with load_bundle(folder) as c:
        assert c.stages[0].ood.escalate == ood.escalate
        res = c.classify_batch(list(x[:200]))
    scores = np.array([r.ood_score for r in res])
    went_on = np.array([r.stages_run == 2 for r in res])  # stage 1's threshold 0 answers every other input
    np.testing.assert_array_equal(went_on, (scores > ood.escalate) & (scores <= ood.threshold))
    assert 0 < went_on.sum() < 100


def test_a_file_named_ood_in_the_bundle_is_refused_in_one_line_before_the_fit(tmp_path, rng, capsys):
    folder = _bundle(tmp_path)
    x, y = _blobs(rng, 200)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    in_the_way = os.path.join(folder, "ood")
    with open(in_the_way, "w") as f:
        f.write("x\n")
    before = {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}
    code, _, err = _run(capsys, "ood", folder, "--data", tmp_path / "d.npz", "--method", "mahalanobis")
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert ("%s exists and is not a folder; the fitted OOD scores go into the bundle's ood/ folder: move or delete that "
            "file, then run edgeconf ood again" % in_the_way) in err
    assert {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))} == before
    os.remove(in_the_way)
    os.symlink(str(tmp_path / "nowhere"), in_the_way)  # a dangling link is in the way too
    with pytest.raises(OutputError, match="exists and is not a folder"):
        fit_stage_ood(folder, x, y, method="mahalanobis")
