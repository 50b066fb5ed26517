"""Energy attribution: a meter's joules per stage invocation and per answer of a real ONNX cascade."""
from __future__ import annotations

import time

import numpy as np
import pytest

from edgeconf.backends import prepare
from edgeconf.cascade import Cascade, Stage
from edgeconf.devices.meter import EnergyMeter
from edgeconf.devices.power import NullSource, PowerSample, PowerSource
from edgeconf.energy import AnswerEnergy, EnergyRecorder, attribute_batch, stage_energy_totals

T0 = time.perf_counter()


def power_w(t: float) -> float:
    """A linear ramp in perf_counter time: the trapezoid rule integrates it exactly."""
    return 4.0 + 20.0 * (t - T0)


def energy_exact(a: float, b: float) -> float:
    return 4.0 * (b - a) + 10.0 * ((b - T0) ** 2 - (a - T0) ** 2)


class RampSource(PowerSource):
    name = "ramp"

    def __init__(self) -> None:
        super().__init__(time.perf_counter)
        self.available = True

    def read(self) -> PowerSample:
        t = time.perf_counter()
        return PowerSample(t, {"board": power_w(t) * 1e3}, power_w(t) * 1e3)


@pytest.fixture
def cascade(two_models):
    stages = [Stage("a", prepare(two_models[0]), "margin", 0.5), Stage("b", prepare(two_models[1]), "margin", 0.0)]
    with Cascade(stages) as c:
        yield c


def test_attribute_batch_per_invocation_and_per_answer(cascade, rng):
    meter = EnergyMeter(RampSource(), max_gap_s=60.0)
    x = rng.normal(size=(64, 1, 28, 28)).astype(np.float32)
    meter.sample_now()
    batch = cascade.run_batch(x)
    assert len(batch.stage_counts) == 2 and 0 < batch.stage_counts[1] < 64
    e = attribute_batch(meter, batch)
    assert [s.stage for s in e.stages] == [0, 1] and [s.inputs for s in e.stages] == batch.stage_counts
    for s, (a, b) in zip(e.stages, batch.stage_spans):
        assert s.coverage == pytest.approx(1.0)
        assert s.joules == pytest.approx(energy_exact(a, b), rel=1e-9)
    assert e.answer_j is not None and e.answer_j.shape == (64,)
    assert e.answer_j.sum() == pytest.approx(e.total_j, rel=1e-9)  # every joule goes to some answer
    one = e.stages[0].joules / 64
    escalated = batch.stages_run == 2
    np.testing.assert_allclose(e.answer_j[~escalated], one, rtol=1e-12)
    np.testing.assert_allclose(e.answer_j[escalated], one + e.stages[1].joules / batch.stage_counts[1], rtol=1e-12)
    assert e.mean_answer_j == pytest.approx(e.total_j / 64)
    assert e.to_json()["stages"][1]["inputs"] == batch.stage_counts[1]
    assert stage_energy_totals([e, e]) == pytest.approx([2 * e.stages[0].joules, 2 * e.stages[1].joules])


def test_net_energy_subtracts_the_baseline(cascade, rng):
    meter = EnergyMeter(RampSource(), max_gap_s=60.0)
    meter.set_baseline(4.0)
    meter.sample_now()
    batch = cascade.run_batch(rng.normal(size=(16, 1, 28, 28)).astype(np.float32))
    e = attribute_batch(meter, batch, subtract_baseline=True)
    assert e.net
    for s, (a, b) in zip(e.stages, batch.stage_spans):
        assert s.joules == pytest.approx(energy_exact(a, b) - 4.0 * (b - a), rel=1e-6)


def test_uncovered_invocations_are_not_measured(cascade, rng):
    meter = EnergyMeter(RampSource(), rate_hz=50)  # no sample before the run: the spans are not covered
    batch = cascade.run_batch(rng.normal(size=(8, 1, 28, 28)).astype(np.float32))
    e = attribute_batch(meter, batch)
    assert all(s.joules is None for s in e.stages) and e.total_j is None
    assert np.isnan(e.answer_j).all() and e.mean_answer_j is None


def test_no_sensor_gives_none(cascade, rng):
    meter = EnergyMeter(NullSource())
    batch = cascade.run_batch(rng.normal(size=(8, 1, 28, 28)).astype(np.float32))
    e = attribute_batch(meter, batch)
    assert e.answer_j is None and e.total_j is None and all(s.joules is None for s in e.stages)
    with EnergyRecorder(meter).attach(cascade) as rec:
        with rec.answer() as a:
            cascade.run(np.zeros((1, 28, 28), np.float32))
        assert a.joules is None and len(a.stages) >= 1
        assert rec.per_stage_j() == [None] * len(rec.stage_calls)


def test_recorder_hook_gives_each_answer_its_energy(cascade, rng):
    seen = []
    cascade.energy_hook = lambda k, t0, t1: seen.append(k)  # an existing hook keeps working
    meter = EnergyMeter(RampSource(), rate_hz=200, max_gap_s=60.0)
    with meter, EnergyRecorder(meter).attach(cascade) as rec:
        x = rng.normal(size=(1, 28, 28)).astype(np.float32)
        with rec.answer() as a:
            res = cascade.run(x)
        assert [s.stage for s in a.stages] == list(range(res.stages_run))
        assert a.joules == pytest.approx(sum(energy_exact(s.t0, s.t1) for s in a.stages), rel=1e-6)
        for _ in range(3):
            cascade.run(x)
        totals = rec.per_stage_j()
        assert rec.stage_calls[0] == 4 and rec.unmeasured == 0 and totals[0] > 0
    assert cascade.energy_hook is not None and cascade.energy_hook != rec._hook  # detached, old hook back
    assert seen[:1] == [0] and len(seen) == sum(rec.stage_calls)


def test_memo_hit_answer_costs_no_model_energy():
    assert AnswerEnergy([], source="ramp").joules == 0.0
    assert AnswerEnergy([], source="none").joules is None
