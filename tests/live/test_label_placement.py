"""Labels of touching objects do not hide each other: ``place_label`` and both painters that use it."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from edgeconf.live.overlay import OverlayOptions, _overlaps, draw_overlays, place_label

FRAME = (0.0, 0.0, 640.0, 480.0)


def test_a_label_goes_above_its_box_when_that_place_is_free():
    assert place_label((100, 200, 80, 120), (90, 16), FRAME) == (100, 183, 90, 16)


def test_a_box_stacked_under_another_puts_its_label_where_no_label_is():
    upper = (100, 100, 80, 100)
    first = place_label(upper, (90, 16), FRAME)
    lower = (104, 201, 80, 100)  # touching the upper box: "above" is the upper box's bottom edge
    above_lower = place_label(lower, (90, 16), FRAME, [first])
    assert not _overlaps(first, above_lower)
    # a label placed on top of the upper box's label is refused: a box just below that label goes below instead
    crowded = (96, 100, 80, 100)  # same top edge as upper: its "above" place is exactly first's
    second = place_label(crowded, (90, 16), FRAME, [first])
    assert not _overlaps(first, second) and second[1] == 100 + 100 + 1


def test_at_the_top_edge_the_label_goes_below_and_every_place_stays_in_the_frame():
    r = place_label((600, 0, 60, 40), (90, 16), FRAME)
    assert r == (550, 41, 90, 16)  # pushed left to fit, below the box
    everywhere_taken = [(0, 0, 640, 480)]
    r = place_label((10, 10, 50, 50), (90, 16), FRAME, everywhere_taken)
    assert r == (10, 61, 90, 16)  # nowhere free: the first place inside the frame


def _track(i, box, label):
    return SimpleNamespace(id=i, box=box, label=label, class_id=1, confidence=0.9, stage=0, memo_hit=False,
                           frames_since_match=0, unknown=False, uncertainty_px=1.0, ellipse=(0.0, 0.0, 0.0))


def test_the_recorded_overlay_draws_two_separate_label_plates_for_boxes_with_the_same_top_edge():
    image = np.full((240, 320, 3), 255, np.uint8)  # white: the labels' black plates stand out
    tracks = [_track(1, (60, 100, 140, 180), "Coat"), _track(2, (66, 100, 146, 180), "Dress")]
    out = draw_overlays(image, SimpleNamespace(tracks=tracks),
                        OverlayOptions(boxes=False, uncertainty=False, hud=False))
    dark_rows = np.flatnonzero((out.max(axis=2) < 40).sum(axis=1) > 20)  # rows crossed by a label plate
    above = dark_rows[dark_rows < 100]
    below = dark_rows[dark_rows > 180]
    assert above.size and below.size  # one plate above the boxes, the other moved below them
