"""The live pipeline: source → regions → tracker → per-track crop → cascade (through the memo cache).

One :class:`Pipeline` object is driven by both the CLI (``edgeconf run`` / ``edgeconf demo``) and the
GUI worker. :meth:`Pipeline.step` processes the newest frame and never waits on the source longer
than its timeout; :meth:`Pipeline.run` loops until the source ends, ``max_frames`` or a stop.

Classification policy, so that an object that has not changed costs nothing: a track is classified
only on frames where it was matched to a detection, and only when its crop's memo key moved more than
``track_key_radius`` bits from the key it had at its last classification, or ``refresh_frames`` passed,
or the cascade's fingerprint changed (a threshold moved). And only from a clear view (``clear_views``):
not while its box is cut by the frame border (an object coming in or going out: its box within 1 px of an edge, or
within ``edge_margin`` px once the track shows a class with confidence >= ``edge_keep_confidence``, which it then
keeps) or overlaps another
track's box by more than ``overlap_limit`` of its area (crossing or touching objects, whose crop holds
parts of both); a track that had no clear view for ``refresh_frames`` frames is answered anyway. Crops that do need an answer go to the
cascade in one ``classify_batch`` call, where the memo cache may still answer them. Both ways of
answering without a model are counted as memo hits (``track_key_hits`` and ``cache_hits`` separately).

What a track shows: the class its answers name (an EMA), ``unknown`` when they say no class, and ``unknown`` too while
it is short of evidence: the mean score of its detections below ``class_min_score`` (the regions' ``class_score``; the
shipped detector's is ``DETECTOR_CLASS_SCORE``) and fewer than ``class_answers`` of its answers naming a class.
"""
from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgeconf.cascade import UNKNOWN_LABEL
from edgeconf.errors import ConfigError, EdgeconfError
from edgeconf.live.defaults import CLASS_ANSWERS, DEFAULT_REGIONS
from edgeconf.live.tracking import Track, Tracker

log = logging.getLogger(__name__)

Box = Tuple[float, float, float, float]


# -- results ----------------------------------------------------------------------------------------
@dataclass
class TrackResult:
    """One confirmed track on one frame, with its (smoothed) cascade answer."""

    id: int
    box: Box
    class_id: Optional[int]
    label: Optional[str]
    confidence: Optional[float]  # EMA of the cascade's confidence score over this track's answers
    stage: Optional[int]  # stage that gave the latest model answer (None before the first answer)
    memo_hit: bool  # this frame's answer came from the memo (track key or memo cache), no model ran
    uncertainty_px: float  # 1-sigma radius of the Kalman centre covariance
    frames_since_match: int
    velocity: Tuple[float, float]  # px / frame
    ellipse: Tuple[float, float, float] = (0.0, 0.0, 0.0)  # 2-sigma (semi-major, semi-minor, angle deg)
    classified: bool = False  # the track got an answer this frame (model or memo)
    score: float = 0.0  # score of the last matched detection
    remote_failure: Optional[str] = None  # this frame's answer is a local fallback: the remote stage failed (why)
    unknown: bool = False  # the cascade calls it no class it knows (class_id None, label "unknown")

    def to_json(self) -> dict:
        d = {"id": self.id, "box": [round(v, 1) for v in self.box], "class": self.class_id, "label": self.label,
             "unknown": self.unknown,
             "confidence": _round_opt(self.confidence), "stage": self.stage,
             "memo_hit": self.memo_hit, "uncertainty_px": round(self.uncertainty_px, 2),
             "frames_since_match": self.frames_since_match,
             "velocity": [round(self.velocity[0], 2), round(self.velocity[1], 2)]}
        if self.remote_failure is not None:
            d["remote_failure"] = self.remote_failure
        return d


