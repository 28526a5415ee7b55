"""Stereo pairing of left/right images and their camera_info by header stamp (pure Python).

Our small equivalent of message_filters' Exact/ApproximateTime for the four input streams of the
node, working on (stamp_ns, payload) pairs so it is tested without ROS; `LatestSlot` hands the
newest set to a worker thread ("newest pair wins" back-pressure).

Policy, per `StereoSynchronizer.add`:
- A stream whose stamp goes back by more than max_age_s below its own newest stamp means a new
  timeline (sim restart, bag loop): every queue is cleared (counted as unmatched), `time_jumps`
  is counted and the message starts the new timeline.
- A stamp the stream already delivered (queued, or its newest) is a duplicate (frozen camera).
- A stamp older than the newest stamp of any stream minus max_age_s is stale; queued messages
  that become stale are dropped too.
- A stamp not newer than the last one of its stream used in a set can no longer match.
- A set is one message per stream, the left one its pivot, with a stamp spread <= slop_s (0 in
  exact mode); among candidate sets the smallest spread wins. A set is emitted as soon as it is
  complete (greedy: no waiting for a possibly better late message); when several complete at
  once, the newest left wins. Everything older than the used message of each stream is then
  discarded as unmatched, so emitted left stamps strictly increase.
- Queues hold at most queue_size messages each; beyond that the oldest is dropped (overflow).
Each dropped message is counted once, so: added = 4 * matched + all drops + queued.
"""
from bisect import bisect_left, bisect_right
from dataclasses import asdict, dataclass
import threading
from typing import Any, Optional

from l3d_ros.config import SyncConfig

STREAMS = ('left', 'right', 'left_info', 'right_info')


@dataclass(frozen=True)
class StereoSet:
    """One synchronised set; stamp_ns is the left image's stamp, the stamp of the outputs."""

    stamp_ns: int
    left: Any
    right: Any
    left_info: Any
    right_info: Any


@dataclass
class SyncStats:
    """Counts of messages by fate (sets for `matched`) since the synchroniser was made."""

    matched: int = 0
    dropped_overflow: int = 0
    dropped_unmatched: int = 0
    dropped_stale: int = 0
    duplicates: int = 0
    time_jumps: int = 0


