"""vca-baseline train / eval / predict round trip on a tiny synthetic dataset."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from baselines.cli import build_parser, main
from baselines.config import save_config
from baselines.engine import build_model, save_checkpoint
from vca_data.datasets import OpenSetDataset
from vca_data.episodes import list_episodes
from vca_data.metrics.semantic import SemanticMetrics


def test_train_eval_predict_round_trip(open_set_data, micro_overrides, micro_config, tmp_path, capsys):
    run = tmp_path / "run"
    sets = [x for item in micro_overrides + ["train.iters=2", "model.second_stream=null"] for x in ("--set", item)]
    argv = ["train", "--model", "prototype", "--data", str(open_set_data), "--out", str(run), "--config", "tiny", "--quiet"]
    assert main(argv + sets) == 0
    out = capsys.readouterr().out
    assert "trained prototype for 2 steps" in out and str(run) in out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["second_stream"] is None and saved["train"]["iters"] == 2
    assert (run / "checkpoints" / "step_0000002.pt").is_file()
    assert main(argv + sets) == 2  # the folder holds a run: refuse to overwrite it
    assert "--resume" in capsys.readouterr().err

    saved = tmp_path / "eval_predictions"
    assert main(["eval", str(run), "--data", str(open_set_data), "--quiet", "--save-predictions", str(saved)]) == 0
    table = capsys.readouterr().out
    assert "parking" in table and "construction" in table and "CA-IoU" in table
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["step"] == 2
    assert set(metrics["scenarios"]) == {"parking", "construction"}
    assert metrics["overall"]["images"] == 6  # two test episodes of 3 frames
    assert 0.0 <= metrics["overall"]["miou"] <= 1.0
    # the saved predictions, scored as files against the dataset's labels, give eval's numbers
    from_files = SemanticMetrics()
    for sample in OpenSetDataset(open_set_data, split="test"):
        name = f"{Path(sample['meta']['episode']).stem}_{sample['meta']['frame']:06d}"
        pred = cv2.imread(str(saved / f"{name}_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
        score = np.load(saved / f"{name}_unknownScore.npy")
        assert pred.shape == score.shape == sample["label"].shape and score.dtype == np.float32
        from_files.update(pred, sample["label"])
    assert from_files.compute()["miou"] == pytest.approx(metrics["overall"]["miou"], abs=1e-12)
    assert len(list(saved.iterdir())) == 12

    episode = list_episodes(open_set_data, split="test")[0]
    image = tmp_path / "street.png"
    cv2.imwrite(str(image), np.full((40, 56, 3), 90, np.uint8))
    pred_dir = tmp_path / "pred"
    assert main(["predict", str(run), str(image), str(episode), "--out", str(pred_dir), "--quiet"]) == 0
    names = sorted(p.name for p in pred_dir.iterdir())
    kinds = ("semantic.png", "unknown.png", "labelTrainIds.png", "unknownScore.npy")
    assert names == sorted([f"street_{kind}" for kind in kinds]
                           + [f"{episode.stem}_{i:06d}_{kind}" for i in range(3) for kind in kinds])
    assert cv2.imread(str(pred_dir / "street_semantic.png")).shape == (40, 56, 3)
    train_ids = cv2.imread(str(pred_dir / "street_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
    score = np.load(pred_dir / "street_unknownScore.npy")
    assert train_ids.shape == score.shape == (40, 56) and score.dtype == np.float32
    assert set(np.unique(train_ids)) <= set(range(19)) | {254} and 0 <= score.min() <= score.max() <= 1


def test_predict_plain_image_needs_depth_model_error(micro_config, tmp_path, capsys):
    run = tmp_path / "depth_run"
    cfg = micro_config("prototype")
    save_config(cfg, run / "config.yaml")
    save_checkpoint(run, {"step": 0, "model": build_model(cfg).state_dict(), "model_name": "prototype"}, 1)
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "a.jpg" in err and "depth" in err and "model.second_stream=null" in err
    assert not (tmp_path / "o").exists()


def test_parser_lists_models_and_metrics():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {"train", "eval", "predict", "metrics", "paper"}
    args = parser.parse_args(["train", "--model", "prototype-cl", "--data", "d", "--out", "r", "--set", "a.b=1"])
    assert args.model == "prototype-cl" and args.set == ["a.b=1"]
