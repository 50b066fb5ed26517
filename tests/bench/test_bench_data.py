"""``edgeconf bench BUNDLE --data DATA``: any labelled data, checked against the bundle and the baseline first."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeconf.bundle import StageSpec, save_bundle
from edgeconf.cli import cli, main
from edgeconf.preprocess import Preprocessing
from onnx_models import random_classifier, save


def _fail(capsys, *args, code=1):
    with pytest.raises(SystemExit) as exc:
        main(["bench"] + [str(a) for a in args])
    assert exc.value.code == code
    err = capsys.readouterr().err
    assert err.startswith("edgeconf: error:") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, sample):
    """The shipped sample as an ImageFolder whose folder names are the FashionMNIST class names' indices."""
    images, labels = sample
    root = tmp_path_factory.mktemp("folder")
    for i, (img, y) in enumerate(zip(images[:60], labels[:60])):
        os.makedirs(root / str(int(y)), exist_ok=True)
        cv2.imwrite(str(root / str(int(y)) / ("%03d.png" % i)), img)
    return root


def test_a_user_bundle_on_an_image_folder(models, image_folder):
    result = CliRunner().invoke(cli, ["bench", models["bundle"], "--data", str(image_folder), "--baseline",
                                      models["baseline"], "--configs", "big,first,dual", "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert obj["dataset"] == str(image_folder) and obj["n"] == 60
    assert set(obj["configs"]) == {"big", "first", "dual"} and obj["targets"] == {}
    assert obj["ratios"]["dual"]["cpu_s"] > 0


def test_no_targets_and_no_big_without_a_baseline(models, data_dir):
    result = CliRunner().invoke(cli, ["bench", models["bundle"], "--data", data_dir, "--limit", 40,
                                      "--configs", "big,first,dual"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "need" not in result.stdout and "MET" not in result.stdout  # the zoo's targets belong to the zoo
    assert "│ big" not in result.stdout and "│ dual" in result.stdout
    assert "note: no --baseline for bundle" in result.stdout and "'big' is left out" in result.stdout
    as_json = CliRunner().invoke(cli, ["bench", models["bundle"], "--data", data_dir, "--limit", 40,
                                       "--configs", "first,dual", "--json"], catch_exceptions=False)
    assert not any("--baseline" in n for n in json.loads(as_json.stdout)["notes"])  # 'big' not asked for: no note


def test_memo_false_hits_are_judged_without_a_baseline(models, data_dir):
    args = ["bench", models["bundle"], "--data", data_dir, "--limit", 40, "--duplicate", "1", "--configs", "dual_memo",
            "--memo-sampling", "off", "--target", "memo-false-hits=0.1", "--target", "memo-cpu=0.5"]
    obj = json.loads(CliRunner().invoke(cli, args + ["--json"], catch_exceptions=False).stdout)
    t = obj["targets"]["dual_memo_at_duplicate_1"]
    assert t["false_hit_rate"] == 0.0 and t["max_false_hit_rate"] == pytest.approx(0.001) and t["met"] is True
    assert t["cpu_ratio"] is None and t["max_cpu_ratio"] is None  # no big: the CPU ratio is not judged...
    assert any(n.startswith("target memo-cpu not evaluated: it needs big and dual_memo") for n in obj["notes"])
    assert not any("memo-false-hits not evaluated" in n for n in obj["notes"])  # ...the false hits are
    text = CliRunner().invoke(cli, args, catch_exceptions=False).stdout
    assert "dual_memo at duplicate 1: false hits 0.000 % (need ≤ 0.10 %): MET" in text and "cpu ratio" not in text


def test_a_user_bundle_needs_its_data(models, capsys):
    err = _fail(capsys, models["bundle"], "--baseline", models["baseline"])
    assert "give --data DATA for bundle" in err


def test_colour_data_for_a_grey_bundle_is_refused(models, tmp_path, capsys, sample):
    images, labels = sample
    np.savez(tmp_path / "rgb.npz", x=np.stack([images[:20]] * 3, axis=-1), y=labels[:20])
    err = _fail(capsys, models["bundle"], "--data", tmp_path / "rgb.npz")
    assert "the bundle takes grey images (preprocessing channels 1) but" in err and "holds colour images" in err


def test_labels_that_do_not_fit_the_bundle_are_refused(models, tmp_path, capsys, sample):
    images, labels = sample
    np.savez(tmp_path / "y.npz", x=images[:20], y=np.full(20, 12))
    err = _fail(capsys, models["bundle"], "--data", tmp_path / "y.npz")
    assert "labels 12..12 but the model answers over 10 classes" in err
    (tmp_path / "named").mkdir()
    for cls in ("cat", "dog"):
        os.makedirs(tmp_path / "named" / cls)
        cv2.imwrite(str(tmp_path / "named" / cls / "a.png"), images[0])
    err = _fail(capsys, models["bundle"], "--data", tmp_path / "named")
    assert "classes the model does not know: 'cat', 'dog'" in err


def test_a_baseline_of_another_task_is_refused(models, tmp_path, capsys, data_dir):
    five = save(random_classifier(3, classes=5), tmp_path / "five.onnx")
    err = _fail(capsys, models["bundle"], "--data", data_dir, "--baseline", five)
    assert "answers over 5 classes but the bundle over 10" in err


def test_an_rgb_bundle_on_grey_data_is_refused(tmp_path, capsys, data_dir):
    model = save(random_classifier(4, input_shape=(3, 40, 40)), tmp_path / "rgb.onnx")
    folder = str(tmp_path / "rgb_bundle")
    save_bundle(folder, [StageSpec("a", "rgb.onnx", threshold=0.0)], {"rgb.onnx": model},
                [str(i) for i in range(10)], Preprocessing(size=(40, 40), channels=3))
    err = _fail(capsys, folder, "--data", data_dir)
    assert "takes colour images (preprocessing channels 3) but" in err and "holds grey images" in err


@pytest.mark.parametrize("target, words", [("speed=1", "KEY one of dual-drop"), ("dual-cpu=fast", "needs a number")])
def test_bad_targets(models, data_dir, capsys, target, words):
    assert words in _fail(capsys, models["bundle"], "--data", data_dir, "--target", target, code=2)  # usage error


def test_help_describes_the_new_form():
    out = CliRunner().invoke(cli, ["bench", "--help"]).output
    assert "[BUNDLE]" in out and "--target" in out and "ImageFolder" in out


def test_limit_samples_every_class_of_data_stored_class_by_class(models, tmp_path, sample, image_folder):
    """An .npz sorted by class and an ImageFolder (read class folder by class folder): --limit below one class's
    size still measures every class, with the same seeded sample each time, and the notes say what was taken."""
    images, labels = sample
    order = np.argsort(labels, kind="stable")
    np.savez(tmp_path / "sorted.npz", x=images[order], y=labels[order])
    assert np.bincount(labels).min() > 20  # so the first 20 would hold class 0 only
    args = ["bench", models["bundle"], "--data", str(tmp_path / "sorted.npz"), "--limit", "20", "--configs", "first",
            "--json", "--predictions", str(tmp_path / "p.npz")]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    with np.load(tmp_path / "p.npz") as z:
        got = z["d0_labels"]
    assert obj["n"] == 20 and sorted(set(got.tolist())) == list(range(10))
    assert ("--limit 20: a seeded random sample of 20 of %d samples (seed 0, stratified by class: 10 of 10 classes"
            % len(labels)) in " ".join(obj["notes"])
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    with np.load(tmp_path / "p.npz") as z:
        assert np.array_equal(np.sort(z["d0_labels"]), np.sort(got))
    assert json.loads(again.stdout)["notes"] == obj["notes"]

    from edgeconf.bench.data import load_bench_data
    from edgeconf.datasets import FASHION_LABELS

    folder_labels = labels[:60]
    data = load_bench_data(str(image_folder), FASHION_LABELS, 10, limit=len(set(folder_labels.tolist())), seed=3)
    assert sorted(data.labels.tolist()) == sorted(set(folder_labels.tolist()))  # one of each class in the folder
    assert data.notes and data.notes[0].startswith("--limit %d: a seeded random sample" % len(data))
    whole = load_bench_data(str(image_folder), FASHION_LABELS, 10)
    assert whole.notes == [] and len(whole) == 60


def test_limit_sample_shares():
    from edgeconf.bench.data import limit_sample

    y = np.repeat(np.arange(4), [300, 300, 300, 300])
    for limit in (4, 7, 100):
        idx = limit_sample(y, limit, seed=0)
        counts = np.bincount(y[idx], minlength=4)
        assert len(idx) == len(set(idx.tolist())) == limit and counts.min() >= 1 and counts.max() - counts.min() <= 1
    assert not np.array_equal(limit_sample(y, 100, 0), limit_sample(y, 100, 1))  # the seed picks the sample
    assert np.array_equal(limit_sample(y, 100, 5), limit_sample(y, 100, 5))
    uneven = np.repeat(np.arange(3), [1, 2, 297])
    assert np.bincount(uneven[limit_sample(uneven, 10, 0)]).tolist() == [1, 1, 8]  # a rare class still gets one


def test_an_unknown_power_source_is_refused_before_running(models, data_dir, capsys):
    err = _fail(capsys, models["bundle"], "--data", data_dir, "--limit", 10, "--power", "bogus", code=2)
    assert "unknown --power source 'bogus'; choose auto or one of" in err and "ina3221-iio" in err and "jtop" in err
    # refused before anything is read (a usage error): data that does not exist is not even looked at
    err = _fail(capsys, models["bundle"], "--data", os.path.join(models["root"], "nowhere.npz"), "--power", "Bogus",
                code=2)
    assert "unknown --power source 'Bogus'" in err
    assert "nvml" in _fail(capsys, models["bundle"], "--data", data_dir, "--power", "", code=2)


@pytest.mark.parametrize("extra, why", [([], "no multi-exit bundle to run for bundle"),
                                        (["--early-exit", "none"], "--early-exit none skips it")])
def test_only_early_exit_without_a_multi_exit_bundle_is_refused(models, data_dir, capsys, extra, why):
    err = _fail(capsys, models["bundle"], "--data", data_dir, "--limit", 10, "--configs", "early_exit", *extra)
    assert "no configuration left to run of --configs early_exit: 'early_exit' is left out" in err and why in err


def test_early_exit_left_out_is_noted(models, data_dir):
    result = CliRunner().invoke(cli, ["bench", models["bundle"], "--data", data_dir, "--limit", 20, "--configs",
                                      "first,early_exit", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert list(obj["configs"]) == ["first"]
    assert any("'early_exit' is left out: no multi-exit bundle" in n for n in obj["notes"])
