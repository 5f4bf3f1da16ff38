"""The `metrics` command: evaluate saved predictions against labels on disk (anomaly, semantic,
panoptic or class-agnostic instance quality), print the table and write the numbers as JSON.

Registered as `vca-baseline metrics` through `register(subparsers)`; also runs on its own as
`python -m vca_data.metrics.cli`.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from vca_data.io import atomic_write_json
from vca_data.metrics.anomaly import FPR_AT_TPR_RULES, AnomalyPixelMetrics
from vca_data.metrics.caq import ClassAgnosticQuality
from vca_data.metrics.components import ComponentMetrics
from vca_data.metrics.loading import read_ahead
from vca_data.metrics.panoptic import PanopticQuality, iter_coco_panoptic_pairs, read_coco_panoptic
from vca_data.metrics.semantic import SemanticMetrics

KINDS = ("anomaly", "semantic", "panoptic", "caq")
KITTI_IGNORE_CLASS = 10

FORMATS = """\
formats of --pred and --gt (files anywhere below the folders, paired by file stem; with --pred-suffix /
--gt-suffix only the files whose stem ends with it are read; a missing partner is an error):
  anomaly   pred: score maps, *.npy (HxW float; higher = more anomalous) or *.png / *.tif (8/16-bit;
            the integer values are the scores, only their order matters)
            gt:   *.png labels, 0 in-distribution, 1 anomaly, --void (255) ignored; with --anomaly-label
            254 the train-id maps of `vca-carla export` (254 = unknown object) serve as they are
  semantic  pred: *.png (or *.npy) train-id maps; values outside 0..N-1, e.g. 254, mean "no known class"
            gt:   *.png train-id maps, 255 void, 254 unknown object (CA-IoU; excluded from the classes)
  panoptic  COCO panoptic: a JSON file (or a folder with exactly one *.json) and its PNGs (RGB,
            id = R + 256 G + 256^2 B) in the folder named like the JSON without .json, else beside it;
            images are paired by image_id, categories come from the ground-truth JSON
  caq       KITTI-MOTS style instances, either one <seq>.txt per sequence (lines "frame obj_id class_id
            height width rle", in DIR or DIR/instances_txt) or 16-bit PNGs DIR/<seq>/<frame>.png (also
            DIR/instances/<seq>/...) with value obj_id = class_id * 1000 + instance, 0 background;
            class 10 (obj_id 10000) is an ignore region; frames are paired by sequence and frame
