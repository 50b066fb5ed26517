"""Evaluate tracks against ground truth (the demo scene knows it): MOTA, IDF1 and ID switches through
``motmetrics``, and classification accuracy of the tracks' answers (tracks matched to truth boxes by IoU)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeconf.lazy import require
from edgeconf.live.tracking import assign, iou_matrix

#: The evaluation protocol's line between required and ignored truth: an object must be at least this visible
#: (in the frame, not hidden behind another object) to count as a miss when nobody tracks it.
REQUIRED_VISIBLE = 0.5


@dataclass
class TrackingMetrics:
    """CLEAR-MOT and identity metrics over a sequence."""

    frames: int
    mota: Optional[float]
    motp_iou: Optional[float]  # mean IoU of matched pairs
    idf1: Optional[float]
    id_switches: int
    matches: int
    misses: int
    false_positives: int
    truth_objects: int  # distinct ground-truth ids
    track_ids: int  # distinct hypothesis ids

    def to_json(self) -> dict:
        r = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
        return {"frames": self.frames, "mota": r(self.mota), "motp_iou": r(self.motp_iou), "idf1": r(self.idf1),
                "id_switches": self.id_switches, "matches": self.matches, "misses": self.misses,
                "false_positives": self.false_positives, "truth_objects": self.truth_objects, "track_ids": self.track_ids}


def _fields(obj: Any) -> Tuple[int, Tuple[float, float, float, float]]:
    if hasattr(obj, "box"):
        return int(obj.id), tuple(float(v) for v in obj.box)  # type: ignore[return-value]
    return int(obj[0]), tuple(float(v) for v in obj[1])  # type: ignore[return-value]


def _xywh(boxes: Sequence[Sequence[float]]) -> np.ndarray:
    a = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([a[:, 0], a[:, 1], a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]], axis=1) if len(a) else a


class TrackEvaluator:
    """Feed ``update(truth, tracks)`` once per frame; ``metrics()`` at the end.

    ``truth``: objects with ``id`` and ``box`` (x1, y1, x2, y2); ``tracks``: objects with ``id`` and ``box``
    (e.g. :class:`edgeconf.live.pipeline.TrackResult`). A pair counts as a match when IoU ≥ ``iou_threshold``.
    Truth objects less visible than ``min_visible`` (hidden behind another, or mostly outside the frame) are
    *ignored*, the way MOTChallenge treats its ignore regions: not required (no miss when nothing tracks them),
    and a track on one is neither a match nor a false positive (it is taken out of that frame first).
    """

    def __init__(self, iou_threshold: float = 0.5, min_visible: float = REQUIRED_VISIBLE) -> None:
        mm = require("motmetrics", "tracking metrics (MOTA, IDF1)")
        self._mm = mm
        self.iou_threshold = float(iou_threshold)
        self.min_visible = float(min_visible)
        self.acc = mm.MOTAccumulator(auto_id=True)
        self.frames = 0
        self._gt_ids: set = set()
        self._hyp_ids: set = set()

    def update(self, truth: Sequence[Any], tracks: Sequence[Any]) -> None:
        required = [float(getattr(t, "visible_fraction", 1.0)) >= self.min_visible for t in truth]
        gt = [_fields(t) for t, keep in zip(truth, required) if keep]
        hyp = [_fields(t) for t in tracks]
        ignored = [_fields(t)[1] for t, keep in zip(truth, required) if not keep]
        if ignored and hyp:
            hyp = self._drop_ignored(gt, hyp, ignored)
        gt_boxes = [b for _, b in gt]
        hyp_boxes = [b for _, b in hyp]
        if gt and hyp:
            dist = 1.0 - iou_matrix(gt_boxes, hyp_boxes)
            dist[dist > 1.0 - self.iou_threshold] = np.nan
        else:
            dist = np.empty((len(gt), len(hyp)))
        self.acc.update([i for i, _ in gt], [i for i, _ in hyp], dist)
        self._gt_ids.update(i for i, _ in gt)
        self._hyp_ids.update(i for i, _ in hyp)
        self.frames += 1

    def _drop_ignored(self, gt: list, hyp: list, ignored: list) -> list:
        """Tracks left over after matching the required objects that cover an ignored one are dropped."""
        free = list(range(len(hyp)))
        if gt:
            iou = iou_matrix([b for _, b in gt], [b for _, b in hyp])
            pairs, _, free = assign(1.0 - iou, 1.0 - self.iou_threshold)
        if not free:
            return hyp
        iou = iou_matrix(ignored, [hyp[j][1] for j in free])
        pairs, _, _ = assign(1.0 - iou, 1.0 - self.iou_threshold)
        drop = {free[c] for _, c in pairs}
        return [h for j, h in enumerate(hyp) if j not in drop]

    def metrics(self) -> TrackingMetrics:
        mm = self._mm
        names = ["mota", "motp", "idf1", "num_switches", "num_matches", "num_misses", "num_false_positives"]
        summary = mm.metrics.create().compute(self.acc, metrics=names, name="seq")
        row = summary.loc["seq"]

        def val(name: str) -> Optional[float]:
            v = float(row[name])
            return None if not np.isfinite(v) else v

        motp = val("motp")
        return TrackingMetrics(
            frames=self.frames, mota=val("mota"), motp_iou=None if motp is None else 1.0 - motp, idf1=val("idf1"),
            id_switches=int(row["num_switches"]), matches=int(row["num_matches"]), misses=int(row["num_misses"]),
            false_positives=int(row["num_false_positives"]), truth_objects=len(self._gt_ids), track_ids=len(self._hyp_ids))


@dataclass
class ClassificationScore:
    """Accuracy of the tracks' class answers on track-frames matched to a truth object."""

    correct: int = 0
    scored: int = 0  # matched track-frames that had a class answer
    unanswered: int = 0  # matched track-frames without an answer yet
    unknown: int = 0  # matched track-frames (all on true objects) answered "unknown"
    per_class: Optional[Dict[int, List[int]]] = None  # truth class -> [correct, scored]

    @property
    def accuracy(self) -> Optional[float]:
        """Right among the class answers (an "unknown" answer has no class)."""
        return self.correct / self.scored if self.scored else None

    @property
    def accuracy_unknown_wrong(self) -> Optional[float]:
        """Right among all answers, an "unknown" on a true object counted as wrong."""
        n = self.scored + self.unknown
        return self.correct / n if n else None

    @property
    def accuracy_all(self) -> Optional[float]:
        """Right among all matched track-frames, an "unknown" answer or none yet counted as wrong (what a viewer sees:
        the right class on the object, or not)."""
        n = self.scored + self.unknown + self.unanswered
        return self.correct / n if n else None

    def to_json(self) -> dict:
        r = lambda v: None if v is None else round(v, 4)  # noqa: E731
        return {"accuracy": r(self.accuracy), "accuracy_unknown_wrong": r(self.accuracy_unknown_wrong),
                "accuracy_all": r(self.accuracy_all), "correct": self.correct, "scored": self.scored,
                "unknown": self.unknown, "unanswered": self.unanswered}


