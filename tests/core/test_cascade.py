from __future__ import annotations

import numpy as np
import pytest

from edgeconf.backends import prepare
from edgeconf.cascade import Cascade, Stage
from edgeconf.confidence import score, softmax
from edgeconf.errors import ConfigError
from onnx_models import linear_classifier, random_classifier, save


def _reference(x, weights, thresholds, temps, scores, combine):
    """Plain-numpy cascade: the answer each input should get and the stage that gave it."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    out_class = np.zeros(n, int)
    out_stage = np.zeros(n, int)
    out_conf = np.zeros(n)
    for i in range(n):
        best = None
        summed = None
        for k, (w, b) in enumerate(weights):
            p = softmax((flat[i] @ w + b)[None], temps[k])
            if combine == "mean":  # the average of every stage so far, and its confidence
                summed = p if summed is None else summed + p
                p = summed / (k + 1)
            c = float(score(scores[k], p)[0])
            if best is None or combine != "best" or c > best[2]:
                best = (int(p.argmax()), k, c)
            if c >= thresholds[k] or k == len(weights) - 1:
                break
        out_class[i], out_stage[i], out_conf[i] = best
    return out_class, out_stage, out_conf


def _weights(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.05, (784, 10)).astype(np.float32), rng.normal(0, 0.1, 10).astype(np.float32)


@pytest.mark.parametrize("combine", ["last", "best", "mean"])
@pytest.mark.parametrize("scores", [("margin", "margin"), ("maxp", "entropy")])
def test_two_stage_matches_numpy_reference(tmp_path, rng, combine, scores):
    ws = [_weights(10), _weights(11)]
    paths = [save(linear_classifier(w, b), tmp_path / ("s%d.onnx" % k)) for k, (w, b) in enumerate(ws)]
    temps = [1.3, 0.8]
    x = rng.normal(size=(300, 1, 28, 28)).astype(np.float32)
    first = score(scores[0], softmax(x.reshape(300, -1) @ ws[0][0] + ws[0][1], temps[0]))
    thresholds = [float(np.quantile(first, 0.6)), 0.0]  # about 60 % escalate
    stages = [Stage("s%d" % k, prepare(p), scores[k], thresholds[k], temps[k]) for k, p in enumerate(paths)]
    cascade = Cascade(stages, combine=combine)
    want_class, want_stage, want_conf = _reference(x, ws, thresholds, temps, scores, combine)
    assert 0.5 < (batch_escalated := (first < thresholds[0]).mean()) < 0.7
    if combine == "last":
        assert (want_stage == 1).mean() == pytest.approx(batch_escalated)

    batch = cascade.run_batch(x)
    np.testing.assert_array_equal(batch.class_ids, want_class)
    np.testing.assert_array_equal(batch.stage, want_stage)
    np.testing.assert_allclose(batch.confidence, want_conf, rtol=1e-5, atol=1e-6)
    escalated = int((batch.stages_run == 2).sum())
    assert batch.stage_counts == [300, escalated]
    # single inputs give the same answers as the batch
    for i in range(0, 300, 37):
        one = cascade.run(x[i])
        assert (one.class_id, one.stage) == (want_class[i], want_stage[i])
        assert len(one.stage_seconds) == one.stages_run
    c = cascade.counters
    assert c.inputs == 300 + len(range(0, 300, 37))
    assert c.calls[0] == c.inputs and c.calls[1] == escalated + sum(
        1 for i in range(0, 300, 37) if batch.stages_run[i] == 2)
    assert sum(c.exits) == c.inputs
    assert c.escalation_rate == pytest.approx(c.calls[1] / c.inputs)


@pytest.mark.parametrize("combine", ["best", "mean"])
def test_three_stages_match_numpy_reference(tmp_path, rng, combine):
    ws = [_weights(20), _weights(21), _weights(22)]
    paths = [save(linear_classifier(w, b), tmp_path / ("s%d.onnx" % k)) for k, (w, b) in enumerate(ws)]
    temps, scores = [1.2, 0.9, 1.0], ("margin", "maxp", "margin")
    x = rng.normal(size=(240, 1, 28, 28)).astype(np.float32)
    thresholds = [0.6, 0.5, 0.0]
    cascade = Cascade([Stage("s%d" % k, prepare(p), scores[k], thresholds[k], temps[k]) for k, p in enumerate(paths)],
                      combine=combine)
    want_class, want_stage, want_conf = _reference(x, ws, thresholds, temps, scores, combine)
    assert set(want_stage) == {0, 1, 2}
    batch = cascade.run_batch(x)
    np.testing.assert_array_equal(batch.class_ids, want_class)
    np.testing.assert_array_equal(batch.stage, want_stage)
    np.testing.assert_allclose(batch.confidence, want_conf, rtol=1e-5, atol=1e-6)  # float32 logits vs float64
    for i in range(0, 240, 17):
        one = cascade.run(x[i])
        assert (one.class_id, one.stage) == (want_class[i], want_stage[i])
        assert one.confidence == pytest.approx(want_conf[i], rel=1e-5, abs=1e-6)
    if combine == "mean":  # the answer's probabilities are the average over the stages that ran
        i = int(np.argmax(batch.stages_run == 3))
        flat = x[i].reshape(1, -1)
        avg = sum(softmax(flat @ w + b, t) for (w, b), t in zip(ws, temps)) / 3
        np.testing.assert_allclose(batch.probs[i], avg[0], rtol=1e-5, atol=1e-6)


def test_threshold_zero_and_one(tmp_path, rng, two_models):
    stages = [Stage("a", prepare(two_models[0]), "margin", 0.0), Stage("b", prepare(two_models[1]), "margin", 0.0)]
    cascade = Cascade(stages)
    x = rng.normal(size=(20, 1, 28, 28)).astype(np.float32)
    assert cascade.run_batch(x).stage_counts == [20]  # everything exits at stage 1
    cascade.set_threshold(0, 1.0)
    assert cascade.run_batch(x).stage_counts == [20, 20]  # nothing is confident enough
    with pytest.raises(ConfigError, match="threshold must be in"):
        cascade.set_threshold(0, 1.5)


def test_fingerprint_follows_everything_that_decides_answers(two_models):
    def build():
        return Cascade([Stage("a", prepare(two_models[0]), "margin", 0.5, model_sha256="aa"),
                        Stage("b", prepare(two_models[1]), "margin", 0.5, model_sha256="bb")])

    a, b = build(), build()
    assert a.fingerprint() == b.fingerprint()
    b.set_threshold(0, 0.6)
    assert a.fingerprint() != b.fingerprint()
    b.set_threshold(0, 0.5)
    b.stages[1].temperature = 2.0
    assert a.fingerprint() != b.fingerprint()
    b.stages[1].temperature = 1.0
    b.combine = "best"
    assert a.fingerprint() != b.fingerprint()


def test_early_exit_stages_chain_on_features(tmp_path, rng):
    """Stage 2 consumes stage 1's 'features' output, as early-exit segments do."""
    w1, b1 = _weights(20)
    w2, b2 = _weights(21)
    s1 = save(linear_classifier(w1, b1, extra_outputs=True), tmp_path / "seg1.onnx")
    s2 = save(linear_classifier(w2, b2, input_shape=(784,), input_name="features_in"), tmp_path / "seg2.onnx")
    cascade = Cascade([Stage("seg1", prepare(s1), "maxp", 0.3), Stage("seg2", prepare(s2), "maxp", 0.0, input="features")])
    x = rng.normal(size=(100, 1, 28, 28)).astype(np.float32)
    res = cascade.run_batch(x)
    flat = x.reshape(100, -1)
    p1 = softmax(flat @ w1 + b1)
    p2 = softmax(np.maximum(flat, 0) @ w2 + b2)
    go = p1.max(1) < 0.3
    want = np.where(go, p2.argmax(1), p1.argmax(1))
    np.testing.assert_array_equal(res.class_ids, want)
    assert res.stage_counts == [100, int(go.sum())]


