"""The open-set dataset over episodes: labels, unknowns, normalisation, filters and DataLoader workers."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vca_data.datasets import OpenSetDataset
from vca_data.episodes import EpisodeReader, EpisodeWriter, episode_filename
from vca_data.labels import TAG, UNKNOWN, VOID, carla_to_train, default_catalogue
from vca_data.synthetic_episodes import make_synthetic_episode
from vca_data.transforms import IMAGENET_MEAN, IMAGENET_STD, train_transform


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("openset")
    make_synthetic_episode(root, town="Town01", scenario="parking", seed=0, num_frames=6)
    make_synthetic_episode(root, town="Town02", scenario="parking", seed=1, num_frames=4)
    make_synthetic_episode(root, town="Town03", scenario="construction", seed=2, num_frames=3)
    return root


def test_length_filters_and_frame_step(data_dir):
    assert len(OpenSetDataset(data_dir)) == 13
    assert len(OpenSetDataset(data_dir, split="train")) == 9
    assert len(OpenSetDataset(data_dir, split="test")) == 4
    assert len(OpenSetDataset(data_dir, scenarios="construction")) == 3
    assert len(OpenSetDataset(data_dir, split="train", scenarios=["parking"], frame_step=4)) == 2  # frames 0, 4
    with pytest.raises(ValueError, match="no complete episodes"):
        OpenSetDataset(data_dir, split="test", scenarios=["barrier"])
    with pytest.raises(ValueError, match="split"):
        OpenSetDataset(data_dir, split="val")


def test_sample_contents_match_the_episode(data_dir):
    ds = OpenSetDataset(data_dir, split="train", scenarios=["parking"], frame_step=2, with_instance=True)
    sample = ds[2]  # frame 4 of Town01_parking_0
    meta = sample["meta"]
    assert meta["frame"] == 4 and meta["town"] == "Town01" and meta["split"] == "train"
    assert meta["episode"].endswith(episode_filename("Town01", "parking", 0))
    with EpisodeReader(meta["episode"]) as reader:
        frame = reader[4]
    image, depth, label, fine = sample["image"], sample["depth"], sample["label"], sample["fine"]
    assert image.shape == (3, 60, 80) and image.dtype == torch.float32
    assert depth.shape == (1, 60, 80) and label.shape == (60, 80) and label.dtype == torch.int64
    expect = (frame["rgb"].transpose(2, 0, 1) / 255.0 - np.array(IMAGENET_MEAN)[:, None, None]) / np.array(
        IMAGENET_STD)[:, None, None]
    np.testing.assert_allclose(image.numpy(), expect, atol=1e-5)
    np.testing.assert_array_equal(depth[0].numpy(), frame["depth"])
    np.testing.assert_array_equal(fine.numpy(), frame["fine"])
    np.testing.assert_array_equal(sample["instance"].numpy(), frame["instance"])
    known = frame["fine"] == 0
    np.testing.assert_array_equal(label.numpy()[known], carla_to_train(frame["semantic"])[known])


@pytest.mark.parametrize("split", ["train", "test"])
def test_label_is_254_exactly_on_the_splits_unknown_objects(data_dir, split):
    ds = OpenSetDataset(data_dir, split=split, with_instance=True)
    catalogue = default_catalogue()
    unknown_ids = [c.fine_id for c in catalogue.unknown_classes(split)]
    seen = 0
    for i in range(len(ds)):
        sample = ds[i]
        with EpisodeReader(sample["meta"]["episode"]) as reader:
            actor_ids = [o["actor_id"] for o in reader.attrs["unknown_objects"]]
        on_object = np.isin(sample["instance"].numpy(), actor_ids)
        np.testing.assert_array_equal(sample["label"].numpy() == UNKNOWN, on_object)
        assert np.isin(sample["fine"].numpy()[on_object], unknown_ids).all()
        seen += on_object.sum()
    assert seen > 0


def test_unknowns_of_the_other_split_are_void(tmp_path):
    catalogue = default_catalogue()
    test_cls = catalogue.unknown_classes("test", "parking")[0]
    train_cls = catalogue.unknown_classes("train", "parking")[0]
    semantic = np.full((4, 6), TAG["Roads"], np.uint8)
    fine = np.zeros((4, 6), np.uint8)
    fine[1, 1], fine[2, 4] = test_cls.fine_id, train_cls.fine_id
    semantic[fine > 0] = TAG["Static"]
    attrs = {"town": "Town07", "scenario": "parking", "split": "test", "seed": 0}
    with EpisodeWriter(tmp_path / "episodes" / "Town07_parking_0.h5", attrs, 4, 6) as writer:
        writer.append({"rgb": np.zeros((4, 6, 3), np.uint8), "depth": np.ones((4, 6), np.float32), "semantic": semantic,
                       "instance": np.zeros((4, 6), np.uint32), "fine": fine, "ego_pose": np.eye(4), "timestamp": 0.0,
                       "frame": 0})
    label = OpenSetDataset(tmp_path)[0]["label"].numpy()
    assert label[1, 1] == UNKNOWN and label[2, 4] == VOID
    assert (label == 0).sum() == 22  # the rest is road


def test_depth_clipping_and_normalisation(data_dir):
    raw = OpenSetDataset(data_dir, split="test")[0]["depth"]
    assert raw.max() == 1000.0  # the sky at the far plane
    clipped = OpenSetDataset(data_dir, split="test", max_depth=80.0)[0]["depth"]
    np.testing.assert_array_equal(clipped.numpy(), np.minimum(raw.numpy(), 80.0))
    unit = OpenSetDataset(data_dir, split="test", max_depth=80.0, normalize_depth=True)[0]["depth"]
    np.testing.assert_allclose(unit.numpy(), clipped.numpy() / 80.0, rtol=1e-6)
    with pytest.raises(ValueError, match="max_depth"):
        OpenSetDataset(data_dir, normalize_depth=True)


def test_augmented_samples_keep_label_values_and_are_seeded(data_dir):
    ds = OpenSetDataset(data_dir, split="test", transform=train_transform(48, 64), seed=3)
    a, b = ds[1], ds[1]
    assert a["image"].shape == (3, 48, 64) and a["label"].shape == (48, 64)
    torch.testing.assert_close(a["image"], b["image"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["image"], a["image"])  # a new epoch draws new augmentations
    allowed = set(carla_to_train(np.arange(29, dtype=np.uint8)).tolist()) | {UNKNOWN, VOID}
    assert set(a["label"].unique().tolist()) <= allowed


def test_dataloader_workers_open_their_own_files(data_dir):
    ds = OpenSetDataset(data_dir, split="train")
    first = ds[0]  # opens a reader in this process before the workers fork
    ds = pickle.loads(pickle.dumps(ds))
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=False, multiprocessing_context="fork")
    batches = list(loader)
    assert sum(len(b["label"]) for b in batches) == len(ds)
    torch.testing.assert_close(batches[0]["image"][0], first["image"])
    assert batches[0]["meta"]["town"][0] == "Town01"
    labels = torch.cat([b["label"] for b in batches])
    np.testing.assert_array_equal(labels[-1].numpy(), ds[len(ds) - 1]["label"].numpy())
