"""Stereo geometry (pure numpy): calibration, disparity <-> depth, back-projection, frames.

Conventions (INTERFACES.md section 2): camera optical frame x right, y down, z forward; depth is
z in metres, NaN where unknown; the right camera sits `baseline_m` along +x of the left one.
"""
from dataclasses import asdict, dataclass
import json
import math
from pathlib import Path

import numpy as np


FOV_MAX_DEG = 170.0      # a rectified pinhole image wider than this is a bad calibration


@dataclass(frozen=True)
class StereoCalib:
    """Rectified pinhole pair; the left camera is the reference. Pixels and metres."""

    fx: float
    fy: float
    cx: float
    cy: float
    baseline_m: float
    width: int
    height: int

    def __post_init__(self):
        for name in ('fx', 'fy', 'cx', 'cy', 'baseline_m'):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f'{name}={value!r}: expected a finite number')
        for name in ('fx', 'fy', 'baseline_m'):
            if getattr(self, name) <= 0:
                raise ValueError(f'{name}={getattr(self, name)!r}: expected > 0')
        for name in ('width', 'height'):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f'{name}={value!r}: expected a positive integer of pixels')
        for c, size, axis in (('cx', self.width, 'width'), ('cy', self.height, 'height')):
            if not -0.5 <= getattr(self, c) <= size - 0.5:
                raise ValueError(f'{c}={getattr(self, c)!r}: expected the principal point in '
                                 f'the image, -0.5 .. {size - 0.5} ({axis} {size} px)')
        for f, size in (('fx', self.width), ('fy', self.height)):
            fov = 2 * math.degrees(math.atan(size / 2 / getattr(self, f)))
            if fov >= FOV_MAX_DEG:
                raise ValueError(f'{f}={getattr(self, f)!r}: a field of view of {fov:.1f} deg '
                                 f'over {size} px; expected a pinhole camera under '
                                 f'{FOV_MAX_DEG:.0f} deg ({f} > '
                                 f'{size / 2 / math.tan(math.radians(FOV_MAX_DEG / 2)):.1f} px)')

    @property
    def K(self) -> np.ndarray:  # noqa: N802 (the usual name of the intrinsic matrix)
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], np.float64)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def scaled(self, width: int, height: int) -> 'StereoCalib':
        """The same rig seen at another resolution (pixel-centre convention kept)."""
        sx, sy = width / self.width, height / self.height
        return StereoCalib(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                           (self.cy + 0.5) * sy - 0.5, self.baseline_m, width, height)

    @classmethod
    def from_dict(cls, raw: dict) -> 'StereoCalib':
        keys = ('fx', 'fy', 'cx', 'cy', 'baseline_m', 'width', 'height')
        if missing := [k for k in keys if k not in raw]:
            raise ValueError(f'calibration lacks {missing}; expected keys {list(keys)}')
        return cls(*(float(raw[k]) for k in keys[:5]), int(raw['width']), int(raw['height']))

    @classmethod
    def from_json(cls, path: Path) -> 'StereoCalib':
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except ValueError as exc:
            raise ValueError(f'{path}: {exc}') from None

    def to_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + '\n')


def _fb_over(values: np.ndarray, fx: float, baseline_m: float) -> np.ndarray:
    """f B / v as float32; non-positive or non-finite v -> NaN. Z = fB/d and d = fB/Z alike."""
    v = np.asarray(values, np.float32)
    with np.errstate(divide='ignore', invalid='ignore'):
        out = np.float32(fx * baseline_m) / v
    out[~(v > 0) | ~np.isfinite(v)] = np.nan
    return out


def disparity_to_depth(disp_px: np.ndarray, fx: float, baseline_m: float) -> np.ndarray:
    """Z = f B / d. disp_px: (H, W) [px]; non-positive or non-finite -> NaN. float32 [m]."""
    return _fb_over(disp_px, fx, baseline_m)


def depth_to_disparity(depth_m: np.ndarray, fx: float, baseline_m: float) -> np.ndarray:
    """d = f B / Z [px]; the inverse of `disparity_to_depth` (NaN stays NaN)."""
    return _fb_over(depth_m, fx, baseline_m)


def depth_sigma_m(depth_m: np.ndarray, fx: float, baseline_m: float,
                  disparity_sigma_px: float) -> np.ndarray:
    """Stereo range noise sigma_Z = Z^2 sigma_d / (f B) [m], the first-order error propagation."""
    depth = np.asarray(depth_m, np.float32)
    return (depth * depth * np.float32(disparity_sigma_px / (fx * baseline_m))).astype(np.float32)


