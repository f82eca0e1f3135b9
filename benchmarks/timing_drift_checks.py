"""Causes of the drift `search_and_verify` reports (reference archs re-timed later in the same process
running at another speed than when the estimator was adapted), checked on this machine.

    python benchmarks/timing_drift_checks.py

1. Allocator state (the cause found): in a fresh process, the reference archs are timed in 4 sessions
   with ``TorchEagerDevice(steady_heap=False)`` and, in another fresh process, with the default
   ``steady_heap=True`` (glibc's malloc keeps freed memory, see ``help_plugin.measure.set_steady_heap``).
   Printed per session: median latency, median ratio to the first session, and the minor page faults
   the session caused. Without it the first session page-faults on every large activation and is
   slower than the later ones; with it every session runs at the same speed, with ~0 faults.
2. Resident networks: the reference archs timed alone vs timed in one interleaved session with 200
   other FBNet networks (median ratio crowd / alone).
3. Denormals: the reference archs with torch.set_flush_denormal(True) vs False (median ratio on / off).

Ratios near 1 rule a cause out. Checks 1 and 3 run for fbnet at batch 1 and nasbench201 at batch 16.
"""
import subprocess
import sys

import numpy as np
import torch

from help_plugin import HELPEstimator
from help_plugin.measure import TorchEagerDevice

CASES = (("fbnet", 1), ("nasbench201", 16))


def references(space: str) -> np.ndarray:
    est = HELPEstimator.pretrained(space)
    return est.est.reference_indices


def sessions(space: str, batch: int, steady_heap: bool, n: int = 4) -> None:
    """Run in a fresh process: time the reference archs ``n`` times, print one line per session."""
    import resource

    refs = references(space)
    dev = TorchEagerDevice(space, passes=4, batch_size=batch, steady_heap=steady_heap)
    first = None
    for session in range(n):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        ms = dev.measure(refs).latency_ms
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        first = ms if first is None else first
        print(f"  session {session}: median {np.median(ms):.2f} ms, median ratio to session 0 "
              f"{np.median(ms / first):.3f}, minor page faults {faults}", flush=True)


def main() -> None:
    for space, batch in CASES:
        for steady in (False, True):
            print(f"allocator: {space} batch {batch}, steady_heap={steady}, fresh process", flush=True)
            subprocess.run([sys.executable, __file__, "--sessions", space, str(batch), str(int(steady))], check=True)

    refs = references("fbnet")
    others = HELPEstimator.pretrained("fbnet").space.sample(200, 7)
    dev = TorchEagerDevice("fbnet", passes=4)
    for trial in range(2):
        alone = dev.measure(refs).latency_ms
        crowd = dev.measure(np.concatenate([refs, others])).latency_ms[:len(refs)]
        print(f"resident networks, trial {trial}: fbnet refs timed among 200 others / alone: "
              f"median ratio {np.median(crowd / alone):.3f}")
    for space, batch in CASES:
        refs = references(space)
        dev = TorchEagerDevice(space, passes=4, batch_size=batch)
        for trial in range(2):
            try:
                torch.set_flush_denormal(False)
                off = dev.measure(refs).latency_ms
                torch.set_flush_denormal(True)
                on = dev.measure(refs).latency_ms
            finally:
                torch.set_flush_denormal(False)
            print(f"denormals, {space} batch {batch}, trial {trial}: flush on / off: median ratio "
                  f"{np.median(on / off):.3f}, min {np.min(on / off):.3f}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--sessions":
        sessions(sys.argv[2], int(sys.argv[3]), bool(int(sys.argv[4])))
    else:
        main()