def test_invalid_configurations(two_models):
    r = prepare(two_models[0])
    with pytest.raises(ConfigError, match="at least one stage"):
        Cascade([])
    with pytest.raises(ConfigError, match="combine rule"):
        Cascade([Stage("a", r)], combine="vote")
    with pytest.raises(ConfigError, match="no output 'scores'"):
        Stage("a", r, logits="scores")
    with pytest.raises(ConfigError, match="threshold"):
        Stage("a", r, threshold=-0.1)
    with pytest.raises(ConfigError, match="first stage must take the image"):
        Cascade([Stage("a", r, input="features")])
    with pytest.raises(ConfigError, match="takes input 'features', which stage 1 .* does not output"):
        Cascade([Stage("a", r), Stage("b", prepare(two_models[1]), input="features")])


def test_empty_batch(two_models):
    cascade = Cascade([Stage("a", prepare(two_models[0]))])
    res = cascade.run_batch(np.zeros((0, 1, 28, 28), np.float32))
    assert len(res) == 0 and cascade.counters.inputs == 0


def test_graph_head_outputs_are_used_and_agree_with_numpy(tmp_path, rng):
    """Stages exported with a confidence head are read from the graph's probs/confidence outputs."""
    import onnx

    from edgeconf.cascade import graph_head
    from edgeconf.export.head import add_confidence_head

    ws = [_weights(30), _weights(31)]
    paths = []
    for k, (w, b) in enumerate(ws):
        headed = add_confidence_head(linear_classifier(w, b), score="margin", threshold=0.3, temperature=1.7)
        paths.append(str(tmp_path / ("h%d.onnx" % k)))
        onnx.save(headed, paths[-1])
    runners = [prepare(p) for p in paths]
    assert graph_head(runners[0]) == ("margin", 1.7)
    stages = [Stage("a", runners[0], "margin", 0.3, 1.7, head=graph_head(runners[0])),
              Stage("b", runners[1], "margin", 0.0, 1.7, head=graph_head(runners[1]))]
    cascade = Cascade(stages)
    assert stages[0].needed_outputs(None) == ["probs", "confidence"]
    x = rng.normal(size=(200, 1, 28, 28)).astype(np.float32)
    got = cascade.run_batch(x)
    want_class, want_stage, want_conf = _reference(x, ws, [0.3, 0.0], [1.7, 1.7], ["margin", "margin"], "last")
    near = np.abs(want_conf - 0.3) < 1e-5  # float32 graph vs float64 numpy may differ at the threshold itself
    np.testing.assert_array_equal(got.class_ids[~near], want_class[~near])
    np.testing.assert_array_equal(got.stage[~near], want_stage[~near])
    np.testing.assert_allclose(got.confidence, want_conf, atol=1e-5)
    # a changed score or temperature no longer matches the graph's head: computed in numpy instead
    fp = cascade.fingerprint()
    for st in stages:
        st.temperature = 0.9
    assert not stages[0].graph_head_active() and stages[0].needed_outputs(None) == ["logits"]
    assert cascade.fingerprint() != fp
    want_class, want_stage, want_conf = _reference(x, ws, [0.3, 0.0], [0.9, 0.9], ["margin", "margin"], "last")
    got = cascade.run_batch(x)
    np.testing.assert_array_equal(got.class_ids, want_class)
    np.testing.assert_allclose(got.confidence, want_conf, atol=1e-5)