class ClassificationEvaluator:
    """Matches tracks to truth boxes per frame (Hungarian on IoU ≥ ``iou_threshold``) and scores classes."""

    def __init__(self, iou_threshold: float = 0.5, min_visible: float = REQUIRED_VISIBLE) -> None:
        self.iou_threshold = float(iou_threshold)
        self.min_visible = float(min_visible)
        self.score = ClassificationScore(per_class={})

    def update(self, truth: Sequence[Any], tracks: Sequence[Any]) -> None:
        s = self.score
        for gt, track in match_required(truth, tracks, self.iou_threshold, self.min_visible):
            cid = getattr(track, "class_id", None)
            if cid is None:
                if getattr(track, "unknown", False):
                    s.unknown += 1
                else:
                    s.unanswered += 1
                continue
            truth_cls = int(gt.class_id)
            ok = int(cid) == truth_cls
            s.scored += 1
            s.correct += int(ok)
            row = s.per_class.setdefault(truth_cls, [0, 0])  # type: ignore[union-attr]
            row[0] += int(ok)
            row[1] += 1


def match_required(truth: Sequence[Any], tracks: Sequence[Any], iou_threshold: float = 0.5,
                   min_visible: float = REQUIRED_VISIBLE) -> List[Tuple[Any, Any]]:
    """(truth object, track) pairs of one frame: the truth objects at least ``min_visible`` visible, matched to
    tracks one to one by the Hungarian method on IoU, pairs below ``iou_threshold`` left out."""
    gt = [t for t in truth if float(getattr(t, "visible_fraction", 1.0)) >= min_visible]
    if not gt or not tracks:
        return []
    iou = iou_matrix([t.box for t in gt], [t.box for t in tracks])
    pairs, _, _ = assign(1.0 - iou, 1.0 - iou_threshold)
    return [(gt[gi], tracks[ti]) for gi, ti in pairs]
