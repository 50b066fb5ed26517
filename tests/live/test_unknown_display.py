"""Unknown answers in tracks, overlays and pipeline counters."""
from __future__ import annotations

import os

import numpy as np

from edgeconf.live.overlay import UNKNOWN_COLOUR, confidence_colour, draw_overlays, track_colour, track_label
from edgeconf.live.pipeline import FrameResult, FrameTimings, PipelineCounters, TrackResult
from edgeconf.live.tracking import KalmanBoxFilter, Track


def _track():
    return Track(1, (10, 10, 40, 40), 0.9, KalmanBoxFilter())


def test_track_unknown_follows_the_majority_of_recent_answers():
    t = _track()
    p = np.eye(10)[3]
    t.observe_class(p, 0.9)
    assert t.class_id == 3 and not t.unknown
    t.observe_unknown(0)
    assert t.unknown and t.class_id is None  # EMA 0.5, a tie: the latest answer decides
    t.observe_class(p, 0.9)
    assert not t.unknown and t.class_id == 3  # EMA 0.25
    t.observe_unknown(0)
    assert t.unknown  # EMA 0.625
    first = _track()
    first.observe_unknown(0)
    assert first.unknown and first.unknown_rate == 1.0
    np.testing.assert_allclose(t.class_probs, p)  # unknown answers never move the class probabilities


def _result(unknown):
    return TrackResult(id=4, box=(20.0, 20.0, 60.0, 60.0), class_id=None if unknown else 2,
                       label="unknown" if unknown else "Pullover", confidence=None if unknown else 0.8, stage=0,
                       memo_hit=False, uncertainty_px=1.0, frames_since_match=0, velocity=(0.0, 0.0), unknown=unknown)


def test_overlay_draws_unknown_in_its_own_colour():
    unk, known = _result(True), _result(False)
    assert track_label(unk) == "#4 unknown S1" and track_colour(unk) == UNKNOWN_COLOUR
    assert track_colour(known) == confidence_colour(0.8) != UNKNOWN_COLOUR
    assert UNKNOWN_COLOUR not in {confidence_colour(c) for c in np.linspace(0, 1, 101)} | {confidence_colour(None)}
    img = np.zeros((100, 100, 3), np.uint8)
    fr = FrameResult(0, img, [unk], FrameTimings(), PipelineCounters())
    out = draw_overlays(img, fr)
    assert (out.reshape(-1, 3) == np.array(UNKNOWN_COLOUR, np.uint8)).all(axis=1).any()
    assert unk.to_json()["unknown"] is True and unk.to_json()["class"] is None


def test_counters_report_the_unknown_rate():
    c = PipelineCounters(answers=8, unknown=2)
    assert c.unknown_rate == 0.25 and c.to_json()["unknown_rate"] == 0.25
    assert PipelineCounters().unknown_rate is None


def _run_zoo(regions, frames=150):
    from edgeconf.bundle import load_bundle
    from edgeconf.live.pipeline import Pipeline
    from edgeconf.live.sources import open_source
    from edgeconf.live.telemetry import StatusBuilder

    bundle = os.path.join(os.path.dirname(__file__), "..", "..", "edgeconf", "data", "zoo", "bundle")
    cascade = load_bundle(bundle)
    source = open_source("demo://?frames=%d&realtime=0" % frames)
    try:
        assert all(s.ood is None for s in cascade.stages)  # no OOD head: the cascade never answers "unknown"
        pipe = Pipeline(cascade, source, regions=regions)
        c = pipe.run(max_frames=frames)
        return c, StatusBuilder(pipe)()
    finally:
        source.close()
        cascade.close()


def test_unknown_rate_without_an_ood_head_counts_the_evidence_rule():
    # docs/pipeline.md and docs/fleet.md: unknown_rate is the share of answers shown "unknown" for any reason; without
    # an OOD head the evidence rule is the only reason, and unknown_evidence_rate says so
    c, status = _run_zoo("detector")
    assert c.answers > 0 and c.unknown > 0
    assert c.unknown_evidence == c.unknown
    assert c.unknown_rate == c.unknown / c.answers and c.unknown_evidence_rate == c.unknown_rate
    assert status["unknown_rate"] == round(c.unknown_rate, 4) == c.to_json()["unknown_rate"]
    assert status["unknown_evidence_rate"] == status["unknown_rate"]
    off, status_off = _run_zoo("detector:class_score=0")  # the rule off: nothing is shown unknown, and that is measured
    assert off.answers > 0 and off.unknown == 0 and off.unknown_evidence == 0
    assert off.unknown_rate == 0.0 and status_off["unknown_rate"] == 0.0
