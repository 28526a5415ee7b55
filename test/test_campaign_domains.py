"""Parallel landings never share a DDS domain (they use the same sim-time stamps)."""
import threading
import time

from l3d_sim.campaign import run_exclusive


def test_concurrent_jobs_never_hold_the_same_domain():
    # a short job (a blind landing) next to long ones: with a fixed job -> slot mapping the
    # third job started on the first job's domain while it was still running
    durations = [0.3, 0.02, 0.02, 0.3, 0.02, 0.02, 0.2, 0.05, 0.1, 0.02]
    lock, holding, spans, clashes = threading.Lock(), {}, [], []

    def fn(job, domain):
        with lock:
            if domain in holding:
                clashes.append((job, holding[domain]))
            holding[domain] = job
        time.sleep(durations[job])
        with lock:
            del holding[domain]
            spans.append((job, domain))

    run_exclusive(list(range(len(durations))), [110, 111], fn)
    assert not clashes
    assert sorted(j for j, _ in spans) == list(range(len(durations)))   # every job ran once
    assert {d for _, d in spans} == {110, 111}                           # both workers used
