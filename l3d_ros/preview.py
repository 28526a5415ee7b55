"""PNG overlay of one frame: left image, per-pixel hazard colours and the safe site (cv2 only)."""
from pathlib import Path

import cv2
import numpy as np

from l3d_ros.geometry import project, StereoCalib
from l3d_ros.site import FrameHazard

# BGR colours blended over the image: safe green, hazard red, unknown left as the image
_COLOURS = {0: (0, 200, 0), 1: (0, 0, 230)}
_ALPHA = 0.4


def render_overlay(left01: np.ndarray, frame: FrameHazard, calib: StereoCalib) -> np.ndarray:
    """(H, W) grey [0, 1] + hazard -> (H, W, 3) uint8 BGR; the safe site as a circle."""
    grey = (np.clip(left01, 0, 1) * 255).astype(np.uint8)
    img = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR).astype(np.float32)
    for value, colour in _COLOURS.items():
        sel = frame.pixel_hazard == value
        img[sel] = (1 - _ALPHA) * img[sel] + _ALPHA * np.float32(colour)
    out = img.astype(np.uint8)
    if frame.site is not None:
        p_map = np.array([*frame.site.xy_m, frame.site.height_m])
        p_cam = frame.R_world_cam.T @ (p_map - frame.t_world_cam)
        u, v = project(p_cam[None], calib)
        if np.isfinite(u[0]) and np.isfinite(v[0]):
            radius_px = frame.site.clearance_m * calib.fx / max(p_cam[2], 1e-6)
            centre = (int(round(u[0])), int(round(v[0])))
            cv2.circle(out, centre, max(3, int(round(radius_px))), (255, 255, 0), 2)
            cv2.drawMarker(out, centre, (255, 255, 0), cv2.MARKER_CROSS, 12, 2)
    return out


def write_overlay(path: Path, left01: np.ndarray, frame: FrameHazard,
                  calib: StereoCalib) -> None:
    if not cv2.imwrite(str(path), render_overlay(left01, frame, calib)):
        raise OSError(f'{path}: could not write')
