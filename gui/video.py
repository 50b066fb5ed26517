"""The video view: the newest frame, scaled with its aspect ratio kept, with the tracks drawn over it.

Overlays are painted with QPainter in widget coordinates, so labels stay readable at any window size.
Colours follow :func:`edgeconf.live.overlay.confidence_colour`, the same as the recorded video.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QImage, QPainter, QPen, QTextOption
from PySide6.QtWidgets import QSizePolicy, QWidget

from edgeconf.atomic import write_bytes
from edgeconf.errors import OutputError
from edgeconf.gui.model import OverlayToggles, shown_tracks
from edgeconf.live.overlay import place_label, track_colour

UNCERTAINTY_RGB = (80, 200, 255)
MEMO_RGB = (220, 0, 220)


def to_qimage(image: np.ndarray) -> QImage:
    """An RGB (or grey) uint8 array as a QImage that shares its memory (keep the array alive)."""
    arr = np.ascontiguousarray(image)
    h, w = arr.shape[:2]
    if arr.ndim == 2:
        return QImage(arr.data, w, h, arr.strides[0], QImage.Format.Format_Grayscale8)
    return QImage(arr.data, w, h, arr.strides[0], QImage.Format.Format_RGB888)


def fit_rect(img_w: int, img_h: int, area_w: float, area_h: float) -> QRectF:
    """The largest rectangle of the image's aspect ratio centred in the area."""
    if img_w <= 0 or img_h <= 0 or area_w <= 0 or area_h <= 0:
        return QRectF(0, 0, 0, 0)
    s = min(area_w / img_w, area_h / img_h)
    w, h = img_w * s, img_h * s
    return QRectF((area_w - w) / 2.0, (area_h - h) / 2.0, w, h)


def label_text(t: Any) -> str:
    """"#id class 0.87 S2" (stage numbered from 1); "#id unknown S1" for an answer that is no class."""
    if getattr(t, "unknown", False):
        return "#%d unknown%s" % (t.id, "" if t.stage is None else "  S%d" % (int(t.stage) + 1))
    name = t.label or ("?" if t.class_id is None else str(t.class_id))
    conf = "--" if t.confidence is None else "%.2f" % t.confidence
    stage = "" if t.stage is None else "  S%d" % (int(t.stage) + 1)
    return "#%d %s %s%s" % (t.id, name, conf, stage)


def paint_overlays(p: QPainter, result: Any, toggles: OverlayToggles, target: QRectF, font_px: float = 13.0) -> None:
    """Draw ``result``'s tracks onto ``target``, the rectangle where its image is shown."""
    img = result.image
    ih, iw = img.shape[:2]
    sx, sy = target.width() / iw, target.height() / ih
    ox, oy = target.x(), target.y()

    def rect(box: Tuple[float, float, float, float]) -> QRectF:
        x1, y1, x2, y2 = box
        return QRectF(ox + x1 * sx, oy + y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy)

    p.save()
    p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    p.setClipRect(target)
    font = QFont()
    font.setPixelSize(max(9, int(round(font_px))))
    font.setBold(True)
    p.setFont(font)
    fm = QFontMetricsF(font)
    if toggles.truth and getattr(result, "truth", None):
        pen = QPen(QColor(255, 255, 255, 200), 1, Qt.PenStyle.DashLine)
        p.setPen(pen)
        p.setBrush(Qt.BrushStyle.NoBrush)
        for obj in result.truth:
            p.drawRect(rect(obj.box))
    taken: List[Tuple[float, float, float, float]] = []  # labels drawn so far: the next one avoids them
    for t in shown_tracks(result, toggles):
        coasting = bool(t.frames_since_match)
        r = rect(t.box)
        colour = QColor(*track_colour(t))
        if toggles.uncertainty:
            a, b, angle = getattr(t, "ellipse", (0.0, 0.0, 0.0)) or (0.0, 0.0, 0.0)
            if not a or a <= 0:
                a = b = 2.0 * float(t.uncertainty_px)
            a, b = max(2.0, a), max(2.0, b)
            c = r.center()
            p.save()
            p.translate(c)
            p.rotate(float(angle))
            p.scale(sx, sy)
            halo = QColor(*UNCERTAINTY_RGB)
            halo.setAlpha(60)
            # the translucent halo without antialiasing (4x cheaper), its outline with
            p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QBrush(halo))
            p.drawEllipse(QPointF(0, 0), a, b)
            p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            pen = QPen(QColor(*UNCERTAINTY_RGB), 1.5)
            pen.setCosmetic(True)
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawEllipse(QPointF(0, 0), a, b)
            p.restore()
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(*UNCERTAINTY_RGB))
            p.drawEllipse(r.center(), 2.5, 2.5)
        if toggles.boxes:
            pen = QPen(colour, 1.5 if coasting else 3.0, Qt.PenStyle.DashLine if coasting else Qt.PenStyle.SolidLine)
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(r)
        if toggles.labels:
            text = label_text(t)
            tw, th = fm.horizontalAdvance(text) + 8, fm.height() + 2
            memo = toggles.memo_marker and bool(getattr(t, "memo_hit", False))
            mw = th if memo else 0.0
            x, y, _, _ = place_label((r.left(), r.top(), r.width(), r.height()), (tw + mw, th),
                                     (target.left(), target.top(), target.width(), target.height()), taken)
            taken.append((x, y, tw + mw, th))
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(0, 0, 0, 190))
            p.drawRect(QRectF(x, y, tw, th))
            p.setPen(colour)
            p.drawText(QRectF(x + 4, y, tw - 4, th), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, text)
            if memo:
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(QColor(*MEMO_RGB))
                p.drawRect(QRectF(x + tw, y, mw, th))
                p.setPen(QColor(255, 255, 255))
                p.drawText(QRectF(x + tw, y, mw, th), Qt.AlignmentFlag.AlignCenter, "M")
    p.restore()