def test_classify_one_by_one_equals_the_batch_and_keeps_its_answers(tmp_path, rng, two_models):
    from edgeconf.preprocess import Preprocessing

    stages = [Stage("a", prepare(two_models[0]), "margin", 0.4), Stage("b", prepare(two_models[1]), "margin", 0.0)]
    cascade = Cascade(stages, preprocessing=Preprocessing(), labels=[str(i) for i in range(10)])
    images = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(40)]
    first_conf = stages[0].answer(stages[0].runner.run(Preprocessing().batch(images)))[1]
    cascade.set_threshold(0, float(np.median(first_conf)))  # about half the inputs go on to stage b
    batch = cascade.classify_batch(images)
    singles = [cascade.classify(img) for img in images]
    assert {r.stage for r in singles} == {0, 1}  # both paths through the cascade were taken
    for one, many in zip(singles, batch):
        assert (one.class_id, one.stage, one.stages_run, one.label) == (many.class_id, many.stage, many.stages_run, many.label)
        assert one.confidence == pytest.approx(many.confidence, abs=1e-6)
        np.testing.assert_allclose(one.probs, many.probs, atol=1e-6)
    # answers own their probabilities: later inputs (which reuse the bound buffers) never change them
    first = singles[0].probs.copy()
    for img in images:
        cascade.classify(img)
    np.testing.assert_array_equal(singles[0].probs, first)
    # an image the fast path cannot take (RGB, other size) still gets the same answer as its grey original
    rgb = np.dstack([images[3]] * 3)
    assert cascade.classify(rgb).class_id == singles[3].class_id


