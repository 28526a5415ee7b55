"""`l3d hil`: the perception node as a separate flight computer behind an impaired link.

Topology (netns mode, when `ip netns add` works as root):

    [ns l3d_gnd_T]  ground station --(domain G, lo)-- relay ==veth 10.213.X.1/.2==
    [ns l3d_fc_T]   l3d_stereo (domain F, one CPU core, optional CPU quota)

Both namespaces hold only loopback and their veth end, so the test subnet exists nowhere else
and no packet reaches another host. DDS runs over UDPv4 only (shared memory would bypass the
veth) with ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET and the peer's address in ROS_STATIC_PEERS.
Link impairment, each direction: `tc qdisc netem` on both veth ends when the kernel has it
(ground then talks to the node directly); otherwise a relay process between two DDS domains
that delays (with jitter) and drops whole messages. Without netns the node is a separate
process on the same host (LOCALHOST discovery) behind the same relay. `--board-domain N`
starts no node and no namespace: the ground station (and relay) talk to a real board on DDS
domain N with the environment's discovery settings.

The ground station publishes synthetic stereo pairs stamped with its wall clock and measures,
per pair, stamp -> arrival of the node's `depth` at the ground: end-to-end latency on one
clock, so no clock synchronisation with a board is needed. A condition's report: pairs sent and
answered, latency distribution [ms], and from the node's /diagnostics its processing latency
the pairs it skipped when it fell behind (newest pair wins) and the input messages its
synchroniser dropped (by reason): losses on the node's side, not the link's.
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
import tempfile
import threading
import time
from typing import Optional

import numpy as np

from l3d_ros.bringup import launch_nodes, stop
from l3d_ros.config import default_config_path

log = logging.getLogger(__name__)

UP_TOPICS = {'left/image_rect': 'sensor_msgs/msg/Image', 'right/image_rect':
             'sensor_msgs/msg/Image', 'left/camera_info': 'sensor_msgs/msg/CameraInfo',
             'right/camera_info': 'sensor_msgs/msg/CameraInfo'}          # ground -> flight
DOWN_TOPICS = {'depth': 'sensor_msgs/msg/Image', 'safe_site': 'geometry_msgs/msg/PoseStamped',
               '/diagnostics': 'diagnostic_msgs/msg/DiagnosticArray'}     # flight -> ground
SUBNET = '10.213'     # 10.213.X.0/30 per run; it lives only inside the run's two namespaces


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
            for t in UP_TOPICS}
    arrivals, diag, lock = {}, {}, threading.Lock()

    def on_depth(msg):
        now_ns = time.time_ns()
        with lock:
            arrivals.setdefault(conv.stamp_to_ns(msg.header.stamp), now_ns)

    def on_diag(msg: DiagnosticArray):
        for status in msg.status:
            if 'stereo pipeline' in status.name:
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

    def __init__(self, condition: LinkCondition, rng: np.random.Generator):
        self.condition, self.rng = condition, rng
        self.heap, self.seq = [], 0
        self.cv = threading.Condition()
        self.dropped, self.closed = 0, False
        self.thread = threading.Thread(target=self._send)
        self.thread.start()

    def close(self) -> None:
        """Stop sending; messages still held are discarded."""
        with self.cv:
            self.closed = True
            self.cv.notify()
        self.thread.join(timeout=2)

    def put(self, publisher, data: bytes) -> None:
        c = self.condition
        with self.cv:
            if self.rng.random() < c.loss:
                self.dropped += 1
                return
            delay_s = max(0.0, c.delay_ms + c.jitter_ms * self.rng.standard_normal()) * 1e-3
            self.seq += 1
            heapq.heappush(self.heap, (time.monotonic() + delay_s, self.seq, publisher, data))
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
            publisher.publish(data)


def run_relay(ground_domain: int, flight_domain: int, condition: LinkCondition,
              seed: int, stop_event: threading.Event) -> None:
    """Forward UP_TOPICS ground -> flight and DOWN_TOPICS back, through delay lines."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile
    from l3d_ros.bag import message_class

    contexts, nodes = {}, {}
    for side, domain in (('ground', ground_domain), ('flight', flight_domain)):
        contexts[side] = rclpy.Context()
        rclpy.init(context=contexts[side], domain_id=domain)
        nodes[side] = rclpy.create_node(f'l3d_hil_relay_{side}', context=contexts[side])
    lines = [_DelayLine(condition, np.random.default_rng([seed, k])) for k in range(2)]
    qos = QoSProfile(depth=10)
    for (src, dst), topics, line in ((('ground', 'flight'), UP_TOPICS, lines[0]),
                                     (('flight', 'ground'), DOWN_TOPICS, lines[1])):
        for topic, type_name in topics.items():
            pub = nodes[dst].create_publisher(message_class(type_name), topic, qos)
            nodes[src].create_subscription(message_class(type_name), topic,
                                           (lambda data, p=pub, q=line: q.put(p, data)), qos,
                                           raw=True)
    spinners = []
    for side in nodes:
        executor = SingleThreadedExecutor(context=contexts[side])
        executor.add_node(nodes[side])
        spinners.append(threading.Thread(target=_spin, args=(executor, contexts[side])))
        spinners[-1].start()
    stop_event.wait()
    for line in lines:
        line.close()
    for side in contexts:
        contexts[side].try_shutdown()
    for spinner in spinners:
        spinner.join(timeout=2)