def render_annotated(result: Any, toggles: OverlayToggles) -> QImage:
    """The frame at its own resolution with the overlays drawn (for snapshots)."""
    base = to_qimage(result.image).convertToFormat(QImage.Format.Format_RGB32)
    p = QPainter(base)
    try:
        h, w = result.image.shape[:2]
        paint_overlays(p, result, toggles, QRectF(0, 0, w, h), font_px=max(11.0, h / 36.0))
    finally:
        p.end()
    return base


class VideoView(QWidget):
    """Shows the newest frame (aspect kept) and its overlays; draws only what it was last given."""

    def __init__(self, toggles: Optional[OverlayToggles] = None, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.toggles = toggles or OverlayToggles()
        self.result: Any = None
        self._qimage: Optional[QImage] = None
        self._array: Optional[np.ndarray] = None
        self.placeholder = "No video yet: pick a source and press Start"
        self.frames_painted = 0
        self.setMinimumSize(300, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)

    def set_result(self, result: Any) -> None:
        """Show ``result`` at the next repaint (cheap: no copy of the image)."""
        self.result = result
        if result is None:
            self._array = self._qimage = None
        else:
            self._array = np.ascontiguousarray(result.image)
            # one conversion per frame: drawing RGB32 scaled is 4x cheaper than drawing RGB888
            self._qimage = to_qimage(self._array).convertToFormat(QImage.Format.Format_RGB32)
        self.update()

    def placeholder_rect(self) -> Any:
        """Where the message is drawn when there is no frame: the view less a margin on every side."""
        return self.rect().adjusted(16, 16, -16, -16)

    def set_placeholder(self, text: str) -> None:
        self.placeholder = text
        if self.result is None:
            self.update()

    def image_rect(self) -> QRectF:
        """Where the frame is drawn in widget coordinates."""
        if self._array is None:
            return QRectF(0, 0, 0, 0)
        h, w = self._array.shape[:2]
        return fit_rect(w, h, self.width(), self.height())

    def image_to_widget(self, x: float, y: float) -> QPointF:
        """Widget coordinates of image pixel (x, y)."""
        r = self.image_rect()
        h, w = self._array.shape[:2]  # type: ignore[union-attr]
        return QPointF(r.x() + x * r.width() / w, r.y() + y * r.height() / h)

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        try:
            p.fillRect(self.rect(), QColor(24, 24, 28))
            if self._qimage is None:
                p.setPen(QColor(200, 200, 200))
                f = p.font()
                f.setPixelSize(16)
                p.setFont(f)
                # wrapped inside a margin: a long message (a failure, a path) is shown whole, not cut at both ends
                opt = QTextOption(Qt.AlignmentFlag.AlignCenter)
                opt.setWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
                p.drawText(QRectF(self.placeholder_rect()), self.placeholder, opt)
                return
            target = self.image_rect()
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, target.width() < self._qimage.width())
            p.drawImage(target, self._qimage)
            font_px = max(11.0, min(15.0, target.height() / 34.0))
            paint_overlays(p, self.result, self.toggles, target, font_px)
            self.frames_painted += 1
        finally:
            p.end()


def save_png(image: Any, path: str) -> None:
    """Write a QImage/QPixmap as a PNG atomically (``edgeconf.atomic``); failures raise :class:`OutputError`."""
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    ok = image.save(buf, "PNG")
    buf.close()
    if not ok:
        raise OutputError("cannot encode the image as PNG for %s" % path)
    write_bytes(path, bytes(data.data()))
