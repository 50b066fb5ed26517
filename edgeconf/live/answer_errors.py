"""Where the class answers on true objects go wrong: every matched track-frame (a shown track matched to a required
truth object, as :class:`edgeconf.live.track_eval.ClassificationEvaluator` matches them) sorted by what it showed and
why, so an accuracy figure can be read as causes.

A wrong class is put down to the first of: the classifier gets the object's own 28×28 sample image wrong
(``wrong_items``: nothing the pipeline can fix); the track began on another object (an identity switch); most of
the track's class answers on this object are wrong (the crops, not the smoothing); the track had not yet shown the
right class on this object (early); it had (flicker). Every row is also split by the object's view on that frame:
``border`` (its box touches the frame edge), ``occluded`` (less than 95 % visible), or ``clear``.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Optional, Sequence, Tuple

from edgeconf.live.track_eval import REQUIRED_VISIBLE, match_required

WRONG_CAUSES = ("classifier wrong on the original", "identity switch", "track mostly wrong", "early", "flicker")


@dataclass
class MatchedFrame:
    """One track matched to one true object on one frame, and what the track showed."""

    frame: int
    truth_id: int
    truth_class: int
    item: Optional[int]  # the object's sample image (demo scene), None where unknown
    track_id: int
    shown: Optional[int]  # the class shown; None: "unknown" or no answer yet
    unknown: bool
    view: str  # clear, border or occluded


def view_of(obj: Any, size: Tuple[int, int]) -> str:
    """``border`` when the truth box touches the edge of a ``size`` (w, h) frame, ``occluded`` when less than 95 % of
    the object is visible, else ``clear``."""
    w, h = size
    x1, y1, x2, y2 = (float(v) for v in obj.box)
    if x1 <= 1.0 or y1 <= 1.0 or x2 >= w - 1.0 or y2 >= h - 1.0:
        return "border"
    return "occluded" if float(getattr(obj, "visible_fraction", 1.0)) < 0.95 else "clear"


class AnswerLog:
    """Feed ``update(frame, truth, tracks, size)`` once per frame (the shown tracks); ``breakdown()`` at the end."""

    def __init__(self, iou_threshold: float = 0.5, min_visible: float = REQUIRED_VISIBLE) -> None:
        self.iou_threshold = float(iou_threshold)
        self.min_visible = float(min_visible)
        self.rows: List[MatchedFrame] = []

    def update(self, frame: int, truth: Sequence[Any], tracks: Sequence[Any], size: Tuple[int, int]) -> None:
        for gt, track in match_required(truth, tracks, self.iou_threshold, self.min_visible):
            cid = getattr(track, "class_id", None)
            self.rows.append(MatchedFrame(int(frame), int(gt.id), int(gt.class_id), getattr(gt, "item", None),
                                          int(track.id), None if cid is None else int(cid),
                                          bool(getattr(track, "unknown", False)), view_of(gt, size)))

    def breakdown(self, wrong_items: Collection[int] = ()) -> Dict[str, Dict[str, int]]:
        """Counts per outcome (``right``, ``wrong: CAUSE``, ``unknown: …``, ``no answer yet``) and view, ``all`` included."""
        out: Dict[str, Dict[str, int]] = collections.defaultdict(lambda: collections.Counter())
        first_truth: Dict[int, int] = {}
        shown: Dict[Tuple[int, int], List[Optional[int]]] = collections.defaultdict(list)
        rows = sorted(self.rows, key=lambda r: r.frame)
        for r in rows:
            first_truth.setdefault(r.track_id, r.truth_id)
            shown[(r.track_id, r.truth_id)].append(r.shown)
        majority = {k: collections.Counter(c for c in v if c is not None).most_common(1) for k, v in shown.items()}
        seen_right: set = set()
        had_class: set = set()
        for r in rows:
            seg = (r.track_id, r.truth_id)
            if r.shown == r.truth_class:
                outcome = "right"
                seen_right.add(seg)
            elif r.shown is not None:
                outcome = "wrong: " + self._cause(r, wrong_items, first_truth, majority[seg], seg in seen_right)
            elif r.unknown:
                outcome = "unknown: after a class" if seg in had_class else "unknown: no class shown before"
            else:
                outcome = "no answer yet"
            if r.shown is not None:
                had_class.add(seg)
            out[outcome][r.view] += 1
            out[outcome]["all"] += 1
        return {k: dict(v) for k, v in out.items()}

    @staticmethod
    def _cause(r: MatchedFrame, wrong_items: Collection[int], first_truth: Dict[int, int], majority: list,
               seen_right: bool) -> str:
        if r.item is not None and r.item in wrong_items:
            return WRONG_CAUSES[0]
        if first_truth[r.track_id] != r.truth_id:
            return WRONG_CAUSES[1]
        if majority and majority[0][0] != r.truth_class:
            return WRONG_CAUSES[2]
        return WRONG_CAUSES[4] if seen_right else WRONG_CAUSES[3]
