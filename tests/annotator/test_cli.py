"""`vca-annotate` argument handling and the export subcommand (checked with pycocotools)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from annotator.cli import build_gui_parser, main
from vca_data.formats.folders import open_sequence
from vca_data.formats.motion_labels import MotionLabels


@pytest.fixture
def labelled_root(kitti_root):
    """kitti_root with two manual labels, one ignore label and one unaccepted proposal."""
    ids = sorted(open_sequence(kitti_root).tracks())
    labels = MotionLabels.new("kitti-mots")
    labels.set("0000", ids[0], "moving")
    labels.set("0000", ids[1], "static")
    labels.set("0000", ids[2], "ignore")
    labels.set("0000", ids[3], "moving", source="proposal", score=0.9)
    labels.save(kitti_root / "motion_labels.json")
    return kitti_root, ids


def test_export_coco_matches_instances(labelled_root, tmp_path, capsys):
    root, ids = labelled_root
    out = tmp_path / "coco.json"
    assert main(["export", str(root), "--format", "coco", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    coco = COCO(str(out))
    assert {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())} == {"moving": 1, "static": 2}
    seq = open_sequence(root)
    assert len(coco.getImgIds()) == seq.num_frames
    expected = {ids[0]: 1, ids[1]: 2}  # ignore and the unaccepted proposal are left out
    anns = coco.loadAnns(coco.getAnnIds())
    assert {a["track_id"] for a in anns} == set(expected)
    for ann in anns:
        assert ann["category_id"] == expected[ann["track_id"]]
        frame = coco.loadImgs(ann["image_id"])[0]["frame"]
        truth = seq.id_map(frame) == ann["track_id"]
        assert np.array_equal(mask_utils.decode(coco.annToRLE(ann)).astype(bool), truth)


def test_export_kitti_and_png_and_proposals_flag(labelled_root, tmp_path):
    root, ids = labelled_root
    assert main(["export", str(root), "--format", "kitti-mots", "--out", str(tmp_path / "txt")]) == 0
    lines = (tmp_path / "txt" / "0000.txt").read_text().splitlines()
    classes = {int(line.split()[2]) for line in lines}
    assert classes == {1, 2, 10}
    assert main(["export", str(root), "--format", "kitti-mots", "--out", str(tmp_path / "txt2"),
                 "--include-proposals"]) == 0
    with_proposal = (tmp_path / "txt2" / "0000.txt").read_text().splitlines()
    assert sum(line.split()[2] == "1" for line in with_proposal) > sum(line.split()[2] == "1" for line in lines)
    assert main(["export", str(root), "--format", "png", "--out", str(tmp_path / "png")]) == 0
    assert len(list((tmp_path / "png" / "0000").glob("*.png"))) == 12


def test_bad_inputs_exit_2_and_change_nothing(labelled_root, tmp_path, capsys, snapshot):
    root, _ = labelled_root
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(empty), "--format", "coco", "--out", str(tmp_path / "x.json")]) == 2
    assert "not a KITTI-MOTS or Cityscapes-VPS" in capsys.readouterr().err
    assert main([str(empty)]) == 2  # the GUI branch checks before opening a window
    assert "not a supported motion sequence" in capsys.readouterr().err
    foreign = MotionLabels.new("cityscapes-vps")
    foreign.save(root / "motion_labels.json")
    before = snapshot(root)
    assert main([str(root)]) == 2
    assert "cityscapes-vps" in capsys.readouterr().err
    assert snapshot(root) == before
    (root / "motion_labels.json").write_text("{broken")
    before = snapshot(root)
    assert main(["export", str(root), "--format", "coco", "--out", str(tmp_path / "y.json")]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert snapshot(root) == before and not (tmp_path / "y.json").exists()
    bad_config = tmp_path / "keys.yaml"
    bad_config.write_text("shortcuts:\n  explode: [X]\n")
    assert main([str(root), "--config", str(bad_config)]) == 2
    assert "explode" in capsys.readouterr().err
    bad_config.write_text("shortcuts:\n  label_moving: [Ctrl+Blah]\n")
    assert main([str(root), "--config", str(bad_config)]) == 2
    assert "Ctrl+Blah" in capsys.readouterr().err


def test_parsing_of_subcommands_and_optional_folder(capsys):
    args = build_gui_parser().parse_args(["some/dir", "--sequence", "0002"])
    assert str(args.dir) == "some/dir" and args.sequence == "0002"
    assert build_gui_parser().parse_args([]).dir is None
    for argv in (["--help"], ["export", "--help"], ["propose", "--help"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "SEQUENCE_DIR" in text and "--format" in text and "--mode" in text


def test_propose_subcommand_writes_proposals(kitti_root):
    assert main(["propose", str(kitti_root), "--quiet"]) == 0
    labels = json.loads((kitti_root / "motion_labels.json").read_text())
    entries = labels["sequences"]["0000"].values()
    assert entries and all(e["source"] == "proposal" for e in entries)


def test_gui_process_opens_and_quits(kitti_root, tmp_path):
    """The console entry point starts the real window offscreen on the folder (then quits itself)."""
    code = ("import sys; from PyQt5.QtCore import QTimer; from PyQt5.QtWidgets import QApplication;"
            "app = QApplication(sys.argv[:1]); QTimer.singleShot(300, app.quit);"
            f"from annotator.cli import main; sys.exit(main([{str(kitti_root)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    # The window closed on quit: the session ended cleanly (no recovery marker left).
    assert not (kitti_root / ".motion_labels.json.session").exists()


def test_batch_modules_do_not_import_qt():
    code = ("import sys, annotator.cli, annotator.session, annotator.cache, annotator.config;"
            "sys.exit(int(any(m.startswith('PyQt5') for m in sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
