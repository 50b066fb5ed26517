"""The operator's main window: video in the middle, controls on the left, live panels on the right.

The window is the controller: it turns control signals into worker commands and model changes, takes
the newest result when the worker announces one, and refreshes the panels a few times a second.
Closing it stops the worker (which finalises the recording and the event log) and saves the settings.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Optional

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import QDockWidget, QLabel, QMainWindow, QScrollArea, QVBoxLayout, QWidget

from edgeconf.errors import EdgeconfError, OutputError
from edgeconf.gui.controls import ControlPanel
from edgeconf.gui.model import MAX_RECENT_SOURCES, GuiModel, OverlayToggles, PowerHistory, StageInfo, shown_tracks
from edgeconf.live.regions import check_spec
from edgeconf.gui.panels import ConfidencePanel, CascadePanel, PowerPanel, SpeedPanel
from edgeconf.gui.video import VideoView, render_annotated, save_png
from edgeconf.gui.worker import PipelineWorker, WorkerConfig
from edgeconf.live.defaults import DEFAULT_REGIONS, DEFAULT_SOURCE, regions_note

PANEL_REFRESH_MS = 500  # panels redraw twice a second; the video follows every result
STATE_STYLE = {
    "connecting": "#b36b00", "live": "#1a7f37", "reconnecting": "#b36b00", "ended": "#555", "failed": "#c00",
    "stopped": "#555",
}
LEGEND = ("<b>Box colour = confidence</b>: <span style='color:#e63c28'>■ low</span> → "
          "<span style='color:#e6e628'>■ 0.5</span> → <span style='color:#28e628'>■ high</span>; "
          "<span style='color:#ba8cff'>■ unknown</span>: no class the models know (background, merged objects, "
          "slivers: OOD score past its threshold; or a class the detector is not yet sure is an object) &nbsp;·&nbsp; "
          "label <i>#track class confidence S<sub>stage that answered</sub></i> &nbsp;·&nbsp; "
          "<span style='background:#dc00dc;color:white'>&nbsp;M&nbsp;</span> memo cache answered (no model ran) "
          "&nbsp;·&nbsp; <span style='color:#50c8ff'>◯</span> tracker 2σ position uncertainty &nbsp;·&nbsp; "
          "dashed box: coasting (no detection this frame)")


def _esc(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def default_settings() -> QSettings:
    """The user's settings (tests pass their own QSettings on a temporary file instead)."""
    return QSettings("edgeconf", "edgeconf-gui")


def _to_list(value: Any) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]


def _to_bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes", "on")


