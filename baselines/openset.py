"""The open-set track's side of the engine, shared by the families that read open-set episodes (the
prototype models, the softmax segmenter, SLEEG): their datasets and augmentation, the description of
the data a run reads, evaluation (mIoU over the known classes, CA-IoU over the test split's unknown
objects, per scenario), its table, and prediction panels (RGB | ground truth | prediction | unknown
probability)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from baselines.outputs import write_prediction
from vca_data.datasets import OpenSetDataset
from vca_data.episodes import read_manifest
from vca_data.labels import SPLITS, TRAIN_NAMES, colorize_train, default_catalogue
from vca_data.metrics.semantic import SemanticMetrics
from vca_data.metrics.table import format_table
from vca_data.transforms import Compose, RandomCrop, RandomHorizontalFlip, RandomScale, Resize

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def train_transform(cfg: dict) -> Compose:
    """Geometric augmentation over numpy samples (the dataset converts to tensors after it): optional
    resize, random scale, flip, crop."""
    d = cfg["data"]
    steps: list = []
    if d["resize"] is not None:
        steps.append(Resize(*d["resize"]))
    steps += [
        RandomScale(d["min_scale"], d["max_scale"]),
        RandomHorizontalFlip(0.5 if d["flip"] else 0.0),
        RandomCrop(*d["crop"]),
    ]
    return Compose(steps)


def eval_transform(cfg: dict) -> Compose | None:
    """Resizing of evaluation samples: none. Evaluation frames keep their native size, so metrics and
    saved predictions are at the labels' resolution; a model evaluated at `eval.resize` is run at that
    size and its outputs brought back (predict_at)."""
    return None


def predict_at(model: nn.Module, inputs: dict, size: list[int] | tuple[int, int] | None) -> dict:
    """model.predict on the batch resized to `size` ([height, width]: image bilinear, depth nearest;
    None: as is), every (B, H, W) output brought back to the input's size (integer and boolean maps
    nearest, scores bilinear)."""
    if size is None or tuple(inputs["image"].shape[-2:]) == tuple(size):
        return model.predict(inputs)
    h, w = inputs["image"].shape[-2:]
    small = dict(inputs)
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.ndim == 4:
            mode = "bilinear" if key == "image" else "nearest"
            small[key] = F.interpolate(value.float(), size=tuple(size), mode=mode,
                                       **({"align_corners": False} if mode == "bilinear" else {}))
    pred = model.predict(small)
    out = {}
    for key, value in pred.items():
        if isinstance(value, torch.Tensor) and value.ndim == 3:
            if value.is_floating_point():
                value = F.interpolate(value[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
            else:
                value = F.interpolate(value[:, None].float(), size=(h, w), mode="nearest")[:, 0].to(value.dtype)
        out[key] = value
    return out


def open_set_datasets(cfg: dict, data_dir: str | Path, split: str, train: bool) -> OpenSetDataset:
    """The split's frames of data_dir: augmented (seeded per sample) for training, else at the eval size."""
    d = cfg["data"]
    if train:
        return OpenSetDataset(data_dir, split=split, scenarios=d["scenarios"], transform=train_transform(cfg),
                              frame_step=d["frame_step"], seed=0)
    return OpenSetDataset(data_dir, split=split, scenarios=d["scenarios"], transform=eval_transform(cfg),
                          frame_step=cfg["eval"]["frame_step"])


def describe_open_set(cfg: dict, data_dir: str | Path) -> list[str]:
    """Lines naming what a run reads: the dataset, frames per split and scenario, and the unknown
    classes trained on and tested on (from the catalogue), so a wrong split shows before training."""
    d = cfg["data"]
    entries = read_manifest(Path(data_dir))
    wanted = d["scenarios"]
    lines = [f"data: {data_dir} ({len(entries)} episodes, backend {', '.join(sorted({e.get('backend', '?') for e in entries}))})"]
    catalogue = default_catalogue()
    for split in SPLITS:
        frames = Counter()
        for e in entries:
            if e["split"] == split and (wanted is None or e["scenario"] in wanted):
                frames[e["scenario"]] += len(range(0, e["frames"], d["frame_step"] if split == d["train_split"] else 1))
        role = " and ".join(r for r, s in (("trained on", d["train_split"]), ("evaluated on", d["eval_split"])) if s == split)
        per = ", ".join(f"{s} {n}" for s, n in sorted(frames.items())) or "none"
        unknowns = sorted({c.name for c in catalogue.unknown_classes(split)
                           if wanted is None or c.scenario in wanted})
        lines.append(f"  {split} split{f' ({role})' if role else ''}: {sum(frames.values())} frames ({per}); "
                     f"unknown classes: {', '.join(unknowns) or 'none'}")
    return lines


def _summary(metrics: SemanticMetrics) -> dict:
    r = metrics.compute()
    names = metrics.class_names
    return {
        "miou": r["miou"], "ca_iou": r["ca_iou"], "pixel_accuracy": r["pixel_accuracy"],
        "iou": dict(zip(names, r["iou"], strict=True)), "images": r["num_images"],
    }


