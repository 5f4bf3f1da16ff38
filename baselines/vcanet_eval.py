"""Evaluation, prediction files and panels of VCANet (the motion track).

Evaluation (`vca-baseline eval`): on the test split's labelled frames, at each frame's own size,
- CAQ / SQ / RQ of the moving instances (vca_data.metrics.caq): the class-agnostic head's instances
  after Matrix NMS (score > score_thr, mask > mask_thr, kept above update_thr), painted into one id map
  by score (a pixel belongs to the best-scored instance that covers it), those labelled moving against
  the tracks labelled moving; tracks labelled ignore, unlabelled tracks and crowd regions are void;
- PQ (all / things / stuff, vca_data.metrics.panoptic) of the panoptic output: thing instances pasted by
  score (an instance keeps its pixels if at least half of its mask is still free), the semantic head's
  stuff classes on the rest. The ground truth is the thing tracks with their category, and stuff only
  where a source has semantic labels (KITTI-MOTS and the offline world's exports have none: their PQ
  is over things; stuff shows '-');
per dataset (and per scenario of the offline world's exports, from their sequences.json) and overall.

Files (`--save-predictions DIR`, and `vca-baseline predict RUN SEQUENCES --out DIR` without the truth):
- DIR/panoptic.json + DIR/panoptic/<name>.png: COCO panoptic (segment id = R + 256 G + 256^2 B,
  category ids = the 19 train ids; `vca-baseline metrics --kind panoptic`);
- DIR/panoptic_gt.json + DIR/panoptic_gt/ (eval only): the ground truth the PQ above used, same form;
- DIR/class_agnostic.json: COCO instance JSON in the VCA release form (moving = 1, static = 2, RLE,
  `score`, `sequence`, `frame`), as `vca-annotate export --format coco` writes the labels;
- DIR/class_agnostic_txt/<seq>.txt: the painted id map as KITTI-MOTS motion txt (class 1 moving,
  2 static; `vca-baseline metrics --kind caq --gt-classes 1 --pred-classes 1` against
  `vca-annotate export SEQUENCES --format kitti-mots --labels SEQUENCES/motion_truth.json`).
<name> is <sequence>_<frame:06d> (a '/' of a Cityscapes-VPS sequence name becomes '_').
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from baselines.openset import denormalize, stack_panels
from baselines.outputs import write_png
from vca_data.formats import coco
from vca_data.formats.motion_labels import color_overlay
from vca_data.io import atomic_write_json, atomic_write_text
from vca_data.labels import NUM_TRAIN_CLASSES, THING_TRAIN_IDS, TRAIN_NAMES, VOID, colorize_train
from vca_data.metrics.caq import ClassAgnosticQuality
from vca_data.metrics.panoptic import PanopticQuality
from vca_data.metrics.table import format_table
from vca_data.motion_dataset import MOVING, STATIC
from vca_data.png import panoptic_rgb

#: COCO panoptic categories: the 19 train ids (things 11-18), as Cityscapes-VPS numbers them.
PANOPTIC_CATEGORIES = [{"id": k, "name": TRAIN_NAMES[k], "isthing": int(k in THING_TRAIN_IDS)}
                       for k in range(NUM_TRAIN_CLASSES)]
MOTION_COCO_CATEGORIES = [{"id": 1, "name": "moving"}, {"id": 2, "name": "static"}]
#: KITTI-MOTS motion classes of the class-agnostic txt (1 moving, 2 static; obj_id = class * 1000 + k).
MOTION_CLASS = {0: 1, 1: 2}
MIN_OVERLAP = 0.5  # a thing instance keeps its pixels when at least this share of its mask is still free


def frame_stem(sequence: str, frame: int) -> str:
    return f"{sequence.replace('/', '_')}_{int(frame):06d}"


# ---------------------------------------------------------------------------------------------
# From the network's outputs to maps
# ---------------------------------------------------------------------------------------------

def paint_instances(result: dict) -> tuple[np.ndarray, list[tuple[int, int, float]]]:
    """The instances of one image ({masks, labels, scores}) painted by score into an id map (0 none,
    k = the k-th kept instance, 1-based) and the kept (k, label, score); an instance left with no pixel
    is dropped."""
    masks = result["masks"].cpu().numpy().astype(bool)
    labels, scores = result["labels"].cpu().numpy(), result["scores"].float().cpu().numpy()
    h, w = masks.shape[1:] if masks.ndim == 3 else (0, 0)
    ids = np.zeros((h, w), dtype=np.int32)
    kept = []
    for i in np.argsort(-scores, kind="stable"):
        free = masks[i] & (ids == 0)
        if free.any():
            kept.append((len(kept) + 1, int(labels[i]), float(scores[i])))
            ids[free] = len(kept)
    return ids, kept


def panoptic_prediction(semantic: np.ndarray, instances: dict) -> tuple[np.ndarray, list[dict]]:
    """(id map, COCO panoptic segments) of one image: thing instances by score, each keeping its free
    pixels when they are at least MIN_OVERLAP of its mask; the semantic head's stuff classes elsewhere;
    thing-class pixels no instance covers are void (0)."""
    masks = instances["masks"].cpu().numpy().astype(bool)
    labels, scores = instances["labels"].cpu().numpy(), instances["scores"].float().cpu().numpy()
    ids = np.zeros(semantic.shape, dtype=np.int32)
    segments = []
    for i in np.argsort(-scores, kind="stable"):
        area = int(masks[i].sum())
        free = masks[i] & (ids == 0)
        if area == 0 or free.sum() < MIN_OVERLAP * area:
            continue
        segments.append({"id": len(segments) + 1, "category_id": int(THING_TRAIN_IDS[int(labels[i])]), "iscrowd": 0,
                         "score": float(scores[i])})
        ids[free] = len(segments)
    for k in range(NUM_TRAIN_CLASSES):
        if k in THING_TRAIN_IDS:
            continue
        region = (semantic == k) & (ids == 0)
        if region.any():
            segments.append({"id": len(segments) + 1, "category_id": k, "iscrowd": 0})
            ids[region] = len(segments)
    return ids, segments


def panoptic_truth(instance: np.ndarray, category: np.ndarray, semantic: np.ndarray | None) -> tuple[np.ndarray, list[dict]]:
    """(id map, segments) of one frame's ground truth: each thing track with its category; the stuff
    classes of `semantic` where given; everything else void (0)."""
    ids = np.zeros(instance.shape, dtype=np.int32)
    segments = []
    for track in np.unique(instance):
        if track in (0, VOID):
            continue
        mask = instance == track
        cat = int(category[mask][0])
        if cat in THING_TRAIN_IDS:
            segments.append({"id": len(segments) + 1, "category_id": cat, "iscrowd": 0})
            ids[mask] = len(segments)
    if semantic is not None:
        for k in range(NUM_TRAIN_CLASSES):
            region = (semantic == k) & (ids == 0) & (instance == 0)
            if k not in THING_TRAIN_IDS and region.any():
                segments.append({"id": len(segments) + 1, "category_id": k, "iscrowd": 0})
                ids[region] = len(segments)
    return ids, segments


def predict_frame(model: nn.Module, sample: dict, device, size) -> dict:
    """The model's prediction of one dataset sample at the sample's own size (the input resized to
    `size` [h, w] first when given): {'semantic': HxW uint8, 'instances', 'class_agnostic'} on the CPU."""
    h, w = sample["image"].shape[-2:]
    batch = {k: sample[k][None].to(device) for k in ("image", "flow")}
    if size is not None and tuple(size) != (h, w):
        batch = {k: F.interpolate(v, size=tuple(size), mode="bilinear", align_corners=False) for k, v in batch.items()}
    pred = model.predict(batch, size=(h, w))
    move = {k: v.cpu() for k, v in pred["class_agnostic"][0].items()}
    inst = {k: v.cpu() for k, v in pred["instances"][0].items()}
    return {"semantic": pred["semantic"][0].cpu().numpy().astype(np.uint8), "instances": inst, "class_agnostic": move}


# ---------------------------------------------------------------------------------------------
# Writing prediction files
# ---------------------------------------------------------------------------------------------

class PredictionWriter:
    """Collects the files of a prediction set under `out_dir` (see the module docs); `close()` writes
    the JSON files and the txt files, atomically."""

    def __init__(self, out_dir: str | Path, with_truth: bool = False):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.panoptic: list[dict] = []
        self.truth: list[dict] | None = [] if with_truth else None
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.txt: dict[str, list[str]] = defaultdict(list)

    def _panoptic_png(self, folder: str, stem: str, ids: np.ndarray, segments: list[dict], image_id: int) -> dict:
        write_png(self.out / folder / f"{stem}.png", panoptic_rgb(ids))
        return {"image_id": image_id, "file_name": f"{stem}.png",
                "segments_info": [dict(s, area=int((ids == s["id"]).sum())) for s in segments]}

    def add(self, sequence: str, frame: int, image_file: str, pred: dict, painted: tuple,
            truth: tuple | None = None) -> None:
        stem = frame_stem(sequence, frame)
        image_id = len(self.images) + 1
        h, w = pred["semantic"].shape
        self.images.append({"id": image_id, "file_name": image_file, "height": h, "width": w,
                            "sequence": sequence, "frame": int(frame)})
        ids, segments = panoptic_prediction(pred["semantic"], pred["instances"])
        self.panoptic.append(self._panoptic_png("panoptic", stem, ids, segments, image_id))
        if self.truth is not None and truth is not None:
            self.truth.append(self._panoptic_png("panoptic_gt", stem, *truth, image_id))
        moving_ids, kept = painted
        for k, label, score in kept:
            rle = coco.mask_to_rle(moving_ids == k)
            self.annotations.append({
                "id": len(self.annotations) + 1, "image_id": image_id, "category_id": MOTION_CLASS[label],
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "area": coco.rle_area(rle), "bbox": coco.rle_bbox(rle), "iscrowd": 0, "score": score,
                "sequence": sequence, "frame": int(frame)})
            cls = MOTION_CLASS[label]
            self.txt[sequence].append(f"{frame} {cls * 1000 + k} {cls} {h} {w} {rle['counts'].decode('ascii')}\n")
        self.txt.setdefault(sequence, [])

    def close(self) -> list[Path]:
        written = [self.out / "panoptic.json", self.out / "class_agnostic.json"]
        atomic_write_json(written[0], {"images": self.images, "annotations": self.panoptic,
                                       "categories": PANOPTIC_CATEGORIES}, indent=None)
        if self.truth is not None:
            written.append(self.out / "panoptic_gt.json")
            atomic_write_json(written[-1], {"images": self.images, "annotations": self.truth,
                                            "categories": PANOPTIC_CATEGORIES}, indent=None)
        atomic_write_json(written[1], {"info": {"description": "VCANet class-agnostic instances"},
                                       "images": self.images, "annotations": self.annotations,
                                       "categories": MOTION_COCO_CATEGORIES}, indent=None)
        for sequence, lines in self.txt.items():
            path = self.out / "class_agnostic_txt" / f"{sequence.replace('/', '_')}.txt"
            atomic_write_text(path, "".join(lines))
            written.append(path)
        return written


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def _scenarios(dataset) -> dict[tuple[str, str], str]:
    """(root, sequence) -> scenario of the offline world's exports (their sequences.json)."""
    out = {}
    for part in getattr(dataset, "parts", [dataset]):
        path = Path(part.root) / "sequences.json"
        if path.is_file():
            try:
                for seq, episode in json.loads(path.read_text()).items():
                    bits = Path(str(episode)).stem.split("_")
                    if len(bits) >= 3:
                        out[(str(part.root), seq)] = bits[1]
            except (json.JSONDecodeError, AttributeError):
                continue
    return out