def _child_main(argv: list[str]) -> int:
    """`python -m l3d_sim.hil ground PLAN_JSON` or `... relay G F CONDITION_JSON SEED`."""
    role = argv[0]
    if role == 'ground':
        run_ground(GroundPlan(**json.loads(argv[1])))
        return 0
    if role == 'relay':
        stop_event = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop_event.set())
        signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
        run_relay(int(argv[1]), int(argv[2]), LinkCondition(**json.loads(argv[3])),
                  int(argv[4]), stop_event)
        return 0
    raise ValueError(f'role={role!r}: expected ground or relay')


# -- harness (parent process) ------------------------------------------------------------------
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


@dataclass(frozen=True)
class HilConfig:
    params_file: Path
    conditions: tuple[LinkCondition, ...]
    duration_s: float = 5.0
    rate_hz: float = 5.0
    width: int = 320
    height: int = 240
    cpu_core: Optional[int] = None        # None: the last core this process may use
    cpu_quota: float = 1.0                # fraction of that core (cgroup cpu quota)
    board_domain: Optional[int] = None    # a real board on this DDS domain: start no node
    isolate: str = 'auto'                 # auto | netns | process
    seed: int = 0


class _CpuLimit:
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


def _summary(latency_ms: list[float], sent: int) -> dict:
    lat = np.asarray(latency_ms, float)
    stats = ({k: round(float(f(lat)), 2) for k, f in (
        ('min', np.min), ('median', np.median), ('p95', lambda a: np.percentile(a, 95)),
        ('p99', lambda a: np.percentile(a, 99)), ('max', np.max), ('mean', np.mean))}
        if lat.size else {})
    return {'sent': sent, 'received': int(lat.size),
            'lost_fraction': round(1.0 - lat.size / sent, 4) if sent else None,
            'latency_ms': stats}


def _mode(cfg: HilConfig) -> str:
    if cfg.board_domain is not None:
        return 'board'
    if cfg.isolate not in ('auto', 'netns', 'process'):
        raise ValueError(f'isolate={cfg.isolate!r}: expected auto, netns or process')
    if cfg.isolate == 'process':
        return 'process'
    ok, why = netns_permitted()
    if not ok and cfg.isolate == 'netns':
        raise ValueError(f'isolate=netns: {why}')
    if not ok:
        log.warning('network namespaces unavailable (%s): node as a separate process', why)
    return 'netns' if ok else 'process'