def test_preprocessing_written_in_place_equals_the_call(rng):
    from edgeconf.preprocess import Preprocessing

    pre = Preprocessing(mean=(0.5,), std=(0.25,))
    img = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    out = np.empty((1,) + pre.input_shape, np.float32)
    assert pre.write(img, out)
    np.testing.assert_array_equal(out[0], pre(img))
    assert not pre.write(img, np.empty((1, 1, 28, 27), np.float32))  # wrong shape: nothing written
    rgb_pre = Preprocessing(size=(16, 16), channels=3, mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 3.0), layout="NHWC")
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    out3 = np.empty((1,) + rgb_pre.input_shape, np.float32)
    assert rgb_pre.write(rgb, out3)
    np.testing.assert_array_equal(out3[0], rgb_pre(rgb))


def test_a_writer_into_a_bound_buffer_equals_the_call(rng):
    from edgeconf.preprocess import Preprocessing

    for pre in (Preprocessing(), Preprocessing(mean=(0.5,), std=(0.25,))):
        out = np.zeros((1,) + pre.input_shape, np.float32)
        write = pre.writer(out)
        for img in (rng.integers(0, 256, (28, 28), dtype=np.uint8), rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)):
            write(img)
            np.testing.assert_array_equal(out[0], pre(img))
    assert Preprocessing().writer(np.zeros((2, 1, 28, 28), np.float32)) is None


def test_items_equal_item_for_every_field(tmp_path, rng, two_models):
    from edgeconf.cascade import BatchResult

    n = 5
    batch = BatchResult(np.array([0, 3, -1, 2, 1]), rng.random(n), np.array([0, 1, 0, 1, 1]), np.array([1, 2, 1, 2, 2]),
                        rng.random((n, 10)), [0.5, 0.2], [5, 3], [(0.0, 0.5), (0.5, 0.7)], {3: "timeout"},
                        np.array([False, False, True, False, False]), np.array([np.nan, 1.5, 9.0, np.nan, 0.1]))
    labels = [str(i) for i in range(10)]
    for i, got in enumerate(batch.items(labels)):
        want = batch.item(i, labels)
        assert (got.class_id, got.stage, got.stages_run, got.label, got.unknown, got.ood_score, got.remote_failure) == \
            (want.class_id, want.stage, want.stages_run, want.label, want.unknown, want.ood_score, want.remote_failure)
        assert got.confidence == want.confidence and got.stage_seconds == pytest.approx(want.stage_seconds)
        np.testing.assert_array_equal(got.probs, want.probs)


