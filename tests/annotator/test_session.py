"""The Qt-free annotation model: labels, undo/redo, autosave, recovery after a kill, corrupt and
foreign labels files, the frame cache and the key-map config."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from annotator.cache import FrameStore, LRUCache
from annotator.config import ConfigError, default_shortcuts, load_shortcuts
from annotator.session import LABEL_COLORS, AnnotationSession, SessionError
from vca_data.formats.folders import open_sequence
from vca_data.formats.motion_labels import MotionLabels, TrackLabel
from vca_data.synthetic import make_kitti_mots_sequence


def saved(root: Path) -> dict:
    """The labels of sequence 0000 as written on disk: {track id: (label, source)}."""
    data = json.loads((root / "motion_labels.json").read_text())
    return {int(t): (e["label"], e["source"]) for t, e in data["sequences"].get("0000", {}).items()}


def test_label_undo_redo_saved_after_every_step(kitti_root):
    session = AnnotationSession.open(kitti_root)
    a, b = session.track_ids[:2]
    assert session.message is None and not (kitti_root / "motion_labels.json").exists()
    session.set_label(a, "moving")
    assert saved(kitti_root) == {a: ("moving", "manual")}
    session.set_label(b, "static")
    session.set_label(a, "ignore")
    assert saved(kitti_root) == {a: ("ignore", "manual"), b: ("static", "manual")}
    assert session.progress() == (2, 5)
    assert session.undo().track == a
    assert saved(kitti_root) == {a: ("moving", "manual"), b: ("static", "manual")}
    session.undo()
    session.undo()
    assert saved(kitti_root) == {} and session.undo() is None and session.progress() == (0, 5)
    session.redo()
    session.redo()
    assert saved(kitti_root) == {a: ("moving", "manual"), b: ("static", "manual")}
    session.set_label(b, "moving")  # a new change drops the redo stack
    assert not session.can_redo and session.redo() is None
    session.close()
    again = AnnotationSession.open(kitti_root)
    assert again.message is None  # a clean close is not a recovery
    assert again.label_of(b).label == "moving" and again.label_of(a).label == "moving"
    again.close()


def test_frame_ranges_survive_relabel_and_colour_the_overlay(kitti_root):
    session = AnnotationSession.open(kitti_root)
    track = session.track_ids[0]
    with pytest.raises(ValueError, match="no label yet"):
        session.label_range(track, 3, 5, "static")
    session.set_label(track, "moving")
    session.label_range(track, 5, 3, "static")
    data = json.loads((kitti_root / "motion_labels.json").read_text())
    assert data["sequences"]["0000"][str(track)]["ranges"] == [{"start": 3, "end": 5, "label": "static"}]
    session.label_range(track, 2, 6, "moving")  # covers the first range: it is dropped
    assert [(r.start, r.end) for r in session.label_of(track).ranges] == [(2, 6)]
    session.undo()
    assert [(r.start, r.end, r.label) for r in session.label_of(track).ranges] == [(3, 5, "static")]
    with pytest.raises(ValueError, match="outside"):
        session.label_range(track, 0, 12, "static")
    session.set_label(track, "ignore")
    assert [session.label_at(track, f) for f in (2, 3, 5, 6)] == ["ignore", "static", "static", "ignore"]
    assert session.overlay_styles(4)[track] == (LABEL_COLORS["static"], False)
    session.close()


def test_proposals_accept_disagree_and_filters(kitti_root):
    labels = MotionLabels.new("kitti-mots")
    ids = sorted(open_sequence(kitti_root).tracks())
    labels.set("0000", ids[0], "moving", source="proposal", score=0.9)
    labels.set("0000", ids[1], "static", source="proposal", score=0.6)
    labels.save(kitti_root / "motion_labels.json")
    session = AnnotationSession.open(kitti_root)
    assert session.filter_tracks("proposals") == ids[:2]
    assert session.filter_tracks("unlabelled") == ids  # proposals are not labels until accepted
    assert session.overlay_styles(0)[ids[0]] == (LABEL_COLORS["moving"], True)
    session.accept_proposal(ids[0])
    assert saved(kitti_root)[ids[0]] == ("moving", "manual")
    session.set_label(ids[1], "moving")  # the annotator overrules the proposal
    assert session.filter_tracks("disagreeing") == [ids[1]]
    assert session.filter_tracks("proposals") == []
    assert session.accept_proposal(ids[2]) is None
    session.clear_label(ids[1])  # back to the unconfirmed proposal, as the proposal run left it
    assert saved(kitti_root)[ids[1]] == ("static", "proposal")
    session.set_label(ids[1], "moving")
    session.close()
    # The proposal that the manual label replaced is kept beside the labels: still disagreeing after reopen.
    again = AnnotationSession.open(kitti_root)
    assert again.filter_tracks("disagreeing") == [ids[1]]
    assert again.row(ids[1]).score == pytest.approx(0.6)
    again.close()


def test_kill_and_reopen_keeps_every_finished_action(kitti_root):
    script = textwrap.dedent(f"""
        import sys, time
        from annotator.session import AnnotationSession
        session = AnnotationSession.open({str(kitti_root)!r})
        for k, track in enumerate(session.track_ids):
            session.set_label(track, ("moving", "static")[k % 2])
            print(track, flush=True)
        session.undo()
        print("undo", flush=True)
        while True:
            session.set_label(session.track_ids[0], "ignore")
            session.set_label(session.track_ids[0], "moving")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    done = [proc.stdout.readline().strip() for _ in range(6)]
    time.sleep(0.3)  # let it get killed in the middle of its save loop
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL and done[-1] == "undo"
    session = AnnotationSession.open(kitti_root)
    assert "Recovered after an unclean exit" in session.message
    labelled = [int(t) for t in done[:-1]]
    # The last label was undone; every other action finished before the kill is there.
    expected = {t: ("moving", "static")[k % 2] for k, t in enumerate(labelled[:-1])}
    got = {t: session.label_of(t).label for t in labelled[1:-1]}
    assert got == {t: expected[t] for t in labelled[1:-1]}
    assert session.label_of(labelled[0]).label in ("moving", "ignore")  # the loop's track: either save
    assert session.label_of(labelled[-1]) is None
    assert not any(p.name.endswith(".tmp") for p in kitti_root.iterdir())  # a killed write's temp removed
    session.close()


