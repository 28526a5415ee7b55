"""A separate-process subscriber of every `l3d_stereo` output (reliable, keep 10), used as the
downstream consumer (RViz, a recorder, a ground link) in long and fault tests.

Run as `python test/ros_sink.py NAME COUNTS_JSON`: it subscribes and keeps COUNTS_JSON at the
number of messages it received per topic (rewritten every 0.2 s and on SIGTERM, when it
exits). SIGSTOP freezes it: a stalled reliable reader.
"""
import json
from pathlib import Path
import signal
import sys
import time

from ros_harness import Peer


def write_counts(peer: Peer, path: Path) -> None:
    with peer.lock:
        counts = dict(peer.counts)
    tmp = path.with_suffix('.tmp')
    tmp.write_text(json.dumps(counts))
    tmp.replace(path)                                  # readers never see a partial file


def main(name: str, counts_path: str) -> None:
    peer = Peer(name, keep=1)
    path = Path(counts_path)
    done = []
    signal.signal(signal.SIGTERM, lambda *_: done.append(True))
    while not done:
        write_counts(peer, path)
        time.sleep(0.2)
    write_counts(peer, path)
    peer.close()


if __name__ == '__main__':
    main(*sys.argv[1:3])
