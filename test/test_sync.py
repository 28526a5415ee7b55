"""l3d_ros.sync: pairing policy with exact counter values, invariants, and the LatestSlot."""
from dataclasses import fields
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from l3d_ros.config import SyncConfig
from l3d_ros.sync import LatestSlot, StereoSynchronizer, STREAMS, SyncStats

MS = 1_000_000                                   # ns per millisecond
SHORT = {'left': 'L', 'right': 'R', 'left_info': 'LI', 'right_info': 'RI'}
BY_SHORT = {v: k for k, v in SHORT.items()}


def feed(sync, events):
    """events: 'L@3 R@4 ...' (stamps in ms); payload = (stream, stamp_ns). Returns sets."""
    out = []
    for event in events.split():
        name, stamp = event.split('@')
        stamp_ns = int(float(stamp) * MS)
        found = sync.add(BY_SHORT[name], stamp_ns, (BY_SHORT[name], stamp_ns))
        if found is not None:
            out.append(found)
    return out


def stamps_ms(found):
    return tuple(getattr(found, s)[1] / MS for s in STREAMS)


def counters(sync):
    snap = sync.snapshot()
    return {k: v for k, v in snap.items() if v and k != 'queued'}


# --- exact ----------------------------------------------------------------------------------

def test_exact_matches_out_of_order_arrivals():
    sync = StereoSynchronizer('exact')
    sets = feed(sync, 'L@2 R@1 L@1 LI@1 RI@2 R@2 RI@1 LI@2')
    assert [s.stamp_ns for s in sets] == [1 * MS, 2 * MS]
    assert [stamps_ms(s) for s in sets] == [(1, 1, 1, 1), (2, 2, 2, 2)]
    assert counters(sync) == {'matched': 2} and sync.snapshot()['queued'] == 0


def test_exact_newer_set_first_discards_the_older_partial_one():
    sync = StereoSynchronizer('exact')
    sets = feed(sync, 'L@1 R@1 LI@1 L@2 R@2 LI@2 RI@2')
    assert [s.stamp_ns for s in sets] == [2 * MS]
    assert counters(sync) == {'matched': 1, 'dropped_unmatched': 3}
    assert feed(sync, 'RI@1') == []                  # too late: older than the used one
    assert counters(sync) == {'matched': 1, 'dropped_unmatched': 4}


def test_a_complete_but_late_set_is_not_emitted():
    sync = StereoSynchronizer('approximate', slop_s=0.005)
    assert len(feed(sync, 'L@33 R@33 LI@33 RI@33')) == 1
    assert feed(sync, 'L@0 R@0 LI@0 RI@0') == []       # would break increasing stamps
    assert counters(sync) == {'matched': 1, 'dropped_unmatched': 4}


def test_exact_needs_equal_stamps():
    sync = StereoSynchronizer('exact', slop_s=0.5)   # slop is ignored in exact mode
    assert feed(sync, 'L@100 R@100.000001 LI@100 RI@100') == []
    assert sync.snapshot()['queued'] == 4


# --- approximate ----------------------------------------------------------------------------

def test_approximate_within_slop_inclusive():
    sync = StereoSynchronizer('approximate', slop_s=0.005)
    (found,) = feed(sync, 'L@0 R@5 LI@0 RI@3')
    assert stamps_ms(found) == (0, 5, 0, 3) and found.stamp_ns == 0


def test_approximate_outside_slop_waits_for_a_closer_message():
    sync = StereoSynchronizer('approximate', slop_s=0.005)
    assert feed(sync, 'L@0 R@6 LI@0 RI@0') == []
    (found,) = feed(sync, 'R@2')
    assert stamps_ms(found) == (0, 2, 0, 0)
    assert sync.snapshot()['queued'] == 1            # R@6 is newer than R@2: kept


def test_approximate_bounds_the_spread_not_the_distance_to_left():
    sync = StereoSynchronizer('approximate', slop_s=0.005)
    assert feed(sync, 'L@0 R@-4 LI@4 RI@0') == []    # each within 5 ms of L, spread 8 ms
    (found,) = feed(sync, 'LI@1')
    assert stamps_ms(found) == (0, -4, 1, 0)


