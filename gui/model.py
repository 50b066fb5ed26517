"""The operator window's state as plain Python: what runs, what is shown, and the live statistics.

No Qt here (napari's habit): the model holds values and emits events; the Qt views observe it and
the controller writes to it. So the statistics and the settings logic are testable without a display.
"""
from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeconf.live.defaults import DEFAULT_REGIONS, DEFAULT_SOURCE

MAX_RECENT_SOURCES = 10


# -- events -------------------------------------------------------------------------------------------
@dataclass
class Event:
    """What an :class:`EventEmitter` passes to its callbacks: the event's name and its values."""

    type: str
    value: Any = None
    source: Any = None


class EventEmitter:
    """A list of callbacks called with an :class:`Event` (napari's ``EventEmitter``, reduced)."""

    def __init__(self, source: Any, type: str) -> None:
        self.source = source
        self.type = type
        self._callbacks: List[Callable[[Event], Any]] = []
        self.blocked = False

    def connect(self, callback: Callable[[Event], Any]) -> Callable[[Event], Any]:
        if callback not in self._callbacks:
            self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Optional[Callable[[Event], Any]] = None) -> None:
        if callback is None:
            self._callbacks.clear()
        elif callback in self._callbacks:
            self._callbacks.remove(callback)

    def __call__(self, value: Any = None) -> None:
        if self.blocked:
            return
        ev = Event(self.type, value, self.source)
        for cb in list(self._callbacks):
            cb(ev)


class EmitterGroup:
    """``group.name`` is the emitter of the event ``name``."""

    def __init__(self, source: Any, names: Sequence[str]) -> None:
        for name in names:
            setattr(self, name, EventEmitter(source, name))


# -- overlay toggles ----------------------------------------------------------------------------------
@dataclass
class OverlayToggles:
    """Which overlays the video view draws (each one can be switched off)."""

    boxes: bool = True
    labels: bool = True
    uncertainty: bool = True
    memo_marker: bool = True
    coasting: bool = True  # tracks coasting on the tracker's prediction (no detection this frame)
    truth: bool = False  # the demo scene's ground-truth boxes (demo:// only)

    @classmethod
    def names(cls) -> List[str]:
        return [f.name for f in fields(cls)]


def shown_tracks(result: Any, toggles: OverlayToggles) -> List[Any]:
    """The tracks the video view draws for ``result``, in its order: boxes that reach into the frame, coasting
    ones only while coasting tracks are shown. The per-track panel lists exactly these."""
    if result is None:
        return []
    image = getattr(result, "image", None)
    h, w = (image.shape[:2] if isinstance(image, np.ndarray) else (None, None))
    out = []
    for t in result.tracks:
        if t.frames_since_match and not toggles.coasting:
            continue
        x1, y1, x2, y2 = t.box
        if w is not None and (x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h):
            continue  # a coasting prediction that drifted out of the picture: nothing is drawn
        out.append(t)
    return out


OVERLAY_HELP = {
    "boxes": "Boxes coloured by confidence (red low, yellow medium, green high)",
    "labels": "Label: track id, class, confidence and the stage that answered",
    "uncertainty": "Tracker uncertainty: 2-sigma ellipse of the position covariance",
    "memo_marker": "'M' marker when the memo cache answered (no model ran)",
    "coasting": "Show tracks coasting on the prediction (no detection this frame)",
    "truth": "Ground-truth boxes of the demo scene (white, dashed)",
}


# -- live statistics ----------------------------------------------------------------------------------
@dataclass
class StatsPoint:
    """One sample of the live numbers (taken when a result is shown)."""

    t: float  # time.perf_counter() when ingested
    frame: int
    pipeline_fps: float
    display_fps: Optional[float]
    latency_ms: float  # processing time of the frame (without the wait for the source)
    answers: int  # cumulative
    model_inputs: int  # cumulative
    memo_hits: int  # cumulative
    exits: Tuple[int, ...]  # cumulative, per stage
    stage_calls: Tuple[int, ...]  # cumulative, per stage
    memo_hit_rate_recent: Optional[float]
    escalation_rate_recent: Optional[float]
    remote_calls: int = 0  # cumulative: of remote_inputs, crops sent to the server in a request
    remote_failures: int = 0  # cumulative: of remote_inputs, answered by the last local stage instead (fallbacks)
    remote_reasons: Dict[str, int] = field(default_factory=dict)  # why (timeout, unavailable, error, circuit_open)
    remote_inputs: int = 0  # cumulative: crops that reached a remote stage (sent, or answered here: breaker open)


