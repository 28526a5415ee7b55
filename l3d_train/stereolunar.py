"""StereoLunar (Grethen et al., ICCV-W 2025) -> rectified pair folders (INTERFACES.md section 3).

Layout, as read in the public repository clementinegrethen/StereoLunar (README.md "Data
Structure"; mast3r/dust3r/dust3r/datasets/LunarDataset.py; dataset-generation/process_dataset.py;
the samples in quick_testing/):

    ROOT/<split>.npz                  'scenes' (names), 'images' (frame stems), 'pairs': rows
                                      (scene_id, im1_id, im2_id, score) indexing those two lists
    ROOT/<scene>/<stem>.jpg           512 x 512 8-bit render (grey levels in 3 channels)
    ROOT/<scene>/<stem>.exr           z-depth [m] (process_dataset.py: range * |los_z|), one
                                      channel 'Y', HALF, PIZ-compressed in the samples
    ROOT/<scene>/<stem>.npz           'intrinsics' (3, 3), 'cam2world' (4, 4) selenocentric [m]

The split file may hold object arrays (mixed int/float pair rows); they are unpickled with an
allow-list of numpy's array reconstructors only. cam2world uses OpenCV camera axes (x right,
y down, z forward; the README says so), checked on the quick_testing samples: back-projecting
one frame's depth and projecting it into the other frame's camera reproduces that frame's depth
to 3e-4 (half-float rounding), while y/z-flipped (OpenGL) axes miss by 11-60 %.

Pairs are general two-view pairs, so each is rectified (Fusiello's construction): both cameras
are rotated to a common frame whose x axis is the baseline, left = the camera the other one lies
to the +x side of, one focal length and principal point for both; images and the left z-depth
are resampled with cv2.initUndistortRectifyMap / cv2.remap, and the depth is converted to the
rectified frame (z_rect = z_orig / ray_z). pose.json gives the rectified left optical frame in a
local `map`: origin on the ground below the left camera (median height of its depth points),
z up = the selenocentric radial direction, x east, y north.
"""
from dataclasses import dataclass
import io
import logging
import os
from pathlib import Path
import pickle
import struct
import zipfile
import zlib

import numpy as np

from l3d_ros.dataset import StereoPair, write_pair
from l3d_ros.geometry import StereoCalib

os.environ.setdefault('OPENCV_IO_ENABLE_OPENEXR', '1')  # read before cv2 opens any EXR
import cv2  # noqa: E402,I100 (after the environment switch above)

log = logging.getLogger(__name__)
OPENEXR_HINT = "pip install OpenEXR==3.5.3"


@dataclass
class Frame:
    """One StereoLunar view: image as stored, z-depth [m] (NaN none), K, cam2world (OpenCV)."""

    image: np.ndarray
    depth_m: np.ndarray
    K: np.ndarray               # (3, 3) [px]
    T_world_cam: np.ndarray     # (4, 4) selenocentric [m]


# --- EXR ------------------------------------------------------------------------------------

def _exr_header(buf: bytes) -> tuple[dict, int]:
    if buf[:4] != b'\x76\x2f\x31\x01':
        raise ValueError('not an OpenEXR file (bad magic number)')
    if struct.unpack('<I', buf[4:8])[0] & 0x1e00:                 # tiled, long names, deep, multi
        raise ValueError('tiled/deep/multi-part EXR: only single-part scanline is read here')
    attrs, i = {}, 8
    while buf[i] != 0:
        j = buf.index(b'\0', i)
        k = buf.index(b'\0', j + 1)
        size = struct.unpack('<i', buf[k + 1:k + 5])[0]
        attrs[buf[i:j].decode()] = (buf[j + 1:k].decode(), buf[k + 5:k + 5 + size])
        i = k + 5 + size
    return attrs, i + 1


def _exr_channels(raw: bytes) -> list[tuple[str, int]]:
    out, i = [], 0
    while raw[i] != 0:
        j = raw.index(b'\0', i)
        out.append((raw[i:j].decode(), struct.unpack('<i', raw[j + 1:j + 5])[0]))
        i = j + 17
    return sorted(out)


def _unzip_exr(data: bytes) -> bytes:
    """OpenEXR ZIP(S) chunk: zlib, then undo the byte predictor and the half-split interleave."""
    t = np.frombuffer(zlib.decompress(data), np.uint8).astype(np.int64)
    t = (np.cumsum(np.concatenate([t[:1], t[1:] - 128])) % 256).astype(np.uint8)
    out = np.empty_like(t)
    half = (len(t) + 1) // 2
    out[0::2], out[1::2] = t[:half], t[half:]
    return out.tobytes()


