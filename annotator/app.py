"""The annotator's main window: frame view, track list, timeline and status bar around one
`AnnotationSession`. Every key and menu action calls the session and redraws; the window holds no
labels of its own, so whatever it shows has already been saved."""

from __future__ import annotations

import sys
from pathlib import Path

from PyQt5.QtCore import Qt, QThread, QTimer, pyqtSignal
from PyQt5.QtGui import QColor, QKeySequence, QPen
from PyQt5.QtWidgets import (
    QAction,
    QApplication,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from annotator.cache import FrameStore
from annotator.config import ACTIONS, ConfigError, load_shortcuts
from annotator.exports import confirmed_only, run_export
from annotator.session import LABEL_COLORS, TRACK_FILTERS, AnnotationSession, SessionError
from annotator.widgets import FrameView, HelpDialog, Timeline, TrackList
from vca_data.formats.folders import list_sequences

JUMP = 10
PLAY_INTERVAL_MS = 100
# Toolbar buttons: action -> short text (the first key is appended).
TOOLBAR = {"label_moving": "Moving", "label_static": "Static", "label_ignore": "Ignore",
           "accept_proposal": "Accept", "undo": "Undo", "redo": "Redo", "next_unlabelled": "Next unlabelled",
           "play_pause": "Play", "run_proposals": "Proposals", "help": "Keys"}
EXPORT_FORMATS = {"coco": "COCO instance JSON", "kitti-mots": "KITTI-MOTS motion txt", "png": "colour PNGs"}


def key_sequences(shortcuts: dict[str, list[str]], action: str) -> list[QKeySequence]:
    """The Qt key sequences of `action`; ConfigError for a key Qt does not understand."""
    sequences = []
    for key in shortcuts.get(action, []):
        sequence = QKeySequence(key)
        if not sequence.toString():  # Qt turns unknown names into an empty sequence
            raise ConfigError(f"shortcut {key!r} of {action} is not a key sequence Qt understands "
                              f"(examples: M, Shift+Right, Ctrl+Z, F1, Space, Return)")
        sequences.append(sequence)
    return sequences


def check_shortcuts(shortcuts: dict[str, list[str]]) -> None:
    """Raise ConfigError when any key of the map is not a valid Qt key sequence."""
    for action in shortcuts:
        key_sequences(shortcuts, action)


class ProposalWorker(QThread):
    """Runs the motion-cue proposals for one sequence off the UI thread."""

    progress = pyqtSignal(int, int)
    failed = pyqtSignal(str)

    def __init__(self, root: Path, sequence: str, out_path: Path, parent=None):
        super().__init__(parent)
        self.root, self.sequence, self.out_path = root, sequence, out_path
        self.ok = False

    def run(self) -> None:
        from annotator.proposals import run_proposals  # heavy (flow); only loaded when asked for

        # The run starts from an empty file, so that it proposes for every track (manual labels
        # included: the disagreeing filter compares them); the session merges it when done.
        self.out_path.unlink(missing_ok=True)
        try:
            run_proposals(self.root, sequences=[self.sequence], labels_path=self.out_path, progress=False,
                          on_progress=lambda done, total: self.progress.emit(int(done), int(total)))
            self.ok = True
        except Exception as exc:  # shown to the user; the labels file is untouched by a failed run
            self.out_path.unlink(missing_ok=True)
            self.failed.emit(f"{type(exc).__name__}: {exc}")


class MainWindow(QMainWindow):
    def __init__(self, shortcuts: dict[str, list[str]] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.shortcuts = shortcuts if shortcuts is not None else load_shortcuts()
        self.session: AnnotationSession | None = None
        self.store: FrameStore | None = None
        self.frame = 0
        self.direction = 1  # of the last step: the prefetch thread decodes ahead in this direction
        self.range_mark: int | None = None
        self.selected: int | None = None
        self.message_box: QMessageBox | None = None
        self.worker: ProposalWorker | None = None
        self.setWindowTitle("vca-annotate")
        self.resize(1500, 820)

        self.view = FrameView(self)
        self.timeline = Timeline(self)
        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.timeline)
        self.setCentralWidget(central)

        self.track_list = TrackList(TRACK_FILTERS, LABEL_COLORS, self)
        dock = QDockWidget("Tracks", self)
        dock.setObjectName("tracks")
        dock.setFeatures(QDockWidget.DockWidgetMovable)
        dock.setWidget(self.track_list)
        dock.setMinimumWidth(400)
        self.addDockWidget(Qt.RightDockWidgetArea, dock)

        self.sequence_box = QComboBox(self)
        self.sequence_box.setMinimumWidth(140)
        self.sequence_box.activated[str].connect(self._switch_sequence)
        self.progress_label = QLabel(self)
        self.frame_label = QLabel(self)
        self.message_label = QLabel(self)
        self.proposal_bar = QProgressBar(self)
        self.proposal_bar.setMaximumWidth(220)
        self.proposal_bar.setFormat("proposals %v/%m")
        self.proposal_bar.hide()
        status = self.statusBar()
        status.addWidget(self.progress_label)
        status.addWidget(self.frame_label)
        status.addWidget(self.message_label, 1)
        status.addPermanentWidget(self.proposal_bar)

        self.play_timer = QTimer(self)
        self.play_timer.setInterval(PLAY_INTERVAL_MS)
        self.play_timer.timeout.connect(self._play_step)

        self.actions_by_name: dict[str, QAction] = {}
        self._build_actions()
        self._build_menus()

        self.view.clicked.connect(self._on_click)
        self.view.scale_changed.connect(lambda _s: self._show_frame())
        self.timeline.frame_requested.connect(self.set_frame)
        self.track_list.track_selected.connect(lambda t: self.select_track(t, jump=True))
        self.track_list.filter_changed.connect(lambda _f: self._refresh_tracks())
        self._update_status()

    # ------------------------------------------------------------------ actions

    def _build_actions(self) -> None:
        slots = {
            "label_moving": lambda: self.label_selected("moving"),
            "label_static": lambda: self.label_selected("static"),
            "label_ignore": lambda: self.label_selected("ignore"),
            "clear_label": self.clear_selected,
            "accept_proposal": self.accept_selected,
            "mark_range": self.toggle_range_mark,
            "range_moving": lambda: self.label_range("moving"),
            "range_static": lambda: self.label_range("static"),
            "range_ignore": lambda: self.label_range("ignore"),
            "next_frame": lambda: self.step(1),
            "previous_frame": lambda: self.step(-1),
            "jump_forward": lambda: self.step(JUMP),
            "jump_back": lambda: self.step(-JUMP),
            "first_frame": lambda: self.set_frame(0),
            "last_frame": lambda: self.set_frame(self._num_frames() - 1),
            "next_unlabelled": self.select_next_unlabelled,
            "next_track": lambda: self.select_neighbour(1),
            "previous_track": lambda: self.select_neighbour(-1),
            "play_pause": self.toggle_play,
            "undo": self.undo,
            "redo": self.redo,
            "fit_to_window": self.view.fit_to_window,
            "zoom_in": lambda: self.view.zoom(1.25),
            "zoom_out": lambda: self.view.zoom(1 / 1.25),
            "help": self.show_help,
            "open_folder": self.choose_folder,
            "run_proposals": self.run_proposals,
            "quit": self.close,
        }
        for name, text in ACTIONS.items():
            action = QAction(text, self)
            action.setShortcuts(key_sequences(self.shortcuts, name))
            action.triggered.connect(slots[name])
            self.addAction(action)  # shortcuts work wherever the focus is in the window
            self.actions_by_name[name] = action

    def _build_menus(self) -> None:
        a = self.actions_by_name
        menu = self.menuBar().addMenu("&File")
        menu.addAction(a["open_folder"])
        export = menu.addMenu("&Export")
        for fmt, text in EXPORT_FORMATS.items():
            action = export.addAction(text + "...")
            action.triggered.connect(lambda _=False, f=fmt: self.choose_export(f))
        menu.addSeparator()
        menu.addAction(a["quit"])
        menu = self.menuBar().addMenu("&Label")
        for name in ("label_moving", "label_static", "label_ignore", "clear_label", "accept_proposal"):
            menu.addAction(a[name])
        menu.addSeparator()
        for name in ("mark_range", "range_moving", "range_static", "range_ignore"):
            menu.addAction(a[name])
        menu.addSeparator()
        menu.addAction(a["undo"])
        menu.addAction(a["redo"])
        menu = self.menuBar().addMenu("&Navigate")
        for name in ("next_frame", "previous_frame", "jump_forward", "jump_back", "first_frame", "last_frame",
                     "play_pause"):
            menu.addAction(a[name])
        menu.addSeparator()
        for name in ("next_unlabelled", "next_track", "previous_track"):
            menu.addAction(a[name])
        menu = self.menuBar().addMenu("&View")
        for name in ("fit_to_window", "zoom_in", "zoom_out"):
            menu.addAction(a[name])
        menu = self.menuBar().addMenu("&Proposals")
        menu.addAction(a["run_proposals"])
        menu = self.menuBar().addMenu("&Help")
        menu.addAction(a["help"])

        toolbar = QToolBar("sequence", self)
        toolbar.setObjectName("sequence")
        toolbar.setMovable(False)
        toolbar.addWidget(QLabel(" Sequence "))
        toolbar.addWidget(self.sequence_box)
        toolbar.addSeparator()
        for name, text in TOOLBAR.items():
            keys = self.shortcuts.get(name)
            a[name].setIconText(f"{text} [{keys[0]}]" if keys else text)
            toolbar.addAction(a[name])
        self.addToolBar(toolbar)

    # ------------------------------------------------------------------ opening

    def open_folder(self, root: str | Path, sequence: str | None = None,
                    labels_path: str | Path | None = None) -> bool:
        """Open a sequence; on failure show why and keep the current one. Returns success."""
        try:
            session = AnnotationSession.open(Path(root), sequence, labels_path)
        except SessionError as exc:
            self.notify(QMessageBox.Critical, "Cannot open this folder", str(exc))
            return False
        self.show_session(session)
        return True

    def show_session(self, session: AnnotationSession) -> None:
        """Make `session` the window's sequence (the previous one is closed)."""
        self.close_session()
        self.session = session
        seq = session.sequence
        self.store = FrameStore(seq, session.overlay_styles)
        self.selected = None
        self.frame = 0
        self.range_mark = None
        self.timeline.set_mark(None)
        self.sequence_box.clear()
        self.sequence_box.addItems(list_sequences(seq.root) or [session.name])
        self.sequence_box.setCurrentText(session.name)
        self.timeline.set_length(seq.num_frames)
        self.view.set_frame_size((seq.width, seq.height))
        self.setWindowTitle(f"vca-annotate - {seq.dataset} {session.name} ({seq.root})")
        self.message_label.setText(session.message or "")
        self._refresh_tracks()
        self._refresh_timeline()
        self.set_frame(0)
        if session.message and ("could not be read" in session.message or "also open" in session.message):
            self.notify(QMessageBox.Warning, "Labels file", session.message)

    def choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a KITTI-MOTS or Cityscapes-VPS folder")
        if path:
            self.open_folder(path)

    def _switch_sequence(self, name: str) -> None:
        if self.session is not None and name != self.session.name:
            self.open_folder(self.session.sequence.root, name)

    def notify(self, icon: QMessageBox.Icon, title: str, text: str) -> None:
        """A non-blocking message box (kept in `message_box` so tests can read it)."""
        box = QMessageBox(icon, title, text, QMessageBox.Ok, self)
        box.setModal(True)
        box.open()
        self.message_box = box

    # ------------------------------------------------------------------ navigation

    def _num_frames(self) -> int:
        return self.session.sequence.num_frames if self.session else 0

    def set_frame(self, index: int) -> None:
        if self.session is None:
            return
        self.frame = int(min(max(index, 0), self._num_frames() - 1))
        self._show_frame()

    def step(self, delta: int) -> None:
        self.direction = 1 if delta >= 0 else -1
        self.set_frame(self.frame + delta)

    def toggle_play(self) -> None:
        if self.play_timer.isActive():
            self.play_timer.stop()
        elif self.session is not None:
            if self.frame >= self._num_frames() - 1:
                self.set_frame(0)
            self.play_timer.start()
        self._update_status()

    def _play_step(self) -> None:
        if self.frame >= self._num_frames() - 1:
            self.play_timer.stop()
            self._update_status()
            return
        self.step(1)

    def select_track(self, track: int | None, jump: bool = False) -> None:
        """Select `track`; with `jump`, go to its first frame unless it is visible now."""
        if self.session is None:
            return
        self.selected = track
        self.track_list.select(track)
        if track is not None and jump and self.frame not in self.session.tracks[track].frames:
            frames = self.session.tracks[track].frames
            if frames:
                self.frame = min(frames)
        self._refresh_timeline()
        self._show_frame()

    def select_next_unlabelled(self) -> None:
        if self.session is None:
            return
        track = self.session.next_unlabelled(self.selected)
        if track is None:
            self.statusBar().showMessage("Every track is labelled.", 4000)
            return
        self.select_track(track, jump=True)

    def select_neighbour(self, delta: int) -> None:
        ids = self.track_list.track_ids()
        if not ids:
            return
        if self.selected in ids:
            i = (ids.index(self.selected) + delta) % len(ids)
        else:
            i = 0 if delta > 0 else len(ids) - 1
        self.select_track(ids[i], jump=True)

    def _on_click(self, x: float, y: float) -> None:
        if self.session is None or self.store is None:
            return
        self.select_track(self.store.track_at(self.frame, x, y))

    # ------------------------------------------------------------------ labelling

    def label_selected(self, label: str) -> None:
        if self.session is None or self.selected is None:
            self.statusBar().showMessage("Click an instance to select its track first.", 3000)
            return
        self._after_change(self.session.set_label(self.selected, label))

    def clear_selected(self) -> None:
        if self.session is not None and self.selected is not None:
            self._after_change(self.session.clear_label(self.selected))

    def toggle_range_mark(self) -> None:
        self.range_mark = None if self.range_mark == self.frame else self.frame
        self.timeline.set_mark(self.range_mark)

    def label_range(self, label: str) -> None:
        """Label the selected track `label` from the range mark to the current frame."""
        if self.session is None or self.selected is None:
            self.statusBar().showMessage("Click an instance to select its track first.", 3000)
            return
        if self.range_mark is None:
            self.statusBar().showMessage(f"Press {self._keys('mark_range')} on the first frame of the range "
                                         f"first.", 4000)
            return
        try:
            change = self.session.label_range(self.selected, self.range_mark, self.frame, label)
        except ValueError as exc:
            self.statusBar().showMessage(str(exc), 5000)
            return
        self.range_mark = None
        self.timeline.set_mark(None)
        self._after_change(change)

    def accept_selected(self) -> None:
        if self.session is None or self.selected is None:
            return
        change = self.session.accept_proposal(self.selected)
        if change is None:
            self.statusBar().showMessage(f"Track {self.selected} has no proposal.", 3000)
        self._after_change(change)

    def undo(self) -> None:
        if self.session is not None:
            self._after_change(self.session.undo())

    def redo(self) -> None:
        if self.session is not None:
            self._after_change(self.session.redo())

    def _after_change(self, change) -> None:
        if change is None or self.session is None:
            return
        if self.track_list.current_filter == "all":
            self.track_list.update_row(self.session.row(change.track))
        else:
            self._refresh_tracks()
        self._refresh_timeline()
        self._show_frame()

    # ------------------------------------------------------------------ proposals and exports

    def run_proposals(self) -> None:
        if self.session is None or self.worker is not None:
            return
        self.worker = ProposalWorker(self.session.sequence.root, self.session.name,
                                     self.session.proposal_run_path, self)
        self.worker.progress.connect(self._proposal_progress)
        self.worker.failed.connect(lambda text: self.notify(QMessageBox.Critical, "Proposals failed", text))
        self.worker.finished.connect(self._proposals_done)
        self.proposal_bar.setRange(0, 0)
        self.proposal_bar.show()
        # The run's output is merged into this sequence's session: no switching away meanwhile.
        self._set_switching_enabled(False)
        self.worker.start()

    def _set_switching_enabled(self, enabled: bool) -> None:
        self.sequence_box.setEnabled(enabled)
        self.actions_by_name["open_folder"].setEnabled(enabled)
        self.actions_by_name["run_proposals"].setEnabled(enabled)

    def _proposal_progress(self, done: int, total: int) -> None:
        self.proposal_bar.setRange(0, max(total, 1))
        self.proposal_bar.setValue(done)

    def _proposals_done(self) -> None:
        worker, self.worker = self.worker, None
        self.proposal_bar.hide()
        self._set_switching_enabled(True)
        if (self.session is None or worker is None or not worker.ok
                or worker.out_path != self.session.proposal_run_path or worker.sequence != self.session.name):
            return
        try:
            count = self.session.merge_proposals()
        except SessionError as exc:
            self.notify(QMessageBox.Critical, "Proposals", str(exc))
            return
        self.statusBar().showMessage(f"{count} proposals for sequence {self.session.name}; "
                                     f"accept with {self._keys('accept_proposal')}.", 6000)
        self._refresh_tracks()
        self._refresh_timeline()
        self._show_frame()

    def export(self, fmt: str, out: str | Path) -> str:
        """Write the confirmed labels of the open dataset (every sequence, proposals nobody accepted
        left out, as `vca-annotate export` does) in `fmt` (coco, kitti-mots, png) to `out`; returns a
        one-line summary."""
        if self.session is None:
            raise RuntimeError("no sequence is open")
        return run_export(confirmed_only(self.session.labels), self.session.sequence.root, fmt, Path(out))

    def choose_export(self, fmt: str) -> None:
        if self.session is None:
            return
        if fmt == "coco":
            out, _ = QFileDialog.getSaveFileName(self, "Export COCO JSON", "motion_coco.json", "JSON (*.json)")
        else:
            out = QFileDialog.getExistingDirectory(self, f"Export {EXPORT_FORMATS[fmt]} into")
        if not out:
            return
        try:
            summary = self.export(fmt, out)
        except (OSError, ValueError) as exc:
            self.notify(QMessageBox.Critical, "Export failed", str(exc))
            return
        self.statusBar().showMessage(summary, 8000)

    # ------------------------------------------------------------------ drawing

    def _show_frame(self) -> None:
        if self.session is None or self.store is None:
            self.view.clear()
            return
        scale = min(self.view.scale, 1.0)
        image = self.store.overlay(self.frame, self.session.version, scale, self.direction)
        outlines = []
        if self.selected is not None and self.selected in self.session.tracks_at(self.frame):
            polygons = self.store.contours(self.frame, self.selected)
            halo = QPen(QColor(0, 0, 0), 4)
            halo.setCosmetic(True)
            pen = QPen(QColor(255, 235, 60), 2)
            pen.setCosmetic(True)
            outlines = [(polygons, halo), (polygons, pen)]
        seq = self.session.sequence
        self.view.set_frame(image, outlines, (seq.width, seq.height), round(scale, 3))
        self.timeline.set_current(self.frame)
        self._update_status()

    def _refresh_tracks(self) -> None:
        if self.session is None:
            return
        rows = [self.session.row(t) for t in self.session.filter_tracks(self.track_list.current_filter)]
        self.track_list.set_rows(rows, self.selected)

    def _refresh_timeline(self) -> None:
        if self.session is None or self.selected is None:
            self.timeline.set_track([], "no track selected")
            return
        session, track = self.session, self.selected
        runs: list[tuple[int, int, tuple[int, int, int], bool]] = []
        proposal = session.proposal_of(track)
        for f in sorted(session.tracks[track].frames):
            label = session.label_at(track, f)
            if label is None and proposal is not None:
                look = (LABEL_COLORS[proposal.label], True)
            else:
                look = (LABEL_COLORS[label], False)
            if runs and runs[-1][1] == f - 1 and runs[-1][2:] == look:
                runs[-1] = (runs[-1][0], f, *look)
            else:
                runs.append((f, f, *look))
        row = session.row(track)
        caption = f"track {track} ({row.category}): {row.label or 'unlabelled'}"
        if row.proposal:
            caption += f", proposal {row.proposal} ({row.score:.2f})" if row.score is not None \
                else f", proposal {row.proposal}"
        self.timeline.set_track(runs, caption)

    def _update_status(self) -> None:
        if self.session is None:
            self.progress_label.setText("no sequence open")
            self.frame_label.setText("")
            return
        done, total = self.session.progress()
        self.progress_label.setText(f"{done} / {total} tracks labelled")
        playing = "  playing" if self.play_timer.isActive() else ""
        self.frame_label.setText(f"frame {self.frame + 1}/{self._num_frames()}{playing}")

    def _keys(self, action: str) -> str:
        return "/".join(self.shortcuts.get(action, [])) or "(no key)"

    def show_help(self) -> None:
        HelpDialog(self.shortcuts, self).open()

    # ------------------------------------------------------------------ closing

    def close_session(self) -> None:
        """Release the open sequence: stop playing, stop the prefetch thread, end the session cleanly."""
        self.play_timer.stop()
        if self.worker is not None:
            self.worker.wait()
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.session is not None:
            self.session.close()
            self.session = None

    def closeEvent(self, event) -> None:
        self.close_session()
        super().closeEvent(event)


def run_app(session: AnnotationSession | None = None, shortcuts: dict[str, list[str]] | None = None) -> int:
    """Start the Qt application with the main window showing `session` (or nothing yet)."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow(shortcuts)
    app.aboutToQuit.connect(window.close_session)  # quitting without closing the window ends cleanly too
    window.show()
    if session is not None:
        window.show_session(session)
    return app.exec_()
