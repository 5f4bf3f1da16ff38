"""`vca-baseline paper`: one command that regenerates the VCA paper's tables and figures (Tables 2-5,
Figures 4, 5 and 7) and SLEEG's Table 2 on the embedded offline world (or a CARLA server), and writes
them beside the published numbers in REPORT/report.md.

The pipeline is a list of stages; each stage is one or more of the toolkit's own commands
(`vca-carla collect`, `vca-annotate propose`, `vca-baseline train` ...), run as subprocesses with the
same interpreter, so every cell of the report can be rerun by hand from REPORT/provenance.json. A stage
that finished leaves REPORT/stages/<name>.json (its commands, wall time); a rerun with --resume skips
those whose commands are unchanged, and clears and redoes a stage that was interrupted. Each stage's
output goes to REPORT/logs/<name>.log. The report is built from the files the stages wrote (each run's
metrics.json, the statistics' stats.json, the anomaly metrics' JSON), and every number in it is listed
with the file and key it came from in REPORT/report_sources.json.

Scales: `demo` (a few minutes of CPU per model, about 13 minutes in all on 2 cores), `small` (the CPU
configs at their own length on more data, about 1.5 hours on 2 cores), `full` (the paper's configs and
resolution, for a GPU; days of collection and training) and `test` (the test suite's: seconds per
stage, numbers meaningless).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from vca_data.io import atomic_write_json, atomic_write_text

#: console scripts (pyproject.toml [project.scripts]) and the module each runs
SCRIPTS = {"vca-carla": "carla_scenarios.cli", "vca-annotate": "annotator.cli", "vca-analyze": "analysis.cli",
           "vca-baseline": "baselines.cli"}
TRAIN_SEED, TEST_SEED = 0, 100
SCENARIOS = ("barrier", "construction", "parking")


class PipelineError(RuntimeError):
    """A stage's command failed, or REPORT does not fit the request; the message names the log / file."""


@dataclass(frozen=True)
class Scale:
    name: str
    expected: str                    # printed at start
    episodes: int                    # per town and scenario
    frames: int                      # per episode
    width: int
    height: int
    parked: int                      # parked cars per episode (static cars for the motion track)
    iters: dict | None               # model family -> train.iters; None: the configs' own length
    reduced_step: int                # data.frame_step of the reduced-data cells of Table 5
    configs: dict                    # cell -> packaged config
    dendrogram_images: int
    differs: str                     # what differs from the papers, one line for every table
    extra: dict = field(default_factory=dict)   # model family -> more --set options at this scale
    # the motion track's own collection: (frames, width, height, vehicles, walkers) per town and scenario;
    # busier and larger than the open-set data so that moving objects cover hundreds of pixels, as in
    # KITTI-MOTS (at 320x180 with the towns' default traffic their median is 15 pixels)
    motion: tuple = (20, 640, 360, 30, 30)


#: The motion track's scene, as KITTI's: dry daylight (rain streaks are noise in optical flow) and the
#: traffic and walkers starting within 50 m of the ego's road, so that the moving objects are close.
MOTION_SCENE = ("--weather", "ClearNoon,CloudyNoon,ClearSunset", "--traffic-radius", "50")

CPU_CONFIGS = {"prototype": "tiny", "segmenter": "tiny", "sleeg-paper": "sleeg-tiny", "sleeg-code": "sleeg-code-tiny",
               "vcanet": "vcanet-tiny"}
PAPER_CONFIGS = {"prototype": "paper", "segmenter": "paper", "sleeg-paper": "sleeg-paper", "sleeg-code": "sleeg-code",
                 "vcanet": "vcanet-paper"}

