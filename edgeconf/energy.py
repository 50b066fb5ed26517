"""Attribute a power meter's energy to cascade stage invocations and to answers.

Two ways in: :func:`attribute_batch` takes a :class:`~edgeconf.cascade.BatchResult` (its ``stage_spans``)
and gives each stage invocation its joules and each input its share; :class:`EnergyRecorder` hooks
``Cascade.energy_hook`` and attributes every invocation it sees (``with recorder.answer() as a:`` gives one
answer's joules). Spans and meter samples share ``time.perf_counter()``. A span shorter than the sampling
period gets the interpolated board power times its duration: subtract the idle baseline to separate the
inference from the board. Without a sensor, every figure is None ("not measured"), never a guess.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edgeconf.devices.meter import EnergyMeter

if TYPE_CHECKING:
    from edgeconf.cascade import BatchResult, Cascade

#: A window counts as measured only when at least this share of it is covered by valid samples.
MIN_COVERAGE = 0.99


@dataclass
class StageEnergy:
    """Energy of one stage invocation (one call of the stage's runner on a (sub-)batch)."""

    stage: int
    t0: float
    t1: float
    joules: Optional[float]
    coverage: Optional[float]
    inputs: Optional[int] = None

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

    def to_json(self) -> Dict[str, Any]:
        return {"stage": self.stage, "seconds": self.seconds, "joules": self.joules, "coverage": self.coverage,
                "inputs": self.inputs}


@dataclass
class BatchEnergy:
    """Energy of a batch: per stage invocation, and per input (its share of every invocation it took part in).

    ``answer_j`` is None without a sensor; otherwise NaN marks inputs whose invocations were not measured.
    """

    stages: List[StageEnergy]
    answer_j: Optional[np.ndarray]
    source: str
    net: bool  # True when the idle baseline was subtracted

    @property
    def total_j(self) -> Optional[float]:
        if not self.stages or any(s.joules is None for s in self.stages):
            return None
        return float(sum(s.joules for s in self.stages))  # type: ignore[misc]

    @property
    def mean_answer_j(self) -> Optional[float]:
        if self.answer_j is None or not self.answer_j.size or np.isnan(self.answer_j).any():
            return None
        return float(self.answer_j.mean())

    def to_json(self) -> Dict[str, Any]:
        return {"source": self.source, "net": self.net, "total_j": self.total_j, "mean_answer_j": self.mean_answer_j,
                "stages": [s.to_json() for s in self.stages]}


def _stage_energy(meter: EnergyMeter, k: int, t0: float, t1: float, subtract_baseline: bool, min_coverage: float,
                  inputs: Optional[int] = None) -> StageEnergy:
    m = meter.window(t0, t1, subtract_baseline)
    joules = m.joules if (m.coverage is not None and m.coverage >= min_coverage) else None
    return StageEnergy(k, t0, t1, joules, m.coverage, inputs)


def attribute_batch(meter: EnergyMeter, batch: "BatchResult", subtract_baseline: bool = False,
                    min_coverage: float = MIN_COVERAGE) -> BatchEnergy:
    """Energy of each stage invocation of ``batch`` and each input's share of it.

    An input that reached stage k is charged ``energy(invocation k) / inputs(invocation k)`` for each k.
    Call it after ``run_batch`` returns (it reads the sensor once more if the meter has not yet sampled past
    the last span).
    """
    spans = list(batch.stage_spans)
    if not meter.has_sensor:
        return BatchEnergy([StageEnergy(k, a, b, None, None, batch.stage_counts[k]) for k, (a, b) in enumerate(spans)],
                           None, meter.source.name, subtract_baseline)
    if spans:
        meter.ensure_sampled_until(max(b for _, b in spans))
    stages = [_stage_energy(meter, k, a, b, subtract_baseline, min_coverage, batch.stage_counts[k])
              for k, (a, b) in enumerate(spans)]
    n = len(batch)
    answer = np.zeros(n, dtype=np.float64)
    runs = np.asarray(batch.stages_run)
    for k, st in enumerate(stages):
        took_part = runs > k
        share = np.nan if st.joules is None else st.joules / max(1, batch.stage_counts[k])
        answer[took_part] += share
    return BatchEnergy(stages, answer, meter.source.name, subtract_baseline)


@dataclass
class AnswerEnergy:
    """The stage invocations recorded while one answer was computed, and their joules."""

    stages: List[StageEnergy] = field(default_factory=list)
    source: str = "none"

    @property
    def joules(self) -> Optional[float]:
        """Sum over the invocations; None without a sensor or when one was not measured; 0.0 for a memo hit."""
        if any(s.joules is None for s in self.stages):
            return None
        if not self.stages and self.source == "none":
            return None
        return float(sum(s.joules for s in self.stages))  # type: ignore[misc]


class EnergyRecorder:
    """Records every stage invocation through ``Cascade.energy_hook`` and attributes the meter's energy to it.

    The hook only stores ``(stage, t0, t1)`` (cheap, no sensor read on the inference path); energy is
    computed when asked (:meth:`resolve`, :meth:`answer`), once the meter has sampled past the spans.
    """

    def __init__(self, meter: EnergyMeter, subtract_baseline: bool = False, min_coverage: float = MIN_COVERAGE) -> None:
        self.meter = meter
        self.subtract_baseline = subtract_baseline
        self.min_coverage = min_coverage
        self._pending: List[Tuple[int, float, float]] = []
        self._lock = threading.Lock()
        self._cascade: Optional["Cascade"] = None
        self._previous: Optional[Callable[[int, float, float], None]] = None
        self.stage_joules: List[float] = []  # running totals per stage (measured invocations only)
        self.stage_calls: List[int] = []
        self.unmeasured = 0  # invocations whose energy could not be measured

    # -- hooking -------------------------------------------------------------------------------
    def attach(self, cascade: "Cascade") -> "EnergyRecorder":
        """Install the hook (an existing hook keeps being called)."""
        if self._cascade is not None:
            self.detach()
        self._cascade = cascade
        self._previous = cascade.energy_hook
        cascade.energy_hook = self._hook
        return self

    def detach(self) -> None:
        if self._cascade is not None:
            if self._cascade.energy_hook == self._hook:
                self._cascade.energy_hook = self._previous
            self._cascade = None
            self._previous = None

    def __enter__(self) -> "EnergyRecorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _hook(self, k: int, t0: float, t1: float) -> None:
        with self._lock:
            self._pending.append((k, t0, t1))
        if self._previous is not None:
            self._previous(k, t0, t1)

    # -- attribution ---------------------------------------------------------------------------
    def resolve(self) -> List[StageEnergy]:
        """Attribute energy to the invocations recorded since the last call, and add them to the totals."""
        with self._lock:
            spans, self._pending = self._pending, []
        if not spans:
            return []
        if self.meter.has_sensor:
            self.meter.ensure_sampled_until(max(b for _, _, b in spans))
            out = [_stage_energy(self.meter, k, a, b, self.subtract_baseline, self.min_coverage) for k, a, b in spans]
        else:
            out = [StageEnergy(k, a, b, None, None) for k, a, b in spans]
        for s in out:
            while len(self.stage_joules) <= s.stage:
                self.stage_joules.append(0.0)
                self.stage_calls.append(0)
            self.stage_calls[s.stage] += 1
            if s.joules is None:
                self.unmeasured += 1
            else:
                self.stage_joules[s.stage] += s.joules
        return out

    def per_stage_j(self) -> List[Optional[float]]:
        """Measured joules per stage so far (None for every stage without a sensor)."""
        self.resolve()
        if not self.meter.has_sensor:
            return [None] * len(self.stage_calls)
        return list(self.stage_joules)

    @contextmanager
    def answer(self) -> Iterator[AnswerEnergy]:
        """``with recorder.answer() as a: cascade.classify(img)`` -> ``a.joules`` for that answer."""
        self.resolve()  # earlier spans are not this answer's
        a = AnswerEnergy(source=self.meter.source.name if self.meter.has_sensor else "none")
        try:
            yield a
        finally:
            a.stages = self.resolve()


def stage_energy_totals(results: Sequence[BatchEnergy]) -> List[Optional[float]]:
    """Sum the joules of each stage over several batches (None for a stage with an unmeasured invocation)."""
    totals: Dict[int, Optional[float]] = {}
    for r in results:
        for s in r.stages:
            cur = totals.get(s.stage, 0.0)
            totals[s.stage] = None if (cur is None or s.joules is None) else cur + s.joules
    return [totals[k] for k in sorted(totals)]
