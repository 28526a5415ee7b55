"""The node's health book-keeping, without ROS: faults, lost inputs, drops, latency.

`StereoNode` feeds it events and turns `report()` into a diagnostic_msgs/DiagnosticStatus once a
second. Levels follow diagnostic_msgs: 0 OK, 1 WARN (faults since the last report, or running
on the fallback backend), 2 ERROR (the configured model was refused, or no input at all for
longer than `input_timeout_s`: the node then has nothing to judge the ground with).
"""
from collections import deque
from dataclasses import dataclass
import math
import threading
import time

import numpy as np

from l3d_ros.hazard import OCCUPANCY_SAFE_MAX

OK, WARN, ERROR = 0, 1, 2
LATENCY_WINDOW = 200    # frames kept for the recent latency statistics
RECENT_FAULTS = 20      # distinct faults listed per report
SILENT_AFTER_S = 1.0    # an input this much older than the newest is reported lost
STREAMS = ('left', 'right', 'left_info', 'right_info')
DROP_REASONS = {
    'dropped_stale': 'stale (older than the newest input by more than sync.max_age_s)',
    'duplicates': 'with a repeated stamp',
    'time_jumps': 'time jumps backwards (queues cleared)',
    'dropped_overflow': 'beyond sync.queue_size',
    'dropped_unmatched': 'inputs that found no partner stamp (sync.mode, sync.slop_s)',
    'outputs_replaced': 'frames whose outputs a slow subscriber did not take in time',
}


class LatencyHistogram:
    """Latencies since start in fixed memory: geometric bins, 1 % wide, 0.1 ms .. 1000 s.

    Percentiles are read at the upper edge of their bin (never below the true value by more
    than 1 %, never above it by more than 1 %); the maximum is exact.
    """

    LO_MS, HI_MS, RATIO = 0.1, 1e6, 1.01

    def __init__(self):
        self.edges_ms = self.LO_MS * self.RATIO ** np.arange(
            math.ceil(math.log(self.HI_MS / self.LO_MS) / math.log(self.RATIO)) + 1)
        self.counts = np.zeros(len(self.edges_ms) + 1, np.int64)   # below, bins..., above
        self.max_ms = math.nan                  # NaN while empty

    def add(self, latency_ms: float) -> None:
        self.counts[np.searchsorted(self.edges_ms, latency_ms)] += 1
        if not self.max_ms >= latency_ms:       # also the first one (NaN compares false)
            self.max_ms = float(latency_ms)

    def percentile(self, q: float) -> float:
        """q in [0, 100]; NaN while empty."""
        n = int(self.counts.sum())
        if n == 0:
            return math.nan
        k = int(np.searchsorted(np.cumsum(self.counts), max(1, math.ceil(q / 100 * n))))
        if k >= len(self.edges_ms):                 # beyond the last edge
            return float(self.max_ms)
        return float(min(self.edges_ms[k], self.max_ms))


def scene_values(depth_m: np.ndarray, occupancy: np.ndarray, site_found: bool,
                 binning: int = 1, frame_backend: str = '',
                 backend_values: dict | None = None) -> dict:
    """What one frame could see, for the diagnostics: the share of pixels with depth, of its
    hazard-map cells that are known (not -1) and that are certified safe (0..49), and whether a
    site was found: a scene in shadow or without texture shows as low shares; the bin factor
    it was matched at (2: noise-limited, l3d_ros.binning), the backend that matched it and
    that backend's own values (the student's exposure gain, tiles and texture threshold:
    how it read the camera's images)."""
    def share(mask):
        return float(mask.mean()) if mask.size else 0.0
    occupancy = np.asarray(occupancy)
    return {'valid_depth_share': share(np.isfinite(depth_m)),
            'map_known_share': share(occupancy >= 0),
            'map_safe_share': share((occupancy >= 0) & (occupancy <= OCCUPANCY_SAFE_MAX)),
            'site_found': bool(site_found), 'binning': int(binning),
            'backend': frame_backend, **(backend_values or {})}


@dataclass(frozen=True)
class Report:
    level: int
    message: str
    values: dict[str, str]


