"""Dataset statistics: pixels per class of an open-set episode dataset (VCA paper, Figure 5), frames and
episodes per town, scenario and split, and moving/static counts of motion labels (Table 2)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from vca_data.episodes import EpisodeReader, read_manifest  # noqa: E402
from vca_data.io import atomic_path  # noqa: E402
from vca_data.labels import CARLA_TO_TRAIN, TRAIN_NAMES, default_catalogue  # noqa: E402
from vca_data.metrics.table import format_table  # noqa: E402


def episode_statistics(data_dir: str | Path, frame_step: int = 1, progress: bool = True) -> dict:
    """Pixel counts per known class (train ids, over pixels that are no unknown object) and per unknown
    class (fine ids), and frame/episode counts per town, scenario and split."""
    data_dir = Path(data_dir)
    entries = read_manifest(data_dir)
    if not entries:
        raise FileNotFoundError(f"{data_dir}: no complete episodes in manifest.json")
    if frame_step < 1:
        raise ValueError(f"frame_step must be >= 1, got {frame_step}")
    catalogue = default_catalogue()
    known = np.zeros(256, dtype=np.int64)
    fine = np.zeros(256, dtype=np.int64)
    frames: Counter = Counter()
    episodes: Counter = Counter()
    for entry in tqdm(entries, desc="counting pixels", unit="ep", disable=not progress):
        path = data_dir / entry["file"]
        key = (entry["split"], entry["town"], entry["scenario"])
        with EpisodeReader(path) as reader:
            n = len(reader)
            episodes[key] += 1
            frames[key] += n
            for i in range(0, n, frame_step):
                f = reader.read(i, ("semantic", "fine"))
                fine += np.bincount(f["fine"].ravel(), minlength=256)
                train = CARLA_TO_TRAIN[f["semantic"]][f["fine"] == 0]
                known += np.bincount(train.ravel(), minlength=256)
    names = catalogue.fine_names()
    return {
        "known_pixels": {TRAIN_NAMES[i]: int(known[i]) for i in range(len(TRAIN_NAMES))},
        "void_pixels": int(known[255]),
        "unknown_pixels": {names.get(i, f"fine {i}"): int(fine[i]) for i in range(1, 256) if fine[i] or i in names},
        "unknown_split": {c.name: c.split for c in catalogue.classes},
        "frames": [{"split": s, "town": t, "scenario": sc, "episodes": episodes[(s, t, sc)], "frames": frames[(s, t, sc)]}
                   for (s, t, sc) in sorted(frames)],
        "frame_step": frame_step,
    }


#: Where `motion_statistics` looks for a labels file's suppressed-flow PNGs (`vca-annotate propose
#: --flow-dir ROOT/vca_flow` writes them there, and VCANet caches its flow there).
FLOW_CACHE = Path("vca_flow") / "flow_suppressed"


def _residuals(seq, folder: Path) -> dict[int, dict[int, float]] | None:
    """Per frame, per track: the median magnitude (px) of the ego-flow-suppressed flow over the track's
    pixels, decoded from the colour PNGs in `folder` at their recorded scale; None without PNGs."""
    import cv2

    from annotator.proposals.sequences import read_flow_scale
    from vca_data import flow as vf

    if not folder.is_dir():
        return None
    scale = read_flow_scale(folder)
    out: dict[int, dict[int, float]] = {}
    for i in seq.labelled_frames:
        path = folder / f"{i:06d}.png"
        image = cv2.imread(str(path))
        if image is None:
            continue
        ids = seq.id_map(i)
        if image.shape[:2] != ids.shape:
            raise ValueError(f"{path}: {image.shape[1]}x{image.shape[0]}, expected the frame size "
                             f"{ids.shape[1]}x{ids.shape[0]} of sequence {seq.name}")
        magnitude = vf.color_to_magnitude(image, scale)  # channel order does not matter to it
        out[i] = {int(t): float(np.median(magnitude[ids == t])) for t in np.unique(ids) if t > 0}
    return out


def _summary(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {"instances": len(v), "median_px": float(np.median(v)), "p75_px": float(np.percentile(v, 75)),
            "above_1px": float((v > 1).mean())}


def motion_statistics(label_files: list[str | Path]) -> dict:
    """Moving/static/ignore counts per dataset from motion_labels.json files: tracks, and per-frame
    instances where the sequences can be opened next to the labels file (frame ranges honoured). Where
    the suppressed flow of a sequence lies in ROOT/vca_flow/flow_suppressed/<seq>/ (FLOW_CACHE), also
    how much each labelled instance visibly moves: 'residual' per label, the median, 75th percentile
    and share above 1 px of the instances' median residual flow magnitude. A moving object whose
    residual is below the flow's noise cannot be told from a static one by its motion (measured on
    the offline world's exports: moving median 0.5 px, static 0.24 px)."""
    from vca_data.formats.folders import open_sequence
    from vca_data.formats.motion_labels import MotionLabels
    from vca_data.formats.sequence import SequenceError

    out: dict[str, dict[str, dict[str, int]]] = {}
    residual: dict[str, dict[str, list[float]]] = {}
    for file in label_files:
        file = Path(file)
        labels = MotionLabels.load(file)
        per = out.setdefault(labels.dataset, {"tracks": Counter(), "instances": Counter()})
        for seq_name, tracks in labels.sequences.items():
            for tl in tracks.values():
                per["tracks"][tl.label] += 1
            try:
                seq = open_sequence(file.parent, seq_name)
            except (SequenceError, FileNotFoundError):
                continue
            moved = _residuals(seq, file.parent / FLOW_CACHE / seq.name)
            for track_id, track in seq.tracks().items():
                for frame in track.frames:
                    lab = labels.label_at(seq_name, track_id, frame)
                    if lab is not None:
                        per["instances"][lab] += 1
                    if lab in ("moving", "static") and moved is not None and track_id in moved.get(frame, {}):
                        residual.setdefault(labels.dataset, {}).setdefault(lab, []).append(moved[frame][track_id])
    result = {ds: {kind: dict(c) for kind, c in v.items()} for ds, v in out.items()}
    for ds, per_label in residual.items():
        result[ds]["residual"] = {lab: _summary(v) for lab, v in sorted(per_label.items())}
    return result


