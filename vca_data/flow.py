"""Optical-flow maths of the motion track: dense DIS flow between frames, lossless flow files
(Middlebury ``.flo`` and KITTI 16-bit PNG), the Middlebury colour coding used as VCANet's flow input,
rigid ego flow from depth + intrinsics + relative pose, a RANSAC background-motion fit (homography and
fundamental matrix) for when depth or pose is missing, and the residual ("ego-flow suppressed") flow.

Conventions: a flow field is an HxWx2 float32 array of (dx, dy) in pixels, x to the right and y down,
mapping a pixel of the first frame to its position in the second. Point arrays are Nx2 (x, y).
Poses are 4x4 world_from_camera matrices with OpenCV camera axes (x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vca_data.io import atomic_path

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
DEFAULT_PRESET = "fast"

FLO_MAGIC = 202021.25  # the float32 whose little-endian bytes spell "PIEH"
KITTI_FLOW_SCALE = 64.0
KITTI_FLOW_OFFSET = 2.0**15
# Largest |flow| a KITTI PNG can hold: (65535 - 32768) / 64.
KITTI_FLOW_MAX = (65535 - KITTI_FLOW_OFFSET) / KITTI_FLOW_SCALE


class FlowFileError(ValueError):
    """A flow file that is missing, truncated or not in the expected format."""


# --------------------------------------------------------------------------------------------------
# Dense optical flow


def _gray(image: np.ndarray, name: str) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    elif image.ndim != 2:
        raise ValueError(f"{name}: expected an HxW or HxWx3 image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 pixels, got {image.dtype}")
    return image


class FlowEstimator:
    """OpenCV DIS optical flow with a fixed preset; keeps one DIS instance so that repeated calls
    (a whole sequence) do not pay its set-up each time."""

    def __init__(self, preset: str = DEFAULT_PRESET):
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; expected one of {sorted(DIS_PRESETS)}")
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

    def __call__(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Flow from `first` to `second` (HxW gray or HxWx3 RGB uint8 images of one size), HxWx2 float32."""
        first_gray = _gray(first, "first image")
        second_gray = _gray(second, "second image")
        if first_gray.shape != second_gray.shape:
            raise ValueError(f"frame sizes differ: {first_gray.shape} vs {second_gray.shape}")
        return self._dis.calc(first_gray, second_gray, None)

    def with_prior(self, first: np.ndarray, second: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """Flow from `first` to `second` given a prior flow (e.g. the ego flow): `second` is warped back
        by the prior, DIS measures what is left, and the two are composed. Large but predictable motion
        (near objects passing the camera) is then no longer beyond DIS's search range."""
        prior = _check_flow(prior, "prior flow")
        first_gray = _gray(first, "first image")
        second_gray = _gray(second, "second image")
        if prior.shape[:2] != first_gray.shape or second_gray.shape != first_gray.shape:
            raise ValueError(f"sizes differ: images {first_gray.shape}, {second_gray.shape}, prior {prior.shape}")
        compensated = warp_image(second_gray, prior)
        left = self._dis.calc(first_gray, compensated, None)
        return left + warp_image(prior, left)


def warp_image(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`image` sampled at each pixel + `flow` (bilinear; borders replicated): the second frame brought
    back onto the first when `flow` maps the first to the second."""
    target = pixel_grid(*flow.shape[:2]) + np.nan_to_num(flow)
    return cv2.remap(image, target[..., 0], target[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def sample_at_flow(image: np.ndarray, flow: np.ndarray, nearest: bool = False, fill: float = 0.0) -> np.ndarray:
    """Values of a second-frame `image` at each first-frame pixel + `flow`; `fill` outside the image.
    Nearest sampling keeps ids and depth edges intact."""
    target = pixel_grid(*flow.shape[:2]) + np.nan_to_num(flow)
    return cv2.remap(image, target[..., 0], target[..., 1], cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def compute_flow(first: np.ndarray, second: np.ndarray, preset: str = DEFAULT_PRESET) -> np.ndarray:
    """Dense DIS flow from `first` to `second`; see FlowEstimator for repeated use."""
    return FlowEstimator(preset)(first, second)


def _check_flow(flow: np.ndarray, name: str = "flow") -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"{name}: expected an HxWx2 array, got shape {flow.shape}")
    return flow.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------
# Flow files


def write_flo(path: str | Path, flow: np.ndarray) -> None:
    """Write `flow` as a Middlebury .flo file (float32, exact)."""
    flow = _check_flow(flow)
    h, w = flow.shape[:2]
    header = np.array([FLO_MAGIC], "<f4").tobytes() + np.array([w, h], "<i4").tobytes()
    with atomic_path(path) as tmp:
        tmp.write_bytes(header + flow.astype("<f4").tobytes())


def read_flo(path: str | Path) -> np.ndarray:
    """Read a Middlebury .flo file into an HxWx2 float32 array."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 12 or np.frombuffer(data[:4], "<f4")[0] != np.float32(FLO_MAGIC):
        raise FlowFileError(f"{path}: not a .flo file (missing the 'PIEH' tag)")
    w, h = (int(v) for v in np.frombuffer(data[4:12], "<i4"))
    if w <= 0 or h <= 0 or w * h > 1 << 28:
        raise FlowFileError(f"{path}: implausible size {w}x{h} in the header")
    expected = 12 + w * h * 2 * 4
    if len(data) != expected:
        raise FlowFileError(f"{path}: {len(data)} bytes, expected {expected} for a {w}x{h} flow")
    return np.frombuffer(data[12:], "<f4").reshape(h, w, 2).astype(np.float32)


def write_kitti_flow_png(path: str | Path, flow: np.ndarray, valid: np.ndarray | None = None) -> None:
    """Write `flow` in the KITTI 16-bit PNG convention: R = dx*64 + 2^15, G = dy*64 + 2^15, B = valid.

    Values are rounded to the 1/64 px grid (exact for flows already on it) and must lie within
    -512..KITTI_FLOW_MAX px on valid pixels. Invalid pixels are stored as zero flow."""
    flow = _check_flow(flow)
    valid = np.isfinite(flow).all(axis=2) if valid is None else np.asarray(valid, bool)
    if valid.shape != flow.shape[:2]:
        raise ValueError(f"valid mask shape {valid.shape} does not match flow {flow.shape[:2]}")
    stored = np.where(valid[..., None], flow, 0.0)
    if stored.size and (stored.min() < -KITTI_FLOW_OFFSET / KITTI_FLOW_SCALE or stored.max() > KITTI_FLOW_MAX):
        raise ValueError(f"{path}: flow values {stored.min():.1f}..{stored.max():.1f} px exceed the KITTI PNG "
                         f"range of -512..{KITTI_FLOW_MAX} px")
    encoded = np.rint(stored.astype(np.float64) * KITTI_FLOW_SCALE + KITTI_FLOW_OFFSET).astype(np.uint16)
    # OpenCV writes BGR, so the valid flag goes first and dx last.
    bgr = np.dstack([valid.astype(np.uint16), encoded[..., 1], encoded[..., 0]])
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), bgr):
            raise OSError(f"{path}: could not write the PNG")


