"""keep_freed_memory: per-frame arrays stop page-faulting once the heap is kept."""
import subprocess
import sys

PROBE = '''
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from l3d_ros.runtime import keep_freed_memory
    assert keep_freed_memory()
def frame():  # a few MB of temporaries, as one hazard frame allocates
    a = np.ones((800, 800)); b = a * 2.0; c = np.ones((600, 600), np.float32)
    return float(b[0, 0] + c[0, 0])
frame()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    frame()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 20)
'''


def faults_per_frame(mode: str) -> float:
    out = subprocess.run([sys.executable, '-c', PROBE, mode], check=True, capture_output=True,
                         text=True)
    return float(out.stdout.strip())


def test_kept_heap_stops_page_faults_per_frame():
    default, kept = faults_per_frame('default'), faults_per_frame('keep')
    assert default > 500          # glibc maps and faults ~6 MB of arrays in again every frame
    assert kept < 10              # served from the kept heap
