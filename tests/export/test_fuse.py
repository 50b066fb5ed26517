"""The fused cascade: one graph that answers exactly as the staged cascade, written into the bundle, and refused
with a clear message where it cannot be built or trusted."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeconf import data_path
from edgeconf.bundle import MANIFEST, StageSpec, load_bundle, read_manifest, save_bundle, write_manifest
from edgeconf.cli import main
from edgeconf.errors import BundleError, ConfigError
from edgeconf.hashing import sha256_file
from edgeconf.export.fuse import (FuseError, build_fused, check_fused, fuse_bundle, retune_fused, set_fused_values,
                                  tensorrt_check, unfuse_bundle)
from edgeconf.fused import (FUSED_FILE, FusedCascade, ceil_f32, choose_form, fused_info, ood_threshold_name,
                            temperature_name, threshold_name)
from edgeconf.preprocess import Preprocessing
from onnx_models import random_classifier, save

LABELS = ["c%d" % i for i in range(10)]


def _sample() -> np.ndarray:
    return np.load(data_path("fashion_sample.npz"))["images"]


def _copy(name: str, tmp_path, combine: str = "last") -> str:
    dst = str(tmp_path / name)
    shutil.copytree(data_path("zoo", name), dst)
    if combine != "last":
        path = os.path.join(dst, MANIFEST)
        data = json.load(open(path))
        data["combine"] = combine
        json.dump(data, open(path, "w"))
    return dst


def assert_same(staged, fused, images, batch: int) -> None:
    """Class, answering stage and stages run identical; confidence within 1e-5."""
    for a in range(0, len(images), batch):
        chunk = list(images[a:a + batch])
        xs = staged.classify_batch(chunk)
        fs = fused.classify_batch(chunk)
        assert [r.class_id for r in xs] == [r.class_id for r in fs]
        assert [r.stage for r in xs] == [r.stage for r in fs]
        assert [r.stages_run for r in xs] == [r.stages_run for r in fs]
        assert [r.unknown for r in xs] == [r.unknown for r in fs]
        assert [r.label for r in xs] == [r.label for r in fs]
        np.testing.assert_allclose([r.confidence for r in xs], [r.confidence for r in fs], atol=1e-5, rtol=0)


def _pair(folder):
    return (load_bundle(folder, memo=False, threads=1, form="staged"),
            load_bundle(folder, memo=False, threads=1, form="fused"))


@pytest.mark.parametrize("name, combine", [("bundle", "last"), ("bundle", "best"), ("bundle", "mean"), ("live", "last"),
                                           ("early_exit", "last"), ("early_exit", "best"), ("early_exit", "mean")])
def test_fused_answers_as_the_staged_cascade(name, combine, tmp_path):
    folder = _copy(name, tmp_path, combine)
    report = fuse_bundle(folder)
    assert report.checked_inputs > 0 and report.max_confidence_diff <= 1e-5
    staged, fused = _pair(folder)
    assert isinstance(fused, FusedCascade) and fused.form == "fused" and staged.form == "staged"
    images = _sample()
    assert_same(staged, fused, images, 100)
    assert_same(staged, fused, images[:60], 1)
    # the counters see the same exits and stage calls as the staged form
    assert fused.counters.exits == staged.counters.exits and fused.counters.calls == staged.counters.calls
    # every stage answered some of these, so the comparison covered each branch
    assert {r.stage for r in fused.classify_batch(list(images))} == {0, 1, 2}


@pytest.mark.parametrize("combine", ["last", "best", "mean"])
def test_batch1_graph_answers_as_the_staged_cascade(combine, tmp_path):
    folder = _copy("bundle", tmp_path, combine)
    report = fuse_bundle(folder, batch=1)
    assert report.batch == 1 and report.tensorrt_min == "8.0"
    model = onnx.load(os.path.join(folder, FUSED_FILE))
    assert {n.op_type for n in model.graph.node}.isdisjoint({"NonZero", "ScatterND"})
    staged, fused = _pair(folder)
    assert_same(staged, fused, _sample()[:120], 40)  # a batch-1 graph answers a batch one input per call


def _graph_reads(g: onnx.GraphProto) -> set:
    return {x for n in g.node for x in n.input} | {x for n in g.node for a in n.attribute if a.type == a.GRAPH
                                                   for x in _graph_reads(a.g)}


def test_runtime_model_moves_weights_of_a_graph_fused_before_into_the_branches(tmp_path):
    """A graph written with every weight at the top (as fuse did before) gets them moved into its branches at
    load, in memory; the answers stay the same and the thresholds stay overridable."""
    from edgeconf.fused import runtime_model

    folder = _copy("bundle", tmp_path)
    fuse_bundle(folder, check=False)
    path = os.path.join(folder, FUSED_FILE)
    model = onnx.load(path)

    def lift(g):  # every branch initializer back to the top graph
        for n in g.node:
            for a in n.attribute:
                if a.type == a.GRAPH:
                    lift(a.g)
                    model.graph.initializer.extend(a.g.initializer)
                    del a.g.initializer[:]
    lift(model.graph)
    assert any(i.name.startswith("s1/") for i in model.graph.initializer)
    onnx.save(model, path)
    g = onnx.load_from_string(runtime_model(path)).graph
    assert not any(i.name.startswith(("s1/", "s2/")) for i in g.initializer)
    assert threshold_name(0) in {i.name for i in g.input}  # overridable
    data = json.load(open(os.path.join(folder, MANIFEST)))
    data["files"][FUSED_FILE].update(sha256=sha256_file(path), bytes=os.path.getsize(path))
    json.dump(data, open(os.path.join(folder, MANIFEST), "w"))
    staged, fused = _pair(folder)
    assert_same(staged, fused, _sample()[:100], 50)


@pytest.mark.parametrize("name", ["bundle", "live", "early_exit"])
def test_batch1_graph_keeps_later_stages_in_their_branches(name, tmp_path):
    """The path every input takes: preprocessing, stage 1, its confidence, one If (and the class). Everything only
    escalated inputs need, their weights included, lives in the branches (ONNX Runtime gives a branch's
    convolutions their fast layout only for weights of the branch's own graph); the tunable values stay at the
    top, where a call can override them."""
    folder = _copy(name, tmp_path)
    fuse_bundle(folder, batch=1, check=False)
    g = onnx.load(os.path.join(folder, FUSED_FILE)).graph
    top_ops = [n.op_type for n in g.node]
    assert top_ops.count("If") == 1
    assert {"Shape", "ConstantOfShape", "NonZero", "ScatterND", "Range"}.isdisjoint(top_ops)
    assert not any(n.name == "pre/shift" for n in g.node)  # the shipped preprocessing adds 0: no node for it
    later = [n.name for n in g.node if n.name.startswith(("s1/", "s2/"))]
    assert later == []
    top = {i.name for i in g.initializer}
    assert not any(t.startswith(("s1/", "s2/")) for t in top)
    assert {threshold_name(0), threshold_name(1), temperature_name(1), temperature_name(2)} <= top
    branch2 = next(a.g for n in g.node if n.op_type == "If" for a in n.attribute if a.name == "then_branch")
    own2 = {i.name for i in branch2.initializer}
    assert own2 and all(t.startswith("s1/") or t.startswith("edgeconf_fused_c") for t in own2)
    assert {t for t in _graph_reads(branch2) if t.startswith("s1/") and "/one/" not in t and "head/" not in t} <= own2
    branch3 = next(a.g for n in branch2.node if n.op_type == "If" for a in n.attribute if a.name == "then_branch")
    own3 = {i.name for i in branch3.initializer}
    assert own3 and all(t.startswith("s2/") or t.startswith("edgeconf_fused_c") for t in own3)
    staged, fused = _pair(folder)
    assert_same(staged, fused, _sample()[:80], 1)


@pytest.mark.parametrize("name, extra", [("bundle", []), ("live", ["unknown", "ood"])])
def test_graph_file_layout(name, extra, tmp_path):
    folder = _copy(name, tmp_path)
    fuse_bundle(folder, check=False)
    model = onnx.load(os.path.join(folder, FUSED_FILE))
    g = model.graph
    assert [i.name for i in g.input] == ["image"]
    assert g.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    # with an OOD rule (the live bundle's stage 1) the graph also says which inputs are unknown, and their score
    assert [o.name for o in g.output] == ["class", "confidence", "stage", "stages_run", "probs"] + extra
    inits = {i.name: float(onnx.numpy_helper.to_array(i)) for i in g.initializer if i.name.startswith("edgeconf_fused_")
             and not i.name.startswith("edgeconf_fused_c")}
    man = read_manifest(folder)
    assert inits[threshold_name(0)] == ceil_f32(man.stages[0].threshold)
    assert inits[temperature_name(2)] == pytest.approx(man.stages[2].temperature, rel=1e-7)
    assert threshold_name(2) not in inits  # the last stage always answers
    assert [n.op_type for n in g.node].count("If") == 1  # stage 2, with stage 3 nested in its branch
    assert not any(i.name.startswith(("s1/", "s2/")) for i in g.initializer)  # later stages' weights: in the branches
    info = fused_info(man)
    assert man.files[FUSED_FILE]["sha256"] and info is not None and info.tensorrt_min == "8.5"


def test_tensorrt_check(tmp_path):
    folder = _copy("early_exit", tmp_path)
    model, _, info = build_fused(folder)
    assert tensorrt_check(model) == {"min_version": "8.5", "unknown_ops": [], "problems": []}
    # a condition that is not a 0-d bool, and an op the parser tables do not list, are reported
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "t", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "e", [],
                               [helper.make_tensor_value_info("e", TensorProto.INT64, [2])])
    g = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
                           helper.make_node("Celu", ["x"], ["z"])], "g",
                          [helper.make_tensor_value_info("c", TensorProto.BOOL, [1]),
                           helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])])
    res = tensorrt_check(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert res["unknown_ops"] == ["Celu"]
    assert any("not a 0-d bool" in p for p in res["problems"]) and any("branches differ" in p for p in res["problems"])


def test_tensorrt_check_knows_the_mahalanobis_heads_reduce_min():
    """`edgeconf ood`'s Mahalanobis score ends in ReduceMin over the class distances, which the parser's tables
    list beside ReduceMax: such a fused graph is not sent to the staged form for it."""
    g = helper.make_graph([helper.make_node("ReduceMin", ["d"], ["ood"], keepdims=0, axes=[1])], "g",
                          [helper.make_tensor_value_info("d", TensorProto.FLOAT, [1, 10])],
                          [helper.make_tensor_value_info("ood", TensorProto.FLOAT, [1])])
    res = tensorrt_check(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    assert res == {"min_version": "8.0", "unknown_ops": [], "problems": []}


@pytest.mark.parametrize("batch", [None, 1])
def test_threshold_changed_at_run_time_is_fed_to_the_graph(batch, tmp_path):
    folder = _copy("bundle", tmp_path)
    fuse_bundle(folder, batch=batch, check=False)
    staged, fused = _pair(folder)
    images = _sample()
    before = [r.stage for r in fused.classify_batch(list(images))]
    for c in (staged, fused):
        c.set_threshold(0, 0.3)
        c.stages[1].temperature = 1.7
    assert fused.graph_active and set(fused._extra) == {threshold_name(0), temperature_name(1)}
    assert_same(staged, fused, images, 150)
    assert [r.stage for r in fused.classify_batch(list(images))] != before  # the new values took effect


def test_a_setting_the_graph_cannot_carry_goes_through_the_stages(tmp_path):
    folder = _copy("bundle", tmp_path)
    fuse_bundle(folder, check=False)
    staged, fused = _pair(folder)
    for c in (staged, fused):
        c.stages[0].score = "maxp"  # what the GUI does
    assert not fused.graph_active
    assert_same(staged, fused, _sample(), 100)
    for c in (staged, fused):
        c.stages[0].score = "margin"
    assert fused.graph_active


def test_memo_and_single_images(tmp_path):
    folder = _copy("bundle", tmp_path)
    fuse_bundle(folder, check=False)
    fused = load_bundle(folder, threads=1, form="fused")
    assert fused.memo is not None
    img = _sample()[0]
    first = fused.classify(img)
    again = fused.classify(img)
    assert not first.memo_hit and again.memo_hit and again.class_id == first.class_id
    assert len(first.stage_seconds) == 1 and first.stage_seconds[0] > 0  # the whole call: stages are not separable
    rgb = np.repeat(_sample()[1][:, :, None], 3, axis=2)  # converted on the host, as the staged form does
    big = np.kron(_sample()[2], np.ones((2, 2), np.uint8))  # resized on the host
    staged = load_bundle(folder, memo=False, threads=1, form="staged")
    for im in (rgb, big):
        a, b = staged.classify(im), fused.classify(im)
        assert (a.class_id, a.stage) == (b.class_id, b.stage)


@pytest.mark.parametrize("batch", [None, 1])
def test_a_batch_of_one_takes_the_bound_single_image_call(batch, tmp_path):
    """classify_batch([img]) is classify(img): the bound batch-1 call, not a plain graph call with a feed dict
    (which cost about 30 µs more per input and made `bench --form fused` look slower than it is)."""
    folder = _copy("bundle", tmp_path)
    fuse_bundle(folder, batch=batch, check=False)
    staged, fused = _pair(folder)
    plain = []
    run_trusted = fused.fused_runner.run_trusted
    fused.fused_runner.run_trusted = lambda *a, **k: plain.append(1) or run_trusted(*a, **k)
    images = _sample()[:40]
    assert_same(staged, fused, images, 1)
    assert not plain
    fused.classify_batch(list(images[:2]))  # a real batch still takes one plain graph call per batch (or input)
    assert plain


def test_a_fused_batch_goes_through_the_memo_as_a_staged_one(tmp_path):
    """The fused form's batches take the cascade's memo path: the sampling is priced (it had never been for a fused
    batch), a short key's check is stored with each entry, and the answers equal the staged form's."""
    from edgeconf.memo import MemoCache, Sampling

    folder = _copy("bundle", tmp_path)
    fuse_bundle(folder, check=False)
    staged, fused = _pair(folder)
    images = list(_sample()[:64])
    for c in (staged, fused):
        c.memo = MemoCache(capacity=256, key="dhash64", sampling=Sampling(warmup=16, window=32))
        for a in range(0, len(images), 16):
            c.classify_batch(images[a:a + 16])
    assert fused.memo.stats.break_even is not None and staged.memo.stats.break_even is not None
    assert fused.memo.stats.lookups == staged.memo.stats.lookups
    n = fused.memo.check_bytes + 1
    assert all(fused.memo._checks[slot * n + n - 1] for slot in range(len(fused.memo)))  # every entry has its check
    assert_same(staged, fused, _sample()[64:128], 16)


def test_tampered_fused_graph_is_refused(tmp_path):
    folder = _copy("bundle", tmp_path)
    fuse_bundle(folder, check=False)
    path = os.path.join(folder, FUSED_FILE)
    data = bytearray(open(path, "rb").read())
    data[-10] ^= 0xFF
    open(path, "wb").write(bytes(data))
    for form in ("fused", "staged", "auto"):
        with pytest.raises(BundleError, match="fused.onnx has sha256 .* but the manifest says"):
            load_bundle(folder, form=form)


def test_stale_fused_graph(tmp_path):
    folder = _copy("bundle", tmp_path)
    fuse_bundle(folder, check=False)
    man = read_manifest(folder)
    man.stages[1].score = "maxp"  # the graph computes margin for stage 2
    write_manifest(folder, man)
    with pytest.raises(BundleError, match="out of date: stage 2 changed since it was fused \\(score\\)"):
        load_bundle(folder, form="fused")
    cascade = load_bundle(folder, form="auto", providers=["cpu"])
    assert cascade.form == "staged" and "out of date" in cascade.form_reason


def test_retune_updates_the_fused_graph(tmp_path):
    folder = _copy("bundle", tmp_path)
    fuse_bundle(folder, check=False)
    man = read_manifest(folder)
    man.stages[0].threshold = 0.5
    man.stages[0].temperature = 1.3
    retune_fused(folder, man, 0, threshold=0.5, temperature=1.3)
    write_manifest(folder, man)
    staged, fused = _pair(folder)
    assert fused.graph_active and fused._extra == {}  # the graph itself now holds the new values
    assert_same(staged, fused, _sample(), 150)
    model = onnx.load(os.path.join(folder, FUSED_FILE))
    meta = json.loads(next(p.value for p in model.metadata_props if p.key == "edgeconf.fused"))
    assert meta["stages"][0]["threshold"] == 0.5 and meta["stages"][0]["temperature"] == 1.3
    with pytest.raises(Exception, match="stage 5 does not exist"):
        set_fused_values(model, 5, threshold=0.1)


def test_fuse_and_unfuse_name_a_missing_bundle_folder(tmp_path):
    for fn in (fuse_bundle, unfuse_bundle):
        with pytest.raises(BundleError, match="^bundle folder .*nothere does not exist$"):
            fn(str(tmp_path / "nothere"))
    assert not (tmp_path / "nothere").exists()


def test_unfuse(tmp_path):
    folder = _copy("bundle", tmp_path)
    fuse_bundle(folder, check=False)
    assert unfuse_bundle(folder) and not os.path.exists(os.path.join(folder, FUSED_FILE))
    assert fused_info(read_manifest(folder)) is None and FUSED_FILE not in read_manifest(folder).files
    assert not unfuse_bundle(folder)
    with pytest.raises(BundleError, match="no fused graph .*edgeconf fuse BUNDLE"):
        load_bundle(folder, form="fused")


def test_choose_form(tmp_path):
    folder = _copy("bundle", tmp_path)
    plain = read_manifest(folder)
    assert choose_form("auto", plain, "onnxruntime", None)[0] == "staged"
    assert choose_form("staged", plain, "onnxruntime", None) == ("staged", "asked for")
    fuse_bundle(folder, check=False)
    man = read_manifest(folder)
    assert choose_form("auto", man, "onnxruntime", ["cpu"])[0] == "staged"
    assert choose_form("auto", man, "onnxruntime", ["cuda"])[0] == "fused"
    assert choose_form("auto", man, "ort-tensorrt", None)[0] == "fused"
    form, why = choose_form("auto", man, "tensorrt", None)
    assert form == "staged" and "one engine per stage" in why
    with pytest.raises(BundleError, match="one engine per stage"):
        choose_form("fused", man, "tensorrt", None)
    with pytest.raises(Exception, match="unknown form 'glued'"):
        choose_form("glued", man, "onnxruntime", None)


def test_ceil_f32():
    rng = np.random.default_rng(3)
    for t in list(rng.random(200)) + [0.0, 1.0, 0.09, 0.786, 0.1]:
        c = ceil_f32(t)
        assert np.float32(c) == c and c >= t
        assert float(np.nextafter(np.float32(c), np.float32(-1))) < t  # the smallest such float32
        conf = np.array([np.float32(c), np.nextafter(np.float32(c), np.float32(-1))], np.float32)
        assert list(conf < t) == list(conf < np.float32(c))


# -- bad input -------------------------------------------------------------------------------------------
def _bundle(tmp_path, models, pre=None):
    folder = str(tmp_path / "b")
    specs = [StageSpec("s%d" % i, "s%d.onnx" % i, "margin", 0.5 if i + 1 < len(models) else 0.0)
             for i in range(len(models))]
    files = {"s%d.onnx" % i: save(m, tmp_path / ("m%d.onnx" % i)) for i, m in enumerate(models)}
    save_bundle(folder, specs, files, LABELS, pre or Preprocessing(), combine="last")
    return folder


def test_refuses_stages_that_disagree_on_input_size(tmp_path):
    folder = _bundle(tmp_path, [random_classifier(1), random_classifier(2, input_shape=(1, 14, 14))])
    with pytest.raises(FuseError, match="stage 2 .* takes inputs of shape \\(1, 14, 14\\) .* disagree on the input size"):
        fuse_bundle(folder)


def test_refuses_stages_that_disagree_on_class_count(tmp_path):
    folder = _bundle(tmp_path, [random_classifier(1), random_classifier(2, classes=7)])
    with pytest.raises(FuseError, match="disagree on the class count \\(stage 1: 10, stage 2: 7\\)"):
        fuse_bundle(folder)


def _with_node(model: onnx.ModelProto, node: onnx.NodeProto, domain: str = "") -> onnx.ModelProto:
    """Route the logits through ``node`` (input 'raw', output 'logits')."""
    g = model.graph
    for n in g.node:
        n.output[:] = ["raw" if o == "logits" else o for o in n.output]
    g.node.append(node)
    if domain:
        model.opset_import.append(helper.make_opsetid(domain, 1))
    return model


def test_refuses_an_op_it_cannot_carry(tmp_path):
    custom = _with_node(random_classifier(2), helper.make_node("Gelu", ["raw"], ["logits"], domain="com.example"),
                        "com.example")
    folder = _bundle(tmp_path, [random_classifier(1), custom])
    with pytest.raises(FuseError, match="stage 2 \\(s1.onnx\\) uses Gelu from the 'com.example' op domain"):
        fuse_bundle(folder)


def test_refuses_a_stage_with_its_own_control_flow(tmp_path):
    branch = helper.make_graph([helper.make_node("Identity", ["raw"], ["o"])], "b", [],
                               [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    cond = helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("v", TensorProto.BOOL, [], [True]))
    model = random_classifier(2)
    model.graph.node.append(cond)
    model = _with_node(model, helper.make_node("If", ["cond"], ["logits"], then_branch=branch, else_branch=branch))
    folder = _bundle(tmp_path, [random_classifier(1), model])
    with pytest.raises(FuseError, match="contains If; the fused form cannot nest"):
        fuse_bundle(folder)


def test_small_bundles_fuse_and_agree(tmp_path):
    """Hand-built stages without a confidence head: numpy computes the staged confidence in float64."""
    pre = Preprocessing(mean=(0.5,), std=(0.25,))
    folder = _bundle(tmp_path, [random_classifier(1), random_classifier(2), random_classifier(3)], pre)
    n, worst = fuse_bundle(folder).checked_inputs, check_fused(folder)[1]
    assert n > 0 and worst < 1e-5


# -- the CLI ----------------------------------------------------------------------------------------------
def run(capsys, *args):
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    return (code,) + tuple(capsys.readouterr())


def test_cli(capsys, tmp_path):
    folder = _copy("bundle", tmp_path)
    code, out, err = run(capsys, "fuse", folder, "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["path"].endswith(FUSED_FILE) and rep["checked_inputs"] > 0 and rep["tensorrt_min"] == "8.5"
    code, out, _ = run(capsys, "inspect", folder, "--json")
    form = json.loads(out)["form"]
    assert form["fused"]["batch"] == "any" and form["onnxruntime_cpu"]["form"] == "staged"
    images = tmp_path / "x.npy"
    np.save(images, _sample()[:20])
    code, out, err = run(capsys, "classify", folder, images, "--form", "fused", "--batch", "8")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 20 and '"form": "fused"' in err
    code, out, err = run(capsys, "fuse", str(tmp_path / "nowhere"))
    assert code == 1 and err.startswith("edgeconf: error:") and len(err.strip().splitlines()) == 1


# -- the whole test set -------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name, combine, batch", [
    ("bundle", "last", None), ("bundle", "best", None), ("bundle", "mean", None), ("live", "last", None),
    ("early_exit", "last", None), ("early_exit", "mean", None), ("bundle", "last", 1), ("live", "last", 1)])
def test_full_fashion_mnist_test_set(name, combine, batch, tmp_path):
    from edgeconf.datasets import load_fashion_mnist
    from edgeconf.errors import DataError

    try:
        images, _ = load_fashion_mnist("test")
    except DataError:
        pytest.skip("FashionMNIST is not installed (Debian package dataset-fashion-mnist)")
    folder = _copy(name, tmp_path, combine)
    fuse_bundle(folder, batch=batch, check=False)
    staged, fused = _pair(folder)
    assert_same(staged, fused, images, 500)  # a batch-1 graph answers each input with its own call


def test_retune_command_updates_the_fused_graph(capsys, tmp_path):
    """``edgeconf retune BUNDLE --stage K`` changes the fused graph with the stage, so the bundle still loads fused."""
    folder = _copy("bundle", tmp_path)
    fuse_bundle(folder, check=False)
    code, out, err = run(capsys, "retune", folder, "--stage", "1", "--threshold", "0.55", "--temperature", "1.25")
    assert code == 0, err
    man = read_manifest(folder)
    assert man.stages[0].threshold == 0.55 and fused_info(man).stages[0].model_sha256 == man.files["stage1.onnx"]["sha256"]
    model = onnx.load(os.path.join(folder, FUSED_FILE))
    inits = {i.name: float(onnx.numpy_helper.to_array(i)) for i in model.graph.initializer
             if i.name.startswith("edgeconf_fused_t")}
    assert inits[threshold_name(0)] == ceil_f32(0.55) and inits[temperature_name(0)] == pytest.approx(1.25)
    staged, fused = _pair(folder)
    assert fused.form == "fused" and fused._extra == {}
    assert_same(staged, fused, _sample(), 150)


@pytest.mark.parametrize("value", ["1e308", "3.5e38", "1e-50", "1e-40"])
def test_retune_command_refuses_a_temperature_no_float32_holds(capsys, tmp_path, value):
    """A temperature the float32 initializers cannot hold (it would become inf or 0, and the stage would never exit
    again) is a usage error naming the option and the range, with no numpy warning, and the bundle is unchanged."""
    import warnings

    folder = _copy("bundle", tmp_path)
    fuse_bundle(folder, check=False)
    before = {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run(capsys, "retune", folder, "--stage", "1", "--temperature", value)
    assert code == 2 and out == "" and not caught, [str(w.message) for w in caught]
    assert err.count("\n") == 1 and "Traceback" not in err and "Warning" not in err, err
    assert "'--temperature'" in err and "does not fit the float32" in err and "1.1754944e-38 to 3.4028235e+38" in err
    assert {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))} == before
    model = onnx.load(os.path.join(folder, FUSED_FILE))
    with pytest.raises(ConfigError, match="does not fit the float32"):  # the fused graph's own setter refuses it too
        set_fused_values(model, 0, temperature=float(value))


def test_cascade_command_chooses_the_rule_and_fuses(capsys, pool, task, tmp_path):
    x, y = task.data(600, 41)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=y)
    out = tmp_path / "bundle"
    code, stdout, err = run(capsys, "cascade", *pool, "--data", data, "--out", out, "--costs", "1,3,9",
                            "--combine", "auto", "--fuse", "--json")
    assert code == 0, err
    rep = json.loads(stdout)
    cands = rep["combine_candidates"]
    assert set(cands) == {"last", "best", "mean"} and rep["combine"] in cands
    assert rep["calibration"]["accuracy"] == max(c["accuracy"] for c in cands.values())  # max-accuracy policy
    man = read_manifest(str(out))
    assert man.combine == rep["combine"] and fused_info(man) is not None and fused_info(man).combine == man.combine
    assert rep["fused"]["checked_inputs"] > 0 and rep["runtime_test"]["matches_simulation"]


@pytest.mark.parametrize("combine, batch", [("last", None), ("best", None), ("mean", None), ("last", 1), ("best", 1)])
def test_unknown_answers_as_the_staged_cascade(combine, batch, tmp_path):
    """The live bundle's stage 1 has an OOD rule: the fused graph answers "unknown" exactly where the stages do."""
    folder = _copy("live", tmp_path, combine)
    fuse_bundle(folder, batch=batch, check=False)
    staged, fused = _pair(folder)
    assert fused.stages[0].ood is not None
    noise = np.random.default_rng(5).integers(0, 256, (60, 28, 28), dtype=np.uint8)
    images = np.concatenate([_sample()[:120], noise])
    assert_same(staged, fused, images, 90)
    assert any(r.unknown for r in fused.classify_batch(list(images)))
    # a threshold changed at run time is fed to the graph, inf included (one value for both: an answer's ood is the
    # score of the last stage with a rule that ran, which moves with the threshold once stage 2 has a rule too)
    median = float(np.median([r.ood_score for r in staged.classify_batch(list(images[:120]))]))
    for c in (staged, fused):
        c.set_ood_threshold(0, median)
    assert fused.graph_active and ood_threshold_name(0) in fused._extra
    assert_same(staged, fused, images, 90)
    assert_same(staged, fused, images[:30], 1)
    for c in (staged, fused):  # never unknown: every stage's rule off (stage 2 judges what stage 1's band sends on)
        for k in [k for k, st in enumerate(c.stages) if st.ood is not None]:
            c.set_ood_threshold(k, None)
    assert fused.graph_active and not any(r.unknown for r in fused.classify_batch(list(images)))
    assert_same(staged, fused, images, 90)
    off = load_bundle(folder, memo=False, ood=False)  # OOD rules off: the graph computes them, so staged
    assert off.form == "staged" and all(st.ood is None for st in off.stages)
    with pytest.raises(BundleError, match="ood=False needs the staged form"):
        load_bundle(folder, form="fused", ood=False)


@pytest.mark.parametrize("combine", ["last", "best", "mean"])
def test_doubt_band_answers_as_the_staged_cascade(combine, tmp_path):
    """Stage 1's OOD doubt band (``escalate``): the fused graphs send the same inputs on as the stages do, and a band
    changed at run time is fed to the graph."""
    folder = _copy("live", tmp_path, combine)
    images = np.concatenate([_sample()[:150], np.random.default_rng(5).integers(0, 256, (30, 28, 28), dtype=np.uint8)])
    with load_bundle(folder, memo=False, threads=1, form="staged") as plain:
        scores = np.array([r.ood_score for r in plain.classify_batch(list(images))])
    path = os.path.join(folder, MANIFEST)
    data = json.load(open(path))
    rule = data["stages"][0]["ood"]
    rule["escalate"] = float(min(np.quantile(scores, 0.5), rule["threshold"]))
    json.dump(data, open(path, "w"))
    for batch in (None, 1):
        fuse_bundle(folder, check=False, batch=batch)
        staged, fused = _pair(folder)
        assert fused.form == "fused" and fused.stages[0].ood.escalate == rule["escalate"]
        assert_same(staged, fused, images, 1 if batch == 1 else 90)
        doubtful = (scores > rule["escalate"]) & (scores <= rule["threshold"])
        answers = staged.classify_batch(list(images))
        assert doubtful.any() and all(r.stages_run >= 2 for r, d in zip(answers, doubtful) if d)
        for c in (staged, fused):  # a band moved at run time is fed to the graph
            c.set_ood_threshold(0, rule["threshold"], escalate=float(np.quantile(scores, 0.8)))
        assert fused.graph_active and "edgeconf_fused_ood_escalate_0" in fused._extra
        assert_same(staged, fused, images[:60], 1 if batch == 1 else 30)
        for c in (staged, fused):  # a band taken away: the graph cannot carry that, the stages answer
            c.set_ood_threshold(0, rule["threshold"], escalate=None)
        assert not fused.graph_active
        assert_same(staged, fused, images[:30], 30)


def test_a_graph_no_tensorrt_parses_says_so(capsys, tmp_path):
    """Celu is a standard op the fused form carries but TensorRT's parser tables do not list: fuse and inspect say
    no version parses the graph and name the op (not "version none"); the JSON has null and the reason."""
    celu = _with_node(random_classifier(2), helper.make_node("Celu", ["raw"], ["logits"]))
    folder = _bundle(tmp_path, [random_classifier(1), celu])
    code, out, err = run(capsys, "fuse", folder)
    assert code == 0, err
    assert ("TensorRT: no TensorRT version is known to parse this graph (ops not in its operator tables: Celu); "
            "the staged bundle is used") in out
    assert "none" not in out
    code, out, err = run(capsys, "fuse", folder, "--json", "--no-check")
    rep = json.loads(out)
    assert rep["tensorrt_min"] is None and "Celu" in rep["tensorrt_reason"]
    assert fused_info(read_manifest(folder)).tensorrt_min == "none"  # the manifest's mark is unchanged
    code, out, err = run(capsys, "inspect", folder, "--json")
    form = json.loads(out)["form"]
    assert form["fused"]["tensorrt_min"] is None and "tables: Celu" in form["fused"]["tensorrt_reason"]
    assert form["tensorrt"]["form"] == "staged" and "tables: Celu" in form["tensorrt"]["why"]
    code, out, err = run(capsys, "inspect", folder)
    text = " ".join(out.split())
    assert code == 0 and "none+" not in text and "TensorRT none" not in text
    assert "no TensorRT version known to parse it" in text and "tables: Celu); the staged bundle is used" in text


def test_metadata_nested_too_deep_for_json_is_invalid_metadata_not_a_traceback():
    import onnx
    from onnx import TensorProto, helper

    from edgeconf.errors import ConfigError
    from edgeconf.export.fuse import set_fused_values
    from edgeconf.export.head import read_head_metadata
    from edgeconf.fused import _graph_meta

    deep = "[" * 100000 + "]" * 100000
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    onnx.helper.set_model_props(model, {"edgeconf.fused": deep, "edgeconf.labels": deep})
    assert read_head_metadata(model)["labels"] == deep  # kept as text, as other non-JSON values are
    assert _graph_meta(model) is None
    with pytest.raises(ConfigError, match="edgeconf.fused metadata is not valid; rebuild it with: edgeconf fuse"):
        set_fused_values(model, 0, threshold=0.5)
