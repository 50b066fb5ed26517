"""edgeconf classify on labelled data: accuracy, per-class accuracy, every input counted, --skip-errors, atomic --out."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from edgeconf.bundle import StageSpec, save_bundle
from edgeconf.cli import main
from edgeconf.preprocess import Preprocessing

LABELS = ["c%d" % i for i in range(10)]


def run(capsys, *args):
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def summary(err: str) -> dict:
    line = [x for x in err.splitlines() if x.startswith("summary: ")][-1]
    return json.loads(line[len("summary: "):])


@pytest.fixture
def bundle(tmp_path, two_models):
    folder = tmp_path / "bundle"
    save_bundle(str(folder), [StageSpec("a", "a.onnx", "margin", 0.3), StageSpec("b", "b.onnx", "margin", 0.0)],
                {"a.onnx": two_models[0], "b.onnx": two_models[1]}, LABELS, Preprocessing())
    return folder


@pytest.fixture
def images(rng):
    return rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)


def test_labelled_npz_gives_accuracy_and_per_class_accuracy(tmp_path, bundle, images, capsys):
    y = np.arange(12) % 3
    np.savez(tmp_path / "d.npz", x=images, y=y)
    code, out, err = run(capsys, "classify", bundle, tmp_path / "d.npz", "--batch", "5")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 12 and [r["truth"] for r in rows] == y.tolist()
    assert all(r["correct"] == (r["class"] == r["truth"]) and r["truth_label"] == LABELS[r["truth"]] for r in rows)
    s = summary(err)
    assert s["inputs"] == s["classified"] == s["labelled"] == 12
    assert s["accuracy"] == pytest.approx(np.mean([r["correct"] for r in rows]))
    assert "accuracy %.2f %% on 12 labelled inputs" % (100 * s["accuracy"]) in err
    lines = err.splitlines()
    for k in range(3):
        right = [r["correct"] for r in rows if r["truth"] == k]
        assert any(line.split() == ["c%d" % k, "%.2f" % (100 * np.mean(right)), "%", "(4)"] for line in lines), err
    assert s["model_inputs"] == 12 and s["stage_calls"][0] == 12
    assert s["escalation_rate"] == pytest.approx(s["stage_calls"][1] / 12)


def test_every_input_is_counted_repeats_and_memo_hits_included(tmp_path, bundle, images, capsys):
    np.save(tmp_path / "same.npy", np.stack([images[0]] * 3))
    code, out, err = run(capsys, "classify", bundle, tmp_path / "same.npy")
    assert code == 0, err
    s = summary(err)
    assert s["inputs"] == 3 and s["classified"] == 3 and s["memo_hits"] == 2 and s["model_inputs"] == 1
    assert [json.loads(line)["memo_hit"] for line in out.splitlines()] == [False, True, True]


def test_image_folder_and_list_labels_map_by_name(tmp_path, bundle, images, capsys):
    for i, cls in enumerate(["c2", "c7", "c2"]):
        os.makedirs(tmp_path / "folder" / cls, exist_ok=True)
        cv2.imwrite(str(tmp_path / "folder" / cls / ("%d.png" % i)), images[i])
    (tmp_path / "l.csv").write_text("path,label\nfolder/c2/0.png,c2\nfolder/c7/1.png,c7\n")
    code, out, err = run(capsys, "classify", bundle, tmp_path / "folder", tmp_path / "l.csv")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["truth"] for r in rows] == [2, 2, 7, 2, 7]
    assert rows[0]["input"] == os.path.join("c2", "0.png")
    assert summary(err)["labelled"] == 5


def test_labels_that_do_not_fit_the_bundle_are_refused(tmp_path, bundle, images, capsys):
    np.savez(tmp_path / "d.npz", x=images[:2], y=np.array([0, 10]))
    code, out, err = run(capsys, "classify", bundle, tmp_path / "d.npz")
    assert code == 1 and out == ""
    assert "labels 0..10 but the model answers over 10 classes (0..9)" in err and err.count("\n") == 1


def test_skip_errors_continues_and_lists_unreadable_inputs(tmp_path, bundle, images, capsys):
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / ("%d.png" % i)), images[i])
    (folder / "1b.png").write_bytes(b"not an image at all")
    code, out, err = run(capsys, "classify", bundle, folder)
    assert code == 1 and "1b.png is not an image" in err
    code, out, err = run(capsys, "classify", bundle, folder, "--skip-errors")
    assert code == 0, err
    assert len(out.splitlines()) == 3
    s = summary(err)
    assert s["inputs"] == 4 and s["classified"] == 3 and s["skipped"] == 1
    assert "1b.png: " in err and "(1 unreadable, skipped)" in err
    assert s["model_inputs"] == 3


def test_out_is_atomic_a_failed_run_keeps_the_old_file(tmp_path, bundle, images, capsys):
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / ("%d.png" % i)), images[i])
    out_file = tmp_path / "rows.jsonl"
    code, _, err = run(capsys, "classify", bundle, folder, "--out", out_file)
    assert code == 0, err
    good = out_file.read_text()
    assert len(good.splitlines()) == 4
    (folder / "9.png").write_bytes(b"broken")  # the last input fails after four rows were written
    code, _, err = run(capsys, "classify", bundle, folder, "--out", out_file)
    assert code == 1 and "9.png" in err
    assert out_file.read_text() == good
    assert sorted(os.listdir(tmp_path)) == sorted(["bundle", "f", "rows.jsonl", "a.onnx", "b.onnx"])


def test_without_a_bundle_the_shipped_cascade_answers_and_a_lone_bundle_asks_for_inputs(tmp_path, bundle, capsys):
    from edgeconf import data_path
    from edgeconf.bundle import read_manifest
    from edgeconf.datasets import load_fashion_mnist

    x, y = load_fashion_mnist("test")
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(8):  # a user's folder of images, larger than 28x28, in colour
        cv2.imwrite(str(folder / ("%d.png" % i)), cv2.cvtColor(cv2.resize(x[i], (84, 84)), cv2.COLOR_GRAY2BGR))
    code, out, err = run(capsys, "classify", folder)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in rows] == [str(folder / ("%d.png" % i)) for i in range(8)]
    shipped = read_manifest(data_path("zoo", "bundle")).labels
    assert all(r["label"] == shipped[r["class"]] for r in rows)
    assert sum(r["class"] == int(t) for r, t in zip(rows, y[:8])) >= 7  # the shipped cascade, not random weights
    code, out, err = run(capsys, "classify", bundle)
    assert code == 1 and "is a bundle; give the images to classify after it" in err and out == ""


def test_json_is_the_explicit_form_of_the_default_json_lines(tmp_path, bundle, images, capsys):
    np.save(tmp_path / "a.npy", images[:3])
    code, plain, err = run(capsys, "classify", bundle, tmp_path / "a.npy")
    assert code == 0, err
    code, out, err = run(capsys, "classify", bundle, tmp_path / "a.npy", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in rows] == ["a.npy[0]", "a.npy[1]", "a.npy[2]"]
    assert [r["class"] for r in rows] == [json.loads(line)["class"] for line in plain.splitlines()]


def test_help_says_stage_counts_from_0_and_lists_the_backends(capsys):
    code, out, _ = run(capsys, "classify", "--help")
    text = " ".join(out.split())
    assert code == 0
    assert "counted from 0: 0 is the first stage" in text and "'retune --stage' call stage 1" in text
    assert "--json" in text and "stages_run" in text
    for name in ("onnxruntime", "tensorrt", "ort-tensorrt", "auto"):
        assert name in text.split("--backend", 1)[1]
    code, _, err = run(capsys, "classify", "--backend", "nope", "x.png")
    assert code == 2 and "'nope' is not one of" in err and err.count("\n") == 1


def test_stage_field_counts_from_0(tmp_path, two_models, images, capsys):
    folder = tmp_path / "b1"  # a first stage that answers everything: every row says stage 0, stages_run 1
    save_bundle(str(folder), [StageSpec("a", "a.onnx", "margin", 0.0), StageSpec("b", "b.onnx", "margin", 0.0)],
                {"a.onnx": two_models[0], "b.onnx": two_models[1]}, LABELS, Preprocessing())
    np.save(tmp_path / "a.npy", images[:2])
    code, out, err = run(capsys, "classify", folder, tmp_path / "a.npy", "--no-memo")
    assert code == 0, err
    assert [(json.loads(r)["stage"], json.loads(r)["stages_run"]) for r in out.splitlines()] == [(0, 1), (0, 1)]


def test_an_onnx_model_where_a_bundle_belongs_says_to_build_one(tmp_path, two_models, images, capsys):
    np.save(tmp_path / "a.npy", images[:2])
    code, out, err = run(capsys, "classify", two_models[0], tmp_path / "a.npy")
    assert code == 1 and out == ""
    assert "is an ONNX model, not a bundle folder" in err and "edgeconf cascade" in err
    assert err.count("\n") == 1 and "cannot tell the format" not in err


def test_tensorrt_without_engines_is_one_notice_and_quiet_silences_it(tmp_path, bundle, images):
    import subprocess
    import sys

    np.save(tmp_path / "a.npy", images[:2])
    cmd = [sys.executable, "-m", "edgeconf", "classify", str(bundle), str(tmp_path / "a.npy"), "--backend", "tensorrt"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    notes = [line for line in out.stderr.splitlines() if "no TensorRT engine" in line]
    assert len(notes) == 1 and notes[0].startswith("edgeconf: WARNING: stages a, b of bundle "), out.stderr
    assert "UserWarning" not in out.stderr and "stage_model_path" not in out.stderr
    assert len(out.stdout.splitlines()) == 2
    quiet = subprocess.run(cmd[:3] + ["-q"] + cmd[3:], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and "TensorRT" not in quiet.stderr and "Warning" not in quiet.stderr, quiet.stderr


def test_out_over_a_file_of_the_bundle_or_an_image_it_reads_is_refused_and_nothing_changes(tmp_path, bundle, images,
                                                                                           capsys):
    folder = tmp_path / "fold"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / ("%d.png" % i)), images[i])
    before = {p: p.read_bytes() for p in list(bundle.iterdir()) + list(folder.iterdir())}
    for args, words in (([bundle, folder / "0.png", "--out", bundle / "edgeconf.json"], "is a file of bundle %s" % bundle),
                        ([bundle, folder / "0.png", "--out", bundle / "a.onnx"], "is a file of bundle"),
                        ([bundle, folder, "--out", folder / "1.png"], "is a data file in folder %s" % folder)):
        code, out, err = run(capsys, "classify", *args)
        assert code == 1 and out == "" and err.count("\n") == 1, err
        assert "an input of this run; writing there would destroy it: choose another path" in err and words in err
    assert {p: p.read_bytes() for p in before} == before
    code, _, err = run(capsys, "classify", bundle, folder, "--out", folder / "rows.jsonl")  # a new file: allowed
    assert code == 0, err
    code, _, err = run(capsys, "classify", bundle, folder, "--out", folder / "rows.jsonl")  # and not read as data
    assert code == 0 and len((folder / "rows.jsonl").read_text().splitlines()) == 2, err


@pytest.mark.parametrize("manifest, words", [
    (None, "{b} has no edgeconf.json; is it a bundle folder?"),
    ("folder", "{b}/edgeconf.json is a folder, not the bundle's manifest file"),
])
def test_a_bundle_without_a_usable_manifest_is_named_as_a_bundle_not_as_data(tmp_path, bundle, images, capsys,
                                                                                manifest, words):
    (bundle / "edgeconf.json").unlink()
    if manifest == "folder":
        (bundle / "edgeconf.json").mkdir()
    cv2.imwrite(str(tmp_path / "x.png"), images[0])
    code, out, err = run(capsys, "classify", bundle, tmp_path / "x.png")
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert words.format(b=bundle) in err and "holds no images" not in err
