"""Evaluation and prediction of trained runs: mIoU over the known classes and CA-IoU over the test
split's unknown objects, per scenario and overall (vca_data.metrics.semantic), written to
RUN/metrics.json; and predictions for images or episodes: train-id maps and unknown scores that
`vca-baseline metrics` reads, and colour previews."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from baselines.openset import prediction_panel, stack_panels
from baselines.outputs import write_png, write_prediction
from baselines.registry import spec_of
from baselines.runs import load_run
from vca_data.episodes import EpisodeError, EpisodeReader
from vca_data.io import atomic_write_json
from vca_data.labels import UNKNOWN_COLOR, colorize_train, default_catalogue, episode_labels
from vca_data.transforms import Normalize, Resize, ToTensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | Path,
    split: str | None = None,
    checkpoint: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    save_dir: str | Path | None = None,
    fmt: str | None = None,
) -> dict:
    """Evaluate a run on data_dir's split (default: the config's eval split) with its family's
    evaluation, print nothing, write RUN/metrics.json (keeping the training history) and return the
    result with its context; with `save_dir`, each frame's prediction files are written there too."""
    run_dir = Path(run_dir)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg, model, step = load_run(run_dir, checkpoint, dev)
    split = split or cfg["data"]["eval_split"]
    spec = spec_of(cfg["model"]["name"])
    if fmt is not None:  # an anomaly benchmark folder in its published layout
        if "depth" in model.input_keys:
            raise ValueError(f"{run_dir}: the model takes a depth input and {fmt} has none; evaluate an RGB-only "
                             "run (a segmenter / SLEEG trained with model.second_stream=null, or deeplabv3)")
        from baselines.openset import BenchmarkDataset

        dataset, split = BenchmarkDataset(data_dir, fmt), fmt
    else:
        dataset = spec.datasets(cfg, Path(data_dir), split, False)
    result = spec.evaluate(model, dataset, dev, cfg, progress=progress, save_dir=save_dir)
    result.update({"model": cfg["model"]["name"], "step": step, "data": str(Path(data_dir)), "split": split})
    path = run_dir / "metrics.json"
    doc = {}
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError:
            doc = {}
    doc.update(result)
    atomic_write_json(path, doc)
    return result


# ---------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------

def _episode_frames(reader: EpisodeReader, frames: str | None) -> list[int]:
    """Frame indices of an episode chosen by `frames`: None (all), 'middle', or a comma list."""
    n = len(reader)
    if frames is None:
        return list(range(n))
    if frames == "middle":
        return [n // 2]
    try:
        picked = [int(f) for f in frames.split(",")]
    except ValueError:
        raise ValueError(f"--frames {frames!r}: expected 'middle' or comma-separated frame indices") from None
    bad = [f for f in picked if not 0 <= f < n]
    if bad:
        raise ValueError(f"{reader.path}: frame {bad[0]} out of range (episode has {n} frames)")
    return picked


def _read_inputs(path: Path, needs: tuple[str, ...], frames: str | None = None):
    """Yield (name, sample with 'image' HxWx3 uint8 and, from episodes, 'depth' HxW metres and
    'label', the episode's train ids with 254 on its split's unknown objects)."""
    suffix = path.suffix.lower()
    if suffix == ".h5":
        try:
            with EpisodeReader(path) as reader:
                catalogue, split = default_catalogue(), str(reader.attrs["split"])
                for i in _episode_frames(reader, frames):
                    frame = reader.read(i, ("rgb", "depth", "semantic", "fine"))
                    label = episode_labels(frame["semantic"], frame["fine"], split, catalogue)
                    yield f"{path.stem}_{i:06d}", {"image": frame["rgb"], "depth": frame["depth"], "label": label}
        except EpisodeError as e:
            raise ValueError(str(e)) from None
        return
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: expected a PNG/JPG image or an episode file (.h5)")
    if "depth" in needs:
        raise ValueError(
            f"{path}: the model takes a depth input and a plain image has none; pass episode files (.h5), "
            "or train an RGB-only model (--set model.second_stream=null)"
        )
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not a readable image")
    yield path.stem, {"image": cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)}


