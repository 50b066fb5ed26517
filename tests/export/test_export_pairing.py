"""Complementarity by hand, and pair ranking chosen on calibration data."""
from __future__ import annotations

import numpy as np
import pytest

from edgeconf.errors import ConfigError
from edgeconf.export.pairing import complementarity_matrix, policy_shortfall, rank_pairs, recommended_pair


def test_matrix_by_hand():
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    a = y.copy()
    a[[0, 1, 2]] = 9  # wrong on 0,1,2   (3 errors)
    b = y.copy()
    b[[2, 3, 4, 5, 6]] = 9  # wrong on 2..6 (5 errors)
    m = complementarity_matrix({"a": a, "b": b}, y)
    # exactly one right: 0,1 (a wrong, b right) and 3,4,5,6 (b wrong, a right) = 6 of 10
    assert m.exactly_one[0, 1] == pytest.approx(0.6) == m.exactly_one[1, 0]
    assert m.paper[0, 1] == pytest.approx(0.6 - abs(3 - 5) / 10)
    assert m.exactly_one[0, 0] == 0.0
    np.testing.assert_allclose(m.accuracy, [0.7, 0.5])
    with pytest.raises(ConfigError, match="at least 2 models"):
        complementarity_matrix({"a": a}, y)
    with pytest.raises(ConfigError, match="shape"):
        complementarity_matrix({"a": a, "b": b[:5]}, y)


def _pool(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    logits = {}
    for name, noise in (("small", 1.6), ("mid", 1.2), ("big", 0.7)):
        z = rng.normal(0, noise, (n, 5))
        z[np.arange(n), y] += 1.5
        logits[name] = z
    return logits, y


def test_rank_pairs_uses_calibration_and_reports_test():
    cal, yc = _pool(600, 1)
    test, yt = _pool(600, 2)
    costs = {"small": 1.0, "mid": 2.0, "big": 8.0}
    pairs = rank_pairs(cal, yc, costs, "max-accuracy", test=(test, yt))
    assert len(pairs) == 6 and all(p.evaluated_on == "test" for p in pairs)
    cal_acc = [p.calib_accuracy for p in pairs]
    assert cal_acc == sorted(cal_acc, reverse=True)  # ranked on calibration, not on test
    budget = rank_pairs(cal, yc, costs, "budget:3", ordered=False)
    assert len(budget) == 3
    assert all(costs[p.first] <= costs[p.second] for p in budget)
    feasible = [p for p in budget if p.feasible]
    assert feasible and all(p.calib_cost <= 3 + 1e-9 for p in feasible)
    assert budget[0].feasible
    match = rank_pairs(cal, yc, costs, "match:0.5")
    ok = [p for p in match if p.feasible]
    assert [p.calib_cost for p in ok] == sorted(p.calib_cost for p in ok)


@pytest.mark.parametrize("policy", ["budget:0.5", "match:0.999"])
def test_no_pair_is_recommended_when_none_meets_the_policy(policy):
    """As ``cascade`` refuses a policy no threshold meets, ``pair`` recommends none (not the most expensive pair at
    its max-accuracy threshold) and says how near the nearest pair comes."""
    cal, yc = _pool(600, 1)
    costs = {"small": 1.0, "mid": 2.0, "big": 8.0}
    pairs = rank_pairs(cal, yc, costs, policy)
    assert not any(p.feasible for p in pairs) and recommended_pair(pairs) is None
    if policy.startswith("budget"):  # each pair's cheapest point: its first model alone
        assert sorted(p.reachable for p in pairs) == sorted(costs[p.first] for p in pairs)
        assert policy_shortfall(pairs, policy, "ms") == ("no pair meets budget:0.5 on the calibration data (the "
                                                         "cheapest point of any pair costs 1 ms)")
    else:
        best = max(p.reachable for p in pairs)
        assert all(p.reachable >= p.calib_accuracy - 1e-12 for p in pairs) and best < 0.999
        assert policy_shortfall(pairs, policy) == ("no pair meets match:0.999 on the calibration data (the most "
                                                   "accurate point of any pair reaches %.4f)" % best)
    met = rank_pairs(cal, yc, costs, "budget:3")
    assert recommended_pair(met) is met[0] and met[0].feasible and met[0].reachable is None
    assert policy_shortfall(met, "budget:3") is None
