"""bench's cost-model target counts every later stage of a cascade, not only stage 2."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgeconf.bench.benchmark import ConfigResult, later_stage_cost, targets
from edgeconf.bench.report import target_lines


def _config(name: str, cpu_s: float, calls, model_s) -> ConfigResult:
    esc = calls[1] / calls[0] if len(calls) > 1 else None
    return ConfigResult(name=name, accuracy=0.9, cpu_s=cpu_s, wall_s=cpu_s, energy_j=None, latency_ms={},
                        stage_calls=list(calls), stage_model_s=list(model_s), escalation_rate=esc,
                        memo_hit_rate=None, memo_false_hit_rate=None, inputs=calls[0])


def test_later_stage_cost_weights_each_stage_by_the_share_that_reaches_it():
    # 1000 inputs; stage 1 20 µs a call, stage 2 100 µs on 200 inputs, stage 3 400 µs on 30
    later = later_stage_cost([1000, 200, 30], [0.020, 0.020, 0.012])
    assert later["reach"] == pytest.approx([0.2, 0.03])
    assert later["ratios"] == pytest.approx([5.0, 20.0])
    assert later["cost"] == pytest.approx(0.2 * 5.0 + 0.03 * 20.0)


def test_two_stages_keep_the_escalation_times_stage_cost_form():
    later = later_stage_cost([1000, 250], [0.020, 0.025])
    assert later["cost"] == pytest.approx(0.25 * 5.0)


def test_a_three_stage_cascade_is_judged_with_its_third_stage():
    first = _config("first", 0.024, [1000], [0.020])
    # what the three stages cost, with 5 % on top for the path around the calls: inside the model's bound
    dual = _config("dual", 0.024 * (1 + 0.2 * 5 + 0.03 * 20) * 1.04, [1000, 200, 30], [0.020, 0.020, 0.012])
    out = targets({"first": first, "dual": dual}, {}, 0.0, {"cost-model": 1.05})["dual_cost_model"]
    assert out["met"] and out["later_cost"] == pytest.approx(1.6)
    assert out["bound_cpu_s"] == pytest.approx(0.024 * 2.6 * 1.05)
    # stage 2 alone would have called it over budget
    assert dual.cpu_s > 0.024 * (1 + 0.2 * 5) * 1.05
    run = SimpleNamespace(targets={"dual_cost_model": out})
    assert target_lines(run) == ["dual cost 0.0649 s vs first × (1 + 0.200 × 5.00 + 0.030 × 20.00) × 1.05 = 0.0655 s: MET"]


def test_a_cascade_over_its_model_is_not_met():
    first = _config("first", 0.024, [1000], [0.020])
    dual = _config("dual", 0.024 * 2.6 * 1.2, [1000, 200, 30], [0.020, 0.020, 0.012])
    out = targets({"first": first, "dual": dual}, {}, 0.0, {"cost-model": 1.05})["dual_cost_model"]
    assert not out["met"]