def unknown_overlay(image: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """The image darkened, with unknown pixels painted in the unknown colour."""
    out = (image.astype(np.float32) * 0.5).astype(np.uint8)
    out[unknown] = UNKNOWN_COLOR
    return out


@torch.no_grad()
def predict(
    run_dir: str | Path,
    inputs: list[str | Path],
    out_dir: str | Path,
    checkpoint: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    frames: str | None = None,
    panel: bool = False,
    sheet: str | Path | None = None,
) -> list[Path]:
    """For each image or episode frame (`frames`: all, 'middle' or a comma list, episodes only) write,
    at the input's size:
    <name>_labelTrainIds.png (uint8 train ids, 254 where the unknown class wins: Cityscapes' layout, read
    by `vca-baseline metrics --kind semantic`), <name>_unknownScore.npy (float32 softmax probability of
    the unknown class: `--kind anomaly`), and the previews <name>_semantic.png (train-id colours, unknown
    orange) and <name>_unknown.png (unknown pixels over the darkened image); with `panel`, also
    <name>_panel.png: RGB | ground truth (episodes; grey for plain images) | prediction | unknown
    probability; with `sheet`, every panel stacked into one PNG there. Returns the written paths.
    All inputs are checked before any prediction, so a bad path fails fast."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg, model, _ = load_run(run_dir, checkpoint, dev)
    own = spec_of(cfg["model"]["name"]).predict
    if own is not None:  # a family with its own inputs (VCANet: motion sequence folders)
        return own(model, cfg, [Path(p) for p in inputs], Path(out_dir), dev, progress=progress, frames=frames,
                   panel=panel, sheet=Path(sheet) if sheet is not None else None)
    needs = tuple(model.input_keys)
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.is_file():
            raise ValueError(f"{p}: no such file")
        if p.suffix.lower() not in IMAGE_SUFFIXES + (".h5",):
            raise ValueError(f"{p}: expected a PNG/JPG image or an episode file (.h5)")
        if p.suffix.lower() != ".h5" and "depth" in needs:
            next(_read_inputs(p, needs))  # raises the depth message
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = cfg["eval"]["resize"]
    to_tensor, normalize = ToTensor(label_keys=()), Normalize()
    written: list[Path] = []
    panels: list[tuple[str, np.ndarray]] = []
    for p in tqdm(paths, desc="predict", unit="file", disable=not progress, dynamic_ncols=True):
        for name, sample in _read_inputs(p, needs, frames):
            h, w = sample["image"].shape[:2]
            truth = sample.pop("label", None)
            work = Resize(*size, label_keys=())(sample) if size is not None else sample
            tensors = normalize(to_tensor(work))
            batch = {k: v[None].to(dev) for k, v in tensors.items()}
            pred = model.predict(batch)
            semantic = pred["semantic"][0].cpu().numpy().astype(np.uint8)
            anomaly = "anomaly_score" in pred  # SLEEG: an anomaly score, no unknown class
            score = pred["anomaly_score" if anomaly else "unknown_prob"][0].float().cpu().numpy()
            unknown = (pred["unknown"][0].cpu().numpy() if "unknown" in pred else np.zeros(semantic.shape, bool))
            if size is not None:  # back to the input's size
                semantic = cv2.resize(semantic, (w, h), interpolation=cv2.INTER_NEAREST)
                unknown = cv2.resize(unknown.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
                score = cv2.resize(score, (w, h), interpolation=cv2.INTER_LINEAR)
            written += write_prediction(out_dir, name, semantic, score,
                                        score_suffix="_anomalyScore" if anomaly else "_unknownScore")
            for suffix, rgb in (("semantic", colorize_train(semantic)), ("unknown", unknown_overlay(sample["image"], unknown))):
                target = out_dir / f"{name}_{suffix}.png"
                write_png(target, rgb)
                written.append(target)
            if panel or sheet is not None:
                shown = score
                if anomaly:  # an unbounded score, shown from its frame's minimum (black) to maximum (yellow)
                    shown = (score - score.min()) / max(float(score.max() - score.min()), 1e-12)
                picture = prediction_panel(sample["image"], truth, semantic, shown)
                panels.append((name, picture))
                if panel:
                    target = out_dir / f"{name}_panel.png"
                    write_png(target, picture)
                    written.append(target)
    if sheet is not None and panels:
        write_png(Path(sheet), stack_panels(panels))
        written.append(Path(sheet))
    return written