def read_kitti_flow_png(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a KITTI 16-bit flow PNG; returns (flow HxWx2 float32, valid HxW bool), flow 0 where invalid."""
    path = Path(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bgr is None:
        raise FlowFileError(f"{path}: cannot be read as an image")
    if bgr.dtype != np.uint16 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise FlowFileError(f"{path}: expected a 3-channel 16-bit PNG, got {bgr.dtype} {bgr.shape}")
    valid = bgr[..., 0] > 0
    flow = (bgr[..., 2:0:-1].astype(np.float32) - KITTI_FLOW_OFFSET) / KITTI_FLOW_SCALE
    flow[~valid] = 0.0
    return flow, valid


def write_flow(path: str | Path, flow: np.ndarray) -> None:
    """Write a flow file, format by suffix: .flo (exact float32) or .png (KITTI 16-bit)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".flo":
        write_flo(path, flow)
    elif suffix == ".png":
        write_kitti_flow_png(path, flow)
    else:
        raise ValueError(f"{path}: unknown flow file type; expected .flo or .png")


def read_flow(path: str | Path) -> np.ndarray:
    """Read a .flo or KITTI .png flow file (invalid KITTI pixels become NaN)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".flo":
        return read_flo(path)
    if suffix == ".png":
        flow, valid = read_kitti_flow_png(path)
        flow[~valid] = np.nan
        return flow
    raise ValueError(f"{path}: unknown flow file type; expected .flo or .png")


# --------------------------------------------------------------------------------------------------
# Middlebury colour coding


def make_color_wheel() -> np.ndarray:
    """The Middlebury colour wheel (Baker et al.): 55 RGB hues, float in 0..255."""
    segments = ((15, (255, "up", 0)), (6, ("down", 255, 0)), (4, (0, 255, "up")),
                (11, (0, "down", 255)), (13, ("up", 0, 255)), (6, (255, 0, "down")))
    rows = []
    for n, channels in segments:
        ramp = np.floor(255.0 * np.arange(n) / n)
        block = np.zeros((n, 3))
        for c, value in enumerate(channels):
            block[:, c] = ramp if value == "up" else 255.0 - ramp if value == "down" else value
        rows.append(block)
    return np.concatenate(rows)


COLOR_WHEEL = make_color_wheel()
_WHEEL_ROW = np.ascontiguousarray(np.vstack([COLOR_WHEEL, COLOR_WHEEL[:1]])[None] / 255.0, np.float32)


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Middlebury colour coding of `flow` to HxWx3 uint8 RGB: hue = direction, saturation = magnitude.

    `max_magnitude` is the magnitude (px) that maps to full saturation: None normalises each frame by
    its own largest magnitude (display); a fixed number keeps one scale across frames (network input).
    Magnitudes beyond it keep their hue and are darkened, as in the reference code. NaN shows as 0 flow.
    Channels are within one level of the reference computeColor (hue interpolation in 1/32 steps)."""
    flow = _check_flow(flow)
    u = flow[..., 0].copy()
    v = flow[..., 1].copy()
    cv2.patchNaNs(u, 0.0)
    cv2.patchNaNs(v, 0.0)
    rad = cv2.magnitude(u, v)
    if max_magnitude is None:
        scale = float(rad.max(initial=0.0)) + 1e-5
    elif max_magnitude > 0:
        scale = float(max_magnitude)
    else:
        raise ValueError(f"max_magnitude must be positive, got {max_magnitude}")
    rad *= np.float32(1.0 / scale)
    ncols = len(COLOR_WHEEL)
    fk = np.arctan2(-v, -u)
    fk *= np.float32(1.0 / np.pi)
    fk += np.float32(1.0)
    fk *= np.float32((ncols - 1) / 2)
    # Linear interpolation between neighbouring wheel hues, done by remap over a one-row wheel image
    # whose extra last entry repeats the first (the wrap-around of k1 = k0 + 1).
    hue = cv2.remap(_WHEEL_ROW, fk, np.zeros_like(fk), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # Inside the unit disc colour = 1 - rad * (1 - hue) = (1 - rad) + rad * hue; outside 0.75 * hue.
    inside = rad <= 1.0
    gain = np.where(inside, rad, np.float32(0.75)) * np.float32(255.0)
    offset = np.where(inside, (np.float32(1.0) - rad) * np.float32(255.0), np.float32(0.0))
    rgb = hue * gain[..., None]
    rgb += offset[..., None]
    return rgb.astype(np.uint8)  # truncation = floor for these non-negative values


def color_to_magnitude(rgb: np.ndarray, max_magnitude: float = 1.0) -> np.ndarray:
    """The flow magnitude (HxW float32) that flow_to_color coded as `rgb` at `max_magnitude`: the
    saturation, read without the hue lookup of color_to_flow (cheap enough for whole datasets)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 colour image, got shape {rgb.shape}")
    # Inside the wheel each colour is 1 - rad * (1 - hue); every hue has one channel at 1 and one at 0.
    return ((255 - rgb.min(axis=2)).astype(np.float32) / 255.0) * np.float32(max_magnitude)


def color_to_flow(rgb: np.ndarray, max_magnitude: float = 1.0) -> np.ndarray:
    """Approximate inverse of flow_to_color for colours inside the wheel (|flow| <= max_magnitude):
    the direction from the nearest wheel hue, the magnitude from the saturation. Used to read flow PNGs
    back for display and checks; colours of darkened (out-of-range) flow decode to their direction."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 colour image, got shape {rgb.shape}")
    desat = 1.0 - rgb.astype(np.float32) / 255.0
    angles = np.linspace(-np.pi, np.pi, 3601)[:-1]
    table = flow_to_color(np.stack([np.cos(angles), np.sin(angles)], -1)[None].astype(np.float32), 1.0)[0]
    table_desat = 1.0 - table.astype(np.float32) / 255.0
    table_desat /= np.maximum(np.linalg.norm(table_desat, axis=1, keepdims=True), 1e-6)
    query = desat / np.maximum(np.linalg.norm(desat, axis=2, keepdims=True), 1e-6)
    best = np.argmax(query.reshape(-1, 3) @ table_desat.T, axis=1).reshape(rgb.shape[:2])
    angle = angles[best]
    magnitude = color_to_magnitude(rgb, max_magnitude)
    return np.stack([np.cos(angle) * magnitude, np.sin(angle) * magnitude], -1).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Ego flow from depth and pose


def _check_intrinsics(K: np.ndarray) -> np.ndarray:
    K = np.asarray(K, np.float64)
    if K.shape != (3, 3) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"intrinsics: expected a 3x3 matrix with positive focal lengths, got {K.tolist()}")
    return K


