"""The CLI verbs end to end on real files, and their one-line errors for bad input."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

from edgeconf.bundle import read_manifest
from edgeconf.cli import main
from edgeconf.export.head import head_values, read_head_metadata
from onnx_models import save


def run(capsys, *args):
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data(task, tmp_path):
    x, y = task.data(400, 31)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    return str(path)


def test_export_calibrate_labels_json(capsys, pool, data, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join("class%d" % i for i in range(5)) + "\n")
    out = tmp_path / "out" / "m.onnx"
    code, stdout, err = run(capsys, "export", pool[1], "--out", out, "--score", "entropy", "--threshold", "0.3",
                            "--calibrate", data, "--labels", labels, "--json")
    assert code == 0, err
    rep = json.loads(stdout)
    assert rep["calibration"]["ece_after"] <= rep["calibration"]["ece_before"]
    t, thr = head_values(str(out))
    assert t == pytest.approx(rep["temperature"], rel=1e-6) and thr == pytest.approx(0.3)
    assert read_head_metadata(str(out))["labels"][4] == "class4"
    code, stdout, _ = run(capsys, "retune", out, "--threshold", "0.7", "--json")
    assert code == 0 and json.loads(stdout)["threshold"] == pytest.approx(0.7)
    assert head_values(str(out))[1] == pytest.approx(0.7)


@pytest.fixture
def int8_data(task, tmp_path):
    """Calibration and test files for INT8 (about 90 % accurate, enough held-out samples to measure ECE)."""
    paths = []
    for name, n, seed in (("calib", 3000, 41), ("test", 2000, 42)):
        x, y = task.data(n, seed, noise=1.6)
        paths.append(str(tmp_path / ("%s.npz" % name)))
        np.savez(paths[-1], x=x, y=y)
    return paths


def test_export_int8(capsys, pool, int8_data, tmp_path):
    calib, test = int8_data
    out = tmp_path / "m.onnx"
    code, stdout, err = run(capsys, "export", pool[2], "--out", out, "--int8", "--calib", calib, "--test", test,
                            "--calib-samples", "1000", "--json")
    assert code == 0, err
    q = json.loads(stdout)["int8"]
    assert os.path.isfile(q["path"]) and q["path"].endswith("m.int8.onnx")
    assert q["evaluated_on"] == "test" and q["samples"] == 2000 and q["calibration_samples"] == 1000
    assert q["int8_accuracy"] >= q["float_accuracy"] - 0.005 and q["int8_ece"] <= q["float_ece"] + 0.005
    assert q["cpu"]["ratio"] > 0 and set(q["methods_tried"]) == {"minmax", "entropy", "percentile"}
    code, stdout, err = run(capsys, "export", pool[2], "--out", tmp_path / "h.onnx", "--int8", "--calib", calib,
                            "--int8-method", "minmax", "--calib-samples", "1000")
    assert code == 0, err
    assert "float vs INT8" in stdout and "minmax calibration" in stdout and "INT8 ÷ float" in stdout


def test_cascade_int8_chooses_on_int8_outputs(capsys, pool, int8_data, tmp_path):
    calib, test = int8_data
    bundle = tmp_path / "b8"
    code, stdout, err = run(capsys, "cascade", pool[0], pool[2], "--data", calib, "--test", test, "--int8",
                            "--int8-method", "minmax", "--calib-samples", "1000", "--out", bundle, "--costs", "1,5",
                            "--json")
    assert code == 0, err
    rep = json.loads(stdout)
    manifest = read_manifest(str(bundle))
    assert manifest.provenance["precision"] == "int8-qdq"
    for stage, q in zip(manifest.stages, rep["int8"]):
        proto = onnx.load(os.path.join(str(bundle), stage.model))
        assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
        meta = read_head_metadata(proto)
        assert meta["precision"] == "int8-qdq" and meta["int8"]["method"] == "minmax"
        # the stage's temperature was fitted on the INT8 model's own outputs over the calibration data
        assert stage.temperature == pytest.approx(rep["stages"][manifest.stages.index(stage)]["temperature"])
        assert q["int8_accuracy"] >= q["float_accuracy"] - 0.005
    assert rep["runtime_test"]["matches_simulation"]


def test_pair_and_cascade(capsys, pool, data, tmp_path):
    code, stdout, err = run(capsys, "pair", *pool, "--data", data, "--repeats", "5", "--json")
    assert code == 0, err
    rep = json.loads(stdout)
    assert len(rep["pairs"]) == 6 and rep["recommended"] == rep["pairs"][0]
    assert rep["policy_met"] is True and rep["policy_shortfall"] is None
    assert rep["calibration_samples"] + rep["test_samples"] == 400
    assert np.asarray(rep["complementarity"]["exactly_one"]).shape == (3, 3)
    code, stdout, err = run(capsys, "pair", *pool, "--data", data, "--costs", "1,2,3")
    assert code == 0 and "recommended:" in stdout and "complementarity" in stdout
    bundle = tmp_path / "bundle"
    code, stdout, err = run(capsys, "cascade", pool[0], pool[2], "--data", data, "--policy", "match:0.5",
                            "--out", bundle, "--costs", "1,5", "--json")
    assert code == 0, err
    rep = json.loads(stdout)
    assert rep["calibration"]["accuracy"] >= 0.5 and rep["runtime_test"]["matches_simulation"]
    assert [s.model for s in read_manifest(str(bundle)).stages] == ["stage1.onnx", "stage2.onnx"]
    code, stdout, _ = run(capsys, "cascade", pool[0], pool[2], "--data", data, "--out", tmp_path / "b2",
                          "--repeats", "5")
    assert code == 0 and "operating point" in stdout


@pytest.mark.parametrize("case", ["int8_no_calib", "calib_no_int8", "several_outputs", "labels", "wrong_shape",
                                  "one_class", "few", "no_y", "policy", "not_classifier", "temp_conflict",
                                  "fixed_batch", "fixed_batch_pair", "labels_calibrate", "empty_class_export",
                                  "empty_class_cascade", "grey_for_colour_export", "grey_for_colour_cascade",
                                  "colour_for_grey_pair"])
def test_errors_are_one_line(capsys, case, pool, data, task, tmp_path):
    x, y = task.data(400, 31)
    out = tmp_path / "o.onnx"
    if case == "int8_no_calib":
        args, msg = ["export", pool[0], "--out", out, "--int8"], "--int8 needs calibration data"
    elif case == "calib_no_int8":
        args, msg = ["export", pool[0], "--out", out, "--calib", data], "add --int8"
    elif case == "several_outputs":
        two = save(task.model(1, 1.0, extra_outputs=True), tmp_path / "two.onnx")
        args, msg = ["export", two, "--out", out], "several candidate logits outputs"
    elif case == "labels":
        (tmp_path / "l.txt").write_text("a\nb\n")
        args, msg = ["export", pool[0], "--out", out, "--labels", tmp_path / "l.txt"], "2 labels given"
    elif case.startswith("empty_class"):  # c2/ holds no images: 4 classes left for a 5-class model without names
        folder = _row_folder(tmp_path / "imgs", ["c0", "c1", "c2", "c3", "c4"], skip=("c2",))
        model = _row_model(tmp_path)
        args = ["export", model, "--out", out, "--calibrate", folder] if case == "empty_class_export" else \
            ["cascade", model, model, "--data", folder, "--costs", "1,2", "--out", tmp_path / "b"]
        msg = ("has 4 classes (c0, c1, c3, c4) but the model answers over 5 (the folder c2/ holds no images); add "
               "images to it, or give the model's class names")
    elif "_for_" in case:  # images of the other kind than the model's preprocessing: refused as bench refuses them
        from onnx_models import random_classifier

        colour = save(random_classifier(1, (3, 6, 6), classes=5), tmp_path / "rgb.onnx")
        imgs = np.random.default_rng(0).integers(0, 256, (60, 6, 6) + ((3,) if case.startswith("colour") else ()))
        np.savez(tmp_path / "d.npz", x=imgs.astype(np.uint8), y=np.arange(60) % 5)
        if case == "grey_for_colour_export":
            args = ["export", colour, "--out", out, "--calibrate", tmp_path / "d.npz"]
        elif case == "grey_for_colour_cascade":
            args = ["cascade", colour, colour, "--data", tmp_path / "d.npz", "--costs", "1,2", "--out", tmp_path / "b"]
        else:
            args = ["pair", pool[0], pool[1], "--data", tmp_path / "d.npz", "--costs", "1,2"]
        msg = ("the model takes %s images (preprocessing channels %d) but " % (
            ("grey", 1) if case.startswith("colour") else ("colour", 3)))
        msg = (msg, "holds %s images; calibrate it on the kind of images it was trained on"
               % ("colour" if case.startswith("colour") else "grey"))
    elif case == "labels_calibrate":  # too few names: said before the names meet the data's class names
        (tmp_path / "l.txt").write_text("c0\nc1\nc2\n")
        np.savez(tmp_path / "d.npz", x=x, y=y, classes=np.array(["c0", "c1", "c2", "c3", "c4"]))
        args, msg = ["export", pool[0], "--out", out, "--labels", tmp_path / "l.txt", "--calibrate",
                     tmp_path / "d.npz"], "3 labels given but the model's output 'logits' has 5 classes"
    elif case == "wrong_shape":
        np.savez(tmp_path / "d.npz", x=x[:, :, :4, :4], y=y)
        args, msg = ["export", pool[0], "--out", out, "--calibrate", tmp_path / "d.npz"], "expects (1,6,6)"
    elif case == "one_class":
        np.savez(tmp_path / "d.npz", x=x, y=np.zeros_like(y))
        args, msg = ["export", pool[0], "--out", out, "--calibrate", tmp_path / "d.npz"], "only 1 class"
    elif case == "few":
        np.savez(tmp_path / "d.npz", x=x[:5], y=y[:5])
        args, msg = ["export", pool[0], "--out", out, "--calibrate", tmp_path / "d.npz"], "at least 20 samples"
    elif case == "no_y":
        np.savez(tmp_path / "d.npz", x=x)
        args, msg = ["cascade", pool[0], pool[1], "--data", tmp_path / "d.npz", "--out", tmp_path / "b"], "has no labels"
    elif case == "policy":
        args, msg = ["cascade", pool[0], pool[1], "--data", data, "--out", tmp_path / "b", "--policy", "fast"], \
            "unknown threshold policy"
    elif case == "not_classifier":
        m = onnx.helper.make_model(onnx.helper.make_graph(
            [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT64, ["N", 3])]),
            opset_imports=[onnx.helper.make_opsetid("", 17)])
        path = tmp_path / "nc.onnx"
        onnx.save(m, str(path))
        args, msg = ["export", path, "--out", out], "not a classifier"
    elif case.startswith("fixed_batch"):  # torch.onnx.export without dynamic_axes fixes the batch at 1
        m = onnx.load(pool[0])
        for v in list(m.graph.input) + list(m.graph.output):
            v.type.tensor_type.shape.dim[0].dim_value = 1
        path = save(m, tmp_path / "fixed.onnx")
        if case == "fixed_batch":
            args = ["export", path, "--out", out, "--calibrate", data]
        else:
            args = ["pair", pool[1], path, "--data", data]
        msg = "input 'input' has a fixed batch size of 1; edgeconf runs a model on batches of any size"
    else:
        args, msg = ["export", pool[0], "--out", out, "--temperature", "2", "--calibrate", data], "conflict"
    code, stdout, err = run(capsys, *args)
    assert code == (2 if case == "policy" else 1)  # a bad option value is a usage error
    msgs = msg if isinstance(msg, tuple) else (msg,)
    assert err.startswith("edgeconf: error:") and all(m in err for m in msgs) and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_retune_a_bundle_stage_prints_values_as_given(capsys, pool, data, tmp_path):
    bundle = tmp_path / "bundle"
    code, _, err = run(capsys, "cascade", pool[0], pool[2], "--data", data, "--out", bundle, "--costs", "1,5")
    assert code == 0, err
    code, stdout, err = run(capsys, "retune", bundle, "--stage", "1", "--threshold", "0.6", "--json")
    assert code == 0, err
    assert '"threshold": 0.6,' in stdout and json.loads(stdout)["stage"] == "stage1"
    code, stdout, _ = run(capsys, "retune", bundle, "--stage", "stage1", "--threshold", "0.35")
    assert code == 0 and "threshold 0.35," in stdout and "0.3499999" not in stdout
    code, stdout, err = run(capsys, "retune", bundle / "stage2.onnx", "--temperature", "1.3")
    assert code == 0, err
    assert "stage 2 of bundle" in stdout
    man = read_manifest(str(bundle))  # every sha256 still matches
    assert man.stages[0].threshold == 0.35 and man.stages[1].temperature == 1.3
    for args, words in ((["--threshold", "0.5"], "has 2 stages"), (["--stage", "3", "--threshold", "0.5"],
                                                                    "has no stage 3; its stages are 1..2")):
        code, _, err = run(capsys, "retune", bundle, *args)
        assert code == 1 and words in err and err.count("\n") == 1


def test_export_refuses_a_temperature_no_float32_holds(capsys, pool, tmp_path):
    out = tmp_path / "m.onnx"
    for value in ("1e308", "1e-50"):
        code, stdout, err = run(capsys, "export", pool[0], "--out", out, "--temperature", value)
        assert code == 2 and stdout == "" and err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith("edgeconf: error: Invalid value for '--temperature': temperature %s does not fit the "
                              "float32 the graph stores it in; give one from 1.1754944e-38 to 3.4028235e+38"
                              % repr(float(value))), err
    assert not out.exists()


@pytest.mark.parametrize("args", [["fuse"], ["fuse", "--remove"], ["fuse", "--batch", "1", "--no-check"],
                                  ["ood", "--data", "DATA"]])
def test_a_command_that_changes_a_bundle_names_a_missing_bundle_folder(capsys, data, tmp_path, args):
    """As 'edgeconf bench nobundle' does: not "that folder does not accept new files" (the folder's parent exists)."""
    missing = tmp_path / "nothere"
    code, stdout, err = run(capsys, args[0], missing, *[data if a == "DATA" else a for a in args[1:]])
    assert (code, stdout, err) == (1, "", "edgeconf: error: bundle folder %s does not exist\n" % missing)
    assert not missing.exists()


def test_pair_ranks_the_cheapest_among_ties_and_fits_80_columns(capsys, pool, data, tmp_path):
    twin = save(onnx.load(pool[1]), tmp_path / "twin_of_m1.onnx")  # the same model: its pairs tie with m1's
    code, stdout, err = run(capsys, "pair", pool[0], pool[1], twin, "--data", data, "--costs", "1,5,2", "--json")
    assert code == 0, err
    pairs = json.loads(stdout)["pairs"]
    for a, b in zip(pairs, pairs[1:]):
        assert a["calib_accuracy"] >= b["calib_accuracy"]
        if a["calib_accuracy"] == b["calib_accuracy"]:
            assert a["calib_cost"] <= b["calib_cost"]
    ties = [p for p in pairs if p["calib_accuracy"] == pairs[0]["calib_accuracy"]]
    assert pairs[0]["calib_cost"] == min(p["calib_cost"] for p in ties)
    code, stdout, err = run(capsys, "pair", pool[0], pool[1], twin, "--data", data, "--costs", "1,5,2")
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].strip() and max(len(line) for line in lines) <= 80, stdout
    assert "…" not in stdout  # no header cut short