def test_batch_items_keep_unknown_answers(tmp_path, rng, two_models):
    """classify_batch (BatchResult.items) reports an unknown answer as unknown, label "unknown", with its score."""
    from edgeconf.cascade import UNKNOWN, OodRule
    from edgeconf.preprocess import Preprocessing

    stages = [Stage("a", prepare(two_models[0]), "margin", 0.5, ood=OodRule(float("inf"), "energy", None)),
              Stage("b", prepare(two_models[1]), "margin", 0.0)]
    cascade = Cascade(stages, labels=["c%d" % i for i in range(10)], preprocessing=Preprocessing())
    images = list(rng.integers(0, 256, (40, 28, 28), dtype=np.uint8))
    cascade.set_ood_threshold(0, float(np.median([r.ood_score for r in cascade.classify_batch(images)])))
    batch = cascade.classify_batch(images)
    singles = [cascade.classify(im) for im in images]
    assert any(r.unknown for r in batch) and not all(r.unknown for r in batch)
    for b, s in zip(batch, singles):
        assert (b.class_id, b.unknown, b.label) == (s.class_id, s.unknown, s.label)
        assert (b.label == "unknown") == b.unknown == (b.class_id == UNKNOWN)
        assert b.ood_score == pytest.approx(s.ood_score, rel=1e-6)


def _same_as_objects(answers) -> None:
    """Every array of ``answers`` holds what its per-input objects say."""
    objs = list(answers)
    assert len(answers) == len(objs)
    np.testing.assert_array_equal(answers.class_ids, [r.class_id for r in objs])
    np.testing.assert_array_equal(answers.confidence, [r.confidence for r in objs])
    np.testing.assert_array_equal(answers.stage, [r.stage for r in objs])
    np.testing.assert_array_equal(answers.stages_run, [r.stages_run for r in objs])
    np.testing.assert_array_equal(answers.unknown, [r.unknown for r in objs])
    np.testing.assert_array_equal(answers.memo_hit, [r.memo_hit for r in objs])
    np.testing.assert_array_equal(answers.probs, np.stack([r.probs for r in objs]))


def test_classify_batch_answers_are_arrays_and_objects(rng, two_models):
    """classify_batch's answers: arrays equal to the per-input objects, which are built once, when first read;
    they behave as the list of results callers iterate, index, slice and extend lists with."""
    from edgeconf.cascade import Answers
    from edgeconf.memo import MemoCache
    from edgeconf.preprocess import Preprocessing

    stages = [Stage("a", prepare(two_models[0]), "margin", 0.4), Stage("b", prepare(two_models[1]), "margin", 0.0)]
    cascade = Cascade(stages, preprocessing=Preprocessing(), labels=[str(i) for i in range(10)])
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    first_conf = stages[0].answer(stages[0].runner.run(Preprocessing().batch(images)))[1]
    cascade.set_threshold(0, float(np.median(first_conf)))  # both stages answer some
    answers = cascade.classify_batch(images)
    assert isinstance(answers, Answers) and set(answers.stage.tolist()) == {0, 1}
    classes = answers.class_ids.copy()
    singles = [cascade.classify(im) for im in images]
    np.testing.assert_array_equal(classes, [r.class_id for r in singles])
    _same_as_objects(answers)
    assert answers[3] is answers[3] and answers[-1] is list(answers)[-1]  # built once, then kept
    assert [r.class_id for r in answers[2:5]] == classes[2:5].tolist()
    held = [singles[0]]
    held += answers
    assert len(held) == 41 and held[1].label == str(classes[0])
    assert answers + held[:1] == list(answers) + held[:1] and held[:1] + answers == held and answers == list(answers)
    # the memo path, a single image and no image answer the same way
    cascade.memo = MemoCache()
    cold, warm = cascade.classify_batch(list(images)), cascade.classify_batch(list(images))
    np.testing.assert_array_equal(cold.class_ids, classes)
    np.testing.assert_array_equal(warm.class_ids, classes)
    assert warm.memo_hit.all() and not cold.memo_hit.any()
    _same_as_objects(warm)
    one = cascade.classify_batch(images[:1])
    assert len(one) == 1 and one.class_ids.tolist() == [classes[0]]
    none = cascade.classify_batch([])
    assert len(none) == 0 and list(none) == [] and none.class_ids.shape == (0,)


