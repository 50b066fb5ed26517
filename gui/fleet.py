"""The fleet view: every device publishing telemetry under one topic base, one row each, with a small fps plot;
selecting a row shows that device's latest status in full.

``edgeconf gui --fleet mqtt://HOST:1883/edgeconf``. The MQTT client runs on its own thread
(:class:`~edgeconf.gui.fleet_model.FleetSubscriber`); a timer on the UI thread drains its messages into the
:class:`~edgeconf.gui.fleet_model.FleetModel` and redraws twice a second.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from PySide6.QtCore import QPointF, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QColor, QFont, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QLabel, QMainWindow, QPlainTextEdit, QSplitter,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from edgeconf.gui.fleet_model import COLUMNS, FleetModel, FleetSubscriber, parse_fleet_uri

REFRESH_MS = 500
ONLINE_COLOUR = {"online": "#1a7f37", "offline": "#c00", "unknown": "#777"}


class Sparkline(QWidget):
    """A small line plot of the last values (fps over the device's history), scaled to their own range; the
    tooltip gives the range."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.values: List[float] = []
        self.setMinimumSize(120, 26)

    def set_values(self, values: List[float]) -> None:
        if values != self.values:
            self.values = list(values)
            if values:
                self.setToolTip("fps %.1f – %.1f over the last %d statuses" % (min(values), max(values), len(values)))
            self.update()

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        r = self.rect().adjusted(2, 3, -2, -3)
        p.fillRect(self.rect(), QColor("#fafafa"))
        v = self.values
        if len(v) >= 2:
            lo, hi = min(v), max(v)
            span = (hi - lo) or max(abs(hi), 1.0)  # a flat line sits in the middle
            base = lo if hi > lo else lo - span / 2
            n = len(v) - 1
            pts = QPolygonF([QPointF(r.left() + r.width() * i / n, r.bottom() - r.height() * ((x - base) / span))
                             for i, x in enumerate(v)])
            p.setPen(QPen(QColor("#0072B2"), 1.4))
            p.drawPolyline(pts)
        p.end()


class FleetWindow(QMainWindow):
    """One row per device (state, fps, escalation, memo hits, remote failures, power, energy per answer)."""

    def __init__(self, uri: str, subscriber: Optional[FleetSubscriber] = None, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.config, base = parse_fleet_uri(uri)
        self.model = FleetModel(base)
        self.subscriber = subscriber or FleetSubscriber(self.config, base)
        self.setWindowTitle("edgeconf fleet — %s" % self.config.describe())
        self.setObjectName("edgeconf-fleet-window")

        self.header = QLabel()
        self.table = QTableWidget(0, len(COLUMNS) + 1)
        self.table.setHorizontalHeaderLabels([h for _, h in COLUMNS] + ["fps (history)"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._show_selected)
        self.detail_title = QLabel("Select a device to see its latest status")
        self.detail = QPlainTextEdit()
        self.detail.setReadOnly(True)
        self.detail.setFont(QFont("monospace", 9))
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(4, 4, 4, 4)
        rl.addWidget(self.detail_title)
        rl.addWidget(self.detail, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(right)
        split.setSizes([900, 380])
        centre = QWidget()
        cl = QVBoxLayout(centre)
        cl.setContentsMargins(4, 4, 4, 4)
        cl.addWidget(self.header)
        cl.addWidget(split, 1)
        self.setCentralWidget(centre)
        self.resize(1300, 700)
        self._rows: Dict[str, int] = {}
        self._sparks: Dict[str, Sparkline] = {}
        self.selected: Optional[str] = None
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        self.subscriber.start()
        self.timer.start()
        self.refresh()

    # -- updates ----------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Take the messages that arrived and redraw the table (and the selected device's status)."""
        self.subscriber.drain(self.model)
        sub = self.subscriber
        state = "connected" if sub.connected.is_set() else (sub.error or "connecting…")
        online = sum(1 for r in self.model.devices.values() if r.online)
        self.header.setText("broker %s — %s — %d devices (%d online)" % (
            self.config.describe(), state, len(self.model.devices), online))
        for row in self.model.rows():
            i = self._rows.get(row.device)
            if i is None:
                i = self._rows[row.device] = self.table.rowCount()
                self.table.insertRow(i)
                for j in range(len(COLUMNS)):
                    self.table.setItem(i, j, QTableWidgetItem())
                spark = self._sparks[row.device] = Sparkline()
                self.table.setCellWidget(i, len(COLUMNS), spark)
            for j, (key, _) in enumerate(COLUMNS):
                item = self.table.item(i, j)
                text = row.text(key)
                if item.text() != text:
                    item.setText(text)
                tip = row.tooltip(key)
                if item.toolTip() != tip:
                    item.setToolTip(tip)
                if key == "online":
                    item.setForeground(QColor(ONLINE_COLOUR.get(text, "#777")))
                elif key == "remote_failures":
                    item.setForeground(QColor("#c00" if (row.cell(key) or 0) > 0 else "#222"))
            self._sparks[row.device].set_values(row.fps_history())
        self._show_selected()

    def select_device(self, device: str) -> bool:
        i = self._rows.get(device)
        if i is None:
            return False
        self.table.selectRow(i)
        self._show_selected()
        return True

    def _show_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return
        device = self.table.item(rows[0].row(), 0).text()
        self.selected = device
        row = self.model.devices.get(device)
        if row is None:
            return
        state = {None: "state unknown", True: "online",
                 False: "offline (%s) — its last status, no longer live:" % (row.offline_reason or "no reason")}
        self.detail_title.setText("<b>%s</b> — %s" % (device, state[row.online]))
        text = json.dumps(row.status, indent=2, sort_keys=True)
        if self.detail.toPlainText() != text:
            self.detail.setPlainText(text)

    def detail_text(self) -> str:
        return self.detail.toPlainText()

    # -- shutdown ---------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        self.timer.stop()
        self.subscriber.close()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)
