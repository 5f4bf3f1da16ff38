"""`vca-baseline paper`: every stage's command parses and every training config builds at each scale; at
the test scale the whole pipeline runs, is killed (SIGKILL) in the middle, continues with --resume
without redoing the finished stages, and writes a report whose every table and figure is present and
whose every number equals the result file it came from."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from baselines.cli import main as baseline_main
from baselines.config import build_config
from baselines.paper import SCALES, SCRIPTS, PipelineError, format_value, plan, run_pipeline

SECTIONS = ("## Table 2", "## Table 3", "## Figure 5", "## Figure 4", "## Table 5", "## Figure 7", "## Table 4",
            "## SLEEG Table 2")


def _parser(script: str):
    import importlib

    module = importlib.import_module(SCRIPTS[script])
    return module.build_command_parser() if script == "vca-annotate" else module.build_parser()


@pytest.mark.parametrize("scale", sorted(SCALES))
def test_every_stage_command_parses_and_every_config_builds(tmp_path, scale):
    stages = plan(tmp_path / "R", SCALES[scale])
    for run in ("segmenter", "vcanet_phase1"):   # the runs that later configs name exist by then
        (tmp_path / "R" / "runs" / run).mkdir(parents=True)
        (tmp_path / "R" / "runs" / run / "config.yaml").write_text("model: {}\n")
    names = [s.name for s in stages]
    assert len(names) == len(set(names))
    for stage in stages:
        for argv in stage.commands:
            args = _parser(argv[0]).parse_args([a if not a.startswith("@test-episodes:") else "x.h5" for a in argv[1:]])
            if argv[1] == "train":
                cfg = build_config(args.config, args.set, model=args.model)
                if SCALES[scale].iters is not None:
                    assert cfg["train"]["iters"] in SCALES[scale].iters.values()
    with_data = [s.name for s in plan(tmp_path / "R", SCALES[scale], data=tmp_path / "D")]
    assert "collect_train" in names and "collect_train" not in with_data


def test_bad_requests_fail_with_one_line(tmp_path, capsys):
    assert baseline_main(["paper", "--out", str(tmp_path / "R"), "--data", str(tmp_path / "nothing")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert baseline_main(["paper", "--out", str(busy), "--scale", "test", "--quiet"]) == 1
    assert "not a report folder" in capsys.readouterr().err
    assert (busy / "keep.txt").read_text() == "mine"
    report = tmp_path / "report"
    report.mkdir()
    (report / "provenance.json").write_text(json.dumps({"scale": "demo", "data": None, "stages": {}}))
    with pytest.raises(PipelineError, match="--resume"):
        run_pipeline(report, scale="demo", progress=False, say=lambda *_: None)
    with pytest.raises(PipelineError, match="--scale demo, not test"):
        run_pipeline(report, scale="test", resume=True, progress=False, say=lambda *_: None)


def _value(doc, keys):
    for k in keys:
        doc = doc.get(k) if isinstance(doc, dict) else (doc[k] if isinstance(doc, list) and k < len(doc) else None)
    return doc


def test_pipeline_killed_in_the_middle_resumes_and_reports(tmp_path):
    report = tmp_path / "report"
    cmd = [sys.executable, "-m", "baselines.cli", "paper", "--out", str(report), "--scale", "test", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    marker = report / "stages" / "prototype_full.json"
    deadline = time.time() + 600
    while not marker.is_file():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.time() < deadline, "the pipeline did not reach prototype_full in 10 minutes"
        time.sleep(0.5)
    time.sleep(2)   # into the next stage
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.stem: p.stat().st_mtime_ns for p in (report / "stages").glob("*.json")}
    assert {"collect_train", "collect_test", "stats", "prototype_full"} <= set(done)
    assert "vcanet_raw" not in done

    said = []
    run_pipeline(report, scale="test", resume=True, progress=False, say=said.append)
    for name, mtime in done.items():   # finished stages were not redone
        assert (report / "stages" / f"{name}.json").stat().st_mtime_ns == mtime
        assert any(line.startswith("[") and f"] {name}: done earlier" in line for line in said), name
    prov = json.loads((report / "provenance.json").read_text())
    assert set(prov["stages"]) == {s.name for s in plan(report, SCALES["test"])}
    assert all(e["ran"] and e["wall_s"] >= 0 for e in prov["stages"].values())
    assert prov["versions"]["torch"]
    for run in ("prototype_full", "sleeg_code", "vcanet_suppressed"):
        assert str(report / "runs" / run / "config.yaml") in json.dumps(prov["stages"][run]["configs"])

    text = (report / "report.md").read_text()
    for section in SECTIONS:
        assert section in text, section
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    for name in ("pixels_per_class.png", "dendrogram.png", "ca_iou_per_scenario.png", "panels_prototype.png",
                 "panels_vcanet.png"):
        assert f"figures/{name}" in links
    for link in links:
        assert (report / link).is_file() and (report / link).stat().st_size > 1000, link

    # every number equals the result file it came from, and stands in the report's row
    cells = json.loads((report / "report_sources.json").read_text())["cells"]
    assert {c["table"] for c in cells} == {"table2", "table3", "table5", "figure7", "table4", "sleeg_table2"}
    lines = text.splitlines()
    for c in cells:
        value = _value(json.loads((report / c["file"]).read_text()), c["keys"])
        value = c["default"] if value is None else value
        assert value == c["value"] or (value != value and c["value"] != c["value"]), c
        assert format_value(value, c["percent"]) == c["text"]
        if c["table"] == "table3":
            continue
        row = [ln for ln in lines if ln.startswith("| ") and c["row"] in ln
               and not ln.split("|")[1].strip().startswith("paper")]
        assert row and any(c["text"] in ln.split(" | ") or f"| {c['text']} |" in ln for ln in row), c
    # Table 3's totals are the sums of stats.json's rows
    stats = json.loads((report / "stats" / "stats.json").read_text())["episodes"]["frames"]
    for split in ("train", "test"):
        total = sum(r["frames"] for r in stats if r["split"] == split)
        assert any(ln.startswith(f"| {split} |") and f"| {total} |" in ln for ln in lines)
