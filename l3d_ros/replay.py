"""`l3d replay BAG [--rate R] [--topics ...]`: a recorded MCAP bag fed back into the node.

Messages are republished byte for byte (the recorded CDR), so header stamps are the original
ones and the node's outputs carry them, as they did live. They go out at their recorded
log-time spacing divided by `rate`. By default the node's input topics found in the bag are
replayed, plus /clock when it was recorded (nodes with use_sim_time then follow the bag's time).
"""
from pathlib import Path
import time
from typing import Iterable, Optional

import rclpy
import rclpy.duration
from rclpy.qos import QoSProfile, ReliabilityPolicy

from l3d_ros.bag import bag_topics, message_class, NODE_INPUTS, read_bag


def default_topics(types: dict[str, str]) -> list[str]:
    """The node's inputs present in a bag (topic -> type), plus /clock when recorded."""
    return [t for t in (*NODE_INPUTS, '/clock') if t in types]


def replay(path: Path, rate: float = 1.0, topics: Optional[Iterable[str]] = None,
           context: Optional[rclpy.Context] = None, wait_subscribers_s: float = 5.0,
           node_name: str = 'l3d_replay') -> dict[str, int]:
    """Publish a bag's messages at `rate` times their recorded pace; returns counts by topic.

    Waits up to wait_subscribers_s [s] for every replayed input topic (not /clock) to have a
    subscriber, since DDS discovery takes a moment and the first frames would be lost.
    """
    if not rate > 0:
        raise ValueError(f'rate={rate!r}: expected a positive speed factor')
    types = bag_topics(path)
    chosen = default_topics(types) if topics is None else list(topics)
    if unknown := [t for t in chosen if t not in types]:
        raise ValueError(f'{path}: topics {unknown} not in the bag; it has {sorted(types)}')
    if not chosen:
        raise ValueError(f"{path}: none of the node's inputs {list(NODE_INPUTS)} are in the bag"
                         f' ({sorted(types)}); choose --topics')
    owns = context is None
    context = context or rclpy.Context()
    if owns:
        rclpy.init(context=context)
    node = rclpy.create_node(node_name, context=context)
    try:
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pubs = {t: node.create_publisher(message_class(types[t]), t, qos) for t in chosen}
        deadline = time.monotonic() + wait_subscribers_s
        while time.monotonic() < deadline and not all(
                p.get_subscription_count() > 0 for t, p in pubs.items() if t != '/clock'):
            time.sleep(0.05)
        counts = dict.fromkeys(chosen, 0)
        t0_wall, t0_log = time.monotonic(), None
        for m in read_bag(path, chosen):
            t0_log = m.log_time_ns if t0_log is None else t0_log
            delay_s = (m.log_time_ns - t0_log) * 1e-9 / rate - (time.monotonic() - t0_wall)
            if delay_s > 0:
                time.sleep(delay_s)
            pubs[m.topic].publish(m.data)     # serialized bytes: the stamps stay as recorded
            counts[m.topic] += 1
        for pub in pubs.values():                # reliable readers: let the last ones arrive
            pub.wait_for_all_acked(rclpy.duration.Duration(seconds=2.0))
        return counts
    finally:
        node.destroy_node()
        if owns:
            context.try_shutdown()


def add_arguments(parser) -> None:
    parser.add_argument('bag', type=Path, help='MCAP bag (l3d record, ros2 bag record -s mcap)')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='speed factor over the recorded pace, > 0 (default 1)')
    parser.add_argument('--topics', nargs='+', default=None,
                        help="topics to replay (default: the node's inputs in the bag + /clock)")
    parser.add_argument('--wait', type=float, default=5.0,
                        help='seconds to wait for subscribers before the first message')


def run(args) -> int:
    if not args.bag.is_file():
        raise FileNotFoundError(f'bag={str(args.bag)!r}: no such file')
    counts = replay(args.bag, args.rate, args.topics, wait_subscribers_s=args.wait)
    print('l3d replay: ' + ', '.join(f'{t} {n}' for t, n in counts.items()))
    return 0
