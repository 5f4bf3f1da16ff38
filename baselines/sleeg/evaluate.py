"""SLEEG's evaluation on open-set frames: pixel AP, AUROC and FPR@95 of the anomaly score over the test
split's unknown objects (254 = anomaly, void 255 left out, every known class normal), and
SegmentMeIfYouCan's component metrics (sIoU, PPV, mean F1) thresholded at the pixel-level best-F1
threshold of the same set of frames, per scenario and overall, with vca_data.metrics' accumulators and
their defaults (binned 2^20 scores, FPR rule first_ge, components of at least 500 pixels, instances of
at least 100), so `vca-baseline metrics --kind anomaly --components` on the saved files gives the
same numbers. Two passes over the frames: the component threshold is known only after the first.
With `save_dir`, each frame's closed-set train ids and anomaly score are written there as
<episode>_<frame>_labelTrainIds.png and <episode>_<frame>_anomalyScore.npy (baselines.outputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from baselines.openset import evenly_spaced, frame_name, open_set_panels, predict_at
from baselines.outputs import write_prediction
from vca_data.labels import UNKNOWN, VOID
from vca_data.metrics.anomaly import AnomalyPixelMetrics
from vca_data.metrics.components import ComponentMetrics
from vca_data.metrics.table import format_table

SCORE_SUFFIX = "_anomalyScore"


def anomaly_labels(label: torch.Tensor) -> torch.Tensor:
    """Open-set labels (train ids, 254 unknown, 255 void) as anomaly labels: 0 normal, 1 anomaly, 255 void."""
    out = torch.zeros_like(label)
    out[label == UNKNOWN] = 1
    out[label == VOID] = VOID
    return out


def _batches(model, dataset, device, cfg, max_images, progress, desc, batch_size, workers, amp):
    e_cfg = (cfg or {}).get("eval", {})
    batch_size = batch_size or e_cfg.get("batch_size", 1)
    workers = e_cfg.get("workers", 0) if workers is None else workers
    amp = bool((cfg or {}).get("train", {}).get("amp", False)) if amp is None else amp
    loader = DataLoader(evenly_spaced(dataset, max_images), batch_size=batch_size, shuffle=False, num_workers=workers)
    for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, dynamic_ncols=True):
        inputs = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            pred = predict_at(model, inputs, (cfg or {}).get("eval", {}).get("resize"))
        for i, scenario in enumerate(batch["meta"]["scenario"]):
            yield (scenario, frame_name(batch["meta"], i), pred["semantic"][i],
                   pred["anomaly_score"][i].float(), anomaly_labels(inputs["label"][i]))


def _summary(pixels: AnomalyPixelMetrics, components: ComponentMetrics | None) -> dict:
    p = pixels.compute()
    out = {"ap": p["ap"], "auroc": p["auroc"], "fpr95": p["fpr_at_tpr"], "best_f1": p["best_f1"],
           "threshold": p["best_f1_threshold"], "images": p["num_images"], "pixels": p["num_pixels"],
           "anomaly_pixels": p["num_anomaly_pixels"]}
    c = components.compute() if components is not None else None
    out.update({"siou": c["siou"] if c else float("nan"), "ppv": c["ppv"] if c else float("nan"),
                "mean_f1": c["mean_f1"] if c else float("nan"), "instances": c["num_instances"] if c else 0})
    return out


@torch.no_grad()
def sleeg_evaluate(
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
    """{'overall': {ap, auroc, fpr95, best_f1, threshold, siou, ppv, mean_f1, images, pixels,
    anomaly_pixels, instances}, 'scenarios': {name: same}, 'headline': {ap, auroc, fpr95}, 'images'}
    for a model whose predict gives 'semantic' and 'anomaly_score' (see the module docs)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    args = (model, dataset, device, cfg, max_images, progress)
    try:
        pixels: dict[str, AnomalyPixelMetrics] = {}
        for scenario, name, semantic, score, labels in _batches(*args, "eval (pixels)", batch_size, workers, amp):
            if save_dir is not None:
                write_prediction(save_dir, name, semantic.cpu().numpy().astype(np.uint8), score.cpu().numpy(),
                                 score_suffix=SCORE_SUFFIX)
            pixels.setdefault(scenario, AnomalyPixelMetrics()).update(score, labels, name=name)
        overall = AnomalyPixelMetrics()
        for metric in pixels.values():
            overall.merge(metric)
        thresholds = {s: m.compute()["best_f1_threshold"] for s, m in pixels.items()}
        all_threshold = overall.compute()["best_f1_threshold"]
        components: dict[str, ComponentMetrics] = {}
        all_components = ComponentMetrics(threshold=all_threshold) if np.isfinite(all_threshold) else None
        for scenario, name, _, score, labels in _batches(*args, "eval (components)", batch_size, workers, amp):
            score_np, labels_np = score.cpu().numpy(), labels.cpu().numpy()
            if np.isfinite(thresholds[scenario]):
                components.setdefault(scenario, ComponentMetrics(threshold=thresholds[scenario])).update(
                    score_np, labels_np, name=name)
            if all_components is not None:
                all_components.update(score_np, labels_np, name=name)
    finally:
        model.train(was_training)
    result = {"overall": _summary(overall, all_components),
              "scenarios": {s: _summary(m, components.get(s)) for s, m in sorted(pixels.items())}}
    result["headline"] = {k: result["overall"][k] for k in ("ap", "auroc", "fpr95")}
    result["images"] = result["overall"]["images"]
    return result


def sleeg_table(result: dict, title: str | None = None) -> str:
    """Per-scenario and overall AP / AUROC / FPR@95 and the component metrics (percent)."""
    columns = {"AP": "ap", "AUROC": "auroc", "FPR@95": "fpr95", "sIoU": "siou", "PPV": "ppv", "mean F1": "mean_f1",
               "images": "images"}

    def row(r: dict) -> dict:
        return {name: r[key] for name, key in columns.items()}

    rows = {s: row(r) for s, r in result["scenarios"].items()}
    rows["all"] = row(result["overall"])
    return format_table(rows, columns=list(columns), percent=[c for c in columns if c != "images"], title=title)


#: SLEEG's panels: the open-set panels show the anomaly score, scaled per frame.
sleeg_panels = open_set_panels