def test_corrupt_labels_reported_kept_aside_not_overwritten(kitti_root):
    broken = b'{"format": "vca-motion-labels", "version": 1, "sequ'
    (kitti_root / "motion_labels.json").write_bytes(broken)
    session = AnnotationSession.open(kitti_root)
    aside = sorted(kitti_root.glob("motion_labels.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == broken
    assert "could not be read" in session.message and aside[0].name in session.message
    session.set_label(session.track_ids[0], "static")
    assert aside[0].read_bytes() == broken
    assert saved(kitti_root) == {session.track_ids[0]: ("static", "manual")}
    session.close()


def test_foreign_labels_and_folders_change_nothing(kitti_root, tmp_path, snapshot):
    wrong_dataset = MotionLabels.new("cityscapes-vps")
    wrong_dataset.set("val/0001", 13001, "moving")
    wrong_dataset.save(kitti_root / "motion_labels.json")
    before = snapshot(kitti_root)
    with pytest.raises(SessionError, match="cityscapes-vps"):
        AnnotationSession.open(kitti_root)
    assert snapshot(kitti_root) == before
    other = MotionLabels.new("kitti-mots")
    other.set("0000", 1999, "moving")  # no such track in this sequence
    other.save(kitti_root / "motion_labels.json")
    before = snapshot(kitti_root)
    with pytest.raises(SessionError, match="1999"):
        AnnotationSession.open(kitti_root)
    assert snapshot(kitti_root) == before
    with pytest.raises(SessionError, match="cannot open sequence 0099.*found: 0000"):
        AnnotationSession.open(kitti_root, "0099")
    assert snapshot(kitti_root) == before
    empty = tmp_path / "not_a_dataset"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(SessionError, match="not a supported motion sequence"):
        AnnotationSession.open(empty)
    assert snapshot(empty) == {"notes.txt": b"hello"}


def test_second_sequence_and_labels_of_other_sequences_kept(tmp_path):
    root = make_kitti_mots_sequence(tmp_path / "ds", seq="0000", num_frames=4, num_objects=2, seed=1)
    make_kitti_mots_sequence(root, seq="0001", num_frames=4, num_objects=3, seed=2)
    first = AnnotationSession.open(root)  # no --sequence: the first one
    assert first.name == "0000"
    first.set_label(first.track_ids[0], "moving")
    first.close()
    second = AnnotationSession.open(root, "0001")
    second.set_label(second.track_ids[-1], "static")
    second.close()
    labels = MotionLabels.load(root / "motion_labels.json")
    assert sorted(labels.sequences) == ["0000", "0001"]


def test_cityscapes_vps_sequence_names_with_split(tmp_path):
    from vca_data.synthetic import make_cityscapes_vps

    root = make_cityscapes_vps(tmp_path / "cs", num_videos=2, frames_per_video=10)
    session = AnnotationSession.open(root, "val/0002")
    assert session.tracks_at(3) == [] and session.tracks_at(4) == session.track_ids  # labelled every 5th
    session.set_label(session.track_ids[0], "static")
    session.close()
    labels = MotionLabels.load(root / "motion_labels.json")
    assert labels.dataset == "cityscapes-vps"
    assert labels.get("val/0002", session.track_ids[0]).label == "static"


def test_lru_cache_evicts_least_recent_and_prefetches():
    calls = []
    gate = threading.Event()

    def load(key):
        calls.append(key)
        if key == 99:
            gate.wait(5)
        return key * 10

    cache = LRUCache(load, capacity=3)
    assert [cache.get(k) for k in (1, 2, 3)] == [10, 20, 30]
    cache.get(1)  # 1 is now the most recent: adding 4 evicts 2
    cache.get(4)
    assert 2 not in cache and 1 in cache and len(cache) == 3
    cache.prefetch([5, 6])
    assert cache.wait_idle(5)
    assert 5 in cache and 6 in cache
    cache.prefetch([99])
    time.sleep(0.05)
    threading.Timer(0.1, gate.set).start()
    assert cache.get(99) == 990 and calls.count(99) == 1  # waited for the worker, not loaded twice
    cache.close()


def test_frame_store_overlay_and_hit_test(kitti_root):
    session = AnnotationSession.open(kitti_root)
    store = FrameStore(session.sequence, session.overlay_styles)
    ids = session.sequence.id_map(0)
    moving, proposal = session.track_ids[0], session.track_ids[1]
    session.set_label(moving, "moving")
    session.labels.set("0000", proposal, "static", source="proposal", score=0.5)
    session.proposals.set("0000", proposal, "static", source="proposal", score=0.5)
    session.version += 1
    rgb = session.sequence.read_image(0).astype(int)
    out = store.overlay(0, session.version).astype(int)
    inner = (ids == moving)
    inner[1:-1, 1:-1] &= (ids[:-2, 1:-1] == moving) & (ids[2:, 1:-1] == moving)
    # Red is blended into the moving track, the background is untouched.
    assert (out[inner][:, 0] - rgb[inner][:, 0]).mean() > 20
    assert np.array_equal(out[ids == 0], rgb[ids == 0])
    hatched = ids == proposal
    changed = (out[hatched] != rgb[hatched]).any(axis=1).mean()
    assert 0.3 < changed < 0.8  # proposals: stripes only
    ys, xs = np.nonzero(ids == moving)
    assert store.track_at(0, xs[0] + 0.5, ys[0] + 0.5) == moving
    assert store.track_at(0, -3, 5) is None
    contour = store.contours(0, moving)[0]
    assert contour[:, 0].min() == xs.min() and contour[:, 1].max() == ys.max()
    assert store.overlays.wait_idle(10) and (3, session.version, 1.0) in store.overlays  # prefetched ahead
    # Frames with more than 127 tracks use 16-bit maps and numpy look-ups: same pixels.
    wide = store.frame(0)
    wide.local = wide.local.astype(np.uint16)
    assert np.array_equal(store._render((0, session.version, 1.0)), out.astype(np.uint8))
    small = store.overlay(5, session.version, scale=0.5, direction=-1)
    assert small.shape == (48, 80, 3)
    assert store.overlays.wait_idle(10) and (4, session.version, 0.5) in store.overlays  # backwards
    store.close()
    session.close()


def test_shortcut_config_override_and_errors(tmp_path):
    defaults = default_shortcuts()
    assert defaults["label_moving"] == ["M"] and "Ctrl+Z" in defaults["undo"]
    user = tmp_path / "annotator.yaml"
    user.write_text("shortcuts:\n  label_moving: ['1']\n  label_static: '2'\n")
    keys = load_shortcuts(user)
    assert keys["label_moving"] == ["1"] and keys["label_static"] == ["2"] and keys["undo"] == defaults["undo"]
    user.write_text("shortcuts:\n  label_wobbly: ['W']\n")
    with pytest.raises(ConfigError, match="label_wobbly"):
        load_shortcuts(user)
    user.write_text("shortcuts:\n  label_moving: ['S']\n")
    with pytest.raises(ConfigError, match="both"):
        load_shortcuts(user)
    with pytest.raises(ConfigError, match="not found"):
        load_shortcuts(tmp_path / "missing.yaml")


def test_track_label_entries_are_copies(kitti_root):
    session = AnnotationSession.open(kitti_root)
    track = session.track_ids[0]
    change = session.set_label(track, "moving")
    change.after.label = "static"  # mutating what the caller got back must not change the session
    assert session.label_of(track) == TrackLabel("moving", "manual")
    session.close()
    assert not os.path.exists(kitti_root / ".motion_labels.json.session")
