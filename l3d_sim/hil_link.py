"""The link of `l3d hil`: network namespaces, the relay that impairs it, the latency ground
station, and the flight computer's CPU limit (see l3d_sim.hil for the topology).

Relay: one process, one DDS participant on each side (ground domain G, flight domain F), that
forwards a profile's topics as serialized messages through a delay line per direction: each
message is held for delay_ms + jitter_ms * N(0, 1) (never before an earlier message of the same
topic: DDS keeps a writer's order) and lost with probability `loss`. A lost message is dropped
(profile `latency`, as the harness has always measured: best-effort semantics) or, with
`retransmit` (profile `landing`, where every topic is reliable), repaired as reliable DDS
repairs it: each lost transmission costs one more round trip, 2 * delay_ms + REPAIR_MS (the
reader's NACK and the writer's resend). Forwarding QoS is each topic's own: reliable keep-last-10,
or latched (transient local, keep-last-1) for hazard_map and landing_target, so a late joiner
on either side still gets the last one.
"""
from dataclasses import asdict, dataclass
import heapq
import json
import logging
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)

SUBNET = '10.213'     # 10.213.X.0/30 per run; it lives only inside the run's two namespaces
REPAIR_MS = 10.0      # a reliable writer's reaction to a NACK (heartbeat / nack response)
PIPELINE_STATUS = 'stereo pipeline'     # the node's DiagnosticStatus name contains this
_IMAGES = {'left/image_rect': ('sensor_msgs/msg/Image', 'reliable'),
           'right/image_rect': ('sensor_msgs/msg/Image', 'reliable'),
           'left/camera_info': ('sensor_msgs/msg/CameraInfo', 'reliable'),
           'right/camera_info': ('sensor_msgs/msg/CameraInfo', 'reliable')}
# profile -> (ground -> flight topics, flight -> ground topics); topic -> (type, qos)
PROFILES = {
    'latency': (_IMAGES, {'depth': ('sensor_msgs/msg/Image', 'reliable'),
                          'safe_site': ('geometry_msgs/msg/PoseStamped', 'reliable'),
                          '/diagnostics': ('diagnostic_msgs/msg/DiagnosticArray', 'reliable')}),
    'landing': ({**_IMAGES, 'camera_pose': ('geometry_msgs/msg/PoseStamped', 'reliable'),
                 'landing_target': ('geometry_msgs/msg/PointStamped', 'latched'),
                 '/clock': ('rosgraph_msgs/msg/Clock', 'reliable')},
                {'hazard_map': ('nav_msgs/msg/OccupancyGrid', 'latched'),
                 'safe_site': ('geometry_msgs/msg/PoseStamped', 'reliable'),
                 '/diagnostics': ('diagnostic_msgs/msg/DiagnosticArray', 'reliable')}),
}


@dataclass(frozen=True)
class LinkCondition:
    """Impairment of the ground <-> flight link, applied to each direction."""

    name: str
    delay_ms: float = 0.0       # one way
    jitter_ms: float = 0.0      # standard deviation around delay_ms
    loss: float = 0.0           # fraction dropped, [0, 1): packets (netem) or messages (relay)

    def __post_init__(self):
        for key in ('delay_ms', 'jitter_ms'):
            if not getattr(self, key) >= 0:
                raise ValueError(f'{key}={getattr(self, key)!r}: expected >= 0 ms')
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f'loss={self.loss!r}: expected a fraction in [0, 1)')

    @classmethod
    def parse(cls, text: str) -> 'LinkCondition':
        """'NAME:DELAY_MS[:JITTER_MS[:LOSS]]', e.g. 'lossy:20:5:0.02'."""
        parts = text.split(':')
        if not 2 <= len(parts) <= 4 or not parts[0]:
            raise ValueError(f'condition={text!r}: expected NAME:DELAY_MS[:JITTER_MS[:LOSS]]')
        return cls(parts[0], *map(float, parts[1:]))