def test_approximate_picks_the_smallest_spread():
    sync = StereoSynchronizer('approximate', slop_s=0.005)
    (found,) = feed(sync, 'R@-3 R@1 LI@0 RI@0 L@0')
    assert stamps_ms(found) == (0, 1, 0, 0)
    assert counters(sync) == {'matched': 1, 'dropped_unmatched': 1}   # R@-3


# --- counters, each with exact numbers ------------------------------------------------------

def test_overflow_drops_the_oldest():
    sync = StereoSynchronizer('exact', queue_size=3)
    assert feed(sync, 'L@1 L@2 L@3 L@4 L@5 R@1 LI@1 RI@1') == []   # L@1, L@2 overflowed
    assert counters(sync) == {'dropped_overflow': 2} and sync.snapshot()['queued'] == 6
    assert [s.stamp_ns for s in feed(sync, 'R@3 LI@3 RI@3')] == [3 * MS]
    assert counters(sync) == {'matched': 1, 'dropped_overflow': 2, 'dropped_unmatched': 3}
    assert sync.snapshot()['queued'] == 2                                 # L@4, L@5


def test_a_message_that_completes_a_set_is_not_lost_to_overflow():
    sync = StereoSynchronizer('exact', queue_size=1)
    assert feed(sync, 'R@2 LI@2 RI@2 L@1 L@2') != []     # L@2 evicts L@1 only afterwards
    assert counters(sync) == {'matched': 1, 'dropped_unmatched': 1}


def test_stale_messages_are_dropped_on_arrival_and_in_queues():
    sync = StereoSynchronizer('exact', max_age_s=1.0)
    feed(sync, 'LI@9500 L@10000')
    assert feed(sync, 'R@8900') == []                     # 1.1 s behind the newest: stale
    assert counters(sync) == {'dropped_stale': 1}
    feed(sync, 'L@10600')                                 # LI@9500 now 1.1 s behind
    assert counters(sync) == {'dropped_stale': 2}
    assert [s.stamp_ns for s in feed(sync, 'R@10000 LI@10000 RI@10000')] == [10000 * MS]
    assert counters(sync) == {'matched': 1, 'dropped_stale': 2}


def test_duplicate_stamps_are_counted_and_dropped():
    sync = StereoSynchronizer('exact')
    assert feed(sync, 'L@1 L@1 R@1 LI@1') == []
    (found,) = feed(sync, 'RI@1')
    assert counters(sync) == {'matched': 1, 'duplicates': 1}
    assert feed(sync, 'L@1 L@1 R@1') == []                  # frozen camera after the match
    assert counters(sync) == {'matched': 1, 'duplicates': 4}
    assert sync.snapshot()['queued'] == 0


def test_time_jump_clears_and_accepts_the_new_timeline():
    sync = StereoSynchronizer('exact', max_age_s=2.0)
    feed(sync, 'L@100000 R@100000 LI@100000 RI@100000 L@100033 R@100033')
    assert feed(sync, 'L@99000 R@99000') == []           # 1 s back: late, neither jump nor stale
    assert counters(sync) == {'matched': 1, 'dropped_unmatched': 2}
    sets = feed(sync, 'L@50 R@50 LI@50 RI@50')           # sim restart: 100 s back
    assert [s.stamp_ns for s in sets] == [50 * MS]
    assert counters(sync) == {'matched': 2, 'dropped_unmatched': 4, 'time_jumps': 1}


def test_validation_and_config():
    with pytest.raises(ValueError, match="sync.mode='fuzzy'"):
        StereoSynchronizer('fuzzy')
    with pytest.raises(ValueError, match='sync.queue_size=0'):
        StereoSynchronizer(queue_size=0)
    sync = StereoSynchronizer.from_config(SyncConfig(mode='approximate', slop_s=0.01))
    assert (sync.mode, sync.slop_ns, sync.queue_size) == ('approximate', 10 * MS, 10)
    with pytest.raises(ValueError, match="stream='depth'"):
        sync.add('depth', 0, None)
    with pytest.raises(ValueError, match='stamp_ns=1.5'):
        sync.add('left', 1.5, None)
    assert set(sync.snapshot()) == {f.name for f in fields(SyncStats)} | {'queued'}


