"""The shipped FashionMNIST zoo: files verify, bundles load, and the recorded accuracies are recomputed here."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgeconf
from edgeconf.bundle import MANIFEST, load_bundle, read_manifest, sha256_file
from edgeconf.datasets import FASHION_LABELS, load_fashion_mnist
from edgeconf.errors import BundleError, DataError

ZOO = os.path.join(os.path.dirname(edgeconf.__file__), "data", "zoo")
N = 2000


@pytest.fixture(scope="module")
def zoo() -> dict:
    path = os.path.join(ZOO, "zoo.json")
    if not os.path.isfile(path):
        pytest.fail("the zoo is not shipped: %s is missing (run scripts/train_zoo.py --out edgeconf/data/zoo)" % path)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def fashion_test_split():
    try:
        x, y = load_fashion_mnist("test")
    except DataError as exc:
        pytest.skip("FashionMNIST not available here: %s" % exc)
    return x[:N], y[:N]


def test_zoo_is_small_and_holds_no_pickles():
    total = 0
    for root, _, files in os.walk(ZOO):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
            assert name.endswith((".onnx", ".json", ".npz")), "unexpected file %s in the zoo" % name
            if name.endswith(".npz"):  # fitted OOD arrays: plain arrays, readable without unpickling
                with np.load(os.path.join(root, name), allow_pickle=False) as f:
                    assert all(f[k].dtype == np.float32 for k in f.files)
    # float zoo 4.5 MB + the live bundle (the same architectures fine-tuned for camera crops + the OOD head,
    # 1.8 MB) + INT8 copies and report (0.7 MB)
    assert 0 < total < 7.5 * 1024 * 1024


def test_table_has_every_model(zoo):
    models = zoo["models"]
    pool = [n for n, m in models.items() if m["role"] == "pool"]
    assert len(pool) >= 4 and "big" in models
    for name, m in models.items():
        assert m["params"] > 0 and m["flops"] > 0 and m["ort_cpu_us"] > 0
        assert 0.0 <= m["test_ece"] <= 1.0 and 0.0 < m["test_accuracy"] <= 1.0
    assert all(20_000 <= models[n]["params"] <= 80_000 for n in pool)
    assert models["big"]["weights_bytes"] <= 2_000_000
    assert models["big"]["test_accuracy"] >= max(models[n]["test_accuracy"] for n in pool)
    assert zoo["labels"] == FASHION_LABELS


@pytest.mark.parametrize("folder", ["bundle", "live", "early_exit"])
def test_bundle_manifest_hashes_verify(folder):
    path = os.path.join(ZOO, folder)
    manifest = read_manifest(path, verify=True)
    assert manifest.labels == FASHION_LABELS
    assert len(manifest.stages) >= 2
    for rel, info in manifest.files.items():
        assert sha256_file(os.path.join(path, rel)) == info["sha256"]
    if folder == "early_exit":
        assert all(s.input != "image" for s in manifest.stages[1:])


def test_tampered_bundle_is_refused(tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(os.path.join(ZOO, "bundle"), str(copy))
    stage = copy / read_manifest(str(copy)).stages[1].model
    blob = bytearray(stage.read_bytes())
    blob[-1] ^= 0xFF
    stage.write_bytes(bytes(blob))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(str(copy))


def test_shipped_model_files_match_the_table(zoo):
    for name, m in zoo["models"].items():
        path = os.path.join(ZOO, m["file"])
        assert sha256_file(path) == m["sha256"], name
        meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        assert json.loads(meta["edgeconf.labels"]) == FASHION_LABELS
        assert json.loads(meta["edgeconf.score"]) == "margin"


def _accuracy_of_bundle(folder: str, x: np.ndarray, y: np.ndarray, ood: bool = False) -> float:
    """Accuracy as ``zoo.json`` records it: the classes, without the OOD rule (scripts/fit_ood.py adds it later)."""
    with load_bundle(folder, memo=False, threads=1, ood=ood) as cascade:
        res = cascade.classify_batch(list(x))
    return float((np.array([r.class_id for r in res]) == y).mean())


def test_live_bundle_is_its_own_cascade_with_an_ood_head(zoo):
    """zoo/live: the zoo's ``tiny`` → ``student`` → ``big``, later stages fine-tuned for camera crops
    (scripts/train_live.py), the same classes and preprocessing as zoo/bundle, its own recorded provenance, and the OOD
    heads (scripts/fit_ood.py): stage 1's with a doubt band that sends crops on to stage 2, whose own head decides."""
    plain, live = read_manifest(os.path.join(ZOO, "bundle")), read_manifest(os.path.join(ZOO, "live"))
    assert all(s.ood is None for s in plain.stages)  # classify/bench on whole images pay nothing for OOD
    first, second, third = (s.ood for s in live.stages)
    assert first is not None and first.escalate is not None and first.escalate < first.threshold
    assert second is not None and second.escalate is None and third is None
    assert live.labels == plain.labels == FASHION_LABELS
    assert live.preprocessing.to_json() == plain.preprocessing.to_json()
    assert len(live.stages) == len(plain.stages) and live.combine == plain.combine
    training = live.extra["live_training"]
    assert training["tuned"] and set(training["tuned"]) <= {"tiny", "student", "big"}
    for b, name in zip(live.stages, ("tiny", "student", "big")):
        # the zoo's architectures (the models' own weights in graph order, the heads' edgeconf_* aside)
        base = [numpy_helper.to_array(i) for i in onnx.load(os.path.join(ZOO, zoo["models"][name]["file"])).graph.initializer
                if not i.name.startswith("edgeconf_")]
        own = [numpy_helper.to_array(i) for i in onnx.load(os.path.join(ZOO, "live", b.model)).graph.initializer
               if not i.name.startswith("edgeconf_")]
        assert [w.shape for w in base] == [w.shape for w in own]
        same = all(np.allclose(u, v, atol=1e-6) for u, v in zip(base, own))
        assert same == (name not in training["tuned"]), name  # fine-tuned stages have weights of their own
    assert training["script"] == "scripts/train_live.py"
    assert "train_live.py" in live.provenance["recipe"] and "fit_ood.py" in live.provenance["ood"]


