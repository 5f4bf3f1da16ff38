"""MotionDataset: labels per pixel agree with the sequence and the motion labels, flow is loaded and
augmented with the frame, and labels stay exact under augmentation."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vca_data.formats.folders import open_sequence
from vca_data.formats.motion_labels import MotionLabels
from vca_data.motion_dataset import MOTION_KEYS, MotionDataset
from vca_data.synthetic import make_cityscapes_vps, make_kitti_mots_sequence
from vca_data.transforms import IMAGENET_MEAN, IMAGENET_STD, Compose, RandomHorizontalFlip, train_transform


@pytest.fixture(scope="module")
def kitti(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("k")
    make_kitti_mots_sequence(root, "0000", num_frames=4, height=40, width=64, num_objects=4, seed=4)
    make_kitti_mots_sequence(root, "0001", num_frames=3, height=40, width=64, num_objects=3, seed=5)
    return root


def test_labels_per_pixel(kitti: Path):
    labels = MotionLabels.load(kitti / "motion_truth.json")
    first = min(labels.sequences["0000"])
    labels.add_range("0000", first, 2, 3, "ignore")
    ds = MotionDataset(kitti, labels, sequences=["0000"])
    assert len(ds) == 4
    seq = open_sequence(kitti, "0000")
    for index in range(4):
        sample = ds[index]
        ids = seq.id_map(index)
        assert torch.equal(sample["instance"], torch.from_numpy(ids.astype(np.int64)))
        motion = sample["motion"].numpy()
        assert (motion[seq.crowd_mask(index)] == 255).all()
        assert (motion[(ids == 0) & ~seq.crowd_mask(index)] == 0).all()
        for track in set(np.unique(ids)) - {0}:
            expected = {"moving": 1, "static": 2, "ignore": 255}[labels.label_at("0000", int(track), index)]
            assert (motion[ids == track] == expected).all()
            assert (sample["category"].numpy()[ids == track] == {1: 13, 2: 11}[int(track) // 1000]).all()
        assert index < 2 or (motion[ids == first] == 255).all()
        assert sample["meta"]["sequence"] == "0000" and sample["meta"]["frame"] == index
        expected_image = (seq.read_image(index) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        np.testing.assert_allclose(sample["image"].numpy().transpose(1, 2, 0), expected_image, atol=1e-5)


def test_flow_loaded_and_flipped_with_the_frame(kitti: Path, tmp_path: Path):
    seq = open_sequence(kitti, "0001")
    rng = np.random.default_rng(0)
    colours = {}
    for i in range(seq.num_frames):
        colours[i] = rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)
        path = tmp_path / "flow" / "0001" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(colours[i], cv2.COLOR_RGB2BGR))
    flip = Compose([RandomHorizontalFlip(1.0, **MOTION_KEYS)])
    ds = MotionDataset(kitti, kitti / "motion_truth.json", sequences=["0001"], flow_dir=tmp_path / "flow",
                       transform=flip)
    sample = ds[2]
    expected = (colours[2][:, ::-1] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(sample["flow"].numpy().transpose(1, 2, 0), expected, atol=1e-5)
    np.testing.assert_array_equal(sample["instance"].numpy(), seq.id_map(2)[:, ::-1])
    (tmp_path / "flow" / "0001" / "000001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"0001/000001\.png: missing or unreadable flow PNG"):
        ds[1]


def test_augmentation_keeps_labels_exact_and_is_seeded(kitti: Path):
    transform = train_transform(32, 48, 0.7, 1.4, **MOTION_KEYS)
    a = MotionDataset(kitti, kitti / "motion_truth.json", transform=transform, seed=3)
    b = MotionDataset(kitti, kitti / "motion_truth.json", transform=transform, seed=3)
    assert len(a) == 7
    for index in range(len(a)):
        sa, sb = a[index], b[index]
        assert sa["image"].shape == (3, 32, 48) and sa["motion"].shape == (32, 48)
        assert torch.equal(sa["motion"], sb["motion"]) and torch.equal(sa["image"], sb["image"])
        seq = open_sequence(kitti, sa["meta"]["sequence"])
        valid_ids = set(np.unique(seq.id_map(sa["meta"]["frame"])).tolist()) | {255}
        assert set(sa["instance"].unique().tolist()) <= valid_ids
        assert set(sa["motion"].unique().tolist()) <= {0, 1, 2, 255}
        # Each instance pixel keeps the motion label of its track (nearest-neighbour resampling).
        inst, motion = sa["instance"].numpy(), sa["motion"].numpy()
        for track in set(np.unique(inst)) - {0, 255}:
            assert len(np.unique(motion[inst == track])) == 1
    batch = next(iter(torch.utils.data.DataLoader(a, batch_size=3)))
    assert batch["image"].shape == (3, 3, 32, 48) and batch["motion"].dtype == torch.int64


def test_cityscapes_samples(tmp_path: Path):
    root = make_cityscapes_vps(tmp_path, num_videos=2, frames_per_video=10, height=24, width=40)
    ds = MotionDataset(root, root / "motion_truth.json")
    assert len(ds) == 4  # two labelled frames per video
    sample = ds[1]
    assert sample["meta"]["sequence"] == "val/0001" and sample["meta"]["frame"] == 9
    category = sample["category"].numpy()
    assert set(np.unique(category)) <= {11, 13, 255}
    assert (sample["motion"].numpy()[sample["instance"].numpy() == 0] != 1).all()
    # semantic train ids from the panoptic segments: road below, sky above, things as their category
    semantic = sample["semantic"].numpy()
    assert semantic.shape == category.shape and set(np.unique(semantic)) <= {0, 10, 11, 13, 255}
    things = sample["instance"].numpy() > 0
    np.testing.assert_array_equal(semantic[things], category[things])
    assert (semantic[-1] == 0).any() and (semantic[0] == 10).any()


def test_kitti_semantic_folder_is_read_and_augmented_with_the_frame(kitti: Path, tmp_path: Path):
    import shutil

    root = tmp_path / "k"
    shutil.copytree(kitti, root)
    assert "semantic" not in MotionDataset(root, root / "motion_truth.json", sequences=["0000"])[0]
    seq = open_sequence(root, "0000")
    truth = []
    for i in range(seq.num_frames):
        ids = np.tile(np.arange(seq.width, dtype=np.uint8) % 19, (seq.height, 1))
        ids[:3] = 255
        truth.append(ids)
        (root / "semantic" / "0000").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "semantic" / "0000" / f"{i:06d}.png"), ids)
    np.testing.assert_array_equal(open_sequence(root, "0000").semantic(1), truth[1])
    ds = MotionDataset(root, root / "motion_truth.json", sequences=["0000"])
    np.testing.assert_array_equal(ds[2]["semantic"].numpy(), truth[2])
    flipped = MotionDataset(root, root / "motion_truth.json", sequences=["0000"],
                            transform=Compose([RandomHorizontalFlip(1.0, **MOTION_KEYS)]), seed=0)
    np.testing.assert_array_equal(flipped[2]["semantic"].numpy(), truth[2][:, ::-1])
    cv2.imwrite(str(root / "semantic" / "0000" / "000001.png"), np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match=r"000001.png: expected a 64x40 single-channel uint8 PNG"):
        ds[1]


def test_errors(kitti: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="no sequence"):
        MotionDataset(kitti, kitti / "motion_truth.json", sequences=["0042"])
    empty = MotionLabels.new("kitti-mots")
    with pytest.raises(ValueError, match="has motion labels"):
        MotionDataset(kitti, empty)
