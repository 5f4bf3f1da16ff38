"""VCANet through the engine and the CLI: the split's sequences, labels and flow are found (flow computed
and cached when absent), phase 1 then phase 2 from the phase-1 run (only the class-agnostic part
changes), resume is exact, the saved predictions scored by `vca-baseline metrics` give the numbers of
`vca-baseline eval`, `predict` writes the files and panels, and bad inputs fail with one line naming
the file and leave nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from annotator.cli import main as annotate_main
from annotator.proposals.sequences import DEFAULT_FLOW_MAX, DEFAULT_SUPPRESSED_MAX, read_flow_scale
from baselines.cli import main as baseline_main
from baselines.config import ConfigError, build_config
from baselines.engine import train
from baselines.evaluate import evaluate_run
from baselines.motion import CACHE_DIR, DATA_DEFAULTS, motion_datasets, split_sequences
from baselines.runs import RunError, latest_checkpoint, load_checkpoint
from baselines.vcanet_eval import panoptic_prediction
from vca_data.synthetic import make_kitti_mots_sequence

H, W = 64, 96
# the smallest VCANet the code paths accept; low thresholds so that an untrained head's masks survive
# (the round trip then compares non-empty predictions)
MICRO = ["model.fpn_channels=16", "model.semantic_channels=16", "model.semantic_convs=1",
         "model.instance.seg_feat_channels=16", "model.instance.stacked_convs=1",
         "model.class_agnostic.seg_feat_channels=16", "model.class_agnostic.stacked_convs=1",
         "model.instance.num_grids=[8,6,5,4,3]", "model.class_agnostic.num_grids=[8,6,5,4,3]",
         f"data.crop=[{H},{W}]", "data.batch_size=2", "data.workers=0", "train.iters=4", "train.milestones=[3]",
         "train.warmup_iters=1", "train.log_every=1", "train.panels=1", "train.tensorboard=false"]
LOW = [f"model.{head}.{key}={value}" for head in ("instance", "class_agnostic")
       for key, value in (("score_thr", 0.005), ("mask_thr", 0.2), ("update_thr", 0.001), ("max_per_img", 20))]


def cfg_of(*extra: str) -> dict:
    return build_config("vcanet-tiny", MICRO + list(extra), model="vcanet")


@pytest.fixture(scope="module")
def motion_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("motion")
    for split, seqs in (("train", ("0000", "0001")), ("test", ("0002",))):
        for k, seq in enumerate(seqs):
            make_kitti_mots_sequence(root / split, seq, num_frames=6, height=H, width=W, num_objects=4,
                                     seed=k + (10 if split == "test" else 0))
    return root


@pytest.fixture(scope="module")
def phase_one(motion_root, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "phase1"
    train(cfg_of(*LOW), run, motion_root, progress=False)
    return run


def test_datasets_find_splits_labels_and_cache_flow(motion_root):
    ds = motion_datasets(cfg_of(), motion_root, "train", True)
    assert len(ds) == 12  # 2 sequences x 6 labelled frames
    flow = motion_root / "train" / CACHE_DIR
    assert sorted(p.name for p in (flow / "flow_suppressed" / "0000").glob("*.png")) == [f"{i:06d}.png" for i in range(6)]
    assert (flow / "flow" / "0001").is_dir()
    stamp = (flow / "flow_suppressed" / "0000" / "000000.png").stat().st_mtime_ns
    sample = ds[3]
    assert sample["image"].shape == (3, H, W) and sample["flow"].shape == (3, H, W)
    motion_datasets(cfg_of(), motion_root, "train", True)  # the cache is reused, not rewritten
    assert (flow / "flow_suppressed" / "0000" / "000000.png").stat().st_mtime_ns == stamp
    test = motion_datasets(cfg_of(), motion_root, "test", False)
    assert len(test) == 6 and test[0]["image"].shape == (3, H, W)


def test_flow_cache_keeps_its_scale_and_recomputes_another(motion_root, tmp_path):
    """Each sequence's flow folder records its colour scale; a run asking for another scale recomputes
    the cached PNGs, and a given flow_dir of another scale is refused by name."""
    root = tmp_path / "copy"
    shutil.copytree(motion_root / "train", root, ignore=shutil.ignore_patterns(CACHE_DIR))
    names = ["train_sequences=['0000']", "test_sequences=['0000']"]
    motion_datasets(cfg_of(*[f"data.{n}" for n in names]), root, "train", True)
    folder = root / CACHE_DIR / "flow_suppressed" / "0000"
    assert read_flow_scale(folder) == DATA_DEFAULTS["suppressed_max"] == DEFAULT_SUPPRESSED_MAX
    assert read_flow_scale(root / CACHE_DIR / "flow" / "0000") == DATA_DEFAULTS["flow_max"] == DEFAULT_FLOW_MAX
    fine = cv2.imread(str(folder / "000001.png")).astype(int)
    motion_datasets(cfg_of(*[f"data.{n}" for n in names], "data.suppressed_max=30"), root, "train", True)
    assert read_flow_scale(folder) == 30.0
    coarse = cv2.imread(str(folder / "000001.png")).astype(int)
    # the same residual flow drawn at 30 px instead of 4 px is closer to white everywhere
    assert (255 - coarse).sum() < (255 - fine).sum()
    with pytest.raises(ValueError, match=r"0000: flow PNGs coded at 30 px \(its scale.json\), the run's "
                                         r"data.suppressed_max is 4"):
        motion_datasets(cfg_of(*[f"data.{n}" for n in names], f"data.flow_dir={root / CACHE_DIR}"), root, "train", True)
    (folder / "scale.json").write_text("{}")
    with pytest.raises(ValueError, match="scale.json: expected"):
        read_flow_scale(folder)
    with pytest.raises(ConfigError, match="data.suppressed_max must be a positive number"):
        cfg_of("data.suppressed_max=0")


def test_split_rules(tmp_path):
    full = tmp_path / "kitti"
    for k in range(21):
        (full / "image_02" / f"{k:04d}").mkdir(parents=True)
        cv2.imwrite(str(full / "image_02" / f"{k:04d}" / "000000.png"), np.zeros((4, 4, 3), np.uint8))
    (full / "instances_txt").mkdir()
    for k in range(21):
        (full / "instances_txt" / f"{k:04d}.txt").write_text("")
    root, test = split_sequences(full, "test", None)
    assert root == full and test == ["0002", "0006", "0007", "0008", "0010", "0013", "0014", "0016", "0018"]
    assert len(split_sequences(full, "train", None)[1]) == 12
    assert split_sequences(full, "train", ["0003"])[1] == ["0003"]
    with pytest.raises(ValueError, match="0099"):
        split_sequences(full, "train", ["0099"])
    few = tmp_path / "few"
    make_kitti_mots_sequence(few, "0000", num_frames=2, height=16, width=24, num_objects=1)
    with pytest.raises(ValueError, match="data.test_sequences"):
        split_sequences(few, "test", None)


@pytest.fixture(scope="module")
def phase_two(motion_root, phase_one, tmp_path_factory):
    """(run, summary) of 40 phase-2 steps from phase_one: enough for the head to find some objects."""
    run = tmp_path_factory.mktemp("runs") / "phase2"
    summary = train(cfg_of(*LOW, "model.phase=2", f"train.init_from={phase_one}", "train.iters=40", "train.lr=0.003",
                           "train.milestones=[39]"), run, motion_root, progress=False)
    return run, summary


def test_phase_two_from_phase_one_changes_only_the_class_agnostic_part(phase_one, phase_two):
    run, summary = phase_two
    assert summary.losses[-1] < 0.7 * summary.losses[0], summary.losses
    before = load_checkpoint(latest_checkpoint(phase_one))["model"]
    after = load_checkpoint(latest_checkpoint(run))["model"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    ca = ("body.second.", "body.fuse.", "ca_head.")
    assert changed and all(k.startswith(ca) for k in changed), sorted(k for k in changed if not k.startswith(ca))[:5]
    assert any(k.startswith("ca_head.") for k in changed)


def test_resume_continues_exactly(motion_root, tmp_path):
    cfg = cfg_of()
    full = train(cfg, tmp_path / "full", motion_root, progress=False)
    first = train(cfg, tmp_path / "split", motion_root, stop_at=2, progress=False)
    rest = train(cfg, tmp_path / "split", motion_root, resume=True, progress=False)
    assert first.losses + rest.losses == pytest.approx(full.losses, abs=1e-5)
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))["model"]
    b = load_checkpoint(latest_checkpoint(tmp_path / "split"))["model"]
    for key, value in a.items():
        assert torch.allclose(value.float(), b[key].float(), atol=1e-5), key


def test_saved_predictions_scored_by_metrics_equal_eval(motion_root, phase_two, tmp_path, capsys):
    run = phase_two[0]
    pred = tmp_path / "pred"
    # the training split, where 40 steps find objects: matched and unmatched predictions both occur
    result = evaluate_run(run, motion_root, split="train", progress=False, save_dir=pred)
    assert result["images"] == 12 and set(result["groups"]) == {"kitti-mots"}
    overall = result["overall"]
    assert overall["tp"] > 0 and overall["fp"] > 0 and overall["fn"] > 0, overall
    coco = json.loads((pred / "class_agnostic.json").read_text())
    assert {c["id"]: c["name"] for c in coco["categories"]} == {1: "moving", 2: "static"}
    assert coco["annotations"] and all("counts" in a["segmentation"] and "score" in a for a in coco["annotations"])
    gt = tmp_path / "gt"
    assert annotate_main(["export", str(motion_root / "train"), "--format", "kitti-mots", "--labels",
                          str(motion_root / "train" / "motion_truth.json"), "--out", str(gt)]) == 0
    out = tmp_path / "caq.json"
    assert baseline_main(["metrics", "--kind", "caq", "--pred", str(pred / "class_agnostic_txt"), "--gt", str(gt),
                          "--gt-classes", "1", "--pred-classes", "1", "--no-progress", "--out", str(out)]) == 0
    caq = json.loads(out.read_text())["results"]
    for key in ("tp", "fp", "fn"):
        assert caq[key] == overall[key], key
    assert caq["caq"] == pytest.approx(overall["caq"], abs=1e-9)
    out = tmp_path / "pq.json"
    assert baseline_main(["metrics", "--kind", "panoptic", "--pred", str(pred / "panoptic.json"), "--gt",
                          str(pred / "panoptic_gt.json"), "--no-progress", "--out", str(out)]) == 0
    pq = json.loads(out.read_text())["results"]
    assert pq["all"]["pq"] == pytest.approx(overall["pq"], abs=1e-9)
    assert pq["things"]["pq"] == pytest.approx(overall["pq_things"], abs=1e-9)
    capsys.readouterr()
    assert baseline_main(["eval", str(run), "--data", str(motion_root), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "CAQ (%)" in table and "PQ things (%)" in table and "kitti-mots" in table


def test_predict_writes_files_and_panels(motion_root, phase_one, tmp_path, capsys):
    out = tmp_path / "out"
    sheet = tmp_path / "sheet.png"
    assert baseline_main(["predict", str(phase_one), str(motion_root / "test"), "--out", str(out), "--frames", "1,2",
                          "--panel", "--sheet", str(sheet), "--quiet"]) == 0
    assert sorted(p.name for p in (out / "panoptic").glob("*.png")) == ["0002_000001.png", "0002_000002.png"]
    assert (out / "class_agnostic_txt" / "0002.txt").is_file() and (out / "panoptic.json").is_file()
    panel = cv2.imread(str(out / "0002_000001_panel.png"))
    assert panel.shape[0] == H and panel.shape[1] == 5 * W + 4 * 4
    assert cv2.imread(str(sheet)).shape[0] == 2 * H + 4
    assert "wrote" in capsys.readouterr().out
    assert baseline_main(["predict", str(phase_one), str(tmp_path), "--out", str(out), "--quiet"]) == 2
    assert "motion sequence folders" in capsys.readouterr().err


def test_panoptic_fusion_by_score_and_overlap():
    semantic = np.zeros((4, 6), np.uint8)  # road everywhere
    masks = torch.zeros(2, 4, 6, dtype=torch.bool)
    masks[0, :, :3] = True   # car, score 0.9
    masks[1, :, 1:3] = True  # person, score 0.5: all of it under the car -> dropped
    ids, segments = panoptic_prediction(semantic, {"masks": masks, "labels": torch.tensor([2, 0]),
                                                   "scores": torch.tensor([0.9, 0.5])})
    assert [(s["category_id"]) for s in segments] == [13, 0]
    assert (ids[:, :3] == 1).all() and (ids[:, 3:] == 2).all()


def test_bad_inputs_name_the_file_and_leave_nothing(motion_root, phase_one, tmp_path, open_set_data, micro_config, capsys):
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(motion_root, unlabelled, ignore=shutil.ignore_patterns(CACHE_DIR))
    (unlabelled / "train" / "motion_truth.json").unlink()
    run = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="motion_truth.json or motion_labels.json"):
        train(cfg_of(), run, unlabelled, progress=False)
    assert not run.exists()
    # a given flow folder with a missing PNG, then with a PNG of the wrong size
    flow = tmp_path / "flow"
    shutil.copytree(motion_root / "train" / CACHE_DIR, flow)
    shutil.copytree(motion_root / "test" / CACHE_DIR, flow, dirs_exist_ok=True)
    (flow / "flow_suppressed" / "0001" / "000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"0001/000002.png: missing \(1 of the 6"):
        train(cfg_of(f"data.flow_dir={flow}"), run, motion_root, progress=False)
    cv2.imwrite(str(flow / "flow_suppressed" / "0001" / "000000.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="flow PNG is 10x10, expected a 96x64"):
        train(cfg_of(f"data.flow_dir={flow}"), run, motion_root, progress=False)
    assert not run.exists()
    # phase 2 without its phase-1 run, and pointed at a run of another model
    with pytest.raises(ConfigError, match="train.init_from"):
        cfg_of("model.phase=2")
    other = tmp_path / "prototype_run"
    train(micro_config("prototype", "train.iters=1"), other, open_set_data, progress=False)
    with pytest.raises(RunError, match=r"prototype_run/config.yaml: train.init_from is a run of model 'prototype'"):
        train(cfg_of("model.phase=2", f"train.init_from={other}"), run, motion_root, progress=False)
    assert not run.exists()
    assert baseline_main(["train", "--model", "vcanet", "--config", "vcanet-tiny", "--data", str(motion_root),
                          "--out", str(run), "--set", "model.phase=2", "--set", f"train.init_from={other}",
                          "--quiet"]) == 2
    assert "config.yaml: train.init_from is a run of model 'prototype'" in capsys.readouterr().err


def test_semantic_labels_where_the_source_has_them(motion_root, phase_one, tmp_path):
    """With semantic/<seq>/ PNGs beside the sequences (the offline world's exports write them), phase 1
    trains the semantic head (its loss term is not the zero of a source without them) and PQ has stuff."""
    root = tmp_path / "with_semantic"
    shutil.copytree(motion_root, root)
    for split, seqs in (("train", ("0000", "0001")), ("test", ("0002",))):
        for seq in seqs:
            folder = root / split / "semantic" / seq
            folder.mkdir(parents=True)
            for i in range(6):
                ids = np.zeros((H, W), np.uint8)   # road
                ids[: H // 3] = 10                  # sky
                cv2.imwrite(str(folder / f"{i:06d}.png"), ids)
    run = tmp_path / "run"
    train(cfg_of(*LOW), run, root, progress=False)
    import csv

    def first_terms(run_dir: Path) -> dict:
        row = next(csv.DictReader((run_dir / "log.csv").open()))
        return {k: float(v) for k, v in (t.split("=") for t in row["terms"].split())}

    assert first_terms(run)["semantic"] > 0.1
    assert first_terms(phase_one)["semantic"] == 0.0    # the synthetic KITTI-MOTS folders have none
    result = evaluate_run(run, root, progress=False)
    assert result["overall"]["pq_stuff"] == result["overall"]["pq_stuff"]    # a number, not NaN