def _frame_truth(sample: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    instance = sample["instance"].numpy()
    motion = sample["motion"].numpy()
    category = sample["category"].numpy()
    semantic = sample["semantic"].numpy() if "semantic" in sample else None
    return instance, motion, category, semantic


def _items(dataset) -> list[tuple[int, object, int]]:
    """(global index, part, local index) of every sample of a MotionSets or one MotionDataset."""
    parts = getattr(dataset, "parts", [dataset])
    out, start = [], 0
    for part in parts:
        out += [(start + i, part, i) for i in range(len(part))]
        start += len(part)
    return out


@torch.no_grad()
def vcanet_evaluate(model: nn.Module, dataset, device, cfg: dict, *, max_images: int | None = None,
                    progress: bool = True, save_dir: str | Path | None = None, workers: int | None = None) -> dict:
    """CAQ / SQ / RQ of the moving instances and PQ, per dataset / scenario and overall (module docs)."""
    model.eval()
    items = _items(dataset)
    if max_images is not None and len(items) > max_images:
        items = [items[i] for i in np.linspace(0, len(items) - 1, max_images).round().astype(int)]
    scenarios = _scenarios(dataset)
    caq: dict[str, ClassAgnosticQuality] = defaultdict(ClassAgnosticQuality)
    pq: dict[str, PanopticQuality] = defaultdict(lambda: PanopticQuality(PANOPTIC_CATEGORIES))
    writer = PredictionWriter(save_dir, with_truth=True) if save_dir is not None else None
    size = cfg["eval"]["resize"]
    for _, part, i in tqdm(items, desc="eval", unit="img", disable=not progress, dynamic_ncols=True):
        sample = part[i]
        meta = sample["meta"]
        pred = predict_frame(model, sample, device, size)
        instance, motion, category, semantic = _frame_truth(sample)
        painted = paint_instances(pred["class_agnostic"])
        ids, kept = painted
        moving = np.isin(ids, [k for k, label, _ in kept if label == 0]) * ids
        gt_moving = np.where(motion == MOVING, instance, 0)
        void = motion == VOID
        p_ids, p_segments = panoptic_prediction(pred["semantic"], pred["instances"])
        truth = panoptic_truth(instance, category, semantic)
        name = frame_stem(meta["sequence"], meta["frame"])
        groups = ["overall", meta["dataset"]]
        scenario = scenarios.get((str(part.root), meta["sequence"]))
        if scenario is not None:
            groups.append(scenario)
        for g in groups:
            caq[g].update(moving, gt_moving, void=void if void.any() else None, name=name)
            pq[g].update(p_ids, p_segments, truth[0], truth[1], name=name)
        if writer is not None:
            image_file = str(Path(meta["image"]).resolve().relative_to(Path(part.root).resolve()))
            writer.add(meta["sequence"], meta["frame"], image_file, pred, painted, truth)
    if writer is not None:
        writer.close()

    def summary(group: str) -> dict:
        c, p = caq[group].compute(), pq[group].compute()
        return {"caq": c["caq"], "sq": c["sq"], "rq": c["rq"], "tp": c["tp"], "fp": c["fp"], "fn": c["fn"],
                "pq": p["all"]["pq"], "pq_things": p["things"]["pq"], "pq_stuff": p["stuff"]["pq"],
                "images": caq[group].num_images}

    groups = {g: summary(g) for g in caq if g != "overall"}
    overall = summary("overall") if items else {}
    headline = {k: overall.get(k, float("nan")) for k in ("caq", "sq", "rq", "pq")}
    return {"overall": overall, "groups": groups, "headline": headline, "images": len(items),
            "flow": cfg["data"]["flow"]}


def vcanet_table(result: dict, title: str | None = None) -> str:
    """CAQ / SQ / RQ of the moving instances and PQ (all / things / stuff) per group, in percent."""
    columns = {"CAQ": "caq", "SQ": "sq", "RQ": "rq", "PQ": "pq", "PQ things": "pq_things", "PQ stuff": "pq_stuff",
               "TP": "tp", "FP": "fp", "FN": "fn", "images": "images"}
    rows = {g: {c: r.get(k) for c, k in columns.items()} for g, r in result["groups"].items()}
    rows["all"] = {c: result["overall"].get(k) for c, k in columns.items()}
    return format_table(rows, columns=list(columns), percent=list(columns)[:6], title=title)


# ---------------------------------------------------------------------------------------------
# Panels, describe, predict
# ---------------------------------------------------------------------------------------------

def motion_panel(rgb: np.ndarray, flow: np.ndarray, truth: dict | None, pred: dict, gap: int = 4) -> np.ndarray:
    """RGB | flow input | truth (red moving, blue static; grey when none) | class-agnostic prediction
    (same colours) | panoptic prediction (train-id colours), separated by `gap` white pixels."""
    h, w = rgb.shape[:2]
    ids, kept = paint_instances(pred["class_agnostic"])
    shown = {"moving": np.isin(ids, [k for k, lab, _ in kept if lab == 0]) & (ids > 0),
             "static": np.isin(ids, [k for k, lab, _ in kept if lab == 1]) & (ids > 0)}
    gt = color_overlay(rgb, truth) if truth is not None else np.full((h, w, 3), 128, np.uint8)
    p_ids, p_segments = panoptic_prediction(pred["semantic"], pred["instances"])
    cats = np.full((h, w), VOID, np.uint8)
    for s in p_segments:
        cats[p_ids == s["id"]] = s["category_id"]
    parts = [rgb, flow, gt, color_overlay(rgb, shown), colorize_train(cats)]
    sep = np.full((h, gap, 3), 255, np.uint8)
    out = [parts[0]]
    for p in parts[1:]:
        out += [sep, p.astype(np.uint8)]
    return np.concatenate(out, axis=1)


@torch.no_grad()
def vcanet_panels(model: nn.Module, dataset, device, count: int = 3, size=None) -> list[tuple[str, np.ndarray]]:
    """Panels (motion_panel) of `count` frames evenly spaced over the dataset."""
    model.eval()
    items = _items(dataset)
    if not items or count < 1:
        return []
    picked = [items[i] for i in np.linspace(0, len(items) - 1, min(count, len(items))).round().astype(int)]
    panels = []
    for _, part, i in picked:
        sample = part[i]
        pred = predict_frame(model, sample, device, size)
        motion = sample["motion"].numpy()
        truth = {"moving": motion == MOVING, "static": motion == STATIC}
        panels.append((frame_stem(sample["meta"]["sequence"], sample["meta"]["frame"]),
                       motion_panel(denormalize(sample["image"]), denormalize(sample["flow"]), truth, pred)))
    return panels


def describe_motion(cfg: dict, data_dir) -> list[str]:
    """Lines naming the sequences, labels and flow a run reads, per split."""
    from baselines.motion import FLOW_MODES, flow_scales, labels_path, split_sequences

    d = cfg["data"]
    scale = flow_scales(d)[d["flow"]]
    lines = [f"flow input: {d['flow']} ({FLOW_MODES[d['flow']]}/ PNGs, {scale:g} px = full saturation"
             + (f", of {d['flow_dir']})" if d["flow_dir"] else ", computed and cached in ROOT/vca_flow when absent)")]
    for split in (d["train_split"], d["eval_split"]):
        for base in [Path(data_dir), *[Path(r) for r in d["extra_roots"]]]:
            root, names = split_sequences(base, split, d[f"{split}_sequences"])
            labels = labels_path(root, d["labels"], base if root != base else None)
            lines.append(f"{split}: {root} ({len(names)} sequences: {', '.join(names[:6])}"
                         f"{' ...' if len(names) > 6 else ''}; labels {labels.name})")
    return lines


@torch.no_grad()
def vcanet_predict(model: nn.Module, cfg: dict, inputs: list[Path], out_dir: Path, device, progress: bool = True,
                   frames: str | None = None, panel: bool = False, sheet: Path | None = None) -> list[Path]:
    """Predict every frame (`frames`: 'middle' or a comma list of indices per sequence) of the motion
    sequence folders `inputs` and write the prediction files (module docs); with `panel` / `sheet`, the
    panels per frame / stacked, with the truth where the folder has motion labels (data.labels; grey
    without). Flow as data.flow of the run (cached under ROOT/vca_flow when data.flow_dir is null)."""
    from baselines.motion import ensure_flow, flow_scales, labels_path
    from vca_data.formats.folders import list_sequences, open_sequence
    from vca_data.formats.motion_labels import MotionLabels
    from vca_data.motion_dataset import MotionDataset
    from vca_data.transforms import Normalize, ToTensor

    d = cfg["data"]
    plans = []
    for root in inputs:
        root = Path(root)
        names = list_sequences(root) if root.is_dir() else []
        if not names:
            raise ValueError(f"{root}: VCANet predicts motion sequence folders (KITTI-MOTS or Cityscapes-VPS layout), "
                             "and this is none")
        plans.append((root, names))
    folders = [ensure_flow(root, names, d["flow_dir"], d["flow"], progress, flow_scales(d)) for root, names in plans]
    writer = PredictionWriter(out_dir)
    finish = [ToTensor(image_keys=("image", "flow"), dense_keys=(), label_keys=()), Normalize(image_keys=("image", "flow"))]
    panels, written = [], []
    model.eval()
    for (root, names), folder in zip(plans, folders):
        try:
            labels = MotionLabels.load(labels_path(root, d["labels"]))
        except FileNotFoundError:
            labels = None
        for name in names:
            seq = open_sequence(root, name)
            truth_of = MotionDataset(root, labels, sequences=[name]) if labels is not None and name in labels.sequences \
                else None
            picked = list(range(seq.num_frames))
            if frames == "middle":
                picked = [seq.num_frames // 2]
            elif frames is not None:
                try:
                    picked = [int(f) for f in frames.split(",")]
                except ValueError:
                    raise ValueError(f"--frames {frames!r}: expected 'middle' or comma-separated frame indices") from None
                if any(not 0 <= f < seq.num_frames for f in picked):
                    raise ValueError(f"{root}: sequence {seq.name} has {seq.num_frames} frames; --frames {frames} is out of range")
            for i in tqdm(picked, desc=f"predict {seq.name}", unit="frame", disable=not progress, leave=False):
                flow_path = folder / seq.name / f"{i:06d}.png"
                bgr = cv2.imread(str(flow_path), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise FileNotFoundError(f"{flow_path}: missing or unreadable flow PNG")
                sample = {"image": seq.read_image(i), "flow": cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)}
                for step in finish:
                    sample = step(sample)
                pred = predict_frame(model, sample, device, cfg["eval"]["resize"])
                writer.add(seq.name, i, str(seq.image_path(i)), pred, paint_instances(pred["class_agnostic"]))
                if panel or sheet is not None:
                    truth = None
                    if truth_of is not None:
                        motion = truth_of.label_maps(truth_of.sequences[0], i)["motion"]
                        truth = {"moving": motion == MOVING, "static": motion == STATIC}
                    picture = motion_panel(denormalize(sample["image"]), denormalize(sample["flow"]), truth, pred)
                    panels.append((frame_stem(seq.name, i), picture))
                    if panel:
                        target = Path(out_dir) / f"{frame_stem(seq.name, i)}_panel.png"
                        write_png(target, picture)
                        written.append(target)
    written += writer.close()
    if sheet is not None and panels:
        write_png(Path(sheet), stack_panels(panels))
        written.append(Path(sheet))
    return written