@pytest.mark.parametrize("bad", ["float32", "channels_first", "two_channels", "int8"])
def test_the_memo_never_answers_an_image_the_cascade_refuses(rng, two_models, bad):
    """A near-duplicate key is blind to dtype and layout (a black float32 image has a black uint8 image's dHash):
    the raw-image check comes before the lookup, on both paths, whatever the memo holds."""
    from edgeconf.errors import InputValidationError
    from edgeconf.memo import MemoCache
    from edgeconf.preprocess import Preprocessing

    stages = [Stage("a", prepare(two_models[0]), "margin", 0.4), Stage("b", prepare(two_models[1]), "margin", 0.0)]
    cascade = Cascade(stages, preprocessing=Preprocessing(), labels=[str(i) for i in range(10)])
    cascade.memo = MemoCache(sampling=None)
    black = np.zeros((28, 28, 3), np.uint8)
    assert not cascade.classify(black).memo_hit and cascade.classify(black).memo_hit  # stored, then found
    image = {"float32": black.astype(np.float32), "channels_first": np.zeros((3, 28, 28), np.uint8),
             "two_channels": np.zeros((28, 28, 2), np.uint8), "int8": black.astype(np.int8)}[bad]
    with pytest.raises(InputValidationError) as err:
        cascade.classify(image)
    assert "the image has" in str(err.value)
    with pytest.raises(InputValidationError) as err:
        cascade.classify_batch([black, image])
    assert "image 1 has" in str(err.value)
    # a grey image given as H×W×1 is a raw image: answered through the memo
    assert cascade.classify(black[:, :, :1]).class_id == cascade.classify(black[:, :, 0]).class_id


# -- the Python API's argument checks and contracts (QA pass f25) ---------------------------------------------
def _fashion(n):
    from edgeconf.datasets import load_fashion_mnist

    x, _ = load_fashion_mnist("test")
    return x[:n]


def _shipped(name="bundle", **kw):
    from edgeconf import data_path
    from edgeconf.bundle import load_bundle

    return load_bundle(data_path("zoo", name), **kw)


def test_results_and_answers_compare_by_value():
    x = _fashion(4)
    with _shipped(memo=False) as c:
        a, b = c.classify(x[0]), c.classify(x[0])
        assert a == b and not a != b  # the same answer (timings differ, and are not compared)
        assert a != c.classify(x[1])
        assert a != b.__class__(**dict(vars(b), probs=b.probs + 1e-3))  # probabilities compared by value
        assert a != "not a result"
        with pytest.raises(TypeError):
            hash(a)
        one, two = c.classify_batch(list(x)), c.classify_batch(list(x))
        assert one == two and one == list(two) and not one != two
        assert one != c.classify_batch(list(x[::-1]))
    with _shipped() as c:  # a memo hit says so: another result than the computed one, still comparable
        first, again = c.classify(x[2]), c.classify(x[2])
        assert again.memo_hit and first != again and first.class_id == again.class_id


def test_a_closed_cascade_refuses_every_call():
    from edgeconf.errors import ConfigError

    x = _fashion(3)
    with _shipped() as c:
        c.classify(x[1])  # bound calls made and the answer remembered: neither may answer after close
        c.classify_batch(list(x))
        ready = c.preprocessing(x[0])
    for call in (lambda: c.classify(x[1]), lambda: c.classify(x[0]), lambda: c.classify_batch(list(x)),
                 lambda: c.run(ready), lambda: c.run_batch(ready[None])):
        with pytest.raises(ConfigError, match="this cascade was closed.*load the bundle again"):
            call()
    c.close()  # twice is fine
    assert c.stages[0].runner.inputs[0].name  # what the stages describe stays readable