def _with_meta(path, dest, **meta):
    """A copy of the model at ``path`` whose edgeconf.* metadata records ``meta`` (values as JSON)."""
    m = onnx.load(path)
    for key, value in meta.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = "edgeconf." + key, json.dumps(value)
    return save(m, dest)


@pytest.mark.parametrize("clash", ["preprocessing", "labels"])
def test_pair_marks_the_pairs_cascade_refuses_and_never_recommends_them(capsys, clash, pool, data, tmp_path):
    if clash == "preprocessing":  # same size and channels, other normalisation: the cascade cannot share one
        a = dict(preprocessing={"size": [6, 6], "channels": 1, "mean": [0.5], "std": [0.25]})
        b = dict(preprocessing={"size": [6, 6], "channels": 1, "mean": [0.4], "std": [0.25]})
    else:  # the same classes named in another order
        a = dict(labels=["a", "b", "c", "d", "e"])
        b = dict(labels=["e", "d", "c", "b", "a"])
    models = [pool[0], _with_meta(pool[1], tmp_path / "ma.onnx", **a), _with_meta(pool[2], tmp_path / "mb.onnx", **b)]
    code, stdout, err = run(capsys, "pair", *models, "--data", data, "--costs", "1,2,3", "--json")
    assert code == 0, err
    rep = json.loads(stdout)
    paths = dict(zip(["m0", "ma", "mb"], models))
    verdicts = {}
    for p in rep["pairs"]:
        code, _, err = run(capsys, "cascade", paths[p["first"]], paths[p["second"]], "--data", data, "--costs", "1,2",
                           "--out", tmp_path / ("b_%s_%s" % (p["first"], p["second"])))
        assert (code == 0) == p["buildable"], (p, err)
        if not p["buildable"]:
            assert p["why"] and p["why"] in err
        verdicts[(p["first"], p["second"])] = p["buildable"]
    assert verdicts[("ma", "mb")] is False and verdicts[("mb", "ma")] is False
    assert rep["recommended"]["buildable"] and rep["recommended"] == next(p for p in rep["pairs"] if p["buildable"])
    ranks = [p["buildable"] for p in rep["pairs"]]
    assert ranks == sorted(ranks, reverse=True)  # every buildable pair ranks above every refused one
    code, stdout, err = run(capsys, "pair", *models, "--data", data, "--costs", "1,2,3")
    assert code == 0, err
    assert "✗ ma → mb cannot be built as a cascade: " in stdout
    best = rep["recommended"]
    assert "recommended: %s → %s" % (best["first"], best["second"]) in stdout


