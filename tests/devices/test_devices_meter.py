"""The energy meter: integration against analytically known energy, gaps, coverage, clocks, baselines."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from edgeconf.devices.errors import DeviceError, SensorReadError
from edgeconf.devices.meter import EnergyMeter
from edgeconf.devices.power import NullSource, OrinIna3221Source, PowerSample, PowerSource, RaplSource
from fake_sysfs import BOARDS, ManualClock, rapl_set


def power_w(t):
    """A known power curve (W): mean 5 W, a 1 Hz swing and a slow ramp."""
    return 5.0 + 2.0 * np.sin(2 * np.pi * t) + 0.5 * t


def energy_exact(a, b):
    """∫ power_w dt over [a, b], in closed form."""
    return 5.0 * (b - a) - (2.0 / (2 * np.pi)) * (np.cos(2 * np.pi * b) - np.cos(2 * np.pi * a)) + 0.25 * (b * b - a * a)


class FunctionSource(PowerSource):
    """A fake sensor whose power is a known function of its clock's time."""

    name = "function"

    def __init__(self, fn, clock, counter=False, energy_fn=None):
        super().__init__(clock)
        self.fn, self.energy_fn = fn, energy_fn
        self.counter = counter
        self.available = True
        self.fail = False

    def read(self):
        if self.fail:
            raise SensorReadError("sensor gone")
        t = self.clock()
        e = self.energy_fn(t) if self.counter else None
        return PowerSample(t, {"board": self.fn(t) * 1000}, self.fn(t) * 1000, e)


def _sweep(meter, clock, t_end, dt):
    while clock.t < t_end:
        meter.sample_now()
        clock.advance(dt)
    meter.sample_now()


def test_trapezoid_matches_analytic_energy():
    clock = ManualClock(0.0)
    meter = EnergyMeter(FunctionSource(power_w, clock), capacity=10_000, clock=clock)
    _sweep(meter, clock, 2.0, 0.001)
    a, b = 0.1234, 1.789
    exact = energy_exact(a, b)
    m = meter.window(a, b)
    assert m.joules == pytest.approx(exact, rel=1e-6)
    assert m.coverage == pytest.approx(1.0)
    assert m.mean_w == pytest.approx(exact / (b - a), rel=1e-6)
    assert m.peak_w == pytest.approx(max(power_w(np.linspace(a, b, 100_001))), rel=1e-4)
    assert m.samples == pytest.approx(1666, abs=2)
    assert meter.energy_j(a, b) == pytest.approx(exact, rel=1e-6)
    # a window shorter than one sampling period: interpolated power times its duration
    assert meter.energy_j(0.5001, 0.5004) == pytest.approx(energy_exact(0.5001, 0.5004), rel=1e-4)


def test_counter_source_integrates_by_differences():
    clock = ManualClock(0.0)
    src = FunctionSource(power_w, clock, counter=True, energy_fn=lambda t: energy_exact(0.0, t))
    meter = EnergyMeter(src, clock=clock)
    assert meter.max_gap_s == math.inf
    _sweep(meter, clock, 2.0, 0.02)
    assert meter.energy_j(0.0, 2.0) == pytest.approx(energy_exact(0.0, 2.0), rel=1e-9)  # exact at sample points
    assert meter.energy_j(0.31, 1.77) == pytest.approx(energy_exact(0.31, 1.77), rel=1e-4)


