"""The track list: one row per track (id, class, length, label, proposal and its score) under a
filter (all, unlabelled, proposals, disagreeing); selecting a row selects the track."""

from __future__ import annotations

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QBrush, QColor
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

COLUMNS = ("id", "class", "frames", "label", "proposal", "score")


class TrackList(QWidget):
    track_selected = pyqtSignal(int)
    filter_changed = pyqtSignal(str)

    def __init__(self, filters: tuple[str, ...], colours: dict, parent: QWidget | None = None):
        super().__init__(parent)
        self.colours = colours
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Show"))
        self.filter_box = QComboBox(self)
        self.filter_box.addItems(filters)
        self.filter_box.setFocusPolicy(Qt.NoFocus)
        row.addWidget(self.filter_box, 1)
        layout.addLayout(row)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeaderItem(COLUMNS.index("score")).setToolTip(
            "proposal score: the fraction of the track's frames judged moving")
        self.table.horizontalHeaderItem(COLUMNS.index("proposal")).setToolTip(
            "label proposed from motion cues; orange when the confirmed label differs")
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        # The window's single-key shortcuts (arrows, letters) must reach the window, not the table.
        self.table.setFocusPolicy(Qt.NoFocus)
        layout.addWidget(self.table)
        self._rows: dict[int, int] = {}
        self._updating = False
        self.filter_box.currentTextChanged.connect(self.filter_changed.emit)
        self.table.itemSelectionChanged.connect(self._on_selection)

    @property
    def current_filter(self) -> str:
        return self.filter_box.currentText()

    def track_ids(self) -> list[int]:
        """Track ids in display order."""
        return sorted(self._rows, key=self._rows.get)

    def set_rows(self, rows: list, selected: int | None) -> None:
        """Replace the table by `rows` (session TrackRow objects)."""
        self._updating = True
        self.table.setRowCount(len(rows))
        self._rows = {}
        for i, row in enumerate(rows):
            self._rows[row.track_id] = i
            self._fill(i, row)
        self._updating = False
        self.select(selected)

    def update_row(self, row) -> None:
        i = self._rows.get(row.track_id)
        if i is not None:
            self._fill(i, row)

    def select(self, track: int | None) -> None:
        self._updating = True
        if track is None or track not in self._rows:
            self.table.clearSelection()
        else:
            self.table.selectRow(self._rows[track])
            self.table.scrollToItem(self.table.item(self._rows[track], 0))
        self._updating = False

    def _fill(self, i: int, row) -> None:
        score = "" if row.score is None else f"{row.score:.2f}"
        values = (str(row.track_id), row.category, str(row.length), row.label or "-", row.proposal or "-", score)
        for col, text in enumerate(values):
            item = self.table.item(i, col)
            if item is None:
                item = QTableWidgetItem()
                self.table.setItem(i, col, item)
            item.setText(text)
            if col in (0, 2, 5):
                item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
        label_item = self.table.item(i, 3)
        colour = self.colours[row.label]
        label_item.setForeground(QBrush(QColor(*colour) if row.label else QColor(120, 120, 120)))
        proposal_item = self.table.item(i, 4)
        disagree = row.label is not None and row.proposal is not None and row.label != row.proposal
        proposal_item.setForeground(QBrush(QColor(200, 120, 0) if disagree else QColor(110, 110, 110)))

    def _on_selection(self) -> None:
        if self._updating:
            return
        rows = self.table.selectionModel().selectedRows()
        if rows:
            track = int(self.table.item(rows[0].row(), 0).text())
            self.track_selected.emit(track)