def _check_pose(T: np.ndarray, name: str) -> np.ndarray:
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise ValueError(f"{name}: expected a finite 4x4 matrix, got shape {T.shape}")
    return T


def relative_pose(world_from_camera0: np.ndarray, world_from_camera1: np.ndarray) -> np.ndarray:
    """camera1_from_camera0: maps a point in the first camera's frame into the second's."""
    T0 = _check_pose(world_from_camera0, "world_from_camera0")
    T1 = _check_pose(world_from_camera1, "world_from_camera1")
    return np.linalg.inv(T1) @ T0


def pixel_grid(height: int, width: int) -> np.ndarray:
    """HxWx2 float32 (x, y) coordinates of every pixel."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([xs, ys], -1)


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to ...x3 points (elementwise: 3x3 products through BLAS are slow
    on many points)."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return np.stack([T[r, 0] * x + T[r, 1] * y + T[r, 2] * z + T[r, 3] for r in range(3)], -1)


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """HxWx3 camera-frame points D * K^-1 [u, v, 1] of a depth map (metres along z)."""
    K = _check_intrinsics(K)
    h, w = depth.shape
    grid = pixel_grid(h, w)
    x = (grid[..., 0] - K[0, 2]) / K[0, 0] * depth
    y = (grid[..., 1] - K[1, 2]) / K[1, 1] * depth
    return np.stack([x, y, depth], -1).astype(np.float32)


def ego_flow(depth: np.ndarray, K: np.ndarray, camera1_from_camera0: np.ndarray,
             ) -> tuple[np.ndarray, np.ndarray]:
    """Flow that the camera's own motion causes on a static scene: back-project each pixel with its depth,
    move it by `camera1_from_camera0`, project with K. Returns (flow HxWx2 float32, valid HxW bool);
    pixels with depth <= 0 or not finite, or landing behind the second camera, are invalid (flow 0)."""
    depth = np.asarray(depth, np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth: expected an HxW map, got shape {depth.shape}")
    K = _check_intrinsics(K)
    T = _check_pose(camera1_from_camera0, "camera1_from_camera0")
    valid = np.isfinite(depth) & (depth > 0)
    points = backproject(np.where(valid, depth, 0.0), K).astype(np.float64)
    moved = transform_points(T, points)
    z = moved[..., 2]
    valid &= z > 1e-6
    z = np.where(valid, z, 1.0)
    u = K[0, 0] * moved[..., 0] / z + K[0, 2]
    v = K[1, 1] * moved[..., 1] / z + K[1, 2]
    grid = pixel_grid(*depth.shape)
    flow = np.stack([u - grid[..., 0], v - grid[..., 1]], -1).astype(np.float32)
    flow[~valid] = 0.0
    return flow, valid


def rotation_flow(K: np.ndarray, camera1_from_camera0: np.ndarray, height: int, width: int) -> np.ndarray:
    """Flow of points at infinity (the rotation part of the camera motion): the homography K R K^-1."""
    K = _check_intrinsics(K)
    T = _check_pose(camera1_from_camera0, "camera1_from_camera0")
    return homography_flow(K @ T[:3, :3] @ np.linalg.inv(K), height, width)


def scene_flow(depth0: np.ndarray, depth1: np.ndarray, flow: np.ndarray, K: np.ndarray,
               camera1_from_camera0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3-D motion of each pixel's surface point between the frames, in metres, expressed in the first
    camera's axes: the point from `depth0`, its match at pixel + `flow` with depth from `depth1`, the
    second point moved back into the first camera. Static points get ~0 whatever their direction,
    including motion along epipolar lines. Returns (HxWx3 float32, valid HxW bool)."""
    flow = _check_flow(flow)
    depth0 = np.asarray(depth0, np.float32)
    depth1 = np.asarray(depth1, np.float32)
    if depth0.shape != flow.shape[:2] or depth1.shape != flow.shape[:2]:
        raise ValueError(f"depth maps {depth0.shape}, {depth1.shape} do not match flow {flow.shape[:2]}")
    K = _check_intrinsics(K)
    T = _check_pose(camera1_from_camera0, "camera1_from_camera0")
    target = pixel_grid(*depth0.shape) + np.nan_to_num(flow)
    # Nearest sampling: interpolating depth across an object boundary invents points in mid-air.
    d1 = sample_at_flow(depth1, flow, nearest=True)
    valid = (depth0 > 0) & np.isfinite(depth0) & (d1 > 0) & np.isfinite(d1) & np.isfinite(flow).all(axis=2)
    p0 = backproject(np.where(valid, depth0, 0.0), K).astype(np.float64)
    x1 = (target[..., 0] - K[0, 2]) / K[0, 0] * d1
    y1 = (target[..., 1] - K[1, 2]) / K[1, 1] * d1
    p1 = np.stack([x1, y1, d1], -1).astype(np.float64)
    inverse = np.linalg.inv(T)
    p1_in_0 = transform_points(inverse, p1)
    motion = (p1_in_0 - p0).astype(np.float32)
    motion[~valid] = 0.0
    return motion, valid