@dataclass(frozen=True)
class GroundPlan:
    """What the ground station process does (passed to it as JSON)."""

    domain: int
    duration_s: float
    rate_hz: float
    width: int
    height: int
    seed: int
    result_path: str
    linger_s: float = 1.5         # > the 1 s /diagnostics period: a fresh final snapshot
    discovery_timeout_s: float = 30.0


# -- ground station and relay (child processes) ------------------------------------------------
def _ground_frames(plan: GroundPlan, count: int = 4):
    """`count` distinct synthetic pairs (consecutive pairs differ: no frozen-camera refusal)."""
    from l3d_ros.geometry import StereoCalib
    from l3d_sim.synthetic import plane_pair
    fx = plan.width / 2 / np.tan(np.radians(20.0))                # 40 deg hfov, as the rig
    calib = StereoCalib(fx, fx, (plan.width - 1) / 2, (plan.height - 1) / 2, 2.0,
                        plan.width, plan.height)
    return calib, [plane_pair(calib, 25.0 + 5.0 * k, 3.0 * k, seed=plan.seed + k)[:2]
                   for k in range(count)]


def run_ground(plan: GroundPlan) -> dict:
    """Publish pairs at rate_hz for duration_s; latency of each answered pair [ms]."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image
    from l3d_ros import msg as conv

    calib, frames = _ground_frames(plan)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=plan.domain)
    node = rclpy.create_node('l3d_hil_ground', context=context)
    pubs = {t: node.create_publisher(Image if 'image' in t else CameraInfo, t, 10)
            for t in PROFILES['latency'][0]}
    arrivals, diag, lock = {}, {}, threading.Lock()

    def on_depth(msg):
        now_ns = time.time_ns()
        with lock:
            arrivals.setdefault(conv.stamp_to_ns(msg.header.stamp), now_ns)

    def on_diag(msg: DiagnosticArray):
        for status in msg.status:
            if PIPELINE_STATUS in status.name:
                with lock:
                    diag.update({kv.key: kv.value for kv in status.values})

    node.create_subscription(Image, 'depth', on_depth, 10)
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=_spin, args=(executor, context), daemon=True)
    spinner.start()

    def send(index: int) -> int:
        stamp_ns = time.time_ns()
        left, right = (f.copy() for f in frames[index % len(frames)])
        tag = np.frombuffer(index.to_bytes(8, 'little'), np.uint8)
        left[0, :8], right[0, :8] = tag, tag       # every exposure differs, as a camera's would
        stamp = conv.ns_to_stamp(stamp_ns)
        info_l, info_r = conv.calib_to_camera_infos(calib, stamp=stamp)
        for topic, image in (('left/image_rect', left), ('right/image_rect', right)):
            pubs[topic].publish(conv.array_to_image(image, 'mono8', info_l.header if 'left'
                                                    in topic else info_r.header))
        pubs['left/camera_info'].publish(info_l)
        pubs['right/camera_info'].publish(info_r)
        return stamp_ns

    try:
        index, deadline = 0, time.monotonic() + plan.discovery_timeout_s
        while not arrivals:                     # warm-up: until the node answers once
            if time.monotonic() > deadline:
                raise TimeoutError(f'no depth from the flight node on domain {plan.domain} '
                                   f'within {plan.discovery_timeout_s} s')
            send(index)
            index += 1
            time.sleep(0.5)
        time.sleep(1.0)                          # let the warm-up answers drain
        with lock:
            arrivals.clear()
            before = {k: _float(v) or 0.0 for k, v in diag.items() if k.startswith('drops_')}
        sent, period_s = [], 1.0 / plan.rate_hz
        t_next = time.monotonic()
        end = t_next + plan.duration_s
        while t_next < end:
            time.sleep(max(0.0, t_next - time.monotonic()))
            sent.append(send(index))
            index += 1
            t_next += period_s
        time.sleep(plan.linger_s)
        with lock:
            latency_ms = [(arrivals[s] - s) * 1e-6 for s in sent if s in arrivals]
            node_diag = dict(diag)
    finally:
        context.try_shutdown()
        spinner.join(timeout=2)
    drops = {k[len('drops_'):]: (_float(v) or 0.0) - before.get(k, 0.0)
             for k, v in node_diag.items() if k.startswith('drops_')}
    result = {'sent': len(sent), 'received': len(latency_ms), 'latency_ms': latency_ms,
              'node_latency_ms_median': _float(node_diag.get('latency_ms_median')),
              'node_frames_replaced': drops.pop('replaced', None),
              'node_inputs_dropped': drops or None}
    Path(plan.result_path).write_text(json.dumps(result))
    return result


def _spin(executor, context) -> None:
    while context.ok():
        try:
            executor.spin_once(timeout_sec=0.05)
        except Exception:  # noqa: BLE001 - context shut down under us
            return


def _float(text) -> Optional[float]:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


class _DelayLine:
    """Holds messages until their release time, then publishes them (one sender thread)."""

    def __init__(self, condition: LinkCondition, rng: np.random.Generator,
                 retransmit: bool = False):
        self.condition, self.rng, self.retransmit = condition, rng, retransmit
        self.heap, self.seq, self.last = [], 0, {}
        self.cv = threading.Condition()
        self.stats = {'forwarded': 0, 'dropped': 0, 'repaired': 0}
        self.closed = False
        self.thread = threading.Thread(target=self._send)
        self.thread.start()

    def close(self) -> None:
        """Stop sending; messages still held are discarded."""
        with self.cv:
            self.closed = True
            self.cv.notify()
        self.thread.join(timeout=2)

    def put(self, publisher, data: bytes, topic: str = '') -> None:
        c = self.condition
        with self.cv:
            delay_ms = 0.0
            while self.rng.random() < c.loss:            # this transmission is lost
                if not self.retransmit:
                    self.stats['dropped'] += 1
                    return
                self.stats['repaired'] += 1
                by_topic = self.stats.setdefault('repaired_by_topic', {})
                by_topic[topic] = by_topic.get(topic, 0) + 1
                delay_ms += 2 * c.delay_ms + REPAIR_MS
            delay_ms += max(0.0, c.delay_ms + c.jitter_ms * self.rng.standard_normal())
            release = max(time.monotonic() + delay_ms * 1e-3, self.last.get(publisher, 0.0))
            self.last[publisher] = release
            self.seq += 1
            heapq.heappush(self.heap, (release, self.seq, publisher, data))
            self.cv.notify()

    def _send(self) -> None:
        while True:
            with self.cv:
                while not self.closed and (not self.heap or self.heap[0][0] > time.monotonic()):
                    self.cv.wait(timeout=(self.heap[0][0] - time.monotonic()) if self.heap
                                 else None)
                if self.closed:
                    return
                _, _, publisher, data = heapq.heappop(self.heap)
                self.stats['forwarded'] += 1
            publisher.publish(data)


@dataclass(frozen=True)
class RelaySpec:
    """What a relay process does (passed to it as JSON)."""

    ground_domain: int
    flight_domain: int
    condition: dict               # LinkCondition as a dict
    seed: int
    profile: str = 'latency'      # key of PROFILES
    retransmit: bool = False      # reliable repair of lost messages instead of dropping them
    ready_path: str = ''          # written once the flight side's node is discovered
    stats_path: str = ''          # JSON at exit: per-direction counts, the node's diagnostics


def run_relay(spec: RelaySpec, stop_event: threading.Event) -> dict:
    """Forward the profile's topics ground -> flight and back, through delay lines."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from rclpy.serialization import deserialize_message
    from diagnostic_msgs.msg import DiagnosticArray
    from l3d_ros.bag import message_class

    condition = LinkCondition(**spec.condition)
    up, down = PROFILES[spec.profile]
    contexts, nodes = {}, {}
    for side, domain in (('ground', spec.ground_domain), ('flight', spec.flight_domain)):
        contexts[side] = rclpy.Context()
        rclpy.init(context=contexts[side], domain_id=domain)
        nodes[side] = rclpy.create_node(f'l3d_hil_relay_{side}', context=contexts[side])
    lines = {d: _DelayLine(condition, np.random.default_rng([spec.seed, k]), spec.retransmit)
             for k, d in enumerate(('up', 'down'))}
    qos = {'reliable': QoSProfile(depth=10), 'latched': QoSProfile(
        depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)}
    diag = {}

    def forward(line, pub, topic):
        def callback(data):
            if topic == '/diagnostics':
                for status in deserialize_message(data, DiagnosticArray).status:
                    if PIPELINE_STATUS in status.name:
                        diag.update({kv.key: kv.value for kv in status.values})
            line.put(pub, data, topic)
        return callback

    for (src, dst), topics, line in ((('ground', 'flight'), up, lines['up']),
                                     (('flight', 'ground'), down, lines['down'])):
        for topic, (type_name, kind) in topics.items():
            cls = message_class(type_name)
            pub = nodes[dst].create_publisher(cls, topic, qos[kind])
            nodes[src].create_subscription(cls, topic, forward(line, pub, topic), qos[kind],
                                           raw=True)
    spinners = []
    for side in nodes:
        executor = SingleThreadedExecutor(context=contexts[side])
        executor.add_node(nodes[side])
        spinners.append(threading.Thread(target=_spin, args=(executor, contexts[side])))
        spinners[-1].start()
    first_up, first_down = next(iter(up)), next(iter(down))
    while not stop_event.wait(0.1):
        if (spec.ready_path and not Path(spec.ready_path).exists()
                and nodes['flight'].count_subscribers(first_up)
                and nodes['flight'].count_publishers(first_down)):
            Path(spec.ready_path).write_text('ready\n')
    for line in lines.values():
        line.close()
    for side in contexts:
        contexts[side].try_shutdown()
    for spinner in spinners:
        spinner.join(timeout=2)
    stats = {'up': lines['up'].stats, 'down': lines['down'].stats, 'node_diagnostics': diag}
    if spec.stats_path:
        Path(spec.stats_path).write_text(json.dumps(stats))
    return stats


