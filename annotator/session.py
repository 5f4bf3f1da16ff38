"""The annotation session: one open motion sequence, its instance tracks, their moving/static labels
with where each came from, undo/redo, and an autosave of `motion_labels.json` after every change.

This is the annotator's model. It imports no Qt, so tests, batch tools and a crash-recovery check
run without a display; the window only draws what it reads here and forwards input to it.

Crash safety: every change is written at once by an atomic rename, so a killed process leaves the
file as it was after the last finished change. A marker file beside the labels records that a
session is open; finding it on the next open means the previous session did not close cleanly, and
the session says that the labels were recovered from the last save.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from vca_data.formats.folders import list_sequences, open_sequence
from vca_data.formats.motion_labels import LABELS, FrameRange, MotionLabels, MotionLabelsError, TrackLabel
from vca_data.formats.sequence import MotionSequence, SequenceError, Track
from vca_data.io import atomic_write_json

LABELS_FILE = "motion_labels.json"
# Proposals are kept beside the labels so that a manual label that replaces a proposal does not lose
# it: the "disagreeing" filter compares the two. Same schema as motion_labels.json, source "proposal".
PROPOSALS_FILE = "motion_proposals.json"

# Display colours (RGB) shared by the frame view, the timeline and the colour-PNG export convention.
LABEL_COLORS: dict[str | None, tuple[int, int, int]] = {
    "moving": (230, 30, 30),
    "static": (30, 90, 240),
    "ignore": (225, 200, 40),
    None: (150, 150, 150),
}
TRACK_FILTERS = ("all", "unlabelled", "proposals", "disagreeing")


class SessionError(ValueError):
    """A folder or labels file the annotator cannot open; nothing on disk was changed."""


@dataclass(frozen=True)
class Change:
    """One undoable edit: the label of `track` before and after."""

    track: int
    before: TrackLabel | None
    after: TrackLabel | None


@dataclass(frozen=True)
class TrackRow:
    """What the track list shows for one track."""

    track_id: int
    category: str
    length: int
    first_frame: int
    label: str | None          # confirmed label (manual or simulator), None when unlabelled
    source: str | None
    proposal: str | None       # proposed label, None when no proposal
    score: float | None        # proposal score


class AnnotationSession:
    """Labels of one sequence, edited one track at a time, saved after every change."""

    def __init__(self, sequence: MotionSequence, labels: MotionLabels, labels_path: Path,
                 proposals: MotionLabels | None = None, message: str | None = None):
        self.sequence = sequence
        self.name = sequence.name
        self.labels = labels
        self.labels_path = Path(labels_path)
        self.proposals_path = self.labels_path.with_name(PROPOSALS_FILE)
        self.proposals = proposals if proposals is not None else MotionLabels.new(sequence.dataset)
        self.message = message
        self.tracks: dict[int, Track] = dict(sorted(sequence.tracks().items()))
        self.track_ids: list[int] = list(self.tracks)
        self.version = 0  # bumped on every change; the overlay cache keys on it
        self._undo: list[Change] = []
        self._redo: list[Change] = []
        self._frame_tracks: list[list[int]] | None = None
        self._marker = _marker_path(self.labels_path)
        self._adopt_proposals_from_labels()
        self._token = _write_marker(self._marker)

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, root: str | Path, sequence: str | None = None,
             labels_path: str | Path | None = None) -> AnnotationSession:
        """Open sequence `sequence` (default: the first) of the dataset at `root` with its labels
        (default `root/motion_labels.json`). Raises SessionError, changing nothing on disk, when the
        folder is not a supported sequence or the labels belong to another dataset or sequence. A
        labels file that cannot be parsed is moved aside to `motion_labels.json.corrupt-<time>` and
        the session starts empty, saying so in `message`."""
        seq, labels, labels_path, corrupt_error = cls._prepare(root, sequence, labels_path)
        notes: list[str] = []
        marker = _marker_path(labels_path)
        note = _recovery_note(marker, labels_path) if marker.exists() else None
        if note is not None:
            if note.startswith("Recovered"):
                # A write killed between creating its temporary file and the rename leaves the file behind.
                for name in (labels_path.name, PROPOSALS_FILE):
                    for debris in labels_path.parent.glob(f".{name}.*.tmp"):
                        debris.unlink(missing_ok=True)
                labels_path.with_name(f".{labels_path.name}.proposal-run.json").unlink(missing_ok=True)
            notes.append(note)
        if corrupt_error is not None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            aside = labels_path.with_name(f"{labels_path.name}.corrupt-{stamp}")
            os.replace(labels_path, aside)
            notes.append(f"{labels_path.name} could not be read ({corrupt_error}); it was kept as "
                         f"{aside.name} and the session starts with no labels.")
        if labels is None:
            labels = MotionLabels.new(seq.dataset)
        proposals = _load_proposals(labels_path.with_name(PROPOSALS_FILE), seq)
        return cls(seq, labels, labels_path, proposals, " ".join(notes) or None)

    @staticmethod
    def _prepare(root: str | Path, sequence: str | None, labels_path: str | Path | None
                 ) -> tuple[MotionSequence, MotionLabels | None, Path, Exception | None]:
        """Read the sequence and its labels without writing anything: (sequence, labels or None,
        labels path, the error that makes the labels file unreadable or None)."""
        root = Path(root)
        names = list_sequences(root) if root.is_dir() else []
        if sequence is None and len(names) > 1:
            sequence = names[0]
        try:
            seq = open_sequence(root, sequence)
        except (SequenceError, OSError) as exc:  # the reader's own error names the file; keep its words
            if names:
                raise SessionError(f"{root}: cannot open sequence {sequence or names[0]}: {exc}") from exc
            raise SessionError(f"{root}: not a supported motion sequence folder "
                               f"(KITTI-MOTS or Cityscapes-VPS layout): {exc}") from exc
        labels_path = Path(labels_path) if labels_path is not None else seq.root / LABELS_FILE
        if labels_path.is_dir():
            raise SessionError(f"{labels_path}: is a folder, expected a motion_labels.json file")
        if not labels_path.exists():
            return seq, None, labels_path, None
        try:
            labels = MotionLabels.load(labels_path)
        except (MotionLabelsError, ValueError, UnicodeDecodeError) as exc:
            return seq, None, labels_path, exc
        except OSError as exc:
            raise SessionError(f"{labels_path}: cannot read the labels file: {exc}") from exc
        _check_labels_belong(labels, labels_path, seq)
        return seq, labels, labels_path, None

    def close(self) -> None:
        """End the session cleanly: the next open will not report a recovery."""
        # Only our own marker: a session opened later on the same labels (a sequence switch) keeps its own.
        if _read_marker(self._marker).get("token") == self._token:
            self._marker.unlink(missing_ok=True)

    # ---------------------------------------------------------------- reading

    def label_of(self, track: int) -> TrackLabel | None:
        """The confirmed label of `track` (manual or simulator), None if unlabelled."""
        entry = self.labels.get(self.name, track)
        if entry is None or entry.source == "proposal":
            return None
        return entry

    def proposal_of(self, track: int) -> TrackLabel | None:
        return self.proposals.get(self.name, track)

    def label_at(self, track: int, frame: int) -> str | None:
        """Confirmed label of `track` at `frame`, frame ranges applied."""
        if self.label_of(track) is None:
            return None
        return self.labels.label_at(self.name, track, frame)

    def is_disagreeing(self, track: int) -> bool:
        label, proposal = self.label_of(track), self.proposal_of(track)
        return label is not None and proposal is not None and label.label != proposal.label

    def row(self, track: int) -> TrackRow:
        info = self.tracks[track]
        label, proposal = self.label_of(track), self.proposal_of(track)
        return TrackRow(
            track_id=track, category=info.category, length=len(info.frames),
            first_frame=min(info.frames) if info.frames else 0,
            label=label.label if label else None, source=label.source if label else None,
            proposal=proposal.label if proposal else None, score=proposal.score if proposal else None,
        )

    def filter_tracks(self, kind: str = "all") -> list[int]:
        """Track ids shown under a track-list filter (one of TRACK_FILTERS)."""
        if kind == "all":
            return list(self.track_ids)
        if kind == "unlabelled":
            return [t for t in self.track_ids if self.label_of(t) is None]
        if kind == "proposals":
            return [t for t in self.track_ids if self.proposal_of(t) is not None and self.label_of(t) is None]
        if kind == "disagreeing":
            return [t for t in self.track_ids if self.is_disagreeing(t)]
        raise ValueError(f"unknown track filter {kind!r}; expected one of {TRACK_FILTERS}")

    def progress(self) -> tuple[int, int]:
        """(tracks with a confirmed label, all tracks)."""
        return sum(self.label_of(t) is not None for t in self.track_ids), len(self.track_ids)

    def next_unlabelled(self, after: int | None = None) -> int | None:
        """The first unlabelled track after `after` in id order, wrapping around; None if all done."""
        todo = [t for t in self.track_ids if self.label_of(t) is None]
        if not todo:
            return None
        later = [t for t in todo if after is None or t > after]
        return later[0] if later else todo[0]

    def tracks_at(self, frame: int) -> list[int]:
        """Ids of the tracks visible in `frame`."""
        if self._frame_tracks is None:
            per_frame: list[list[int]] = [[] for _ in range(self.sequence.num_frames)]
            for tid, info in self.tracks.items():
                for f in info.frames:
                    if 0 <= f < len(per_frame):
                        per_frame[f].append(tid)
            self._frame_tracks = per_frame
        return self._frame_tracks[frame]

    def overlay_styles(self, frame: int) -> dict[int, tuple[tuple[int, int, int], bool]]:
        """Colour and 'unconfirmed' flag of every track visible in `frame`: confirmed labels solid,
        proposals hatched in the proposed label's colour, unlabelled tracks grey."""
        styles = {}
        for tid in self.tracks_at(frame):
            label = self.label_at(tid, frame)
            if label is not None:
                styles[tid] = (LABEL_COLORS[label], False)
                continue
            proposal = self.proposal_of(tid)
            if proposal is not None:
                styles[tid] = (LABEL_COLORS[proposal.label], True)
            else:
                styles[tid] = (LABEL_COLORS[None], False)
        return styles

    # ---------------------------------------------------------------- editing

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def set_label(self, track: int, label: str) -> Change:
        """Label `track` manually (keeping its frame ranges); saved at once, undoable."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {label!r}")
        self._check_track(track)
        before = self.label_of(track)
        after = TrackLabel(label=label, source="manual",
                           score=None, ranges=copy.deepcopy(before.ranges) if before else [])
        return self._apply_new(Change(track, self._entry(track), after))

    def label_range(self, track: int, start: int, end: int, label: str) -> Change:
        """Override the label of `track` on frames start..end (inclusive, either order), e.g. a parked
        car that drives off; saved at once, undoable. The track needs a confirmed label first."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {label!r}")
        self._check_track(track)
        start, end = sorted((int(start), int(end)))
        if start < 0 or end >= self.sequence.num_frames:
            raise ValueError(f"frame range {start}-{end} outside 0-{self.sequence.num_frames - 1}")
        before = self.label_of(track)
        if before is None:
            raise ValueError(f"track {track} has no label yet: label the whole track before a frame range")
        after = copy.deepcopy(before)
        after.source = "manual"
        # Ranges inside the new one can never show again (the later range wins): drop them.
        after.ranges = [r for r in after.ranges if not (start <= r.start and r.end <= end)]
        after.ranges.append(FrameRange(start, end, label))
        return self._apply_new(Change(track, self._entry(track), after))

    def accept_proposal(self, track: int) -> Change | None:
        """Confirm the proposal of `track`: a manual label equal to it. None when there is none."""
        self._check_track(track)
        proposal = self.proposal_of(track)
        if proposal is None:
            return None
        return self.set_label(track, proposal.label)

    def clear_label(self, track: int) -> Change | None:
        """Remove the confirmed label of `track`; None when it had none."""
        self._check_track(track)
        if self.label_of(track) is None:
            return None
        return self._apply_new(Change(track, self._entry(track), None))

    def undo(self) -> Change | None:
        """Revert the last change (saved at once); None when there is nothing to undo."""
        if not self._undo:
            return None
        change = self._undo.pop()
        self._write(change.track, change.before)
        self._redo.append(change)
        return change

    def redo(self) -> Change | None:
        if not self._redo:
            return None
        change = self._redo.pop()
        self._write(change.track, change.after)
        self._undo.append(change)
        return change

    @property
    def proposal_run_path(self) -> Path:
        """Where a proposal run writes (never the labels file, which only this session writes)."""
        return self.labels_path.with_name(f".{self.labels_path.name}.proposal-run.json")

    def merge_proposals(self, run_path: Path | None = None) -> int:
        """Take this sequence's proposals from a proposal run's output (default `proposal_run_path`,
        removed afterwards): they replace the previous proposals; tracks without a confirmed label
        show them; confirmed labels stay. Saved at once. Returns how many proposals there are."""
        run_path = Path(run_path) if run_path is not None else self.proposal_run_path
        try:
            run = MotionLabels.load(run_path)
        except (MotionLabelsError, OSError) as exc:
            raise SessionError(f"{run_path}: proposals could not be read back: {exc}") from exc
        if run.dataset != self.sequence.dataset:
            raise SessionError(f"{run_path}: proposals for a {run.dataset} dataset, not {self.sequence.dataset}")
        fresh = {tid: e for tid, e in run.sequences.get(self.name, {}).items()
                 if e.source == "proposal" and tid in self.tracks}
        self.proposals.sequences[self.name] = fresh
        entries = self.labels.sequences.setdefault(self.name, {})
        for tid in [t for t, e in entries.items() if e.source == "proposal" and t not in fresh]:
            del entries[tid]  # the new run is unsure about this track
        for tid, proposal in fresh.items():
            current = entries.get(tid)
            if current is None or current.source == "proposal":
                entries[tid] = copy.deepcopy(proposal)
        self._save()
        self.version += 1
        if run_path == self.proposal_run_path:
            run_path.unlink(missing_ok=True)
        return len(fresh)

    # ---------------------------------------------------------------- internals

    def _check_track(self, track: int) -> None:
        if track not in self.tracks:
            raise KeyError(f"sequence {self.name} has no track {track}")

    def _entry(self, track: int) -> TrackLabel | None:
        entry = self.labels.get(self.name, track)
        return copy.deepcopy(entry) if entry is not None else None

    def _apply_new(self, change: Change) -> Change:
        self._write(change.track, change.after)
        self._undo.append(change)
        self._redo.clear()
        return change

    def _write(self, track: int, entry: TrackLabel | None) -> None:
        entries = self.labels.sequences.setdefault(self.name, {})
        if entry is None:
            # An unconfirmed track falls back to its proposal, as the proposal run left it.
            proposal = self.proposal_of(track)
            if proposal is not None:
                entries[track] = copy.deepcopy(proposal)
            else:
                entries.pop(track, None)
        else:
            entries[track] = copy.deepcopy(entry)
        self._save()
        self.version += 1

    def _save(self) -> None:
        self.labels.save(self.labels_path)
        if self.proposals.sequences:
            self.proposals.save(self.proposals_path)

    def _adopt_proposals_from_labels(self) -> None:
        for seq, entries in self.labels.sequences.items():
            for tid, entry in entries.items():
                if entry.source == "proposal":
                    self.proposals.sequences.setdefault(seq, {})[tid] = copy.deepcopy(entry)