def run_hil(cfg: HilConfig, out_dir: Path) -> dict:
    """Run every condition; writes out_dir/hil.json and hil.md and returns the JSON dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mode, tag = _mode(cfg), str(os.getpid() % 100000)
    base = int(os.environ.get('ROS_DOMAIN_ID', '0'))
    flight_domain = cfg.board_domain if mode == 'board' else base
    ground_domain = (flight_domain + 50) % 102                # the relay's ground side
    cores = sorted(os.sched_getaffinity(0))
    core = cores[-1] if cfg.cpu_core is None else cfg.cpu_core
    if core not in cores:
        raise ValueError(f'cpu_core={core!r}: expected one of this process\'s cores {cores}')
    link, procs, cpu, report = None, [], None, []
    tmp = Path(tempfile.mkdtemp(prefix='l3d_hil_'))
    try:
        if mode == 'netns':
            link = Link(tag)
        netem = link is not None and link.netem
        if mode != 'board':
            spec = launch_nodes(cfg.params_file)[0]
            env = link.env('flight', flight_domain) if link else dict(
                os.environ, ROS_DOMAIN_ID=str(flight_domain))
            procs.append(subprocess.Popen(
                [*(link.prefix('flight') if link else []), sys.executable, '-m', spec.module,
                 *spec.ros_args(cfg.params_file.resolve())],
                env=env, preexec_fn=lambda: os.sched_setaffinity(0, {core})))
            cpu = _CpuLimit(procs[0].pid, cfg.cpu_quota, tag)
        for k, cond in enumerate(cfg.conditions):
            relay = None
            if netem:
                link.impair(cond)
            else:
                env = link.env('ground', flight_domain) if link else dict(os.environ)
                relay = subprocess.Popen(
                    [*(link.prefix('ground') if link else []), sys.executable, '-m',
                     'l3d_sim.hil', 'relay', str(ground_domain), str(flight_domain),
                     json.dumps(asdict(cond)), str(cfg.seed + k)], env=env)
            plan = GroundPlan(flight_domain if netem else ground_domain, cfg.duration_s,
                              cfg.rate_hz, cfg.width, cfg.height, cfg.seed,
                              str(tmp / f'ground_{k}.json'),
                              linger_s=1.5 + 4 * (cond.delay_ms + 3 * cond.jitter_ms) * 1e-3)
            env = link.env('ground', flight_domain) if link else dict(os.environ)
            ground = subprocess.Popen(
                [*(link.prefix('ground') if link else []), sys.executable, '-m', 'l3d_sim.hil',
                 'ground', json.dumps(asdict(plan))], env=env)
            try:
                code = ground.wait(timeout=plan.duration_s + plan.discovery_timeout_s
                                   + plan.linger_s + 20)
            finally:
                stop([p for p in (ground, relay) if p is not None])
            if code != 0:
                raise RuntimeError(f'ground station for condition {cond.name!r} exited with '
                                   f'{code}; is the flight node reachable on domain '
                                   f'{flight_domain}?')
            raw = json.loads(Path(plan.result_path).read_text())
            report.append({**asdict(cond), **_summary(raw['latency_ms'], raw['sent']),
                           'node_latency_ms_median': raw['node_latency_ms_median'],
                           'node_frames_replaced': raw['node_frames_replaced'],
                           'node_inputs_dropped': raw['node_inputs_dropped']})
            if procs and procs[0].poll() is not None:
                raise RuntimeError(f'flight node exited with {procs[0].returncode}')
    finally:
        stop(procs)
        if cpu is not None:
            cpu.close()
        if link is not None:
            link.close()
        shutil.rmtree(tmp, ignore_errors=True)
    result = {'mode': mode, 'impairment': 'netem' if netem else 'relay',
              'flight_domain': flight_domain, 'cpu_core': None if mode == 'board' else core,
              'cpu_quota': cfg.cpu_quota, 'cpu_limit': cpu.method if cpu else None,
              'rate_hz': cfg.rate_hz, 'duration_s': cfg.duration_s,
              'image': [cfg.width, cfg.height], 'conditions': report}
    (out_dir / 'hil.json').write_text(json.dumps(result, indent=2))
    (out_dir / 'hil.md').write_text(_markdown(result))
    return result


def _markdown(result: dict) -> str:
    rows = ['| condition | delay ms | jitter ms | loss | sent | answered | median ms | p95 ms '
            '| p99 ms | max ms | node ms | node skipped |', '|' + '---|' * 12]
    for c in result['conditions']:
        lat = c['latency_ms'] or dict.fromkeys(('median', 'p95', 'p99', 'max'), float('nan'))
        rows.append(f"| {c['name']} | {c['delay_ms']:g} | {c['jitter_ms']:g} | {c['loss']:g} "
                    f"| {c['sent']} | {c['received']} | {lat['median']:.1f} | {lat['p95']:.1f} "
                    f"| {lat['p99']:.1f} | {lat['max']:.1f} | {c['node_latency_ms_median']} "
                    f"| {c['node_frames_replaced']} |")
    where = {'netns': 'own network namespace behind a veth pair', 'process':
             'separate process on this host', 'board': f"board on DDS domain "
             f"{result['flight_domain']}"}[result['mode']]
    return (f"# l3d hil\n\nFlight node: {where}; CPU core {result['cpu_core']}, quota "
            f"{result['cpu_quota']:g} ({result['cpu_limit']}); link impairment by "
            f"{result['impairment']} (each direction). {result['image'][0]}x"
            f"{result['image'][1]} synthetic pairs at {result['rate_hz']:g} Hz for "
            f"{result['duration_s']:g} s per condition. Latency: left-image stamp -> `depth` "
            "at the ground station, one clock.\n\n" + '\n'.join(rows) + '\n')


def add_arguments(parser) -> None:
    parser.add_argument('--config', type=Path, default=None,
                        help='ROS 2 parameter file (default: config/lunar_stereo.yaml)')
    parser.add_argument('--condition', action='append', type=LinkCondition.parse,
                        help='NAME:DELAY_MS[:JITTER_MS[:LOSS]] one way, each direction; '
                        'repeatable (default: clean:0, delay50:50, lossy:20:5:0.02)')
    parser.add_argument('--duration', type=float, default=10.0,
                        help='seconds of frames per condition')
    parser.add_argument('--rate', type=float, default=5.0, help='stereo pairs per second')
    parser.add_argument('--width', type=int, default=320, help='image width [px]')
    parser.add_argument('--height', type=int, default=240, help='image height [px]')
    parser.add_argument('--cpu-core', type=int, default=None,
                        help='core the node is pinned to (default: the last one allowed)')
    parser.add_argument('--cpu-quota', type=float, default=1.0,
                        help='fraction of that core the node may use, (0, 1] (default 1)')
    parser.add_argument('--board-domain', type=int, default=None,
                        help='a real board runs the node on this DDS domain: start none')
    parser.add_argument('--isolate', choices=('auto', 'netns', 'process'), default='auto',
                        help='netns: own network namespace (root), process: same host')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', type=Path, default=Path('out/hil'), help='report folder')


def run(args) -> int:
    if not 0.0 < args.cpu_quota <= 1.0:
        raise ValueError(f'--cpu-quota={args.cpu_quota!r}: expected a fraction in (0, 1]')
    if not (args.duration > 0 and args.rate > 0):
        raise ValueError(f'--duration={args.duration!r}, --rate={args.rate!r}: expected > 0')
    conditions = tuple(args.condition or (LinkCondition('clean'), LinkCondition('delay50', 50),
                                          LinkCondition('lossy', 20, 5, 0.02)))
    cfg = HilConfig((args.config or default_config_path()).resolve(), conditions,
                    args.duration, args.rate, args.width, args.height, args.cpu_core,
                    args.cpu_quota, args.board_domain, args.isolate, args.seed)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))    # finally blocks clean up
    logging.basicConfig(level=logging.INFO, format='l3d hil: %(message)s')
    result = run_hil(cfg, args.out)
    print((args.out / 'hil.md').read_text())
    print(f"l3d hil: {args.out / 'hil.json'} ({result['mode']}, {result['impairment']})")
    return 0


if __name__ == '__main__':
    sys.exit(_child_main(sys.argv[1:]))