def _child_main(argv: list[str]) -> int:
    """`python -m l3d_sim.hil_link ground PLAN_JSON` or `... relay SPEC_JSON`."""
    role = argv[0]
    if role == 'ground':
        run_ground(GroundPlan(**json.loads(argv[1])))
        return 0
    if role == 'relay':
        stop_event = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop_event.set())
        signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
        run_relay(RelaySpec(**json.loads(argv[1])), stop_event)
        return 0
    raise ValueError(f'role={role!r}: expected ground or relay')


def child_command(role: str, spec) -> list[str]:
    """argv of a ground station or relay process for `spec` (GroundPlan or RelaySpec)."""
    return [sys.executable, '-m', 'l3d_sim.hil_link', role, json.dumps(asdict(spec))]


# -- namespaces and CPU limit (harness side) ----------------------------------------------------
def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def netns_permitted() -> tuple[bool, str]:
    """Can this process create network namespaces? (ok, reason when not)."""
    if shutil.which('ip') is None:
        return False, "no 'ip' command (iproute2)"
    probe = f'l3d_probe_{os.getpid()}'
    res = _sh('ip', 'netns', 'add', probe, check=False)
    if res.returncode != 0:
        return False, f"'ip netns add' refused: {res.stderr.strip()}"
    _sh('ip', 'netns', 'del', probe, check=False)
    return True, ''