def suppress_ego_flow(flow: np.ndarray, ego: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Ego-flow suppressed flow = flow - ego flow; 0 where the ego flow is unknown (`valid` False)."""
    flow = _check_flow(flow)
    ego = _check_flow(ego, "ego flow")
    if ego.shape != flow.shape:
        raise ValueError(f"ego flow shape {ego.shape} does not match flow {flow.shape}")
    residual = flow - ego
    if valid is not None:
        residual[~np.asarray(valid, bool)] = 0.0
    return residual


# --------------------------------------------------------------------------------------------------
# Background motion without depth: RANSAC homography and fundamental matrix


@dataclass
class BackgroundMotion:
    """The camera's motion as seen in the flow of the background (pixels outside instance masks)."""

    homography: np.ndarray | None   # 3x3, first-frame (x, y) -> second-frame (x, y)
    fundamental: np.ndarray | None  # 3x3, x1^T F x0 = 0 for static points
    homography_inliers: float       # fraction of the sampled points within the RANSAC threshold
    fundamental_inliers: float
    num_points: int


def background_correspondences(flow: np.ndarray, exclude: np.ndarray | None = None, step: int = 8,
                               border: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Point matches (x0, x1), each Nx2 float32 (x, y), on a grid of every `step`-th pixel outside the
    `exclude` mask (instance masks, dilated by the caller if needed) and `border` pixels from the edge."""
    flow = _check_flow(flow)
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[border:h - border:step, border:w - border:step]
    keep = np.isfinite(flow[ys, xs]).all(axis=-1)
    if exclude is not None:
        if exclude.shape != (h, w):
            raise ValueError(f"exclude mask shape {exclude.shape} does not match flow {(h, w)}")
        keep &= ~exclude[ys, xs]
    xs, ys = xs[keep], ys[keep]
    x0 = np.stack([xs, ys], -1).astype(np.float32)
    return x0, x0 + flow[ys, xs]


def fit_background_motion(flow: np.ndarray, exclude: np.ndarray | None = None, step: int = 8,
                          homography_threshold: float = 1.0, fundamental_threshold: float = 0.5,
                          seed: int = 0) -> BackgroundMotion:
    """Fit the background's homography and fundamental matrix with RANSAC on flow outside `exclude`.
    Either model is None when there are too few points or the fit fails (e.g. a still camera makes F
    degenerate); thresholds are in pixels (reprojection for H, Sampson distance for F)."""
    x0, x1 = background_correspondences(flow, exclude, step)
    n = len(x0)
    if n < 16:
        return BackgroundMotion(None, None, 0.0, 0.0, n)
    cv2.setRNGSeed(seed)
    H, h_mask = cv2.findHomography(x0, x1, cv2.RANSAC, homography_threshold, maxIters=2000, confidence=0.999)
    F, f_mask = None, None
    # Under a pure rotation or a still camera all matches fit a homography and F is undefined.
    if np.median(np.linalg.norm(x1 - x0, axis=1)) > 0.05:
        F, f_mask = cv2.findFundamentalMat(x0, x1, cv2.FM_RANSAC, fundamental_threshold, 0.999, 2000)
        if F is not None and F.shape != (3, 3):
            F = F[:3]  # the 7-point solver may return several stacked solutions
    return BackgroundMotion(
        homography=H,
        fundamental=F,
        homography_inliers=float(h_mask.mean()) if H is not None else 0.0,
        fundamental_inliers=float(f_mask.mean()) if F is not None else 0.0,
        num_points=n,
    )


def essential_motion(flow: np.ndarray, K: np.ndarray, exclude: np.ndarray | None = None, step: int = 8,
                     threshold: float = 0.5, seed: int = 0) -> tuple[np.ndarray | None, float]:
    """The camera's relative motion (camera1_from_camera0, translation scaled to length 1) from the
    background flow and intrinsics K: essential matrix (5-point, USAC) and its decomposition. Returns
    (None, 0) when the camera does not translate measurably (the motion is then not observable)."""
    K = _check_intrinsics(K)
    x0, x1 = background_correspondences(flow, exclude, step)
    if len(x0) < 16 or np.median(np.linalg.norm(x1 - x0, axis=1)) < 0.1:
        return None, 0.0
    cv2.setRNGSeed(seed)
    # USAC with local optimisation: on the offline world's background flow it halves the worst errors of
    # the translation's direction against plain RANSAC (90th percentile 4 degrees instead of 8).
    E, mask = cv2.findEssentialMat(x0, x1, K, cv2.USAC_ACCURATE, 0.999, threshold)
    if E is None or E.shape != (3, 3):
        return None, 0.0
    _, R, t, pose_mask = cv2.recoverPose(E, x0, x1, K, mask=mask.copy())
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t.ravel() / max(np.linalg.norm(t), 1e-12)
    return T, float(np.count_nonzero(pose_mask)) / len(x0)


def fundamental_from_motion(K: np.ndarray, camera1_from_camera0: np.ndarray) -> np.ndarray:
    """F = K^-T [t]x R K^-1 of a calibrated camera pair (well defined even when the scene is a plane,
    where fitting F from matches is degenerate)."""
    K = _check_intrinsics(K)
    T = _check_pose(camera1_from_camera0, "camera1_from_camera0")
    t = T[:3, 3]
    cross = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    K_inv = np.linalg.inv(K)
    return K_inv.T @ cross @ T[:3, :3] @ K_inv


def triangulate_depth(x0: np.ndarray, x1: np.ndarray, K: np.ndarray, camera1_from_camera0: np.ndarray
                      ) -> np.ndarray:
    """Depth (z in the first camera, in the units of the pose's translation) of matches (x0, x1), Nx2."""
    K = _check_intrinsics(K)
    T = _check_pose(camera1_from_camera0, "camera1_from_camera0")
    P0 = K @ np.hstack([np.eye(3), np.zeros((3, 1))])
    P1 = K @ T[:3]
    X = cv2.triangulatePoints(P0, P1, np.asarray(x0, np.float64).T, np.asarray(x1, np.float64).T)
    with np.errstate(divide="ignore", invalid="ignore"):
        return X[2] / X[3]


def fit_ground_plane(points: np.ndarray, relative_threshold: float = 0.02, iterations: int = 300,
                     min_vertical: float = 0.8, seed: int = 0) -> tuple[np.ndarray, float, float] | None:
    """RANSAC plane n.X = d (|n| = 1, n pointing down the camera's y axis) through Nx3 camera-frame
    points, for the road seen by a forward camera: the normal must have |n_y| >= `min_vertical`; a point
    is an inlier when its distance is below `relative_threshold` times its depth (triangulation error
    grows with depth). Returns (n, d, inlier fraction) or None."""
    points = np.asarray(points, np.float64)
    points = points[np.isfinite(points).all(axis=1) & (points[:, 2] > 0)]
    if len(points) < 10:
        return None
    rng = np.random.default_rng(seed)
    tolerance = relative_threshold * points[:, 2]
    best, best_count = None, 0
    for _ in range(iterations):
        a, b, c = points[rng.choice(len(points), 3, replace=False)]
        normal = np.cross(b - a, c - a)
        norm = np.linalg.norm(normal)
        if norm < 1e-12:
            continue
        normal /= norm
        if abs(normal[1]) < min_vertical:
            continue
        count = np.count_nonzero(np.abs(points @ normal - normal @ a) < tolerance)
        if count > best_count:
            best, best_count = (normal, normal @ a), count
    if best is None:
        return None
    normal, offset = best
    inliers = np.abs(points @ normal - offset) < tolerance
    centroid = points[inliers].mean(axis=0)
    centred = points[inliers] - centroid
    _, vectors = np.linalg.eigh(centred.T @ centred)  # least-squares normal: smallest eigenvector
    normal = vectors[:, 0] if vectors[1, 0] > 0 else -vectors[:, 0]
    offset = float(normal @ centroid)
    if offset < 0:
        normal, offset = -normal, -offset
    return normal, offset, float(inliers.mean())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two vectors (0 when either is zero)."""
    return float(np.dot(a, b)) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12)


@dataclass
class RoadMotion:
    """The camera's motion over a frame pair measured on the road, the plane n.X = 1 it drives on (camera
    heights): X1 = R X0 + t for every point, and the road's pixels map by H = K (R + t n^T) K^-1."""

    motion: np.ndarray        # camera1_from_camera0, translation in camera heights
    normal: np.ndarray        # unit normal of the road in camera 0, pointing down (image y)
    homography: np.ndarray    # the fitted road homography, first-frame (x, y) -> second-frame (x, y)
    inliers: float            # fraction of the road points within the fit's threshold


def road_motion(flow: np.ndarray, K: np.ndarray, exclude: np.ndarray | None = None, step: int = 4,
                threshold: float = 0.7, horizon_margin: int = 8, reference: np.ndarray | None = None,
                seed: int = 0) -> RoadMotion | None:
    """The camera's motion and the road plane from the flow of the image below the horizon (rows below
    the principal point plus `horizon_margin`, outside `exclude`): the road homography fitted with USAC,
    decomposed with K into rotation, translation over the camera's height and the road's normal. Of the
    decomposition's solutions those are kept whose plane lies below the camera and in front of the
    road points; of them, given `reference` (a camera motion from the essential matrix), the one whose
    translation points the same way, else the one with the most level road. Plane plus parallax: a
    point on the road (an object's ground contact) moves exactly as the fitted homography says,
    whatever the error of the decomposition, which only scales the parallax of points above the road.
    None when the road gives too few points or no valid solution. Where DIS loses the road (the nearest
    rows of a smooth road move by tens of pixels) the fit may go wrong: check it (the annotator takes it
    only when its plane is level under the camera)."""
    K = _check_intrinsics(K)
    flow = _check_flow(flow)
    h = flow.shape[0]
    below = np.zeros(flow.shape[:2], bool)
    below[: min(h, int(K[1, 2]) + horizon_margin)] = True
    x0, x1 = background_correspondences(flow, below if exclude is None else below | exclude, step)
    if len(x0) < 30:
        return None
    cv2.setRNGSeed(seed)
    H, mask = cv2.findHomography(x0, x1, cv2.USAC_ACCURATE, threshold, maxIters=2000, confidence=0.999)
    if H is None:
        return None
    inliers = mask.ravel() > 0
    rays = np.linalg.solve(K, np.vstack([x0[inliers].T, np.ones(int(inliers.sum()))]))
    best, best_agreement = None, -np.inf
    for R, t, n in zip(*cv2.decomposeHomographyMat(H, K)[1:]):
        t, n = t.ravel(), n.ravel()
        # The road lies below the camera (n along +y) and every road point in front of it (n.ray > 0).
        if n[1] <= 0 or np.mean(n @ rays > 0) < 0.9:
            continue
        # Along the reference's translation, or without one the most level road.
        agreement = cosine(t, reference[:3, 3]) if reference is not None else float(n[1])
        if agreement > best_agreement:
            best, best_agreement = (R, t, n), agreement
    if best is None:
        return None
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = best[0], best[1]
    return RoadMotion(T, best[2] / np.linalg.norm(best[2]), H, float(inliers.mean()))


def homography_flow(H: np.ndarray, height: int, width: int) -> np.ndarray:
    """The flow a homography induces on every pixel (HxWx2 float32)."""
    H = np.asarray(H, np.float64)
    if H.shape != (3, 3):
        raise ValueError(f"homography: expected 3x3, got {H.shape}")
    grid = pixel_grid(height, width)
    x, y = grid[..., 0], grid[..., 1]
    # Elementwise rather than a matrix product: 3x3 products over many points are slow through BLAS.
    w = H[2, 0] * x + H[2, 1] * y + H[2, 2]
    w = np.where(np.abs(w) < 1e-12, 1e-12, w)
    u = (H[0, 0] * x + H[0, 1] * y + H[0, 2]) / w - x
    v = (H[1, 0] * x + H[1, 1] * y + H[1, 2]) / w - y
    return np.stack([u, v], -1).astype(np.float32)


def sampson_distance(F: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """First-order geometric (Sampson) distance in pixels of matches (x0, x1) (Nx2, (x, y)) to the
    epipolar geometry F; 0 for a static point under any camera motion with a correct F."""
    F = np.asarray(F, np.float64)
    if F.shape != (3, 3):
        raise ValueError(f"fundamental matrix: expected 3x3, got {F.shape}")
    x0 = np.asarray(x0, np.float64).reshape(-1, 2)
    x1 = np.asarray(x1, np.float64).reshape(-1, 2)
    u0, v0, u1, v1 = x0[:, 0], x0[:, 1], x1[:, 0], x1[:, 1]
    # Epipolar line of x0 in the second image (F x0) and of x1 in the first (F^T x1).
    a1 = F[0, 0] * u0 + F[0, 1] * v0 + F[0, 2]
    b1 = F[1, 0] * u0 + F[1, 1] * v0 + F[1, 2]
    c1 = F[2, 0] * u0 + F[2, 1] * v0 + F[2, 2]
    a0 = F[0, 0] * u1 + F[1, 0] * v1 + F[2, 0]
    b0 = F[0, 1] * u1 + F[1, 1] * v1 + F[2, 1]
    algebraic = u1 * a1 + v1 * b1 + c1
    denominator = a1**2 + b1**2 + a0**2 + b0**2
    return np.abs(algebraic) / np.sqrt(np.maximum(denominator, 1e-18))


def sampson_map(F: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sampson distance of every pixel's flow to F (HxW float32)."""
    flow = _check_flow(flow)
    grid = pixel_grid(*flow.shape[:2])
    distance = sampson_distance(F, grid.reshape(-1, 2), (grid + flow).reshape(-1, 2))
    return distance.reshape(flow.shape[:2]).astype(np.float32)


def epipole(F: np.ndarray) -> np.ndarray:
    """The epipole in the first image, (x, y, w) homogeneous (right null vector of F)."""
    _, _, vt = np.linalg.svd(np.asarray(F, np.float64))
    return vt[-1]