def _seeds(text: str) -> set:
    """``"100-199,250"`` → the set of seeds (as scripts/fit_ood.py writes them)."""
    out: set = set()
    for part in filter(None, text.split(",")):
        a, _, b = part.partition("-")
        out |= set(range(int(a), int(b or a) + 1))
    return out


def test_live_bundle_ood_heads_never_saw_an_evaluation_scene():
    """scripts/fit_ood.py records the demo-scene seeds its heads were fitted on (scenes of the shipped items, and any
    scenes of calibration-split items); none is a held-out evaluation seed (benchmarks/bench_unknown.py uses those)."""
    from edgeconf.live.demo_scene import HELD_OUT_SEEDS

    provenance = read_manifest(os.path.join(ZOO, "live")).provenance
    scenes, items = _seeds(provenance["ood_seeds"]["scenes"]), _seeds(provenance["ood_seeds"]["calibration_items"])
    assert len(scenes) >= 100 and not scenes & items  # enough scenes to put every item of the sample on screen
    assert not (scenes | items) & set(HELD_OUT_SEEDS)
    assert provenance["ood_seeds"]["scenes"] in provenance["ood"]


def test_live_bundle_answers_the_shipped_sample_as_recorded():
    from edgeconf.live.demo_scene import load_sample

    x, y = load_sample()
    recorded = read_manifest(os.path.join(ZOO, "live")).extra["live_training"]["sample_answers"]
    assert recorded["file"] == "fashion_sample.npz" and recorded["images"] == len(y)
    with load_bundle(os.path.join(ZOO, "live"), memo=False, threads=1) as cascade:
        answers = np.array([r.class_id for r in cascade.classify_batch(list(x))])
    expected = np.array([-1 if c == "u" else int(c) for c in recorded["answers"]])  # a class digit, "u": unknown
    assert (answers != expected).sum() <= 2  # same files, same images: rounding-level differences at most
    assert abs(int((answers == y).sum()) - recorded["correct"]) <= 2
    assert abs(int((answers < 0).sum()) - recorded["unknown"]) <= 2
    assert (answers == y).mean() > 0.85


def test_defaults_pick_the_bundle_for_the_job():
    from edgeconf.bench.benchmark import default_paths
    from edgeconf.live.defaults import DEFAULT_BUNDLE

    assert os.path.samefile(DEFAULT_BUNDLE, os.path.join(ZOO, "live"))
    assert os.path.samefile(default_paths()["bundle"], os.path.join(ZOO, "bundle"))


def test_live_bundle_rarely_calls_fashion_images_unknown(fashion_test_split):
    x, y = fashion_test_split
    with load_bundle(os.path.join(ZOO, "live"), memo=False, threads=1) as cascade:
        assert cascade.stages[0].ood is not None  # the live bundle carries its fitted OOD rule
        res = cascade.classify_batch(list(x))
    unknown = np.array([r.unknown for r in res])
    assert unknown.mean() <= 0.01  # stage 1 and stage 2 each fitted to keep 99.8 % of held-out in-distribution inputs
    assert all(r.class_id == -1 and r.label == "unknown" for r in res if r.unknown)


def test_default_bundle_classifies_like_recorded(zoo, fashion_test_split):
    x, y = fashion_test_split
    acc = _accuracy_of_bundle(os.path.join(ZOO, "bundle"), x, y)
    recorded = zoo["bundle"]["first_%d_accuracy" % N]
    assert abs(acc - recorded) <= 2.0 / N  # same files, same images: at most rounding-level differences
    assert abs(acc - zoo["bundle"]["runtime_test"]["accuracy"]) <= 0.02  # first 2000 vs the whole test split
    assert acc > 0.88


def test_early_exit_bundle_classifies_like_recorded(zoo, fashion_test_split):
    x, y = fashion_test_split
    acc = _accuracy_of_bundle(os.path.join(ZOO, "early_exit"), x, y)
    assert abs(acc - zoo["multi_exit"]["first_%d_accuracy" % N]) <= 2.0 / N
    assert acc > 0.85


def test_baseline_is_confidence_aware_and_accurate(zoo, fashion_test_split):
    from edgeconf.backends import prepare
    from edgeconf.preprocess import Preprocessing

    x, y = fashion_test_split
    pre = Preprocessing.from_json(zoo["preprocessing"])
    with prepare(os.path.join(ZOO, "big.onnx"), threads=1) as runner:
        assert {"logits", "probs", "confidence", "exit"} <= {o.name for o in runner.outputs}
        out = runner.run(pre.batch(list(x)))
    acc = float((out["logits"].argmax(1) == y).mean())
    assert abs(acc - zoo["models"]["big"]["first_%d_accuracy" % N]) <= 2.0 / N
    assert np.array_equal(out["probs"].argmax(1), out["logits"].argmax(1))
    assert acc >= zoo["bundle"]["first_%d_accuracy" % N] - 0.03
