"""The GUI draws "unknown" answers in their own colour and explains it in the legend."""
from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytestmark = pytest.mark.gui

from edgeconf.gui.video import label_text  # noqa: E402
from edgeconf.gui.window import LEGEND  # noqa: E402
from edgeconf.live.overlay import UNKNOWN_COLOUR  # noqa: E402
from edgeconf.live.pipeline import TrackResult  # noqa: E402


def _track(unknown):
    return TrackResult(id=7, box=(0.0, 0.0, 10.0, 10.0), class_id=None if unknown else 1,
                       label="unknown" if unknown else "Trouser", confidence=None if unknown else 0.9, stage=0,
                       memo_hit=False, uncertainty_px=1.0, frames_since_match=0, velocity=(0.0, 0.0), unknown=unknown)


def test_unknown_label_and_legend():
    assert label_text(_track(True)) == "#7 unknown  S1"
    assert label_text(_track(False)).startswith("#7 Trouser 0.90")
    assert "unknown" in LEGEND and "#%02x%02x%02x" % UNKNOWN_COLOUR in LEGEND


def test_the_confidence_ticks_mark_tracks_as_the_video_labels_them():
    """'?' means "not answered yet" on the video and in the per-track panel; an unknown answer reads "unknown" in both."""
    from types import SimpleNamespace

    from edgeconf.gui.panels import tick_text
    from edgeconf.live.overlay import track_label

    waiting = SimpleNamespace(id=16, label=None, class_id=None, confidence=None, stage=None, unknown=False)
    unknown = SimpleNamespace(id=9, label="unknown", class_id=None, confidence=None, stage=0, unknown=True)
    known = SimpleNamespace(id=12, label="Bag", class_id=8, confidence=0.87, stage=1, unknown=False)
    assert "?" in track_label(waiting) and tick_text(waiting) == "#16 ?"
    assert "unknown" in track_label(unknown) and "?" not in track_label(unknown) and tick_text(unknown) == "#9 unknown"
    assert tick_text(known) == "#12"