SCALES = {
    "test": Scale("test", "about 3 minutes (the test suite's scale; the numbers mean nothing)", 1, 3, 160, 90, 4,
                  {"prototype": 2, "segmenter": 2, "sleeg": 2, "vcanet": 2, "vcanet2": 2}, 2, CPU_CONFIGS, 3,
                  "3 frames per episode at 160x90, 2 training steps per model",
                  {"vcanet": ["--set", "data.crop=[80,144]"]}, (3, 160, 90, 10, 5)),
    "demo": Scale("demo", "about 13 minutes on 2 CPU cores", 1, 20, 320, 180, 6,
                  {"prototype": 80, "segmenter": 100, "sleeg": 100, "vcanet": 80, "vcanet2": 50}, 6, CPU_CONFIGS, 20,
                  "offline world, 1 episode of 20 frames per town and scenario at 320x180, CPU-sized models from "
                  "scratch (ResNet-18, no ImageNet weights), 50-100 training steps (a third of the CPU configs' "
                  "length); VCANet evaluated on every third test frame",
                  {"vcanet": ["--set", "eval.frame_step=3"]}, (16, 640, 360, 30, 30)),
    "small": Scale("small", "about 1.5 hours on 2 CPU cores (minutes on a GPU)", 2, 60, 320, 180, 8, None, 8,
                   CPU_CONFIGS, 50,
                   "offline world, 2 episodes of 60 frames per town and scenario at 320x180, CPU-sized models from "
                   "scratch (ResNet-18, no ImageNet weights) at their configs' length (200-300 steps)",
                   {}, (60, 640, 360, 30, 30)),
    "full": Scale("full", "days: 10 episodes of 600 frames per town and scenario at 1280x720 and the paper's schedules; "
                  "meant for a CARLA server and a GPU", 10, 600, 1280, 720, 12, None, 25, PAPER_CONFIGS, 50,
                  "the papers' configs (ResNet-50 with ImageNet weights, their schedules and resolutions) on the "
                  "offline world or a CARLA server instead of the papers' CARLA 0.9.x towns / Cityscapes / KITTI",
                  {}, (600, 1280, 720, 80, 60)),
}


@dataclass
class Stage:
    name: str
    title: str
    commands: list[list[str]]
    outputs: list[Path] = field(default_factory=list)   # cleared before the stage (re)runs
    runs: list[Path] = field(default_factory=list)      # run folders whose config.yaml provenance records


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------

def _sets(**values) -> list[str]:
    out = []
    for key, value in values.items():
        out += ["--set", f"{key.replace('__', '.')}={value}"]
    return out


