"""vca-baseline: train, evaluate and apply the open-set baselines of the VCA benchmark.

  vca-baseline train --model prototype|prototype-cl|segmenter|deeplabv3|sleeg|vcanet --data DATA --out RUN
                     [--config paper|tiny|YAML] [--resume] [--set key=value ...]
  vca-baseline eval RUN --data DATA [--split test] [--checkpoint PATH]
  vca-baseline predict RUN IMAGES... --out DIR [--checkpoint PATH]
  vca-baseline metrics ...             (saved predictions against labels; see `vca-baseline metrics -h`)
  vca-baseline paper --out REPORT [--scale demo|small|full] [--data DATA] [--resume]
                                       (the papers' tables and figures, beside the published ones)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from baselines.backbones import WeightsError
from baselines.config import MODEL_NAMES, ConfigError, build_config, config_dir
from baselines.registry import spec_of
from baselines.runs import RunError
from vca_data.metrics import cli as metrics_cli

EPILOG = """\
DATA is an open-set dataset folder as written by `vca-carla collect` (DATA/manifest.json and
DATA/episodes/*.h5). RUN is a run folder: RUN/config.yaml (the resolved configuration),
RUN/checkpoints/step_NNNNNNN.pt, RUN/log.csv (step, lr, loss and its terms, images/s, share of time
waiting for data) and RUN/metrics.json (evaluation results, and the periodic ones under "history").

Configs: `paper` (the paper's setting: two-stream ResNet-50 + FPN, ImageNet weights from the torch hub
cache, SGD lr 0.005, 15 epochs, steps at 6 and 8), `paper-cityscapes`, `tiny` (ResNet-18 from scratch,
small crops, 300 iterations: a few minutes on a CPU), or a YAML path; a YAML file may start from another
with `base: NAME`. `--set section.key=value` overrides one value (YAML syntax), e.g.
`--set train.iters=500 --set data.crop=[128,160] --set model.second_stream=null`.

Multi-GPU: torchrun --nproc_per_node N -m baselines.cli train ... (batch_size is per process).
"""


def default_config(model: str) -> str:
    """The packaged config a new run of `model` starts from without --config: <model>-paper where the
    family has one (vcanet-paper, sleeg-paper), else paper."""
    return f"{model}-paper" if (config_dir() / f"{model}-paper.yaml").is_file() else "paper"


def cmd_train(args: argparse.Namespace) -> int:
    from baselines.engine import TrainingDiverged, resume_config, train

    run = args.out
    if args.resume:
        if args.config is not None:
            raise ConfigError("--resume takes the run's own config.yaml; drop --config (use --set to change a value)")
        cfg = resume_config(run, args.set)
        if args.model is not None and args.model != cfg["model"]["name"]:
            raise ConfigError(f"{run} trains {cfg['model']['name']!r}, not {args.model!r}")
    else:
        if args.model is None:
            raise ConfigError("--model is required for a new run")
        cfg = build_config(args.config or default_config(args.model), args.set, model=args.model)
    try:
        summary = train(cfg, run, args.data, resume=args.resume, progress=not args.quiet, log_line=print)
    except TrainingDiverged as e:
        print(f"vca-baseline train: {e}", file=sys.stderr)
        return 1
    import torch.distributed as dist

    if summary.interrupted:
        print(f"interrupted after step {summary.steps}; checkpoint {summary.checkpoint}; "
              f"continue with: vca-baseline train --data {args.data} --out {run} --resume")
    elif not dist.is_initialized() or dist.get_rank() == 0:
        print(
            f"trained {cfg['model']['name']} for {summary.steps} steps in {summary.time_s:.0f} s "
            f"({summary.images_per_s:.1f} img/s, {summary.data_wait_share:.0%} waiting for data), "
            f"final loss {summary.final_loss:.4f}; run in {run} (checkpoint {summary.checkpoint.name if summary.checkpoint else '-'})"
        )
        if cfg["train"]["tensorboard"]:
            print(f"curves and prediction panels: tensorboard --logdir {run}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from baselines.evaluate import evaluate_run

    t0 = time.perf_counter()
    result = evaluate_run(args.run, args.data, split=args.split, checkpoint=args.checkpoint, device=args.device,
                          progress=not args.quiet, save_dir=args.save_predictions, fmt=args.format)
    title = f"{result['model']} at step {result['step']} on {result['split']} split of {args.data}"
    print(spec_of(result["model"]).table(result, title=title))
    headline = ", ".join(f"{k} {v * 100:.1f}" for k, v in result["headline"].items())
    print(f"{headline} on {result['images']} images in "
          f"{time.perf_counter() - t0:.0f} s; results in {Path(args.run) / 'metrics.json'}"
          + (f"; predictions in {args.save_predictions}" if args.save_predictions else ""))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from baselines.evaluate import predict

    written = predict(args.run, args.images, args.out, checkpoint=args.checkpoint, device=args.device,
                      progress=not args.quiet, frames=args.frames, panel=args.panel, sheet=args.sheet)
    count = sum(1 for p in written if p.name.endswith("_labelTrainIds.png"))
    if count == 0:   # a motion model (VCANet): panoptic / class-agnostic files, see vcanet_eval.PredictionWriter
        print(f"wrote {len(written)} files to {args.out}: panoptic.json + panoptic/ (COCO panoptic), class_agnostic.json "
              "(COCO instances, moving = 1, static = 2), class_agnostic_txt/ (KITTI-MOTS motion txt)"
              + (", panels *_panel.png (RGB | flow | truth | moving red / static blue | panoptic)" if args.panel else "")
              + (f"; all panels in {args.sheet}" if args.sheet else ""))
        return 0
    print(f"wrote {count} predictions to {args.out}: *_labelTrainIds.png (train ids, 254 unknown), "
          "*_unknownScore.npy (unknown probability) and colour previews *_semantic.png, *_unknown.png"
          + (", panels *_panel.png (RGB | truth | prediction | unknown probability)" if args.panel else "")
          + (f"; all panels in {args.sheet}" if args.sheet else ""))
    return 0


def cmd_paper(args: argparse.Namespace) -> int:
    from baselines.paper import PipelineError, run_pipeline

    try:
        run_pipeline(args.out, scale=args.scale, data=args.data, resume=args.resume, backend=args.backend,
                     host=args.host, port=args.port, progress=not args.quiet)
    except PipelineError as e:
        print(f"vca-baseline paper: {e}", file=sys.stderr)
        print(f"continue with: vca-baseline paper --out {args.out} --scale {args.scale}"
              + (f" --data {args.data}" if args.data else "") + " --resume", file=sys.stderr)
        return 1
    return 0


PAPER_EPILOG = """\
Stages (each a toolkit command, run with this interpreter; output in REPORT/logs/STAGE.log):
collect the train and test towns (seeds 0 and 100; skipped with --data), statistics (Table 3, Figure 5),
KITTI-MOTS-style motion export and flow proposals of both splits (Table 2), the prototype model with and
without the contrastive loss on full and reduced data (Table 5, Figure 7), the dendrogram of the
unknowns (Figure 4), a closed-set segmenter and SLEEG with the paper's and the code's options (SLEEG's
Table 2 form, beside the prototype model's unknown probability), VCANet phase 1 and phase 2 on
ego-flow-suppressed and raw flow (Table 4), prediction panels; then REPORT/report.md with the published
numbers beside ours, REPORT/report_sources.json (the file and key of every number) and
REPORT/provenance.json (commands, configs, wall times, versions).

Scales: demo (about 13 minutes on 2 CPU cores), small (about 1.5 hours on 2 cores), full (the papers'
configs and resolution; days, for a GPU and a CARLA server), test (the test suite's; meaningless numbers).
A killed run continues with the same command and --resume: finished stages are skipped, the interrupted
one is cleared and redone.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vca-baseline", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a baseline into a run folder (or resume one)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--model", choices=MODEL_NAMES, help="model family (required for a new run)")
    p.add_argument("--data", type=Path, required=True, help="open-set dataset folder (DATA/manifest.json)")
    p.add_argument("--out", type=Path, required=True, help="run folder to create, or to continue with --resume")
    names = ", ".join(sorted(q.stem for q in config_dir().glob("*.yaml")))
    p.add_argument("--config", default=None, help=f"packaged config ({names}) or a YAML path (default: paper)")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN from its newest checkpoint exactly (weights, optimiser, schedule, RNG, data order)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config value")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="mIoU (known classes) and CA-IoU (test unknowns) per scenario",
                       description="Evaluate a run's newest checkpoint; print the table and write RUN/metrics.json.")
    p.add_argument("run", type=Path)
    p.add_argument("--data", type=Path, required=True, help="open-set dataset folder")
    p.add_argument("--split", choices=["train", "test"], default=None, help="split to evaluate (default: the config's, test)")
    p.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint file instead of the newest")
    p.add_argument("--format", choices=["fishyscapes", "road-anomaly", "smiyc"], default=None,
                   help="DATA is an anomaly benchmark folder in its published layout (Fishyscapes Lost & Found / "
                        "Static, Road Anomaly, SegmentMeIfYouCan RoadAnomaly21 / RoadObstacle21) instead of an "
                        "open-set dataset; for anomaly detectors (SLEEG; the prototype model's unknown score)")
    p.add_argument("--device", default=None, help="cpu | cuda[:i] (default: cuda when available)")
    p.add_argument("--save-predictions", type=Path, default=None, metavar="DIR",
                   help="also write each frame's prediction to DIR as <episode>_<frame>_labelTrainIds.png and "
                   "_unknownScore.npy (see predict), for `vca-baseline metrics`")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="train-id maps, unknown scores and colour previews of images or episodes",
                       description="Predict images (PNG/JPG; RGB-only models) or every frame of episode files "
                                   "(.h5, with depth) and write, per image or frame <name> (episode frames: "
                                   "<episode>_<frame:06d>, the names of `vca-carla export`): <name>_labelTrainIds.png "
                                   "(uint8 train ids, 254 unknown), <name>_unknownScore.npy (float32 probability "
                                   "of the unknown class) and the previews <name>_semantic.png and "
                                   "<name>_unknown.png. Evaluate them with `vca-baseline metrics`, e.g. --kind "
                                   "anomaly --pred OUT --pred-suffix _unknownScore --gt EXPORT/gtFine --gt-suffix "
                                   "_gtFine_labelTrainIds --anomaly-label 254.")
    p.add_argument("run", type=Path)
    p.add_argument("images", type=Path, nargs="+", help="PNG/JPG images or episode files (.h5)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--frames", default=None, metavar="middle|I,J,...",
                   help="episode frames to predict: 'middle' or comma-separated indices (default: every frame)")
    p.add_argument("--panel", action="store_true",
                   help="also write <name>_panel.png: RGB | ground truth (from episodes) | prediction | unknown "
                        "probability (inferno: black 0, yellow 1)")
    p.add_argument("--sheet", type=Path, default=None, metavar="PNG",
                   help="stack every frame's panel into this one picture")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("paper", help="regenerate the papers' tables and figures on the offline world, beside the "
                       "published numbers", description="Collect, train, evaluate and write REPORT/report.md with "
                       "the VCA paper's Tables 2-5 and Figures 4, 5, 7 and SLEEG's Table 2 form.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=PAPER_EPILOG)
    p.add_argument("--out", type=Path, required=True, help="report folder (created; continued with --resume)")
    p.add_argument("--scale", choices=["demo", "small", "full", "test"], default="demo",
                   help="data size and training length (default: demo)")
    p.add_argument("--data", type=Path, default=None,
                   help="reuse an open-set dataset folder with train and test splits instead of collecting one")
    p.add_argument("--resume", action="store_true", help="continue REPORT: skip the stages that finished")
    p.add_argument("--backend", choices=["offline", "carla", "auto"], default="offline",
                   help="where to collect: the embedded offline world (default) or a CARLA server")
    p.add_argument("--host", default="localhost", help="CARLA server host (with --backend carla)")
    p.add_argument("--port", type=int, default=2000, help="CARLA server port (with --backend carla)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_paper)

    metrics_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, RunError, WeightsError, ValueError, FileNotFoundError, KeyError) as e:
        # bad inputs (EpisodeError and CatalogueError are ValueErrors): one line naming the file, exit 2
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"vca-baseline {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
