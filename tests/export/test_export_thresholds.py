"""Trade-off curve and policies: the vectorised sweep equals a direct simulation; policies pick right."""
from __future__ import annotations

import numpy as np
import pytest

from edgeconf.confidence import score as np_score, softmax
from edgeconf.errors import ConfigError
from edgeconf.export.errors import CalibrationError, PolicyError
from edgeconf.export.thresholds import choose_combine, evaluate, parse_policy, select, tradeoff_curve


def _stages(k=2, n=800, seed=0, c=6):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    out = []
    for s in range(k):
        z = rng.normal(0, 1.6 - 0.4 * s, (n, c))
        z[np.arange(n), y] += 1.5
        out.append(z)
    return out, y


def _direct(logits, y, lam, costs, score="margin", temps=(1.0, 1.0), combine="last"):
    p1, p2 = softmax(logits[0], temps[0]), softmax(logits[1], temps[1])
    c1, c2 = np_score(score, p1), np_score(score, p2)
    if combine == "mean":  # escalated inputs are answered by the average, which also decides later exits
        m = (p1 + p2) / 2
        p2, c2 = m, np_score(score, m)
    esc = c1 < lam
    if combine in ("last", "mean"):
        pred = np.where(esc, p2.argmax(1), p1.argmax(1))
    else:
        pred = np.where(esc & (c2 > c1), p2.argmax(1), p1.argmax(1))
    return (pred == y).mean(), costs[0] + esc.mean() * costs[1], esc.mean()


@pytest.mark.parametrize("combine", ["last", "best", "mean"])
@pytest.mark.parametrize("score", ["maxp", "margin", "entropy"])
def test_two_stage_curve_equals_direct_computation(score, combine):
    logits, y = _stages()
    costs = [1.0, 6.0]
    curve = tradeoff_curve(logits, y, costs, score, [1.3, 0.8], combine, n=2000)
    assert len(curve) == 2000 and curve.thresholds.shape == (2000, 1)
    assert curve.lambdas[0] == 0.0 and curve.lambdas[-1] == 1.0
    for i in (0, 1, 333, 1000, 1999):
        acc, cost, esc = _direct(logits, y, curve.lambdas[i], costs, score, (1.3, 0.8), combine)
        assert curve.accuracy[i] == pytest.approx(acc)
        assert curve.cost[i] == pytest.approx(cost)
        assert curve.escalation[i] == pytest.approx(esc)
        ev = evaluate(logits, y, [curve.lambdas[i]], costs, score, [1.3, 0.8], combine)
        assert ev.accuracy == pytest.approx(acc) and ev.cost == pytest.approx(cost)


def test_policies():
    logits, y = _stages()
    curve = tradeoff_curve(logits, y, [1.0, 6.0])
    best = select(curve, "max-accuracy")
    assert best.accuracy == pytest.approx(curve.accuracy.max())
    assert best.cost == pytest.approx(curve.cost[curve.accuracy == curve.accuracy.max()].min())
    target = float(np.quantile(curve.accuracy, 0.5))
    m = select(curve, "match:%r" % target)
    assert m.accuracy >= target
    assert m.cost == pytest.approx(curve.cost[curve.accuracy >= target].min())
    # the same accuracy as a percentage
    pct = select(curve, "match:%r" % (target * 100))
    assert pct.thresholds == m.thresholds
    assert select(curve, "match:%r%%" % (target * 100)).thresholds == m.thresholds
    b = select(curve, "budget:3.5")
    assert b.cost <= 3.5
    assert b.accuracy == pytest.approx(curve.accuracy[curve.cost <= 3.5].max())
    assert b.escalation == pytest.approx((b.cost - 1.0) / 6.0)


def test_policy_errors():
    logits, y = _stages()
    curve = tradeoff_curve(logits, y, [1.0, 6.0])
    with pytest.raises(PolicyError, match="no threshold reaches accuracy 0.9990.*best on this data"):
        select(curve, "match:0.999")
    with pytest.raises(PolicyError, match="cheapest point costs 1"):
        select(curve, "budget:0.5")
    for bad in ("fastest", "match:", "match:abc", "budget:-1", "match:150"):
        with pytest.raises(PolicyError):
            parse_policy(bad)
    assert parse_policy("match:1") == ("match", 1.0)  # 1 means 100 %, a fraction


def test_three_stages_per_exit_thresholds():
    logits, y = _stages(k=3)
    costs = [1.0, 3.0, 9.0]
    curve = tradeoff_curve(logits, y, costs, n=300)
    assert curve.thresholds.shape == (600, 2)
    assert set(curve.family) == {"shared", "geometric"}
    np.testing.assert_allclose(curve.cost, curve.reach @ np.array(costs))
    for policy in ("max-accuracy", "budget:4", "match:0.5"):
        op = select(curve, policy)
        again = evaluate(logits, y, op.thresholds, costs)
        assert again.accuracy == pytest.approx(op.accuracy) and again.cost == pytest.approx(op.cost)
    # the geometric family's extreme ratios: (almost) everything leaves at exit 1, or reaches the last stage
    geo = curve.family == "geometric"
    assert curve.reach[geo, 2].min() < 0.05 and curve.reach[geo, 2].max() > 0.95
    assert select(curve, "max-accuracy").accuracy >= max((l.argmax(1) == y).mean() for l in logits) - 0.02