def evenly_spaced(dataset: Dataset, count: int | None) -> Dataset:
    """At most `count` samples of `dataset`, evenly spaced (all of them when count is None)."""
    if count is None or len(dataset) <= count:
        return dataset
    return Subset(dataset, np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist())


def frame_name(meta: dict, i: int) -> str:
    """<episode>_<frame:06d> of sample i of a collated batch's meta: the names `vca-carla export` gives."""
    return f"{Path(meta['episode'][i]).stem}_{int(meta['frame'][i]):06d}"


@torch.no_grad()
def evaluate_open_set(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device | str = "cpu",
    cfg: dict | None = None,
    *,
    max_images: int | None = None,
    progress: bool = True,
    save_dir: str | Path | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    amp: bool | None = None,
) -> dict:
    """Evaluate `model` on an OpenSetDataset-like dataset (samples with 'label' and meta 'scenario'):
    {'overall': {miou, ca_iou, pixel_accuracy, iou: {class: IoU}, images}, 'scenarios': {name: same},
    'headline': {miou, ca_iou}, 'images'}. With `max_images`, an evenly spaced subset is used (periodic
    checks during training). With `save_dir`, each frame's prediction is also written there as by
    `predict` (train ids and unknown score, at the evaluated size, named <episode>_<frame:06d>), for
    `vca-baseline metrics`. Batch size, workers and AMP default to cfg's eval settings."""
    device = torch.device(device)
    e_cfg = (cfg or {}).get("eval", {})
    batch_size = batch_size or e_cfg.get("batch_size", 1)
    workers = e_cfg.get("workers", 0) if workers is None else workers
    amp = bool((cfg or {}).get("train", {}).get("amp", False)) if amp is None else amp
    loader = DataLoader(evenly_spaced(dataset, max_images), batch_size=batch_size, shuffle=False, num_workers=workers)
    num_classes = getattr(model, "num_classes", len(TRAIN_NAMES))
    per_scenario: dict[str, SemanticMetrics] = {}
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(loader, desc="eval", unit="batch", disable=not progress, dynamic_ncols=True):
            inputs = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                pred = predict_at(model, inputs, e_cfg.get("resize"))
            semantic, labels = pred["semantic"], inputs["label"]
            for i, scenario in enumerate(batch["meta"]["scenario"]):
                name = frame_name(batch["meta"], i)
                if save_dir is not None:
                    write_prediction(save_dir, name, semantic[i].cpu().numpy().astype(np.uint8),
                                     pred["unknown_prob"][i].float().cpu().numpy())
                metrics = per_scenario.setdefault(scenario, SemanticMetrics(num_classes=num_classes))
                metrics.update(semantic[i], labels[i], name=f"{batch['meta']['episode'][i]} frame {int(batch['meta']['frame'][i])}")
    finally:
        model.train(was_training)
    overall = SemanticMetrics(num_classes=num_classes)
    for metrics in per_scenario.values():
        overall.merge(metrics)
    result = {"overall": _summary(overall), "scenarios": {s: _summary(m) for s, m in sorted(per_scenario.items())}}
    result["headline"] = {"miou": result["overall"]["miou"], "ca_iou": result["overall"]["ca_iou"]}
    result["images"] = result["overall"]["images"]
    return result


def results_table(result: dict, title: str | None = None) -> str:
    """Per-scenario and overall mIoU / CA-IoU, with the IoU of road, building and sky (percent)."""
    def row(r: dict) -> dict:
        out = {"mIoU": r["miou"], "CA-IoU": r["ca_iou"]}
        out.update({name: r["iou"].get(name, float("nan")) for name in ("road", "building", "sky")})
        out["images"] = r["images"]
        return out

    rows = {s: row(r) for s, r in result["scenarios"].items()}
    rows["all"] = row(result["overall"])
    percent = ("mIoU", "CA-IoU", "road", "building", "sky")
    return format_table(rows, columns=[*percent, "images"], percent=percent, title=title)


# ---------------------------------------------------------------------------------------------
# Panels
# ---------------------------------------------------------------------------------------------