def _check_labels_belong(labels: MotionLabels, path: Path, seq: MotionSequence) -> None:
    """Refuse labels made for another dataset or another sequence."""
    if labels.dataset != seq.dataset:
        raise SessionError(f"{path}: labels are for a {labels.dataset} dataset, but {seq.root} holds a "
                           f"{seq.dataset} sequence; open the matching folder or move the file away")
    entries = labels.sequences.get(seq.name)
    if entries is None:
        known = set(list_sequences(seq.root))
        if labels.sequences and not known & set(labels.sequences):
            raise SessionError(f"{path}: labels name sequences {sorted(labels.sequences)[:5]}, none of which "
                               f"is in {seq.root}; they belong to another dataset")
        return
    missing = sorted(set(entries) - set(seq.tracks()))
    if missing:
        raise SessionError(f"{path}: labels of sequence {seq.name} name track ids {missing[:10]} that the "
                           f"sequence does not have; they belong to another sequence")


def _load_proposals(path: Path, seq: MotionSequence) -> MotionLabels | None:
    """Proposals kept beside the labels; unreadable or foreign ones are ignored (they can be rerun)."""
    if not path.exists():
        return None
    try:
        proposals = MotionLabels.load(path)
        _check_labels_belong(proposals, path, seq)
    except (MotionLabelsError, SessionError, ValueError):
        return None
    return proposals


