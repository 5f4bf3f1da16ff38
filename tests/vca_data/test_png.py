"""Panoptic PNG reading: both decoders give the ids R + 256 G + 256^2 B for every 8-bit colour PNG
variant, and refuse what is not a panoptic PNG with the file's name."""

import numpy as np
import pytest
from PIL import Image

from vca_data import png
from vca_data.metrics.panoptic import PanopticQuality

DECODERS = ["opencv"] + (["spng", "auto"] if png.pyspng is not None else ["auto"])


def random_ids(rng, height=37, width=53):
    """Blocky id map with ids spread over all three bytes, void included."""
    palette = np.concatenate([[0], rng.integers(1, 1 << 24, 9)])
    small = rng.integers(0, len(palette), (height // 4 + 1, width // 4 + 1))
    return palette[np.kron(small, np.ones((4, 4), int))[:height, :width]].astype(np.int32)


def as_rgb(ids):
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("variant", ["RGB", "RGBA", "P", "RGB-interlaced-cv2"])
def test_ids_of_every_colour_png_variant(tmp_path, decoder, variant):
    import cv2

    ids = random_ids(np.random.default_rng(3))
    rgb = as_rgb(ids)
    assert np.array_equal(png.panoptic_rgb(ids), rgb)
    path = tmp_path / "ids.png"
    if variant == "RGB":
        Image.fromarray(rgb).save(path)  # PIL's adaptive filters: Sub, Up, Average, Paeth rows
    elif variant == "RGBA":
        Image.fromarray(np.dstack([rgb, np.full(ids.shape, 77, np.uint8)])).save(path)  # alpha ignored
    elif variant == "P":
        Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.MAXCOVERAGE).save(path)
        rgb = np.array(Image.open(path).convert("RGB"))
        channels = rgb.astype(np.int32)
        ids = channels[..., 0] + 256 * channels[..., 1] + 65536 * channels[..., 2]
    else:
        cv2.imwrite(str(path), rgb[..., ::-1])
    got = png.read_panoptic_png(path, decoder)
    assert got.dtype == np.int32 and np.array_equal(got, ids)
    assert np.array_equal(png.panoptic_ids_of_rgb(rgb), ids)


@pytest.mark.parametrize("decoder", DECODERS)
def test_refuses_what_is_not_a_panoptic_png(tmp_path, decoder):
    import cv2

    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.zeros((4, 4), np.uint8))
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), np.zeros((4, 4, 3), np.uint16))
    text = tmp_path / "text.png"
    text.write_text("not an image")
    good = tmp_path / "good.png"
    Image.fromarray(as_rgb(random_ids(np.random.default_rng(1)))).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ValueError, match=r"grey\.png: .*8-bit RGB colours, got a 8-bit greyscale image"):
        png.read_panoptic_png(grey, decoder)
    with pytest.raises(ValueError, match=r"deep\.png: .*got a 16-bit RGB image"):
        png.read_panoptic_png(deep, decoder)
    with pytest.raises(ValueError, match=r"text\.png: not a PNG file"):
        png.read_panoptic_png(text, decoder)
    with pytest.raises(ValueError, match=r"cut\.png: cannot decode"):
        png.read_panoptic_png(cut, decoder)
    with pytest.raises(ValueError, match=r"missing\.png: cannot read"):
        png.read_panoptic_png(tmp_path / "missing.png", decoder)


def test_bad_arguments():
    with pytest.raises(ValueError, match="decoder must be one of"):
        png.panoptic_ids(b"", decoder="pil")
    with pytest.raises(ValueError, match="HxWx3 or HxWx4 uint8"):
        png.panoptic_ids_of_rgb(np.zeros((4, 4), np.uint8))


def test_work_arrays_follow_the_image_size():
    """The metric keeps its per-pixel work arrays between images: a large image, then a small one, then
    a large one again count exactly what fresh accumulators count."""
    categories = [{"id": 1, "name": "car", "isthing": 1}, {"id": 2, "name": "road", "isthing": 0}]
    rng = np.random.default_rng(5)
    frames = []
    for height, width in ((40, 60), (7, 9), (40, 60)):
        gt = random_ids(rng, height, width)
        pred = np.roll(gt, 1, axis=1)  # every 4x4 block moved by a pixel: IoU 0.6, matches
        segments = [
            [{"id": int(i), "category_id": 1 + int(i) % 2} for i in np.unique(m) if i] for m in (pred, gt)
        ]
        frames.append((pred, segments[0], gt, segments[1]))
    kept = PanopticQuality(categories)
    for frame in frames:
        kept.update(*frame)
    fresh = [PanopticQuality(categories) for _ in frames]
    for metric, frame in zip(fresh, frames):
        metric.update(*frame)
    total = fresh[0].merge(fresh[1]).merge(fresh[2])
    for field in ("tp", "fp", "fn"):
        assert np.array_equal(getattr(kept, field), getattr(total, field))
    assert np.allclose(kept.iou_sum, total.iou_sum) and kept.tp.sum() > 0
