"""A separate-process subscriber of every `l3d_stereo` output (reliable, keep 10), used as the
downstream consumer (RViz, a recorder, a ground link) in long and fault tests.

Run as `python test/ros_sink.py NAME COUNTS_JSON`: it subscribes, and on SIGTERM writes the
number of messages it received per topic to COUNTS_JSON. SIGSTOP freezes it: a stalled
reliable reader.
"""
import json
from pathlib import Path
import signal
import sys
import time

from ros_harness import Peer


def main(name: str, counts_path: str) -> None:
    peer = Peer(name, keep=1)
    done = []
    signal.signal(signal.SIGTERM, lambda *_: done.append(True))
    while not done:
        time.sleep(0.05)
    with peer.lock:
        counts = dict(peer.counts)
    peer.close()
    Path(counts_path).write_text(json.dumps(counts))


if __name__ == '__main__':
    main(*sys.argv[1:3])