"""


class MetricsInputError(ValueError):
    """Input files are missing, unpaired or malformed; the message names the file."""


# ---------------------------------------------------------------------------------------- arguments
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", required=True, choices=KINDS, help="which metric family to compute")
    parser.add_argument("--pred", required=True, type=Path, help="predictions (folder or, for panoptic, JSON)")
    parser.add_argument("--gt", required=True, type=Path, help="ground truth (folder or, for panoptic, JSON)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--pred-suffix", default="", help="read only prediction files whose stem ends with this, "
                        "and strip it before pairing "
                        "(e.g. _scores)")
    parser.add_argument("--gt-suffix", default="", help="read only ground-truth files whose stem ends with this, "
                        "and strip it before pairing "
                        "(e.g. _gtFine_labelTrainIds)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--workers", type=int, default=4,
                        help="threads decoding files ahead of the metric (default 4; 1: none)")
    anomaly = parser.add_argument_group("anomaly")
    anomaly.add_argument("--void", type=int, default=255, help="void label of the anomaly ground truth (default 255)")
    anomaly.add_argument("--anomaly-label", type=int, default=1,
                         help="ground-truth label of anomalous pixels (default 1); every other label but --void "
                         "is in-distribution, so 254 reads the toolkit's train-id maps (254 = unknown object)")
    anomaly.add_argument("--exact", action="store_true", help="sort all scores instead of the 2^bits histogram")
    anomaly.add_argument("--bins-bits", type=int, default=20, help="histogram of 2^BITS bins (1-24, default 20)")
    anomaly.add_argument("--tpr", type=float, default=0.95, help="TPR at which the FPR is read (default 0.95)")
    anomaly.add_argument("--fpr-rule", choices=FPR_AT_TPR_RULES, default="first_ge",
                         help="which ROC point gives FPR at TPR: first with TPR >= target (default; Fishyscapes, "
                         "SegmentMeIfYouCan), first with TPR > target (SLEEG code), nearest, or interpolated")
    anomaly.add_argument("--components", action="store_true",
                         help="also compute SegmentMeIfYouCan component metrics (sIoU, PPV, mean F1), "
                         "thresholding at the pixel best-F1 threshold unless --threshold is given")
    anomaly.add_argument("--threshold", type=float, help="score threshold (>=) for the component metrics")
    anomaly.add_argument("--min-component-size", type=int, default=500,
                         help="drop predicted components below this many pixels (default 500; obstacle track 50)")
    anomaly.add_argument("--min-instance-size", type=int, default=100,
                         help="ground-truth instances below this many pixels are void (default 100; obstacle 10)")
    semantic = parser.add_argument_group("semantic")
    semantic.add_argument("--num-classes", type=int, default=19, help="number of known classes (default 19)")
    semantic.add_argument("--ignore-index", type=int, default=255, help="void label (default 255)")
    semantic.add_argument("--unknown-label", type=int, default=254,
                          help="label of unknown objects for CA-IoU (default 254; -1 for closed-set evaluation)")
    caq = parser.add_argument_group("caq")
    caq.add_argument("--authors-counting", action="store_true",
                     help="count an unmatched prediction as both FP and FN, as the VCA authors' script does")
    caq.add_argument("--gt-classes", type=int, nargs="+",
                     help="class ids of ground-truth objects to evaluate (default: all but the ignore class 10); "
                     "e.g. 1 for the moving objects of motion labels (moving = 1, static = 2)")
    caq.add_argument("--pred-classes", type=int, nargs="+",
                     help="class ids of predicted objects to evaluate (default: all but the ignore class 10)")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `metrics` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "metrics",
        help="evaluate saved predictions against labels",
        description="Evaluate saved predictions against labels; print the table and write the results as JSON.",
        epilog=FORMATS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vca_data.metrics.cli",
        description="Evaluate saved predictions against labels; print the table and write the results as JSON.",
        epilog=FORMATS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    try:
        result, table = EVALUATORS[args.kind](args)
    except (MetricsInputError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table)
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if not callable(v)}
    report = {"kind": args.kind, "pred": str(args.pred), "gt": str(args.gt), "options": options,
              "results": _json_safe(result)}
    if args.out:
        atomic_write_json(args.out, report)
    print(f"{args.kind}: {_summary(args.kind, result)}; results " + (f"written to {args.out}" if args.out else
                                                                      "not saved (no --out)"))
    return 0


def _json_safe(value):
    """NaN and inf become null, numpy scalars plain numbers: the output is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _summary(kind: str, result: dict) -> str:
    def pct(x):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"

    if kind == "anomaly":
        pixel = result["pixel"]
        return (f"{pixel['num_images']} images, AP {pct(pixel['ap'])}, AUROC {pct(pixel['auroc'])}, "
                f"FPR@{100 * pixel['tpr']:g} {pct(pixel['fpr_at_tpr'])}")
    if kind == "semantic":
        return f"{result['num_images']} images, mIoU {pct(result['miou'])}, CA-IoU {pct(result['ca_iou'])}"
    if kind == "panoptic":
        return f"{result['num_images']} images, PQ {pct(result['all']['pq'])}"
    return f"{result['num_images']} images, CAQ {pct(result['caq'])}, SQ {pct(result['sq'])}, RQ {pct(result['rq'])}"


# -------------------------------------------------------------------------------------- file pairing
def _files_by_stem(folder: Path, suffixes: Sequence[str], strip: str, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise MetricsInputError(f"{role} folder {folder} does not exist")
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes):
        if strip and not path.stem.endswith(strip):
            continue  # e.g. the colour and instance PNGs beside Cityscapes' *_labelTrainIds.png
        stem = path.stem[: -len(strip)] if strip else path.stem
        if stem in files:
            raise MetricsInputError(f"{role} folder {folder}: two files pair as '{stem}': {files[stem]} and {path}")
        files[stem] = path
    if not files:
        ending = f" whose name ends with {strip}" if strip else ""
        raise MetricsInputError(f"{role} folder {folder} holds no {'/'.join(suffixes)} files{ending}")
    return files