def test_input_checks():
    logits, y = _stages()
    with pytest.raises(ConfigError, match="costs has 1 entries"):
        tradeoff_curve(logits, y, [1.0])
    with pytest.raises(ConfigError, match="at least 2 stages"):
        tradeoff_curve(logits[:1], y, [1.0])
    with pytest.raises(ConfigError, match="classes"):
        tradeoff_curve([logits[0], logits[1][:, :4]], np.minimum(y, 3), [1, 2])
    with pytest.raises(CalibrationError, match="labels must have shape"):
        tradeoff_curve(logits, y[:-1], [1, 2])


def test_three_stage_mean_is_simulated_exactly():
    """evaluate(..., "mean") equals a direct per-input run of the mean rule (answer and exits on the average)."""
    logits, y = _stages(k=3, n=500, seed=4)
    temps, thr = [1.1, 0.9, 1.0], [0.3, 0.25]
    probs = [softmax(z, t) for z, t in zip(logits, temps)]
    pred, reached = np.zeros(500, int), np.zeros(500, int)
    for i in range(500):
        total = 0
        for k in range(3):
            total = total + probs[k][i]
            m = total / (k + 1)
            reached[i] = k + 1
            if k == 2 or np_score("margin", m[None])[0] >= thr[k]:
                pred[i] = m.argmax()
                break
    op = evaluate(logits, y, thr, [1.0, 2.0, 4.0], "margin", temps, "mean")
    assert op.accuracy == pytest.approx((pred == y).mean())
    assert op.reach == pytest.approx([1.0, (reached > 1).mean(), (reached > 2).mean()])


def test_choose_combine():
    logits, y = _stages(k=2, n=1500, seed=2)
    costs = [1.0, 5.0]
    rule, curve, op, found = choose_combine(logits, y, costs, "margin", [1.0, 1.0], "max-accuracy", n=400)
    assert set(found) == {"last", "best", "mean"} and curve.combine == rule and found[rule] == op
    assert op.accuracy == max(p.accuracy for p in found.values())
    # match: the cheapest point that reaches the accuracy, whatever the rule
    target = min(p.accuracy for p in found.values()) - 0.01
    rule_m, _, op_m, found_m = choose_combine(logits, y, costs, "margin", None, "match:%f" % target, n=400)
    assert op_m.cost == min(p.cost for p in found_m.values() if p is not None)
    # identical stages: every rule gives the same points, and the tie keeps "last"
    same = [logits[0], logits[0].copy()]
    assert choose_combine(same, y, costs, "margin", None, "max-accuracy", n=200)[0] == "last"
    with pytest.raises(PolicyError, match="no threshold reaches accuracy"):
        choose_combine(logits, y, costs, "margin", None, "match:0.9999", n=200)


def _three_stage_logits(n: int = 400, classes: int = 4, seed: int = 3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    logits = []
    for strength in (1.0, 2.0, 4.0):  # ever stronger stages
        z = rng.normal(size=(n, classes))
        z[np.arange(n), y] += strength * rng.random(n) * 2
        logits.append(z.astype(np.float32))
    return logits, y


def test_grid_three_stage_is_the_cheapest_grid_point_that_reaches_the_target():
    from edgeconf.export.thresholds import evaluate, grid_three_stage

    logits, y = _three_stage_logits()
    temps, costs = [1.0, 1.2, 0.9], [1.0, 4.0, 20.0]
    n = 21
    grid = np.linspace(0.0, 1.0, n)
    points = {(a, b): evaluate(logits, y, [a, b], costs, temperatures=temps) for a in grid for b in grid}
    target = float(np.median([p.accuracy for p in points.values()]))
    thr, reached = grid_three_stage(logits, y, temps, costs, target, n=n)
    assert reached
    got = evaluate(logits, y, thr, costs, temperatures=temps)
    assert got.accuracy >= target - 1e-12
    cheapest = min(p.cost for p in points.values() if p.accuracy >= target - 1e-12)
    assert got.cost == pytest.approx(cheapest)


def test_grid_three_stage_falls_back_to_the_most_accurate_point_when_the_target_is_out_of_reach():
    from edgeconf.export.thresholds import evaluate, grid_three_stage

    logits, y = _three_stage_logits()
    temps, costs = [1.0, 1.0, 1.0], [1.0, 2.0, 3.0]
    n = 11
    thr, reached = grid_three_stage(logits, y, temps, costs, 1.01, n=n)
    assert not reached
    best = max(evaluate(logits, y, [a, b], costs, temperatures=temps).accuracy
               for a in np.linspace(0, 1, n) for b in np.linspace(0, 1, n))
    assert evaluate(logits, y, thr, costs, temperatures=temps).accuracy == pytest.approx(best)
    with pytest.raises(ConfigError):
        grid_three_stage(logits[:2], y, temps[:2], costs[:2], 0.5)
