"""The operator's controls: source and bundle pickers, run buttons, cascade knobs, overlays, outputs.

The panel only turns clicks into signals and shows the model's values; the window acts on them.
"""
from __future__ import annotations

from typing import List, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout,
                               QLabel, QLineEdit, QPushButton, QSlider, QSpinBox, QVBoxLayout, QWidget)

from edgeconf.confidence import SCORES
from edgeconf.gui.model import OVERLAY_HELP, GuiModel, OverlayToggles, StageInfo
from edgeconf.live.defaults import DEFAULT_REGIONS, REGION_CHOICES

SLIDER_STEPS = 100  # threshold slider resolution: 0.01



class StageRow(QWidget):
    """One stage: its exit-threshold slider, the value, and the confidence score it uses."""

    thresholdChanged = Signal(int, float)
    scoreChanged = Signal(int, str)

    def __init__(self, index: int, info: StageInfo, last: bool, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.index = index
        lay = QGridLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        title = QLabel("<b>Stage %d</b> %s%s" % (index + 1, info.name, " (last: always answers)" if last else ""))
        lay.addWidget(title, 0, 0, 1, 3)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setValue(int(round(info.threshold * SLIDER_STEPS)))
        self.slider.setToolTip("Exit threshold: an answer whose confidence is at least this stops here; "
                               "lower ones go on to the next stage")
        self.value = QLabel("%.2f" % info.threshold)
        self.value.setMinimumWidth(34)
        self.score = QComboBox()
        self.score.addItems(list(SCORES))
        self.score.setCurrentText(info.score)
        self.score.setToolTip("Confidence score of this stage (maxp, margin, entropy)")
        lay.addWidget(QLabel("exit ≥"), 1, 0)
        lay.addWidget(self.slider, 1, 1)
        lay.addWidget(self.value, 1, 2)
        lay.addWidget(QLabel("score"), 2, 0)
        lay.addWidget(self.score, 2, 1, 1, 2)
        self.slider.valueChanged.connect(self._slid)
        self.score.currentTextChanged.connect(lambda name: self.scoreChanged.emit(self.index, name))

    def _slid(self, v: int) -> None:
        t = v / SLIDER_STEPS
        self.value.setText("%.2f" % t)
        self.thresholdChanged.emit(self.index, t)

    def show_threshold(self, t: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(int(round(t * SLIDER_STEPS)))
        self.slider.blockSignals(False)
        self.value.setText("%.2f" % t)


class ControlPanel(QWidget):
    """Everything the operator can change, as signals."""

    startRequested = Signal()
    pauseToggled = Signal(bool)
    stopRequested = Signal()
    thresholdChanged = Signal(int, float)
    scoreChanged = Signal(int, str)
    memoChanged = Signal(bool, int)
    overlayToggled = Signal(str, bool)
    snapshotRequested = Signal()
    recordToggled = Signal(bool)

    def __init__(self, model: GuiModel, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.model = model
        self.stage_rows: List[StageRow] = []
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 6)

        # -- source -----------------------------------------------------------------------------------
        g = QGroupBox("Source")
        f = QFormLayout(g)
        self.source_combo = QComboBox()
        self.source_combo.setEditable(True)
        self.source_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.source_combo.setToolTip("demo://, a video file, an image folder, rtsp://…, v4l2:///dev/videoN, csi://N "
                                     "or a camera index; the list holds recent sources")
        self.source_combo.addItems(model.recent_sources)
        self.source_combo.setEditText(model.source_uri)
        f.addRow("URI", self.source_combo)
        row = QHBoxLayout()
        self.file_button = QPushButton("Video file…")
        self.folder_button = QPushButton("Image folder…")
        row.addWidget(self.file_button)
        row.addWidget(self.folder_button)
        f.addRow("", row)
        row = QHBoxLayout()
        self.camera_spin = QSpinBox()
        self.camera_spin.setRange(0, 63)
        self.camera_button = QPushButton("Use camera")
        row.addWidget(self.camera_spin)
        row.addWidget(self.camera_button)
        f.addRow("Camera", row)
        self.regions_combo = QComboBox()
        self.regions_combo.setEditable(True)
        self.regions_combo.addItems(list(REGION_CHOICES))
        self.regions_combo.setEditText(model.regions)
        self.regions_combo.setToolTip("How objects are found: detector (the shipped detector, the default), "
                                      "detector:MODEL.onnx (your own), motion (background subtraction), full (the "
                                      "whole frame), truth (oracle: the demo scene's own boxes, for diagnosis only)")
        f.addRow("Regions", self.regions_combo)
        outer.addWidget(g)

        # -- bundle -----------------------------------------------------------------------------------
        g = QGroupBox("Bundle")
        row = QHBoxLayout(g)
        self.bundle_edit = QLineEdit(model.bundle_path)
        self.bundle_edit.setToolTip("Bundle folder (edgeconf.json + models)")
        self.bundle_button = QPushButton("Browse…")
        row.addWidget(self.bundle_edit, 1)
        row.addWidget(self.bundle_button)
        outer.addWidget(g)

        # -- run --------------------------------------------------------------------------------------
        row = QHBoxLayout()
        self.start_button = QPushButton("▶ Start")
        self.pause_button = QPushButton("❚❚ Pause")
        self.pause_button.setCheckable(True)
        self.stop_button = QPushButton("■ Stop")
        for b in (self.start_button, self.pause_button, self.stop_button):
            row.addWidget(b)
        outer.addLayout(row)

        # -- cascade ----------------------------------------------------------------------------------
        self.cascade_box = QGroupBox("Cascade (applied live)")
        self.cascade_layout = QVBoxLayout(self.cascade_box)
        self.no_stages = QLabel("Start to load the bundle's stages")
        self.cascade_layout.addWidget(self.no_stages)
        row = QHBoxLayout()
        self.memo_check = QCheckBox("Memo cache")
        self.memo_check.setChecked(model.memo_enabled)
        self.memo_check.setToolTip("Answer an unchanged object from the cache instead of running a model")
        self.radius_spin = QSpinBox()
        self.radius_spin.setRange(0, 64)
        self.radius_spin.setValue(model.memo_radius)
        self.radius_spin.setToolTip("Hamming radius of the memo key match (0: same key only)")
        row.addWidget(self.memo_check)
        row.addStretch(1)
        row.addWidget(QLabel("radius"))
        row.addWidget(self.radius_spin)
        self.cascade_layout.addLayout(row)
        outer.addWidget(self.cascade_box)

        # -- overlays ---------------------------------------------------------------------------------
        g = QGroupBox("Show on video")
        grid = QGridLayout(g)
        self.overlay_checks = {}
        labels = {"boxes": "Boxes", "labels": "Labels", "uncertainty": "Uncertainty", "memo_marker": "Memo marker",
                  "coasting": "Coasting tracks", "truth": "Ground truth"}
        for i, name in enumerate(OverlayToggles.names()):
            cb = QCheckBox(labels.get(name, name))
            cb.setChecked(getattr(model.overlays, name))
            cb.setToolTip(OVERLAY_HELP.get(name, ""))
            cb.toggled.connect(lambda on, n=name: self.overlayToggled.emit(n, on))
            grid.addWidget(cb, i // 2, i % 2)
            self.overlay_checks[name] = cb
        outer.addWidget(g)

        # -- outputs ----------------------------------------------------------------------------------
        g = QGroupBox("Output")
        v = QVBoxLayout(g)
        row = QHBoxLayout()
        self.outdir_edit = QLineEdit()
        self.outdir_edit.setToolTip("Folder for snapshots (PNG) and recordings (MJPG .avi)")
        self.outdir_button = QPushButton("…")
        self.outdir_button.setMaximumWidth(30)
        row.addWidget(QLabel("Folder"))
        row.addWidget(self.outdir_edit, 1)
        row.addWidget(self.outdir_button)
        v.addLayout(row)
        row = QHBoxLayout()
        self.snapshot_button = QPushButton("Snapshot PNG")
        self.record_button = QPushButton("● Record video")
        self.record_button.setCheckable(True)
        row.addWidget(self.snapshot_button)
        row.addWidget(self.record_button)
        v.addLayout(row)
        outer.addWidget(g)
        outer.addStretch(1)

        # -- wiring -----------------------------------------------------------------------------------
        self.start_button.clicked.connect(self.startRequested)
        self.stop_button.clicked.connect(self.stopRequested)
        self.pause_button.toggled.connect(self.pauseToggled)
        self.snapshot_button.clicked.connect(self.snapshotRequested)
        self.record_button.toggled.connect(self.recordToggled)
        self.memo_check.toggled.connect(lambda on: self.memoChanged.emit(on, self.radius_spin.value()))
        self.radius_spin.valueChanged.connect(lambda r: self.memoChanged.emit(self.memo_check.isChecked(), r))
        self.file_button.clicked.connect(self._pick_file)
        self.folder_button.clicked.connect(self._pick_folder)
        self.camera_button.clicked.connect(lambda: self.source_combo.setEditText(str(self.camera_spin.value())))
        self.bundle_button.clicked.connect(self._pick_bundle)
        self.outdir_button.clicked.connect(self._pick_outdir)
        model.events.stages.connect(lambda e: self.set_stages(e.value))
        model.events.thresholds.connect(lambda e: self.show_thresholds(e.value))
        model.events.running.connect(lambda e: self.show_running(e.value))
        model.events.paused.connect(lambda e: self._show_paused(e.value))
        model.events.recent_sources.connect(lambda e: self.set_recent(e.value))
        model.events.memo.connect(lambda e: self._show_memo(*e.value))
        model.events.recording.connect(lambda e: self._show_recording(e.value))
        self.show_running(False)

    # -- values --------------------------------------------------------------------------------------
    def source_text(self) -> str:
        return self.source_combo.currentText().strip()

    def regions_text(self) -> str:
        return self.regions_combo.currentText().strip() or DEFAULT_REGIONS

    def bundle_text(self) -> str:
        return self.bundle_edit.text().strip()

    def set_recent(self, items: List[str]) -> None:
        text = self.source_combo.currentText()
        self.source_combo.blockSignals(True)
        self.source_combo.clear()
        self.source_combo.addItems(items)
        self.source_combo.setEditText(text)
        self.source_combo.blockSignals(False)

    def set_stages(self, stages: List[StageInfo]) -> None:
        """Rebuild the per-stage rows (when a bundle was loaded)."""
        if [r.index for r in self.stage_rows] == list(range(len(stages))) and all(
                r.score.currentText() == s.score for r, s in zip(self.stage_rows, stages)):
            for r, s in zip(self.stage_rows, stages):
                r.show_threshold(s.threshold)
            return
        for r in self.stage_rows:
            self.cascade_layout.removeWidget(r)
            r.deleteLater()
        self.stage_rows = []
        self.no_stages.setVisible(not stages)
        for k, s in enumerate(stages):
            r = StageRow(k, s, last=k == len(stages) - 1)
            r.thresholdChanged.connect(self.thresholdChanged)
            r.scoreChanged.connect(self.scoreChanged)
            if k == len(stages) - 1:  # the last stage always answers; its threshold changes nothing
                r.slider.setEnabled(False)
            self.cascade_layout.insertWidget(k, r)
            self.stage_rows.append(r)

    def show_thresholds(self, values: List[float]) -> None:
        for r, v in zip(self.stage_rows, values):
            r.show_threshold(v)

    def show_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.pause_button.setEnabled(running)
        self.record_button.setEnabled(running)
        self.snapshot_button.setEnabled(running or self.model.latest is not None)
        if not running:
            self._show_paused(False)

    def _show_paused(self, paused: bool) -> None:
        self.pause_button.blockSignals(True)
        self.pause_button.setChecked(paused)
        self.pause_button.setText("▶ Resume" if paused else "❚❚ Pause")
        self.pause_button.blockSignals(False)

    def _show_memo(self, enabled: bool, radius: int) -> None:
        for w, setter, v in ((self.memo_check, self.memo_check.setChecked, enabled),
                             (self.radius_spin, self.radius_spin.setValue, radius)):
            w.blockSignals(True)
            setter(v)
            w.blockSignals(False)

    def _show_recording(self, path: Optional[str]) -> None:
        self.record_button.blockSignals(True)
        self.record_button.setChecked(bool(path))
        self.record_button.setText("■ Stop recording" if path else "● Record video")
        self.record_button.setStyleSheet("QPushButton { color: #c00; font-weight: bold; }" if path else "")
        self.record_button.blockSignals(False)

    # -- dialogs -------------------------------------------------------------------------------------
    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a video file", "",
                                              "Videos (*.mp4 *.avi *.mkv *.mov *.webm *.m4v);;All files (*)")
        if path:
            self.source_combo.setEditText(path)

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a folder of images")
        if path:
            self.source_combo.setEditText(path)

    def _pick_bundle(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a bundle folder", self.bundle_text())
        if path:
            self.bundle_edit.setText(path)

    def _pick_outdir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for snapshots and recordings", self.outdir_edit.text())
        if path:
            self.outdir_edit.setText(path)

