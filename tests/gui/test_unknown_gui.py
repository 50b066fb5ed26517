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