class Link:
    """Two namespaces joined by a veth pair; removed by close() (also at exit or on error)."""

    def __init__(self, tag: str):
        self.tag = tag
        self.ns = {'ground': f'l3d_gnd_{tag}', 'flight': f'l3d_fc_{tag}'}
        self.dev = {'ground': f'l3dg{tag}', 'flight': f'l3df{tag}'}
        octet = int(tag) % 250 + 1
        self.ip = {'ground': f'{SUBNET}.{octet}.1', 'flight': f'{SUBNET}.{octet}.2'}
        self.created: list[str] = []
        try:
            for side in ('ground', 'flight'):
                _sh('ip', 'netns', 'add', self.ns[side])
                self.created.append(self.ns[side])
            _sh('ip', 'link', 'add', self.dev['ground'], 'netns', self.ns['ground'], 'type',
                'veth', 'peer', 'name', self.dev['flight'], 'netns', self.ns['flight'])
            for side in ('ground', 'flight'):
                ns, dev = self.ns[side], self.dev[side]
                self.exec(side, 'ip', 'link', 'set', 'lo', 'up')
                self.exec(side, 'ip', 'addr', 'add', f'{self.ip[side]}/30', 'dev', dev)
                self.exec(side, 'ip', 'link', 'set', dev, 'up')
                self.exec(side, 'ip', 'route', 'add', '224.0.0.0/4', 'dev', dev)  # discovery
                log.debug('netns %s: %s %s', ns, dev, self.ip[side])
            self.netem = self.exec('ground', 'tc', 'qdisc', 'add', 'dev', self.dev['ground'],
                                   'root', 'netem', 'delay', '0ms', check=False).returncode == 0
        except BaseException:
            self.close()
            raise

    def prefix(self, side: str) -> list[str]:
        return ['ip', 'netns', 'exec', self.ns[side]]

    def exec(self, side: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return _sh(*self.prefix(side), *cmd, check=check)

    def env(self, side: str, domain: int) -> dict[str, str]:
        other = 'flight' if side == 'ground' else 'ground'
        env = {k: v for k, v in os.environ.items() if k != 'ROS_LOCALHOST_ONLY'}
        env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='SUBNET',
                   ROS_STATIC_PEERS=self.ip[other], FASTDDS_BUILTIN_TRANSPORTS='UDPv4')
        return env

    def impair(self, condition: LinkCondition) -> None:
        """netem on both veth ends: each direction gets the condition."""
        for side in ('ground', 'flight'):
            args = ['delay', f'{condition.delay_ms}ms']
            if condition.jitter_ms:
                args += [f'{condition.jitter_ms}ms', 'distribution', 'normal']
            if condition.loss:
                args += ['loss', f'{100 * condition.loss}%']
            self.exec(side, 'tc', 'qdisc', 'replace', 'dev', self.dev[side], 'root', 'netem',
                      *args)

    def close(self) -> None:
        for ns in reversed(self.created):
            _sh('ip', 'netns', 'del', ns, check=False)   # deletes the veth pair with it
        self.created = []


