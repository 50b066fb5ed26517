"""The operator window on demo:// (offscreen Qt): results, overlays, live knobs, run control, shutdown,
settings, and the power panel with a fake meter (the one mock: this machine has no power sensor)."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

pytest.importorskip("PySide6", reason="PySide6 is not installed (pip install '.[gui]')")
pytest.importorskip("pyqtgraph", reason="pyqtgraph is not installed (pip install '.[gui]')")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed")
from PySide6.QtCore import QSettings, Qt  # noqa: E402

from edgeconf.gui.window import MainWindow  # noqa: E402
from edgeconf.live.overlay import confidence_colour  # noqa: E402
from signals import SignalRecorder  # noqa: E402

pytestmark = pytest.mark.gui

DEMO = "demo://?size=640x480&objects=5&seed=3"
WAIT_MS = 20000


@pytest.fixture
def make_window(qtbot, settings, gui_bundle, tmp_path):
    windows = []

    def make(**kw):
        kw.setdefault("bundle", gui_bundle)
        kw.setdefault("source", DEMO)
        kw.setdefault("settings", settings)
        kw.setdefault("output_dir", str(tmp_path))
        kw.setdefault("regions", "truth")  # oracle boxes: objects are where the scene says, from frame 1
        w = MainWindow(**kw)
        qtbot.addWidget(w)
        w.resize(1400, 880)
        w.show()
        windows.append(w)
        return w

    yield make
    for w in windows:
        w.close()


def applied(win):
    """The running worker's ``applied`` signal, recorded (see tests/gui/signals.py: never ``qtbot.waitSignal``
    on a signal a worker thread emits)."""
    rec = getattr(win, "_test_applied", None)
    if rec is None or rec.worker is not win.worker:
        rec = SignalRecorder(win.worker.applied, win)
        rec.worker = win.worker
        win._test_applied = rec
    return rec


def wait_results(qtbot, win, n=1):
    for _ in range(n):
        with qtbot.waitSignal(win.resultShown, timeout=WAIT_MS) as blocker:
            pass
    return blocker.args[0]


def pause_and_settle(qtbot, win):
    """Pause the worker and let the last queued result land, so the view holds still."""
    win.controls.pause_button.setChecked(True)
    qtbot.wait(300)
    return win.video.result


def test_window_opens_on_demo_and_results_arrive_through_the_signal(qtbot, make_window):
    win = make_window()
    assert win.start()
    worker = win.worker
    with SignalRecorder(worker.resultReady, win).expect(qtbot, timeout=WAIT_MS):
        pass
    res = wait_results(qtbot, win, 3)
    assert res.image.shape == (480, 640, 3)
    # one slot feeds the model and the view, so they always hold the same result (a newer one than ``res`` may
    # already have landed while the wait returned: compare them to each other, not to ``res``)
    assert win.model.latest is not None and win.model.latest is win.video.result
    qtbot.waitUntil(lambda: win.model.source_state == "live", timeout=WAIT_MS)
    assert "LIVE" in win.state_label.text()
    assert len(win.controls.stage_rows) == 2  # the bundle's stages got a slider each
    assert "frame" in win.info_label.text()
    assert "regions truth (oracle regions" in win.info_label.text()  # the oracle is always labelled
    assert DEMO in win.model.recent_sources


def test_overlays_are_drawn_where_the_demo_objects_are(qtbot, make_window, tmp_path):
    win = make_window()
    win.start()
    qtbot.waitUntil(lambda: win.model.latest is not None and any(
        t.confidence is not None and not t.frames_since_match for t in win.model.latest.tracks), timeout=WAIT_MS)
    for name in ("labels", "uncertainty", "truth"):
        win.controls.overlay_checks[name].setChecked(False)
    res = pause_and_settle(qtbot, win)
    tracks = [t for t in res.tracks if t.confidence is not None and not t.frames_since_match]
    assert tracks and res.truth, "the demo scene should show classified objects"
    truth_boxes = np.array([o.box for o in res.truth])

    def left_edge_colour(image, t, to_xy):
        x1, y1, x2, y2 = t.box
        x, y = to_xy(x1, (y1 + y2) / 2)
        return np.array(image.pixelColor(int(round(x)), int(round(y))).getRgb()[:3])

    def on_truth(t):  # the track sits on a known demo object
        x1, y1, x2, y2 = t.box
        ix = np.clip(np.minimum(x2, truth_boxes[:, 2]) - np.maximum(x1, truth_boxes[:, 0]), 0, None)
        iy = np.clip(np.minimum(y2, truth_boxes[:, 3]) - np.maximum(y1, truth_boxes[:, 1]), 0, None)
        return (ix * iy).max() > 0.5 * (x2 - x1) * (y2 - y1)

    tracks = [t for t in tracks if on_truth(t)]
    assert tracks
    view = win.video
    to_widget = lambda x, y: (view.image_to_widget(x, y).x(), view.image_to_widget(x, y).y())  # noqa: E731
    grabbed = view.grab().toImage()
    hits = [np.abs(left_edge_colour(grabbed, t, to_widget) - confidence_colour(t.confidence)).max() <= 40 for t in tracks]
    assert sum(hits) >= max(1, len(tracks) // 2), "box edges should have the confidence colour"

    # the same pixels without the boxes are the video's own pixels
    win.controls.overlay_checks["boxes"].setChecked(False)
    bare = view.grab().toImage()
    assert sum(np.abs(left_edge_colour(bare, t, to_widget) - confidence_colour(t.confidence)).max() <= 40
               for t in tracks) < sum(hits)

    # labels: a dark label box just above the first track's box
    win.controls.overlay_checks["labels"].setChecked(True)
    t = min(tracks, key=lambda t: -t.box[1])
    x, y = to_widget(t.box[0] + 2, t.box[1])
    labelled = view.grab().toImage()
    above = np.array(labelled.pixelColor(int(x) + 2, int(y) - 6).getRgb()[:3])
    assert above.max() < 90 or t.box[1] < 20

    # the snapshot has the overlays at the frame's own resolution
    win.controls.overlay_checks["boxes"].setChecked(True)
    path = win.snapshot(str(tmp_path / "snap.png"))
    snap = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    assert snap.shape == (480, 640, 3)
    hits = [np.abs(snap[int(round((t.box[1] + t.box[3]) / 2)), int(round(t.box[0]))].astype(int)
                   - confidence_colour(t.confidence)).max() <= 40 for t in tracks]
    assert sum(hits) >= max(1, len(tracks) // 2)
    assert os.path.getsize(path) > 10000


def _calls(win):
    return list(win.worker.pipeline.counters.stage_calls)


def _escalation_after(qtbot, win, min_inputs=8):
    """Share of new stage-1 inputs that went on to stage 2, over the next ``min_inputs`` model inputs."""
    wait_results(qtbot, win, 2)  # frames fully processed after the change
    a = _calls(win)
    qtbot.waitUntil(lambda: _calls(win)[0] - a[0] >= min_inputs, timeout=WAIT_MS)
    b = _calls(win)
    return (b[1] - a[1]) / (b[0] - a[0])


def test_threshold_slider_changes_the_running_cascade_and_the_escalation_rate(qtbot, make_window):
    win = make_window()
    win.start()
    wait_results(qtbot, win, 2)
    cascade = win.worker.pipeline.cascade
    fp0 = cascade.fingerprint()
    slider = win.controls.stage_rows[0].slider
    with applied(win).expect(qtbot, lambda what, v: what == "threshold", timeout=WAIT_MS):
        slider.setValue(100)
    assert cascade.stages[0].threshold == pytest.approx(1.0)
    assert cascade.fingerprint() != fp0  # memo answers follow the new fingerprint
    assert win.model.stages[0].threshold == pytest.approx(1.0)
    high = _escalation_after(qtbot, win)
    with applied(win).expect(qtbot, lambda what, v: what == "threshold", timeout=WAIT_MS):
        slider.setValue(0)
    assert cascade.stages[0].threshold == 0.0
    low = _escalation_after(qtbot, win)
    assert high >= 0.9 and low == 0.0
    # the cascade panel shows the recent escalation
    win.refresh_panels()
    assert "escalation" in win.cascade_panel.summary.text()


def test_score_and_memo_controls_reach_the_cascade(qtbot, make_window):
    win = make_window()
    win.start()
    wait_results(qtbot, win)
    cascade = win.worker.pipeline.cascade
    with applied(win).expect(qtbot, lambda w, v: w == "score", timeout=WAIT_MS):
        win.controls.stage_rows[0].score.setCurrentText("maxp")
    assert cascade.stages[0].score == "maxp"
    with applied(win).expect(qtbot, lambda w, v: w == "memo", timeout=WAIT_MS):
        win.controls.memo_check.setChecked(False)
    assert cascade.memo is None
    with applied(win).expect(qtbot, lambda w, v: w == "memo" and v[0], timeout=WAIT_MS):
        win.controls.memo_check.setChecked(True)
    with applied(win).expect(qtbot, lambda w, v: w == "memo" and v[1] == 6, timeout=WAIT_MS):
        win.controls.radius_spin.setValue(6)
    assert cascade.memo is not None and cascade.memo.radius == 6


def test_pause_resume_and_stop(qtbot, make_window):
    win = make_window()
    win.start()
    wait_results(qtbot, win, 2)
    pause_and_settle(qtbot, win)
    assert win.model.paused and win.worker.pipeline.paused
    assert "PAUSED" in win.state_label.text()
    shown = []
    win.resultShown.connect(shown.append)
    qtbot.wait(600)
    assert shown == []
    win.controls.pause_button.setChecked(False)
    wait_results(qtbot, win, 2)
    assert not win.model.paused
    worker = win.worker
    with SignalRecorder(worker.finished, win).expect(qtbot, timeout=WAIT_MS):
        win.controls.stop_button.click()
    qtbot.waitUntil(lambda: not win.model.running, timeout=WAIT_MS)
    assert win.worker is None and not worker.isRunning()
    assert win.controls.start_button.isEnabled() and not win.controls.stop_button.isEnabled()
    assert worker.pipeline.source.state.value == "ended"  # the source was closed
    # and it starts again
    assert win.start()
    wait_results(qtbot, win)


def test_closing_stops_the_worker_and_finalises_recording_and_event_log(qtbot, make_window, tmp_path):
    events = str(tmp_path / "events.jsonl")
    win = make_window(events_path=events)
    win.start()
    wait_results(qtbot, win)
    video = str(tmp_path / "rec.avi")
    with applied(win).expect(qtbot, lambda w, v: w == "recording", timeout=WAIT_MS):
        win.set_recording(True, video)
    assert win.model.recording_path == video and win.controls.record_button.isChecked()
    wait_results(qtbot, win, 10)
    worker = win.worker
    win.close()
    assert not worker.isRunning()
    assert win.worker is None
    cap = cv2.VideoCapture(video)
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames >= 10  # the recording is a playable file
    lines = [json.loads(s) for s in open(events, encoding="utf-8")]
    kinds = [d["type"] for d in lines]
    assert kinds[0] == "start" and kinds[-1] == "stop" and "frame" in kinds and "recording" in kinds
    assert lines[-1]["counters"]["frames"] >= 10


def test_recording_toggle_writes_into_the_output_folder(qtbot, make_window, tmp_path):
    win = make_window(output_dir=str(tmp_path / "out"))
    win.start()
    wait_results(qtbot, win)
    with applied(win).expect(qtbot, lambda w, v: w == "recording" and v, timeout=WAIT_MS):
        win.controls.record_button.click()
    path = win.model.recording_path
    assert path.startswith(str(tmp_path / "out")) and path.endswith(".avi")
    wait_results(qtbot, win, 5)
    with applied(win).expect(qtbot, lambda w, v: w == "recording" and v is None, timeout=WAIT_MS):
        win.controls.record_button.click()
    assert win.model.recording_path is None and os.path.getsize(path) > 0


def test_power_panel_shows_a_fake_meters_rails_and_energy_per_answer(qtbot, make_window):
    from edgeconf.devices.meter import EnergyMeter

    from fakes import FakePowerSource

    meter = EnergyMeter(FakePowerSource(), rate_hz=50).start()
    try:
        win = make_window(meter=meter)
        assert win.power_panel.showing_plot is False or win.model.power.available
        win.start()
        wait_results(qtbot, win, 15)
        win.refresh_panels()
        qtbot.waitUntil(lambda: win.model.power.energy_per_answer_j() is not None, timeout=WAIT_MS)
        win.refresh_panels()
        panel = win.power_panel
        assert panel.showing_plot
        assert set(panel.curves) == {"total", "VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
        x, y = panel.curves["VDD_CPU_GPU_CV"].getData()
        assert y[-1] == pytest.approx(2.0) and x[-1] <= 0
        assert panel.curves["total"].getData()[1][-1] == pytest.approx(5.0)
        text = panel.summary.text()
        assert "5.00 W" in text and "energy per answer" in text and "not measured" not in text
        epa = win.model.power.energy_per_answer_j()
        assert 0 < epa < 5.0  # 5 W shared by several answers a second
    finally:
        if "win" in locals():
            win.close()
        meter.stop()


def test_power_panel_says_plainly_when_there_is_no_sensor(qtbot, make_window):
    from edgeconf.devices.meter import EnergyMeter
    from edgeconf.devices.power import NullSource

    win = make_window(meter=EnergyMeter(NullSource("no power sensor found (rapl: not readable)")))
    win.refresh_panels()
    assert not win.power_panel.showing_plot
    text = win.power_panel.no_sensor.text()
    assert "No power sensor" in text and "not measured" in text and "rapl" in text
    win2 = make_window(meter=None)
    win2.refresh_panels()
    assert "No power sensor" in win2.power_panel.no_sensor.text()


def test_settings_persist_in_the_given_qsettings(qtbot, make_window, settings, gui_bundle):
    win = make_window(source="demo://?seed=9")
    win.controls.overlay_checks["uncertainty"].setChecked(False)
    win.controls.radius_spin.setValue(3)
    win.model.add_recent_source("demo://?seed=9")
    win.close()
    assert settings.value("source") == "demo://?seed=9"
    again = make_window(bundle=None, source=None, regions=None)
    assert again.controls.source_text() == "demo://?seed=9"
    assert again.controls.bundle_text() == gui_bundle
    assert again.model.overlays.uncertainty is False
    assert again.model.memo_radius == 3
    assert "demo://?seed=9" in [again.controls.source_combo.itemText(i) for i in range(again.controls.source_combo.count())]
    # nothing was written to the user's own settings
    user = QSettings("edgeconf", "edgeconf-gui")
    assert user.value("source") is None


def test_a_source_that_cannot_open_is_reported_and_nothing_keeps_running(qtbot, make_window, tmp_path):
    win = make_window(source=str(tmp_path / "missing.mp4"))
    win.start()
    qtbot.waitUntil(lambda: not win.model.running, timeout=WAIT_MS)
    assert win.model.source_state == "failed"
    assert "missing.mp4" in (win.model.error or "")
    assert "FAILED" in win.state_label.text()


def test_a_bad_bundle_is_reported(qtbot, make_window, tmp_path):
    win = make_window(bundle=str(tmp_path))
    win.start()
    qtbot.waitUntil(lambda: not win.model.running, timeout=WAIT_MS)
    assert win.model.error and "Could not run" in win.video.placeholder


def test_the_per_track_panel_lists_exactly_the_tracks_on_screen(qtbot, make_window):
    from edgeconf.gui.model import shown_tracks

    win = make_window(source="demo://?size=640x480&objects=8&seed=2")
    win.start()
    for _ in range(40):
        wait_results(qtbot, win)
        assert win.confidence_panel.shown_ids == [t.id for t in shown_tracks(win.video.result, win.model.overlays)]
    # (not ``win.video.result is`` the waited result: on a loaded machine several queued results can land in
    # the event-loop pass that ends the wait, as test_window_opens_on_demo notes)
    assert win.confidence_panel.shown_ids
    res = pause_and_settle(qtbot, win)
    drawn = [t.id for t in shown_tracks(res, win.model.overlays)]
    assert win.confidence_panel.shown_ids == drawn
    from edgeconf.gui.panels import tick_text

    ticks = win.confidence_panel.plot.getAxis("bottom")._tickLevels[0]
    tracks = shown_tracks(res, win.model.overlays)
    # every bar's full tick when they fit, else "#id" (under every k-th bar when even that does not fit)
    assert all(label in (tick_text(tracks[i]), "#%d" % tracks[i].id) for i, label in ticks)
    assert win.confidence_panel.plot.toolTip() == "Bars, left to right: " + " · ".join(tick_text(t) for t in tracks)
    win.controls.overlay_checks["coasting"].setChecked(False)  # hiding coasting tracks hides their bars too
    assert win.confidence_panel.shown_ids == [t.id for t in res.tracks if not t.frames_since_match]


def test_shown_tracks_leaves_out_what_the_video_does_not_draw():
    from types import SimpleNamespace

    from edgeconf.gui.model import OverlayToggles, shown_tracks

    def tr(i, box, lost=0):
        return SimpleNamespace(id=i, box=box, frames_since_match=lost)

    res = SimpleNamespace(image=np.zeros((100, 200, 3), np.uint8),
                          tracks=[tr(1, (10, 10, 50, 50)), tr(2, (150, 20, 190, 60), lost=3), tr(3, (210, 10, 260, 40), lost=5),
                                  tr(4, (-30, 10, 5, 40))])
    assert [t.id for t in shown_tracks(res, OverlayToggles())] == [1, 2, 4]  # #3 drifted out of the picture
    assert [t.id for t in shown_tracks(res, OverlayToggles(coasting=False))] == [1, 4]
    assert shown_tracks(None, OverlayToggles()) == []


def test_threshold_labels_sit_in_the_key_above_the_plot_never_over_a_bar(qtbot, make_window):
    win = make_window()
    win.resize(1052, 708)  # the size a restored window had under xvfb-run -a in QA
    win.start()
    wait_results(qtbot, win, 3)
    panel = win.confidence_panel
    qtbot.waitUntil(lambda: bool(panel.lines), timeout=WAIT_MS)
    for line in panel.lines:
        assert line.zValue() > panel.bars.zValue() and getattr(line, "label", None) is None  # the dashed line only, over the bars
    assert "stage 1 exits at ≥ %.2f" % win.model.stages[0].threshold in panel.key.text().replace("&nbsp;", " ")
    key, plot = panel.key.geometry(), panel.plot.geometry()
    assert key.isValid() and key.bottom() < plot.top()  # the key is above the plot, so above every bar


def test_the_window_starts_on_the_shared_defaults(qtbot, settings, gui_bundle):
    from edgeconf.gui.worker import WorkerConfig
    from edgeconf.live.defaults import DEFAULT_REGIONS, DEFAULT_SOURCE

    win = MainWindow(bundle=gui_bundle, settings=settings)
    qtbot.addWidget(win)
    assert win.model.regions == DEFAULT_REGIONS == "detector" and win.model.source_uri == DEFAULT_SOURCE
    assert win.controls.regions_text() == DEFAULT_REGIONS
    assert WorkerConfig(bundle=gui_bundle, source=DEFAULT_SOURCE).regions == DEFAULT_REGIONS
    win.close()


def test_no_panel_overlaps_its_key_or_summary_at_1052x708_nor_1920x1080(qtbot, make_window):
    """The QA finding: at 1052×708 the axis titles ran into the summary text and the legends lost entries."""
    win = make_window()
    win.start()
    wait_results(qtbot, win, 3)
    for size in ((1052, 708), (1920, 1080)):
        win.resize(*size)
        qtbot.wait(700)  # two panel refreshes
        win.refresh_panels()
        qtbot.wait(50)
        for panel in win.panels:
            if not panel.plot.isVisible():
                continue  # the power panel without a sensor shows its message instead of a plot
            key, plot, summary = panel.key.geometry(), panel.plot.geometry(), panel.summary.geometry()
            assert key.bottom() < plot.top() and plot.bottom() < summary.top(), (type(panel).__name__, size)
            assert summary.height() >= panel.summary.heightForWidth(summary.width()), (type(panel).__name__, size)
            assert key.height() >= panel.key.heightForWidth(key.width()), (type(panel).__name__, size)
    cascade = win.cascade_panel.key.text().replace("&nbsp;", " ")
    for k in range(len(win.model.stages)):  # every stage in the key, not only those a small legend had room for
        assert "exit at stage %d" % (k + 1) in cascade
    speed = win.speed_panel.key.text().replace("&nbsp;", " ")
    for name in ("pipeline fps", "display fps", "latency ms, mean", "latency ms, max"):
        assert name in speed


def test_the_video_message_wraps_inside_the_view(qtbot):
    from PySide6.QtCore import QRectF, Qt
    from PySide6.QtGui import QFont, QFontMetricsF

    from edgeconf.gui.model import OverlayToggles
    from edgeconf.gui.video import VideoView

    view = VideoView(OverlayToggles())
    qtbot.addWidget(view)
    view.resize(320, 400)
    view.show()
    text = ("Could not run: unknown regions 'foo'; use one of detector (the shipped one), detector:PATH.onnx, "
            "motion, full, truth (oracle)")
    view.set_placeholder(text)
    rect = view.placeholder_rect()
    assert view.rect().contains(rect) and rect.width() < view.width()
    f = QFont(view.font())
    f.setPixelSize(16)
    need = QFontMetricsF(f).boundingRect(QRectF(rect), int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), text)
    assert QRectF(rect).contains(need)  # wrapped: every word inside the view, none cut at either end


def test_close_thresholds_near_the_top_are_both_named_in_the_key(qtbot):
    from types import SimpleNamespace

    from edgeconf.gui.panels import ConfidencePanel

    panel = ConfidencePanel()
    qtbot.addWidget(panel)
    panel.resize(420, 220)
    panel.show()
    stage = lambda t: SimpleNamespace(threshold=t)  # noqa: E731
    panel._set_thresholds(SimpleNamespace(stages=[stage(0.93), stage(0.91), stage(0.0)]))
    assert [ln.value() for ln in panel.lines] == [0.93, 0.91]
    text = panel.key.text()
    assert "stage 1 exits at ≥ 0.93" in text.replace("&nbsp;", " ") and "stage 2 exits at ≥ 0.91" in text.replace("&nbsp;", " ")


def test_the_status_line_counts_the_tracks_drawn_not_the_trackers_count(qtbot, make_window):
    """QA: "6 tracks" in the status bar while the video and the per-track panel showed 5 (a coasting prediction
    that drifted out of the picture is counted by the tracker but not drawn)."""
    from types import SimpleNamespace

    from edgeconf.gui.model import shown_tracks

    def tr(i, box, lost=0):
        return SimpleNamespace(id=i, box=box, frames_since_match=lost, confidence=0.9, label="Bag", class_id=8,
                               unknown=False, stage=0, uncertainty_px=1.0, ellipse=None, memo_hit=False)

    win = make_window()
    res = SimpleNamespace(image=np.zeros((100, 200, 3), np.uint8), frame_index=7, error=None,
                          counters=SimpleNamespace(tracks=4, fps=12.0), timings=SimpleNamespace(processing_ms=5.0),
                          tracks=[tr(1, (10, 10, 50, 50)), tr(2, (150, 20, 190, 60), lost=3),
                                  tr(3, (210, 10, 260, 40), lost=5), tr(4, (60, 10, 90, 40))])
    win.model.latest = res
    win.video.set_result(res)
    win.set_overlay("boxes", True)  # redraws the per-track panel and the status line from model.latest
    assert win.confidence_panel.shown_ids == [1, 2, 4]
    assert "frame 7 · 3 tracks ·" in win.info_label.text()
    win.controls.overlay_checks["coasting"].setChecked(False)  # hiding coasting tracks: #2 goes from both
    assert win.confidence_panel.shown_ids == [1, 4] == [t.id for t in shown_tracks(res, win.model.overlays)]
    assert "frame 7 · 2 tracks ·" in win.info_label.text()


def test_a_failed_start_after_a_run_clears_the_old_run_and_says_failed(qtbot, make_window, tmp_path):
    """QA: after a clip ran to its end, Start on a missing file left the last frame with its boxes, the old tracks,
    the old curves and "frame 199 · 3 tracks" on screen, and the failure message hid "source: FAILED"."""
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 72))
    for i in range(12):
        frame = np.full((72, 96, 3), 30, np.uint8)
        cv2.rectangle(frame, (10 + 4 * i, 20), (40 + 4 * i, 50), (230, 230, 230), -1)
        writer.write(frame)
    writer.release()
    win = make_window(source=str(clip), regions="full")
    shown = SignalRecorder(win.resultShown, win)
    assert win.start()
    qtbot.waitUntil(lambda: not win.model.running, timeout=WAIT_MS)
    assert shown.calls and win.model.source_state == "ended" and win.model.error is None
    assert win.video.result is not None and "frame" in win.info_label.text()  # the last frame stays after the end
    win.refresh_panels()
    assert "No answers yet" not in win.cascade_panel.summary.text()

    win.controls.source_combo.setEditText("/nonexistent/file.mp4")
    assert win.start()
    assert win.video.result is None and win.model.latest is None  # cleared at once, before the worker says anything
    assert win.confidence_panel.shown_ids == [] and win.info_label.text() == ""
    qtbot.waitUntil(lambda: not win.model.running, timeout=WAIT_MS)
    assert win.video.result is None and win.video.placeholder.startswith("Could not run: ")
    assert "/nonexistent/file.mp4" in win.video.placeholder
    assert win.confidence_panel.shown_ids == [] and win.confidence_panel.summary.text() == "No track on screen"
    assert win.cascade_panel.summary.text() == "No answers yet" and win.speed_panel.summary.text() == "No frames yet"
    assert not win.model.stats.points
    assert "FAILED" in win.state_label.text()
    assert "Could not run" in win.info_label.text() and "frame" not in win.info_label.text()
    assert win.statusBar().currentMessage() == ""  # a temporary message would hide the state label
    assert win.state_label.isVisible()


def test_fit_ticks_shortens_then_thins_the_bar_labels():
    from types import SimpleNamespace

    from edgeconf.gui.panels import fit_ticks

    def tr(i, unknown=False, conf=0.9):
        return SimpleNamespace(id=i, unknown=unknown, confidence=conf)

    tracks = [tr(1, unknown=True), tr(2, conf=None), tr(13)]
    width = lambda text: 7.0 * len(text)  # noqa: E731
    assert fit_ticks(tracks, 100.0, width) == [(0, "#1 unknown"), (1, "#2 ?"), (2, "#13")]
    assert fit_ticks(tracks, 40.0, width) == [(0, "#1"), (1, "#2"), (2, "#13")]  # "#1 unknown" is 70 px
    assert fit_ticks(tracks, 20.0, width) == [(0, "#1"), (2, "#13")]  # "#13" + gap is 27 px: every 2nd bar
    assert fit_ticks([], 20.0, width) == []


def test_the_window_fits_a_1024x600_screen_and_no_bar_labels_overlap(qtbot, make_window):
    """QA: the minimum width was 1052 (a Jetson 7" screen is 1024x600) and at that size (and with a narrow panel
    dock at 1480x900) the bar ticks ran into each other ("#1 unknow#2 unknown#3 unknown")."""
    from types import SimpleNamespace

    from PySide6.QtGui import QFontMetricsF
    from PySide6.QtWidgets import QApplication

    def tr(i):
        return SimpleNamespace(id=i, box=(4 * i, 10, 4 * i + 20, 40), frames_since_match=0, confidence=None if i % 3
                               else 0.8, unknown=i % 3 == 1, label="Bag", class_id=8, stage=0, uncertainty_px=1.0,
                               ellipse=None, memo_hit=False)

    win = make_window()
    assert win.minimumSizeHint().width() <= 1024 and win.minimumSize().width() <= 1024
    res = SimpleNamespace(image=np.zeros((100, 200, 3), np.uint8), frame_index=3, error=None,
                          counters=SimpleNamespace(tracks=18, fps=10.0), timings=SimpleNamespace(processing_ms=5.0),
                          tracks=[tr(i) for i in range(1, 19)])
    win.model.latest = res
    panel = win.confidence_panel
    for size in ((1024, 600), (1480, 900)):
        win.resize(*size)
        if size[0] == 1480:
            win.resizeDocks([win.panels_dock], [360], Qt.Orientation.Horizontal)
        QApplication.processEvents()
        assert win.width() == size[0]
        panel.refresh(win.model)
        ax = panel.plot.getAxis("bottom")
        fm = QFontMetricsF(ax.style.get("tickFont") or panel.plot.font())
        ticks = ax._tickLevels[0]
        assert len(ticks) >= 2
        px = panel.bar_px()
        assert px > 0
        for (i, a), (j, b) in zip(ticks, ticks[1:]):  # centred under their bars: half of each width on each side
            assert (j - i) * px >= (fm.horizontalAdvance(a) + fm.horizontalAdvance(b)) / 2.0, (size, a, b, px)
