"""vca-analyze: prototypes, dendrograms and statistics of VCA datasets.

  vca-analyze stats DATA [--labels motion_labels.json ...] [--out DIR]
  vca-analyze prototypes DATA --out FILE.npz [--weights imagenet|PATH|run:RUN_DIR] [--max-images N]
  vca-analyze dendrogram (DATA | PROTOTYPES.npz) --out FIG.png|.svg|.pdf [--metric ...] [--method ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vca_data.io import atomic_write_json

EPILOG = """\
DATA is an open-set dataset folder as written by `vca-carla collect` (DATA/manifest.json and
DATA/episodes/*.h5). Weights: `imagenet` (default) takes torchvision's ResNet-50 ImageNet weights from
the torch hub cache (downloaded once when online); PATH is a local ResNet state dict (.pth);
`run:RUN_DIR` takes the appearance backbone of a run trained with `vca-baseline train`.
"""


def _add_feature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default="imagenet", help="imagenet | PATH to a state dict | run:RUN_DIR (default: imagenet)")
    p.add_argument("--arch", default="resnet50", choices=["resnet18", "resnet50"],
                   help="backbone for imagenet/PATH weights (default: resnet50, the paper's)")
    p.add_argument("--layer", default="layer4", choices=["layer2", "layer3", "layer4"],
                   help="backbone stage whose feature map is pooled (default: layer4, stride 32)")
    p.add_argument("--max-images", type=int, default=50, help="images averaged per class, N of equation 2 (default: 50)")
    p.add_argument("--min-pixels", type=int, default=16, help="smallest mask (pixels) that counts as seen (default: 16)")
    p.add_argument("--known", action="store_true", help="also build prototypes of the 19 known classes")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default: auto = cuda when available)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vca-analyze", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{stats,prototypes,dendrogram}")

    p = sub.add_parser("stats", help="pixels per class, frames per town/scenario/split, moving/static counts",
                       description="Dataset statistics, printed as tables and saved as figures and stats.json.")
    p.add_argument("data", type=Path, nargs="?", help="open-set dataset folder (optional when --labels is given)")
    p.add_argument("--labels", type=Path, nargs="*", default=[], help="motion_labels.json files (Table 2 counts; with ROOT/vca_flow/flow_suppressed PNGs "
                        "beside a file, also how far its moving and static instances visibly move)")
    p.add_argument("--out", type=Path, default=None, help="folder for figures and stats.json (default: DATA/stats)")
    p.add_argument("--frame-step", type=int, default=1, help="count pixels on every k-th frame (default: 1)")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("prototypes", help="masked-average-pool prototypes of every unknown class",
                       description="Prototypes (VCA paper eq. 2) of every unknown class of both splits.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True, help="output .npz")
    _add_feature_args(p)
    p.set_defaults(func=cmd_prototypes)

    p = sub.add_parser("dendrogram", help="dendrogram of prototypes (Figure 4) plus the distance matrix as CSV",
                       description="Agglomerative clustering of prototypes, from a dataset (prototypes are "
                                   "computed first) or from a prototypes .npz.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("source", type=Path, help="dataset folder or prototypes .npz")
    p.add_argument("--out", type=Path, required=True, help="figure: .png, .svg or .pdf (CSV written beside it)")
    p.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"])
    p.add_argument("--method", default="average", choices=["average", "single", "complete", "weighted", "ward"])
    p.add_argument("--save-prototypes", type=Path, default=None, help="also save computed prototypes (.npz)")
    _add_feature_args(p)
    p.set_defaults(func=cmd_dendrogram)
    return parser


def _compute(args: argparse.Namespace, data: Path):
    from analysis.extract import extract_prototypes
    from analysis.features import build_extractor
    from analysis.prototypes import class_specs

    if args.max_images < 1:
        raise ValueError(f"--max-images must be >= 1, got {args.max_images}")
    extractor, device, provenance = build_extractor(args.weights, args.layer, args.device, args.arch)
    print(f"features: {provenance['description']} on {device}")
    return extract_prototypes(data, extractor, class_specs(args.known), max_images=args.max_images,
                              batch_size=args.batch_size, device=device, min_pixels=args.min_pixels,
                              provenance=provenance)


def cmd_prototypes(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    protos = _compute(args, args.data)
    protos.save(args.out)
    counts = ", ".join(f"{n}: {c}" for n, c in zip(protos.names, protos.counts))
    print(f"{len(protos.names)} prototypes ({counts}) in {time.perf_counter() - t0:.1f} s -> {args.out}")
    return 0


def cmd_dendrogram(args: argparse.Namespace) -> int:
    from analysis.dendrogram import plot_dendrogram
    from analysis.prototypes import Prototypes

    if args.source.is_file():
        protos = Prototypes.load(args.source)
    else:
        protos = _compute(args, args.source)
        if args.save_prototypes:
            protos.save(args.save_prototypes)
    if len(protos.names) < 2:
        raise ValueError(f"{args.source}: only {len(protos.names)} class(es) have prototypes; a dendrogram needs two")
    fig, csv_path, _ = plot_dendrogram(protos, args.out, args.metric, args.method)
    print(f"dendrogram of {len(protos.names)} classes ({args.metric}, {args.method}) -> {fig}, distances -> {csv_path}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from analysis import stats as S

    if args.data is None and not args.labels:
        raise ValueError("give a dataset folder, --labels files, or both")
    out = args.out or ((args.data / "stats") if args.data else Path("stats"))
    result: dict = {}
    written = []
    if args.data is not None:
        ep = S.episode_statistics(args.data, args.frame_step)
        print(S.episode_tables(ep))
        written += [S.plot_pixels(ep, out / "pixels_per_class.png"), S.plot_frames(ep, out / "frames_per_town.png")]
        result["episodes"] = ep
    if args.labels:
        mo = S.motion_statistics(args.labels)
        print("\n" + S.motion_table(mo))
        written.append(S.plot_motion(mo, out / "motion_instances.png"))
        result["motion"] = mo
    atomic_write_json(out / "stats.json", result)
    print(f"statistics -> {out / 'stats.json'}; figures: {', '.join(str(w) for w in written)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from baselines.backbones import WeightsError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError, WeightsError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"vca-analyze {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