class StereoSynchronizer:
    """Pairs 'left', 'right', 'left_info', 'right_info' messages by stamp (module docstring).

    mode: 'exact' (all four stamps equal) or 'approximate' (spread <= slop_s [s]);
    queue_size: messages kept per stream; max_age_s [s]: staleness and time-jump threshold.
    Thread-safe: `add` may be called from several executor threads.
    """

    def __init__(self, mode: str = SyncConfig.mode, slop_s: float = SyncConfig.slop_s,
                 queue_size: int = SyncConfig.queue_size,
                 max_age_s: float = SyncConfig.max_age_s):
        SyncConfig(mode=mode, slop_s=slop_s, queue_size=queue_size, max_age_s=max_age_s)
        self.mode = mode
        self.slop_ns = 0 if mode == 'exact' else round(slop_s * 1e9)
        self.queue_size = queue_size
        self.max_age_ns = round(max_age_s * 1e9)
        self.stats = SyncStats()
        self._lock = threading.Lock()
        self._clear()

    @classmethod
    def from_config(cls, cfg: SyncConfig) -> 'StereoSynchronizer':
        return cls(cfg.mode, cfg.slop_s, cfg.queue_size, cfg.max_age_s)

    def _clear(self) -> None:
        self._stamps = {s: [] for s in STREAMS}      # sorted stamps per stream
        self._msgs = {s: {} for s in STREAMS}        # stamp -> payload
        self._newest = {s: None for s in STREAMS}    # newest stamp accepted per stream
        self._used = {s: None for s in STREAMS}      # stamp of the stream's last matched message

    def queued(self) -> int:
        return sum(len(stamps) for stamps in self._stamps.values())

    def snapshot(self) -> dict:
        """Counters plus the number of messages waiting, for diagnostics."""
        with self._lock:
            return {**asdict(self.stats), 'queued': self.queued()}

    def add(self, stream: str, stamp_ns: int, msg: Any) -> Optional[StereoSet]:
        """Offers one message; returns the set it completes, if any."""
        if stream not in STREAMS:
            raise ValueError(f'stream={stream!r}: expected one of {STREAMS}')
        if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, int):
            raise ValueError(f'stamp_ns={stamp_ns!r}: expected an integer of nanoseconds')
        with self._lock:
            if not self._accept(stream, stamp_ns):
                return None
            self._stamps[stream].insert(bisect_left(self._stamps[stream], stamp_ns), stamp_ns)
            self._msgs[stream][stamp_ns] = msg
            own = self._newest[stream]
            self._newest[stream] = stamp_ns if own is None else max(own, stamp_ns)
            self._drop_stale()
            found = self._match(stream, stamp_ns)
            if found is not None:
                return self._emit(found)
            while len(self._stamps[stream]) > self.queue_size:
                self._discard(stream, 0)
                self.stats.dropped_overflow += 1
            return None

    def _accept(self, stream: str, stamp_ns: int) -> bool:
        own = self._newest[stream]
        if own is not None and stamp_ns < own - self.max_age_ns:
            self.stats.time_jumps += 1
            self.stats.dropped_unmatched += self.queued()
            self._clear()
            return True
        if stamp_ns == own or stamp_ns in self._msgs[stream]:
            self.stats.duplicates += 1
            return False
        newest = max((t for t in self._newest.values() if t is not None), default=stamp_ns)
        if stamp_ns < newest - self.max_age_ns:
            self.stats.dropped_stale += 1
            return False
        if self._used[stream] is not None and stamp_ns <= self._used[stream]:
            self.stats.dropped_unmatched += 1
            return False
        return True

    def _discard(self, stream: str, index: int) -> Any:
        return self._msgs[stream].pop(self._stamps[stream].pop(index))

    def _drop_stale(self) -> None:
        oldest_ok = max(t for t in self._newest.values() if t is not None) - self.max_age_ns
        for stream, stamps in self._stamps.items():
            while stamps and stamps[0] < oldest_ok:
                self._discard(stream, 0)
                self.stats.dropped_stale += 1

    def _match(self, stream: str, stamp_ns: int) -> Optional[dict]:
        """The best set the new message completes: {stream: stamp}, or None.

        Before this message no set was complete (each add emits the newest one and discards
        what is older), so only left stamps within slop of the new stamp can pivot one.
        """
        lefts = self._stamps['left']
        if stream == 'left':
            pivots = [stamp_ns]
        else:
            pivots = lefts[bisect_left(lefts, stamp_ns - self.slop_ns):
                           bisect_right(lefts, stamp_ns + self.slop_ns)][::-1]
        for pivot in pivots:                                   # newest left first
            found = self._best_set(pivot)
            if found is not None:
                return found
        return None

    def _best_set(self, pivot: int) -> Optional[dict]:
        """Smallest-spread set around the left stamp `pivot`: windows [a, a + slop] with
        pivot - slop <= a <= pivot; in each, every stream takes its stamp nearest the pivot."""
        slop = self.slop_ns
        near = {s: self._stamps[s][bisect_left(self._stamps[s], pivot - slop):
                                   bisect_right(self._stamps[s], pivot + slop)]
                for s in STREAMS if s != 'left'}
        starts = sorted({t for ts in near.values() for t in ts if t <= pivot} | {pivot})
        best, best_key = None, None
        for a in starts:
            chosen = {'left': pivot}
            for s, ts in near.items():
                inside = [t for t in ts if a <= t <= a + slop]
                if not inside:
                    break
                chosen[s] = min(inside, key=lambda t: abs(t - pivot))
            else:
                key = (max(chosen.values()) - min(chosen.values()),
                       sum(abs(t - pivot) for t in chosen.values()))
                if best_key is None or key < best_key:
                    best, best_key = chosen, key
        return best

    def _emit(self, chosen: dict) -> StereoSet:
        payloads = {}
        for stream, stamp in chosen.items():
            stamps = self._stamps[stream]
            index = bisect_left(stamps, stamp)
            payloads[stream] = self._discard(stream, index)
            for _ in range(index):                     # everything older: unmatched
                self._discard(stream, 0)
            self.stats.dropped_unmatched += index
            self._used[stream] = stamp
        self.stats.matched += 1
        return StereoSet(stamp_ns=chosen['left'], **payloads)


class LatestSlot:
    """Single-item mailbox between a producer and a slower consumer; the newest item wins.

    `replaced` counts items overwritten before anyone took them.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False
        self.replaced = 0

    def put(self, item: Any) -> bool:
        """Stores `item`; True if it replaced an unconsumed one. Ignored (False) once closed."""
        with self._cond:
            if self._closed:
                return False
            replaced = self._full
            self.replaced += replaced
            self._item, self._full = item, True
            self._cond.notify()
            return replaced

    def take(self, timeout_s: Optional[float] = None) -> Any:
        """Waits up to timeout_s [s] (None: forever) for an item; None on timeout or close."""
        with self._cond:
            self._cond.wait_for(lambda: self._full or self._closed, timeout_s)
            if self._closed or not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        """Wakes every waiter; from now on take() returns None and put() is ignored."""
        with self._cond:
            self._closed = True
            self._item, self._full = None, False
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