def probability_colors(prob: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB of probabilities in [0, 1] with matplotlib's 'inferno' colour map (black 0,
    yellow 1), the usual anomaly-map rendering."""
    from matplotlib import colormaps

    lut = (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    return lut[np.clip(np.nan_to_num(prob) * 255, 0, 255).round().astype(np.uint8)]


def prediction_panel(rgb: np.ndarray, truth: np.ndarray | None, semantic: np.ndarray, score: np.ndarray,
                     gap: int = 4) -> np.ndarray:
    """One picture of a prediction, left to right: RGB | ground truth (train-id colours, unknown
    orange, void black; grey when there is none) | prediction (same colours) | unknown probability
    (inferno), separated by `gap` white pixels. All inputs HxW(x3) of one size."""
    h, w = semantic.shape
    if rgb.shape[:2] != (h, w) or score.shape != (h, w) or (truth is not None and truth.shape != (h, w)):
        raise ValueError(f"panel parts differ in size: rgb {rgb.shape}, truth {None if truth is None else truth.shape}, "
                         f"prediction {semantic.shape}, score {score.shape}")
    gt = colorize_train(truth) if truth is not None else np.full((h, w, 3), 128, np.uint8)
    parts = [rgb.astype(np.uint8), gt, colorize_train(semantic), probability_colors(score)]
    sep = np.full((h, gap, 3), 255, np.uint8)
    out = [parts[0]]
    for p in parts[1:]:
        out += [sep, p]
    return np.concatenate(out, axis=1)


def denormalize(image: torch.Tensor) -> np.ndarray:
    """HxWx3 uint8 RGB of an ImageNet-normalised (3, H, W) tensor."""
    x = image.detach().float().cpu().numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(x * 255, 0, 255).round().astype(np.uint8)


@torch.no_grad()
def open_set_panels(model: nn.Module, dataset: Dataset, device: torch.device | str, count: int = 3,
                    size: list[int] | None = None) -> list[tuple[str, np.ndarray]]:
    """Prediction panels of one frame per scenario (the middle frame of its first episode), at most
    `count`, the model run at `size`: [(scenario, HxWx3 uint8)]. The last part is the unknown class's
    probability, or for an anomaly detector (SLEEG: 'anomaly_score', unbounded) its score scaled from
    the frame's minimum to its maximum."""
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    picks: dict[str, int] = {}
    if isinstance(base, OpenSetDataset):
        for i, entry in enumerate(base.episodes):
            if entry["scenario"] not in picks:
                where = np.flatnonzero(base._episode_of == i)
                picks[entry["scenario"]] = int(where[len(where) // 2])
    else:
        picks = {str(i): i for i in range(min(count, len(base)))}
    was_training = model.training
    model.eval()
    panels = []
    try:
        for scenario, index in sorted(picks.items())[:count]:
            sample = base[index]
            batch = {k: v[None].to(device) for k, v in sample.items() if isinstance(v, torch.Tensor)}
            pred = predict_at(model, batch, size)
            label = sample.get("label")
            if "anomaly_score" in pred:
                score = pred["anomaly_score"][0].float().cpu().numpy()
                span = float(score.max() - score.min())
                score = (score - score.min()) / span if span > 0 else np.zeros_like(score)
            else:
                score = pred["unknown_prob"][0].float().cpu().numpy()
            panels.append((scenario, prediction_panel(
                denormalize(sample["image"]), None if label is None else label.numpy().astype(np.uint8),
                pred["semantic"][0].cpu().numpy().astype(np.uint8), score,
            )))
    finally:
        model.train(was_training)
    return panels


def stack_panels(panels: list[tuple[str, np.ndarray]], gap: int = 4) -> np.ndarray:
    """Panels one above the other, each with its name written in its top-left corner."""
    rows = []
    width = max(p.shape[1] for _, p in panels)
    for name, p in panels:
        p = np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255).copy()
        cv2.putText(p, name, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        rows += [p, np.full((gap, width, 3), 255, np.uint8)]
    return np.concatenate(rows[:-1], axis=0)


class BenchmarkDataset(Dataset):
    """The labelled frames of an anomaly benchmark folder (vca_data.formats.anomaly_benchmarks:
    Fishyscapes, Road Anomaly, SegmentMeIfYouCan) as open-set samples: 'image' normalised, 'label'
    254 on anomalies, 255 void and 0 elsewhere (the benchmarks label no known classes, so mIoU is
    meaningless on them; the anomaly metrics read 254 / 255 only), meta scenario = the subset."""

    def __init__(self, root: str | Path, fmt: str):
        from vca_data.formats.anomaly_benchmarks import BenchmarkError, discover

        self.benchmark = discover(root, fmt)
        if not self.benchmark.frames:
            raise BenchmarkError(f"{root}: no labelled {fmt} frames")
        from vca_data.transforms import Normalize, ToTensor

        self._finish = [ToTensor(label_keys=("label",)), Normalize()]

    def __len__(self) -> int:
        return len(self.benchmark.frames)

    def __getitem__(self, index: int) -> dict:
        from vca_data.formats.anomaly_benchmarks import read_frame
        from vca_data.labels import UNKNOWN, VOID

        frame = self.benchmark.frames[index]
        rgb, label = read_frame(frame)
        label = np.where(label == 1, UNKNOWN, np.where(label == VOID, VOID, 0)).astype(np.uint8)
        sample = {"image": rgb, "label": label}
        for step in self._finish:
            sample = step(sample)
        sample["meta"] = {"episode": frame.name.replace("/", "_"), "frame": 0, "scenario": frame.subset}
        return sample
