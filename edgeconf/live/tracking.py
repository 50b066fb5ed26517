"""Multi-object tracking: a constant-velocity Kalman filter per track, Hungarian assignment on IoU,
and ByteTrack's second association with low-score detections.

Each track exposes how sure the tracker is of it: ``uncertainty_px`` (square root of the largest
eigenvalue of the Kalman position covariance, in pixels), the frames since its last matched detection,
and a class/confidence smoothed over the cascade's answers (an EMA over class probabilities).

Rules: only high-score detections start tracks; a new track is *tentative* until it has been matched
``min_hits`` times (a tentative track that misses a frame is dropped); a confirmed track survives
``max_lost`` frames without a match, coasting on its prediction, then dies. Low-score detections are
matched, after the high-score ones, only to tracks that were matched on the previous frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from edgeconf.errors import ConfigError
from edgeconf.lazy import require

Box = Tuple[float, float, float, float]

TENTATIVE = "tentative"
CONFIRMED = "confirmed"
REMOVED = "removed"


# -- geometry ---------------------------------------------------------------------------------------
def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N×4, x1 y1 x2 y2) with every box in ``b`` (M×4)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _xyxy_to_cxcywh(box: Sequence[float]) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0, max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)])


def _cxcywh_to_xyxy(z: np.ndarray) -> Box:
    cx, cy, w, h = (float(v) for v in z[:4])
    w, h = max(w, 1e-3), max(h, 1e-3)
    return (cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0)


# -- Kalman filter --------------------------------------------------------------------------------
class KalmanBoxFilter:
    """Constant-velocity Kalman filter on (cx, cy, w, h) with velocities, one step per frame.

    Noise scales with the box size (as in DeepSORT/BoT-SORT): ``std_position`` and ``std_velocity``
    are fractions of the box width/height.
    """

    def __init__(self, std_position: float = 1.0 / 20, std_velocity: float = 1.0 / 160) -> None:
        self.std_position = float(std_position)
        self.std_velocity = float(std_velocity)
        self.F = np.eye(8)
        self.F[:4, 4:] = np.eye(4)
        self.H = np.eye(4, 8)

    def initiate(self, z: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        w, h = z[2], z[3]
        sp, sv = self.std_position, self.std_velocity
        mean = np.concatenate([z, np.zeros(4)])
        std = np.array([2 * sp * w, 2 * sp * h, 2 * sp * w, 2 * sp * h, 10 * sv * w, 10 * sv * h, 10 * sv * w, 10 * sv * h])
        return mean, np.diag(np.square(std))

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        w, h = mean[2], mean[3]
        sp, sv = self.std_position, self.std_velocity
        q = np.square(np.array([sp * w, sp * h, sp * w, sp * h, sv * w, sv * h, sv * w, sv * h]))
        mean = self.F @ mean
        cov = self.F @ cov @ self.F.T + np.diag(q)
        return mean, cov

    def update(self, mean: np.ndarray, cov: np.ndarray, z: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        w, h = mean[2], mean[3]
        sp = self.std_position
        r = np.square(np.array([sp * w, sp * h, sp * w, sp * h]))
        s = self.H @ cov @ self.H.T + np.diag(r)
        pht = cov @ self.H.T
        gain = np.linalg.solve(s, pht.T).T  # K = P Hᵀ S⁻¹ (S is symmetric)
        mean = mean + gain @ (z - self.H @ mean)
        cov = cov - gain @ s @ gain.T
        cov = (cov + cov.T) / 2.0
        return mean, cov


# -- tracks ----------------------------------------------------------------------------------------
class Track:
    """One tracked object: Kalman state, bookkeeping, and the smoothed cascade answer."""

    def __init__(self, internal_id: int, box: Sequence[float], score: float, kf: KalmanBoxFilter,
                 class_id: Optional[int] = None) -> None:
        self.internal_id = internal_id
        self.id = 0  # public id, given when the track is confirmed (so ids count real objects)
        self.mean, self.cov = kf.initiate(_xyxy_to_cxcywh(box))
        self.state = TENTATIVE
        self.hits = 1
        self.age = 1  # frames since birth, including this one
        self.frames_since_match = 0
        self.score = float(score)
        self.score_sum = float(score)  # of every detection matched to this track, its first included (mean: /hits)
        self.detector_class = class_id
        self.last_box: Box = tuple(float(v) for v in box)  # type: ignore[assignment]
        # smoothed cascade answer
        self.class_probs: Optional[np.ndarray] = None
        self.confidence: Optional[float] = None
        self.stage: Optional[int] = None
        self.answers = 0
        self.class_answers = 0  # answers that named a class (not "unknown")
        self.unknown_rate: Optional[float] = None  # EMA of the cascade's "unknown" verdicts (1: no class)
        self._last_unknown = False
        self.user: dict = {}  # free slot for the pipeline's per-track bookkeeping

    # geometry
    @property
    def box(self) -> Box:
        """The filtered box (x1, y1, x2, y2); while the track coasts, its prediction."""
        return _cxcywh_to_xyxy(self.mean)

    @property
    def center(self) -> Tuple[float, float]:
        return float(self.mean[0]), float(self.mean[1])

    @property
    def velocity(self) -> Tuple[float, float]:
        """Centre velocity in pixels per frame."""
        return float(self.mean[4]), float(self.mean[5])

    @property
    def position_covariance(self) -> np.ndarray:
        """2×2 covariance of the box centre, in px²."""
        return self.cov[:2, :2].copy()

    @property
    def uncertainty_px(self) -> float:
        """Square root of the largest eigenvalue of the centre covariance: a 1-sigma radius in pixels."""
        return float(np.sqrt(max(0.0, float(np.linalg.eigvalsh(self.cov[:2, :2])[-1]))))

    def ellipse(self, sigmas: float = 2.0) -> Tuple[float, float, float]:
        """(semi-major px, semi-minor px, angle in degrees) of the ``sigmas``-sigma centre ellipse."""
        vals, vecs = np.linalg.eigh(self.cov[:2, :2])
        vals = np.clip(vals, 0.0, None)
        major = vecs[:, 1]
        angle = float(np.degrees(np.arctan2(major[1], major[0])))
        return float(sigmas * np.sqrt(vals[1])), float(sigmas * np.sqrt(vals[0])), angle

    @property
    def mean_score(self) -> float:
        """Mean score of the detections matched to this track (its objectness, by the region proposer)."""
        return self.score_sum / max(1, self.hits)

    def short_of_evidence(self, min_score: Optional[float], min_answers: int) -> bool:
        """True while this track may not show a class: it has answers, fewer than ``min_answers`` of them named a
        class, and the mean score of its detections is below ``min_score`` (None: never short)."""
        return (min_score is not None and self.answers > 0 and self.class_answers < min_answers
                and self.mean_score < min_score)

    @property
    def is_confirmed(self) -> bool:
        return self.state == CONFIRMED

    # class smoothing
    @property
    def class_id(self) -> Optional[int]:
        if self.unknown:
            return None
        if self.class_probs is None:
            return self.detector_class
        return int(np.argmax(self.class_probs))

    @property
    def unknown(self) -> bool:
        """Recent answers (their EMA) say this is no class the cascade knows; a tie goes to the latest answer."""
        r = self.unknown_rate
        return r is not None and (r > 0.5 or (r == 0.5 and self._last_unknown))

    def observe_unknown(self, stage: Optional[int] = None, alpha: float = 0.5) -> None:
        """Fold an ``unknown`` answer in: it moves the unknown EMA, never the class probabilities."""
        self.unknown_rate = 1.0 if self.answers == 0 else (1.0 - alpha) * (self.unknown_rate or 0.0) + alpha
        self._last_unknown = True
        self.stage = stage
        self.answers += 1

    def observe_class(self, probs: np.ndarray, confidence: float, stage: Optional[int] = None, alpha: float = 0.5) -> None:
        """Fold one cascade answer into the EMA of class probabilities and of confidence."""
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if self.class_probs is None or self.class_probs.shape != p.shape:
            self.class_probs = p.copy()
            self.confidence = float(confidence)
        else:
            self.class_probs = (1.0 - alpha) * self.class_probs + alpha * p
            self.confidence = (1.0 - alpha) * float(self.confidence or 0.0) + alpha * float(confidence)
        self.unknown_rate = (1.0 - alpha) * (self.unknown_rate or 0.0)
        self._last_unknown = False
        self.stage = stage
        self.answers += 1
        self.class_answers += 1

    def __repr__(self) -> str:
        return "Track(id=%d, state=%s, box=%s, lost=%d)" % (self.id, self.state, tuple(round(v, 1) for v in self.box),
                                                           self.frames_since_match)


@dataclass
class TrackerConfig:
    """Thresholds of the tracker (defaults follow ByteTrack, with a short tentative phase)."""

    high_score: float = 0.5  # detections at or above: first association, may start tracks
    low_score: float = 0.1  # detections in [low, high): second association only; below: ignored
    new_track_score: float = 0.5  # a leftover high detection needs this to start a track
    match_iou: float = 0.2  # least IoU for a match in the first association
    low_match_iou: float = 0.5  # least IoU for a match in the second (low-score) association
    tentative_match_iou: float = 0.3  # least IoU for matching tentative tracks
    min_hits: int = 2  # matches before a track is confirmed (and gets its id)
    max_lost: int = 30  # frames a confirmed track survives without a match
    std_position: float = 1.0 / 20
    std_velocity: float = 1.0 / 160

    def validate(self) -> None:
        if not 0.0 <= self.low_score <= self.high_score <= 1.0:
            raise ConfigError("tracker: need 0 <= low_score <= high_score <= 1 (got %r, %r)" % (self.low_score, self.high_score))
        if self.min_hits < 1 or self.max_lost < 0:
            raise ConfigError("tracker: min_hits must be >= 1 and max_lost >= 0")
        for name in ("match_iou", "low_match_iou", "tentative_match_iou"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError("tracker: %s must be in (0, 1]" % name)


def _det_fields(det: Any) -> Tuple[Box, float, Optional[int]]:
    """Box, score and class of a detection (an object with .box/.score or a tuple (box, score[, class]))."""
    if hasattr(det, "box"):
        return tuple(det.box), float(getattr(det, "score", 1.0)), getattr(det, "class_id", None)  # type: ignore[return-value]
    box, score = det[0], det[1]
    return tuple(box), float(score), (det[2] if len(det) > 2 else None)  # type: ignore[return-value]


def assign(cost: np.ndarray, max_cost: float) -> Tuple[List[Tuple[int, int]], List[int], List[int]]:
    """Hungarian assignment; pairs whose cost exceeds ``max_cost`` are left unmatched."""
    n, m = cost.shape
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    opt = require("scipy.optimize", "tracking (Hungarian assignment)")
    rows, cols = opt.linear_sum_assignment(cost)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols) if cost[r, c] <= max_cost]
    mr = {r for r, _ in pairs}
    mc = {c for _, c in pairs}
    return pairs, [r for r in range(n) if r not in mr], [c for c in range(m) if c not in mc]


class Tracker:
    """Multi-object tracker; call :meth:`update` once per frame with that frame's detections."""

    def __init__(self, config: Optional[TrackerConfig] = None, **overrides: Any) -> None:
        cfg = config or TrackerConfig()
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise ConfigError("tracker: unknown option %r" % k)
            setattr(cfg, k, v)
        cfg.validate()
        # import scipy now, not on the first frame (a half-second stall that a live source pays in dropped frames)
        require("scipy.optimize", "tracking (Hungarian assignment)")
        self.config = cfg
        self.kf = KalmanBoxFilter(cfg.std_position, cfg.std_velocity)
        self.tracks: List[Track] = []
        self.frame = 0
        self._next_internal = 1
        self._next_id = 1

    def reset(self) -> None:
        self.tracks = []
        self.frame = 0
        self._next_internal = 1
        self._next_id = 1

    @property
    def confirmed(self) -> List[Track]:
        return [t for t in self.tracks if t.state == CONFIRMED]

    def predicted_boxes(self, max_lost: int = 1, min_hits: int = 5) -> List[Box]:
        """Where the established tracks (confirmed, matched at least ``min_hits`` times, last within ``max_lost``
        frames) will be on the next frame, by their Kalman prediction; nothing changes (``update`` predicts
        again). Region proposers use these to split a blob that covers several objects and to join the pieces
        of one; young tracks are left out, as they are more often noise than objects."""
        out = []
        for t in self.tracks:
            if t.state == CONFIRMED and t.frames_since_match <= max_lost and t.hits >= min_hits:
                out.append(_cxcywh_to_xyxy(self.kf.F @ t.mean))
        return out

    def update(self, detections: Sequence[Any]) -> List[Track]:
        """Advance one frame: predict, associate, birth and death. Returns the confirmed tracks
        (including those coasting without a match; see ``frames_since_match``)."""
        cfg = self.config
        self.frame += 1
        for t in self.tracks:
            t.mean, t.cov = self.kf.predict(t.mean, t.cov)
            t.age += 1
        boxes: List[Box] = []
        scores: List[float] = []
        classes: List[Optional[int]] = []
        for d in detections:
            b, s, c = _det_fields(d)
            if not (b[2] > b[0] and b[3] > b[1]) or not np.all(np.isfinite(b)):
                continue
            boxes.append(b)
            scores.append(s)
            classes.append(c)
        sc = np.asarray(scores, dtype=np.float64)
        det_boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        high = [i for i in range(len(boxes)) if sc[i] >= cfg.high_score]
        low = [i for i in range(len(boxes)) if cfg.low_score <= sc[i] < cfg.high_score]

        confirmed = [t for t in self.tracks if t.state == CONFIRMED]
        tentative = [t for t in self.tracks if t.state == TENTATIVE]
        matched = set()  # internal ids matched this frame

        def match(tracks: List[Track], det_idx: List[int], min_iou: float) -> Tuple[List[Track], List[int]]:
            if not tracks or not det_idx:
                return tracks, det_idx
            tb = np.array([t.box for t in tracks])
            iou = iou_matrix(tb, det_boxes[det_idx])
            pairs, rest_t, rest_d = assign(1.0 - iou, 1.0 - min_iou)
            for ti, di in pairs:
                j = det_idx[di]
                self._apply(tracks[ti], det_boxes[j], sc[j], classes[j])
                matched.add(tracks[ti].internal_id)
            return [tracks[i] for i in rest_t], [det_idx[i] for i in rest_d]

        # 1. confirmed tracks (active and lost) with high-score detections
        rest_conf, rest_high = match(confirmed, high, cfg.match_iou)
        # 2. tracks that were active on the previous frame with low-score detections (ByteTrack)
        active_rest = [t for t in rest_conf if t.frames_since_match == 0]
        still = match(active_rest, low, cfg.low_match_iou)[0]
        unmatched_conf = [t for t in rest_conf if t.frames_since_match > 0] + still
        # 3. tentative tracks with the leftover high-score detections
        rest_tent, rest_high = match(tentative, rest_high, cfg.tentative_match_iou)

        for t in unmatched_conf:
            t.frames_since_match += 1
            if t.frames_since_match > cfg.max_lost:
                t.state = REMOVED
        for t in rest_tent:
            t.state = REMOVED
        for t in self.tracks:
            if t.state == TENTATIVE and t.internal_id in matched and t.hits >= cfg.min_hits:
                self._confirm(t)
        # 4. births from high-score detections only
        for j in rest_high:
            if sc[j] < cfg.new_track_score:
                continue
            t = Track(self._next_internal, det_boxes[j], sc[j], self.kf, classes[j])
            self._next_internal += 1
            if cfg.min_hits <= 1:
                self._confirm(t)
            self.tracks.append(t)
        self.tracks = [t for t in self.tracks if t.state != REMOVED]
        return self.confirmed

    def _apply(self, t: Track, box: np.ndarray, score: float, class_id: Optional[int]) -> None:
        t.mean, t.cov = self.kf.update(t.mean, t.cov, _xyxy_to_cxcywh(box))
        t.hits += 1
        t.frames_since_match = 0
        t.score = float(score)
        t.score_sum += float(score)
        t.last_box = tuple(float(v) for v in box)  # type: ignore[assignment]
        if class_id is not None:
            t.detector_class = class_id

    def _confirm(self, t: Track) -> None:
        t.state = CONFIRMED
        t.id = self._next_id
        self._next_id += 1