class LiveStats:
    """Ring buffers of the numbers the panels plot, over the last ``horizon_s`` seconds."""

    def __init__(self, horizon_s: float = 180.0, maxlen: int = 20000) -> None:
        self.horizon_s = float(horizon_s)
        self.points: Deque[StatsPoint] = collections.deque(maxlen=maxlen)
        #: (time shown, the pipeline's cumulative frame count) of each result shown
        self._shown: Deque[Tuple[float, int]] = collections.deque(maxlen=240)

    def clear(self) -> None:
        self.points.clear()
        self._shown.clear()

    def add(self, result: Any, now: Optional[float] = None) -> StatsPoint:
        now = time.perf_counter() if now is None else float(now)
        c = result.counters
        frames = int(getattr(c, "frames", 0) or 0)
        if self._shown and frames < self._shown[-1][1]:
            self._shown.clear()  # a new pipeline: its frame count restarted
        self._shown.append((now, frames))
        pipe, disp = self.rates()
        p = StatsPoint(
            t=now, frame=int(result.frame_index), pipeline_fps=float(c.fps) if pipe is None else pipe,
            display_fps=disp,
            latency_ms=float(result.timings.processing_ms), answers=int(c.answers), model_inputs=int(c.model_inputs),
            memo_hits=int(c.cache_hits + c.track_key_hits), exits=tuple(int(x) for x in c.exits),
            stage_calls=tuple(int(x) for x in c.stage_calls), memo_hit_rate_recent=c.memo_hit_rate_recent,
            escalation_rate_recent=c.escalation_rate_recent, remote_calls=int(getattr(c, "remote_calls", 0) or 0),
            remote_failures=int(getattr(c, "remote_failures", 0) or 0),
            remote_reasons=dict(getattr(c, "remote_reasons", None) or {}),
            remote_inputs=int(getattr(c, "remote_inputs", 0) or 0))
        if self.points and p.answers < self.points[-1].answers:
            self.points.clear()  # a new pipeline started: counters restarted
        self.points.append(p)
        while self.points and now - self.points[0].t > self.horizon_s:
            self.points.popleft()
        return p

    def rates(self, span_s: float = 2.0) -> Tuple[Optional[float], Optional[float]]:
        """(pipeline fps, display fps) over the same last ``span_s`` seconds of shown results (None, None before
        two): frames the pipeline processed, and frames shown, between the first and the last result shown in
        the window. Each result shown is a different processed frame, so display fps ≤ pipeline fps always (the
        pipeline's own ``counters.fps``, averaged over its last frames on its own clock, could read lower than a
        display rate taken over another window)."""
        if not self._shown:
            return None, None
        t_last = self._shown[-1][0]
        win = [(t, f) for t, f in self._shown if t_last - t <= span_s]
        if len(win) < 2 or win[-1][0] <= win[0][0]:
            return None, None
        dt = win[-1][0] - win[0][0]
        return (win[-1][1] - win[0][1]) / dt, (len(win) - 1) / dt

    def display_fps(self, span_s: float = 2.0) -> Optional[float]:
        """Frames shown per second over the last ``span_s`` seconds (None before two frames); see :meth:`rates`."""
        return self.rates(span_s)[1]

    @property
    def latest(self) -> Optional[StatsPoint]:
        return self.points[-1] if self.points else None

    def window(self, seconds: float) -> Optional[Tuple[StatsPoint, StatsPoint]]:
        """(first, last) points of the last ``seconds`` (None without two points)."""
        if len(self.points) < 2:
            return None
        last = self.points[-1]
        first = last
        for p in reversed(self.points):
            if last.t - p.t > seconds:
                break
            first = p
        return (first, last) if first is not last else None

    def escalation_rate(self, seconds: float = 5.0) -> Optional[float]:
        """Share of model inputs that went past stage 1 in the last ``seconds`` (None: no model input)."""
        w = self.window(seconds)
        if w is None or len(w[1].stage_calls) < 2:
            return None
        a, b = w
        ins = b.stage_calls[0] - a.stage_calls[0]
        return (b.stage_calls[1] - a.stage_calls[1]) / ins if ins > 0 else None

    def series(self, bucket_s: float = 1.0) -> Dict[str, Any]:
        """Per-bucket series for the plots (a few hundred points, whatever the frame rate).

        ``t``: bucket ends in seconds relative to the newest point (negative = ago); ``pipeline_fps``,
        ``display_fps``, ``latency_ms`` (mean) and ``latency_max_ms`` per bucket; ``exit_share[k]``: the share
        of the bucket's model answers kept at stage k; ``memo_rate``: the share of the bucket's answers that
        needed no model. Buckets without data are NaN (a gap in the plot, not a zero).
        """
        pts = list(self.points)
        if not pts:
            return {"t": np.zeros(0), "exit_share": [], "memo_rate": np.zeros(0)}
        now = pts[-1].t
        t = np.array([p.t - now for p in pts])
        b = np.floor(t / bucket_s).astype(np.int64)
        b -= b.min()
        nb = int(b.max()) + 1
        count = np.bincount(b, minlength=nb).astype(np.float64)
        has = count > 0

        def mean(v: np.ndarray) -> np.ndarray:
            ok = np.isfinite(v)
            n = np.bincount(b[ok], minlength=nb)
            s = np.bincount(b[ok], weights=v[ok], minlength=nb)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(n > 0, s / np.maximum(n, 1), np.nan)

        lat = np.array([p.latency_ms for p in pts])
        lat_max = np.full(nb, np.nan)
        np.fmax.at(lat_max, b, lat)
        edges_t = (np.arange(nb) + 1) * bucket_s + math.floor(t[0] / bucket_s) * bucket_s
        out: Dict[str, Any] = {
            "t": np.minimum(edges_t, 0.0),
            "pipeline_fps": np.where(has, mean(np.array([p.pipeline_fps for p in pts])), np.nan),
            "display_fps": mean(np.array([np.nan if p.display_fps is None else p.display_fps for p in pts])),
            "latency_ms": mean(lat),
            "latency_max_ms": lat_max,
            "latency_recent_ms": lat[t >= -10.0],
        }
        # rates from cumulative counter differences between the last point of each bucket and the one before
        last_idx = np.full(nb, -1)
        last_idx[b] = np.arange(len(pts))  # later points overwrite earlier ones: the last point per bucket
        n_stages = len(pts[-1].exits)
        shares = [np.full(nb, np.nan) for _ in range(n_stages)]
        memo = np.full(nb, np.nan)
        prev = None
        for i in range(nb):
            j = int(last_idx[i])
            if j < 0:
                continue
            cur = pts[j]
            if prev is not None and len(prev.exits) == n_stages:
                ex = [cur.exits[k] - prev.exits[k] for k in range(n_stages)]
                tot = sum(ex)
                if tot > 0:
                    for k in range(n_stages):
                        shares[k][i] = ex[k] / tot
                ans = cur.answers - prev.answers
                if ans > 0:
                    memo[i] = (cur.memo_hits - prev.memo_hits) / ans
            prev = cur
        out["exit_share"] = shares
        out["memo_rate"] = memo
        return out