def test_pair_says_when_no_pair_can_be_built(capsys, pool, data, tmp_path):
    models = [_with_meta(pool[1], tmp_path / "ma.onnx", labels=["a", "b", "c", "d", "e"]),
              _with_meta(pool[2], tmp_path / "mb.onnx", labels=["v", "w", "x", "y", "z"])]
    code, stdout, err = run(capsys, "pair", *models, "--data", data, "--costs", "1,2", "--json")
    assert code == 0, err
    rep = json.loads(stdout)
    assert rep["recommended"] is None and not any(p["buildable"] for p in rep["pairs"])
    assert all("names its classes" in p["why"] for p in rep["pairs"])
    code, stdout, err = run(capsys, "pair", *models, "--data", data, "--costs", "1,2")
    assert code == 0, err
    assert "recommended: none: no pair of these models can be built as a cascade" in stdout


@pytest.mark.parametrize("policy, shortfall, advice", [
    ("budget:0", "no pair meets budget:0 on the calibration data (the cheapest point of any pair costs 1)",
     "raise the budget"),
    ("match:100%", "no pair meets match:100% on the calibration data (the most accurate point of any pair reaches 0.",
     "lower the target"),
])
def test_pair_recommends_none_when_no_pair_meets_the_policy(capsys, pool, data, policy, shortfall, advice):
    """Every row 'met: no': no pair is recommended (cascade would refuse the policy too), in words and in --json."""
    code, stdout, err = run(capsys, "pair", *pool, "--data", data, "--costs", "1,2,3", "--policy", policy, "--json")
    assert code == 0, err
    rep = json.loads(stdout)
    assert not any(p["feasible"] for p in rep["pairs"]) and all(p["reachable"] is not None for p in rep["pairs"])
    assert rep["recommended"] is None and rep["policy_met"] is False
    assert rep["policy_shortfall"].startswith(shortfall), rep["policy_shortfall"]
    code, stdout, err = run(capsys, "pair", *pool, "--data", data, "--costs", "1,2,3", "--policy", policy)
    assert code == 0, err
    last = stdout.rstrip("\n").splitlines()[-1]
    assert last == "recommended: none: %s; %s, or rank with --policy max-accuracy" % (rep["policy_shortfall"], advice)
    if policy.startswith("budget"):
        code, _, err = run(capsys, "cascade", pool[0], pool[1], "--data", data, "--costs", "1,2", "--policy", policy,
                           "--out", str(pool[0]) + ".bundle")
        assert code == 1 and "no threshold fits the cost budget 0" in err


