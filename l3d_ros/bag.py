"""rosbag2-compatible MCAP files: write, read, and `l3d record OUT.mcap --topics ... --duration S`.

Messages are stored as rclpy serialises them (CDR), in the MCAP ROS 2 profile that `ros2 bag
play`, `ros2 bag info` and Foxglove read: header profile `ros2`, one schema per message type
named `pkg/msg/Type` with encoding `ros2msg` whose data is the type's .msg text followed by every
type it uses (each after a line of 80 `=` and `MSG: pkg/Type`), and channels with message
encoding `cdr` on fully qualified topic names. The .msg text is the installed interface file
(`share/<pkg>/msg/<Type>.msg`, ament layout) when found, otherwise it is generated from the
message class (field types and names; constants and comments, which decoding does not need,
are then absent). Log and publish times are receive times on the recording clock [ns].
"""
from dataclasses import dataclass
import importlib
import os
from pathlib import Path
import sys
import threading
import time
from typing import Iterable, Iterator, Optional

from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

# The node's graph (INTERFACES.md section 5), absolute for a node in the root namespace.
NODE_INPUTS = ('/left/image_rect', '/right/image_rect', '/left/camera_info',
               '/right/camera_info', '/camera_pose')
NODE_OUTPUTS = ('/points', '/depth', '/confidence', '/disparity', '/hazard_map', '/safe_site',
                '/diagnostics')
_SEPARATOR = '=' * 80
_PRIMITIVE = {'boolean': 'bool', 'octet': 'byte'}   # IDL names rosidl reports -> .msg names


@dataclass(frozen=True)
class BagMessage:
    """One stored message: CDR bytes plus where and when it was recorded."""

    topic: str
    type_name: str          # 'sensor_msgs/msg/Image'
    data: bytes             # CDR, as rclpy.serialization.serialize_message writes it
    log_time_ns: int
    publish_time_ns: int

    def deserialize(self):
        return deserialize_message(self.data, message_class(self.type_name))


def message_class(type_name: str):
    """'pkg/msg/Type' (or 'pkg/Type') -> the generated Python message class."""
    parts = type_name.split('/')
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[1] != 'msg'):
        raise ValueError(f'type_name={type_name!r}: expected pkg/msg/Type')
    module = importlib.import_module(f'{parts[0]}.msg')
    return getattr(module, parts[-1])


def type_name_of(msg_class) -> str:
    """Message class -> 'pkg/msg/Type'."""
    package = msg_class.__module__.split('.')[0]
    return f'{package}/msg/{msg_class.__name__}'


def _field_type_to_msg(idl_type: str) -> str:
    """rosidl's field type string ('sequence<uint8>', 'double[9]', ...) -> .msg syntax."""
    bound = ''
    if idl_type.startswith('sequence<'):
        inner = idl_type[len('sequence<'):-1]
        if ',' in inner:
            inner, size = (s.strip() for s in inner.rsplit(',', 1))
            bound = f'[<={size}]'
        else:
            bound = '[]'
        idl_type = inner
    elif idl_type.endswith(']'):
        idl_type, size = idl_type[:-1].split('[')
        bound = f'[{size}]'
    for prefix in ('string<', 'wstring<'):
        if idl_type.startswith(prefix):
            idl_type = f'{prefix[:-1]}<={idl_type[len(prefix):-1]}'
    return _PRIMITIVE.get(idl_type, idl_type) + bound


def _nested_types(msg_class) -> list[str]:
    """'pkg/Type' of each message type the class's fields use, direct ones only."""
    out = []
    for idl_type in msg_class.get_fields_and_field_types().values():
        base = _field_type_to_msg(idl_type).split('[')[0]
        if '/' in base and base not in out:
            out.append(base)
    return out


def _interface_file(package: str, name: str) -> Optional[Path]:
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    for prefix in [*prefixes, sys.prefix]:
        path = Path(prefix) / 'share' / package / 'msg' / f'{name}.msg'
        if path.is_file():
            return path
    return None