def _marker_path(labels_path: Path) -> Path:
    return labels_path.with_name(f".{labels_path.name}.session")


def _write_marker(marker: Path) -> str:
    """Record that a session has the labels open; returns the token that identifies this session."""
    token = uuid.uuid4().hex
    atomic_write_json(marker, {"pid": os.getpid(), "host": socket.gethostname(), "opened": time.time(),
                               "token": token})
    return token


def _read_marker(marker: Path) -> dict:
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _recovery_note(marker: Path, labels_path: Path) -> str | None:
    """What to tell the user about a session marker found at open; None when it is this process's own
    (another sequence of the same dataset, opened before the previous one is closed)."""
    info = _read_marker(marker)
    try:
        pid, host = int(info["pid"]), str(info["host"])
    except (KeyError, TypeError, ValueError):
        pid, host = -1, ""
    if host == socket.gethostname() and pid == os.getpid():
        return None
    if host == socket.gethostname() and _pid_alive(pid):
        return (f"{labels_path.name} is also open in another vca-annotate (pid {pid}); "
                f"the last one to save wins.")
    if labels_path.exists():
        saved = datetime.fromtimestamp(labels_path.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")
        return (f"Recovered after an unclean exit: showing {labels_path.name} as last saved at {saved} "
                f"(every change finished before the exit is kept).")
    return "Recovered after an unclean exit: no change had been saved yet."


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
