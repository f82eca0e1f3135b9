"""This machine as the unseen device: accuracy of the adapted shipped model on held-out archs,
next to the timing harness's own test-retest ceiling and two baselines, and how often a
latency-constrained search's winner meets the limit when re-measured.

help+ is adapted twice on the same measurements' device: on the reference archs + K designed shots (the
product's default, ``choose_shots``) and + K random ones; the baselines and the held-out archs use random ones.
The searches use the designed-shots model.

    python benchmarks/local_device.py --space nasbench201 --batch-size 1
    python benchmarks/local_device.py --space fbnet --batch-size 1 --searches 0
    python benchmarks/local_device.py --budget-use 0.9,0   # searches with and without the budget floor

Prints a Markdown table and writes results/local_device_SPACE_bBATCH.json. Run it on a quiet machine:
the retest column tells how much noise there was.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from help_plugin import HELPEstimator, get_split, load_help_data
from help_plugin.evaluation import metrics
from help_plugin.measure import TorchEagerDevice
from help_plugin.search import NoFeasibleArchitecture, VerifiedSearch, synflow_proposer
from help_plugin.search.verified import SYNFLOW
from help_plugin.predictors.baselines import ClosestDeviceEstimator, FLOPsEstimator
from help_plugin.predictors.shot_design import choose_shots


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", choices=["nasbench201", "fbnet"], default="nasbench201")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shots", type=int, default=10)
    p.add_argument("--test", type=int, default=200, help="held-out architectures to score")
    p.add_argument("--passes", type=int, default=6)
    p.add_argument("--searches", type=int, default=3, help="searches per constraint (0: skip)")
    p.add_argument("--budget-use", default="0.9",
                   help="VerifiedSearch's budget_use; a comma list (e.g. 0.9,0) runs each variant on every "
                        "(limit, seed), interleaved, so they meet the same machine state; 0: no floor")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    t_start = time.perf_counter()
    device = TorchEagerDevice(args.space, threads=args.threads, batch_size=args.batch_size, passes=args.passes,
                              seed=args.seed)
    est = HELPEstimator.pretrained(args.space, device=device.device_id)
    refs = est.reference_indices
    designed = choose_shots(est, args.shots, args.seed)  # the product's default shots
    taken = {est.space.canonical(r) for r in np.concatenate([refs, designed])}
    sample = est.space.sample_distinct(args.shots + args.test, args.seed + 1, taken)  # random shots + held-out
    archs = np.concatenate([refs, designed, sample])
    measured = device.measure(archs, progress=True)
    ms = measured.latency_ms
    n_ref, k = len(refs), args.shots
    random_rows = np.r_[0:n_ref, n_ref + k:n_ref + 2 * k]
    test = slice(n_ref + 2 * k, None)

    t0 = time.perf_counter()
    est.fit(archs[:n_ref + k], ms[:n_ref + k])
    adapt_s = time.perf_counter() - t0
    drawn = HELPEstimator.pretrained(args.space, device=device.device_id).fit(archs[random_rows], ms[random_rows])
    split = get_split(args.space)
    closest = ClosestDeviceEstimator(args.space).meta_fit(load_help_data(args.space), split.train, split.valid)
    closest.fit(archs[random_rows], ms[random_rows])
    flops = FLOPsEstimator(args.space).fit(archs[random_rows], ms[random_rows])
    rows = {name: metrics(m.predict(archs[test]), ms[test]) for name, m in
            [("help+ (shipped, designed shots)", est), ("help+ (shipped, random shots)", drawn),
             ("closest-device (random shots)", closest), ("flops (random shots)", flops)]}

    searches = []
    for q in (25, 50, 75) if args.searches else ():
        limit = float(np.round(np.percentile(ms[test], q), 2))
        for s in range(args.searches):
            for budget_use in [float(b) for b in args.budget_use.split(",")]:
                # calibrated by re-timing est's reference archs
                search = VerifiedSearch(est, device, synflow_proposer(est.space, seed=s), objective=SYNFLOW,
                                        budget_use=budget_use)
                try:
                    searches.append({"budget_use": budget_use, "found": True, **search.run(limit).to_dict()})
                except NoFeasibleArchitecture as e:  # nothing provably under the limit: no winner to measure
                    searches.append({"budget_use": budget_use, "found": False, "latency_limit_ms": limit,
                                     "reason": str(e)})
    report = {"space": args.space, "device": device.device_id, "batch_size": args.batch_size, "threads": args.threads,
              "measurements_used": est.n_measurements, "held_out": int(len(ms[test])),
              "retest_rho": measured.retest_rho, "measure_seconds": measured.seconds, "adapt_seconds": adapt_s,
              "closest_device": closest.closest_device_, "methods": rows, "searches": searches,
              "total_seconds": time.perf_counter() - t_start}
    out = Path("results") / f"local_device_{args.space}_b{args.batch_size}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))

    print(f"\n{args.space} on {device.device_id} (batch {args.batch_size}, {args.threads} thread), "
          f"{est.n_measurements} measurements, {len(ms[test])} held-out archs, "
          f"harness test-retest rho {measured.retest_rho:.3f}\n")
    print("| method | Spearman | share of ceiling | Kendall | MAPE % |\n|---|---|---|---|---|")
    for name, m in rows.items():
        print(f"| {name} | {m['spearman']:.3f} | {100 * m['spearman'] / measured.retest_rho:.1f} % | "
              f"{m['kendall']:.3f} | {m['mape']:.1f} |")
    for budget_use in dict.fromkeys(s["budget_use"] for s in searches):
        tried = [s for s in searches if s["budget_use"] == budget_use]
        runs = [s for s in tried if s["found"]]
        met = sum(s["constraint_met"] for s in runs)
        tight = sum(0.9 * s["latency_limit_ms"] <= s["measured_ms"] <= s["latency_limit_ms"] for s in runs)
        print(f"\nsearch (budget_use={budget_use}): {len(tried)} runs over limits "
              f"{sorted({s['latency_limit_ms'] for s in tried})} ms; re-measured winner met the limit in "
              f"{met}/{len(runs)}, within 10 % below it in {tight}/{len(runs)}")
        for s in tried:
            if not s["found"]:
                print(f"  {s['latency_limit_ms']:.2f} ms: no winner, {s['reason']}")
        print("| limit ms | last search window ms (predicted) | attempts | predicted ms | measured ms | met | within 10 % | "
              "device speed vs adaptation, before / typical / at re-measure |\n|---|---|---|---|---|---|---|---|")
        for s in runs:
            lo, hi = s["search_windows_ms"][-1]
            within = 0.9 * s["latency_limit_ms"] <= s["measured_ms"] <= s["latency_limit_ms"]
            print(f"| {s['latency_limit_ms']:.2f} | {lo:.2f}-{hi:.2f} | {s['attempts']} | {s['predicted_ms']:.2f} | "
                  f"{s['measured_ms']:.2f} | {'yes' if s['constraint_met'] else 'no'} | "
                  f"{'yes' if within else 'no'} | {s['calibration_speed']:.2f} / "
                  f"{s['device_speed']:.2f} / {s['final_speed']:.2f} |")
    print(f"\ntotal {report['total_seconds']:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
