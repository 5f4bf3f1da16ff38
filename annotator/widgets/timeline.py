"""The timeline: one strip over all frames of the sequence, coloured where the selected track is
visible by its label at that frame (frame ranges included; hatched where only a proposal exists),
with the current frame marked. Clicking or dragging on it seeks."""

from __future__ import annotations

from PyQt5.QtCore import QRectF, Qt, pyqtSignal
from PyQt5.QtGui import QBrush, QColor, QPainter, QPen
from PyQt5.QtWidgets import QSizePolicy, QWidget


class Timeline(QWidget):
    frame_requested = pyqtSignal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setFixedHeight(34)
        self.setFocusPolicy(Qt.NoFocus)
        self.num_frames = 0
        self.current = 0
        # Runs of consecutive frames with one look: (first, last, (r, g, b), unconfirmed).
        self.runs: list[tuple[int, int, tuple[int, int, int], bool]] = []
        self.caption = ""
        self.mark: int | None = None  # start of a frame range being labelled

    def set_length(self, num_frames: int) -> None:
        self.num_frames = num_frames
        self.update()

    def set_current(self, frame: int) -> None:
        self.current = frame
        self.update()

    def set_mark(self, frame: int | None) -> None:
        self.mark = frame
        self.update()

    def set_track(self, runs: list[tuple[int, int, tuple[int, int, int], bool]], caption: str) -> None:
        self.runs = runs
        self.caption = caption
        self.update()

    def frame_at(self, x: float) -> int:
        if self.num_frames <= 0:
            return 0
        return int(min(max(x / max(self.width(), 1) * self.num_frames, 0), self.num_frames - 1))

    def _x(self, frame: float) -> float:
        return frame / max(self.num_frames, 1) * self.width()

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.LeftButton:
            self.frame_requested.emit(self.frame_at(event.pos().x()))

    def mouseMoveEvent(self, event) -> None:
        if event.buttons() & Qt.LeftButton:
            self.frame_requested.emit(self.frame_at(event.pos().x()))

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        h = self.height()
        painter.fillRect(self.rect(), QColor(48, 48, 52))
        bar = QRectF(0, 4, self.width(), h - 16)
        for first, last, colour, unconfirmed in self.runs:
            rect = QRectF(self._x(first), bar.top(), max(self._x(last + 1) - self._x(first), 1.0), bar.height())
            brush = QBrush(QColor(*colour), Qt.BDiagPattern if unconfirmed else Qt.SolidPattern)
            painter.fillRect(rect, brush)
        if self.mark is not None and self.num_frames:
            lo, hi = sorted((self.mark, self.current))
            painter.fillRect(QRectF(self._x(lo), 0, self._x(hi + 1) - self._x(lo), 4), QColor(255, 235, 60))
        if self.num_frames:
            x = self._x(self.current + 0.5)
            painter.setPen(QPen(QColor(255, 255, 255), 2))
            painter.drawLine(int(x), 0, int(x), h - 12)
        painter.setPen(QColor(220, 220, 220))
        font = painter.font()
        font.setPointSizeF(7.5)
        painter.setFont(font)
        painter.drawText(QRectF(2, h - 12, self.width() - 4, 12), Qt.AlignLeft | Qt.AlignVCenter, self.caption)
        painter.drawText(QRectF(2, h - 12, self.width() - 4, 12), Qt.AlignRight | Qt.AlignVCenter,
                         f"frame {self.current + 1} / {self.num_frames}")
        painter.end()