def _wait_until(condition, timeout: float = 30.0) -> None:
    """Wait for the sampling thread to make progress; the generous timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the sampling thread made no progress in %.0f s" % timeout
        time.sleep(0.005)


def test_measure_on_the_thread_with_real_time():
    """A linear power ramp on perf_counter: the trapezoid is exact, so joules match the closed form.

    Deterministic under any load: the block waits for the thread's samples instead of sleeping a fixed time, and
    the meter interpolates across any gap (exact for a ramp), so a starved thread cannot change the result.
    """
    t_start = time.perf_counter()
    ramp = lambda t: 3.0 + 4.0 * (t - t_start)  # noqa: E731
    meter = EnergyMeter(FunctionSource(ramp, time.perf_counter), rate_hz=200, max_gap_s=math.inf)
    with meter.measure() as m:
        first = len(meter)
        _wait_until(lambda: len(meter) >= first + 5)
    assert not meter.running  # measure started the thread and stopped it
    exact = 3.0 * (m.t1 - m.t0) + 2.0 * ((m.t1 - t_start) ** 2 - (m.t0 - t_start) ** 2)
    assert m.joules == pytest.approx(exact, rel=1e-6)
    assert m.coverage == pytest.approx(1.0) and m.samples >= 5
    assert m.mean_w == pytest.approx(exact / m.seconds, rel=1e-6)
    assert m.to_json()["source"] == "function"


def test_meter_thread_start_stop_and_context():
    meter = EnergyMeter(FunctionSource(lambda t: 2.0, time.perf_counter), rate_hz=100)
    with meter:
        assert meter.running
        _wait_until(lambda: len(meter) >= 3)
    assert not meter.running
    n = len(meter)
    t, p = meter.recent(10.0)
    assert t.size == n and np.all(p == 2.0) and np.all(np.diff(t) > 0)
    time.sleep(0.05)
    assert len(meter) == n  # stopped means stopped


def test_gap_from_a_vanishing_and_garbage_file_is_marked(tmp_path):
    fake = BOARDS["jetson-orin-nano"]
    root = fake.write(tmp_path, {"VDD_IN": 5.0, "VDD_CPU_GPU_CV": 2.0, "VDD_SOC": 1.0})
    clock = ManualClock(0.0)
    meter = EnergyMeter(OrinIna3221Source(root, clock=clock), clock=clock)
    _, curr = fake.rail_files(root, "VDD_IN")
    for i in range(101):  # 2 s at 50 Hz: samples 30..39 fail (file gone), 40..49 hold garbage
        if i == 30:
            curr.unlink()
        if i == 40:
            curr.write_text("\x00\x00garbage")
        if i == 50:
            curr.write_text("1000\n")
        meter.sample_now()
        clock.advance(0.02)
    assert meter.gaps == 20 and "VDD_IN" in meter.last_error
    m = meter.window(0.0, 2.0)
    # samples 29 and 50 are the last and first valid ones: segments 29..50 (0.42 s) are uncovered
    assert m.coverage == pytest.approx((2.0 - 0.42) / 2.0)
    assert m.joules == pytest.approx(5.0 * (2.0 - 0.42))  # energy of the covered time only, no guess
    assert m.mean_w == pytest.approx(5.0)
    assert meter.energy_j(0.0, 2.0) is None  # below the default minimum coverage
    assert meter.energy_j(0.0, 2.0, min_coverage=0.7) == pytest.approx(7.9)
    assert meter.energy_j(0.7, 0.9) is None  # wholly inside the gap
    assert meter.window(0.7, 0.9).coverage == 0.0
    assert meter.energy_j(1.2, 1.5) == pytest.approx(1.5)  # after recovery


def test_a_thread_survives_sensor_failures():
    src = FunctionSource(lambda t: 1.0, time.perf_counter)
    src.fail = True
    meter = EnergyMeter(src, rate_hz=200)
    with meter:
        _wait_until(lambda: meter.gaps >= 2)
        src.fail = False
        _wait_until(lambda: len(meter) > meter.gaps)
    assert meter.running is False and meter.gaps >= 2 and len(meter) > meter.gaps
    t, _ = meter.recent(10.0)
    assert t.size == len(meter) - meter.gaps


def test_clock_going_backwards_drops_the_sample():
    clock = ManualClock(10.0)
    meter = EnergyMeter(FunctionSource(lambda t: 2.0, clock), clock=clock)
    meter.sample_now()
    clock.advance(0.02)
    meter.sample_now()
    clock.advance(-0.5)  # a clock that steps back
    assert meter.sample_now() is None and meter.clock_errors == 1 and "backwards" in meter.last_error
    clock.advance(0.5 + 0.02)
    meter.sample_now()
    assert len(meter) == 3
    assert meter.energy_j(10.0, 10.04) == pytest.approx(0.08)


def test_samples_too_far_apart_are_not_interpolated():
    clock = ManualClock(0.0)
    meter = EnergyMeter(FunctionSource(lambda t: 2.0, clock), rate_hz=50, clock=clock)
    assert meter.max_gap_s == pytest.approx(0.1)
    meter.sample_now()
    clock.advance(1.0)  # the sampler stalled for a second
    meter.sample_now()
    assert meter.window(0.0, 1.0).coverage == 0.0 and meter.energy_j(0.0, 1.0) is None


def test_ring_buffer_keeps_only_the_newest_samples():
    clock = ManualClock(0.0)
    meter = EnergyMeter(FunctionSource(lambda t: 1.0, clock), capacity=8, clock=clock)
    for _ in range(20):
        meter.sample_now()
        clock.advance(0.01)
    assert len(meter) == 8
    assert meter.window(0.0, 0.05).coverage == 0.0  # overwritten
    assert meter.energy_j(0.13, 0.19) == pytest.approx(0.06)
    assert meter.window(0.0, 0.19).coverage == pytest.approx(0.07 / 0.19)


def test_rapl_meter_across_a_wrap(tmp_path):
    from fake_sysfs import RAPL_MAX_UJ

    root = BOARDS["x86-cpu"].write(tmp_path)
    clock = ManualClock(0.0)
    meter = EnergyMeter(RaplSource(root, clock=clock), clock=clock)
    uj = RAPL_MAX_UJ - 3_000_000
    for _ in range(11):  # 10 W for 1 s, wrapping after 0.3 s
        rapl_set(root, "intel-rapl:0", uj % RAPL_MAX_UJ)
        meter.sample_now()
        uj += 1_000_000
        clock.advance(0.1)
    assert meter.energy_j(0.0, 1.0) == pytest.approx(10.0)
    assert meter.energy_j(0.25, 0.45) == pytest.approx(2.0)
    assert meter.window(0.0, 1.0).peak_w == pytest.approx(10.0)


def test_idle_baseline_and_net_energy():
    watts = {"now": 2.0}
    # constant power on each window, so interpolating across a starved thread's gaps is exact: no timing dependence
    meter = EnergyMeter(FunctionSource(lambda t: watts["now"], time.perf_counter), rate_hz=200, max_gap_s=math.inf)
    with pytest.raises(DeviceError, match="idle_baseline"):
        with meter.measure(subtract_baseline=True):
            pass
    assert meter.idle_baseline(0.05) == pytest.approx(2.0)
    watts["now"] = 5.0
    with meter.measure(subtract_baseline=True) as m:
        time.sleep(0.05)
    assert m.baseline_w == pytest.approx(2.0)
    assert m.gross_joules == pytest.approx(5.0 * m.covered_s, rel=1e-3)
    assert m.joules == pytest.approx(3.0 * m.covered_s, rel=1e-3)
    assert m.mean_w == pytest.approx(3.0, rel=1e-3)
    meter.set_baseline(None)
    assert meter.baseline_w is None


def test_no_sensor_gives_none_never_a_guess():
    meter = EnergyMeter(NullSource("no sensor here"))
    assert not meter.has_sensor
    meter.start()
    assert not meter.running
    with meter.measure() as m:
        pass
    assert (m.joules, m.mean_w, m.peak_w, m.coverage, m.samples) == (None, None, None, None, 0)
    assert m.source == "none" and not m.measured
    assert meter.energy_j(0.0, 1.0) is None
    assert meter.idle_baseline(0.01) is None
    assert meter.sample_now() is None


def test_bad_arguments():
    src = FunctionSource(lambda t: 1.0, time.perf_counter)
    with pytest.raises(DeviceError):
        EnergyMeter(src, rate_hz=0)
    with pytest.raises(DeviceError):
        EnergyMeter(src, capacity=1)
    with pytest.raises(DeviceError, match="before it starts"):
        EnergyMeter(src).window(2.0, 1.0)


def test_zero_length_window():
    clock = ManualClock(0.0)
    meter = EnergyMeter(FunctionSource(lambda t: 1.0, clock), clock=clock)
    _sweep(meter, clock, 0.1, 0.02)
    m = meter.window(0.05, 0.05)
    assert m.joules == 0.0 and m.coverage == 1.0
    assert meter.window(5.0, 5.0).joules is None


def test_a_failed_secondary_rail_keeps_the_whole_board_energy(tmp_path):
    fake = BOARDS["jetson-orin-nano"]
    root = fake.write(tmp_path, {"VDD_IN": 5.0, "VDD_CPU_GPU_CV": 2.0, "VDD_SOC": 1.0})
    clock = ManualClock(0.0)
    meter = EnergyMeter(OrinIna3221Source(root, clock=clock), clock=clock)
    fake.rail_files(root, "VDD_SOC")[1].write_text("garbage\n")
    for _ in range(51):
        meter.sample_now()
        clock.advance(0.02)
    assert meter.gaps == 0 and "VDD_SOC" in meter.latest.rail_errors
    assert meter.energy_j(0.0, 1.0) == pytest.approx(5.0)


@pytest.mark.parametrize("bad", ["garbage\n", "-200\n", "99999999999\n"])
def test_a_failed_rail_of_a_sum_is_a_gap_not_zero_watts(tmp_path, bad):
    fake = BOARDS["jetson-agx-orin"]
    watts = {r: 1.0 for r in fake.rails()}
    root = fake.write(tmp_path, watts)
    clock = ManualClock(0.0)
    meter = EnergyMeter(OrinIna3221Source(root, clock=clock), clock=clock)
    rail = fake.rails()[0]
    _, curr = fake.rail_files(root, rail)
    for i in range(101):  # samples 30..49 miss one rail of the sum
        if i == 30:
            curr.write_text(bad)
        if i == 50:
            curr.write_text("200\n")
        meter.sample_now()
        clock.advance(0.02)
    assert meter.gaps == 20 and rail in meter.last_error and "sum of the rails" in meter.last_error
    m = meter.window(0.0, 2.0)
    assert m.coverage == pytest.approx((2.0 - 0.42) / 2.0)
    assert m.mean_w == pytest.approx(len(watts))  # never the sum of the other rails over the gap