def _row_folder(root, classes, per_class=6, skip=()):
    """An ImageFolder of 6×6 grey PNGs: class k has row k bright (a linear model reads it); ``skip``: empty folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(0 if name in skip else per_class):
            img = rng.integers(0, 40, (6, 6)).astype(np.uint8)
            img[k] = 250
            Image.fromarray(img).save(root / name / ("%d.png" % i))
    return root


def _row_model(tmp_path, classes=5):
    w = np.zeros((36, classes), np.float32)
    for k in range(classes):
        w[6 * k:6 * k + 6, k] = 1.0
    from onnx_models import linear_classifier

    return save(linear_classifier(w, input_shape=(1, 6, 6)), tmp_path / "rows.onnx")


def test_near_chance_warning_names_the_order_of_the_class_names(capsys, tmp_path):
    names = ["c0", "c1", "c2", "c3", "c4"]
    folder = _row_folder(tmp_path / "imgs", names)
    model = _row_model(tmp_path)
    (tmp_path / "ok.txt").write_text("\n".join(names) + "\n")
    (tmp_path / "rev.txt").write_text("\n".join(reversed(names)) + "\n")
    code, stdout, err = run(capsys, "export", model, "--out", tmp_path / "a.onnx", "--calibrate", folder,
                            "--labels", tmp_path / "ok.txt")
    assert code == 0, err
    assert "accuracy on the 30 calibration samples: 100.00 %" in stdout and "warning" not in err
    code, stdout, err = run(capsys, "export", model, "--out", tmp_path / "b.onnx", "--calibrate", folder,
                            "--labels", tmp_path / "rev.txt")
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.strip()]
    assert len(warning) == 1 and warning[0].startswith("warning: accuracy on the calibration labels is 20.0 %")
    assert "wrong preprocessing is the usual cause" in warning[0]
    assert ("the class names are not in the order of the model's outputs: the data's folders (c0, c1, c2, c3, c4) "
            "are matched by name to the class names of --labels (c4, c3, c2, c1, c0)") in warning[0]


def test_near_chance_warning_on_an_npz_does_not_call_its_class_names_sorted(capsys, tmp_path):
    """An .npz names its classes in its own order (not sorted): the warning quotes that order, and says how to give
    class names from Python too."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 40, (30, 6, 6)).astype(np.uint8)
    y = np.repeat(np.arange(5), 6)
    for i, k in enumerate(y):
        x[i, 4 - k] = 250  # the row model reads row k as class k: these images say 4 - k
    np.savez(tmp_path / "d.npz", x=x, y=y, classes=np.array(["e", "d", "c", "b", "a"]))
    code, stdout, err = run(capsys, "export", _row_model(tmp_path), "--out", tmp_path / "a.onnx", "--calibrate",
                            tmp_path / "d.npz")
    assert code == 0, err
    assert "the data's class names (e, d, c, b, a), which named the classes" in err and "sorted" not in err
    assert "CLI --labels, Python labels=" in err


