"""The real annotator window, offscreen: open a generated sequence, click an instance, label it with
the keys, undo and redo, and check the saved file after every step."""

import json
from pathlib import Path

import numpy as np
import pytest
from PyQt5.QtCore import QPoint, QPointF, Qt
from PyQt5.QtWidgets import QMessageBox

from annotator.app import MainWindow
from annotator.config import default_shortcuts, load_shortcuts
from annotator.session import LABEL_COLORS
from vca_data.formats.motion_labels import MotionLabels


def saved(root: Path) -> dict:
    path = root / "motion_labels.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {int(t): (e["label"], e["source"]) for t, e in data["sequences"].get("0000", {}).items()}


def show_window(qtbot, shortcuts: dict) -> MainWindow:
    win = MainWindow(shortcuts)
    qtbot.addWidget(win)
    with qtbot.waitActive(win):  # window shortcuts only fire in the active window
        win.show()
        win.activateWindow()
    return win


@pytest.fixture
def window(qtbot):
    win = show_window(qtbot, default_shortcuts())
    yield win
    win.close()


def centre_pixel(id_map: np.ndarray, track: int) -> tuple[int, int]:
    """An interior pixel of the track's mask (the mask pixel farthest from its border)."""
    import cv2

    mask = (id_map == track).astype(np.uint8)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(x), int(y)


def click_track(qtbot, win: MainWindow, track: int) -> None:
    x, y = centre_pixel(win.session.sequence.id_map(win.frame), track)
    point = win.view.image_to_widget(x + 0.5, y + 0.5)
    qtbot.mouseClick(win.view, Qt.LeftButton, pos=QPoint(int(point.x()), int(point.y())))


def key(qtbot, win: MainWindow, k, modifier=Qt.NoModifier) -> None:
    qtbot.keyClick(win.view, k, modifier)


