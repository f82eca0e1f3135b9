"""Two suspected causes of the drift `search_and_verify` reports, checked on this machine.

    python benchmarks/timing_drift_checks.py

1. Resident networks: the reference archs timed alone vs timed in one interleaved session with 200 other
   FBNet networks (median ratio crowd / alone).
2. Denormals: the reference archs with torch.set_flush_denormal(True) vs False (median ratio on / off),
   for fbnet at batch 1 and nasbench201 at batch 16.

Each check runs twice; ratios near 1 rule the cause out.
"""
import numpy as np
import torch

from help_plugin import HELPEstimator
from help_plugin.measure import LocalTorchDevice


def references(space: str) -> np.ndarray:
    est = HELPEstimator.pretrained(space)
    return est.space.to_indices(est.reference_archs)


def main() -> None:
    refs = references("fbnet")
    others = HELPEstimator.pretrained("fbnet").space.sample(200, 7)
    dev = LocalTorchDevice("fbnet", passes=4)
    for trial in range(2):
        alone = dev.measure(refs).latency_ms
        crowd = dev.measure(np.concatenate([refs, others])).latency_ms[:len(refs)]
        print(f"resident networks, trial {trial}: fbnet refs timed among 200 others / alone: "
              f"median ratio {np.median(crowd / alone):.3f}")
    for space, batch in (("fbnet", 1), ("nasbench201", 16)):
        refs = references(space)
        dev = LocalTorchDevice(space, passes=4, batch_size=batch)
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
    main()
