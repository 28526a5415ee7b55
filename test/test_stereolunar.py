"""StereoLunar import on a tiny set written in the dataset's exact layout (see stereolunar.py).

Two 64x64 views of a textured plane tangent to the Moon at the south pole, from 100 m, with a
general relative pose (yaw 25 deg, tilts, a baseline with a vertical component): the converted
pair must have the true baseline, a left depth lying on a plane 100 m away, a pose 100 m above
the local ground looking down, and rows that match (photo-consistency at u - f B / Z).
"""
import json
import os
import pickle
import struct
import zlib

import numpy as np
import pytest

from l3d_ros.backends import to_gray01
from l3d_ros.cli import main as l3d
from l3d_ros.dataset import list_pairs, read_pair
from l3d_train.stereolunar import read_split

import cv2  # noqa: I100 (after l3d_train.stereolunar, which enables OpenEXR in OpenCV)

MOON_R_M = 1737400.0
SIZE, HFOV_DEG, ALT_M = 64, 45.0, 100.0


def write_exr_zip(path, image: np.ndarray) -> None:
    """Single-channel ('Y', FLOAT) scanline OpenEXR with ZIP compression (16-line chunks)."""
    H, W = image.shape

    def attr(name, typ, data):
        return name.encode() + b'\0' + typ.encode() + b'\0' + struct.pack('<i', len(data)) + data
    box = struct.pack('<4i', 0, 0, W - 1, H - 1)
    header = (b'\x76\x2f\x31\x01' + struct.pack('<I', 2)
              + attr('channels', 'chlist', b'Y\0' + struct.pack('<iB3xii', 2, 0, 1, 1) + b'\0')
              + attr('compression', 'compression', b'\x03') + attr('dataWindow', 'box2i', box)
              + attr('displayWindow', 'box2i', box) + attr('lineOrder', 'lineOrder', b'\0')
              + attr('pixelAspectRatio', 'float', struct.pack('<f', 1.0))
              + attr('screenWindowCenter', 'v2f', struct.pack('<2f', 0, 0))
              + attr('screenWindowWidth', 'float', struct.pack('<f', 1.0)) + b'\0')
    chunks = []
    for y in range(0, H, 16):
        raw = np.frombuffer(image[y:y + 16].astype('<f4').tobytes(), np.uint8)
        t = np.concatenate([raw[0::2], raw[1::2]]).astype(np.int16)
        pred = np.concatenate([t[:1], (t[1:] - t[:-1] + 128) % 256]).astype(np.uint8)
        data = zlib.compress(pred.tobytes())
        chunks.append(struct.pack('<ii', y, len(data)) + data)
    offsets, pos = [], len(header) + 8 * len(chunks)
    for c in chunks:
        offsets.append(pos)
        pos += len(c)
    with open(path, 'wb') as f:
        f.write(header + np.array(offsets, '<u8').tobytes() + b''.join(chunks))


def rotation(yaw_deg: float, tilt_deg: float) -> np.ndarray:
    """Camera looking at world +z (down at the south pole), yawed, then tilted about its x."""
    a, b = np.radians(yaw_deg), np.radians(tilt_deg)
    yaw = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return yaw @ tilt


def texture(x, y):
    return 0.5 + 0.15 * np.sin(x / 9) + 0.15 * np.cos(y / 6) + 0.15 * np.sin((x - y) / 2.5)


def render(R_world_cam, c_world, K):
    """z-depth [m] and uint8 image of the plane z = -MOON_R_M (world) from camera (R, c)."""
    v, u = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    d = rays @ R_world_cam.T                                        # world, camera z = 1
    t = (-MOON_R_M - c_world[2]) / d[..., 2]                         # = z-depth
    P = c_world + d * t[..., None]
    img = np.clip(texture(P[..., 0], P[..., 1]) * 255 + 0.5, 0, 255).astype(np.uint8)
    return t.astype(np.float32), np.repeat(img[..., None], 3, axis=2)


