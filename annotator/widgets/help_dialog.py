"""The help dialog (F1): every action of the annotator with its keys, as configured."""

from __future__ import annotations

from PyQt5.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from annotator.config import ACTIONS, USER_CONFIG


class HelpDialog(QDialog):
    def __init__(self, shortcuts: dict[str, list[str]], parent=None):
        super().__init__(parent)
        self.setWindowTitle("vca-annotate: keys")
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(
            "Click an instance to select its track; drag to pan, wheel to zoom. A track whose state changes\n"
            "(a parked car driving off): label the track, then mark the first frame of the other state and\n"
            "label the range up to the current frame.\n"
            "Red = moving, blue = static, yellow = ignore, grey = unlabelled; hatched with a dashed\n"
            f"outline = proposal not yet accepted. Remap keys in {USER_CONFIG} (shortcuts: action: [keys])."))
        self.table = QTableWidget(len(ACTIONS), 3, self)
        self.table.setHorizontalHeaderLabels(["action", "keys", "config name"])
        for row, (action, text) in enumerate(ACTIONS.items()):
            self.table.setItem(row, 0, QTableWidgetItem(text))
            self.table.setItem(row, 1, QTableWidgetItem(", ".join(shortcuts.get(action, [])) or "-"))
            self.table.setItem(row, 2, QTableWidgetItem(action))
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        layout.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.Close, self)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(560, 640)

    def keys_of(self, action: str) -> str:
        """The keys listed for `action` (config name)."""
        for row in range(self.table.rowCount()):
            if self.table.item(row, 2).text() == action:
                return self.table.item(row, 1).text()
        raise KeyError(action)
