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
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from baselines.engine import eval_transform, load_run
from vca_data.datasets import OpenSetDataset
from vca_data.episodes import EpisodeError, EpisodeReader
from vca_data.io import atomic_path, atomic_write_json
from vca_data.labels import TRAIN_NAMES, UNKNOWN_COLOR, colorize_train
from vca_data.metrics.semantic import SemanticMetrics
from vca_data.metrics.table import format_table
from vca_data.transforms import Normalize, Resize, ToTensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _summary(metrics: SemanticMetrics) -> dict:
    r = metrics.compute()
    names = metrics.class_names
    return {
        "miou": r["miou"], "ca_iou": r["ca_iou"], "pixel_accuracy": r["pixel_accuracy"],
        "iou": dict(zip(names, r["iou"], strict=True)), "images": r["num_images"],
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    workers: int = 0,
    amp: bool = False,
    max_images: int | None = None,
    progress: bool = True,
    save_dir: str | Path | None = None,
) -> dict:
    """Evaluate `model` on an OpenSetDataset-like dataset (samples with 'label' and meta 'scenario'):
    {'overall': {miou, ca_iou, pixel_accuracy, iou: {class: IoU}, images}, 'scenarios': {name: same}}.
    With `max_images`, an evenly spaced subset is used (periodic checks during training). With
    `save_dir`, each frame's prediction is also written there as by `predict` (train ids and unknown
    score, at the evaluated size, named <episode>_<frame:06d>), for `vca-baseline metrics`."""
    device = torch.device(device)
    if max_images is not None and len(dataset) > max_images:
        dataset = Subset(dataset, np.linspace(0, len(dataset) - 1, max_images).round().astype(int).tolist())
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    num_classes = getattr(model, "num_classes", len(TRAIN_NAMES))
    per_scenario: dict[str, SemanticMetrics] = {}
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(loader, desc="eval", unit="batch", disable=not progress, dynamic_ncols=True):
            inputs = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                pred = model.predict(inputs)
            semantic, labels = pred["semantic"], inputs["label"]
            for i, scenario in enumerate(batch["meta"]["scenario"]):
                if save_dir is not None:
                    name = f"{Path(batch['meta']['episode'][i]).stem}_{int(batch['meta']['frame'][i]):06d}"
                    write_prediction(save_dir, name, semantic[i].cpu().numpy().astype(np.uint8),
                                     pred["unknown_prob"][i].float().cpu().numpy())
                metrics = per_scenario.setdefault(scenario, SemanticMetrics(num_classes=num_classes))
                metrics.update(semantic[i], labels[i], name=f"{batch['meta']['episode'][i]} frame {int(batch['meta']['frame'][i])}")
    finally:
        model.train(was_training)
    overall = SemanticMetrics(num_classes=num_classes)
    for metrics in per_scenario.values():
        overall.merge(metrics)
    return {"overall": _summary(overall), "scenarios": {s: _summary(m) for s, m in sorted(per_scenario.items())}}


def results_table(result: dict, title: str | None = None) -> str:
    """Per-scenario and overall mIoU / CA-IoU as a text table (percent)."""
    rows = {s: {"mIoU": r["miou"], "CA-IoU": r["ca_iou"], "images": r["images"]} for s, r in result["scenarios"].items()}
    o = result["overall"]
    rows["all"] = {"mIoU": o["miou"], "CA-IoU": o["ca_iou"], "images": o["images"]}
    return format_table(rows, columns=["mIoU", "CA-IoU", "images"], percent=("mIoU", "CA-IoU"), title=title)


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | Path,
    split: str | None = None,
    checkpoint: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    save_dir: str | Path | None = None,
) -> dict:
    """Evaluate a run on data_dir's split (default: the config's eval split), print nothing, write
    RUN/metrics.json (keeping the training history) and return the result with its context;
    `save_dir` as in `evaluate`."""
    run_dir = Path(run_dir)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg, model, step = load_run(run_dir, checkpoint, dev)
    split = split or cfg["data"]["eval_split"]
    dataset = OpenSetDataset(data_dir, split=split, scenarios=cfg["data"]["scenarios"], transform=eval_transform(cfg),
                             frame_step=cfg["eval"]["frame_step"])
    result = evaluate(model, dataset, dev, cfg["eval"]["batch_size"], cfg["eval"]["workers"],
                      amp=bool(cfg["train"]["amp"]), progress=progress, save_dir=save_dir)
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

def _read_inputs(path: Path, needs: tuple[str, ...]):
    """Yield (name, sample with 'image' HxWx3 uint8 and, from episodes, 'depth' HxW metres)."""
    suffix = path.suffix.lower()
    if suffix == ".h5":
        try:
            with EpisodeReader(path) as reader:
                for i in range(len(reader)):
                    frame = reader.read(i, ("rgb", "depth"))
                    yield f"{path.stem}_{i:06d}", {"image": frame["rgb"], "depth": frame["depth"]}
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


def _write_png(path: Path, image: np.ndarray) -> None:
    """An RGB (HxWx3) or single-channel image as PNG, atomically."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


def _write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def write_prediction(out_dir: str | Path, name: str, semantic: np.ndarray, unknown_score: np.ndarray) -> list[Path]:
    """The metric-ready files of one prediction: <name>_labelTrainIds.png (uint8 train ids, 254 unknown;
    Cityscapes' naming) and <name>_unknownScore.npy (float32 probability of the unknown class)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels, scores = out_dir / f"{name}_labelTrainIds.png", out_dir / f"{name}_unknownScore.npy"
    _write_png(labels, semantic.astype(np.uint8))
    _write_npy(scores, unknown_score.astype(np.float32))
    return [labels, scores]


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
) -> list[Path]:
    """For each image or episode frame write, at the input's size:
    <name>_labelTrainIds.png (uint8 train ids, 254 where the unknown class wins: Cityscapes' layout, read
    by `vca-baseline metrics --kind semantic`), <name>_unknownScore.npy (float32 softmax probability of
    the unknown class: `--kind anomaly`), and the previews <name>_semantic.png (train-id colours, unknown
    orange) and <name>_unknown.png (unknown pixels over the darkened image). Returns the written paths.
    All inputs are checked before any prediction, so a bad path fails fast."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg, model, _ = load_run(run_dir, checkpoint, dev)
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
    for p in tqdm(paths, desc="predict", unit="file", disable=not progress, dynamic_ncols=True):
        for name, sample in _read_inputs(p, needs):
            h, w = sample["image"].shape[:2]
            work = Resize(*size, label_keys=())(sample) if size is not None else sample
            tensors = normalize(to_tensor(work))
            batch = {k: v[None].to(dev) for k, v in tensors.items()}
            pred = model.predict(batch)
            semantic = pred["semantic"][0].cpu().numpy().astype(np.uint8)
            unknown = pred["unknown"][0].cpu().numpy()
            score = pred["unknown_prob"][0].cpu().numpy().astype(np.float32)
            if size is not None:  # back to the input's size
                semantic = cv2.resize(semantic, (w, h), interpolation=cv2.INTER_NEAREST)
                unknown = cv2.resize(unknown.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
                score = cv2.resize(score, (w, h), interpolation=cv2.INTER_LINEAR)
            written += write_prediction(out_dir, name, semantic, score)
            for suffix, rgb in (("semantic", colorize_train(semantic)), ("unknown", unknown_overlay(sample["image"], unknown))):
                target = out_dir / f"{name}_{suffix}.png"
                _write_png(target, rgb)
                written.append(target)
    return written