def test_set_threshold_names_the_valid_stages(two_models):
    c = Cascade([Stage("a", prepare(two_models[0])), Stage("b", prepare(two_models[1]))])
    for stage in (7, 2, -1, "c", None, 1.0, True):
        with pytest.raises(ConfigError, match=r"counted from 0 here \(0\.\.1.*\(a, b\)"):
            c.set_threshold(stage, 0.5)
    for value in (None, "abc", "0.5", 1.5, -0.1, float("nan"), float("inf"), True):
        with pytest.raises(ConfigError, match="stage a: threshold must be in \\[0, 1\\]"):
            c.set_threshold(0, value)
    assert c.thresholds == [0.5, 0.5]
    c.set_threshold("b", 0.25)
    c.set_threshold(np.int64(0), np.float32(0.75))
    assert c.thresholds == [0.75, 0.25] and all(type(t) is float for t in c.thresholds)


def test_set_ood_threshold_checks_stage_threshold_and_band():
    c = _shipped("live", memo=False)
    rule = c.stages[0].ood
    assert rule is not None and rule.escalate is not None
    with pytest.raises(ConfigError, match=r"no stage 9 .*counted from 0 here \(0\.\.2"):
        c.set_ood_threshold(9, 1.0)
    with pytest.raises(ConfigError, match="OOD threshold must be a number"):
        c.set_ood_threshold(0, "a")
    with pytest.raises(ConfigError, match="OOD threshold must be a number"):
        c.set_ood_threshold(0, float("nan"))
    with pytest.raises(ConfigError, match="escalate must be a number"):
        c.set_ood_threshold(0, 1.0, escalate="x")
    with pytest.raises(ConfigError, match="no higher than"):
        c.set_ood_threshold(0, 1.0, escalate=2.0)
    with pytest.raises(ConfigError, match="stage stage3 has no OOD rule"):
        c.set_ood_threshold("stage3", 1.0)
    assert c.stages[0].ood == rule  # nothing changed by a refused call
    c.set_ood_threshold("stage1", None)
    assert c.stages[0].ood.threshold == float("inf")


def test_wrong_argument_types_get_typed_errors(two_models):
    from edgeconf.errors import InputValidationError
    from edgeconf.preprocess import Preprocessing

    stages = [Stage("a", prepare(two_models[0]), "margin", 0.4), Stage("b", prepare(two_models[1]))]
    c = Cascade(stages, preprocessing=Preprocessing(), labels=[str(i) for i in range(10)])
    images = list(_fashion(5))
    assert c.classify_batch(img for img in images) == c.classify_batch(images)  # any iterable is read
    assert c.classify_batch(iter(tuple(images))).class_ids.tolist() == c.classify_batch(images).class_ids.tolist()
    for bad in (None, 3, "abc", {"a": images[0]}):
        with pytest.raises(InputValidationError, match="classify_batch needs a sequence of raw images"):
            c.classify_batch(bad)
    for bad in (None, "abc", [[0.0] * 28] * 28):
        with pytest.raises(InputValidationError, match="needs a numpy array, got"):
            c.run(bad)
        with pytest.raises(InputValidationError, match="needs a numpy array, got"):
            c.run_batch(bad)


def test_an_ood_score_survives_a_memo_hit_from_an_earlier_call():
    x = _fashion(50)
    noise = [np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8) for i in range(4)]
    with _shipped("live", memo={"adaptive": False}) as c:  # every input looked up
        batch = c.classify_batch(list(x) + noise)
        assert not any(r.memo_hit for r in batch) and batch[-1].ood_score is not None
        again = c.classify(noise[0])
        assert again.memo_hit and again.ood_score == batch[50].ood_score
        assert again.to_json()["ood"] == batch[50].to_json()["ood"] and again.unknown == batch[50].unknown
        hits = c.classify_batch(noise + noise[:1])  # hits from the earlier call, and a repeat inside this one
        assert all(r.memo_hit for r in hits)
        assert [r.ood_score for r in hits] == [r.ood_score for r in batch[50:]] + [batch[50].ood_score]
    with _shipped() as c:  # a bundle without OOD rules: no score, before or after a hit
        c.classify(x[0])
        assert c.classify(x[0]).memo_hit and c.classify(x[0]).ood_score is None