def episode_tables(stats: dict) -> str:
    known = {n: {"pixels": v} for n, v in stats["known_pixels"].items()}
    unknown = {n: {"split": stats["unknown_split"].get(n, "?"), "pixels": v} for n, v in stats["unknown_pixels"].items()}
    frames = {f"{r['split']} {r['town']} {r['scenario']}": {"episodes": r["episodes"], "frames": r["frames"]}
              for r in stats["frames"]}
    return "\n\n".join([
        format_table(known, title="known class"),
        format_table(unknown, title="unknown class"),
        format_table(frames, title="split town scenario"),
    ])


def motion_table(stats: dict) -> str:
    rows = {}
    for ds, kinds in stats.items():
        for kind in ("tracks", "instances"):
            c = kinds.get(kind, {})
            rows[f"{ds} {kind}"] = {lab: c.get(lab, 0) for lab in ("moving", "static", "ignore")}
    table = format_table(rows, title="motion labels: dataset, count of")
    moved = {f"{ds} {lab}": {"instances": r["instances"], "median px": round(r["median_px"], 2),
                             "p75 px": round(r["p75_px"], 2), "> 1 px (%)": round(100 * r["above_1px"], 1)}
             for ds, kinds in stats.items() for lab, r in kinds.get("residual", {}).items()}
    if moved:
        table += "\n\n" + format_table(moved, title="ego-flow-suppressed motion of the instances: dataset label")
    return table


def _save(fig, out: Path) -> Path:
    with atomic_path(out, suffix=out.suffix) as tmp:
        fig.savefig(tmp, format=out.suffix[1:].lower())
    plt.close(fig)
    return out


def plot_pixels(stats: dict, out: str | Path) -> Path:
    """Bar chart of pixels per class on a log scale (known classes grey-blue, train unknowns blue, test
    unknowns red), like the paper's Figure 5."""
    names = list(stats["known_pixels"]) + list(stats["unknown_pixels"])
    values = list(stats["known_pixels"].values()) + list(stats["unknown_pixels"].values())
    colours = ["#8c9bab"] * len(stats["known_pixels"]) + [
        "#1f5fbf" if stats["unknown_split"].get(n) == "train" else "#d62728" for n in stats["unknown_pixels"]]
    fig, ax = plt.subplots(figsize=(max(8, 0.38 * len(names)), 4.2), dpi=110)
    heights = np.array(values, dtype=float)
    ax.bar(range(len(names)), np.where(heights > 0, heights, np.nan), color=colours)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5)
    for i in np.flatnonzero(heights == 0):  # a log axis cannot show zero: say it
        ax.text(i, 0.7, "0", ha="center", va="bottom", fontsize=8, color="#555555")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("# pixels")
    ax.set_title("Pixels per class (known | unknown: blue train, red test)")
    fig.tight_layout()
    return _save(fig, Path(out))


def plot_frames(stats: dict, out: str | Path) -> Path:
    """Frames per town and scenario, grouped by split."""
    rows = stats["frames"]
    towns = sorted({(r["split"], r["town"]) for r in rows}, key=lambda x: (x[0] != "train", x[1]))
    scenarios = sorted({r["scenario"] for r in rows})
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(towns)), 3.6), dpi=110)
    width = 0.8 / max(1, len(scenarios))
    for j, sc in enumerate(scenarios):
        vals = [sum(r["frames"] for r in rows if (r["split"], r["town"]) == t and r["scenario"] == sc) for t in towns]
        ax.bar(np.arange(len(towns)) + j * width, vals, width, label=sc)
    ax.set_xticks(np.arange(len(towns)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{t}\n({s})" for s, t in towns], fontsize=8)
    ax.set_ylabel("frames")
    ax.legend(fontsize=8)
    ax.set_title("Frames per town and scenario")
    fig.tight_layout()
    return _save(fig, Path(out))


def plot_motion(stats: dict, out: str | Path) -> Path:
    """Moving vs static instance counts per dataset (Table 2 as a chart)."""
    datasets = list(stats)
    fig, ax = plt.subplots(figsize=(max(4, 2 * len(datasets)), 3.4), dpi=110)
    for j, (lab, colour) in enumerate((("moving", "#d62728"), ("static", "#1f5fbf"))):
        vals = [stats[d].get("instances", {}).get(lab, 0) or stats[d].get("tracks", {}).get(lab, 0) for d in datasets]
        ax.bar(np.arange(len(datasets)) + j * 0.4, vals, 0.4, color=colour, label=lab)
    ax.set_xticks(np.arange(len(datasets)) + 0.2)
    ax.set_xticklabels(datasets)
    ax.set_ylabel("instances")
    ax.legend()
    fig.tight_layout()
    return _save(fig, Path(out))