def _msg_text(msg_class) -> str:
    package = msg_class.__module__.split('.')[0]
    path = _interface_file(package, msg_class.__name__)
    if path is not None:
        return path.read_text().rstrip('\n')
    return '\n'.join(f'{_field_type_to_msg(t)} {name}'
                     for name, t in msg_class.get_fields_and_field_types().items())


def message_definition(msg_class) -> str:
    """The ROS 2 MCAP profile's `ros2msg` schema text: the type, then each dependency once."""
    text, seen, todo = [_msg_text(msg_class)], set(), _nested_types(msg_class)
    while todo:
        dep = todo.pop(0)
        if dep in seen:
            continue
        seen.add(dep)
        cls = message_class(dep)
        text += [_SEPARATOR, f'MSG: {dep}', _msg_text(cls)]
        todo += _nested_types(cls)
    return '\n'.join(text) + '\n'


class BagWriter:
    """An MCAP file in the ROS 2 profile; use as a context manager, or call close()."""

    def __init__(self, path: Path, compression: str = 'zstd'):
        kinds = {'zstd': CompressionType.ZSTD, 'lz4': CompressionType.LZ4,
                 'none': CompressionType.NONE}
        if compression not in kinds:
            raise ValueError(f'compression={compression!r}: expected one of {sorted(kinds)}')
        self.path = Path(path)
        self._stream = open(self.path, 'wb')
        self._writer = Writer(self._stream, compression=kinds[compression])
        self._writer.start(profile='ros2', library='l3d_ros')
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, tuple[int, str]] = {}
        self._sequence = 0
        self.count = 0

    def _channel(self, topic: str, type_name: str) -> int:
        if topic in self._channels:
            channel_id, known = self._channels[topic]
            if known != type_name:
                raise ValueError(f'topic {topic!r} type_name={type_name!r}: expected {known!r}, '
                                 'the type it was first recorded with')
            return channel_id
        if type_name not in self._schemas:
            text = message_definition(message_class(type_name))
            self._schemas[type_name] = self._writer.register_schema(
                type_name, 'ros2msg', text.encode())
        channel_id = self._writer.register_channel(topic, 'cdr', self._schemas[type_name])
        self._channels[topic] = (channel_id, type_name)
        return channel_id

    def write(self, topic: str, type_name: str, data: bytes, log_time_ns: int,
              publish_time_ns: Optional[int] = None) -> None:
        """Append one CDR-serialised message; topic fully qualified ('/depth')."""
        if not topic.startswith('/'):
            raise ValueError(f'topic={topic!r}: expected a fully qualified name (/...)')
        channel_id = self._channel(topic, type_name)
        self._sequence += 1
        self._writer.add_message(channel_id, log_time=int(log_time_ns), data=bytes(data),
                                 publish_time=int(publish_time_ns if publish_time_ns is not None
                                                  else log_time_ns), sequence=self._sequence)
        self.count += 1

    def close(self) -> None:
        if not self._stream.closed:
            self._writer.finish()
            self._stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_bag(path: Path, topics: Optional[Iterable[str]] = None) -> Iterator[BagMessage]:
    """Messages of an MCAP ROS 2 bag in log-time order, optionally only those `topics`."""
    with open(path, 'rb') as stream:
        reader = make_reader(stream)
        wanted = list(topics) if topics is not None else None
        for schema, channel, message in reader.iter_messages(topics=wanted, log_time_order=True):
            if channel.message_encoding != 'cdr':
                raise ValueError(f'{path}: topic {channel.topic} message_encoding='
                                 f'{channel.message_encoding!r}: expected cdr (ROS 2 profile)')
            yield BagMessage(channel.topic, schema.name, message.data, message.log_time,
                             message.publish_time)


def bag_topics(path: Path) -> dict[str, str]:
    """Topic -> type name of every channel in the bag (from its summary)."""
    with open(path, 'rb') as stream:
        summary = make_reader(stream).get_summary()
    if summary is None:
        raise ValueError(f'{path}: no MCAP summary section; expected a finished recording')
    return {ch.topic: summary.schemas[ch.schema_id].name for ch in summary.channels.values()}


