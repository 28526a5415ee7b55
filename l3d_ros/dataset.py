"""Stereo pair folders (INTERFACES.md section 3): the one reader and writer of the format."""
from dataclasses import dataclass
import json
from pathlib import Path

import cv2
import numpy as np

from l3d_ros.geometry import StereoCalib

HAZARD_SAFE, HAZARD_HAZARD, HAZARD_UNKNOWN = 0, 1, 255


@dataclass
class StereoPair:
    """One pair folder's content; images as stored (uint8/uint16 (H, W), or RGB (H, W, 3))."""

    name: str
    left: np.ndarray
    right: np.ndarray
    calib: StereoCalib
    depth_m: np.ndarray | None = None        # (H, W) float32, NaN where no ground truth
    hazard: np.ndarray | None = None         # (H, W) uint8: 0 safe, 1 hazard, 255 unknown
    R_world_cam: np.ndarray | None = None    # (3, 3) left optical frame in `map`
    t_world_cam: np.ndarray | None = None    # (3,) [m]


def list_pairs(dataset: Path) -> list[Path]:
    """Pair folders of a dataset, sorted by name; a folder is a pair if it holds left.png."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise FileNotFoundError(f'dataset={str(dataset)!r}: expected a folder of pair folders')
    pairs = sorted(p for p in dataset.iterdir() if (p / 'left.png').is_file())
    if not pairs:
        raise FileNotFoundError(f'dataset={str(dataset)!r}: no pair folder (with left.png) in it')
    return pairs


def _read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f'{path}: missing (a pair folder needs left.png and right.png)')
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f'{path}: not a readable PNG')
    if img.ndim == 3:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f'{path}: dtype {img.dtype}, expected 8- or 16-bit')
    return img


def read_pair(folder: Path, with_truth: bool = True) -> StereoPair:
    """Read a pair folder; ground truth (depth.npy, hazard.npy, pose.json) when present."""
    folder = Path(folder)
    left, right = _read_image(folder / 'left.png'), _read_image(folder / 'right.png')
    calib = StereoCalib.from_json(folder / 'calib.json')
    if left.shape[:2] != right.shape[:2] or left.shape[:2] != calib.shape:
        raise ValueError(f'{folder}: left {left.shape[:2]}, right {right.shape[:2]} and calib '
                         f'{calib.shape} (height, width) must agree')
    pair = StereoPair(folder.name, left, right, calib)
    if not with_truth:
        return pair
    if (folder / 'depth.npy').is_file():
        pair.depth_m = np.load(folder / 'depth.npy', allow_pickle=False).astype(np.float32)
        pair.depth_m[~np.isfinite(pair.depth_m)] = np.nan
        _check_shape(folder / 'depth.npy', pair.depth_m, calib)
    if (folder / 'hazard.npy').is_file():
        pair.hazard = np.load(folder / 'hazard.npy', allow_pickle=False).astype(np.uint8)
        _check_shape(folder / 'hazard.npy', pair.hazard, calib)
    if (folder / 'pose.json').is_file():
        pose = json.loads((folder / 'pose.json').read_text())
        pair.R_world_cam = np.asarray(pose['R_world_cam'], np.float64).reshape(3, 3)
        pair.t_world_cam = np.asarray(pose['t_world_cam'], np.float64).reshape(3)
    return pair


def _check_shape(path: Path, array: np.ndarray, calib: StereoCalib) -> None:
    if array.shape != calib.shape:
        raise ValueError(f'{path}: shape {array.shape}, expected {calib.shape} (height, width)')


def write_pair(folder: Path, pair: StereoPair) -> None:
    """Write `pair` as a pair folder (creates it); optional fields only when set."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, img in (('left.png', pair.left), ('right.png', pair.right)):
        out = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
        if not cv2.imwrite(str(folder / name), out):
            raise OSError(f'{folder / name}: could not write')
    pair.calib.to_json(folder / 'calib.json')
    if pair.depth_m is not None:
        np.save(folder / 'depth.npy', np.asarray(pair.depth_m, np.float32))
    if pair.hazard is not None:
        np.save(folder / 'hazard.npy', np.asarray(pair.hazard, np.uint8))
    if pair.R_world_cam is not None:
        pose = {'R_world_cam': np.asarray(pair.R_world_cam).tolist(),
                't_world_cam': np.asarray(pair.t_world_cam).tolist()}
        (folder / 'pose.json').write_text(json.dumps(pose, indent=2) + '\n')
