"""`vca-carla`: collect open-set episodes (on a CARLA server or the offline world), list scenarios and
towns, export datasets to Cityscapes / KITTI-MOTS layouts, merge sharded datasets."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from vca_data.labels import (
    SCENARIOS,
    SPLITS,
    CatalogueError,
    default_catalogue,
    load_catalogue,
    normalize_town,
)

EPILOG_COLLECT = """\
Episodes are written to OUT/episodes/<town>_<scenario>_<seed>.h5 (HDF5, one per episode; see
vca_data.episodes) and listed in OUT/manifest.json when complete; OUT/episodes/<name>.tracks.json holds
the dynamic actors' per-frame states. Each town x scenario gets --episodes episodes with seeds
SEED..SEED+N-1. Towns and their splits: `vca-carla towns`; scenarios: `vca-carla scenarios`.
Example: vca-carla collect --split train --scenario all --episodes 2 --frames 20 --out data
"""

EPILOG_EXPORT = """\
cityscapes: OUT/leftImg8bit/<split>/<town>/<episode>_<frame>_leftImg8bit.png and OUT/gtFine/<split>/<town>/
  ..._gtFine_labelTrainIds.png (19 train ids, 254 unknown, 255 void), _gtFine_instanceIds.png (16-bit),
  _gtFine_fineIds.png (fine unknown class) and _gtFine_color.png.
