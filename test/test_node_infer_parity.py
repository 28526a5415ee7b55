"""The node publishes over ROS exactly the hazard map that `l3d infer` writes for a pair."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from std_msgs.msg import Header

from l3d_ros import msg as conv
from l3d_ros.config import default_config_path
from l3d_ros.dataset import list_pairs, read_pair
from ros_harness import Peer, RunningNode

pytestmark = pytest.mark.ros


def l3d(*args):
    subprocess.run([sys.executable, '-m', 'l3d_ros.cli', *map(str, args)], check=True)


def test_node_hazard_map_equals_infer_output(tmp_path):
    data, out = tmp_path / 'data', tmp_path / 'infer'
    l3d('sim', 'dataset', data, '--pairs', 1, '--seed', 4242, '--width', 256, '--height', 256)
    l3d('infer', data, '--out', out)                   # the config's backend, as the node
    folder = list_pairs(data)[0]
    pair = read_pair(folder)
    expected = np.load(out / folder.name / 'hazard_map.npy')
    meta = json.loads((out / folder.name / 'hazard_map.json').read_text())

    node, peer = RunningNode(default_config_path()), Peer('l3d_parity_peer')
    try:
        peer.wait_connected()
        stamp_ns = 7_000_000_000
        header = Header(stamp=conv.ns_to_stamp(stamp_ns), frame_id='map')
        pose = conv.rt_to_pose_stamped(pair.R_world_cam, pair.t_world_cam, header)
        # the pose is in before the pair: the node's reader may match this writer a moment
        # after the writer saw the reader (three poses over 0.3 s were once all lost, and the
        # pair was judged nadir); without any pose the node would take the camera as nadir
        for _ in range(10):
            peer.pub['camera_pose'].publish(pose)
            time.sleep(0.1)
        grid = peer.wait_for('hazard_map', lambda m: conv.stamp_to_ns(m.header.stamp) == stamp_ns,
                             timeout_s=60, republish=lambda: peer.publish_pair(
                                 pair.left, pair.right, pair.calib, stamp_ns))
    finally:
        peer.close()
        node.close()
    values, cell_m, origin = conv.occupancy_grid_to_array(grid)
    assert grid.header.frame_id == meta['frame_id'] == 'map'
    assert cell_m == pytest.approx(meta['cell_m'])
    np.testing.assert_allclose(origin, meta['origin_xy_m'], atol=1e-6)
    np.testing.assert_array_equal(values, expected)
    assert (values >= 0).any()                          # the frame judged some ground
