"""Process-wide settings for a steady per-frame latency.

Each frame allocates a few dozen arrays of 0.1-10 MB (points, DEM windows, hazard layers).
glibc serves blocks above its mmap threshold with fresh mappings and returns freed memory at
the top of the heap to the kernel, so by default every frame page-faults its working set in
again (on the 2-core CI VM: ~2000 faults and a third of the hazard stage's time). Real-time
ROS 2 practice is to keep the heap instead; `keep_freed_memory` does that with mallopt.
The resident size then stays at the high-water mark of one frame's working set, which the
soak test (#9) bounds over 10 minutes.
"""
import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1          # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_B = 32 << 20    # the largest value glibc accepts on 64-bit systems
TRIM_THRESHOLD_B = 1 << 30


def keep_freed_memory() -> bool:
    """Serve allocations up to 32 MiB from the heap and never trim it (glibc only).

    Returns True when glibc took both settings, False elsewhere (musl, macOS: no-op).
    """
    if not sys.platform.startswith('linux'):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_B)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_B))