@dataclass
class FrameTimings:
    """Milliseconds spent per part of one step."""

    source_ms: float = 0.0  # waiting for the frame
    regions_ms: float = 0.0
    tracking_ms: float = 0.0
    classify_ms: float = 0.0  # crops, keys and the cascade
    total_ms: float = 0.0  # whole step including the wait

    @property
    def processing_ms(self) -> float:
        return self.total_ms - self.source_ms

    def to_json(self) -> dict:
        return {k: round(v, 3) for k, v in (("source", self.source_ms), ("regions", self.regions_ms),
                                             ("tracking", self.tracking_ms), ("classify", self.classify_ms),
                                             ("total", self.total_ms))}


@dataclass
class PipelineCounters:
    """Counters since the pipeline started (``*_recent``: over the last ``window`` frames)."""

    frames: int = 0
    errors: int = 0
    fps: float = 0.0
    tracks: int = 0  # confirmed tracks on the latest frame
    answers: int = 0  # track answers given (model, memo cache or unchanged track key)
    model_inputs: int = 0  # crops that ran at least one model
    cache_hits: int = 0  # answered by the cascade's memo cache
    track_key_hits: int = 0  # answered because the track's key had not changed
    exits: List[int] = field(default_factory=list)  # model answers kept from each stage
    stage_calls: List[int] = field(default_factory=list)  # inputs each stage ran on
    model_seconds: float = 0.0  # model time of the local stages' invocations (this board's compute)
    escalation_rate_recent: Optional[float] = None
    memo_hit_rate_recent: Optional[float] = None
    frames_dropped: int = 0  # by the source (newest-frame policy)
    power_w: Optional[float] = None
    remote_calls: int = 0  # of remote_inputs, crops sent to the server in a request (answered or not)
    remote_failures: int = 0  # of remote_inputs, answered by the last local stage instead
    remote_reasons: Dict[str, int] = field(default_factory=dict)  # why (timeout, unavailable, error, circuit_open)
    unknown: int = 0  # track answers that were "unknown" (no class), whichever way they were answered
    remote_seconds: float = 0.0  # wall time waiting on remote stages (the server's work and the network, not this board's)
    unknown_evidence: int = 0  # of ``unknown``: shown unknown only by the evidence rule (the answers named a class)
    #: crops that reached a remote stage: sent to its server (remote_calls), or answered here without a request
    #: (its circuit breaker open: remote_reasons['circuit_open']; or their deadline passed while queued)
    remote_inputs: int = 0

    @property
    def unknown_rate(self) -> Optional[float]:
        """Share of track answers shown as "unknown", for any reason: the cascade's unknown verdict (an OOD head) or
        the evidence rule (a track short of evidence shows "unknown" though its answers name a class), so it is
        measured for every bundle, with or without an OOD head; None before the first answer."""
        return self.unknown / self.answers if self.answers else None

    @property
    def unknown_evidence_rate(self) -> Optional[float]:
        """Share of track answers shown as "unknown" only by the evidence rule (part of :attr:`unknown_rate`)."""
        return self.unknown_evidence / self.answers if self.answers else None

    @property
    def memo_hits(self) -> int:
        return self.cache_hits + self.track_key_hits

    @property
    def memo_hit_rate(self) -> Optional[float]:
        return self.memo_hits / self.answers if self.answers else None

    @property
    def escalation_rate(self) -> Optional[float]:
        """Share of model inputs that went past the first stage."""
        if not self.model_inputs or len(self.stage_calls) < 2:
            return None
        return self.stage_calls[1] / self.model_inputs

    @property
    def classifications(self) -> int:
        return self.answers

    @property
    def model_calls_saved(self) -> int:
        """Answers that needed no model at all."""
        return self.answers - self.model_inputs

    def to_json(self) -> dict:
        r = _round_opt
        return {"frames": self.frames, "errors": self.errors, "fps": round(self.fps, 2), "tracks": self.tracks,
                "answers": self.answers, "model_inputs": self.model_inputs, "cache_hits": self.cache_hits,
                "track_key_hits": self.track_key_hits, "memo_hit_rate": r(self.memo_hit_rate),
                "memo_hit_rate_recent": r(self.memo_hit_rate_recent), "exits": list(self.exits),
                "stage_calls": list(self.stage_calls), "escalation_rate": r(self.escalation_rate),
                "escalation_rate_recent": r(self.escalation_rate_recent),
                "model_calls_saved": self.model_calls_saved, "model_seconds": round(self.model_seconds, 6),
                "remote_seconds": round(self.remote_seconds, 6),
                "frames_dropped": self.frames_dropped, "power_w": r(self.power_w), "remote_inputs": self.remote_inputs,
                "remote_calls": self.remote_calls,
                "remote_failures": self.remote_failures, "remote_reasons": dict(self.remote_reasons),
                "unknown": self.unknown, "unknown_rate": r(self.unknown_rate),
                "unknown_evidence": self.unknown_evidence, "unknown_evidence_rate": r(self.unknown_evidence_rate)}