# -- power --------------------------------------------------------------------------------------------
@dataclass
class PowerReading:
    t: float
    total_w: Optional[float]
    rails_w: Dict[str, float]


class PowerHistory:
    """Power samples polled from an energy meter for the plot, and energy per answer.

    Never invents a value: without a meter or a sensor, ``available`` is False and every figure is None.
    Times are the meter's clock (``time.perf_counter`` unless the meter was given another).
    """

    def __init__(self, meter: Any = None, horizon_s: float = 180.0, note: str = "") -> None:
        self.meter = meter
        self.note = note  # why there is no meter, when the caller knows
        self.horizon_s = float(horizon_s)
        self.readings: Deque[PowerReading] = collections.deque(maxlen=100000)
        self._answers: Deque[Tuple[float, int]] = collections.deque(maxlen=100000)
        self._last_sample_t: Optional[float] = None

    @property
    def available(self) -> bool:
        return self.meter is not None and bool(getattr(self.meter, "has_sensor", False))

    @property
    def reason(self) -> str:
        """Why there is no power reading (or what is measured)."""
        if self.meter is None:
            return self.note or "no energy meter was opened"
        src = getattr(self.meter, "source", None)
        name = getattr(src, "name", "?")
        if not self.available:
            return getattr(src, "reason", "") or "no power sensor on this machine"
        return "%s%s" % (name, " (whole board)" if getattr(src, "whole_board", False) else "")

    def now(self) -> float:
        clock = getattr(self.meter, "clock", None)
        return float(clock()) if callable(clock) else time.perf_counter()

    def poll(self) -> Optional[PowerReading]:
        """Take the meter's latest sample into the history (once per sample)."""
        if not self.available:
            return None
        s = getattr(self.meter, "latest", None)
        if s is None or s.timestamp_s == self._last_sample_t:
            return None
        self._last_sample_t = s.timestamp_s
        r = PowerReading(float(s.timestamp_s), None if s.total_mw is None else s.total_mw / 1000.0,
                         {k: v / 1000.0 for k, v in (s.rails_mw or {}).items()})
        self.readings.append(r)
        while self.readings and r.t - self.readings[0].t > self.horizon_s:
            self.readings.popleft()
        return r

    def note_answers(self, answers: int, t: Optional[float] = None) -> None:
        """Record the cumulative answer count at time ``t`` (meter clock) for energy per answer."""
        t = self.now() if t is None else float(t)
        if self._answers and answers < self._answers[-1][1]:
            self._answers.clear()
        self._answers.append((t, int(answers)))
        while self._answers and t - self._answers[0][0] > self.horizon_s:
            self._answers.popleft()

    @property
    def latest(self) -> Optional[PowerReading]:
        return self.readings[-1] if self.readings else None

    def rail_names(self) -> List[str]:
        names: Dict[str, None] = {}
        for r in self.readings:
            for k in r.rails_w:
                names.setdefault(k, None)
        return list(names)

    def energy_per_answer_j(self, seconds: float = 10.0) -> Optional[float]:
        """Joules the meter measured over the last ``seconds`` divided by the answers given meanwhile (None when not
        measured; :meth:`energy_per_answer` also says why)."""
        return self.energy_per_answer(seconds)[0]

    def energy_per_answer(self, seconds: float = 10.0) -> Tuple[Optional[float], str]:
        """(joules per answer, "") or (None, why it is not measured).

        The window ends at the last answer count noted at or before the meter's latest sample: answers given
        since then fall in time the sensor has not covered yet (the meter samples on its own thread). The meter's
        own rules decide (``energy_j``: enough of the window covered by samples no further apart than its
        ``max_gap_s``); when they refuse, the reason gives the coverage the meter found and the coverage it needs.
        """
        if not self.available:
            return None, "no power sensor"
        if len(self._answers) < 2:
            return None, "no answers yet"
        last_sample = getattr(self.meter, "last_timestamp", None)
        covered_until = last_sample() if callable(last_sample) else None
        records = reversed(self._answers)
        t1 = a1 = None
        for t, a in records:
            if covered_until is None or t <= covered_until:
                t1, a1 = t, a
                break
        if t1 is None:
            return None, "waiting for the first power sample after the answers"
        t0, a0 = t1, a1
        for t, a in records:
            if t1 - t > seconds:
                break
            t0, a0 = t, a
        if a1 <= a0 or t1 <= t0:
            return None, "no answers in the last %g s the power samples cover" % seconds
        try:
            joules = self.meter.energy_j(t0, t1)
        except Exception as exc:
            return None, "the meter failed: %s" % exc
        if joules is not None:
            return joules / (a1 - a0), ""
        return None, self._coverage_reason(t0, t1)

    def _coverage_reason(self, t0: float, t1: float) -> str:
        """Why the meter refused ``[t0, t1]``: its samples' coverage against what ``energy_j`` requires."""
        import inspect

        try:
            need = inspect.signature(self.meter.energy_j).parameters["min_coverage"].default
            m = self.meter.window(t0, t1)
        except Exception:
            return "the power samples do not cover the time of these answers"
        gap = getattr(self.meter, "max_gap_s", None)
        gaps = (" (samples more than %.2g s apart leave a gap)" % gap
                if isinstance(gap, (int, float)) and math.isfinite(gap) else "")
        if m.coverage is None:
            return "no power samples in the last %.0f s" % (t1 - t0)
        need_text = (" (need ≥ %.0f %%)" % (100.0 * need)) if isinstance(need, (int, float)) else ""
        return "power samples cover %.0f %% of the last %.1f s%s%s" % (100.0 * m.coverage, t1 - t0, need_text, gaps)

    def mean_w(self, seconds: float = 10.0) -> Optional[float]:
        if not self.available:
            return None
        vals = [r.total_w for r in self.readings if r.total_w is not None and self.readings[-1].t - r.t <= seconds]
        return float(np.mean(vals)) if vals else None


