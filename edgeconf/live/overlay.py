"""Drawing of pipeline results onto a frame, as a pure function the recorder and the GUI share.

Boxes are coloured by confidence (red → yellow → green; violet for "unknown", an answer that is no class),
labelled "class conf stage" with a memo
marker ("M") when no model ran for the answer, and the tracker's 2-sigma centre uncertainty is
drawn as an ellipse. Works on RGB uint8 images and never modifies its input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

Colour = Tuple[int, int, int]
Rect = Tuple[float, float, float, float]  # x, y, width, height


@dataclass
class OverlayOptions:
    """What to draw (each overlay can be toggled)."""

    boxes: bool = True
    labels: bool = True
    uncertainty: bool = True
    memo_marker: bool = True
    coasting: bool = True  # draw tracks that are coasting without a match (dashed look: thinner box)
    hud: bool = True  # frame number, fps and track count in the corner
    font_scale: float = 0.45
    thickness: int = 2


#: boxes and labels of tracks the cascade answers "unknown" (no class it knows): violet, apart from the
#: red → yellow → green confidence scale, the grey of "no answer yet" and the blue uncertainty ellipse
UNKNOWN_COLOUR: Colour = (186, 140, 255)


def track_colour(track: Any) -> Colour:
    """The colour a track is drawn in: violet when unknown, else by its confidence."""
    if getattr(track, "unknown", False):
        return UNKNOWN_COLOUR
    return confidence_colour(getattr(track, "confidence", None))


def confidence_colour(confidence: Optional[float]) -> Colour:
    """RGB colour for a confidence in [0, 1]: red (0) → yellow (0.5) → green (1); grey when unknown."""
    if confidence is None or not np.isfinite(confidence):
        return (160, 160, 160)
    c = float(min(1.0, max(0.0, confidence)))
    if c < 0.5:
        return (230, int(round(60 + 2 * c * 170)), 40)
    return (int(round(230 - (c - 0.5) * 2 * 190)), 230, 40)


def track_label(track: Any) -> str:
    """"label conf S<stage>" plus " M" when the memo answered this frame."""
    if getattr(track, "unknown", False):
        stage = "" if track.stage is None else " S%d" % (int(track.stage) + 1)
        return "#%d unknown%s" % (track.id, stage)
    name = track.label if getattr(track, "label", None) else ("?" if track.class_id is None else str(track.class_id))
    conf = "--" if track.confidence is None else "%.2f" % track.confidence
    stage = "" if track.stage is None else " S%d" % (int(track.stage) + 1)
    return "#%d %s %s%s" % (track.id, name, conf, stage)


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def place_label(box: Rect, size: Tuple[float, float], bounds: Rect, taken: Sequence[Rect] = ()) -> Rect:
    """Where a box's label goes: just above the box, else just below it, else inside its top edge, the first of
    those inside ``bounds`` that covers no label in ``taken`` (touching objects would otherwise hide each other's
    labels); when every place is taken, the first one inside ``bounds``. Returns the label's rectangle."""
    bx, by, bw, bh = box
    w, h = size
    left, top, width, height = bounds
    x = min(max(left, bx), left + width - w)
    places = [(x, by - h - 1), (x, by + bh + 1), (x, by + 1)]
    inside = [(px, py, w, h) for px, py in places if top <= py and py + h <= top + height]
    if not inside:  # a frame too small for any: the bottom row
        inside = [(x, max(top, top + height - h), w, h)]
    for r in inside:
        if not any(_overlaps(r, t) for t in taken):
            return r
    return inside[0]


def draw_overlays(image: np.ndarray, frame_result: Any, options: Optional[OverlayOptions] = None) -> np.ndarray:
    """A copy of ``image`` (RGB uint8) with the tracks of ``frame_result`` drawn on it."""
    import cv2

    opt = options or OverlayOptions()
    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    taken: List[Rect] = []
    for t in getattr(frame_result, "tracks", []):
        if t.frames_since_match and not opt.coasting:
            continue
        colour = track_colour(t)
        x1, y1, x2, y2 = (int(round(v)) for v in t.box)
        thick = max(1, opt.thickness - (1 if t.frames_since_match else 0))
        if opt.uncertainty:
            a, b, angle = getattr(t, "ellipse", (0.0, 0.0, 0.0))
            if a <= 0:
                a = b = 2.0 * float(t.uncertainty_px)
            centre = (int(round((x1 + x2) / 2)), int(round((y1 + y2) / 2)))
            axes = (max(1, int(round(a))), max(1, int(round(b))))
            cv2.ellipse(out, centre, axes, float(angle), 0, 360, (80, 200, 255), 1, cv2.LINE_AA)
            cv2.circle(out, centre, 2, (80, 200, 255), -1, cv2.LINE_AA)
        if opt.boxes:
            cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
        if opt.labels:
            text = track_label(t)
            (tw, th), base = cv2.getTextSize(text, font, opt.font_scale, 1)
            memo = opt.memo_marker and getattr(t, "memo_hit", False)
            lw, lh = tw + 2 + (13 if memo else 0), th + base + 2  # the label's black plate (and its memo marker)
            lx, ly, _, _ = place_label((x1, y1, x2 - x1, y2 - y1), (lw, lh), (0, 0, w, h), taken)
            taken.append((lx, ly, lw, lh))
            tx, ty = int(lx), int(ly) + th + 3  # the text's baseline
            cv2.rectangle(out, (tx, ty - th - 3), (tx + tw + 2, ty + base - 1), (0, 0, 0), -1)
            cv2.putText(out, text, (tx + 1, ty - 1), font, opt.font_scale, colour, 1, cv2.LINE_AA)
            if memo:
                mx = tx + tw + 4
                cv2.rectangle(out, (mx, ty - th - 3), (mx + 11, ty + base - 1), (255, 0, 255), -1)
                cv2.putText(out, "M", (mx + 1, ty - 1), font, opt.font_scale * 0.8, (255, 255, 255), 1, cv2.LINE_AA)
    if opt.hud:
        c = getattr(frame_result, "counters", None)
        text = "frame %d" % getattr(frame_result, "frame_index", 0)
        if c is not None:
            text += "  %.1f fps  %d tracks" % (c.fps, c.tracks)
        cv2.rectangle(out, (0, 0), (8 + 8 * len(text), 18), (0, 0, 0), -1)
        cv2.putText(out, text, (4, 13), font, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return out