def test_a_module_function_without_weights_is_exported_with_a_warning(capsys, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    (tmp_path / "mods.py").write_text("import torch\n\ndef make():\n    torch.manual_seed(0)\n"
                                      "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 5))\n")
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run(capsys, "export", "mods.py:make", "--out", tmp_path / "a.onnx", "--input-shape", "1,6,6")
    assert code == 0, err
    assert "warning: no weights given: mods.py:make is exported with the weights its function builds" in err


def test_a_failed_int8_export_writes_neither_file(capsys, tmp_path):
    """--int8 whose calibration data misses classes is refused, and neither OUT nor OUT.int8.onnx is written (an
    earlier OUT stays as it was)."""
    from edgeconf import data_path

    d = np.load(data_path("fashion_sample.npz"))
    keep = d["labels"] < 2
    np.savez(tmp_path / "two.npz", images=d["images"][keep][:60], labels=d["labels"][keep][:60])
    out = tmp_path / "m.onnx"
    out.write_bytes(b"earlier")
    code, stdout, err = run(capsys, "export", data_path("zoo", "models", "tiny.onnx"), "--out", out, "--calibrate",
                            tmp_path / "two.npz", "--int8", "--calib", tmp_path / "two.npz")
    assert code == 1 and "no sample of classes 2" in err, err
    assert out.read_bytes() == b"earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "two.npz"]


@pytest.mark.parametrize("option", ["labels", "preprocessing_file", "preprocessing_inline"])
def test_deeply_nested_json_options_are_refused_in_one_line(capsys, option, pool, tmp_path):
    deep = "[" * 100000 + "]" * 100000
    if option == "labels":
        (tmp_path / "l.json").write_text(deep)
        args, msg = ["--labels", tmp_path / "l.json"], "labels file %s nests arrays/objects 100000 levels deep" % (
            tmp_path / "l.json")
    elif option == "preprocessing_file":
        (tmp_path / "p.json").write_text('{"size": %s}' % deep)
        args, msg = ["--preprocessing", tmp_path / "p.json"], "preprocessing file %s nests arrays/objects 100001" % (
            tmp_path / "p.json")
    else:
        args, msg = ["--preprocessing", '{"size": %s}' % ("[" * 5000 + "]" * 5000)], \
            "preprocessing JSON nests arrays/objects 5001 levels deep; at most 32 are allowed"
    code, _, err = run(capsys, "export", pool[0], "--out", tmp_path / "o.onnx", *args)
    assert code != 0 and err.startswith("edgeconf: error:") and msg in err and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "o.onnx")