def stereo_visible(depth_m: np.ndarray, calib: StereoCalib,
                   occlusion_tol_px: float = 1.0) -> np.ndarray:
    """(H, W) bool: the left pixel's ground point is seen by the right camera as well.

    In a rectified pair the point of left column u appears at u - d in the right image
    (d = f B / Z). It is unseen when u - d falls off the right image (the left strip about
    d wide, where no stereo method can match) or when a nearer point of the same row lands on
    the same right-image pixel (occluded: its disparity exceeds d by more than
    occlusion_tol_px; within it, two left pixels share one right pixel on a foreshortened
    slope). NaN or non-positive depth -> False. What any stereo matcher can measure at most,
    from the true depth (scripts/stereo_ceiling.py); the backends judge the strip from their
    own disparity (l3d_ros.backends.base.unseen_by_right).
    """
    depth = np.asarray(depth_m, np.float32)
    if depth.ndim != 2:
        raise ValueError(f'depth_m.shape={depth.shape}: expected (H, W)')
    if not occlusion_tol_px >= 0:
        raise ValueError(f'occlusion_tol_px={occlusion_tol_px!r}: expected >= 0')
    h, w = depth.shape
    disparity = depth_to_disparity(depth, calib.fx, calib.baseline_m)
    v, u = pixel_grid(h, w)
    with np.errstate(invalid='ignore'):
        column = np.rint(u - disparity)
        seen = np.isfinite(column) & (column >= 0)
    index = v[seen].astype(np.int64) * w + column[seen].astype(np.int64)
    nearest = np.full(h * w, -np.inf, np.float32)      # z-buffer of the right image, as d
    np.maximum.at(nearest, index, disparity[seen])
    seen[seen] = disparity[seen] >= nearest[index] - np.float32(occlusion_tol_px)
    return seen


def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(v, u) float32 pixel-centre coordinates, each (H, W): rows v, columns u."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    return v, u


def backproject(depth_m: np.ndarray, calib: StereoCalib) -> np.ndarray:
    """Organised points in the left optical frame: (H, W) depth -> (H, W, 3) [m], NaN kept."""
    h, w = depth_m.shape
    v, u = pixel_grid(h, w)
    z = np.asarray(depth_m, np.float32)
    x = (u - np.float32(calib.cx)) * z / np.float32(calib.fx)
    y = (v - np.float32(calib.cy)) * z / np.float32(calib.fy)
    return np.stack([x, y, z], axis=-1)


def project(points_cam: np.ndarray, calib: StereoCalib) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3) points in the left optical frame -> (u, v) pixel coordinates (NaN behind)."""
    x, y, z = points_cam[..., 0], points_cam[..., 1], points_cam[..., 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        zz = np.where(z > 0, z, np.nan)
        return calib.fx * x / zz + calib.cx, calib.fy * y / zz + calib.cy


def transform_points(points: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:  # noqa: N803
    """p_out = R p + t for (..., 3) points; R (3, 3), t (3,). NaN rows stay NaN."""
    return (points @ np.asarray(R, points.dtype).T + np.asarray(t, points.dtype)).astype(
        points.dtype)


def nadir_pose(altitude_m: float) -> tuple[np.ndarray, np.ndarray]:
    """R_world_cam, t_world_cam of a camera looking straight down from `altitude_m` in `map`.

    The optical z axis points to -z of the map, x right = +x of the map, y down = -y of the map.
    This is the pose assumed when no `camera_pose` arrives (INTERFACES.md section 5).
    """
    R = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])  # noqa: N806
    return R, np.array([0.0, 0.0, float(altitude_m)])


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Unit quaternion (x, y, z, w), as in geometry_msgs, -> (3, 3) rotation matrix."""
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not math.isfinite(n) or n < 1e-9:
        raise ValueError(f'quaternion ({x}, {y}, {z}, {w}): expected a finite non-zero norm')
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:  # noqa: N803
    """(3, 3) rotation matrix -> unit quaternion (x, y, z, w) with w >= 0."""
    m = np.asarray(R, np.float64)
    t = np.trace(m)
    if t > 0:
        s = 2.0 * math.sqrt(t + 1.0)
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4)
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 1e-12))
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i], q[j], q[k] = s / 4, (m[j, i] + m[i, j]) / s, (m[k, i] + m[i, k]) / s
    q = np.array(q)
    q = q if q[3] >= 0 else -q
    return tuple(float(c) for c in q / np.linalg.norm(q))
