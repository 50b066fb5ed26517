"""The live panels (pyqtgraph): power, confidence per track, cascade exits and memo hits, speed.

Each panel has ``refresh(model)``, called by the window a few times a second (not per frame), a key line
above its plot (what each line is, the thresholds, the time axis: outside the plot, so it is complete at any
size and covers no data) and a summary label under it so the numbers can be read without the axes.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF
from PySide6.QtWidgets import QFrame, QLabel, QSizePolicy, QStackedWidget, QVBoxLayout, QWidget

from edgeconf.backends.remote import reach_parts
from edgeconf.gui.model import GuiModel, OverlayToggles, shown_tracks
from edgeconf.live.overlay import track_colour

pg.setConfigOptions(antialias=False, background="w", foreground="#222")  # antialiased plots cost 2x the CPU

#: distinct colours for rails / stages (Okabe-Ito, readable by colour-blind people)
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
PLOT_SECONDS = 120.0


#: the time axis' title, said in each panel's key line (an axis title under the plot costs a line of height)
TIME_AXIS = "x: seconds ago"
PLOT_MIN_HEIGHT = 80


class _PlotWidget(pg.PlotWidget):
    """A plot that asks for little height (pyqtgraph's asks 480 px): the panels share the dock's height by their
    stretch, and in its scroll area they scroll only when not even their minimum fits."""

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(300, PLOT_MIN_HEIGHT)


def _plot(title: str, left: str, time_axis: bool = True) -> pg.PlotWidget:
    w = _PlotWidget()
    w.setTitle(title, size="10pt")
    w.setLabel("left", left)
    w.showGrid(x=True, y=True, alpha=0.25)
    w.setMenuEnabled(False)
    w.setMouseEnabled(x=False, y=False)
    w.hideButtons()
    w.setMinimumHeight(PLOT_MIN_HEIGHT)
    w.getAxis("left").setTickDensity(0.6)  # fewer y ticks: on a low panel they are not squeezed into each other
    if time_axis:
        # a time axis that changes rarely: its ticks are cached (re-laying out axes costs ~5 ms a plot)
        set_x_span(w, np.zeros(0))
    return w


def nice_ceiling(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above ``v`` (axis tops that change rarely)."""
    if not np.isfinite(v) or v <= 0:
        return 1.0
    k = 10.0 ** np.floor(np.log10(v))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * k >= v:
            return float(m * k)
    return float(10 * k)


def set_y_top(plot: Any, values: np.ndarray, minimum: float) -> None:
    """Y range [0, a round number above the data]; only touched when it changes (axes are cached)."""
    finite = values[np.isfinite(values)] if values.size else values
    # the 98th percentile: a start-up spike (fps over the first two frames) does not flatten the curve
    top = nice_ceiling(max(minimum, float(np.percentile(finite, 98)) * 1.15 if finite.size else minimum))
    if getattr(plot, "_y_top", None) != top:
        plot.setYRange(0, top, padding=0)
        plot._y_top = top  # type: ignore[attr-defined]


TIME_SPANS = (30.0, 60.0, PLOT_SECONDS)


def set_x_span(plot: pg.PlotWidget, t: np.ndarray) -> None:
    """Time axis from -span to 0, span the first of 30/60/120 s that holds the data (changes rarely)."""
    need = -float(np.nanmin(t)) if t.size else 0.0
    span = next((s for s in TIME_SPANS if s >= need), PLOT_SECONDS)
    if getattr(plot, "_x_span", None) != span:
        plot.setXRange(-span, 0, padding=0.01)
        plot._x_span = span  # type: ignore[attr-defined]


def key_entry(colour: str, text: str, style: str = "solid") -> str:
    """One entry of a key line: a line sample in ``colour`` (solid, dashed or dotted) and its text."""
    mark = {"solid": "━━", "dashed": "╍╍", "dotted": "┈┈"}[style]
    return "<span style='color:%s'><b>%s</b></span>&nbsp;%s" % (colour, mark, _esc(text).replace(" ", "&nbsp;"))


def _summary_label() -> QLabel:
    lab = QLabel("")
    lab.setWordWrap(True)
    lab.setTextFormat(Qt.TextFormat.RichText)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return lab


def fmt_pct(v: Optional[float]) -> str:
    return "--" if v is None or not np.isfinite(v) else "%.0f %%" % (100.0 * v)


def fmt_energy(j: Optional[float], why: str = "") -> str:
    """Joules as mJ or J; "not measured" (and why, when known) for None."""
    if j is None:
        return "<b>not measured</b>" + (": %s" % _esc(why) if why else "")
    if j < 1.0:
        return "<b>%.1f mJ</b>" % (j * 1e3)
    return "<b>%.2f J</b>" % j


class Panel(QFrame):
    """A titled frame holding one plot and its summary line."""

    def __init__(self, title: str, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(4, 4, 4, 4)
        self.layout_.setSpacing(2)
        head = QLabel(title)
        f = QFont()
        f.setBold(True)
        head.setFont(f)
        self.layout_.addWidget(head)
        self.key = _summary_label()  # what each line is: above the plot, wrapped, never cut by the plot's height
        self.key.setStyleSheet("QLabel { font-size: 11px; }")
        self.layout_.addWidget(self.key)
        self.summary = _summary_label()

    def set_key(self, entries: List[str]) -> None:
        text = " &nbsp; ".join(entries)
        if self.key.text() != text:
            self.key.setText(text)

    def refresh(self, model: GuiModel) -> None:  # pragma: no cover - every panel overrides it
        """Redraw from the model; the base panel has nothing of its own to draw."""


class PowerPanel(Panel):
    """Board power in watts over the last minutes (total and per rail), and energy per answer."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__("Power", parent)
        self.stack = QStackedWidget()
        self.no_sensor = QLabel()
        self.no_sensor.setWordWrap(True)
        self.no_sensor.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.no_sensor.setStyleSheet("QLabel { background: #f4f4f4; color: #333; padding: 8px; font-size: 13px; }")
        self.plot = _plot("", "W")
        self.curves: Dict[str, Any] = {}
        self._key: List[str] = []
        self.stack.addWidget(self.no_sensor)
        self.stack.addWidget(self.plot)
        self.layout_.addWidget(self.stack, 1)
        self.layout_.addWidget(self.summary)
        self.set_no_sensor("no energy meter was opened")

    @property
    def showing_plot(self) -> bool:
        return self.stack.currentWidget() is self.plot

    def set_no_sensor(self, reason: str) -> None:
        self._reason = reason
        self.no_sensor.setText("<b>No power sensor on this machine</b><br>Power and energy are not measured."
                               "<br><small>%s</small>" % _esc(reason))
        self.stack.setCurrentWidget(self.no_sensor)
        self.key.hide()
        # the message takes its own height only: the plots below get the rest
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.summary.setText("Power: <b>not measured</b>")

    def _curve(self, name: str, i: int, width: float) -> Any:
        c = self.curves.get(name)
        if c is None:
            c = self.plot.plot([], [], pen=pg.mkPen(PALETTE[i % len(PALETTE)], width=width))
            self.curves[name] = c
            self._key.append(key_entry(PALETTE[i % len(PALETTE)], name))
            self.set_key(self._key + [TIME_AXIS])
        return c

    def refresh(self, model: GuiModel) -> None:
        ph = model.power
        if not ph.available:
            if self.showing_plot or self._reason != ph.reason:
                self.set_no_sensor(ph.reason)
            return
        if not self.showing_plot:
            self.stack.setCurrentWidget(self.plot)
            self.key.show()
            self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        readings = list(ph.readings)
        if not readings:
            self.summary.setText("Power: waiting for the first reading from %s" % _esc(ph.reason))
            return
        now = ph.now()
        t = np.array([r.t - now for r in readings])
        keep = t >= -PLOT_SECONDS
        t = t[keep]
        rs = [r for r, k in zip(readings, keep) if k]
        total = np.array([np.nan if r.total_w is None else r.total_w for r in rs])
        self._curve("total", 0, 2.5).setData(t, total, connect="finite")
        set_y_top(self.plot, total, 1.0)
        set_x_span(self.plot, t)
        for i, name in enumerate(ph.rail_names()):
            vals = np.array([r.rails_w.get(name, np.nan) for r in rs])
            self._curve(name, i + 1, 1.2).setData(t, vals, connect="finite")
        last = ph.latest
        epa, why = ph.energy_per_answer(10.0)
        mean = ph.mean_w(10.0)
        self.summary.setText("Now <b>%s</b> · mean 10 s %s · energy per answer (last 10 s) %s · %s" % (
            "--" if last is None or last.total_w is None else "%.2f W" % last.total_w,
            "--" if mean is None else "%.2f W" % mean, fmt_energy(epa, why), _esc(ph.reason)))


class ConfidencePanel(Panel):
    """Confidence of each current track as a bar (coloured like its box), with the stage thresholds."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__("Confidence per track", parent)
        # the y axis' title is in the key line (a vertical title is cut on a low panel: "onfidence")
        self.plot = _plot("", "", time_axis=False)
        self.plot.setYRange(0, 1.02, padding=0)
        self.plot.getAxis("left").setTicks([[(0.0, "0"), (0.5, "0.5"), (1.0, "1")], [(0.25, ""), (0.75, "")]])
        self.plot.getPlotItem().vb.sigResized.connect(self._fit_ticks)
        self._tracks: List[Any] = []
        self.bars = pg.BarGraphItem(x=[0.0], height=[0.0], width=0.7, brush="w", pen=pg.mkPen("#444"))
        self.bars.setVisible(False)
        self.plot.addItem(self.bars)
        self.lines: List[Any] = []
        self.layout_.addWidget(self.plot, 1)
        self.layout_.addWidget(self.summary)
        self._thresholds: List[float] = []
        self.shown_ids: List[int] = []

    def _set_thresholds(self, model: GuiModel) -> None:
        th = [s.threshold for s in model.stages[:-1]] if len(model.stages) > 1 else []
        if th == self._thresholds:
            return
        for ln in self.lines:
            self.plot.removeItem(ln)
        self.lines = []
        key = []
        for k, v in enumerate(th):
            colour = PALETTE[k % len(PALETTE)]
            # the dashed line crosses the bars; its label is in the key line above the plot, so no label ever
            # covers a bar, however close the thresholds or high the bars
            ln = pg.InfiniteLine(pos=v, angle=0, pen=pg.mkPen(colour, width=1.5, style=Qt.PenStyle.DashLine))
            ln.setZValue(self.bars.zValue() + 10)  # the line is drawn over the bars, never hidden behind one
            self.plot.addItem(ln)
            self.lines.append(ln)
            key.append(key_entry(colour, "stage %d exits at ≥ %.2f" % (k + 1, v), "dashed"))
        self.set_key(key + ["<i>?</i>&nbsp;not&nbsp;answered&nbsp;yet", "y:&nbsp;confidence"])
        self._thresholds = th

    def refresh(self, model: GuiModel, toggles: Optional[OverlayToggles] = None) -> None:
        """Bars for exactly the tracks the video shows on ``model.latest``, coloured and marked as on the video:
        an empty slot marked ``?`` for a track not answered yet, ``unknown`` (violet) for an answer that is no
        class (docs/gui.md)."""
        self._set_thresholds(model)
        tracks = shown_tracks(model.latest, toggles or model.overlays)
        self.shown_ids = [t.id for t in tracks]
        x = np.arange(len(tracks), dtype=float)
        h = np.array([0.0 if t.confidence is None else float(t.confidence) for t in tracks])
        if tracks:
            brushes = [pg.mkBrush(QColor(*track_colour(t))) for t in tracks]  # unknown in its own colour
            self.bars.setOpts(x=x, height=h, width=0.7, brushes=brushes, pen=pg.mkPen("#444"))
        self.bars.setVisible(bool(tracks))
        self.plot.setXRange(-0.6, max(4.6, len(tracks) - 0.4), padding=0)
        self._tracks = tracks
        self._fit_ticks()
        if not tracks:
            self.summary.setText("No track on screen")
            return
        answered = [t for t in tracks if t.confidence is not None]
        parts = ["#%d %s %.2f" % (t.id, _esc(t.label or str(t.class_id)), t.confidence) for t in answered[:6]]
        unknown = sum(1 for t in tracks if getattr(t, "unknown", False))
        waiting = len(tracks) - len(answered) - unknown
        text = " · ".join(parts) + (" …" if len(answered) > 6 else "")
        if self._thresholds and answered:
            low = sum(1 for t in answered if t.confidence < self._thresholds[0])
            text += " · %d below the stage-1 threshold" % low
        if unknown:
            text += " · %d unknown (no class)" % unknown
        if waiting:
            text += " · %d not answered yet (?)" % waiting
        self.summary.setText(text.lstrip(" ·"))


    def bar_px(self) -> float:
        """Pixels between two bars' centres at the plot's present size (0 before it is laid out)."""
        vb = self.plot.getPlotItem().vb
        lo, hi = vb.viewRange()[0]
        return float(vb.width()) / (hi - lo) if hi > lo else 0.0

    def _fit_ticks(self, *_: Any) -> None:
        """Tick labels that fit under the bars at this size (:func:`fit_ticks`); the full labels in the tooltip."""
        tracks = self._tracks
        ax = self.plot.getAxis("bottom")
        fm = QFontMetricsF(ax.style.get("tickFont") or self.plot.font())
        ticks = fit_ticks(tracks, self.bar_px(), fm.horizontalAdvance)
        if ticks != getattr(self, "_ticks", None):
            ax.setTicks([ticks])
            self._ticks = ticks
        tip = ("Bars, left to right: " + " · ".join(tick_text(t) for t in tracks)) if tracks else ""
        if self.plot.toolTip() != tip:
            self.plot.setToolTip(tip)


def fit_ticks(tracks: List[Any], px_per_bar: float, text_width: Any, gap: float = 6.0) -> List[Any]:
    """The bars' tick labels that fit ``px_per_bar`` apart without overlapping: every bar's :func:`tick_text` when
    they all fit; else the plain ``#id`` (the bar's colour and the summary line still tell unknown and waiting
    tracks); else ``#id`` under every k-th bar only. ``text_width``: the pixel width of a string."""
    full = [(i, tick_text(t)) for i, t in enumerate(tracks)]
    if not full or all(text_width(text) + gap <= px_per_bar for _, text in full):
        return full
    short = [(i, "#%d" % t.id) for i, t in enumerate(tracks)]
    widest = max(text_width(text) for _, text in short) + gap
    step = max(1, int(np.ceil(widest / px_per_bar))) if px_per_bar > 0 else len(short)
    return short[::step]


class CascadePanel(Panel):
    """Share of model answers kept at each stage, and the memo hit rate, per second over time."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__("Cascade exits and memo hits", parent)
        self.plot = _plot("", "% answers")
        self.plot.setYRange(0, 102, padding=0)
        self.plot.getAxis("left").setTicks([[(0.0, "0"), (50.0, "50"), (100.0, "100")], [(25.0, ""), (75.0, "")]])
        self.memo_curve = self.plot.plot([], [], pen=pg.mkPen("#CC79A7", width=2.5))
        self.stage_curves: List[Any] = []
        self.set_key([key_entry("#CC79A7", "memo hits"), TIME_AXIS])
        self.layout_.addWidget(self.plot, 1)
        self.layout_.addWidget(self.summary)

    def refresh(self, model: GuiModel) -> None:
        n = len(model.stages)
        while len(self.stage_curves) < n:
            k = len(self.stage_curves)
            name = model.stages[k].name if k < len(model.stages) else str(k + 1)
            self.stage_curves.append(self.plot.plot([], [], pen=pg.mkPen(PALETTE[k % len(PALETTE)], width=1.8)))
        names = ["stage %d%s" % (k + 1, "" if k >= len(model.stages) or model.stages[k].name in ("stage%d" % (k + 1), "")
                                 else " (%s)" % model.stages[k].name) for k in range(len(self.stage_curves))]
        self.set_key([key_entry("#CC79A7", "memo hits")]
                     + [key_entry(PALETTE[k % len(PALETTE)], "exit at " + n) for k, n in enumerate(names)] + [TIME_AXIS])
        s = model.stats.series(1.0)
        bt = s["t"]
        if bt.size:
            for k, c in enumerate(self.stage_curves):
                share = s["exit_share"][k] if k < len(s["exit_share"]) else np.full(bt.size, np.nan)
                c.setData(bt, 100.0 * share, connect="finite")
            self.memo_curve.setData(bt, 100.0 * s["memo_rate"], connect="finite")
            set_x_span(self.plot, bt)
        p = model.stats.latest
        if p is None:
            self.summary.setText("No answers yet")
            return
        exits = " · ".join("stage %d: %d" % (k + 1, e) for k, e in enumerate(p.exits))
        memo_rate = p.memo_hits / p.answers if p.answers else None
        self.summary.setText("Model answers kept — %s · escalation (5 s) <b>%s</b> · memo hits <b>%s</b> "
                             "(recent %s) of %d answers%s" % (exits, fmt_pct(model.stats.escalation_rate(5.0)),
                                                               fmt_pct(memo_rate), fmt_pct(p.memo_hit_rate_recent),
                                                               p.answers, remote_text(model, p)))


def remote_text(model: GuiModel, p: Any) -> str:
    """`` · stage 3 remote: 112 fallbacks (answered by the last local stage: circuit_open 100, unavailable 12) of
    130 crops that reached it: 30 sent, 100 answered here while the circuit breaker was open``: the crops that came
    to a remote stage, those sent to its server, and those the last local stage answered instead (empty without a
    remote stage). A crop its open breaker answered here was never sent, so it is not counted as sent."""
    stages = [k + 1 for k, s in enumerate(model.stages) if getattr(s, "remote", False)]
    if not stages and not p.remote_inputs:
        return ""
    name = "stage %s remote" % "/".join(str(k) for k in stages) if stages else "remote stage"
    if not p.remote_inputs:
        return " · %s: no crop reached it yet" % name
    if not p.remote_failures:
        return " · %s: %d crops sent, no fallback" % (name, p.remote_calls)
    reasons = ", ".join("%s %d" % kv for kv in sorted(p.remote_reasons.items()))
    return (" · <span style='color:#c00'>%s: <b>%d fallbacks</b></span> (answered by the last local stage%s) of %d "
            "crops that reached it: %s" % (name, p.remote_failures, ": " + _esc(reasons) if reasons else "",
                                          p.remote_inputs, ", ".join(reach_parts(p.remote_inputs, p.remote_calls,
                                                                                 p.remote_reasons))))


class SpeedPanel(Panel):
    """Frames per second (pipeline and display, left axis) and per-frame latency (right axis) over time."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__("Speed", parent)
        self.plot = _plot("", "fps")
        self.fps_curve = self.plot.plot([], [], pen=pg.mkPen("#0072B2", width=2))
        self.disp_curve = self.plot.plot([], [], pen=pg.mkPen("#009E73", width=1.5))
        # latency on a second y axis (right), sharing the time axis
        item = self.plot.getPlotItem()
        self.lat_view = pg.ViewBox()
        item.showAxis("right")
        item.scene().addItem(self.lat_view)
        item.getAxis("right").linkToView(self.lat_view)
        item.getAxis("right").setLabel("latency ms", color="#D55E00")
        item.getAxis("right").setTickDensity(0.6)
        self.lat_view.setXLink(item)
        self.lat_view.setMouseEnabled(x=False, y=False)
        self.lat_curve = pg.PlotDataItem([], [], pen=pg.mkPen("#D55E00", width=2))
        self.lat_max_curve = pg.PlotDataItem([], [], pen=pg.mkPen("#E69F00", width=1, style=Qt.PenStyle.DotLine))
        self.lat_view.addItem(self.lat_curve)
        self.lat_view.addItem(self.lat_max_curve)
        self.set_key([key_entry("#0072B2", "pipeline fps"), key_entry("#009E73", "display fps"),
                      key_entry("#D55E00", "latency ms, mean (right axis)"),
                      key_entry("#E69F00", "latency ms, max", "dotted"), TIME_AXIS])
        item.vb.sigResized.connect(self._sync_views)
        self.layout_.addWidget(self.plot, 1)
        self.layout_.addWidget(self.summary)

    def _sync_views(self) -> None:
        self.lat_view.setGeometry(self.plot.getPlotItem().vb.sceneBoundingRect())
        self.lat_view.linkedViewChanged(self.plot.getPlotItem().vb, self.lat_view.XAxis)

    def refresh(self, model: GuiModel) -> None:
        s = model.stats.series(0.5)
        t = s["t"]
        if not t.size:
            self.summary.setText("No frames yet")
            return
        self.fps_curve.setData(t, s["pipeline_fps"], connect="finite")
        self.disp_curve.setData(t, s["display_fps"], connect="finite")
        self.lat_curve.setData(t, s["latency_ms"], connect="finite")
        self.lat_max_curve.setData(t, s["latency_max_ms"], connect="finite")
        set_y_top(self.plot, np.concatenate([s["pipeline_fps"], s["display_fps"]]), 10.0)
        set_y_top(self.lat_view, s["latency_max_ms"], 10.0)
        set_x_span(self.plot, t)
        lat = s["latency_recent_ms"]
        p = model.stats.latest
        res = model.latest
        dropped = res.counters.frames_dropped if res is not None else 0
        disp = p.display_fps  # over the same window as p.pipeline_fps (LiveStats.rates)
        self.summary.setText("Pipeline <b>%.1f fps</b> · display %s · latency p50 %.1f ms, p95 %.1f ms (last 10 s) · "
                             "frames dropped by the source %d" % (
                                 p.pipeline_fps, "--" if disp is None else "%.1f fps" % disp,
                                 float(np.percentile(lat, 50)), float(np.percentile(lat, 95)), dropped))


def tick_text(track: Any) -> str:
    """A bar's tick, marked as the video labels the track: ``#9 unknown`` for an answer that is no class, ``#16 ?``
    for a track not answered yet (edgeconf.live.overlay.track_label), plain ``#12`` otherwise."""
    if getattr(track, "unknown", False):
        return "#%d unknown" % track.id
    if track.confidence is None:
        return "#%d ?" % track.id
    return "#%d" % track.id


def _esc(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