kitti-mots: one sequence per episode (0000, 0001, ...; OUT/sequences.json names the episodes):
  image_02/<seq>/<frame>.png, instances_txt/<seq>.txt and instances/<seq>/ (obj_id = class*1000 + n,
  class 1 car, 2 pedestrian), depth/<seq>/ (uint16 metres*256), calib/<seq>.json, poses/<seq>.txt
  (3x4 world_from_camera, OpenCV camera axes) and motion_truth.json (the simulator's moving/static
  state of every track, in the annotator's motion_labels.json schema).
"""


def _names(text: str, allowed: list[str], what: str) -> list[str]:
    if text == "all":
        return list(allowed)
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"--{what}: empty list")
    for n in names:
        if n not in allowed:
            raise ValueError(f"--{what}: unknown {what} {n!r}; expected one of {', '.join(allowed)} or all")
    return names


def _towns(args, catalogue) -> list[str]:
    if args.split is not None:
        if args.town is not None:
            raise ValueError("give either --town or --split, not both")
        return list(catalogue.towns[args.split])
    if args.town is None:
        raise ValueError("give --town (a town, a comma list or all) or --split train|test")
    if args.town == "all":
        return catalogue.all_towns()
    towns = [normalize_town(t) for t in args.town.split(",") if t.strip()]
    for t in towns:
        catalogue.split_of_town(t)  # KeyError names the town
    return towns


def cmd_collect(args) -> int:
    from carla_scenarios import collector as col
    from carla_scenarios.weather import parse_weather

    catalogue = load_catalogue(args.catalogue) if args.catalogue else default_catalogue()
    towns = _towns(args, catalogue)
    scenarios = _names(args.scenario, list(SCENARIOS), "scenario")
    options = col.CollectOptions(
        frames=args.frames, frame_step=args.frame_step, width=args.width, height=args.height, fov=args.fov,
        dt=args.dt, vehicles=args.vehicles, walkers=args.walkers, parked=args.parked, tm_port=args.tm_port,
        layout=args.layout, weather=parse_weather(args.weather), traffic_radius=args.traffic_radius,
    )
    options.validate()
    specs = col.plan_episodes(towns, scenarios, args.episodes, args.seed, catalogue)
    if args.shard:
        specs = col.shard_episodes(specs, *col.parse_shard(args.shard))
    out = Path(args.out)

    client, description = col.connect(args.backend, args.host, args.port, connect_timeout=args.connect_timeout)
    print(f"backend: {description}", flush=True)
    backend = col.backend_name(description)

    done = set()
    if args.resume:
        col.adopt_finished(out, specs)
        done = col.completed_episodes(out)
    todo = [s for s in specs if s.filename not in done]
    if done:
        print(f"resume: {len(specs) - len(todo)} of {len(specs)} episodes already complete in {out}", flush=True)

    start = time.perf_counter()
    results, skipped = [], []
    for n, spec in enumerate(todo, 1):
        failure = None
        with tqdm(total=options.frames, desc=f"[{n}/{len(todo)}] {spec.filename}", unit="frame",
                  leave=False, dynamic_ncols=True) as bar:
            try:
                result = col.collect_episode(client, spec, options, out, backend, catalogue, progress=bar.update)
            except col.EpisodeSkipped as e:
                failure = ("skipped", e)
            except KeyboardInterrupt as e:
                failure = ("interrupted", e)
            except (RuntimeError, OSError) as e:
                failure = ("error", e)
        if failure is not None:  # reported after the progress bar is gone
            kind, e = failure
            if kind == "skipped":
                skipped.append(spec)
                print(f"skipped {spec.filename}: {e}", flush=True)
                continue
            if kind == "interrupted":
                print(f"interrupted during {spec.filename}; its partial file was removed. "
                      f"Rerun the same command with --resume to finish the dataset in {out}.", file=sys.stderr)
                return 130
            print(f"vca-carla: error: {spec.filename}: {e} (the episode was discarded; rerun the same command "
                  f"with --resume to continue)", file=sys.stderr)
            return 1
        results.append(result)
        note = f", {len(result.collisions)} collision event(s)" if result.collisions else ""
        if result.failed_spawns:
            note += ", failed spawns: " + ", ".join(f"{n} {k}" for k, n in result.failed_spawns.items())
        tqdm.write(f"{spec.filename}: {result.frames} frames, {len(result.unknown_objects)} unknown objects "
                   f"({len(result.seen_objects)} seen){note}")
    frames = sum(r.frames for r in results)
    pixels = sum(r.unknown_pixels for r in results)
    collisions = sum(len({c["other_id"] for c in r.collisions}) for r in results)
    print(f"collected {len(results)} episodes ({len(skipped)} skipped, {len(specs) - len(todo)} already done), "
          f"{frames} frames, {pixels} unknown-object pixels, {collisions} collisions, "
          f"{time.perf_counter() - start:.1f} s -> {out}/ (backend {backend})")
    return 0


def cmd_scenarios(args) -> int:
    catalogue = load_catalogue(args.catalogue) if args.catalogue else default_catalogue()
    if args.check:
        return _check_blueprints(args, catalogue)
    for scenario in SCENARIOS:
        print(scenario)
        for split in SPLITS:
            for c in catalogue.unknown_classes(split, scenario):
                bps = ", ".join(b.id for b in c.blueprints)
                print(f"  {split:5s}  fine id {c.fine_id:3d}  {c.name:18s} {bps}")
    return 0


def _check_blueprints(args, catalogue) -> int:
    from carla_scenarios import collector as col
    from carla_scenarios.check import check_blueprints

    client, description = col.connect(args.backend, args.host, args.port, connect_timeout=args.connect_timeout)
    print(f"backend: {description}, map {client.get_world().get_map().name}", flush=True)
    results = check_blueprints(client, catalogue)
    for r in results:
        attrs = "".join(f" {k}={v}" for k, v in r.attributes.items())
        print(f"  {'ok  ' if r.ok else 'FAIL'}  {r.unknown:18s} {r.blueprint}{attrs}: {r.message}")
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} of {len(results)} blueprints can be spawned" +
          ("; fix or remove the failing ones in the catalogue (--catalogue)" if failed else ""))
    return 1 if failed else 0


def cmd_towns(args) -> int:
    catalogue = load_catalogue(args.catalogue) if args.catalogue else default_catalogue()
    for split in SPLITS:
        print(f"{split:5s}  {' '.join(catalogue.towns[split])}")
    return 0


def cmd_export(args) -> int:
    from carla_scenarios import export

    if args.format == "cityscapes":
        n = export.export_cityscapes(Path(args.data), Path(args.out), args.split)
        print(f"exported {n} frames in the Cityscapes layout -> {args.out}/")
    else:
        seqs = export.export_kitti_mots(Path(args.data), Path(args.out), args.split,
                                        min_pixels=export.MIN_PIXELS if args.min_pixels is None else args.min_pixels)
        print(f"exported {len(seqs)} KITTI-MOTS sequences with motion_truth.json -> {args.out}/")
    return 0


def cmd_merge(args) -> int:
    from carla_scenarios import collector as col

    n = col.merge_datasets([Path(d) for d in args.dirs], Path(args.out), link=not args.copy)
    print(f"merged {n} episodes from {len(args.dirs)} datasets -> {args.out}/")
    return 0


def _backend_arguments(p) -> None:
    p.add_argument("--backend", default="auto", choices=("auto", "carla", "offline"),
                   help="auto (default): the CARLA server at host:port when anything listens there (waiting up to "
                        "--connect-timeout for it to answer), the offline world only when nothing does")
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, default=2000)
    p.add_argument("--connect-timeout", type=float, default=60.0,
                   help="seconds a server that accepts the connection may take to answer its first call, e.g. "
                        "while it loads a map; then the command stops with an error (default 60)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vca-carla", description=__doc__)
    parser.add_argument("--catalogue", help="unknown-object catalogue JSON (default: the packaged one)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the collector does")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="collect episodes", epilog=EPILOG_COLLECT,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--town", help="town (Town01 or Town1), comma list, or all")
    p.add_argument("--split", choices=SPLITS, help="all towns of a split (instead of --town)")
    p.add_argument("--scenario", default="all", help="barrier, construction, parking, comma list, or all (default)")
    _backend_arguments(p)
    p.add_argument("--tm-port", type=int, default=8000, help="Traffic Manager port (default 8000)")
    p.add_argument("--episodes", type=int, default=1, help="episodes per town and scenario (default 1)")
    p.add_argument("--frames", type=int, default=20, help="recorded frames per episode (default 20)")
    p.add_argument("--frame-step", type=int, default=2, help="record every k-th simulation tick (default 2)")
    p.add_argument("--dt", type=float, default=0.05, help="simulation time step in seconds (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode (default 0)")
    p.add_argument("--out", default="data", help="dataset folder (default data)")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--fov", type=float, default=90.0, help="horizontal field of view, degrees")
    p.add_argument("--vehicles", type=int, help="NPC vehicles per episode (default: drawn per town)")
    p.add_argument("--walkers", type=int, help="NPC walkers per episode (default: drawn per town)")
    p.add_argument("--parked", type=int, default=0,
                   help="parked cars along the kerbs of the ego's road, up to 150 m ahead, on both sides: "
                        "static tracks for the motion benchmark, as on KITTI's streets (default 0)")
    p.add_argument("--weather", default="random",
                   help="random (default): every CARLA preset, its parameters perturbed per episode; or a comma "
                        "list of presets to draw from (e.g. ClearNoon,CloudyNoon: KITTI's dry daylight; a dry "
                        "preset gets no rain added, whose streaks would be noise in optical flow)")
    p.add_argument("--traffic-radius", type=float, metavar="M",
                   help="NPC vehicles and walkers start within M metres of the ego's road ahead instead of "
                        "anywhere in the town: close, visible motion for the motion track (default: anywhere)")
    p.add_argument("--layout", default="ours", choices=("ours", "vca-authors"),
                   help="ours (default): our construction rectangle and parking cluster; vca-authors: the VCA "
                        "authors' layouts from their scenario_runner fork (construction: warning sign, debris and "
                        "an L of cones; parking: a container, a shopping cart and a crossing walker)")
    p.add_argument("--resume", action="store_true",
                   help="skip episodes the manifest lists as complete, redo partial ones")
    p.add_argument("--shard", help="i/N: collect only shard i of N (disjoint parts; merge with `vca-carla merge`)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("scenarios", help="list scenarios and their unknown classes per split")
    p.add_argument("--check", action="store_true",
                   help="spawn every catalogue blueprint on the backend and say whether it has a box and pixels "
                        "(a static.prop.mesh with a wrong mesh_path spawns empty); exit code 1 if any fails")
    _backend_arguments(p)
    p.set_defaults(func=cmd_scenarios)
    p = sub.add_parser("towns", help="list towns per split")
    p.set_defaults(func=cmd_towns)

    p = sub.add_parser("export", help="export a dataset to a Cityscapes or KITTI-MOTS style layout",
                       epilog=EPILOG_EXPORT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="dataset folder (with manifest.json)")
    p.add_argument("--format", required=True, choices=("cityscapes", "kitti-mots"))
    p.add_argument("--out", required=True)
    p.add_argument("--split", choices=SPLITS, help="only episodes of this split")
    p.add_argument("--min-pixels", type=int, default=None, metavar="N",
                   help="kitti-mots: an object under N pixels in a frame is an ignore region there (id 10000), "
                        "as KITTI-MOTS leaves what is too small to annotate (default 64; 0 keeps every object)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("merge", help="merge dataset folders (e.g. shards) into one")
    p.add_argument("dirs", nargs="+", help="dataset folders")
    p.add_argument("--out", required=True)
    p.add_argument("--copy", action="store_true", help="copy files instead of hard-linking them")
    p.set_defaults(func=cmd_merge)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, KeyError, CatalogueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"vca-carla: error: {msg}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # CollectError and server errors outside an episode
        print(f"vca-carla: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