def pair_files(args, pred_suffixes: Sequence[str], gt_suffixes: Sequence[str]) -> list[tuple[str, Path, Path]]:
    """(stem, prediction file, ground-truth file) for every ground-truth file, sorted by stem."""
    pred = _files_by_stem(args.pred, pred_suffixes, args.pred_suffix, "prediction")
    gt = _files_by_stem(args.gt, gt_suffixes, args.gt_suffix, "ground-truth")
    missing, extra = sorted(set(gt) - set(pred)), sorted(set(pred) - set(gt))
    if missing or extra:
        lines = []
        if missing:
            lines.append(f"no prediction in {args.pred} for {len(missing)} ground-truth files, e.g. {missing[:5]}")
        if extra:
            lines.append(f"no ground truth in {args.gt} for {len(extra)} predictions, e.g. {extra[:5]}")
        raise MetricsInputError("; ".join(lines) + " (use --pred-suffix/--gt-suffix to strip name suffixes)")
    return [(stem, pred[stem], gt[stem]) for stem in sorted(gt)]


def read_array(path: Path) -> np.ndarray:
    """A single-channel map from .npy or an image file, as stored (no scaling)."""
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise MetricsInputError(f"{path}: cannot read .npy: {err}") from err
    else:
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise MetricsInputError(f"{path}: cannot read as an image")
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise MetricsInputError(f"{path}: expected a single-channel HxW map, got shape {array.shape}")
    return array


def _read_pair(pair: tuple[str, Path, Path]) -> tuple[tuple[str, Path, Path], np.ndarray, np.ndarray]:
    return pair, read_array(pair[1]), read_array(pair[2])


def _check_same_shape(stem: str, pred: np.ndarray, gt: np.ndarray, pred_path: Path, gt_path: Path) -> None:
    if pred.shape != gt.shape:
        raise MetricsInputError(f"'{stem}': prediction {pred_path} has shape {pred.shape}, ground truth {gt_path} "
                                f"has shape {gt.shape}")


def _progress(items, args, desc: str, total: int | None = None):
    return tqdm(items, desc=desc, total=total, disable=args.no_progress, unit="img")


# ---------------------------------------------------------------------------------------- evaluators
def _anomaly_pair(args):
    """The pair reader of the anomaly evaluation: ground-truth labels as 0 / 1 / void, where
    --anomaly-label names the anomalous pixels."""
    if args.anomaly_label == 1:
        return _read_pair

    def read(pair):
        pair, scores, labels = _read_pair(pair)
        mapped = (labels == args.anomaly_label).astype(np.uint8 if args.void < 256 else np.int32)
        mapped[labels == args.void] = args.void
        return pair, scores, mapped

    return read


def evaluate_anomaly(args) -> tuple[dict, str]:
    if args.anomaly_label == args.void:
        raise MetricsInputError(f"--anomaly-label and --void are both {args.void}")
    read_pair = _anomaly_pair(args)
    pairs = pair_files(args, (".npy", ".png", ".tif", ".tiff"), (".png", ".npy"))
    pixel = AnomalyPixelMetrics(exact=args.exact, bins_bits=args.bins_bits, void_label=args.void,
                                tpr=args.tpr, fpr_at_tpr_rule=args.fpr_rule)
    for (stem, pred_path, gt_path), scores, labels in _progress(read_ahead(read_pair, pairs, args.workers), args,
                                                                 "anomaly", total=len(pairs)):
        _check_same_shape(stem, scores, labels, pred_path, gt_path)
        pixel.update(scores, labels, name=str(pred_path))
    result = {"pixel": pixel.compute()}
    tables = [pixel.table(result["pixel"])]
    if args.components:
        threshold = args.threshold if args.threshold is not None else result["pixel"]["best_f1_threshold"]
        components = ComponentMetrics(threshold=threshold, void_label=args.void,
                                      min_component_size=args.min_component_size,
                                      min_instance_size=args.min_instance_size)
        for (_stem, pred_path, _gt), scores, labels in _progress(read_ahead(read_pair, pairs, args.workers), args,
                                                                 "components", total=len(pairs)):
            components.update(scores, labels, name=str(pred_path))
        result["components"] = components.compute()
        result["components"]["threshold"] = threshold
        tables.append(components.table(result["components"]))
    return result, "\n\n".join(tables)