class MainWindow(QMainWindow):
    """The operator window. ``meter``: an energy meter (or None); ``worker_options``: extra WorkerConfig fields."""

    #: a new result is on screen (tests and the benchmark listen to it)
    resultShown = Signal(object)

    def __init__(self, bundle: Optional[str] = None, source: Optional[str] = None, settings: Optional[QSettings] = None,
                 meter: Any = None, regions: Optional[str] = None, events_path: Optional[str] = None,
                 output_dir: Optional[str] = None, worker_options: Optional[Dict[str, Any]] = None,
                 power_note: str = "", parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.settings = settings if settings is not None else default_settings()
        self.model = GuiModel()
        self.model.power = PowerHistory(meter, note=power_note)
        self.meter = meter
        self.events_path = events_path
        self.worker_options = dict(worker_options or {})
        self.worker: Optional[PipelineWorker] = None
        self._old_workers: List[PipelineWorker] = []
        self.last_snapshot: Optional[str] = None
        #: what was wrong with the saved settings (shown in the status bar when the window opens)
        self.settings_notice = ""
        self._load_settings()
        if bundle:
            self.model.bundle_path = bundle
        if source:
            self.model.source_uri = source
        if regions:
            self.model.regions = regions
        self.setWindowTitle("edgeconf operator")
        self.setObjectName("edgeconf-main-window")

        # -- centre: video and legend -----------------------------------------------------------------------
        self.video = VideoView(self.model.overlays)
        self.legend = QLabel(LEGEND)
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setStyleSheet("QLabel { background: #18181c; color: #ddd; padding: 4px 8px; }")
        centre = QWidget()
        lay = QVBoxLayout(centre)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.video, 1)
        lay.addWidget(self.legend)
        self.setCentralWidget(centre)

        # -- left: controls -------------------------------------------------------------------------------
        self.controls = ControlPanel(self.model)
        self.controls.outdir_edit.setText(output_dir or str(self.settings.value("output_dir", os.getcwd())))
        scroll = QScrollArea()
        scroll.setWidget(self.controls)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(300)  # with the panels' 360 and the video's 300: fits a 1024-pixel screen
        self.controls_dock = QDockWidget("Controls")
        self.controls_dock.setObjectName("controls-dock")
        self.controls_dock.setWidget(scroll)
        self.controls_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                       | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.controls_dock)

        # -- right: live panels ---------------------------------------------------------------------------
        self.power_panel = PowerPanel()
        self.confidence_panel = ConfidencePanel()
        self.cascade_panel = CascadePanel()
        self.speed_panel = SpeedPanel()
        self.panels = [self.power_panel, self.confidence_panel, self.cascade_panel, self.speed_panel]
        # the per-track panel follows every result the video shows (it lists exactly the tracks on screen);
        # the others redraw a few times a second
        self.timed_panels = [self.power_panel, self.cascade_panel, self.speed_panel]
        pw = QWidget()
        pl = QVBoxLayout(pw)
        pl.setContentsMargins(2, 2, 2, 2)
        for p in self.panels:
            pl.addWidget(p, 1)
        # in a scroll area: on a screen too low for every panel's plot, key and summary the panels scroll
        # instead of being squeezed on top of one another
        panels_scroll = QScrollArea()
        panels_scroll.setWidget(pw)
        panels_scroll.setWidgetResizable(True)
        panels_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        panels_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.panels_dock = QDockWidget("Live panels")
        self.panels_dock.setObjectName("panels-dock")
        self.panels_dock.setWidget(panels_scroll)
        self.panels_dock.setMinimumWidth(360)
        self.panels_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                     | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.panels_dock)

        # -- status bar -----------------------------------------------------------------------------------
        self.state_label = QLabel()
        self.state_label.setMinimumWidth(170)
        self.info_label = QLabel("")
        self.statusBar().addWidget(self.state_label)
        self.statusBar().addWidget(self.info_label, 1)
        self._show_state("stopped", "")

        # -- wiring ---------------------------------------------------------------------------------------
        c = self.controls
        c.startRequested.connect(self.start)
        c.stopRequested.connect(self.stop)
        c.pauseToggled.connect(self.set_paused)
        c.thresholdChanged.connect(self.set_threshold)
        c.scoreChanged.connect(self.set_score)
        c.memoChanged.connect(self.set_memo)
        c.overlayToggled.connect(self.set_overlay)
        c.snapshotRequested.connect(lambda: self.snapshot())
        c.recordToggled.connect(self.set_recording)
        m = self.model.events
        m.source_state.connect(lambda e: self._show_state(*e.value))
        m.running.connect(lambda e: self._on_running(e.value))
        self.refresh_timer = QTimer(self)
        self.refresh_timer.setInterval(PANEL_REFRESH_MS // len(self.timed_panels))
        self.refresh_timer.timeout.connect(self._refresh_next_panel)
        self.refresh_timer.start()
        QShortcut(QKeySequence("Space"), self, activated=lambda: c.pause_button.toggle() if self.model.running else None)
        QShortcut(QKeySequence("Ctrl+S"), self, activated=lambda: self.snapshot())
        self._restore_layout()
        self.refresh_panels()
        if self.settings_notice:
            self.show_message(self.settings_notice, error=True, ms=20000)

    # -- settings -------------------------------------------------------------------------------------------
    def _load_settings(self) -> None:
        s, m = self.settings, self.model
        m.bundle_path = str(s.value("bundle", "") or "")
        m.source_uri = str(s.value("source", DEFAULT_SOURCE) or DEFAULT_SOURCE)
        m.regions = str(s.value("regions", DEFAULT_REGIONS) or DEFAULT_REGIONS)
        try:
            check_spec(m.regions)
        except EdgeconfError as exc:  # a value an older version (or a hand edit) left: start on the default
            self.settings_notice = "Saved regions ignored, using %s: %s" % (DEFAULT_REGIONS, exc)
            sys.stderr.write("edgeconf: note: %s\n" % self.settings_notice)
            m.regions = DEFAULT_REGIONS
        recent = _to_list(s.value("recent_sources"))
        m.recent_sources = (recent or [DEFAULT_SOURCE])[:MAX_RECENT_SOURCES]
        for name in OverlayToggles.names():
            setattr(m.overlays, name, _to_bool(s.value("overlays/" + name), getattr(OverlayToggles(), name)))
        m.memo_radius = int(s.value("memo_radius", 0) or 0)

    def _restore_layout(self) -> None:
        geo, state = self.settings.value("geometry"), self.settings.value("window_state")
        if isinstance(geo, QByteArray) and not geo.isEmpty():
            self.restoreGeometry(geo)
        else:
            self.resize(1480, 900)
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        else:  # first run: most of the width for the video
            self.resizeDocks([self.controls_dock, self.panels_dock], [300, 470], Qt.Orientation.Horizontal)

    def save_settings(self) -> None:
        s, m = self.settings, self.model
        s.setValue("bundle", self.controls.bundle_text() or m.bundle_path)
        s.setValue("source", self.controls.source_text() or m.source_uri)
        s.setValue("regions", self.controls.regions_text())
        s.setValue("recent_sources", list(m.recent_sources))
        s.setValue("output_dir", self.controls.outdir_edit.text())
        s.setValue("memo_radius", m.memo_radius)
        for name in OverlayToggles.names():
            s.setValue("overlays/" + name, bool(getattr(m.overlays, name)))
        s.setValue("geometry", self.saveGeometry())
        s.setValue("window_state", self.saveState())
        s.sync()

    # -- run control ----------------------------------------------------------------------------------------
    def start(self) -> bool:
        """Start a worker on the bundle and source in the controls; False (and a message) when it cannot."""
        if self.worker is not None:
            return False
        bundle, source = self.controls.bundle_text(), self.controls.source_text()
        if not bundle:
            self.show_message("Pick a bundle folder first", error=True)
            return False
        if not source:
            self.show_message("Enter a source URI (e.g. demo://) first", error=True)
            return False
        try:
            check_spec(self.controls.regions_text())
        except EdgeconfError as exc:
            self.show_message(str(exc), error=True)
            return False
        m = self.model
        m.set_bundle(bundle)
        m.set_source(source)
        m.regions = self.controls.regions_text()
        m.add_recent_source(source)
        m.set_error(None)
        m.stats.clear()
        # nothing of the previous run stays on screen as if it were this one's: frame, tracks, curves, status line
        self._clear_view("Starting %s …" % source)
        m.set_source_state("connecting", "")
        options: Dict[str, Any] = dict(regions=m.regions, events_path=self.events_path, meter=self.meter,
                                       memo=None if m.memo_enabled else False, memo_radius=m.memo_radius or None)
        options.update(self.worker_options)
        cfg = WorkerConfig(bundle=bundle, source=source, **options)
        w = PipelineWorker(cfg)
        w.ready.connect(self._on_ready)
        w.resultReady.connect(self._on_result_ready)
        w.sourceState.connect(self._on_source_state)
        w.problem.connect(self._on_problem)
        w.applied.connect(self._on_applied)
        w.finished.connect(self._on_finished)
        self.worker = w
        self.setWindowTitle("edgeconf operator — %s on %s" % (os.path.basename(os.path.normpath(bundle)), source))
        m.set_running(True)
        w.start()
        return True

    def stop(self) -> None:
        """Ask the worker to stop (returns at once; the window updates when it has ended)."""
        if self.worker is not None:
            self.worker.stop()

    def set_paused(self, paused: bool) -> None:
        if self.worker is None:
            return
        if paused:
            self.worker.pause()
        else:
            self.worker.resume()
        self.model.set_paused(paused)
        self._show_state("paused" if paused else self.model.source_state, "")

    def set_threshold(self, stage: int, value: float) -> None:
        if stage < len(self.model.stages):
            self.model.set_threshold(stage, value)
        if self.worker is not None:
            self.worker.set_threshold(stage, value)

    def set_score(self, stage: int, name: str) -> None:
        if stage < len(self.model.stages) and self.model.stages[stage].score != name:
            self.model.set_score(stage, name)
        if self.worker is not None:
            self.worker.set_score(stage, name)

    def set_memo(self, enabled: bool, radius: int) -> None:
        self.model.set_memo(enabled, radius)
        if self.worker is not None:
            self.worker.set_memo(enabled, radius)

    def set_overlay(self, name: str, on: bool) -> None:
        self.model.set_overlay(name, on)
        self.video.update()
        self.confidence_panel.refresh(self.model)
        self._show_info()

    def _output_path(self, prefix: str, ext: str) -> str:
        folder = os.path.expanduser(self.controls.outdir_edit.text().strip() or os.getcwd())
        os.makedirs(folder, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = os.path.join(folder, "%s-%s.%s" % (prefix, stamp, ext))
        n = 1
        while os.path.exists(path):
            n += 1
            path = os.path.join(folder, "%s-%s-%d.%s" % (prefix, stamp, n, ext))
        return path

    def snapshot(self, path: Optional[str] = None) -> Optional[str]:
        """Save the newest frame with its overlays as a PNG at the frame's resolution; returns the path."""
        res = self.model.latest
        if res is None:
            self.show_message("No frame to save yet", error=True)
            return None
        try:
            path = path or self._output_path("edgeconf-snapshot", "png")
            save_png(render_annotated(res, self.model.overlays), path)
        except (OSError, OutputError) as exc:
            self.show_message("Could not save the snapshot: %s" % exc, error=True)
            return None
        self.last_snapshot = path
        self.show_message("Snapshot saved: %s" % path)
        return path

    def set_recording(self, on: bool, path: Optional[str] = None) -> Optional[str]:
        """Start (to ``path`` or a new file in the output folder) or stop recording the annotated video."""
        if self.worker is None:
            self.model.set_recording(None)
            return None
        if on:
            path = path or self._output_path("edgeconf-recording", "avi")
            self.worker.set_recording(path)
            return path
        self.worker.set_recording(None)
        return None

    # -- worker signals -------------------------------------------------------------------------------------
    def _on_ready(self, info: Dict[str, Any]) -> None:
        remote = set(info.get("remote_stages", ()))
        stages = [StageInfo(n, t, s, k in remote) for k, (n, t, s) in enumerate(info["stages"])]
        self.model.set_stages(stages, info.get("labels", ()), *info.get("memo", (None, None)))
        self.model.set_memo(*info.get("memo", (self.model.memo_enabled, self.model.memo_radius)))
        self.setWindowTitle("edgeconf operator — %s on %s" % (info.get("name") or info["bundle"], info["source"]))

    def _on_result_ready(self) -> None:
        w = self.sender() if isinstance(self.sender(), PipelineWorker) else self.worker
        if w is None:
            return
        res = w.take_result()
        if res is None:
            return
        self.model.ingest(res)
        self.video.set_result(res)
        self.confidence_panel.refresh(self.model)
        self._show_info()
        self.resultShown.emit(res)

    def _show_info(self) -> None:
        """The status bar's frame line for the result on screen; its track count is the tracks drawn on the
        video (and listed in the confidence panel), not the tracker's count, which includes tracks coasting
        outside the picture or hidden with the coasting overlay."""
        res = self.model.latest
        if res is None:
            self.info_label.setText("")
            return
        note = regions_note(self.model.regions)
        self.info_label.setText("frame %d · %d tracks · pipeline %.1f fps · latency %.1f ms · regions %s%s%s" % (
            res.frame_index, len(shown_tracks(res, self.model.overlays)), self._pipeline_fps(res),
            res.timings.processing_ms, self.model.regions, " (%s)" % note if note else "",
            " · error: %s" % res.error if res.error else ""))

    def _pipeline_fps(self, res: Any) -> float:
        """The speed panel's pipeline fps (over the same window as its display fps), the pipeline's own before."""
        p = self.model.stats.latest
        return p.pipeline_fps if p is not None and p.frame == res.frame_index else float(res.counters.fps)

    def _on_source_state(self, state: str, detail: str) -> None:
        self.model.set_source_state(state, detail)

    def _on_problem(self, message: str, fatal: bool) -> None:
        if fatal:  # shown in the video area and the status line when the worker has ended (_on_finished)
            self.model.set_error(message)
            return
        self.show_message(message, error=True)

    def _on_applied(self, what: str, value: Any) -> None:
        if what == "recording":
            self.model.set_recording(value)
            self.show_message("Recording to %s" % value if value else "Recording finalised")
        elif what == "memo":
            self.model.set_memo(*value)

    def _on_finished(self) -> None:
        w = self.sender() if isinstance(self.sender(), PipelineWorker) else self.worker
        if w is not None:
            w.wait()
        if w is self.worker:
            self.worker = None
        self.model.set_recording(None)
        self.model.set_running(False)
        reason = getattr(w, "end_reason", "") or "stopped"
        if reason == "ended":
            self.video.set_placeholder("The source ended. Press Start to run again.")
        if self.model.error:
            # a failure is never shown over a frame as if it were still live: the view says why instead
            self._clear_view("Could not run: %s" % self.model.error, keep_stats=True)
            self._show_state("failed", self.model.error)
            self.info_label.setText("<span style='color:#c00'>Could not run: %s</span>" % _esc(self.model.error))

    def _on_running(self, running: bool) -> None:
        if not running:
            self.video.set_placeholder("Stopped. Press Start to run.")

    # -- display --------------------------------------------------------------------------------------------
    def _clear_view(self, placeholder: str, keep_stats: bool = False) -> None:
        """Take the last result off the screen: the video shows ``placeholder``, the per-track panel and the
        status line are emptied, and (unless ``keep_stats``) the plots restart empty."""
        self.model.latest = None
        if not keep_stats:
            self.model.stats.clear()
        self.video.set_result(None)
        self.video.set_placeholder(placeholder)
        self.info_label.setText("")
        self.refresh_panels()

    def _show_state(self, state: str, detail: str) -> None:
        colour = STATE_STYLE.get(state, "#555")
        text = {"paused": "PAUSED"}.get(state, state.upper())
        self.state_label.setText("<span style='color:white;background:%s;padding:2px 6px'>&nbsp;source: %s&nbsp;</span>"
                                 % (colour, text))
        self.state_label.setToolTip(detail or state)
        if state == "reconnecting" and detail:
            self.show_message("%s: %s" % (state, detail))
        elif state == "failed" and detail:
            # not a temporary message: Qt hides the status bar's widgets (so "source: FAILED") while one shows
            self.info_label.setText("<span style='color:#c00'>Could not run: %s</span>" % _esc(detail))

    def show_message(self, text: str, error: bool = False, ms: int = 8000) -> None:
        self.statusBar().showMessage(("⚠ " if error else "") + text, ms)

    def refresh_panels(self) -> None:
        """Poll the meter and redraw every panel now."""
        self.model.power.poll()
        for p in self.panels:
            p.refresh(self.model)

    def _refresh_next_panel(self) -> None:
        """Poll the meter and redraw one panel: spread over the period, no tick stalls the UI for long."""
        self.model.power.poll()
        if not self.isVisible():
            return
        self._next_panel = (getattr(self, "_next_panel", -1) + 1) % len(self.timed_panels)
        self.timed_panels[self._next_panel].refresh(self.model)

    # -- shutdown -------------------------------------------------------------------------------------------
    def shutdown(self, timeout_s: float = 20.0) -> None:
        """Stop the worker and wait for it: the recording and the event log are finalised when this returns."""
        self.refresh_timer.stop()
        w, self.worker = self.worker, None
        if w is not None:
            w.resultReady.disconnect(self._on_result_ready)
            w.shutdown(timeout_s)
            self.model.set_running(False)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        self.save_settings()
        self.shutdown()
        super().closeEvent(event)
