"""Fixtures of the annotator tests: small generated KITTI-MOTS-style sequences."""

from pathlib import Path

import pytest

from vca_data.synthetic import make_kitti_mots_sequence


@pytest.fixture
def kitti_root(tmp_path: Path) -> Path:
    """A 12-frame, 5-track KITTI-MOTS sequence 0000 (ignore region included) under tmp_path/ds."""
    return make_kitti_mots_sequence(tmp_path / "ds", seq="0000", num_frames=12, height=96, width=160,
                                    num_objects=5, seed=3)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes, to show that nothing on disk changed."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def snapshot():
    return tree