class CpuLimit:
    """Caps a process at `quota` of one core: cgroup v1/v2 CFS quota, else SIGSTOP/SIGCONT."""

    PERIOD_US = 20_000

    def __init__(self, pid: int, quota: float, tag: str):
        self.pid, self.quota, self.path, self.method = pid, quota, None, 'none'
        self._stop = threading.Event()
        if quota >= 1.0:
            return
        for root, files in ((Path('/sys/fs/cgroup/cpu'), ('cpu.cfs_period_us',
                                                          'cpu.cfs_quota_us')),
                            (Path('/sys/fs/cgroup'), ('cpu.max',))):
            path = root / f'l3d_fc_{tag}'
            try:
                path.mkdir()
                quota_us = max(1000, int(quota * self.PERIOD_US))
                if len(files) == 2:
                    (path / files[0]).write_text(str(self.PERIOD_US))
                    (path / files[1]).write_text(str(quota_us))
                else:
                    (path / files[0]).write_text(f'{quota_us} {self.PERIOD_US}')
                (path / 'cgroup.procs').write_text(str(pid))
                self.path, self.method = path, f'cgroup {root}'
                return
            except OSError:
                if path.exists():
                    path.rmdir()
        self.method = 'sigstop duty cycle'
        threading.Thread(target=self._duty_cycle, daemon=True).start()

    def _duty_cycle(self) -> None:
        period_s = self.PERIOD_US * 1e-6
        try:
            while not self._stop.is_set():
                os.kill(self.pid, signal.SIGCONT)
                time.sleep(self.quota * period_s)
                os.kill(self.pid, signal.SIGSTOP)
                time.sleep((1 - self.quota) * period_s)
        except ProcessLookupError:
            return
        finally:
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        self._stop.set()
        if self.path is not None:
            try:
                self.path.rmdir()             # empty once the process has exited
            except OSError:
                log.warning('cgroup %s left behind', self.path)


