"""KITTI-MOTS txt/PNG reading and writing: agreement with pycocotools, round trips, every rejection."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from vca_data.formats import coco, kitti_mots
from vca_data.formats.folders import open_sequence
from vca_data.formats.kitti_mots import KittiMotsFormatError, KittiObject
from vca_data.synthetic import make_kitti_mots_sequence


def random_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(0, 4)
    if kind == 0:
        return np.zeros((h, w), bool)
    if kind == 1:
        return rng.random((h, w)) < 0.4
    if kind == 2:
        return np.ones((h, w), bool)
    m = np.zeros((h, w), bool)
    y, x = rng.integers(0, h), rng.integers(0, w)
    m[y:y + rng.integers(1, h + 1), x:x + rng.integers(1, w + 1)] = True
    return m


def encode(mask: np.ndarray) -> bytes:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]


def test_counts_match_pycocotools_bit_for_bit():
    rng = np.random.default_rng(1)
    for _ in range(200):
        h, w = rng.integers(1, 50, 2)
        mask = random_mask(rng, h, w)
        counts = encode(mask)
        runs = coco.decode_counts(counts)
        assert coco.encode_counts(runs) == counts
        assert runs.sum() == h * w
        starts, ends = coco.foreground_runs(counts, h * w)
        painted = coco.paint_runs(starts, ends, np.full(starts.shape, 3, np.int32), h, w)
        np.testing.assert_array_equal(painted == 3, mask_utils.decode({"size": [h, w], "counts": counts}) > 0)


def test_large_counts_and_negative_deltas_decode_like_pycocotools():
    # Runs whose deltas to two places back are large and negative exercise the sign bit.
    h, w = 375, 1242
    mask = np.zeros((h, w), bool)
    mask[10:370, 5:6] = True
    mask[100:101, 600:1200] = True
    mask[0:375, 1241] = True
    counts = encode(mask)
    np.testing.assert_array_equal(coco.decode_counts(counts),
                                  coco.decode_counts(coco.encode_counts(coco.decode_counts(counts))))
    ids = kitti_mots.decode_id_map([KittiObject(0, 1001, 1, h, w, counts, 1)], h, w)
    np.testing.assert_array_equal(ids == 1001, mask)


def test_decode_id_map_agrees_with_per_object_pycocotools():
    rng = np.random.default_rng(2)
    h, w = 37, 53
    ids = np.zeros((h, w), np.int32)
    for k, obj_id in enumerate([1001, 1002, 2001, 2005, 10000]):
        ids[random_mask(rng, h, w) & (ids == 0) & (rng.random((h, w)) < 0.5 + 0.1 * k)] = obj_id
    objects = kitti_mots.objects_from_id_map(ids, 4)
    reference = np.zeros((h, w), np.int32)
    for obj in objects:
        reference[mask_utils.decode(obj.rle) > 0] = obj.obj_id
    np.testing.assert_array_equal(kitti_mots.decode_id_map(objects, h, w), reference)
    np.testing.assert_array_equal(reference, ids)


def test_txt_round_trip(tmp_path: Path):
    rng = np.random.default_rng(3)
    h, w = 20, 30
    frames = {}
    maps = {}
    for frame in (0, 2, 7):
        ids = np.zeros((h, w), np.int32)
        ids[random_mask(rng, h, w)] = 1003
        ids[(ids == 0) & random_mask(rng, h, w)] = 2001
        maps[frame] = ids
        frames[frame] = kitti_mots.objects_from_id_map(ids, frame)
    path = kitti_mots.write_txt(tmp_path / "0000.txt", frames)
    read = kitti_mots.read_txt(path)
    assert sorted(read) == sorted(f for f in frames if frames[f])
    for frame, objects in read.items():
        np.testing.assert_array_equal(kitti_mots.decode_id_map(objects, h, w), maps[frame])
        assert [o.obj_id for o in objects] == sorted(o.obj_id for o in frames[frame])


def test_png_round_trip_and_conversion_both_ways(tmp_path: Path):
    root = make_kitti_mots_sequence(tmp_path / "k", num_frames=5, height=40, width=64, num_objects=4, seed=5)
    seq = open_sequence(root, "0000")
    n = kitti_mots.txt_to_pngs(seq.txt_path, tmp_path / "png", seq.frame_names, seq.height, seq.width)
    assert n == 5
    for i in range(5):
        np.testing.assert_array_equal(kitti_mots.read_png(tmp_path / "png" / f"{i:06d}.png"), seq.obj_id_map(i))
    back = kitti_mots.pngs_to_txt(tmp_path / "png", tmp_path / "back.txt")
    original = kitti_mots.read_txt(seq.txt_path)
    converted = kitti_mots.read_txt(back)
    assert [(o.frame, o.obj_id, o.counts) for f in original for o in original[f]] == \
           [(o.frame, o.obj_id, o.counts) for f in converted for o in converted[f]]


def test_png_form_sequence_matches_txt_form(tmp_path: Path):
    a = open_sequence(make_kitti_mots_sequence(tmp_path / "a", num_frames=4, height=32, width=48, seed=9), "0000")
    b = open_sequence(make_kitti_mots_sequence(tmp_path / "b", num_frames=4, height=32, width=48, seed=9,
                                               form="png", training=True), "0000")
    assert a.label_form == "txt" and b.label_form == "png"
    assert a.tracks() == b.tracks()
    for i in range(4):
        np.testing.assert_array_equal(a.id_map(i), b.id_map(i))
        np.testing.assert_array_equal(a.crowd_mask(i), b.crowd_mask(i))
        assert [(x.track_id, x.crowd, x.rle["counts"]) for x in a.instances(i)] == \
               [(x.track_id, x.crowd, x.rle["counts"]) for x in b.instances(i)]


def good_line(frame: int = 0, obj_id: int = 1001, h: int = 4, w: int = 5, mask=None) -> str:
    if mask is None:
        mask = np.zeros((h, w), bool)
        mask[1:3, 1:3] = True
    return f"{frame} {obj_id} {obj_id // 1000} {h} {w} {encode(mask).decode()}"


def full_mask(h=4, w=5):
    return np.ones((h, w), bool)


BAD_CASES = [
    ("malformed", [good_line(), "1 1002 1 4 5"], r"x\.txt:2: expected 6 space-separated fields"),
    ("not integer", [good_line(), "a 1002 1 4 5 xx"], r"x\.txt:2: frame 'a' is not an integer"),
    ("negative frame", ["-1 1002 1 4 5 4"], r"x\.txt:1: frame -1 is negative"),
    ("unknown class", [good_line(), "0 3001 3 4 5 " + encode(full_mask()).decode()], r"x\.txt:2: unknown class id 3"),
    ("id of other class", ["0 2001 1 4 5 " + encode(full_mask()).decode()], r"x\.txt:1: object id 2001 does not belong"),
    ("bad rle char", [good_line(), "0 1002 1 4 5 ab~c"], r"x\.txt:2: bad RLE: RLE counts character '~'"),
    ("truncated rle", ["0 1002 1 4 5 8n"], r"x\.txt:1: bad RLE: RLE counts end in the middle"),
    ("rle too short", ["0 1002 1 4 5 " + encode(full_mask(2, 5)).decode()], r"x\.txt:1: bad RLE: RLE covers 10 pixels"),
    ("size mismatch", [good_line(), good_line(obj_id=1002, h=5, w=4)], r"x\.txt:2: mask size 5x4 .* differs from 4x5 of line 1"),
    ("duplicate", [good_line(), good_line(1), good_line()], r"x\.txt:3: frame 0: object id 1001 appears twice \(first on line 1\)"),
    ("overlap", [good_line(), good_line(1), good_line(obj_id=2001)], r"x\.txt:3: frame 0: mask of object 2001 overlaps object 1001 \(line 1\)"),
    ("huge size", ["0 1001 1 100000 5 0"], r"x\.txt:1: image size 100000x5 outside"),
]


@pytest.mark.parametrize("lines, message", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_txt_rejections_name_file_and_line(tmp_path: Path, lines, message):
    path = tmp_path / "x.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(KittiMotsFormatError, match=message):
        kitti_mots.read_txt(path)


def test_txt_rejects_size_differing_from_images(tmp_path: Path):
    root = make_kitti_mots_sequence(tmp_path / "k", num_frames=2, height=16, width=24, num_objects=2)
    txt = root / "instances_txt" / "0000.txt"
    txt.write_text(good_line(frame=1))
    with pytest.raises(KittiMotsFormatError, match=r"0000\.txt:1: mask size 4x5 .* differs from 16x24 of the images"):
        open_sequence(root, "0000")


def test_txt_rejects_frame_without_image(tmp_path: Path):
    root = make_kitti_mots_sequence(tmp_path / "k", num_frames=2, height=4, width=5, num_objects=1, ignore_region=False)
    (root / "instances_txt" / "0000.txt").write_text(good_line(frame=0) + "\n" + good_line(frame=9) + "\n")
    with pytest.raises(KittiMotsFormatError, match=r"0000\.txt:2: frame 9 has no image"):
        open_sequence(root, "0000")


def test_overlap_detected_for_interleaved_runs():
    h, w = 6, 6
    a = np.zeros((h, w), bool)
    a[:, 0] = a[:, 5] = True  # first and last column: one long interval span
    b = np.zeros((h, w), bool)
    b[2, 5] = True  # overlaps a's last run, not its first
    objects = [KittiObject(0, 1001, 1, h, w, encode(a), 1), KittiObject(0, 2001, 2, h, w, encode(b), 2)]
    with pytest.raises(KittiMotsFormatError, match="overlaps object 1001"):
        kitti_mots.decode_id_map(objects, h, w)
    b[2, 5] = False
    b[2, 3] = True
    objects[1] = KittiObject(0, 2001, 2, h, w, encode(b), 2)
    assert (kitti_mots.decode_id_map(objects, h, w) == 2001).sum() == 1


def test_png_rejections(tmp_path: Path):
    import cv2

    bad_class = np.zeros((4, 5), np.uint16)
    bad_class[1, 1] = 3001
    cv2.imwrite(str(tmp_path / "000003.png"), bad_class)
    with pytest.raises(KittiMotsFormatError, match=r"000003\.png: object id 3001 has unknown class 3"):
        kitti_mots.read_png(tmp_path / "000003.png")
    cv2.imwrite(str(tmp_path / "000004.png"), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(KittiMotsFormatError, match=r"000004\.png: expected a single-channel 16-bit PNG"):
        kitti_mots.read_png(tmp_path / "000004.png")
    cv2.imwrite(str(tmp_path / "000005.png"), np.zeros((4, 5), np.uint16))
    with pytest.raises(KittiMotsFormatError, match=r"000005\.png: size 4x5 .* differs from the image size 8x5"):
        kitti_mots.read_png(tmp_path / "000005.png", 8, 5)


LINE_CHARS = st.sampled_from(list("0123456789 -_:;<=>?@[]\\^`abcdefghijklmnoxyzABO~\t\n\r+.é\x00"))


@st.composite
def mutated_valid_line(draw) -> str:
    """A valid line of a random mask, then one character replaced, inserted or deleted."""
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    bits = draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w))
    obj_id = draw(st.sampled_from([1001, 1002, 2001, 10000]))
    line = good_line(draw(st.integers(0, 3)), obj_id, h, w, np.array(bits).reshape(h, w))
    pos = draw(st.integers(0, len(line)))
    edit = draw(st.sampled_from(["keep", "replace", "insert", "delete"]))
    char = draw(LINE_CHARS)
    if edit == "replace" and pos < len(line):
        line = line[:pos] + char + line[pos + 1:]
    elif edit == "insert":
        line = line[:pos] + char + line[pos:]
    elif edit == "delete":
        line = line[:pos] + line[pos + 1:]
    return line


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            mutated_valid_line(),
            st.text(LINE_CHARS, max_size=40),
            st.builds(lambda f, i, c, h, w, r: f"{f} {i} {c} {h} {w} {r}",
                      st.integers(-2, 5), st.sampled_from([1001, 1002, 2001, 10000, 0, 3001, 999999]),
                      st.sampled_from([1, 2, 10, 3, -1]), st.integers(0, 8), st.integers(0, 8),
                      st.text(st.characters(min_codepoint=40, max_codepoint=120), max_size=12)),
        ),
        max_size=6,
    )
)
def test_fuzz_txt_parser_raises_only_the_format_error(lines):
    text = "\n".join(lines)
    try:
        frames = kitti_mots.parse_txt(text, "fuzz.txt")
    except KittiMotsFormatError as e:
        assert str(e).startswith("fuzz.txt")
        return
    # Whatever parses must decode exactly as pycocotools decodes it.
    for objects in frames.values():
        h, w = objects[0].height, objects[0].width
        ids = kitti_mots.decode_id_map(objects, h, w)
        reference = np.zeros((h, w), np.int32)
        for obj in objects:
            reference[mask_utils.decode(obj.rle) > 0] = obj.obj_id
        np.testing.assert_array_equal(ids, reference)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=60))
def test_fuzz_txt_reader_on_raw_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "raw.txt"
    path.write_bytes(data)
    try:
        kitti_mots.read_txt(path)
    except KittiMotsFormatError as e:
        assert "raw.txt" in str(e)
