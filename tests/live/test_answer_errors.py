"""The breakdown of matched track-frames by what they showed and why (edgeconf.live.answer_errors)."""
from __future__ import annotations

from edgeconf.live.answer_errors import AnswerLog, view_of
from edgeconf.live.frames import TruthObject

SIZE = (640, 480)


class T:
    def __init__(self, id, box, class_id=None, unknown=False):
        self.id, self.box, self.class_id, self.unknown = id, box, class_id, unknown


def test_views_border_occluded_clear():
    assert view_of(TruthObject(1, (0.0, 50.0, 40.0, 90.0), 3), SIZE) == "border"
    assert view_of(TruthObject(1, (600.0, 50.0, 639.5, 90.0), 3), SIZE) == "border"
    assert view_of(TruthObject(1, (50.0, 50.0, 90.0, 90.0), 3, visible_fraction=0.9), SIZE) == "occluded"
    assert view_of(TruthObject(1, (50.0, 50.0, 90.0, 90.0), 3), SIZE) == "clear"


def test_each_matched_track_frame_is_counted_once_under_its_cause():
    a = (100.0, 100.0, 140.0, 140.0)  # object 1 (class 3, item 10), clear
    b = (300.0, 100.0, 340.0, 140.0)  # object 2 (class 4, item 20: the classifier gets its original wrong)
    shown_on_1 = [(None, False), (None, True), (5, False), (3, False), (5, False), (3, False), (3, False)]
    log = AnswerLog()
    frame = 0
    for cls, unknown in shown_on_1:
        truth = [TruthObject(1, a, 3, item=10), TruthObject(2, b, 4, item=20)]
        log.update(frame, truth, [T(7, a, cls, unknown), T(8, b, 6)], SIZE)
        frame += 1
    # track 8 jumps onto object 1 (an identity switch) and shows a wrong class there; object 1 at the border now
    edge = (0.0, 100.0, 40.0, 140.0)
    log.update(frame, [TruthObject(1, edge, 3, item=10)], [T(8, edge, 6)], SIZE)
    # a track never matched (a box on nothing) is not counted at all
    log.update(frame + 1, [TruthObject(1, a, 3, item=10)], [T(9, (500.0, 400.0, 540.0, 440.0), 3)], SIZE)
    counts = log.breakdown(wrong_items={20})
    assert counts["no answer yet"] == {"clear": 1, "all": 1}
    assert counts["unknown: no class shown before"] == {"clear": 1, "all": 1}
    assert counts["wrong: early"] == {"clear": 1, "all": 1}  # 5 before the track ever showed 3
    assert counts["wrong: flicker"] == {"clear": 1, "all": 1}  # 5 after it had shown 3
    assert counts["right"] == {"clear": 3, "all": 3}
    assert counts["wrong: classifier wrong on the original"] == {"clear": 7, "all": 7}
    assert counts["wrong: identity switch"] == {"border": 1, "all": 1}
    assert sum(v["all"] for v in counts.values()) == 7 + 7 + 1


def test_a_track_wrong_on_most_of_its_frames_is_not_called_early():
    box = (100.0, 100.0, 140.0, 140.0)
    log = AnswerLog()
    for f, cls in enumerate([2, 2, 2, 3, 2]):
        log.update(f, [TruthObject(1, box, 3, item=1)], [T(5, box, cls)], SIZE)
    counts = log.breakdown()
    assert counts["wrong: track mostly wrong"]["all"] == 4 and counts["right"]["all"] == 1
    after_unknown = AnswerLog()
    for f, (cls, unk) in enumerate([(3, False), (None, True)]):
        after_unknown.update(f, [TruthObject(1, box, 3)], [T(5, box, cls, unk)], SIZE)
    assert after_unknown.breakdown()["unknown: after a class"] == {"clear": 1, "all": 1}