@pytest.fixture
def stereolunar(tmp_path):
    root, f = tmp_path / 'StereoLunar', SIZE / (2 * np.tan(np.radians(HFOV_DEG / 2)))
    K = np.array([[f, 0, SIZE / 2], [0, f, SIZE / 2], [0, 0, 1]], np.float32)
    c1 = np.array([300.0, -200.0, -(MOON_R_M + ALT_M)])
    poses = [(rotation(10.0, 3.0), c1), (rotation(35.0, -4.0), c1 + [18.0, 9.0, 2.0])]
    (root / 'moon_scene_0000').mkdir(parents=True)
    stored = []
    for i, (R, c) in enumerate(poses):
        T = np.eye(4, dtype=np.float32)
        T[:3, :3], T[:3, 3] = R, c
        stored.append(T.astype(np.float64))                          # float32 as released
        depth, img = render(T[:3, :3].astype(np.float64), T[:3, 3].astype(np.float64), K)
        stem = root / 'moon_scene_0000' / f'im_{i:05d}'
        cv2.imwrite(f'{stem}.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 100])
        write_exr_zip(f'{stem}.exr', depth)
        np.savez(f'{stem}.npz', intrinsics=K, cam2world=T)
    np.savez(root / 'split.npz', scenes=np.array(['moon_scene_0000'], dtype=object),
             images=np.array(['im_00000', 'im_00001'], dtype=object),
             pairs=np.array([[0, 0, 1, 0.93]], dtype=object))      # object rows, as LunarDataset
    return root, stored


def test_import_rectifies_with_true_baseline_depth_and_pose(stereolunar, tmp_path):
    root, (T1, T2) = stereolunar
    assert l3d(['data', 'import-stereolunar', str(root), str(tmp_path / 'out')]) == 0
    (folder,) = list_pairs(tmp_path / 'out')
    pair = read_pair(folder)
    c = pair.calib
    assert c.baseline_m == pytest.approx(np.linalg.norm(T2[:3, 3] - T1[:3, 3]), rel=1e-9)
    # left depth: back-projected points lie on one plane, ALT_M from the left camera
    v, u = np.mgrid[0:SIZE, 0:SIZE]
    ok = np.isfinite(pair.depth_m)
    assert ok.mean() > 0.5
    z = pair.depth_m[ok]
    P = np.stack([(u[ok] - c.cx) * z / c.fx, (v[ok] - c.cy) * z / c.fy, z], -1)
    centroid = P.mean(0)
    normal = np.linalg.svd(P - centroid)[2][2]
    altitude = -MOON_R_M - T1[2, 3]
    assert abs(normal @ centroid) == pytest.approx(altitude, abs=0.05)
    assert np.abs((P - centroid) @ normal).max() < 0.05
    # pose: ALT_M above the local ground, optical axis down, a rotation
    R, t = pair.R_world_cam, pair.t_world_cam
    np.testing.assert_allclose(t, [0, 0, altitude], atol=0.05)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(R) == pytest.approx(1.0) and R[2, 2] < -0.99
    # rectified rows: the left pixel and its match at u - f B / Z see the same texture
    L, Rimg = to_gray01(pair.left), to_gray01(pair.right)
    ur = np.rint(u - c.fx * c.baseline_m / np.where(ok, pair.depth_m, 1.0)).astype(int)
    seen = ok & (ur >= 1) & (ur < SIZE - 1) & (v >= 4) & (v < SIZE - 4)
    seen[seen] = Rimg[v[seen], ur[seen]] > 0
    assert seen.sum() > 300
    err = np.median(np.abs(L[seen] - Rimg[v[seen], ur[seen]]))
    shifted = np.median(np.abs(L[seen] - Rimg[v[seen] + 3, ur[seen]]))
    assert err < 0.03 and err < 0.3 * shifted, (err, shifted)
    assert json.loads((folder / 'calib.json').read_text())['width'] == SIZE


class _Evil:
    def __reduce__(self):
        return os.system, ('echo pwned',)


def test_split_file_with_code_is_refused(tmp_path):
    np.savez(tmp_path / 'split.npz', scenes=np.array([_Evil()], dtype=object),
             images=np.array(['a']), pairs=np.array([[0, 0, 0]]))
    with pytest.raises(pickle.UnpicklingError, match='posix.system|os.system|not allowed'):
        read_split(tmp_path / 'split.npz')
