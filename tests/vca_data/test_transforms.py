"""Joint augmentations: labels keep their exact values and stay aligned with the image."""

import numpy as np
import pytest
import torch

from vca_data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    ToTensor,
    resize_nearest,
    train_transform,
)

COLORS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]], dtype=np.uint8)


def checkerboard(height=48, width=64, cell=8):
    """Label map of cells with ids 0..3 and an image painted with one colour per id."""
    rows, cols = np.mgrid[:height, :width]
    label = ((rows // cell) % 2 * 2 + (cols // cell) % 2).astype(np.uint8)
    label[(rows // cell + cols // cell) % 5 == 0] += 4  # a second value set so ids are not just 0..3
    return {"image": COLORS[label % 4], "label": label, "depth": (rows + cols).astype(np.float32)}


def interior(label):
    """Pixels whose 3x3 neighbourhood has one label (bilinear image pixels there are uncontaminated)."""
    pad = np.pad(label.astype(np.int32), 1, constant_values=-1)  # the border is never interior
    same = np.ones(label.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            same &= pad[1 + dy : 1 + dy + label.shape[0], 1 + dx : 1 + dx + label.shape[1]] == label
    return same


@pytest.mark.parametrize("seed", range(6))
def test_geometric_pipeline_keeps_labels_exact_and_aligned(seed):
    sample = checkerboard()
    values = set(np.unique(sample["label"]).tolist())
    pipeline = Compose([RandomScale(0.8, 1.3), RandomHorizontalFlip(0.5), RandomCrop(40, 72)])
    out = pipeline(sample, np.random.default_rng(seed))
    assert out["image"].shape == (40, 72, 3) and out["label"].shape == (40, 72) and out["depth"].shape == (40, 72)
    assert out["label"].dtype == np.uint8
    assert set(np.unique(out["label"]).tolist()) <= values | {255}
    inside = interior(out["label"]) & (out["label"] != 255)
    assert inside.sum() > 200
    # alignment: where the label is constant around a pixel, the image shows that label's colour
    np.testing.assert_array_equal(out["image"][inside], COLORS[out["label"][inside] % 4])
    # padding: void labels sit exactly on zero image pixels
    pad = out["label"] == 255
    assert np.all(out["image"][pad] == 0) and np.all(out["depth"][pad] == 0)


def test_same_seed_same_result_and_different_seeds_differ():
    sample = checkerboard()
    pipeline = Compose([RandomScale(), RandomHorizontalFlip(), RandomCrop(32, 32)])
    a = pipeline(sample, np.random.default_rng(3))
    b = pipeline(sample, np.random.default_rng(3))
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
    outs = [pipeline(sample, np.random.default_rng(s))["label"] for s in range(8)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_flip_mirrors_every_key_and_negates_flow_u():
    sample = checkerboard(16, 24)
    flow = np.zeros((16, 24, 3), np.float32)
    flow[..., 0], flow[..., 1], flow[..., 2] = 2.0, -1.0, 1.0
    sample["flow"] = flow
    out = RandomHorizontalFlip(1.0, flow_keys=("flow",))(sample, np.random.default_rng(0))
    np.testing.assert_array_equal(out["image"], sample["image"][:, ::-1])
    np.testing.assert_array_equal(out["label"], sample["label"][:, ::-1])
    np.testing.assert_array_equal(out["depth"], sample["depth"][:, ::-1])
    assert np.all(out["flow"][..., 0] == -2.0) and np.all(out["flow"][..., 1] == -1.0)
    assert np.all(sample["flow"][..., 0] == 2.0)  # the input is not modified


def test_resize_scales_flow_and_keeps_validity_binary():
    flow = np.zeros((10, 20, 3), np.float32)
    flow[..., 0], flow[..., 1] = 4.0, 2.0
    flow[::3, ::3, 2] = 1.0
    out = Resize(20, 10, flow_keys=("flow",), dense_keys=(), label_keys=(), image_keys=())({"flow": flow})
    assert out["flow"].shape == (20, 10, 3)
    assert np.all(out["flow"][..., 0] == 2.0) and np.all(out["flow"][..., 1] == 4.0)
    assert set(np.unique(out["flow"][..., 2]).tolist()) <= {0.0, 1.0}


def test_nearest_resize_matches_integer_upsampling():
    label = np.arange(12, dtype=np.uint32).reshape(3, 4) * 70000  # instance ids beyond uint16
    np.testing.assert_array_equal(resize_nearest(label, 6, 8), np.kron(label, np.ones((2, 2), np.uint32)))
    np.testing.assert_array_equal(resize_nearest(np.kron(label, np.ones((2, 2), np.uint32)), 3, 4), label)


def test_crop_larger_than_sample_pads_labels_void():
    sample = checkerboard(10, 10)
    out = RandomCrop(16, 20)(sample, np.random.default_rng(0))
    np.testing.assert_array_equal(out["label"][:10, :10], sample["label"])
    assert np.all(out["label"][10:] == 255) and np.all(out["label"][:, 10:] == 255)
    assert np.all(out["image"][10:] == 0)


def test_to_tensor_and_normalize():
    sample = checkerboard(8, 8)
    out = Normalize()(ToTensor()(sample))
    assert out["image"].shape == (3, 8, 8) and out["image"].dtype == torch.float32
    assert out["depth"].shape == (1, 8, 8)
    assert out["label"].dtype == torch.int64
    expect = (sample["image"][2, 3] / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out["image"][:, 2, 3].numpy(), expect, rtol=1e-5)


def test_train_transform_outputs_tensors_of_crop_size():
    out = train_transform(24, 32)(checkerboard(), np.random.default_rng(1))
    assert out["image"].shape == (3, 24, 32) and out["label"].shape == (24, 32)


def test_mismatched_sizes_and_bad_arguments_are_rejected():
    sample = checkerboard(8, 8)
    sample["label"] = sample["label"][:4]
    with pytest.raises(ValueError, match="differ in size"):
        Resize(4, 4)(sample)
    with pytest.raises(ValueError, match="min_scale"):
        RandomScale(1.5, 1.0)
    with pytest.raises(ValueError, match="ToTensor first"):
        Normalize()(checkerboard(8, 8))