def test_retune_out_over_its_bundle_or_under_a_file_is_refused_before_anything_is_written(capsys, pool, data,
                                                                                          tmp_path):
    bundle = tmp_path / "bundle"
    code, _, err = run(capsys, "cascade", pool[0], pool[2], "--data", data, "--out", bundle, "--costs", "1,5")
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    (tmp_path / "afile").write_text("x")
    stage = sorted(p for p in bundle.iterdir() if p.suffix == ".onnx")[0]
    for args, words in (([stage, "--out", bundle / "edgeconf.json"], "--out %s is a file of bundle %s, an input of "
                         "this run; writing there would destroy it: choose another path" % (bundle / "edgeconf.json",
                                                                                            bundle)),
                        ([stage, "--out", stage], "is %s itself; leave --out out to retune it in place" % stage),
                        ([bundle, "--stage", "1", "--out", tmp_path / "afile" / "bb"],
                         "cannot write %s: %s is a file, not a folder" % (tmp_path / "afile" / "bb", tmp_path / "afile")),
                        ([stage, "--out", tmp_path / "afile" / "m.onnx"], "is a file, not a folder"),
                        ([bundle, "--stage", "1", "--out", tmp_path / "no" / "bb"],
                         "the folder %s does not exist; create it first" % (tmp_path / "no"))):
        code, out, err = run(capsys, "retune", *args, "--threshold", "0.5")
        assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before, err
        assert code == 1 and out == "" and err.count("\n") == 1 and words in err, err
    assert (tmp_path / "afile").read_text() == "x" and not (tmp_path / "no").exists()