def evaluate_semantic(args) -> tuple[dict, str]:
    pairs = pair_files(args, (".png", ".npy"), (".png", ".npy"))
    metric = SemanticMetrics(num_classes=args.num_classes, ignore_index=args.ignore_index,
                             unknown_label=None if args.unknown_label < 0 else args.unknown_label)
    for (stem, pred_path, gt_path), pred, gt in _progress(read_ahead(_read_pair, pairs, args.workers), args,
                                                           "semantic", total=len(pairs)):
        _check_same_shape(stem, pred, gt, pred_path, gt_path)
        metric.update(pred, gt, name=str(gt_path))
    result = metric.compute()
    return result, metric.table(result)


def _panoptic_json(path: Path, role: str) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("*.json"))
        if len(found) == 1:
            return found[0]
        raise MetricsInputError(f"{role} folder {path} must hold exactly one COCO panoptic *.json, found {len(found)}")
    raise MetricsInputError(f"{role} {path} does not exist")


def evaluate_panoptic(args) -> tuple[dict, str]:
    gt = read_coco_panoptic(_panoptic_json(args.gt, "ground-truth"))
    pred = read_coco_panoptic(_panoptic_json(args.pred, "prediction"))
    if not gt.categories:
        raise MetricsInputError(f"{gt.json_path}: the ground-truth JSON lists no categories")
    metric = PanopticQuality(gt.categories)
    pairs = iter_coco_panoptic_pairs(gt, pred, args.workers)
    for file_name, (p_ids, p_segments), (g_ids, g_segments) in _progress(pairs, args, "panoptic",
                                                                         total=len(gt.annotations)):
        metric.update(p_ids, p_segments, g_ids, g_segments, name=file_name)
    result = metric.compute()
    return result, metric.table(result)