class Recorder:
    """Subscribes to topics as they appear on the graph and writes every message to a bag.

    Types come from the graph, so a topic is picked up once some publisher offers it. As
    rosbag2 does, the subscription adapts to the offered QoS: reliable (transient-local) only
    when every publisher is, so it matches them all and still catches a latched hazard_map.
    """

    def __init__(self, path: Path, topics: Iterable[str], context: Optional[rclpy.Context] = None,
                 node_name: str = 'l3d_recorder'):
        self.context = context or rclpy.Context()
        if not self.context.ok():
            rclpy.init(context=self.context)
            self._owns_context = True
        else:
            self._owns_context = False
        self.node = rclpy.create_node(node_name, context=self.context)
        self.topics = [self.node.resolve_topic_name(t) for t in topics]
        self.writer = BagWriter(path)
        self.subscribed: dict[str, str] = {}      # topic -> type name
        self.counts: dict[str, int] = {}          # topic -> messages written
        self._subs = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.node.create_timer(0.2, self._discover)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._discover()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while self.context.ok() and not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - context shut down under us
                return

    def _discover(self) -> None:
        types = dict(self.node.get_topic_names_and_types())
        for topic in self.topics:
            if topic in self.subscribed or not types.get(topic):
                continue
            pubs = self.node.get_publishers_info_by_topic(topic)
            if not pubs:            # a subscriber alone names the topic; wait for a publisher
                continue            # whose QoS we can match
            type_name = types[topic][0]
            reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                           for p in pubs)
            latched = all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                          for p in pubs)
            qos = QoSProfile(depth=50, reliability=(ReliabilityPolicy.RELIABLE if reliable
                                                    else ReliabilityPolicy.BEST_EFFORT),
                             durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                                         else DurabilityPolicy.VOLATILE))
            self._subs[topic] = self.node.create_subscription(
                message_class(type_name), topic, self._keep(topic, type_name), qos, raw=True)
            self.subscribed[topic] = type_name

    def matched(self) -> list[str]:
        """Topics whose subscription is matched with at least one publisher (DDS discovery)."""
        return [t for t, sub in list(self._subs.items()) if sub.get_publisher_count() > 0]

    def _keep(self, topic: str, type_name: str):
        def callback(data: bytes) -> None:
            with self.lock:
                if not self._stop.is_set():
                    self.writer.write(topic, type_name, data, time.time_ns())
                    self.counts[topic] = self.counts.get(topic, 0) + 1
        return callback

    def close(self) -> int:
        """Stop recording, finish the file; returns the number of messages written."""
        with self.lock:
            self._stop.set()
            self.writer.close()
        self.thread.join(timeout=2)
        self.executor.shutdown()
        self.node.destroy_node()
        if self._owns_context:
            self.context.try_shutdown()
        return self.writer.count


def add_arguments(parser) -> None:
    parser.add_argument('out', type=Path, help='MCAP file to write (ROS 2 profile)')
    parser.add_argument('--topics', nargs='+', default=[*NODE_INPUTS, *NODE_OUTPUTS, '/clock'],
                        help="topics to record (default: the node's inputs, outputs and /clock)")
    parser.add_argument('--duration', type=float, default=10.0,
                        help='seconds to record, > 0 (default 10); Ctrl-C stops earlier')


def run(args) -> int:
    if not args.duration > 0:
        raise ValueError(f'--duration={args.duration!r}: expected seconds > 0')
    recorder = Recorder(args.out, args.topics)
    print(f'l3d record: {len(recorder.topics)} topics -> {args.out} for {args.duration:g} s')
    try:
        time.sleep(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        with recorder.lock:
            seen = dict(recorder.subscribed)
        count = recorder.close()
    missing = sorted(set(recorder.topics) - set(seen))
    print(f'l3d record: {count} messages on {len(seen)} topics'
          + (f'; never published: {", ".join(missing)}' if missing else ''))
    return 0