def read_exr_numpy(path: Path) -> np.ndarray:
    """First channel of a scanline EXR with NONE, ZIPS or ZIP compression -> (H, W) float32."""
    buf = Path(path).read_bytes()
    attrs, pos = _exr_header(buf)
    compression = attrs['compression'][1][0]
    lines = {0: 1, 2: 1, 3: 16}.get(compression)
    if lines is None:
        raise NotImplementedError(f'{path}: EXR compression {compression} (0 none, 2 zips, '
                                  '3 zip are read without OpenEXR)')
    x0, y0, x1, y1 = struct.unpack('<4i', attrs['dataWindow'][1])
    W, H = x1 - x0 + 1, y1 - y0 + 1
    channels = _exr_channels(attrs['channels'][1])
    sizes = [{0: 4, 1: 2, 2: 4}[t] for _, t in channels]
    dtypes = [{0: '<u4', 1: '<f2', 2: '<f4'}[t] for _, t in channels]
    n_chunks = -(-H // lines)
    offsets = np.frombuffer(buf[pos:pos + 8 * n_chunks], '<u8')
    image = np.empty((H, W), np.float32)
    for off in offsets:
        y, size = struct.unpack('<ii', buf[off:off + 8])
        data = buf[off + 8:off + 8 + size]
        rows = min(lines, y0 + H - y)
        if len(data) < rows * W * sum(sizes):
            data = _unzip_exr(data)
        step = W * sum(sizes)
        for r in range(rows):
            row = data[r * step:r * step + W * sizes[0]]
            image[y - y0 + r] = np.frombuffer(row, dtypes[0]).astype(np.float32)
    return image


def read_exr_depth(path: Path) -> np.ndarray:
    """(H, W) float32 from a StereoLunar depth EXR, by the first reader that can.

    Order: our numpy reader (NONE/ZIPS/ZIP), the OpenEXR package (any compression, e.g. the
    PIZ of the released files), OpenCV when built with OpenEXR. The opencv-python-headless
    5.0.0.93 wheel is built without it ('OpenEXR: NO'), so PIZ files need `OPENEXR_HINT`.
    """
    try:
        return read_exr_numpy(path)
    except NotImplementedError:
        pass
    try:
        import OpenEXR
        with OpenEXR.File(str(path)) as f:
            channel = next(iter(f.channels().values()))
            return np.asarray(channel.pixels, np.float32).reshape(channel.pixels.shape[:2])
    except ImportError:
        pass
    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth is None:
        raise ValueError(f'{path}: cannot decode this EXR (PIZ or other compression) without '
                         f'the OpenEXR package: {OPENEXR_HINT}')
    return (depth[..., 0] if depth.ndim == 3 else depth).astype(np.float32)


# --- split file -----------------------------------------------------------------------------

class _ArrayUnpickler(pickle.Unpickler):
    """Only what numpy object arrays need: ndarray/dtype reconstruction and numpy scalars."""

    ALLOWED = {(m, n) for m in ('numpy.core.multiarray', 'numpy._core.multiarray')
               for n in ('_reconstruct', 'scalar')} | {('numpy', 'ndarray'), ('numpy', 'dtype')}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED or (module == 'numpy.dtypes' and name.endswith('DType')):
            return getattr(__import__(module, fromlist=[name]), name)
        raise pickle.UnpicklingError(f'global {module}.{name}: not allowed in a split file')


def _load_npy(raw: bytes) -> np.ndarray:
    f = io.BytesIO(raw)
    version = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    _, _, dtype = read_header(f)
    if not dtype.hasobject:
        f.seek(0)
        return np.lib.format.read_array(f, allow_pickle=False)
    return _ArrayUnpickler(f).load()


def read_split(path: Path) -> list[tuple[str, str, str]]:
    """A StereoLunar split .npz -> [(scene, stem1, stem2), ...] in file order."""
    with zipfile.ZipFile(path) as z:
        data = {Path(n).stem: _load_npy(z.read(n)) for n in z.namelist() if n.endswith('.npy')}
    if missing := {'scenes', 'images', 'pairs'} - data.keys():
        raise ValueError(f'{path}: lacks {sorted(missing)}; expected scenes, images, pairs')
    scenes, images = [str(s) for s in data['scenes']], [str(s) for s in data['images']]
    out = []
    for row in data['pairs']:
        if len(row) < 3:
            raise ValueError(f'{path}: pair row {row!r}: expected (scene, im1, im2, score)')
        out.append((scenes[int(row[0])], images[int(row[1])], images[int(row[2])]))
    return out


def read_frame(scene_dir: Path, stem: str) -> Frame:
    """<stem>.jpg/.exr/.npz of one StereoLunar view."""
    base = Path(scene_dir) / stem
    image = cv2.imread(str(base) + '.jpg', cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(f'{base}.jpg: missing or unreadable')
    if image.ndim == 3:
        bgr = image[..., :3].astype(np.int16)
        grey = np.abs(bgr - bgr[..., :1]).max() <= 3                  # JPEG of a grey render
        image = image[..., 0] if grey else cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB)
    depth = read_exr_depth(Path(str(base) + '.exr'))
    depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    with np.load(str(base) + '.npz', allow_pickle=False) as meta:
        K, T = (np.asarray(meta[k], np.float64) for k in ('intrinsics', 'cam2world'))
    if K.shape != (3, 3) or T.shape != (4, 4) or depth.shape != image.shape[:2]:
        raise ValueError(f'{base}: intrinsics {K.shape}, cam2world {T.shape}, depth '
                         f'{depth.shape}, image {image.shape}: expected (3, 3), (4, 4), same H W')
    return Frame(image, depth, K, T)


# --- rectification ----------------------------------------------------------------------------

def local_map(c_world: np.ndarray, height_m: float) -> tuple[np.ndarray, np.ndarray]:
    """(R_map_world, origin_world): east-north-up at the ground point `height_m` below c."""
    up = c_world / np.linalg.norm(c_world)
    east = np.cross([0.0, 0.0, 1.0], up)
    if np.linalg.norm(east) < 1e-9:                                  # at a pole: any east
        east = np.cross([0.0, 1.0, 0.0], up)
    east /= np.linalg.norm(east)
    return np.stack([east, np.cross(up, east), up]), c_world - height_m * up


def rectify(f1: Frame, f2: Frame, name: str = '', min_angle_deg: float = 20.0) -> StereoPair:
    """Two StereoLunar views -> a rectified StereoPair (left z-depth, pose in the local map)."""
    c1, c2 = f1.T_world_cam[:3, 3], f2.T_world_cam[:3, 3]
    if np.dot(c2 - c1, f1.T_world_cam[:3, 0]) < 0:                  # keep the image upright
        f1, f2, c1, c2 = f2, f1, c2, c1
    baseline = np.linalg.norm(c2 - c1)
    x = (c2 - c1) / baseline
    z_mean = f1.T_world_cam[:3, 2] + f2.T_world_cam[:3, 2]
    angle = np.degrees(np.arccos(abs(np.dot(x, z_mean / np.linalg.norm(z_mean)))))
    if angle < min_angle_deg:
        raise ValueError(f'{name}: baseline {angle:.1f} deg from the optical axis: expected >= '
                         f'{min_angle_deg} (forward motion cannot be rectified)')
    y = np.cross(z_mean, x)
    y /= np.linalg.norm(y)
    R_world_rect = np.stack([x, y, np.cross(x, y)], axis=1)         # columns: rect axes
    H, W = f1.depth_m.shape
    f = float(np.mean([f1.K[0, 0], f1.K[1, 1], f2.K[0, 0], f2.K[1, 1]]))
    rots = [R_world_rect.T @ fr.T_world_cam[:3, :3] for fr in (f1, f2)]  # cam_i -> rect
    centres = [R @ np.linalg.solve(fr.K, [fr.K[0, 2], fr.K[1, 2], 1.0]) for R, fr in
               zip(rots, (f1, f2))]
    cx = (W - 1) / 2 - np.mean([f * d[0] / d[2] for d in centres])
    cy = (H - 1) / 2 - np.mean([f * d[1] / d[2] for d in centres])
    K_new = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]])
    images, maps = [], []
    for R, fr in zip(rots, (f1, f2)):
        mx, my = cv2.initUndistortRectifyMap(fr.K, None, R, K_new, (W, H), cv2.CV_32FC1)
        maps.append((mx, my))
        images.append(cv2.remap(fr.image, mx, my, cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0))
    mx, my = maps[0]
    known = np.isfinite(f1.depth_m)
    z = cv2.remap(np.where(known, f1.depth_m, 0).astype(np.float32), mx, my, cv2.INTER_LINEAR,
                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    cover = cv2.remap(known.astype(np.float32), mx, my, cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - cx) / f, (v - cy) / f, np.ones_like(u)], axis=-1)  # rect, z = 1
    ray_z = rays @ rots[0][:, 2]                                    # z in the original camera
    with np.errstate(divide='ignore', invalid='ignore'):
        depth = np.where((cover > 0.999) & (ray_z > 0), z / ray_z, np.nan).astype(np.float32)
    height = np.nanmedian(-(rays * depth[..., None]).reshape(-1, 3) @ (R_world_rect.T @ c1)
                          / np.linalg.norm(c1))
    R_map_world, origin = local_map(c1, float(height))
    calib = StereoCalib(f, f, float(cx), float(cy), float(baseline), W, H)
    return StereoPair(name, images[0], images[1], calib, depth, None,
                      R_map_world @ R_world_rect, R_map_world @ (c1 - origin))


def import_stereolunar(src: Path, out: Path, split: str = 'split.npz',
                       limit: int | None = None) -> list[Path]:
    """Convert the pairs listed in SRC/<split> into pair folders OUT/<scene>_<im1>_<im2>."""
    src, out = Path(src), Path(out)
    split_path = src / split
    if not split_path.is_file():
        raise FileNotFoundError(f'split={str(split_path)!r}: no such split file (StereoLunar '
                                'lists its pairs in ROOT/<split>.npz)')
    written = []
    for scene, a, b in read_split(split_path)[:limit]:
        name = f'{scene}_{a}_{b}'
        pair = rectify(read_frame(src / scene, a), read_frame(src / scene, b), name)
        write_pair(out / name, pair)
        written.append(out / name)
    return written
