"""The tracker against scripted trajectories whose answers are known."""
from __future__ import annotations

import numpy as np
import pytest

from edgeconf.errors import ConfigError
from edgeconf.live.tracking import Tracker, TrackerConfig, iou_matrix


def box_at(cx, cy, w=40.0, h=40.0):
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def test_iou_matrix_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[0, 1] == pytest.approx(50 / 150)
    assert iou[0, 2] == 0.0
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_constant_velocity_velocity_and_prediction():
    tr = Tracker(min_hits=2)
    vx, vy = 4.0, -2.0
    for f in range(30):
        out = tr.update([(box_at(100 + vx * f, 300 + vy * f), 0.9)])
    assert len(out) == 1
    t = out[0]
    assert t.id == 1
    assert t.velocity == pytest.approx((vx, vy), abs=0.05)
    cx, cy = t.center
    assert (cx, cy) == pytest.approx((100 + vx * 29, 300 + vy * 29), abs=0.5)
    assert t.hits == 30 and t.age == 30 and t.frames_since_match == 0


def test_birth_needs_min_hits_and_ids_are_sequential():
    tr = Tracker(min_hits=3)
    assert tr.update([(box_at(50, 50), 0.9)]) == []
    assert tr.update([(box_at(52, 50), 0.9)]) == []
    out = tr.update([(box_at(54, 50), 0.9)])
    assert [t.id for t in out] == [1]
    # a one-frame blip never becomes a track and never consumes an id
    tr.update([(box_at(56, 50), 0.9), (box_at(400, 400), 0.9)])
    out = tr.update([(box_at(58, 50), 0.9)])
    assert [t.id for t in out] == [1]
    out = tr.update([(box_at(60, 50), 0.9), (box_at(300, 300), 0.9)])
    out = tr.update([(box_at(62, 50), 0.9), (box_at(300, 300), 0.9)])
    out = tr.update([(box_at(64, 50), 0.9), (box_at(300, 300), 0.9)])
    assert sorted(t.id for t in out) == [1, 2]


def test_missed_detections_track_survives_and_uncertainty_grows():
    tr = Tracker(min_hits=2, max_lost=10)
    for f in range(20):
        tr.update([(box_at(100 + 3 * f, 200), 0.9)])
    (t,) = tr.confirmed
    u0 = t.uncertainty_px
    growth = []
    for f in range(20, 28):  # 8 frames with no detection
        out = tr.update([])
        assert len(out) == 1 and out[0] is t
        growth.append(t.uncertainty_px)
    assert t.frames_since_match == 8
    assert all(b > a for a, b in zip([u0] + growth, growth)), (u0, growth)
    # it coasted on its velocity, so the object is picked up again where it now is
    assert t.center[0] == pytest.approx(100 + 3 * 27, abs=2.0)
    out = tr.update([(box_at(100 + 3 * 28, 200), 0.9)])
    assert [x.id for x in out] == [1] and t.frames_since_match == 0
    assert t.uncertainty_px < growth[-1]
    # after max_lost frames without a match the track dies
    for _ in range(11):
        out = tr.update([])
    assert out == [] and tr.tracks == []


def test_low_score_detections_keep_tracks_alive_but_never_start_them():
    tr = Tracker(high_score=0.6, low_score=0.1, min_hits=1)
    assert tr.update([(box_at(100, 100), 0.3)]) == []
    for _ in range(5):
        assert tr.update([(box_at(100, 100), 0.3)]) == []
    assert tr.tracks == []
    for f in range(5):
        tr.update([(box_at(300 + 2 * f, 100), 0.9)])
    (t,) = tr.confirmed
    for f in range(5, 15):  # the object is only weakly detected (occluded): low score
        out = tr.update([(box_at(300 + 2 * f, 100), 0.3)])
        assert [x.id for x in out] == [1]
        assert t.frames_since_match == 0
    # below low_score a detection is ignored: the track coasts
    tr.update([(box_at(330, 100), 0.05)])
    assert t.frames_since_match == 1


def test_crossing_objects_keep_their_ids():
    tr = Tracker(min_hits=2)
    ids_a, ids_b = set(), set()
    for f in range(60):
        a = box_at(50 + 6 * f, 200 + 0.5 * f)  # left → right
        b = box_at(410 - 6 * f, 215 - 0.5 * f)  # right → left, crossing at f = 30
        out = tr.update([(a, 0.9), (b, 0.9)])
        if f < 2:
            continue
        assert len(out) == 2
        for t in out:
            ca = np.hypot(t.center[0] - (a[0] + 20), t.center[1] - (a[1] + 20))
            cb = np.hypot(t.center[0] - (b[0] + 20), t.center[1] - (b[1] + 20))
            (ids_a if ca < cb else ids_b).add(t.id)
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b


def test_crossing_with_occlusion_gap():
    """At the crossing one object is hidden for a few frames; the prediction carries it through."""
    tr = Tracker(min_hits=2, max_lost=15)
    seen = {}
    for f in range(50):
        a = box_at(50 + 8 * f, 200)
        b = box_at(450 - 8 * f, 230)
        dets = [(a, 0.9)]
        if not 22 <= f <= 27:
            dets.append((b, 0.9))
        out = tr.update(dets)
        for t in out:
            if t.frames_since_match:
                continue
            who = "a" if abs(t.center[1] - 200) < abs(t.center[1] - 230) else "b"
            seen.setdefault(who, set()).add(t.id)
    assert len(seen["a"]) == 1 and len(seen["b"]) == 1 and seen["a"] != seen["b"]


def test_class_smoothing_is_an_ema_over_probabilities():
    tr = Tracker(min_hits=1)
    (t,) = tr.update([(box_at(10, 10), 0.9)])
    assert t.class_id is None and t.confidence is None
    t.observe_class(np.array([0.1, 0.9, 0.0]), 0.8, stage=0)
    assert t.class_id == 1 and t.confidence == pytest.approx(0.8)
    t.observe_class(np.array([0.0, 0.2, 0.8]), 0.6, stage=1)  # one odd answer does not flip the class
    assert t.class_id == 1
    assert t.class_probs == pytest.approx([0.05, 0.55, 0.4])
    assert t.confidence == pytest.approx(0.7) and t.stage == 1
    t.observe_class(np.array([0.0, 0.2, 0.8]), 0.6)
    assert t.class_id == 2


def test_ellipse_matches_covariance():
    tr = Tracker(min_hits=1)
    (t,) = tr.update([(box_at(100, 100, 80, 20), 0.9)])
    a, b, _ = t.ellipse(sigmas=1.0)
    assert a == pytest.approx(t.uncertainty_px) and b <= a
    assert a > b  # wider box → larger horizontal noise


def test_bad_options_are_typed_errors():
    with pytest.raises(ConfigError):
        Tracker(low_score=0.8, high_score=0.5)
    with pytest.raises(ConfigError):
        Tracker(nonsense=1)
    with pytest.raises(ConfigError):
        Tracker(TrackerConfig(min_hits=0))


def test_degenerate_detections_are_ignored():
    tr = Tracker(min_hits=1)
    assert tr.update([((10, 10, 10, 20), 0.9), ((0, 0, float("nan"), 5), 0.9)]) == []