# -- the session ----------------------------------------------------------------------------------------
@dataclass
class StageInfo:
    """What the controls show for one cascade stage."""

    name: str
    threshold: float
    score: str
    remote: bool = False  # served by a remote server (Triton); a failed call falls back to the last local stage


@dataclass
class GuiModel:
    """Everything the window shows and the operator chose; changes go through the setters, which emit."""

    bundle_path: str = ""
    source_uri: str = DEFAULT_SOURCE
    regions: str = DEFAULT_REGIONS
    recent_sources: List[str] = field(default_factory=lambda: [DEFAULT_SOURCE])
    overlays: OverlayToggles = field(default_factory=OverlayToggles)
    stages: List[StageInfo] = field(default_factory=list)
    labels: List[str] = field(default_factory=list)
    memo_enabled: bool = True
    memo_radius: int = 0
    source_state: str = "stopped"
    source_detail: str = ""
    running: bool = False
    paused: bool = False
    recording_path: Optional[str] = None
    error: Optional[str] = None
    latest: Any = None  # the newest FrameResult shown

    def __post_init__(self) -> None:
        self.events = EmitterGroup(self, ("result", "source_state", "running", "paused", "stages", "thresholds",
                                          "memo", "overlays", "recent_sources", "recording", "error", "bundle",
                                          "source"))
        self.stats = LiveStats()
        self.power = PowerHistory(None)

    # -- configuration --------------------------------------------------------------------------
    def set_bundle(self, path: str) -> None:
        self.bundle_path = path
        self.events.bundle(path)

    def set_source(self, uri: str) -> None:
        uri = uri.strip()
        self.source_uri = uri
        self.events.source(uri)

    def add_recent_source(self, uri: str) -> None:
        """Put ``uri`` first in the recent sources (no duplicates, at most MAX_RECENT_SOURCES)."""
        uri = uri.strip()
        if not uri:
            return
        items = [uri] + [u for u in self.recent_sources if u != uri]
        self.recent_sources = items[:MAX_RECENT_SOURCES]
        self.events.recent_sources(list(self.recent_sources))

    def set_overlay(self, name: str, on: bool) -> None:
        if name not in OverlayToggles.names():
            raise KeyError("unknown overlay %r; overlays: %s" % (name, ", ".join(OverlayToggles.names())))
        setattr(self.overlays, name, bool(on))
        self.events.overlays(self.overlays)

    def set_stages(self, stages: List[StageInfo], labels: Sequence[str] = (), memo_enabled: Optional[bool] = None,
                   memo_radius: Optional[int] = None) -> None:
        self.stages = list(stages)
        self.labels = list(labels)
        if memo_enabled is not None:
            self.memo_enabled = bool(memo_enabled)
        if memo_radius is not None:
            self.memo_radius = int(memo_radius)
        self.events.stages(self.stages)

    def set_threshold(self, stage: int, value: float) -> None:
        self.stages[stage].threshold = float(value)
        self.events.thresholds([s.threshold for s in self.stages])

    def set_score(self, stage: int, name: str) -> None:
        self.stages[stage].score = name
        self.events.stages(self.stages)

    def set_memo(self, enabled: bool, radius: int) -> None:
        self.memo_enabled, self.memo_radius = bool(enabled), int(radius)
        self.events.memo((self.memo_enabled, self.memo_radius))

    # -- run state --------------------------------------------------------------------------------
    def set_running(self, running: bool) -> None:
        self.running = bool(running)
        if not running:
            self.paused = False
        self.events.running(self.running)

    def set_paused(self, paused: bool) -> None:
        self.paused = bool(paused)
        self.events.paused(self.paused)

    def set_source_state(self, state: str, detail: str = "") -> None:
        if state == self.source_state and detail == self.source_detail:
            return
        self.source_state, self.source_detail = state, detail
        self.events.source_state((state, detail))

    def set_recording(self, path: Optional[str]) -> None:
        self.recording_path = path
        self.events.recording(path)

    def set_error(self, message: Optional[str]) -> None:
        self.error = message
        self.events.error(message)

    def ingest(self, result: Any, now: Optional[float] = None) -> None:
        """A new result to show: update the statistics, then tell the views."""
        self.latest = result
        self.stats.add(result, now)
        if self.power.available:
            self.power.note_answers(result.counters.answers)
        self.events.result(result)