def test_click_label_undo_redo_with_keys(qtbot, window, kitti_root):
    assert window.open_folder(kitti_root)
    tracks = window.session.track_ids
    target = tracks[2]
    click_track(qtbot, window, target)
    assert window.selected == target
    assert window.track_list.table.selectedItems()[0].text() == str(target)
    key(qtbot, window, Qt.Key_M)
    assert saved(kitti_root) == {target: ("moving", "manual")}
    assert window.progress_label.text() == "1 / 5 tracks labelled"
    key(qtbot, window, Qt.Key_S)
    assert saved(kitti_root) == {target: ("static", "manual")}
    key(qtbot, window, Qt.Key_Z, Qt.ControlModifier)
    assert saved(kitti_root) == {target: ("moving", "manual")}
    key(qtbot, window, Qt.Key_Z, Qt.ControlModifier)
    assert saved(kitti_root) == {}
    key(qtbot, window, Qt.Key_Y, Qt.ControlModifier)
    assert saved(kitti_root) == {target: ("moving", "manual")}
    key(qtbot, window, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert saved(kitti_root) == {target: ("static", "manual")}
    key(qtbot, window, Qt.Key_I)
    assert saved(kitti_root) == {target: ("ignore", "manual")}
    # The frame view shows the label: the track's pixels are blended with the ignore colour.
    key(qtbot, window, Qt.Key_Plus)  # zoomed in past 1:1, the view shows the full-resolution overlay
    assert window.view.scale > 1
    x, y = centre_pixel(window.session.sequence.id_map(0), target)
    shown = window.view.shown_array()[y, x].astype(float)
    raw = window.session.sequence.read_image(0)[y, x].astype(float)
    expected = 0.55 * raw + 0.45 * np.array(LABEL_COLORS["ignore"])
    assert np.abs(shown - expected).max() <= 1.0
    # Clicking the background deselects: the label keys then change nothing.
    ys, xs = np.nonzero(window.session.sequence.id_map(0) == 0)
    point = window.view.image_to_widget(xs[-1] + 0.5, ys[-1] + 0.5)
    qtbot.mouseClick(window.view, Qt.LeftButton, pos=QPoint(int(point.x()), int(point.y())))
    assert window.selected is None
    key(qtbot, window, Qt.Key_M)
    assert saved(kitti_root) == {target: ("ignore", "manual")}


def test_frame_keys_next_unlabelled_and_play(qtbot, window, kitti_root):
    window.open_folder(kitti_root)
    key(qtbot, window, Qt.Key_Right)
    key(qtbot, window, Qt.Key_D)
    assert window.frame == 2
    key(qtbot, window, Qt.Key_Right, Qt.ShiftModifier)
    assert window.frame == 11  # clamped at the last frame
    key(qtbot, window, Qt.Key_Left, Qt.ShiftModifier)
    assert window.frame == 1
    key(qtbot, window, Qt.Key_A)
    assert window.frame == 0 and window.timeline.current == 0
    first = window.session.track_ids[0]
    window.select_track(first)
    key(qtbot, window, Qt.Key_M)
    key(qtbot, window, Qt.Key_N)
    assert window.selected == window.session.track_ids[1]
    key(qtbot, window, Qt.Key_S)
    key(qtbot, window, Qt.Key_N)
    assert window.selected == window.session.track_ids[2]
    assert saved(kitti_root) == {first: ("moving", "manual"), window.session.track_ids[1]: ("static", "manual")}
    # The timeline of the selected track is coloured by label over the frames where it is visible.
    window.select_track(first)
    assert window.timeline.runs == [(0, 11, (230, 30, 30), False)]
    key(qtbot, window, Qt.Key_Space)
    assert window.play_timer.isActive()
    qtbot.waitUntil(lambda: window.frame >= 2, timeout=3000)
    key(qtbot, window, Qt.Key_Space)
    assert not window.play_timer.isActive()


def test_frame_range_with_keys(qtbot, window, kitti_root):
    window.open_folder(kitti_root)
    track = window.session.track_ids[0]
    window.select_track(track)
    key(qtbot, window, Qt.Key_M)
    window.set_frame(2)
    key(qtbot, window, Qt.Key_BracketLeft)
    assert window.timeline.mark == 2
    for _ in range(3):
        key(qtbot, window, Qt.Key_Right)
    key(qtbot, window, Qt.Key_S, Qt.ShiftModifier)
    data = json.loads((kitti_root / "motion_labels.json").read_text())["sequences"]["0000"][str(track)]
    assert data["label"] == "moving" and data["ranges"] == [{"start": 2, "end": 5, "label": "static"}]
    red, blue = LABEL_COLORS["moving"], LABEL_COLORS["static"]
    assert window.timeline.runs == [(0, 1, red, False), (2, 5, blue, False), (6, 11, red, False)]
    assert window.timeline.mark is None
    key(qtbot, window, Qt.Key_Z, Qt.ControlModifier)
    assert window.timeline.runs == [(0, 11, red, False)]


def test_zoom_pan_keep_click_mapping(qtbot, window, kitti_root):
    window.open_folder(kitti_root)
    view = window.view
    fitted = view.scale
    qtbot.keyClick(view, Qt.Key_Plus)
    assert view.scale == pytest.approx(fitted * 1.25)
    qtbot.mousePress(view, Qt.LeftButton, pos=QPoint(200, 200))
    qtbot.mouseMove(view, QPoint(260, 230))
    qtbot.mouseRelease(view, Qt.LeftButton, pos=QPoint(260, 230))
    assert window.selected is None  # a drag pans, it does not select
    target = window.session.track_ids[0]
    click_track(qtbot, window, target)  # the click maps through the zoomed, panned transform
    assert window.selected == target
    view.center_on(40.0, 30.0)
    centre = view.widget_to_image(QPointF(view.width() / 2, view.height() / 2))
    assert abs(centre.x() - 40.0) <= 1 and abs(centre.y() - 30.0) <= 1
    key(qtbot, window, Qt.Key_F)
    assert view.scale == pytest.approx(fitted)


def test_proposals_shown_unconfirmed_then_accepted(qtbot, window, kitti_root):
    labels = MotionLabels.new("kitti-mots")
    from vca_data.formats.folders import open_sequence

    ids = sorted(open_sequence(kitti_root).tracks())
    labels.set("0000", ids[0], "moving", source="proposal", score=0.8)
    labels.set("0000", ids[1], "moving", source="proposal", score=0.7)
    labels.save(kitti_root / "motion_labels.json")
    window.open_folder(kitti_root)
    window.track_list.filter_box.setCurrentText("proposals")
    assert window.track_list.track_ids() == ids[:2]
    assert window.track_list.table.item(0, 5).text() == "0.80"
    window.select_track(ids[0])
    assert window.timeline.runs[0][3] is True  # hatched: unconfirmed
    key(qtbot, window, Qt.Key_Return)
    assert saved(kitti_root)[ids[0]] == ("moving", "manual")
    assert window.track_list.track_ids() == [ids[1]]
    window.select_track(ids[1])
    key(qtbot, window, Qt.Key_S)
    window.track_list.filter_box.setCurrentText("disagreeing")
    assert window.track_list.track_ids() == [ids[1]]
    window.track_list.filter_box.setCurrentText("unlabelled")
    assert window.track_list.track_ids() == ids[2:]


def test_remapped_keys_and_help_dialog(qtbot, tmp_path, kitti_root):
    config = tmp_path / "annotator.yaml"
    config.write_text("shortcuts:\n  label_moving: ['1']\n  label_static: ['2']\n")
    win = show_window(qtbot, load_shortcuts(config))
    win.open_folder(kitti_root)
    win.select_track(win.session.track_ids[0])
    qtbot.keyClick(win.view, Qt.Key_1)
    assert saved(kitti_root) == {win.session.track_ids[0]: ("moving", "manual")}
    qtbot.keyClick(win.view, Qt.Key_M)  # no longer bound
    qtbot.keyClick(win.view, Qt.Key_2)
    assert saved(kitti_root) == {win.session.track_ids[0]: ("static", "manual")}
    qtbot.keyClick(win.view, Qt.Key_F1)
    from annotator.widgets import HelpDialog

    dialogs = [w for w in win.findChildren(HelpDialog)]
    assert dialogs and dialogs[-1].keys_of("label_moving") == "1" and dialogs[-1].keys_of("undo") == "Ctrl+Z"
    win.close()


def test_bad_folder_and_corrupt_labels_are_reported(qtbot, window, kitti_root, tmp_path, snapshot):
    empty = tmp_path / "photos"
    empty.mkdir()
    (empty / "cat.png").write_bytes(b"not really")
    assert not window.open_folder(empty)
    assert window.message_box.icon() == QMessageBox.Critical
    assert "not a supported motion sequence" in window.message_box.text()
    assert snapshot(empty) == {"cat.png": b"not really"} and window.session is None
    (kitti_root / "motion_labels.json").write_text("{ this is not json")
    assert window.open_folder(kitti_root)
    assert "could not be read" in window.message_box.text()
    assert "corrupt" in window.message_label.text()
    assert len(list(kitti_root.glob("motion_labels.json.corrupt-*"))) == 1


def test_export_from_window(qtbot, window, kitti_root, tmp_path):
    window.open_folder(kitti_root)
    window.session.labels.set("0000", window.session.track_ids[1], "static", source="proposal", score=0.1)
    window.select_track(window.session.track_ids[0])
    key(qtbot, window, Qt.Key_M)
    summary = window.export("coco", tmp_path / "out.json")
    data = json.loads((tmp_path / "out.json").read_text())
    assert {a["track_id"] for a in data["annotations"]} == {window.session.track_ids[0]}
    assert "out.json" in summary
    assert window.export("png", tmp_path / "png").startswith("wrote 12 colour PNG")


def test_run_proposals_from_the_menu(qtbot, window, kitti_root):
    window.open_folder(kitti_root)
    manual = window.session.track_ids[0]
    window.select_track(manual)
    key(qtbot, window, Qt.Key_I)
    seen = []
    window.actions_by_name["run_proposals"].trigger()
    window.worker.progress.connect(lambda done, total: seen.append((done, total)))
    assert window.proposal_bar.isVisible() and not window.sequence_box.isEnabled()
    qtbot.waitUntil(lambda: window.worker is None, timeout=60000)
    assert not window.proposal_bar.isVisible() and window.sequence_box.isEnabled()
    assert seen and seen[-1][0] == seen[-1][1] >= 11  # one step per frame (pair)
    proposals = window.session.proposals.sequences["0000"]
    assert proposals and all(p.source == "proposal" and 0 <= p.score <= 1 for p in proposals.values())
    on_disk = saved(kitti_root)
    assert on_disk[manual] == ("ignore", "manual")  # the manual label survives the run
    for track, proposal in proposals.items():
        if track != manual:
            assert on_disk[track] == (proposal.label, "proposal")
    assert not window.session.proposal_run_path.exists()
    window.track_list.filter_box.setCurrentText("proposals")
    assert window.track_list.track_ids() == sorted(t for t in proposals if t != manual)


def test_switch_sequence_keeps_session_marker_and_no_false_recovery(qtbot, window, tmp_path):
    from vca_data.synthetic import make_kitti_mots_sequence

    root = make_kitti_mots_sequence(tmp_path / "two", seq="0000", num_frames=4, num_objects=2, seed=1)
    make_kitti_mots_sequence(root, seq="0001", num_frames=4, num_objects=3, seed=2)
    assert window.open_folder(root)
    assert [window.sequence_box.itemText(i) for i in range(window.sequence_box.count())] == ["0000", "0001"]
    window.sequence_box.activated[str].emit("0001")
    assert window.session.name == "0001" and window.session.message is None
    assert (root / ".motion_labels.json.session").exists()  # the new session's marker survives the switch
    window.close()
    assert not (root / ".motion_labels.json.session").exists()


def test_window_killed_mid_session_then_reopened(qtbot, window, kitti_root):
    """A real window labels with key presses in a child process that is then SIGKILLed; the reopened
    window shows every label whose key press had finished, and says it recovered."""
    import signal
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import sys
        from PyQt5.QtCore import Qt
        from PyQt5.QtTest import QTest
        from PyQt5.QtWidgets import QApplication
        from annotator.app import MainWindow
        from annotator.config import default_shortcuts
        app = QApplication(sys.argv[:1])
        win = MainWindow(default_shortcuts())
        win.show()
        win.activateWindow()
        QTest.qWaitForWindowActive(win)
        win.open_folder({str(kitti_root)!r})
        for k, track in enumerate(win.session.track_ids[:4]):
            win.select_track(track)
            QTest.keyClick(win.view, (Qt.Key_M, Qt.Key_S)[k % 2])
            print(track, flush=True)
        app.exec_()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    done = [int(proc.stdout.readline()) for _ in range(4)]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert window.open_folder(kitti_root)
    assert "Recovered after an unclean exit" in window.message_label.text()
    assert saved(kitti_root) == {t: (("moving", "static")[k % 2], "manual") for k, t in enumerate(done)}
    assert window.progress_label.text() == "4 / 5 tracks labelled"