def test_stage_fields_and_combine_are_checked_when_set(two_models):
    stages = [Stage("a", prepare(two_models[0]), "margin", 0.4), Stage("b", prepare(two_models[1]))]
    c = Cascade(stages)
    fp = c.fingerprint()
    for value in (5, -0.5, float("nan"), "0.5", None):
        with pytest.raises(ConfigError, match="stage a: threshold must be in"):
            c.stages[0].threshold = value
    for value in (0, -1.0, float("inf"), "1"):
        with pytest.raises(ConfigError, match="stage a: temperature must be a finite number > 0"):
            c.stages[0].temperature = value
    with pytest.raises(ConfigError, match="stage b: unknown score 'bogus'"):
        c.stages[1].score = "bogus"
    with pytest.raises(ConfigError, match="unknown combine rule 'bogus'"):
        c.combine = "bogus"
    assert (c.stages[0].threshold, c.stages[0].temperature, c.stages[1].score, c.combine) == (0.4, 1.0, "margin", "last")
    assert c.fingerprint() == fp
    with pytest.raises(ConfigError, match="stage z: threshold must be in"):
        Stage("z", prepare(two_models[0]), threshold=2)
    c.stages[1].threshold = 1  # the last stage's threshold has no effect, but is checked the same way
    c.combine = "mean"
    assert c.fingerprint() != fp and c.stages[1].threshold == 1.0


# -- stages whose outputs are not finite (an fp16/INT8 overflow) -------------------------------------------------
def _overflowing(seed: int, feature: int):
    """A real linear classifier whose logits overflow to inf (softmax: NaN) when input ``feature`` is 1e3."""
    w, b = _weights(seed)
    w = w.copy()
    w[feature, 0] = 1e36
    return linear_classifier(w, b)


@pytest.mark.parametrize("combine", ["last", "best", "mean"])
def test_a_nan_confidence_goes_on_and_the_last_one_is_unknown_in_every_path(tmp_path, rng, combine, caplog):
    import json

    from edgeconf.cascade import UNKNOWN

    paths = [save(_overflowing(20 + k, k), tmp_path / ("s%d.onnx" % k)) for k in range(3)]
    stages = [Stage("s%d" % k, prepare(p), "margin", 0.0) for k, p in enumerate(paths)]  # finite: exits at once
    cascade = Cascade(stages, combine=combine)
    x = rng.normal(size=(8, 1, 28, 28)).astype(np.float32)
    flat = x.reshape(8, -1)
    flat[2:, 0] = flat[4:, 1] = flat[6:, 2] = 1e3  # rows 2+: stage 1 broken; 4+: stage 2 too; 6+: every stage
    with caplog.at_level("WARNING", logger="edgeconf.cascade"):
        batch = cascade.run_batch(x)
    singles = [cascade.run(row) for row in x]
    if combine == "mean":  # the mean with a broken answer is broken: on to the last stage, then unknown
        want_stage, want_unknown = [0, 0, 2, 2, 2, 2, 2, 2], [False] * 2 + [True] * 6
    else:
        want_stage, want_unknown = [0, 0, 1, 1, 2, 2, 2, 2], [False] * 6 + [True] * 2
    assert batch.stage.tolist() == want_stage and batch.unknown.tolist() == want_unknown
    assert [r.stage for r in singles] == want_stage and [r.unknown for r in singles] == want_unknown
    assert [r.class_id for r in singles] == batch.class_ids.tolist()
    assert all((cid == UNKNOWN) == unk for cid, unk in zip(batch.class_ids.tolist(), want_unknown))
    assert np.isfinite(batch.confidence[~batch.unknown]).all()
    for r in batch.items() + singles:
        text = json.dumps(r.to_json(), allow_nan=False)  # no NaN in JSON: null for a broken confidence
        assert (json.loads(text)["confidence"] is None) == r.unknown
    assert "stage 3 (s2) produced non-finite outputs" in caplog.text