def _length(scale: Scale, family: str) -> list[str]:
    """--set options giving a run `scale`'s length for `family` (milestones at 2/3 and 7/8 of it), and
    the scale's other options for the family."""
    extra = list(scale.extra.get(family.rstrip("2"), []))
    if scale.iters is None:
        return extra
    n = scale.iters[family]
    return extra + _sets(train__epochs="null", train__iters=n,
                 train__milestones=f"[{max(1, 2 * n // 3)},{max(2, 7 * n // 8)}]",
                 train__warmup_iters=min(20, n // 5), train__checkpoint_every=n)


def _train(model: str, config: str, data: Path, run: Path, extra: list[str]) -> list[str]:
    return ["vca-baseline", "train", "--model", model, "--config", config, "--data", str(data), "--out", str(run),
            "--quiet", *extra]


def plan(report: Path, scale: Scale, data: Path | None = None, backend: str = "offline",
         host: str = "localhost", port: int = 2000) -> list[Stage]:
    """The stages of a report at `scale` (module docstring); `data`: reuse an open-set dataset folder."""
    R = report
    D = data if data is not None else R / "data"
    mots, runs, metrics, figures = R / "mots", R / "runs", R / "metrics", R / "figures"
    cs = R / "cityscapes_test"
    c = scale.configs
    stages: list[Stage] = []
    MW = R / "motion_world"

    def collect(split: str, seed: int, out: Path, frames: int, width: int, height: int, *traffic: str) -> list[str]:
        cmd = ["vca-carla", "collect", "--backend", backend, "--split", split, "--scenario", "all",
               "--episodes", str(scale.episodes), "--frames", str(frames), "--width", str(width),
               "--height", str(height), "--parked", str(scale.parked), *traffic, "--seed", str(seed), "--out", str(out)]
        if backend != "offline":
            cmd += ["--host", host, "--port", str(port)]
        return cmd + ["--resume"]   # an interrupted collection is continued by --resume, so nothing is cleared

    if data is None:
        for split, seed in (("train", TRAIN_SEED), ("test", TEST_SEED)):
            stages.append(Stage(f"collect_{split}", f"collect the {split} towns (seed {seed})",
                                [collect(split, seed, D, scale.frames, scale.width, scale.height)]))
    frames, width, height, vehicles, walkers = scale.motion
    for split, seed in (("train", TRAIN_SEED), ("test", TEST_SEED)):
        stages.append(Stage(f"collect_motion_{split}", f"collect the motion track's {split} towns ({width}x{height}, "
                            f"{vehicles} vehicles, {walkers} walkers)",
                            [collect(split, seed, MW, frames, width, height, "--vehicles", str(vehicles),
                                     "--walkers", str(walkers), *MOTION_SCENE)]))
    stages += [
        Stage("stats", "Table 3 and Figure 5: images per split, pixels per class",
              [["vca-analyze", "stats", str(D), "--out", str(R / "stats")]], [R / "stats"]),
        Stage("export_motion", "export the motion sequences (KITTI-MOTS form) of both splits",
              [["vca-carla", "export", str(MW), "--format", "kitti-mots", "--split", s, "--out", str(mots / s)]
               for s in ("train", "test")], [mots]),
        Stage("proposals", "moving / static proposals from ego-flow-suppressed flow (the flow VCANet reads)",
              [["vca-annotate", "propose", str(mots / s), "--flow-dir", str(mots / s / "vca_flow"), "--quiet"]
               for s in ("train", "test")]),
        Stage("motion_stats", "Table 2: moving / static instances (simulator truth and proposals)",
              [["vca-analyze", "stats", "--labels", str(mots / s / f), "--out", str(R / f"motion_stats_{s}_{f[:-5]}")]
               for s in ("train", "test") for f in ("motion_truth.json", "motion_labels.json")],
              [R / f"motion_stats_{s}_{f}" for s in ("train", "test") for f in ("motion_truth", "motion_labels")]),
    ]
    # Table 5 and Figure 7: the prototype model without / with the contrastive loss, full / reduced data
    for model in ("prototype", "prototype-cl"):
        for variant, extra in (("full", []), ("reduced", _sets(data__frame_step=scale.reduced_step))):
            name = f"{model.replace('-', '_')}_{variant}"
            run = runs / name
            cmds = [_train(model, c["prototype"], D, run, _length(scale, "prototype") + extra),
                    ["vca-baseline", "eval", str(run), "--data", str(D), "--quiet"]]
            if name == "prototype_full":
                cmds[1] += ["--save-predictions", str(R / "predictions" / name)]
            stages.append(Stage(name, f"Table 5: {model}, {variant} training data", cmds,
                                [run, R / "predictions" / name], [run]))
    stages += [
        Stage("dendrogram", "Figure 4: dendrogram of the train and test unknowns (prototype run's backbone)",
              [["vca-analyze", "dendrogram", str(D), "--weights", f"run:{runs / 'prototype_full'}", "--layer", "layer3",
                "--max-images", str(scale.dendrogram_images), "--out", str(figures / "dendrogram.png")]]),
        Stage("panels_prototype", "prediction panels of the prototype model, one test frame per scenario",
              [["vca-baseline", "predict", str(runs / "prototype_full"), f"@test-episodes:{D}",
                "--frames", "middle", "--sheet", str(figures / "panels_prototype.png"), "--out",
                str(R / "panels_prototype"), "--quiet"]], [R / "panels_prototype"]),
        Stage("export_cityscapes", "Cityscapes-style labels of the test split (for the anomaly metrics)",
              [["vca-carla", "export", str(D), "--format", "cityscapes", "--split", "test", "--out", str(cs)]], [cs]),
        Stage("segmenter", "closed-set segmenter (unknowns ignored) that SLEEG extends",
              [_train("segmenter", c["segmenter"], D, runs / "segmenter", _length(scale, "segmenter"))],
              [runs / "segmenter"], [runs / "segmenter"]),
    ]
    for options in ("paper", "code"):
        run = runs / f"sleeg_{options}"
        stages.append(Stage(f"sleeg_{options}", f"SLEEG, {options} options, on the segmenter", [
            _train("sleeg", c[f"sleeg-{options}"], D, run,
                   _length(scale, "sleeg") + _sets(model__segmenter=f"run:{runs / 'segmenter'}")),
            ["vca-baseline", "eval", str(run), "--data", str(D), "--quiet", "--save-predictions",
             str(R / "predictions" / run.name)]], [run, R / "predictions" / run.name], [run]))
    anomaly = []
    for name, suffix in (("prototype_full", "_unknownScore"), ("sleeg_paper", "_anomalyScore"),
                         ("sleeg_code", "_anomalyScore")):
        anomaly.append(["vca-baseline", "metrics", "--kind", "anomaly", "--pred", str(R / "predictions" / name),
                        "--pred-suffix", suffix, "--gt", str(cs / "gtFine"), "--gt-suffix", "_gtFine_labelTrainIds",
                        "--anomaly-label", "254", "--no-progress", "--out", str(metrics / f"anomaly_{name}.json")])
    stages.append(Stage("anomaly_metrics", "SLEEG Table 2 form: AP / AUROC / FPR@95 of each unknown score",
                        anomaly, [metrics]))
    p1 = runs / "vcanet_phase1"
    stages.append(Stage("vcanet_phase1", "VCANet phase 1: panoptic (instance + semantic heads)", [
        _train("vcanet", c["vcanet"], mots, p1, _length(scale, "vcanet"))], [p1], [p1]))
    for flow in ("suppressed", "raw"):
        run = runs / f"vcanet_{flow}"
        stages.append(Stage(f"vcanet_{flow}", f"Table 4: VCANet phase 2 (class-agnostic head) on {flow} flow", [
            _train("vcanet", c["vcanet"], mots, run,
                   _length(scale, "vcanet2") + _sets(model__phase=2, train__init_from=p1, data__flow=flow)),
            ["vca-baseline", "eval", str(run), "--data", str(mots), "--quiet"]], [run], [run]))
    stages.append(Stage("panels_vcanet", "VCANet prediction panels (EFS run), the middle frame of each test sequence",
                        [["vca-baseline", "predict", str(runs / "vcanet_suppressed"), str(mots / "test"), "--frames",
                          "middle", "--sheet", str(figures / "panels_vcanet.png"), "--out", str(R / "panels_vcanet"),
                          "--quiet"]], [R / "panels_vcanet"]))
    return stages


def _expand(argv: list[str]) -> list[str]:
    """An argument @test-episodes:DATA becomes one test episode file per scenario (first test town),
    read from the manifest when the stage runs (the data may not exist when the plan is made)."""
    out = []
    for a in argv:
        if a.startswith("@test-episodes:"):
            out += [str(p) for p in pick_test_episodes(Path(a.split(":", 1)[1]))]
        else:
            out.append(a)
    return out


def pick_test_episodes(data: Path) -> list[Path]:
    """One complete test episode per scenario, of the first test town of DATA/manifest.json."""
    manifest = data / "manifest.json"
    try:
        doc = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PipelineError(f"{manifest}: cannot read the dataset's manifest ({e})") from None
    episodes = [e for e in doc.get("episodes", []) if e.get("split") == "test" and e.get("complete", True)]
    if not episodes:
        raise PipelineError(f"{manifest}: no complete test episodes")
    town = sorted(e["town"] for e in episodes)[0]
    picked = {}
    for e in sorted(episodes, key=lambda e: e["file"]):
        if e["town"] == town:
            picked.setdefault(e["scenario"], data / e["file"])
    return [picked[s] for s in sorted(picked)]


# ---------------------------------------------------------------------------------------------
# Running the stages
# ---------------------------------------------------------------------------------------------

def shell_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("vca-toolkit", "torch", "torchvision", "numpy", "opencv-python-headless", "pybullet"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    try:
        root = Path(__file__).resolve().parents[1]
        out["git_commit"] = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


def _clear(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _die_with_parent() -> None:
    """In the child: receive SIGKILL when the pipeline process dies (Linux), so a killed report leaves no
    orphan training behind that would write into the stage --resume clears."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_command(argv: list[str], log) -> str:
    """Run one toolkit command (its console-script name first) with this interpreter; output -> log."""
    argv = _expand(argv)
    module = SCRIPTS[argv[0]]
    log.write(f"$ {shell_line(argv)}\n")
    log.flush()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", module, *argv[1:]], stdout=log, stderr=subprocess.STDOUT, env=env,
                          preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    if proc.returncode != 0:
        raise PipelineError(f"exit status {proc.returncode}: {shell_line(argv)}")
    return shell_line(argv)


def run_pipeline(report: str | Path, scale: str = "demo", data: str | Path | None = None, resume: bool = False,
                 backend: str = "offline", host: str = "localhost", port: int = 2000, progress: bool = True,
                 say=print) -> Path:
    """Run (or continue, with `resume`) every stage of the report at `scale` and write REPORT/report.md."""
    if scale not in SCALES:
        raise ValueError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    sc = SCALES[scale]
    report = Path(report)
    data = Path(data) if data is not None else None
    if data is not None and not (data / "manifest.json").is_file():
        raise FileNotFoundError(f"{data}: no manifest.json (expected an open-set dataset written by vca-carla collect)")
    prov_path = report / "provenance.json"
    if prov_path.is_file():
        if not resume:
            raise PipelineError(f"{report}: holds a report already ({prov_path}); continue it with --resume or "
                                "choose another --out")
        try:
            prov = json.loads(prov_path.read_text())
        except json.JSONDecodeError as e:
            raise PipelineError(f"{prov_path}: not JSON ({e}); remove it to start over") from None
        if prov.get("scale") != scale:
            raise PipelineError(f"{report}: was made at --scale {prov.get('scale')}, not {scale}; choose another --out")
        recorded = prov.get("data")
        if recorded != (str(data) if data is not None else None):
            raise PipelineError(f"{report}: was made with --data {recorded}, not {data}")
    elif report.exists() and any(report.iterdir()):
        raise PipelineError(f"{report}: exists and is not a report folder (no provenance.json); choose another --out")
    else:
        prov = {"scale": scale, "data": str(data) if data is not None else None, "backend": backend,
                "seeds": {"train_collection": TRAIN_SEED, "test_collection": TEST_SEED, "training": "each config's"},
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": {}}
    prov["versions"] = _versions()
    report.mkdir(parents=True, exist_ok=True)
    for sub in ("stages", "logs", "figures"):
        (report / sub).mkdir(exist_ok=True)
    stages = plan(report, sc, data, backend, host, port)
    say(f"vca-baseline paper: {len(stages)} stages at --scale {scale} ({sc.expected}); report in {report / 'report.md'}, "
        f"logs in {report / 'logs'}")
    atomic_write_json(prov_path, prov)
    from tqdm import tqdm

    bar = tqdm(stages, desc="paper", unit="stage", disable=not progress, dynamic_ncols=True)
    t_all = time.perf_counter()
    for k, stage in enumerate(bar, 1):
        marker = report / "stages" / f"{stage.name}.json"
        lines = [shell_line(c) for c in stage.commands]
        bar.set_postfix_str(stage.name)
        if marker.is_file():
            try:
                done = json.loads(marker.read_text())
            except json.JSONDecodeError:
                done = {}
            if done.get("commands") == lines:
                say(f"[{k}/{len(stages)}] {stage.name}: done earlier ({done.get('wall_s', 0):.0f} s), skipped")
                continue
        for path in stage.outputs:
            _clear(path)
        log_path = report / "logs" / f"{stage.name}.log"
        t0 = time.perf_counter()
        ran = []
        with open(log_path, "w") as log:
            for argv in stage.commands:
                try:
                    ran.append(run_command(argv, log))
                except PipelineError as e:
                    log.flush()
                    tail = log_path.read_text().strip().splitlines()[-3:]
                    raise PipelineError(f"stage {stage.name} failed ({e}); see {log_path}" +
                                        ("".join(f"\n    {t}" for t in tail) if tail else "")) from None
        wall = time.perf_counter() - t0
        entry = {"title": stage.title, "commands": lines, "ran": ran, "wall_s": round(wall, 1),
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "log": str(log_path),
                 "configs": {str(r): str(r / "config.yaml") for r in stage.runs}}
        prov["stages"][stage.name] = entry
        atomic_write_json(prov_path, prov)
        atomic_write_json(marker, entry)
        say(f"[{k}/{len(stages)}] {stage.name}: {stage.title} ({wall:.0f} s)")
    bar.close()
    path = write_report(report, sc, stages)
    prov["report_wall_s"] = round(sum(e["wall_s"] for e in prov["stages"].values()), 1)
    atomic_write_json(prov_path, prov)
    say(f"report -> {path} (this call {time.perf_counter() - t_all:.0f} s; all stages "
        f"{prov['report_wall_s']:.0f} s); provenance (commands, configs, versions) -> {prov_path}")
    return path


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

#: The published figures (VCA paper: Siam et al., "Video Class Agnostic Segmentation Benchmark for
#: Autonomous Driving", CVPR-W 2021, ../shared/papers/vca-benchmark.txt; SLEEG: Tu et al., AAAI 2023,
#: ../shared/papers/sleeg.txt), in percent except counts.
PUBLISHED = {
    "table2": {"KITTI": {"moving": 5788, "static": 6094}, "Cityscapes": {"moving": 41334, "static": 43981}},
    "table3": {"train": {"towns": "Town01, Town02, Town03", "images": 57972},
               "test": {"towns": "Town07, Town10", "images": 1886}},
    # Table 4, VCANet trained on KITTI + Cityscapes (KC) and tested on KITTI (K); PQ of the panoptic heads
    "table4": {"without EFS": {"sq": 82.4, "rq": 72.2, "caq": 59.5}, "with EFS": {"sq": 82.4, "rq": 75.4, "caq": 62.1},
               "pq": {"pq": 56.4, "pq_things": 49.9, "pq_stuff": 61.1}},
    "table5": {("No CL", "full"): (45.7, 41.9), ("CL", "full"): (44.2, 37.2),
               ("No CL", "reduced"): (38.5, 6.5), ("CL", "reduced"): (41.7, 16.0)},
    "figure7": {"barrier": 22.1, "construction": 41.4, "parking": 27.0},
    # SLEEG Table 2: AP, AUROC, FPR@95 (the paper's order FPR, AUROC, AP reordered)
    "sleeg_table2": {"FS Lost & Found (val)": (70.90, 98.30, 10.90), "FS Static (val)": (77.23, 99.22, 3.85),
                     "Road Anomaly (test)": (38.10, 86.60, 42.60)},
    "sleeg_msp": {"FS Lost & Found (val)": (6.02, 86.99, 45.63), "FS Static (val)": (14.24, 88.94, 34.10),
                  "Road Anomaly (test)": (20.59, 73.76, 68.44)},
}


class Cells:
    """Numbers of the report with their source (file, key path), for REPORT/report_sources.json."""

    def __init__(self, report: Path):
        self.report = report
        self.cells: list[dict] = []
        self._docs: dict[Path, dict] = {}

    def load(self, path: Path) -> dict:
        if path not in self._docs:
            try:
                self._docs[path] = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise PipelineError(f"{path}: cannot read a stage's result ({e}); rerun with --resume") from None
        return self._docs[path]

    def get(self, table: str, path: Path, keys: list, percent: bool = True, row: str = "", default=None) -> str:
        """The formatted number at `keys` of the JSON file `path` (`default` where a key is absent, e.g. a
        count of zero that the statistics leave out), recorded as a cell of `table`."""
        value = self.load(path)
        for k in keys:
            if isinstance(value, dict):
                value = value.get(k)
            elif isinstance(value, list) and isinstance(k, int) and 0 <= k < len(value):
                value = value[k]
            else:
                value = None
        if value is None:
            value = default
        text = format_value(value, percent)
        self.cells.append({"table": table, "row": row, "file": str(path.relative_to(self.report)), "keys": keys,
                           "percent": percent, "default": default, "value": value, "text": text})
        return text


def format_value(value, percent: bool) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if percent:
        return f"{100 * float(value):.1f}"
    return f"{int(value)}" if float(value).is_integer() else f"{float(value):.1f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _copy_figure(src: Path, dst: Path) -> str | None:
    if not src.is_file():
        return None
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
    return f"figures/{dst.name}"


def plot_scenarios(ours: dict[str, float], published: dict[str, float], out: Path) -> Path:
    """Figure 7: CA-IoU per scenario, ours beside the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from vca_data.io import atomic_path

    names = list(published)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(5, 3), dpi=120)
    ax.bar(x - 0.2, [published[n] for n in names], 0.4, label="paper (CARLA, ResNet-50)", color="#999999")
    ax.bar(x + 0.2, [100 * ours.get(n, float("nan")) for n in names], 0.4, label="ours", color="#d62728")
    ax.set_xticks(x, names)
    ax.set_ylabel("CA-IoU (%)")
    ax.set_title("Figure 7: CA-IoU per scenario")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def write_report(report: Path, scale: Scale, stages: list[Stage]) -> Path:
    """REPORT/report.md (and report_sources.json) from the stages' result files."""
    R = report
    cells = Cells(R)
    prov = json.loads((R / "provenance.json").read_text())
    walls = {n: e["wall_s"] for n, e in prov["stages"].items()}
    fig = R / "figures"
    m_frames, m_width, m_height, vehicles, walkers = scale.motion
    motion_text = (f"{scale.episodes} episode(s) of {m_frames} frames per town and scenario at {m_width}x{m_height}, "
                   f"{vehicles} vehicles and {walkers} walkers starting within 50 m of the ego's road, dry daylight")
    md = [f"# The VCA and SLEEG papers' tables on the embedded world (--scale {scale.name})", "",
          f"Made by `vca-baseline paper --scale {scale.name}` on {prov['started'][:10]} "
          f"(toolkit commit {(prov['versions'].get('git_commit') or 'unknown')[:10]}, torch "
          f"{prov['versions'].get('torch')}); every command, config and wall time is in `provenance.json`, "
          "every number below with the file it came from in `report_sources.json`.", "",
          f"**What differs from the papers, in every table:** {scale.differs}. The papers' numbers come from "
          "real data (KITTI-MOTS, Cityscapes-VPS, Fishyscapes, Road Anomaly) or the authors' CARLA collection of "
          "58k images, so ours are comparable in form, not in value.", ""]

    # Table 2
    md += ["## Table 2: moving and static instances", ""]
    rows = []
    for split in ("train", "test"):
        for source, label in (("motion_truth", "simulator truth"), ("motion_labels", "flow proposals")):
            path = R / f"motion_stats_{split}_{source}" / "stats.json"
            motion = cells.load(path).get("motion", {})
            dataset = next(iter(motion), None)
            row = f"{split} towns, {label}"
            rows.append([f"ours: {row}"] + [cells.get("table2", path, ["motion", dataset, "instances", k],
                                                      percent=False, row=row, default=0)
                                            for k in ("moving", "static")])
    for ds, v in PUBLISHED["table2"].items():
        rows.append([f"paper: {ds}", v["moving"], v["static"]])
    md += [_md_table(["instances (per frame)", "moving", "static"], rows), "",
           f"Ours: the KITTI-MOTS-style export of the motion track's own collection ({motion_text}), every "
           "object of at least 64 pixels in every frame; the proposals are `vca-annotate propose` on "
           "ego-flow-suppressed flow. The paper's are its hand-checked annotations of KITTI-MOTS and Cityscapes-VPS.",
           ""]

    # Table 3 and Figure 5
    stats_path = R / "stats" / "stats.json"
    ep = cells.load(stats_path)["episodes"]
    md += ["## Table 3: towns and images per split", ""]
    rows = []
    for split in ("train", "test"):
        towns = sorted({r["town"] for r in ep["frames"] if r["split"] == split})
        idx = [i for i, r in enumerate(ep["frames"]) if r["split"] == split]
        total = sum(ep["frames"][i]["frames"] for i in idx)
        for i in idx:   # every row's count is a cell of stats.json
            cells.get("table3", stats_path, ["episodes", "frames", i, "frames"], percent=False, row=split)
        rows.append([split, ", ".join(towns), str(total), PUBLISHED["table3"][split]["towns"],
                     PUBLISHED["table3"][split]["images"]])
    md += [_md_table(["split", "towns (ours)", "images (ours)", "towns (paper)", "images (paper)"], rows), ""]
    md += ["## Figure 5: pixels per class", ""]
    for name in ("pixels_per_class.png", "frames_per_town.png"):
        link = _copy_figure(R / "stats" / name, fig / name)
        if link:
            md += [f"![{name}]({link})", ""]
    md += ["The paper's Figure 5 is a bar chart without printed values; compare the shapes: road, building and sky "
           "dominate the known classes, and each unknown object covers well under 1% of the pixels.", ""]

    # Figure 4
    md += ["## Figure 4: dendrogram of the unknown objects (train blue, test red)", ""]
    link = _copy_figure(fig / "dendrogram.png", fig / "dendrogram.png")
    md += [f"![dendrogram]({link})" if link else "(missing)", "",
           "Prototypes (masked average pooling of layer3 of the trained prototype run's appearance backbone; the "
           "paper uses an ImageNet ResNet). The paper reads its dendrogram as: garbage bin and traffic warning "
           "are the test unknowns least related to the training unknowns.", ""]

    # Table 5 and Figure 7
    md += ["## Table 5: open-set segmentation on the offline world (test towns)", ""]
    rows = []
    for model, cl in (("prototype", "No CL"), ("prototype_cl", "CL")):
        for variant in ("full", "reduced"):
            path = R / "runs" / f"{model}_{variant}" / "metrics.json"
            row = f"{cl}, {variant}"
            p = PUBLISHED["table5"][(cl, variant)]
            rows.append([row, "offline world" + (" reduced" if variant == "reduced" else ""),
                         cells.get("table5", path, ["headline", "miou"], row=row),
                         cells.get("table5", path, ["headline", "ca_iou"], row=row), f"{p[0]:.1f}", f"{p[1]:.1f}"])
    md += [_md_table(["", "data", "mIoU", "CA-IoU", "mIoU (paper, Carla)", "CA-IoU (paper, Carla)"], rows), "",
           f"Reduced: one training frame in {scale.reduced_step} (`--set data.frame_step={scale.reduced_step}`), "
           "as the paper's 2,400 of 58k images. mIoU over the known classes, CA-IoU over the test split's unknown "
           "objects (vca_data.metrics.semantic).", ""]
    md += ["## Figure 7: CA-IoU per scenario (No CL, full data)", ""]
    path = R / "runs" / "prototype_full" / "metrics.json"
    ours = {}
    rows = []
    for s, pub in PUBLISHED["figure7"].items():
        text = cells.get("figure7", path, ["scenarios", s, "ca_iou"], row=s)
        ours[s] = cells.cells[-1]["value"] if cells.cells[-1]["value"] is not None else float("nan")
        rows.append([s, text, f"{pub:.1f}"])
    md += [_md_table(["scenario", "CA-IoU (ours)", "CA-IoU (paper)"], rows), ""]
    plot_scenarios(ours, PUBLISHED["figure7"], fig / "ca_iou_per_scenario.png")
    md += ["![CA-IoU per scenario](figures/ca_iou_per_scenario.png)", ""]
    link = _copy_figure(fig / "panels_prototype.png", fig / "panels_prototype.png")
    if link:
        md += ["Prototype model on one test frame per scenario (RGB | truth | prediction | unknown probability):", "",
               f"![prototype panels]({link})", ""]

    # Table 4
    md += ["## Table 4: VCANet, class-agnostic (moving objects) and panoptic quality", ""]
    rows = []
    for flow, efs in (("raw", "without EFS"), ("suppressed", "with EFS")):
        path = R / "runs" / f"vcanet_{flow}" / "metrics.json"
        row = efs
        ours_cells = [cells.get("table4", path, ["overall", k], row=row)
                      for k in ("sq", "rq", "caq", "pq", "pq_things", "pq_stuff")]
        rows.append([f"ours, {efs}", *ours_cells])
        pub, pq = PUBLISHED["table4"][efs], PUBLISHED["table4"]["pq"]
        rows.append([f"paper (KC-K), {efs}", pub["sq"], pub["rq"], pub["caq"], pq["pq"], pq["pq_things"], pq["pq_stuff"]])
    md += [_md_table(["VCANet", "SQ", "RQ", "CAQ", "PQ", "PQ things", "PQ stuff"], rows), "",
           f"Ours: trained on the train towns' motion export ({motion_text}), tested on the test towns' "
           "(held-out seed), with the "
           "simulator's truth as labels (moving / static per track and frame; objects under 64 pixels are ignore "
           "regions) and the export's semantic train ids for the semantic head and PQ stuff. EFS: flow minus the "
           "ego flow from depth and poses (`data.flow=suppressed`). Paper: KC-K, trained on KITTI-MOTS + "
           "Cityscapes-VPS, tested on KITTI-MOTS.", ""]
    link = _copy_figure(fig / "panels_vcanet.png", fig / "panels_vcanet.png")
    if link:
        md += ["VCANet (EFS) on the middle frame of each test sequence (RGB | flow | truth | moving red / static blue "
               "| panoptic):", "", f"![VCANet panels]({link})", ""]

    # SLEEG Table 2
    md += ["## SLEEG Table 2 form: the unknown objects of the test towns as pixel anomalies", ""]
    rows = []
    for name, label in (("sleeg_paper", "SLEEG, paper options"), ("sleeg_code", "SLEEG, code options"),
                        ("prototype_full", "prototype model, unknown probability")):
        path = R / "metrics" / f"anomaly_{name}.json"
        rows.append([f"ours: {label}"] + [cells.get("sleeg_table2", path, ["results", "pixel", k], row=label)
                                          for k in ("ap", "auroc", "fpr_at_tpr")])
    for ds, (ap, auroc, fpr) in PUBLISHED["sleeg_table2"].items():
        rows.append([f"paper: SLEEG, {ds}", f"{ap:.1f}", f"{auroc:.1f}", f"{fpr:.1f}"])
    for ds, (ap, auroc, fpr) in PUBLISHED["sleeg_msp"].items():
        rows.append([f"paper: MSP, {ds}", f"{ap:.1f}", f"{auroc:.1f}", f"{fpr:.1f}"])
    md += [_md_table(["score", "AP", "AUROC", "FPR@95"], rows), "",
           "Ours: every pixel of the test towns' frames, the unknown objects (label 254) as positives "
           "(`vca-baseline metrics --kind anomaly`). Both SLEEG rows sit on the same closed-set segmenter; paper "
           "options: Harris-corner patches, dynamic margin gamma 15, Otsu on JEM then the learned score; code "
           "options: hull patches with noise, energy refinement, the code's score (configs sleeg-tiny / "
           "sleeg-code-tiny at the CPU scales, sleeg-paper / sleeg-code at full).", ""]

    # Times
    md += ["## Wall time per stage", "", _md_table(["stage", "what", "s"], [
        [s.name, s.title, f"{walls.get(s.name, 0):.0f}"] for s in stages]), "",
        f"All stages: {sum(walls.values()):.0f} s.", ""]
    path = R / "report.md"
    atomic_write_text(path, "\n".join(md))
    atomic_write_json(R / "report_sources.json", {"cells": cells.cells})
    return path