def _round_opt(v: Optional[float], nd: int = 4) -> Optional[float]:
    """``v`` rounded, or None where it is None or not finite (a broken stage's NaN): JSON has no NaN."""
    return None if v is None or not math.isfinite(v) else round(float(v), nd)


@dataclass
class FrameResult:
    """Everything the pipeline knows after one frame."""

    frame_index: int
    image: np.ndarray  # the frame, RGB uint8
    tracks: List[TrackResult]
    timings: FrameTimings
    counters: PipelineCounters
    timestamp_s: float = 0.0
    truth: Optional[list] = None  # the source's ground truth, when it knows it (demo://)
    detections: int = 0
    error: Optional[str] = None  # set when this frame failed (the pipeline carries on)

    def to_json(self) -> dict:
        d = {"frame": self.frame_index, "t": round(self.timestamp_s, 4), "tracks": [t.to_json() for t in self.tracks],
             "detections": self.detections, "ms": self.timings.to_json()}
        if self.error:
            d["error"] = self.error
        return d


# -- helpers ----------------------------------------------------------------------------------------
def crop_box(image: np.ndarray, box: Sequence[float], pad: float = 0.0) -> Optional[np.ndarray]:
    """The part of ``image`` inside ``box`` (grown by ``pad`` × size on each side), or None if empty."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    if pad:
        px, py = (x2 - x1) * pad, (y2 - y1) * pad
        x1, y1, x2, y2 = x1 - px, y1 - py, x2 + px, y2 + py
    xa, ya = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    xb, yb = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
    if xb - xa < 2 or yb - ya < 2:
        return None
    return image[ya:yb, xa:xb]


def read_power_w(meter: Any) -> Optional[float]:
    """Latest total power in watts from an energy meter (``edgeconf.devices.meter.EnergyMeter``: its
    ``latest`` sample's ``total_mw``), or None when there is no reading (never invented)."""
    if meter is None:
        return None
    sample = getattr(meter, "latest", None)
    if callable(sample):
        try:
            sample = sample()
        except Exception:  # a meter that fails to read is "not measured"
            return None
    total_mw = getattr(sample, "total_mw", None)
    if total_mw is None:
        return None
    try:
        value = float(total_mw) / 1000.0
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


# -- the pipeline ---------------------------------------------------------------------------------
class Pipeline:
    """Source → regions → tracker → crops → cascade; thread-safe knobs for a GUI.

    ``regions`` is a spec string (``detector``, the default: the shipped detector; ``detector:PATH.onnx``,
    ``motion``, ``full``, ``truth``) or an object with ``propose(image) -> detections``. ``tracker`` defaults
    to a :class:`Tracker`. Crops are the tracker's filtered box (``crop_from``) shrunk by ``crop_pad`` of
    its size on each side (negative: smaller).
    """

    def __init__(self, cascade: Any, source: Any, regions: Union[str, Any] = DEFAULT_REGIONS, tracker: Optional[Tracker] = None,
                 refresh_frames: int = 30, meter: Any = None, track_key_radius: Optional[int] = None,
                 crop_pad: float = -0.03, max_consecutive_errors: int = 100, window: int = 60,
                 classify_lost: bool = False, clear_views: bool = True, overlap_limit: float = 0.1,
                 crop_from: str = "track", edge_margin: float = 8.0, edge_keep_confidence: float = 0.9,
                 class_min_score: Optional[float] = None, class_answers: int = CLASS_ANSWERS) -> None:
        if getattr(cascade, "preprocessing", None) is None:
            raise ConfigError("the pipeline needs a cascade with preprocessing (load it with load_bundle)")
        if refresh_frames < 1:
            raise ConfigError("refresh_frames must be >= 1, got %d" % refresh_frames)
        self.cascade = cascade
        self.source = source
        self.regions_spec = regions if isinstance(regions, str) else type(regions).__name__
        if isinstance(regions, str):
            from edgeconf.live.regions import make_regions

            regions = make_regions(regions)
        if getattr(regions, "name", "") == "truth" and getattr(source, "has_truth", True) is False:
            raise ConfigError("regions 'truth' use the ground-truth boxes that only demo:// frames carry; %s has none: "
                              "use --regions detector (the default), motion, full or detector:MODEL.onnx" % getattr(source, "uri", "this source"))
        self.regions = regions
        # evidence before a track shows a class: its detections' mean score, or class_answers answers naming a class
        if class_answers < 1:
            raise ConfigError("class_answers must be >= 1, got %d" % class_answers)
        score = class_min_score if class_min_score is not None else getattr(regions, "class_score", None)
        self.class_min_score: Optional[float] = float(score) if score else None
        self.class_answers = int(class_answers)
        # Unrelated stills (a folder of photos): every image is its own scene, so each object is answered on the
        # image it is in, instead of after the two sightings a video track needs to be confirmed.
        self.stills = bool(getattr(source, "stills", False))
        self.tracker = tracker if tracker is not None else (Tracker(min_hits=1) if self.stills else Tracker())
        self.refresh_frames = int(refresh_frames)
        self.meter = meter
        self.crop_pad = float(crop_pad)
        self.classify_lost = bool(classify_lost)
        self.clear_views = bool(clear_views)
        if crop_from not in ("detection", "track"):
            raise ConfigError("crop_from must be 'detection' (the matched box) or 'track' (the Kalman-filtered box)")
        self.crop_from = crop_from
        self.overlap_limit = float(overlap_limit)
        if edge_margin < 1.0:
            raise ConfigError("edge_margin must be >= 1 pixel, got %r" % edge_margin)
        self.edge_margin = float(edge_margin)
        self.edge_keep_confidence = float(edge_keep_confidence)
        self.max_consecutive_errors = int(max_consecutive_errors)
        memo = getattr(cascade, "memo", None)
        self._memo_settings = (memo.capacity, memo.kind) if memo is not None else (4096, "dhash256")
        # track-level key tolerance, default 5/32 of the hash bits (40 of 256): on the demo scene the same
        # object's crop moves <= 40 bits between frames 90 % of the time, while 99 % of pairs of different
        # objects are more than 43 bits apart (measured with a 256-bit dHash); refresh_frames bounds staleness
        self.track_key_radius = int(track_key_radius) if track_key_radius is not None else self._default_track_radius()
        self._lock = threading.RLock()
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._consecutive_errors = 0
        self.last_error: Optional[str] = None
        self.last_result: Optional[FrameResult] = None
        n = len(cascade.stages)
        self.counters = PipelineCounters(exits=[0] * n, stage_calls=[0] * n)
        self._remote_stages = frozenset(cascade.remote_stages)
        self._base = self._cascade_totals()
        self._remote_base = self._remote_totals()
        self._frame_times: Deque[float] = collections.deque(maxlen=max(2, window))
        self._recent: Deque[Tuple[int, int, int, int]] = collections.deque(maxlen=max(1, window))
        self.latencies_ms: Deque[float] = collections.deque(maxlen=100000)
        self.crops_per_frame: Dict[int, int] = collections.Counter()  # track answers per frame → frames
        self._check_cascade()

    # -- setup -----------------------------------------------------------------------------------
    def _default_track_radius(self) -> int:
        memo = self.cascade.memo
        bits = memo.bits if memo is not None else 256
        return bits * 5 // 32 if bits else 0

    def _check_cascade(self) -> None:
        """Run the first stage once on a blank crop so a bundle that cannot take crops fails now, clearly."""
        pre = self.cascade.preprocessing
        st = self.cascade.stages[0]
        blank = np.zeros((32, 32, 3), dtype=np.uint8)
        try:
            st.runner.run(pre.batch([blank]), output_names=[st.logits])
        except Exception as exc:
            raise ConfigError("the bundle's preprocessing does not fit its first model: crops become %s (%s) but the "
                              "model rejects them (%s); fix 'preprocessing' in edgeconf.json"
                              % (pre.input_shape, pre.dtype, str(exc).splitlines()[0][:200])) from None

    def _remote_totals(self) -> Tuple[int, int, int, Dict[str, int]]:
        """The cascade's remote inputs, of them those sent, those that fell back, and why."""
        c = self.cascade.counters
        return (int(getattr(c, "remote_inputs", 0)), int(getattr(c, "remote_sent", 0)),
                int(getattr(c, "remote_failures", 0)), dict(getattr(c, "remote_reasons", {}) or {}))

    def _cascade_totals(self) -> Tuple[List[int], List[int], List[float]]:
        c = self.cascade.counters
        return list(c.exits), list(c.calls), list(c.stage_seconds)

    # -- knobs (thread-safe) ---------------------------------------------------------------------
    def set_threshold(self, stage: int, value: float) -> None:
        """Change a stage's exit threshold on the running cascade (memo answers follow the new fingerprint)."""
        with self._lock:
            if not 0 <= stage < len(self.cascade.stages):
                raise ConfigError("stage %d does not exist; the cascade has %d stages" % (stage, len(self.cascade.stages)))
            self.cascade.set_threshold(stage, value)

    def set_memo(self, enabled: bool, radius: Optional[int] = None, track_key_radius: Optional[int] = None) -> None:
        """Turn the memo on or off, or change its Hamming radius (a new, empty cache)."""
        from edgeconf.memo import MemoCache

        with self._lock:
            cur = self.cascade.memo
            if not enabled:
                self.cascade.memo = None
                return
            capacity, kind = self._memo_settings
            r = radius if radius is not None else (cur.radius if cur is not None else 0)
            if cur is None or r != cur.radius:
                self.cascade.memo = MemoCache(capacity, kind, int(r))
            if track_key_radius is not None:
                if track_key_radius < 0:
                    raise ConfigError("track_key_radius must be >= 0")
                self.track_key_radius = int(track_key_radius)

    @property
    def memo_enabled(self) -> bool:
        return self.cascade.memo is not None

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def source_state(self) -> Any:
        return getattr(self.source, "state", None)

    @property
    def source_done(self) -> bool:
        """The source will give no more frames (a finite source ended, or it failed)."""
        st = getattr(self.source_state, "value", self.source_state)
        return str(st) in ("ended", "failed")

    # -- one frame -------------------------------------------------------------------------------
    def step(self, timeout: float = 0.1) -> Optional[FrameResult]:
        """Process the newest frame; None when none arrived within ``timeout`` (or while paused)."""
        if self._paused.is_set():
            return None
        t0 = time.perf_counter()
        frame = self.source.read(timeout)
        t1 = time.perf_counter()
        if frame is None:
            return None
        timings = FrameTimings(source_ms=(t1 - t0) * 1e3)
        try:
            with self._lock:
                result = self._process(frame, timings, t1)
            self._consecutive_errors = 0
        except Exception as exc:  # one bad frame never kills the pipeline
            self._consecutive_errors += 1
            self.counters.errors += 1
            msg = "%s: %s" % (type(exc).__name__, exc)
            self.last_error = msg
            log.warning("frame %s failed: %s", getattr(frame, "index", "?"), msg)
            timings.total_ms = (time.perf_counter() - t0) * 1e3
            image = getattr(frame, "image", None)
            result = FrameResult(int(getattr(frame, "index", -1)), image if isinstance(image, np.ndarray) else np.zeros((1, 1, 3), np.uint8),
                                 [], timings, self._snapshot(), float(getattr(frame, "timestamp_s", 0.0) or 0.0),
                                 getattr(frame, "truth", None), 0, msg)
            if self._consecutive_errors >= self.max_consecutive_errors:
                raise EdgeconfError("the pipeline failed on %d frames in a row; last error: %s"
                                    % (self._consecutive_errors, msg)) from exc
        timings.total_ms = (time.perf_counter() - t0) * 1e3
        self.latencies_ms.append(timings.processing_ms)
        self.last_result = result
        return result

    def _process(self, frame: Any, timings: FrameTimings, t_start: float) -> FrameResult:
        image = frame.image
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            raise ValueError("frame %s is not an H×W×3 uint8 image (got %s %s)"
                             % (getattr(frame, "index", "?"), getattr(image, "shape", None), getattr(image, "dtype", None)))
        ta = time.perf_counter()
        dets = self._propose(frame)
        tb = time.perf_counter()
        if self.stills:
            self.tracker.reset()
        tracks = self.tracker.update(dets)
        tc = time.perf_counter()
        results = self._classify(image, tracks)
        td = time.perf_counter()
        timings.regions_ms = (tb - ta) * 1e3
        timings.tracking_ms = (tc - tb) * 1e3
        timings.classify_ms = (td - tc) * 1e3
        c = self.counters
        c.frames += 1
        c.tracks = len(results)
        self._frame_times.append(td)
        ft = self._frame_times
        c.fps = (len(ft) - 1) / (ft[-1] - ft[0]) if len(ft) >= 2 and ft[-1] > ft[0] else 0.0
        c.frames_dropped = int(getattr(self.source, "frames_dropped", 0) or 0)
        c.power_w = read_power_w(self.meter)
        return FrameResult(int(frame.index), image, results, timings, self._snapshot(),
                           float(getattr(frame, "timestamp_s", 0.0) or 0.0), getattr(frame, "truth", None), len(dets))

    def _propose(self, frame: Any) -> list:
        """Regions for a frame; proposers that take the whole Frame (``truth`` needs its ground truth) get it,
        and proposers that use the tracker's predictions (``motion``) get those first."""
        observe = getattr(self.regions, "observe_tracks", None)
        if observe is not None:
            observe(self.tracker.predicted_boxes())
        propose_frame = getattr(self.regions, "propose_frame", None)
        if propose_frame is not None:
            return list(propose_frame(frame))
        return list(self.regions.propose(frame.image))

    def _classify(self, image: np.ndarray, tracks: List[Track]) -> List[TrackResult]:
        cascade = self.cascade
        memo = cascade.memo
        fp = cascade.fingerprint()
        frame_no = self.counters.frames
        todo: List[Tuple[Track, np.ndarray, Any]] = []
        fresh: Dict[int, bool] = {}  # internal id -> memo hit (answered this frame)
        fallback: Dict[int, str] = {}  # internal id -> why its remote stage failed this frame
        track_hits = 0
        unclear = self._unclear(tracks, image.shape) if self.clear_views and not self.stills else set()
        for t in tracks:
            if t.frames_since_match and not self.classify_lost:
                continue
            if t.internal_id in unclear:
                waited = t.user.get("unclear_since", frame_no)
                t.user["unclear_since"] = waited
                if t.answers or frame_no - waited < self.refresh_frames:
                    continue  # wait for a clear view; the previous answer (if any) stays on screen
            else:
                t.user.pop("unclear_since", None)
            use_track = t.frames_since_match or self.crop_from == "track"
            crop = crop_box(image, t.box if use_track else t.last_box, self.crop_pad)
            if crop is None:
                continue
            key = memo.key(crop) if memo is not None else None
            u = t.user
            if (memo is not None and u.get("fp") == fp and u.get("key") is not None
                    and frame_no - u.get("frame", -10 ** 9) < self.refresh_frames
                    and memo.distance(key, u["key"]) <= self.track_key_radius):
                fresh[t.internal_id] = True  # unchanged object: the previous answer stands
                track_hits += 1
                continue
            todo.append((t, crop, key))
        cache_hits = 0
        if todo:
            answers = cascade.classify_batch([crop for _, crop, _ in todo])
            for (t, _, key), res in zip(todo, answers):
                if res.unknown:
                    t.observe_unknown(None if res.memo_hit else res.stage)
                else:
                    t.observe_class(res.probs, res.confidence, None if res.memo_hit else res.stage)
                if res.memo_hit and t.stage is None:
                    t.stage = res.stage
                remote_failure = getattr(res, "remote_failure", None)
                if remote_failure is None:
                    t.user.update(key=key, fp=fp, frame=frame_no, label_stage=res.stage)
                else:  # a fallback answer stands for this frame only: ask again on the next one
                    t.user.update(key=None, label_stage=res.stage)
                    fallback[t.internal_id] = remote_failure
                fresh[t.internal_id] = bool(res.memo_hit)
                cache_hits += int(res.memo_hit)
        c = self.counters
        n_answers = len(fresh)
        c.answers += n_answers
        by_evidence = {t.internal_id for t in tracks if not t.unknown and self._short_of_evidence(t)}
        shown_unknown = {t.internal_id for t in tracks if t.unknown} | by_evidence
        c.unknown += sum(1 for t in tracks if t.internal_id in fresh and t.internal_id in shown_unknown)
        c.unknown_evidence += sum(1 for t in tracks if t.internal_id in fresh and t.internal_id in by_evidence)
        c.track_key_hits += track_hits
        c.cache_hits += cache_hits
        c.model_inputs += len(todo) - cache_hits
        self.crops_per_frame[n_answers] += 1
        exits, calls, secs = self._cascade_totals()
        b_exits, b_calls, b_secs = self._base
        prev_calls = list(c.stage_calls)
        c.exits = [a - b for a, b in zip(exits, b_exits)]
        c.stage_calls = [a - b for a, b in zip(calls, b_calls)]
        remote = self._remote_stages
        c.model_seconds = float(sum(a - b for k, (a, b) in enumerate(zip(secs, b_secs)) if k not in remote))
        c.remote_seconds = float(sum(a - b for k, (a, b) in enumerate(zip(secs, b_secs)) if k in remote))
        r_inputs, r_sent, r_fail, r_reasons = self._remote_totals()
        rb_inputs, rb_sent, rb_fail, rb_reasons = self._remote_base
        c.remote_inputs, c.remote_calls, c.remote_failures = r_inputs - rb_inputs, r_sent - rb_sent, r_fail - rb_fail
        c.remote_reasons = {k: v - rb_reasons.get(k, 0) for k, v in r_reasons.items() if v - rb_reasons.get(k, 0)}
        new_inputs = (c.stage_calls[0] - prev_calls[0]) if prev_calls else 0
        new_esc = (c.stage_calls[1] - prev_calls[1]) if len(prev_calls) > 1 else 0
        self._recent.append((new_inputs, new_esc, n_answers, track_hits + cache_hits))
        ins = sum(r[0] for r in self._recent)
        c.escalation_rate_recent = (sum(r[1] for r in self._recent) / ins) if ins and len(c.stage_calls) > 1 else None
        ans = sum(r[2] for r in self._recent)
        c.memo_hit_rate_recent = sum(r[3] for r in self._recent) / ans if ans else None
        labels = cascade.labels
        out = []
        for t in tracks:
            unknown = t.internal_id in shown_unknown
            cid = None if unknown else t.class_id
            if unknown:
                label: Optional[str] = UNKNOWN_LABEL
            else:
                label = labels[cid] if labels and cid is not None and 0 <= cid < len(labels) else None
            out.append(TrackResult(
                id=t.id, box=t.box, class_id=cid, label=label, confidence=None if unknown else t.confidence,
                stage=t.user.get("label_stage"), memo_hit=fresh.get(t.internal_id, False),
                uncertainty_px=t.uncertainty_px, frames_since_match=t.frames_since_match, velocity=t.velocity,
                ellipse=t.ellipse(2.0), classified=t.internal_id in fresh, score=t.score,
                remote_failure=fallback.get(t.internal_id), unknown=unknown))
        return out

    def _short_of_evidence(self, t: Track) -> bool:
        """The track's answers name a class but it may not show one yet (``class_min_score``, ``class_answers``)."""
        return t.short_of_evidence(self.class_min_score, self.class_answers)

    def _unclear(self, tracks: List[Track], shape: Tuple[int, ...]) -> set:
        """Internal ids of matched tracks whose crop would not show the object alone: cut by the frame border on
        one side (the box within 1 px of it, or within ``edge_margin`` px for a track that shows a class with a
        confidence of at least ``edge_keep_confidence``), or
        overlapped by another matched track's box by more than ``overlap_limit`` of its area."""
        h, w = shape[:2]
        live = [t for t in tracks if not t.frames_since_match]
        if not live:
            return set()
        boxes = np.array([t.last_box for t in live], dtype=np.float64)
        out = set()
        # a box within 1 px of an edge is cut; a track that shows a class with confidence >= edge_keep_confidence
        # keeps it within edge_margin px: the detector's boxes end 1-3 px short of the edge on objects the border
        # cuts (it sees the frame at half size), and a crop cut there is mostly answered "unknown" or wrongly
        keep = self.edge_keep_confidence
        m = np.array([self.edge_margin if t.class_id is not None and (t.confidence or 0.0) >= keep else 1.0
                      for t in live])
        x1, y1, x2, y2 = boxes[:, 0] <= m, boxes[:, 1] <= m, boxes[:, 2] >= w - m, boxes[:, 3] >= h - m
        cut = (x1 ^ x2) | (y1 ^ y2)  # touching both sides of an axis is an object as big as the frame, not a cut
        ix = np.clip(np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(boxes[:, None, 0], boxes[None, :, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[:, None, 3], boxes[None, :, 3]) - np.maximum(boxes[:, None, 1], boxes[None, :, 1]), 0, None)
        inter = ix * iy
        np.fill_diagonal(inter, 0.0)
        area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-9)
        covered = inter.max(axis=1) / area > self.overlap_limit if len(live) > 1 else np.zeros(len(live), bool)
        for t, c, o in zip(live, cut, covered):
            if c or o:
                out.add(t.internal_id)
        return out

    def _snapshot(self) -> PipelineCounters:
        c = self.counters
        return PipelineCounters(c.frames, c.errors, c.fps, c.tracks, c.answers, c.model_inputs, c.cache_hits,
                                c.track_key_hits, list(c.exits), list(c.stage_calls), c.model_seconds,
                                c.escalation_rate_recent, c.memo_hit_rate_recent, c.frames_dropped, c.power_w,
                                c.remote_calls, c.remote_failures, dict(c.remote_reasons), c.unknown,
                                c.remote_seconds, c.unknown_evidence, c.remote_inputs)

    # -- loop ------------------------------------------------------------------------------------
    def run(self, max_frames: Optional[int] = None, on_result: Optional[Callable[[FrameResult], Any]] = None,
            stop_event: Optional[threading.Event] = None, timeout: float = 0.1) -> PipelineCounters:
        """Process frames until the source ends, ``max_frames`` were processed, or a stop; returns the counters."""
        done = 0
        while not self._stop.is_set() and not (stop_event is not None and stop_event.is_set()):
            if self._paused.is_set():
                time.sleep(0.02)
                continue
            res = self.step(timeout)
            if res is None:
                if self.source_done:
                    break
                continue
            done += 1
            if on_result is not None:
                on_result(res)
            if max_frames is not None and done >= max_frames:
                break
        return self._snapshot()

    def latency_percentiles(self) -> Dict[str, Optional[float]]:
        """p50/p95/max of per-frame processing time (excluding the wait for the source), in ms."""
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        if lat.size == 0:
            return {"p50": None, "p95": None, "max": None}
        return {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)), "max": float(lat.max())}

    def close(self) -> None:
        """Stop and close the source (the cascade belongs to the caller)."""
        self.stop()
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
