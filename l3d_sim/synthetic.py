"""Analytic stereo scenes with exact depth: textured planes seen by a rectified pair.

Used by the end-to-end tests and as the quickest built-in source of stereo frames: each pixel's
ray is intersected with the plane analytically, and the plane carries a band-limited random
texture fixed to its own coordinates, so both views see the same surface.
"""
import cv2
import numpy as np

from l3d_ros.geometry import pixel_grid, StereoCalib


def plane_texture(rng: np.random.Generator, size_px: int = 2048,
                  blur_px: float = 1.5) -> np.ndarray:
    """(size, size) float32 texture in [0, 1]: white noise low-passed to about 2 pixels."""
    tex = cv2.GaussianBlur(rng.random((size_px, size_px), dtype=np.float32), (0, 0), blur_px)
    lo, hi = tex.min(), tex.max()
    return (tex - lo) / max(hi - lo, 1e-6)


def _plane_basis(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.array([0.0, 1.0, 0.0]) if abs(normal[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(helper, normal)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(normal, e1)


def render_plane_view(calib: StereoCalib, normal: np.ndarray, distance_m: float,
                      texture: np.ndarray, texel_m: float,
                      camera_x_m: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One view of the plane {X : n.X = distance_m} given in the LEFT optical frame.

    camera_x_m: this camera's centre on the left camera's x axis (0 left, baseline_m right).
    Returns (image float32 in [0, 1], depth_m float32 along this camera's z, NaN off-plane).
    """
    n = np.asarray(normal, np.float64)
    n /= np.linalg.norm(n)
    v, u = pixel_grid(calib.height, calib.width)
    rays = np.stack([(u - calib.cx) / calib.fx, (v - calib.cy) / calib.fy,
                     np.ones_like(u)], axis=-1).astype(np.float64)       # (H, W, 3), z = 1
    centre = np.array([camera_x_m, 0.0, 0.0])
    with np.errstate(divide='ignore', invalid='ignore'):
        t = (distance_m - n @ centre) / (rays @ n)                          # (H, W) = depth
    t[~(t > 0)] = np.nan
    points = centre + rays * t[..., None]
    e1, e2 = _plane_basis(n)
    half = texture.shape[0] / 2
    map_x = (points @ e1 / texel_m + half).astype(np.float32)
    map_y = (points @ e2 / texel_m + half).astype(np.float32)
    image = cv2.remap(texture, np.nan_to_num(map_x, nan=-1), np.nan_to_num(map_y, nan=-1),
                      cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return image, t.astype(np.float32)


def plane_pair(calib: StereoCalib, depth_m: float, tilt_deg: float = 0.0,
               seed: int = 0, texel_m: float | None = None):
    """Rectified pair of a textured plane crossing the optical axis at `depth_m`.

    tilt_deg rotates the plane about the camera x axis (0: fronto-parallel).
    Returns (left uint8, right uint8, depth_m of the left view float32).
    """
    tilt = np.radians(tilt_deg)
    normal = np.array([0.0, -np.sin(tilt), np.cos(tilt)])
    distance = depth_m * normal[2]
    texel = texel_m or depth_m / calib.fx           # about one pixel per texel on the axis
    texture = plane_texture(np.random.default_rng(seed))
    left, depth = render_plane_view(calib, normal, distance, texture, texel)
    right, _ = render_plane_view(calib, normal, distance, texture, texel, calib.baseline_m)
    to8 = (lambda img: np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8))
    return to8(left), to8(right), depth