def isolation_mode(board_domain: Optional[int], isolate: str) -> str:
    """'board' (a real board on board_domain), 'netns' or 'process' (same host)."""
    if board_domain is not None:
        return 'board'
    if isolate not in ('auto', 'netns', 'process'):
        raise ValueError(f'isolate={isolate!r}: expected auto, netns or process')
    if isolate == 'process':
        return 'process'
    ok, why = netns_permitted()
    if not ok and isolate == 'netns':
        raise ValueError(f'isolate=netns: {why}')
    if not ok:
        log.warning('network namespaces unavailable (%s): node as a separate process', why)
    return 'netns' if ok else 'process'


class Placement:
    """Where things run: namespaces (or not), DDS domains, the flight core; starts the flight
    node (pinned, throttled) and relays."""

    def __init__(self, mode: str, link: Optional[Link], board_domain: Optional[int] = None,
                 cpu_core: Optional[int] = None, cpu_quota: float = 1.0):
        self.mode, self.link, self.cpu_quota = mode, link, cpu_quota
        base = int(os.environ.get('ROS_DOMAIN_ID', '0'))
        self.flight_domain = board_domain if mode == 'board' else base
        self.ground_domain = (self.flight_domain + 50) % 102      # the relay's ground side
        cores = sorted(os.sched_getaffinity(0))
        self.core = cores[-1] if cpu_core is None else cpu_core
        if self.core not in cores:
            raise ValueError(f'cpu_core={self.core!r}: expected one of this process\'s cores '
                             f'{cores}')
        self.cpu_methods: set[str] = set()

    def ground(self, domain: int) -> tuple[list[str], dict]:
        """(command prefix, environment) of a ground-side process on `domain`."""
        if self.link:
            return self.link.prefix('ground'), self.link.env('ground', domain)
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
        if self.mode == 'process':
            env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
        return [], env

    def start_node(self, params_file: Path, extra=(), stdout=None):
        """l3d_stereo on the flight computer, pinned and throttled; (process, CpuLimit)."""
        from l3d_ros.bringup import launch_nodes
        spec = launch_nodes(params_file)[0]
        env = (self.link.env('flight', self.flight_domain) if self.link else
               dict(os.environ, ROS_DOMAIN_ID=str(self.flight_domain)))
        core = self.core
        proc = subprocess.Popen(
            [*(self.link.prefix('flight') if self.link else []), sys.executable, '-m',
             spec.module, *spec.ros_args(params_file.resolve()), *extra],
            env=env, stdout=stdout, stderr=subprocess.STDOUT if stdout else None,
            preexec_fn=lambda: os.sched_setaffinity(0, {core}))
        cpu = CpuLimit(proc.pid, self.cpu_quota, f'{os.getpid() % 100000}_{proc.pid}')
        self.cpu_methods.add(cpu.method)
        return proc, cpu

    def start_relay(self, spec: RelaySpec, stdout=None) -> subprocess.Popen:
        prefix, env = self.ground(self.flight_domain)
        return subprocess.Popen([*prefix, *child_command('relay', spec)], env=env,
                                stdout=stdout, stderr=subprocess.STDOUT if stdout else None)


if __name__ == '__main__':
    sys.exit(_child_main(sys.argv[1:]))
