"""Unknown answers in the runtime: a stage's OOD rule, batch and single paths, combine rules, memo, bundle."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edgeconf.backends import prepare
from edgeconf.bundle import MANIFEST, OodSpec, StageSpec, load_bundle, read_manifest, save_bundle
from edgeconf.cascade import UNKNOWN, UNKNOWN_LABEL, Cascade, OodRule, Stage
from edgeconf.confidence import energy
from edgeconf.errors import BundleError, ConfigError
from edgeconf.memo import MemoCache
from edgeconf.preprocess import Preprocessing
from onnx_models import random_classifier, save, with_ood_output

LABELS = ["c%d" % i for i in range(10)]


def _stages(tmp_path, threshold=0.5, ood_threshold=0.2, ood_on=(0,)):
    stages = []
    for k in range(2):
        model = with_ood_output(random_classifier(10 + k)) if k in ood_on else random_classifier(10 + k)
        path = save(model, tmp_path / ("s%d.onnx" % k))
        rule = OodRule(ood_threshold) if k in ood_on else None
        stages.append(Stage("s%d" % k, prepare(path), "margin", threshold if k == 0 else 0.0, 1.0, ood=rule))
    return stages


def _inputs(rng, n=200):
    """Half small (score mean(x²) ≈ 0.01: known), half large (≈ 1: unknown)."""
    x = rng.normal(0, 0.1, (n, 1, 28, 28)).astype(np.float32)
    x[n // 2:] *= 10.0
    return x


def test_energy_score_is_minus_logsumexp():
    z = np.array([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0]])
    want = -np.log(np.exp(z).sum(1))
    np.testing.assert_allclose(energy(z), want)
    np.testing.assert_allclose(energy(z, 2.0), -2.0 * np.log(np.exp(z / 2.0).sum(1)))


@pytest.mark.parametrize("combine", ["last", "best"])
def test_batch_unknown_exits_at_the_stage_that_says_so(tmp_path, rng, combine):
    cascade = Cascade(_stages(tmp_path), combine=combine, labels=LABELS)
    x = _inputs(rng)
    want_ood = (x.reshape(len(x), -1) ** 2).mean(1)
    b = cascade.run_batch(x)
    assert b.unknown is not None
    np.testing.assert_array_equal(b.unknown, want_ood > 0.2)
    assert b.unknown[100:].all() and not b.unknown[:100].any()
    np.testing.assert_allclose(b.ood, want_ood, rtol=1e-5)  # stage 1 judges every input
    assert (b.class_ids[b.unknown] == UNKNOWN).all() and (b.class_ids[~b.unknown] >= 0).all()
    assert (b.stage[b.unknown] == 0).all() and (b.stages_run[b.unknown] == 1).all()  # stage 2 never ran on them
    assert b.stage_counts[1] == int((b.stages_run == 2).sum()) <= 100
    item = b.item(150, LABELS)
    assert item.unknown and item.class_id == UNKNOWN and item.label == UNKNOWN_LABEL
    assert json.loads(json.dumps(item.to_json()))["unknown"] is True
    assert cascade.counters.unknown == 100
    # single inputs give the same answers as the batch
    for i in (0, 1, 120, 199):
        r = cascade.run(x[i])
        assert r.unknown == bool(b.unknown[i]) and r.class_id == int(b.class_ids[i]) and r.stage == int(b.stage[i])
        assert r.ood_score == pytest.approx(float(want_ood[i]), rel=1e-5)


def test_unknown_on_a_later_stage_only_reaches_escalated_inputs(tmp_path, rng):
    cascade = Cascade(_stages(tmp_path, threshold=1.0, ood_on=(1,)), labels=LABELS)
    x = _inputs(rng)
    b = cascade.run_batch(x)  # threshold 1.0: every input escalates, so stage 2 judges all
    assert (b.stages_run == 2).all()
    np.testing.assert_array_equal(b.unknown, (x.reshape(len(x), -1) ** 2).mean(1) > 0.2)
    assert (b.stage[b.unknown] == 1).all()


def _three_groups(rng, n=60):
    """Scores mean(x²) ≈ 0.01 (known), ≈ 0.25 (in stage 1's doubt band), ≈ 1 (unknown at stage 1)."""
    x = rng.normal(0, 0.1, (3 * n, 1, 28, 28)).astype(np.float32)
    x[n:2 * n] *= 5.0
    x[2 * n:] *= 10.0
    return x


@pytest.mark.parametrize("later", [0.2, 0.5])
@pytest.mark.parametrize("combine", ["last", "best", "mean"])
def test_doubt_band_sends_inputs_on_to_the_next_stage_whose_rule_decides(tmp_path, rng, later, combine):
    """Stage 1 always confident: only its doubt band (0.1 < score <= 0.5) sends inputs to stage 2, whose own rule
    (threshold ``later``) calls them unknown (0.2) or lets stage 2 answer them with a class (0.5)."""
    stages = _stages(tmp_path, threshold=0.0, ood_on=(0, 1))
    stages[0].ood = OodRule(0.5, escalate=0.1)
    stages[1].ood = OodRule(later)
    cascade = Cascade(stages, combine=combine, labels=LABELS)
    x = _three_groups(rng)
    b = cascade.run_batch(x)
    known, doubt, far = slice(0, 60), slice(60, 120), slice(120, 180)
    assert (b.stages_run[known] == 1).all() and (b.stages_run[doubt] == 2).all() and (b.stages_run[far] == 1).all()
    assert b.stage_counts == [180, 60]
    assert not b.unknown[known].any() and b.unknown[far].all()
    assert b.unknown[doubt].all() == (later == 0.2) and b.unknown[doubt].any() == (later == 0.2)
    if later == 0.5:
        assert (b.class_ids[doubt] >= 0).all()
        np.testing.assert_allclose(b.ood[doubt], (x[doubt].reshape(60, -1) ** 2).mean(1), rtol=1e-5)  # stage 2's
    for i in (0, 59, 60, 119, 120, 179):  # the batch-1 path agrees
        r = cascade.run(x[i])
        assert (r.unknown, r.class_id, r.stage, r.stages_run) == (bool(b.unknown[i]), int(b.class_ids[i]),
                                                                   int(b.stage[i]), int(b.stages_run[i]))


def test_doubt_band_in_the_fingerprint_memo_and_settings(tmp_path, rng):
    pre = Preprocessing(scale=1.0 / 255.0)
    stages = _stages(tmp_path, threshold=0.0, ood_on=(0, 1))
    stages[0].ood = OodRule(0.9, escalate=0.1)
    stages[1].ood = OodRule(0.2)
    cascade = Cascade(stages, labels=LABELS, preprocessing=pre, memo=MemoCache(64))
    fp = cascade.fingerprint()
    mid = np.full((28, 28), 140, np.uint8)  # mean(x²) ≈ 0.30: in stage 1's band, unknown for stage 2
    first = cascade.classify(mid)
    assert first.unknown and first.stage == 1 and first.stages_run == 2
    again = cascade.classify(mid)
    assert again.memo_hit and again.unknown and again.class_id == UNKNOWN
    cascade.set_ood_threshold(0, 0.95)  # the band is kept
    assert cascade.stages[0].ood.escalate == 0.1 and cascade.fingerprint() != fp
    cascade.set_ood_threshold(0, 0.05)  # below the band's edge: the kept band closes down to the threshold
    assert cascade.stages[0].ood.escalate == 0.05
    cascade.set_ood_threshold(0, 0.9, escalate=None)  # no band: stage 1 answers it
    r = cascade.classify(mid)
    assert not r.memo_hit and not r.unknown and r.stage == 0
    with pytest.raises(ConfigError, match="escalate"):
        cascade.set_ood_threshold(0, 0.05, escalate=0.1)
    with pytest.raises(ConfigError, match="escalate"):
        OodRule(1.0, escalate=float("nan")).validate("s")


def test_switching_the_rule_off_and_the_fingerprint(tmp_path, rng):
    cascade = Cascade(_stages(tmp_path), labels=LABELS)
    fp = cascade.fingerprint()
    cascade.set_ood_threshold(0, None)
    assert cascade.fingerprint() != fp
    assert not cascade.run_batch(_inputs(rng)).unknown.any()
    with pytest.raises(ConfigError, match="no OOD rule"):
        cascade.set_ood_threshold(1, 3.0)


def test_memo_serves_unknown_as_unknown_never_as_a_class(tmp_path, rng):
    pre = Preprocessing(scale=1.0 / 255.0)
    cascade = Cascade(_stages(tmp_path, ood_threshold=0.05), labels=LABELS, preprocessing=pre, memo=MemoCache(64))
    bright = rng.integers(200, 256, (28, 28)).astype(np.uint8)  # mean(x²) ≈ 0.8: unknown
    dark = rng.integers(0, 30, (28, 28)).astype(np.uint8)  # ≈ 0.004: known
    first = cascade.classify(bright)
    again = cascade.classify(bright)
    assert first.unknown and not first.memo_hit
    assert again.memo_hit and again.unknown and again.class_id == UNKNOWN and again.label == UNKNOWN_LABEL
    batch = cascade.classify_batch([dark, bright, bright, dark])
    assert [r.unknown for r in batch] == [False, True, True, False]
    assert all(r.class_id >= 0 for r in batch if not r.unknown)


def test_a_rule_on_a_missing_output_is_refused(tmp_path):
    path = save(random_classifier(3), tmp_path / "plain.onnx")
    with pytest.raises(ConfigError, match="lacks"):
        Stage("s", prepare(path), ood=OodRule(1.0))
    st = Stage("s", prepare(path), ood=OodRule(-1e9, score="energy", output=None))  # computed from the logits
    b = Cascade([st]).run_batch(np.zeros((3, 1, 28, 28), np.float32))
    assert b.unknown.all()
    with pytest.raises(ConfigError, match="not computed by the runtime"):
        Stage("s", prepare(path), ood=OodRule(1.0, score="mahalanobis", output=None))


def _bundle(tmp_path, ood):
    src = save(with_ood_output(random_classifier(5)), tmp_path / "m.onnx")
    folder = str(tmp_path / "b")
    save_bundle(folder, [StageSpec("s1", "s1.onnx", threshold=0.0, ood=OodSpec(**ood))], {"s1.onnx": src}, LABELS,
                Preprocessing(scale=1.0 / 255.0))
    return folder


def test_bundle_round_trip_and_ood_switch(tmp_path):
    folder = _bundle(tmp_path, {"score": "test", "threshold": 0.05, "output": "ood"})
    assert read_manifest(folder).stages[0].ood.threshold == 0.05
    bright = np.full((28, 28), 250, np.uint8)
    with load_bundle(folder) as c:
        assert c.stages[0].ood == OodRule(0.05, "test", "ood")
        assert c.classify(bright).unknown
    with load_bundle(folder, ood=False) as c:
        assert c.stages[0].ood is None and not c.classify(bright).unknown
    (tmp_path / "banded").mkdir()
    banded = _bundle(tmp_path / "banded", {"threshold": 0.05, "output": "ood", "escalate": 0.01})
    assert read_manifest(banded).stages[0].ood.escalate == 0.01
    assert json.load(open(os.path.join(banded, MANIFEST)))["stages"][0]["ood"]["escalate"] == 0.01
    assert "escalate" not in json.load(open(os.path.join(folder, MANIFEST)))["stages"][0]["ood"]  # optional field
    with load_bundle(banded) as c:
        assert c.stages[0].ood == OodRule(0.05, "graph", "ood", 0.01)


@pytest.mark.parametrize("ood, match", [
    ("high", "ood must be an object"),
    ({"score": "x"}, "missing key 'threshold'"),
    ({"threshold": "1"}, "threshold must be a finite number"),
    ({"threshold": 1.0, "score": "mahalanobis", "output": None}, "needs a model output"),
    ({"threshold": 1.0, "params": 3}, "params must be"),
    ({"threshold": 1.0, "code": "import os"}, "unknown key"),
    ({"threshold": 1.0, "escalate": 2.0}, "must not be higher"),
])
def test_bad_ood_entries_are_refused(tmp_path, ood, match):
    folder = _bundle(tmp_path, {"threshold": 1.0, "output": "ood"})
    path = os.path.join(folder, MANIFEST)
    data = json.load(open(path))
    data["stages"][0]["ood"] = ood
    json.dump(data, open(path, "w"))
    with pytest.raises(BundleError, match=match):
        read_manifest(folder)


def test_ood_params_file_must_be_listed_and_hashed(tmp_path):
    with pytest.raises(BundleError, match="no sha256"):  # named but not among the hashed files
        _bundle(tmp_path, {"threshold": 1.0, "output": "ood", "params": "ood/s1.npz"})