# --- invariants over random streams -----------------------------------------------------------

@st.composite
def camera_streams(draw):
    """Frames every 33 ms on four streams with stamp jitter, losses, arrival delays (so
    reordering), repeated stamps and, sometimes, a restart of the clock; (stream, stamp_ms)."""
    messages = []
    for origin_ms in draw(st.sampled_from([(0,), (0,), (5000, 0)])):
        for frame in range(draw(st.integers(1, 12))):
            for stream in STREAMS:
                if draw(st.integers(0, 9)) == 0:
                    continue                                              # lost
                stamp = origin_ms + 33 * frame + draw(st.sampled_from(range(-8, 9)))
                delay_ms = draw(st.sampled_from(range(0, 81, 4)))
                arrival = (origin_ms > 0, stamp + delay_ms)            # a restart comes last
                messages += [(arrival, stream, stamp)] * draw(st.sampled_from([1, 1, 1, 2]))
    return [(stream, stamp) for _, stream, stamp in sorted(messages, key=lambda m: m[0])]


events = st.one_of(camera_streams(), camera_streams(), camera_streams(),
                   st.lists(st.tuples(st.sampled_from(STREAMS), st.integers(0, 400)),
                            max_size=80))


@settings(max_examples=400, deadline=None)
@given(events=events, mode=st.sampled_from(['exact', 'approximate']),
       slop_ms=st.sampled_from([0, 1, 5, 20]), queue_size=st.integers(1, 6),
       max_age_ms=st.sampled_from([50, 150, 1000]))
def test_sets_respect_slop_and_increase_and_every_message_is_accounted(
        events, mode, slop_ms, queue_size, max_age_ms):
    sync = StereoSynchronizer(mode, slop_ms / 1e3, queue_size, max_age_ms / 1e3)
    slop_ns = slop_ms * MS if mode == 'approximate' else 0
    last_left, jumps = None, 0
    for n, (stream, stamp_ms) in enumerate(events, start=1):
        found = sync.add(stream, stamp_ms * MS, (stream, stamp_ms * MS))
        if sync.stats.time_jumps != jumps:
            last_left, jumps = None, sync.stats.time_jumps
        if found is not None:
            stamps = [getattr(found, s)[1] for s in STREAMS]
            assert [getattr(found, s)[0] for s in STREAMS] == list(STREAMS)
            assert found.stamp_ns == found.left[1]
            assert max(stamps) - min(stamps) <= slop_ns
            assert last_left is None or found.stamp_ns > last_left
            last_left = found.stamp_ns
        snap = sync.snapshot()
        dropped = sum(v for k, v in snap.items() if k.startswith('dropped') or k == 'duplicates')
        assert n == 4 * snap['matched'] + dropped + snap['queued']
        assert all(len(q) <= queue_size for q in sync._stamps.values())


# --- LatestSlot -------------------------------------------------------------------------------

def test_latest_slot_consumer_sees_only_the_newest():
    slot, produced, seen = LatestSlot(), 3000, []
    done = threading.Event()

    def consumer():
        while (item := slot.take(timeout_s=2.0)) is not None:
            seen.append(item)
            time.sleep(0.0005)                           # slower than the producer
            if item == produced - 1:
                break
        done.set()

    thread = threading.Thread(target=consumer)
    thread.start()
    replaced_flags = [slot.put(i) for i in range(produced)]
    assert done.wait(5.0)
    thread.join()
    assert seen[-1] == produced - 1 and seen == sorted(set(seen))   # newest, never older
    assert 0 < len(seen) < produced
    assert slot.replaced == sum(replaced_flags) == produced - len(seen)


def test_latest_slot_timeout_and_close():
    slot = LatestSlot()
    start = time.monotonic()
    assert slot.take(timeout_s=0.05) is None and time.monotonic() - start >= 0.05
    assert slot.put('a') is False and slot.put('b') is True and slot.take(0) == 'b'
    result = []
    waiter = threading.Thread(target=lambda: result.append(slot.take(timeout_s=None)))
    waiter.start()
    time.sleep(0.05)
    slot.close()
    waiter.join(2.0)
    assert not waiter.is_alive() and result == [None]
    assert slot.put('c') is False and slot.take(0) is None and slot.closed
