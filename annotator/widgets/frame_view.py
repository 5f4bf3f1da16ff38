"""The frame view: one image with its overlays, zoomed with the wheel, panned by dragging, fitted to
the window; a click (press and release without a drag) reports the image pixel under the cursor."""

from __future__ import annotations

import numpy as np
from PyQt5.QtCore import QPointF, QRectF, Qt, pyqtSignal
from PyQt5.QtGui import QColor, QImage, QPainter, QPen, QPolygonF, QTransform
from PyQt5.QtWidgets import QSizePolicy, QWidget

# A press that moves less than this many pixels before release is a click, not a pan.
CLICK_SLOP = 4
MIN_SCALE, MAX_SCALE = 0.05, 40.0


class FrameView(QWidget):
    clicked = pyqtSignal(float, float)  # image x, y
    scale_changed = pyqtSignal(float)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(320, 120)
        self.setFocusPolicy(Qt.StrongFocus)
        self.setMouseTracking(False)
        self._image: QImage | None = None
        self._array: np.ndarray | None = None  # keeps the QImage's buffer alive
        self._size = (0, 0)         # width, height of the frame in image coordinates
        self._image_scale = 1.0     # the shown array is the frame resized by this factor
        self._outlines: list[tuple[list[np.ndarray], QPen]] = []
        self._scale = 1.0
        self._offset = QPointF(0.0, 0.0)
        self._fitted = True
        self._press: QPointF | None = None
        self._dragging = False

    # ------------------------------------------------------------ content

    def set_frame(self, rgb: np.ndarray, outlines: list[tuple[list[np.ndarray], QPen]],
                  size: tuple[int, int] | None = None, image_scale: float = 1.0) -> None:
        """Show `rgb` (HxWx3 uint8): the frame of `size` (width, height; default the array's) resized by
        `image_scale`, with outline polygons (frame coordinates) drawn by their pens."""
        rgb = np.ascontiguousarray(rgb)
        h, w = rgb.shape[:2]
        size = size or (w, h)
        first = self._image is None or self._size != size
        self._array = rgb
        self._image = QImage(rgb.data, w, h, 3 * w, QImage.Format_RGB888)
        self._size = size
        self._image_scale = image_scale
        self._outlines = outlines
        if first:
            self.fit_to_window()
        self.update()

    def set_frame_size(self, size: tuple[int, int]) -> None:
        """Announce the frame size (width, height) before the first image, so the view fits it once."""
        if size != self._size:
            self._size = size
            self._image = None
            self._array = None
            w, h = size
            self.fit_to_window()

    def shown_array(self) -> np.ndarray | None:
        """The pixels on screen (frame resized by `image_scale`)."""
        return self._array

    def clear(self) -> None:
        self._image = None
        self._array = None
        self._outlines = []
        self.update()

    # ------------------------------------------------------------ view transform

    def transform(self) -> QTransform:
        """Image coordinates -> widget coordinates."""
        return QTransform(self._scale, 0, 0, self._scale, self._offset.x(), self._offset.y())

    def image_to_widget(self, x: float, y: float) -> QPointF:
        return self.transform().map(QPointF(x, y))

    def widget_to_image(self, point: QPointF) -> QPointF:
        inverse, _ = self.transform().inverted()
        return inverse.map(point)

    @property
    def scale(self) -> float:
        return self._scale

    def fit_to_window(self) -> None:
        if self._size == (0, 0):
            return
        w, h = self._size
        self._set_scale(max(MIN_SCALE, min(self.width() / w, self.height() / h)))
        # Whole-pixel offsets keep a pre-scaled frame on the fast copy path when painting.
        self._offset = QPointF(round((self.width() - w * self._scale) / 2),
                               round((self.height() - h * self._scale) / 2))
        self._fitted = True
        self.update()

    def _set_scale(self, scale: float) -> None:
        changed = scale != self._scale
        self._scale = scale
        if changed:
            self.scale_changed.emit(scale)

    def zoom(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom by `factor` keeping the image point under `anchor` (default: the centre) in place."""
        if anchor is None:
            anchor = QPointF(self.width() / 2, self.height() / 2)
        fixed = self.widget_to_image(anchor)
        self._set_scale(float(np.clip(self._scale * factor, MIN_SCALE, MAX_SCALE)))
        offset = anchor - QPointF(fixed.x() * self._scale, fixed.y() * self._scale)
        self._offset = QPointF(round(offset.x()), round(offset.y()))
        self._fitted = False
        self.update()

    def center_on(self, x: float, y: float) -> None:
        """Pan so that image point (x, y) is in the middle of the view."""
        self._offset = QPointF(round(self.width() / 2 - x * self._scale), round(self.height() / 2 - y * self._scale))
        self._fitted = False
        self.update()

    # ------------------------------------------------------------ events

    def resizeEvent(self, event) -> None:
        if self._fitted:
            self.fit_to_window()
        super().resizeEvent(event)

    def wheelEvent(self, event) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom(1.2 ** steps, QPointF(event.pos()))
        event.accept()

    def mousePressEvent(self, event) -> None:
        if event.button() in (Qt.LeftButton, Qt.MiddleButton):
            self._press = QPointF(event.pos())
            self._dragging = event.button() == Qt.MiddleButton
        event.accept()

    def mouseMoveEvent(self, event) -> None:
        if self._press is None:
            return
        delta = QPointF(event.pos()) - self._press
        if not self._dragging and abs(delta.x()) + abs(delta.y()) > CLICK_SLOP:
            self._dragging = True
        if self._dragging:
            self._offset += delta
            self._press = QPointF(event.pos())
            self._fitted = False
            self.setCursor(Qt.ClosedHandCursor)
            self.update()

    def mouseReleaseEvent(self, event) -> None:
        if self._press is not None and not self._dragging and event.button() == Qt.LeftButton:
            point = self.widget_to_image(QPointF(event.pos()))
            self.clicked.emit(point.x(), point.y())
        self._press = None
        self._dragging = False
        self.unsetCursor()
        event.accept()

    def mouseDoubleClickEvent(self, event) -> None:
        if event.button() == Qt.MiddleButton:
            self.fit_to_window()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(32, 32, 36))
        if self._image is None:
            painter.setPen(QColor(200, 200, 200))
            painter.drawText(self.rect(), Qt.AlignCenter, "File > Open a KITTI-MOTS or Cityscapes-VPS folder")
            return
        w, h = self._size
        if abs(self._image_scale - self._scale) < 1e-3:
            painter.drawImage(self._offset, self._image)  # already at screen size: a plain copy
        else:
            # Smooth scaling only when shrinking: zoomed in, the annotator wants to see the pixels.
            painter.setTransform(self.transform())
            painter.setRenderHint(QPainter.SmoothPixmapTransform, self._scale < 1.0)
            painter.drawImage(QRectF(0, 0, w, h), self._image)
        painter.setTransform(self.transform())
        painter.setRenderHint(QPainter.Antialiasing, True)
        for polygons, pen in self._outlines:
            painter.setPen(pen)
            for poly in polygons:
                painter.drawPolygon(QPolygonF([QPointF(float(x) + 0.5, float(y) + 0.5) for x, y in poly]))
        painter.end()