class Health:
    """Thread-safe: callbacks, the worker and the diagnostics timer all write to it."""

    def __init__(self, init_fault: str = ''):
        self.lock = threading.Lock()
        self.faults = 0
        self.last_fault = init_fault
        self.recent = deque([init_fault] if init_fault else [], maxlen=RECENT_FAULTS)
        self.frames = 0
        self.latency_ms = deque(maxlen=LATENCY_WINDOW)
        self.latency_all = LatencyHistogram()          # since start
        self.stage_ms: dict[str, deque] = {}
        self.arrival_s: dict[str, float] = {}
        self.drops_seen: dict[str, int] = {}
        self.started_s = time.monotonic()
        self.last_scene: dict = {}                     # scene_values of the newest frame

    def fault(self, text: str) -> None:
        with self.lock:
            self.faults += 1
            self.last_fault = text
            self.recent.append(text)

    def arrived(self, stream: str, now_s: float) -> None:
        self.arrival_s[stream] = now_s

    def frame_done(self, latency_ms: float, stage_ms: dict[str, float],
                   scene: dict | None = None) -> None:
        with self.lock:
            self.frames += 1
            if scene is not None:
                self.last_scene = dict(scene)
            self.latency_ms.append(latency_ms)
            self.latency_all.add(latency_ms)
            for k, v in stage_ms.items():
                self.stage_ms.setdefault(k, deque(maxlen=LATENCY_WINDOW)).append(v)

    def silent_inputs(self) -> list[str]:
        """Inputs that stopped while others still arrive (a dead camera), as sentences."""
        if not self.arrival_s:
            return []
        newest = max(self.arrival_s.values())
        ages = {s: newest - self.arrival_s.get(s, -math.inf) for s in STREAMS}
        return [f'{s} silent for {age:.1f} s' for s, age in ages.items() if age > SILENT_AFTER_S]

    def no_input(self, timeout_s: float, now_s: float) -> str:
        """A sentence when no input at all arrived for more than timeout_s (> 0), else ''."""
        if not timeout_s > 0:
            return ''
        if self.arrival_s:
            age, what = now_s - max(self.arrival_s.values()), 'no input'
        else:
            age, what = now_s - self.started_s, 'no input since start'
        if age <= timeout_s:
            return ''
        return (f'input lost: {what} for {age:.1f} s, more than input_timeout_s={timeout_s:g} '
                '(camera, driver or link down?)')

    def _new_drops(self, drops: dict[str, int]) -> str:
        grown = {k: v - self.drops_seen.get(k, 0) for k, v in drops.items()
                 if k in DROP_REASONS and v > self.drops_seen.get(k, 0)}
        self.drops_seen = dict(drops)
        return ', '.join(f'{n} {DROP_REASONS[k]}' for k, n in grown.items())

    def report(self, active_backend: str, configured_backend: str, model_sha256: str,
               model_refused: bool, drops: dict[str, int],
               input_timeout_s: float = 0.0) -> Report:
        """The status since the last report; faults listed once, then forgotten."""
        now_s = time.monotonic()
        if lost := self.no_input(input_timeout_s, now_s):
            self.fault(lost)
        if silent := self.silent_inputs():
            self.fault('input lost: ' + '; '.join(silent))
        if dropped := self._new_drops(drops):
            self.fault(f'inputs dropped: {dropped}')
        with self.lock:
            recent = list(dict.fromkeys(self.recent))
            self.recent.clear()
            lat = np.array(self.latency_ms) if self.latency_ms else np.array([np.nan])
            stages = {k: float(np.median(v)) for k, v in self.stage_ms.items()}
            level = OK
            if recent or active_backend != configured_backend:
                level = WARN
            if model_refused or lost:
                level = ERROR
            values = {
                'backend': active_backend, 'configured_backend': configured_backend,
                'model_sha256': model_sha256, 'frames': self.frames,
                'latency_ms_median': f'{np.median(lat):.1f}',
                'latency_ms_p95': f'{np.percentile(lat, 95):.1f}',
                'latency_ms_p99': f'{np.percentile(lat, 99):.1f}',
                'latency_ms_median_since_start': f'{self.latency_all.percentile(50):.1f}',
                'latency_ms_p99_since_start': f'{self.latency_all.percentile(99):.1f}',
                'latency_ms_max_since_start': f'{self.latency_all.max_ms:.1f}',
                **{f'stage_ms_{k}': f'{v:.1f}' for k, v in stages.items()},
                **{f'last_frame_{k}': (f'{v:.3f}' if isinstance(v, float) else v)
                   for k, v in self.last_scene.items()},
                'faults': self.faults, 'last_fault': self.last_fault,
                'recent_faults': ' | '.join(recent),
                # a camera that streams has this near its frame period; between the scans of
                # a simulator that renders only at scan altitudes it grows, so it is a value,
                # not a fault
                'input_age_s': (f'{now_s - max(self.arrival_s.values()):.1f}'
                                if self.arrival_s else 'none'),
                **{f'drops_{k}': v for k, v in drops.items()}}
            message = lost or (recent[-1] if recent else
                               'ok' if level == OK else self.last_fault)
        return Report(level, message, {k: str(v) for k, v in values.items()})
