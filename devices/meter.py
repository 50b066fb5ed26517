"""Energy meter: sample a power source on a thread into a ring buffer and integrate any time window.

Power sources are integrated with the trapezoid rule over the sampled curve (linear between samples);
counter-based sources (RAPL, NVML's energy counter) by differences of the counter. A failed reading is
stored as a gap: windows report the share of their time covered by valid samples, and nothing is
extrapolated. Without a sensor every energy figure is ``None``.
"""
from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from edgeconf.devices.errors import DeviceError, SensorReadError
from edgeconf.devices.power import Clock, PowerSample, PowerSource

DEFAULT_CAPACITY = 65536  # about 22 minutes at 50 Hz


@dataclass
class Measurement:
    """Energy over one window. ``joules`` counts only the covered time; ``coverage`` says its share.

    With ``subtract_baseline`` the idle draw (``baseline_w`` × covered seconds) is taken out of ``joules``
    and ``mean_w``; ``gross_joules`` keeps the whole board's energy. All None without a sensor.
    """

    t0: float = 0.0
    t1: float = 0.0
    joules: Optional[float] = None
    mean_w: Optional[float] = None
    peak_w: Optional[float] = None
    samples: int = 0
    coverage: Optional[float] = None
    covered_s: float = 0.0
    gross_joules: Optional[float] = None
    baseline_w: Optional[float] = None
    source: str = "none"

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

    @property
    def measured(self) -> bool:
        return self.joules is not None

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d["seconds"] = self.seconds
        return d