# --------------------------------------------------------------------------- KITTI-MOTS style instances
class InstanceSource:
    """Per-frame instance id maps (obj_id = class_id * 1000 + instance) of one side, from txt or PNGs."""

    def __init__(self, folder: Path, role: str):
        if not folder.is_dir():
            raise MetricsInputError(f"{role} folder {folder} does not exist")
        self.folder, self.role = folder, role
        txt_dir = folder / "instances_txt" if (folder / "instances_txt").is_dir() else folder
        self.txt_files = {p.stem: p for p in sorted(txt_dir.glob("*.txt"))}
        png_dir = folder / "instances" if (folder / "instances").is_dir() else folder
        self.png_files: dict[tuple[str, str], Path] = {}
        if not self.txt_files:
            for path in sorted(png_dir.rglob("*.png")):
                seq = path.parent.relative_to(png_dir).as_posix()
                self.png_files[(seq, path.stem)] = path
            if not self.png_files:
                raise MetricsInputError(f"{role} folder {folder} holds neither <seq>.txt files nor PNG instance maps")
        self._txt_cache: dict[str, dict[str, list[tuple[int, dict]]]] = {}

    @property
    def is_txt(self) -> bool:
        return bool(self.txt_files)

    def sequences(self) -> set[str]:
        return set(self.txt_files) if self.is_txt else {seq for seq, _ in self.png_files}

    def frames(self, seq: str) -> set[str]:
        if self.is_txt:
            return set(self._txt(seq))
        return {frame for s, frame in self.png_files if s == seq}

    def _txt(self, seq: str) -> dict[str, list[tuple[int, dict]]]:
        if seq not in self._txt_cache:
            path = self.txt_files[seq]
            frames: dict[str, list[tuple[int, dict]]] = {}
            for line_no, line in enumerate(path.read_text().splitlines(), start=1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 6:
                    raise MetricsInputError(f"{path}:{line_no}: expected 'frame obj_id class_id height width rle', "
                                            f"got {len(fields)} fields")
                try:
                    frame, obj_id, _class_id, height, width = (int(v) for v in fields[:5])
                except ValueError as err:
                    raise MetricsInputError(f"{path}:{line_no}: non-integer field: {err}") from err
                rle = {"size": [height, width], "counts": fields[5].encode()}
                frames.setdefault(f"{frame:06d}", []).append((obj_id, rle))
            self._txt_cache[seq] = frames
        return self._txt_cache[seq]

    def id_map(self, seq: str, frame: str, shape: tuple[int, int] | None) -> np.ndarray | None:
        """The frame's obj_id map; None where the frame is absent (a txt side lists only frames with
        objects: an empty map of `shape` is returned there when `shape` is known)."""
        if not self.is_txt:
            path = self.png_files.get((seq, frame))
            if path is None:
                return None
            ids = read_array(path)
            if not np.issubdtype(ids.dtype, np.integer):
                raise MetricsInputError(f"{path}: instance PNG must hold integers, got {ids.dtype}")
            return ids.astype(np.int64)
        objects = self._txt(seq).get(frame)
        if objects is None:
            return None if shape is None else np.zeros(shape, dtype=np.int64)
        from pycocotools import mask as mask_utils

        height, width = objects[0][1]["size"]
        ids = np.zeros((height, width), dtype=np.int64)
        for obj_id, rle in objects:
            if rle["size"] != [height, width]:
                raise MetricsInputError(f"{self.txt_files[seq]}: frame {frame} mixes image sizes")
            try:
                with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword deprecation, not ours
                    warnings.simplefilter("ignore", DeprecationWarning)
                    mask = mask_utils.decode(rle).astype(bool)
            except Exception as err:  # pycocotools raises bare exceptions on bad RLE strings
                raise MetricsInputError(f"{self.txt_files[seq]}: frame {frame}, object {obj_id}: bad RLE: {err}") from err
            if (ids[mask] != 0).any():
                raise MetricsInputError(f"{self.txt_files[seq]}: frame {frame}: object {obj_id} overlaps another")
            ids[mask] = obj_id
        return ids


def _select(ids: np.ndarray, classes: Sequence[int] | None) -> np.ndarray:
    """Instance map keeping the objects of `classes` (default all but the ignore class)."""
    class_of = ids // 1000
    keep = class_of != KITTI_IGNORE_CLASS if classes is None else np.isin(class_of, list(classes))
    return np.where(keep & (ids != 0), ids, 0)


def iter_instance_frames(pred: InstanceSource, gt: InstanceSource) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(seq/frame, pred id map, gt id map) over all frames of both sides, paired by sequence and frame."""
    missing, extra = sorted(gt.sequences() - pred.sequences()), sorted(pred.sequences() - gt.sequences())
    if missing or extra:
        raise MetricsInputError(f"sequences differ: only in ground truth {missing[:5]}, only in predictions {extra[:5]}")
    for seq in sorted(gt.sequences()):
        for frame in sorted(gt.frames(seq) | pred.frames(seq)):
            g = gt.id_map(seq, frame, None)
            p = pred.id_map(seq, frame, None if g is None else g.shape)
            if g is None and p is not None:  # a txt ground truth lists only frames with objects
                g = gt.id_map(seq, frame, p.shape)
            if g is None:
                raise MetricsInputError(f"{gt.folder}: no ground truth for sequence {seq} frame {frame}")
            if p is None:
                raise MetricsInputError(f"{pred.folder}: no prediction for sequence {seq} frame {frame}")
            if p.shape != g.shape:
                raise MetricsInputError(f"sequence {seq} frame {frame}: prediction size {p.shape} differs from "
                                        f"ground truth size {g.shape}")
            yield f"{seq}/{frame}", p, g


def evaluate_caq(args) -> tuple[dict, str]:
    pred, gt = InstanceSource(args.pred, "prediction"), InstanceSource(args.gt, "ground-truth")
    metric = ClassAgnosticQuality(count_unmatched_pred_as_fn=args.authors_counting)
    for name, p, g in _progress(iter_instance_frames(pred, gt), args, "caq"):
        void = (g // 1000) == KITTI_IGNORE_CLASS
        metric.update(_select(p, args.pred_classes), _select(g, args.gt_classes),
                      void=void if void.any() else None, name=name)
    result = metric.compute()
    return result, metric.table(result)


EVALUATORS = {"anomaly": evaluate_anomaly, "semantic": evaluate_semantic, "panoptic": evaluate_panoptic,
              "caq": evaluate_caq}


if __name__ == "__main__":
    sys.exit(main())