class EnergyMeter:
    """Samples ``source`` at ``rate_hz`` on its own thread into a bounded ring buffer.

    ``rate_hz`` defaults to the source's own rate (50 Hz for sysfs readers, jtop's interval for jtop).
    ``max_gap_s``: for power sources, two samples further apart than this are not interpolated (the
    time between them counts as uncovered); default five sampling periods.
    """

    def __init__(self, source: PowerSource, rate_hz: Optional[float] = None, capacity: int = DEFAULT_CAPACITY,
                 max_gap_s: Optional[float] = None, clock: Optional[Clock] = None) -> None:
        rate = float(rate_hz) if rate_hz is not None else float(source.preferred_rate_hz)
        if not rate > 0 or not math.isfinite(rate):
            raise DeviceError("rate_hz must be a positive number, got %r" % (rate_hz,))
        if int(capacity) < 2:
            raise DeviceError("capacity must be at least 2 samples, got %r" % (capacity,))
        self.source = source
        self.rate_hz = rate
        self.capacity = int(capacity)
        self.counter = bool(source.counter)
        self.max_gap_s = float(max_gap_s) if max_gap_s is not None else (math.inf if self.counter else 5.0 / rate)
        self.clock: Clock = clock or source.clock or time.perf_counter
        n = 2 * self.capacity  # every sample is written twice so the last `capacity` are contiguous
        self._t = np.zeros(n)
        self._p = np.full(n, np.nan)  # total power, W
        self._e = np.full(n, np.nan)  # cumulative energy, J (counter sources)
        self._ok = np.zeros(n, dtype=bool)
        self._head = 0  # samples written so far
        self._lock = threading.Lock()  # guards the buffer
        self._read_lock = threading.Lock()  # serialises read + append so timestamps stay ordered
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self.latest: Optional[PowerSample] = None
        self.last_error: Optional[str] = None
        self.gaps = 0  # failed readings stored as gaps
        self.clock_errors = 0  # samples dropped because their timestamp did not move forward
        self.baseline_w: Optional[float] = None

    # -- state ---------------------------------------------------------------------------------
    @property
    def has_sensor(self) -> bool:
        return bool(self.source.available)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __len__(self) -> int:
        return min(self._head, self.capacity)

    # -- sampling ------------------------------------------------------------------------------
    def start(self) -> "EnergyMeter":
        """Start the sampling thread (does nothing without a sensor)."""
        if not self.has_sensor or self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="edgeconf-energy-meter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the sampling thread; the buffer keeps its samples."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.source.close()

    def __enter__(self) -> "EnergyMeter":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        period = 1.0 / self.rate_hz
        next_t = time.perf_counter()
        while not self._stop.is_set():
            self.sample_now()
            next_t += period
            delay = next_t - time.perf_counter()
            if delay < -period:  # fell behind (a stall): restart the schedule instead of bursting
                next_t = time.perf_counter()
                delay = 0.0
            if delay > 0:
                self._stop.wait(delay)

    def sample_now(self) -> Optional[PowerSample]:
        """Take one reading now (thread-safe). A failed reading is stored as a gap and returns None."""
        if not self.has_sensor:
            return None
        with self._read_lock:
            try:
                s = self.source.read()
            except Exception as exc:  # SensorReadError, or anything a driver throws: never kill the thread
                self.last_error = str(exc) if isinstance(exc, SensorReadError) else "%s: %s" % (type(exc).__name__, exc)
                self.gaps += 1
                self._append(self.clock(), math.nan, math.nan, False)
                return None
            if self.counter:
                ok = s.energy_j is not None and math.isfinite(s.energy_j)
                p = s.total_mw / 1000.0 if s.total_mw is not None else math.nan
                e = s.energy_j if ok else math.nan
            else:
                ok = s.total_mw is not None and math.isfinite(s.total_mw)
                p = s.total_mw / 1000.0 if ok else math.nan  # type: ignore[operator]
                e = math.nan
            if not ok:
                self.gaps += 1
                self.last_error = s.total_error or "reading without a total"
            if self._append(s.timestamp_s, p, e, ok):
                self.latest = s
                return s
            return None

    def _append(self, t: float, p: float, e: float, ok: bool) -> bool:
        with self._lock:
            if self._head:
                last = self._t[(self._head - 1) % self.capacity]
                if t == last:  # two readings within one clock tick: keep the first
                    return False
                if t < last:  # the clock went backwards: drop the sample, keep going
                    self.clock_errors += 1
                    self.last_error = "clock went backwards at t=%.6f (last sample %.6f); sample dropped" % (t, last)
                    return False
            i = self._head % self.capacity
            for j in (i, i + self.capacity):
                self._t[j], self._p[j], self._e[j], self._ok[j] = t, p, e, ok
            self._head += 1
            return True

    def _view(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Copies-free views of the buffered samples in time order (call with the lock held)."""
        n = min(self._head, self.capacity)
        start = (self._head - n) % self.capacity
        sl = slice(start, start + n)
        return self._t[sl], self._p[sl], self._e[sl], self._ok[sl]

    def recent(self, seconds: float) -> Tuple[np.ndarray, np.ndarray]:
        """(timestamps, total watts) of the valid samples of the last ``seconds`` (for plots)."""
        with self._lock:
            t, p, _, ok = self._view()
            if not t.size:
                return np.zeros(0), np.zeros(0)
            lo = int(np.searchsorted(t, t[-1] - seconds, "left"))
            t, p, ok = t[lo:].copy(), p[lo:].copy(), ok[lo:].copy()
        keep = ok & np.isfinite(p)
        return t[keep], p[keep]

    def last_timestamp(self) -> Optional[float]:
        with self._lock:
            return float(self._t[(self._head - 1) % self.capacity]) if self._head else None

    # -- integration ---------------------------------------------------------------------------
    def _integrate(self, a: float, b: float) -> Tuple[float, float, int, Optional[float]]:
        """(joules over covered time, covered seconds, valid samples inside, peak watts) for [a, b]."""
        with self._lock:
            t, p, e, ok = self._view()
            if t.size < 2:
                inside = int((ok & (t >= a) & (t <= b)).sum()) if t.size else 0
                return 0.0, 0.0, inside, None
            lo = max(int(np.searchsorted(t, a, "right")) - 1, 0)
            hi = min(int(np.searchsorted(t, b, "left")) + 1, t.size)
            t, p, e, ok = t[lo:hi].copy(), p[lo:hi].copy(), e[lo:hi].copy(), ok[lo:hi].copy()
        inside = int((ok & (t >= a) & (t <= b)).sum())
        if t.size < 2:
            return 0.0, 0.0, inside, None
        t0, t1 = t[:-1], t[1:]
        dt = t1 - t0
        u = np.maximum(t0, a)
        v = np.minimum(t1, b)
        length = v - u
        seg = ok[:-1] & ok[1:] & (dt > 0) & (dt <= self.max_gap_s) & (length > 0)
        if self.counter:
            with np.errstate(invalid="ignore", divide="ignore"):
                q = (e[1:] - e[:-1]) / dt
            seg &= np.isfinite(q) & (q >= 0)  # a counter running backwards is a fault, not energy
            pu = pv = q
        else:
            seg &= np.isfinite(p[:-1]) & np.isfinite(p[1:])
            with np.errstate(invalid="ignore", divide="ignore"):
                slope = (p[1:] - p[:-1]) / dt
            pu = p[:-1] + slope * (u - t0)
            pv = p[:-1] + slope * (v - t0)
        if not seg.any():
            return 0.0, 0.0, inside, None
        joules = float(np.sum(((pu + pv) * 0.5 * length)[seg]))
        covered = float(np.sum(length[seg]))
        peak_p = np.concatenate([np.atleast_1d(pu)[seg], np.atleast_1d(pv)[seg]])
        peak = float(np.nanmax(peak_p)) if peak_p.size and np.isfinite(peak_p).any() else None
        return joules, covered, inside, peak

    def window(self, t0: float, t1: float, subtract_baseline: bool = False) -> Measurement:
        """Energy and power over ``[t0, t1]`` (timestamps of :attr:`clock`)."""
        if t1 < t0:
            raise DeviceError("energy window ends (%.6f) before it starts (%.6f)" % (t1, t0))
        m = Measurement(t0=t0, t1=t1, source=self.source.name)
        if not self.has_sensor:
            return m
        if subtract_baseline and self.baseline_w is None:
            raise DeviceError("no idle baseline to subtract: call meter.idle_baseline(seconds) first")
        span = t1 - t0
        if span <= 0:  # an instant: zero joules where the sensor curve is defined there
            _, covered, n, peak = self._integrate(t0, t0 + 1e-9)
            m.samples, m.coverage = n, (1.0 if covered > 0 else 0.0)
            if covered > 0:
                m.joules = m.gross_joules = 0.0
                m.peak_w = peak
                m.baseline_w = self.baseline_w if subtract_baseline else None
            return m
        joules, covered, n, peak = self._integrate(t0, t1)
        m.samples = n
        m.coverage = min(1.0, covered / span)
        m.covered_s = covered
        if covered <= 0:
            return m
        m.gross_joules = joules
        m.peak_w = peak
        if subtract_baseline:
            m.baseline_w = self.baseline_w
            joules = joules - float(self.baseline_w) * covered  # type: ignore[arg-type]
        m.joules = joules
        m.mean_w = joules / covered
        return m

    def energy_j(self, t0: float, t1: float, subtract_baseline: bool = False,
                 min_coverage: float = 0.99) -> Optional[float]:
        """Joules over ``[t0, t1]``; None without a sensor or when less than ``min_coverage`` is covered."""
        m = self.window(t0, t1, subtract_baseline)
        if m.joules is None or m.coverage is None or m.coverage < min_coverage:
            return None
        return m.joules

    def ensure_sampled_until(self, t: float) -> None:
        """Make sure a sample at or after ``t`` exists (take one now if the thread has not yet)."""
        if not self.has_sensor:
            return
        last = self.last_timestamp()
        if last is None or last < t:
            self.sample_now()

    @contextmanager
    def measure(self, subtract_baseline: bool = False) -> Iterator[Measurement]:
        """``with meter.measure() as m: ...`` -> ``m.joules``, ``m.mean_w``, ``m.peak_w``, ``m.samples``.

        Starts the sampling thread for the duration if it is not running, and reads the sensor at both
        ends so the window is covered.
        """
        if subtract_baseline and self.has_sensor and self.baseline_w is None:
            raise DeviceError("no idle baseline to subtract: call meter.idle_baseline(seconds) first")
        m = Measurement(source=self.source.name)
        started_here = self.has_sensor and not self.running
        if started_here:
            self.start()
        self.sample_now()
        m.t0 = self.clock()
        try:
            yield m
        finally:
            m.t1 = self.clock()
            self.ensure_sampled_until(m.t1)
            if started_here:
                self.stop()
            done = self.window(m.t0, m.t1, subtract_baseline)
            for k, v in asdict(done).items():
                setattr(m, k, v)

    def idle_baseline(self, seconds: float = 2.0) -> Optional[float]:
        """Measure the mean idle draw over ``seconds`` (do nothing else meanwhile) and keep it as the baseline.

        Returns the watts, or None without a sensor (or when the window was not covered).
        """
        if not self.has_sensor:
            return None
        with self.measure() as m:
            time.sleep(max(0.0, float(seconds)))
        self.baseline_w = m.mean_w if m.coverage and m.coverage >= 0.5 else None
        return self.baseline_w

    def set_baseline(self, watts: Optional[float]) -> None:
        """Set the idle baseline (watts) measured elsewhere, or clear it with None."""
        self.baseline_w = None if watts is None else float(watts)
