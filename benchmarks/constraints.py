"""Do latency limits hold on the device? Calibrated bounds and the selection-aware constraint on HELP's test devices.

    python benchmarks/constraints.py            # ~30 s on 2 vCPUs
    python benchmarks/constraints.py --tables   # also HELP Table 4 (metad2a_table4.py) and Table 5 (ofa_table5.py)
    python benchmarks/constraints.py --splits fbnet-adversarial --out results/constraints_adversarial.json
    python benchmarks/constraints.py --splits fbnet --test-devices pixel3,samsung_s7 --out results/constraints_own.json
    python benchmarks/constraints.py --random-splits 4 --out results/constraints_random_splits.json

The shipped help+ model of each space is adapted to each of its split's test devices with the 10 reference
archs + 10 others chosen by ``HELPEstimator.select_shots`` among a random half of the device's archs (the
product's default; ``--shot-selection random``: drawn at random), 20 measurements, ``--seeds`` draws; every
other recorded architecture of the device is a query with known latency (:mod:`help_plugin.evaluation.constraints`). Three rules:

* ``calibrated``: the leave-one-out bound with the shipped meta-calibration constants
  (``help_plugin/pretrained/calibration.json``, which a model meta-trained with the shipped settings on another
  pool carries too, as for any split but the default ones): the marginal bound for coverage, the
  selection-aware one (``LatencyConstraint``'s default) for the picks;
* ``mean``: HELP's rule, the mean prediction;
* ``mean+z*std``: the previous margin, the ridge head's predictive std times the normal quantile.

Reported per split and test device: coverage of the 90 % and 95 % bounds (mean over seeds, worst seed),
the median bound / prediction at 95 %, and the adversarial picks (the largest-MACs and the largest-params
architecture whose 95 % bound is under a limit at the 10/30/50/70/90th percentile of the device's
latencies, over all queries; the first ``--pick-seeds`` seeds): how many meet the limit, and their objective
over the best truly feasible one. It ends with what an exactly valid distribution-free bound from as many
measurements would reach on issue 13's coverage goals
(:func:`~help_plugin.evaluation.constraints.exchangeable_reference`). Writes ``--out``
(``results/constraints.json``) and beside it ``constraints_coverage.png`` (coverage vs nominal confidence) and
``constraints_hits.png`` (picks meeting the limit vs the limit's percentile), named after ``--out``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from help_plugin.evaluation.constraints import (
    GOAL_BANDS,
    PERCENTILES,
    WORST_ADAPTATION_GOAL,
    adversarial_picks,
    by_device,
    coverage,
    exchangeable_reference,
    median_width,
    objective_values,
    simulate_adaptation,
)
from scipy.stats import norm

from help_plugin import DeviceSplit, HELPEstimator, get_split, load_help_data
from help_plugin.predictors import torch_threads
from help_plugin.predictors.shot_design import SELECTIONS

RULES = ("calibrated", "mean", "mean+z*std")
NOMINAL = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99)
SWEEP = tuple(range(5, 96, 5))  # limit percentiles of the hit-rate plot


def log_bounds(a, est, confidence: float, selection: bool = False) -> dict[str, np.ndarray]:
    """Log-ms bound of every row under each rule at ``confidence``."""
    floor = 1e-3 * a.true_ms[a.measured].min()
    c = est.calibration().multiplier(confidence, selection)
    return {"calibrated": a.log_pred + c * a.log_width, "mean": a.log_pred,
            "mean+z*std": np.log(np.maximum(a.mean_ms + norm.ppf(confidence) * a.std_ms, floor))}


def picks(a, est, objectives, percentiles) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per rule: ``(met, ratio)`` of the adversarial picks under the 95 % (selection-aware) bound, both objectives."""
    bounds = log_bounds(a, est, 0.95, selection=True)
    out = {}
    for rule, b in bounds.items():
        res = [adversarial_picks(a, b, objectives[:, k], percentiles)[:2] for k in range(objectives.shape[1])]
        out[rule] = (np.concatenate([m[0] for m, _ in res]), np.concatenate([r[0] for _, r in res]))
    return out


def run_tables() -> dict:
    """HELP Table 4 and Table 5 with the new default: run the two benchmarks and read their JSON."""
    out = {}
    for script, json_path in (("metad2a_table4.py", "results/metad2a_table4.json"),
                              ("ofa_table5.py", "results/ofa_table5.json")):
        t0 = time.perf_counter()
        print(f"running benchmarks/{script} (its tables: python benchmarks/{script}; its progress below)",
              file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(Path(__file__).parent / script)], check=True, stdout=subprocess.DEVNULL)
        out[script] = {"seconds": time.perf_counter() - t0, **json.loads(Path(json_path).read_text())}
    t4 = out["metad2a_table4.py"]["records"]
    out["table4"] = {str(c): {"met": sum(r["met"] for r in t4 if r["confidence"] == c),
                              "found": sum(r["found"] for r in t4 if r["confidence"] == c),
                              "runs": sum(r["confidence"] == c for r in t4)} for c in (None, 0.95)}
    t5 = out["ofa_table5.py"]["finder_runs"]
    out["table5"] = {str(c): {"first_winner_met": [r["met"] for r in t5 if r["confidence"] == c],
                              "after_search_and_measure_met": [r["verified"]["met"] for r in t5
                                                               if r["confidence"] == c]} for c in (None, 0.95)}
    return out


def splits_to_score(args) -> list[DeviceSplit]:
    """The named ``--splits``, one split of one's own (``--test-devices``), or ``--random-splits`` halves of each
    named split's pool (:meth:`~help_plugin.data.DeviceSplit.random_halves`)."""
    out = []
    for name in args.splits.split(","):
        split = get_split(name)
        if args.test_devices:
            out.append(split.with_devices(args.train_devices and args.train_devices.split(","), None,
                                          args.test_devices.split(",")))
        elif args.random_splits:
            out.extend(split.random_halves(args.random_splits))
        else:
            out.append(split)
    return out


def summarise(rows: list[dict]) -> dict:
    """Per rule, over the device ``rows``: coverage (mean, worst seed), devices in the goal bands, width, the
    picks meeting the limit (and the worst device's share), the objective ratio."""
    summary = {}
    for rule in RULES:
        r = [row[rule] for row in rows]
        met, n = sum(x["met"] for x in r), sum(x["picks"] for x in r)
        summary[rule] = {
            "cov90_mean": float(np.mean([x["cov90"] for x in r])), "cov90_worst": min(x["cov90_worst"] for x in r),
            "cov95_mean": float(np.mean([x["cov95"] for x in r])), "cov95_worst": min(x["cov95_worst"] for x in r),
            "devices_cov95_in_93_98.5": sum(0.93 <= x["cov95"] <= 0.985 for x in r),
            "devices_cov90_in_88_93.5": sum(0.88 <= x["cov90"] <= 0.935 for x in r),
            "devices": len(r), "width95": float(np.median([x["width95"] for x in r])), "picks": n, "met": met,
            "met_worst_device": min(x["met"] / x["picks"] for x in r),
            "objective_ratio": float(np.mean([x["objective_ratio"] for x in r]))}
    return summary


def summary_cells(s: dict) -> str:
    """One :func:`summarise` rule as Markdown cells."""
    return (f"{100 * s['cov90_mean']:.1f} ({100 * s['cov90_worst']:.1f}) | {s['devices_cov90_in_88_93.5']}/{s['devices']} | "
            f"{100 * s['cov95_mean']:.1f} ({100 * s['cov95_worst']:.1f}) | {s['devices_cov95_in_93_98.5']}/{s['devices']} | "
            f"{s['width95']:.3f} | {s['met']}/{s['picks']} = {100 * s['met'] / s['picks']:.1f} % "
            f"({100 * s['met_worst_device']:.0f} %) | {s['objective_ratio']:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--splits", default="nasbench201,fbnet,ofa",
                   help="device splits (default: the three spaces' default splits, scored with the shipped models); "
                        "any other split, e.g. fbnet-adversarial, meta-trains help+ on its pool first "
                        "(HELPEstimator.meta_train with the shipped settings, under a second: the same constants)")
    p.add_argument("--test-devices", help="comma-separated: a split of your own, these devices out of the (one) "
                                          "--splits' pool and scored; help+ meta-trains on the rest of the pool")
    p.add_argument("--train-devices", help="with --test-devices: the pool instead (comma-separated)")
    p.add_argument("--random-splits", type=int, default=0,
                   help="instead: N splits of each --splits' pool, a random half of its devices meta-training and the "
                        "other half scored (as Multi-Predict's random device subsets); one summary row per split")
    p.add_argument("--seeds", type=int, default=5, help="adaptations per device (default 5)")
    p.add_argument("--pick-seeds", type=int, default=3, help="of which used for the adversarial picks (default 3)")
    p.add_argument("--shots", type=int, default=10)
    p.add_argument("--shot-selection", choices=SELECTIONS, default="design",
                   help="how the shots are chosen: HELPEstimator.select_shots among a random half of the device's "
                        "archs (the product's default) or at random; default design")
    p.add_argument("--tables", action="store_true", help="also run benchmarks/metad2a_table4.py and ofa_table5.py")
    p.add_argument("--out", type=Path, default=Path("results/constraints.json"))
    args = p.parse_args()
    t_start = time.perf_counter()

    if args.train_devices and not args.test_devices:
        p.error("--train-devices goes with --test-devices")
    if args.test_devices and "," in args.splits:
        p.error("--test-devices makes a split of one of --splits: name one (e.g. --splits nasbench201)")
    if args.random_splits and args.test_devices:
        p.error("--random-splits draws the test devices: leave out --test-devices")
    rows, curves, sweeps = [], {r: [] for r in ("calibrated", "mean+z*std")}, {r: [] for r in RULES}
    for split in splits_to_score(args):
        split_name, space, data = split.name, split.space, load_help_data(split.space)
        est = (HELPEstimator.pretrained(space) if split_name == space
               else HELPEstimator.meta_train(space, data, split.train, split.valid))
        objectives = objective_values(data)
        with torch_threads(1):
            adaptations = [simulate_adaptation(est, data, device, seed, args.shots, with_std=True,
                                              shot_selection=args.shot_selection)
                           for device in split.test for seed in range(args.seeds)]
        for (_, device), group in by_device(adaptations).items():
            row = {"split": split_name, "space": space, "device": device}
            for rule in RULES:
                cov = {q: [coverage(a, log_bounds(a, est, q)[rule]) for a in group] for q in (0.9, 0.95)}
                res = [picks(a, est, objectives, PERCENTILES)[rule] for a in group if a.seed < args.pick_seeds]
                met, ratio = np.concatenate([m for m, _ in res]), np.concatenate([r for _, r in res])
                row[rule] = {"cov90": float(np.mean(cov[0.9])), "cov90_worst": float(np.min(cov[0.9])),
                             "cov95": float(np.mean(cov[0.95])), "cov95_worst": float(np.min(cov[0.95])),
                             "width95": float(np.median([median_width(a, log_bounds(a, est, 0.95)[rule])
                                                         for a in group])),
                             "picks": len(met), "met": int(met.sum()), "objective_ratio": float(ratio.mean())}
            rows.append(row)
            for rule in curves:
                curves[rule].append([np.mean([coverage(a, log_bounds(a, est, q)[rule]) for a in group])
                                     for q in NOMINAL])
            picked = [picks(a, est, objectives, SWEEP) for a in group if a.seed < args.pick_seeds]
            for rule in RULES:
                sweeps[rule].append(np.mean([np.reshape(pk[rule][0], (objectives.shape[1], len(SWEEP)))
                                             for pk in picked], axis=(0, 1)))
        measurements = len(adaptations[0].measured)
        print(f"{split_name}: {len(adaptations)} adaptations, {time.perf_counter() - t_start:.0f} s", flush=True)

    summary = summarise(rows)
    per_split = {name: summarise([r for r in rows if r["split"] == name]) for name in dict.fromkeys(r["split"] for r in rows)}
    report = {"settings": vars(args) | {"out": str(args.out)}, "rows": rows, "summary": summary, "per_split": per_split,
              "coverage_vs_nominal": {"nominal": list(NOMINAL), **{k: np.mean(v, 0).tolist() for k, v in curves.items()}},
              "hits_vs_limit": {"percentiles": list(SWEEP), **{k: np.mean(v, 0).tolist() for k, v in sweeps.items()}},
              "exchangeable_reference": [asdict(r) for r in exchangeable_reference(measurements, args.seeds, len(rows))]}
    if args.tables:
        report["tables"] = run_tables()
    report["seconds"] = time.perf_counter() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    try:
        from help_plugin.evaluation.plots import coverage_vs_nominal, hit_rate_vs_limit

        coverage_vs_nominal(report["coverage_vs_nominal"], args.out.with_name(args.out.stem + "_coverage.png"))
        hit_rate_vs_limit(report["hits_vs_limit"], args.out.with_name(args.out.stem + "_hits.png"))
    except ImportError:
        print("matplotlib missing: no plots")

    n_dev = len(rows)
    print(f"\n{n_dev} test devices, {args.seeds} adaptations of {measurements} measurements each; cells: coverage "
          "% mean (worst seed) | median upper95 / prediction | adversarial picks meeting the limit | objective ratio\n")
    if not args.random_splits:
        print("| split | device | " + " | ".join(f"{r}: cov90 | cov95 | width | met | obj" for r in RULES) + " |")
        print("|---|---|" + "---|" * 5 * len(RULES))
        for row in rows:
            print(f"| {row['split']} | {row['device']} | " + " | ".join(
                f"{100 * x['cov90']:.1f} ({100 * x['cov90_worst']:.0f}) | {100 * x['cov95']:.1f} "
                f"({100 * x['cov95_worst']:.0f}) | {x['width95']:.3f} | {x['met']}/{x['picks']} | {x['objective_ratio']:.2f}"
                for x in (row[r] for r in RULES)) + " |")
    head = ("cov90 mean (worst seed) | devices 88-93.5 % | cov95 mean (worst seed) | devices 93-98.5 % | width95 | "
            "picks met (worst device) | objective ratio |")
    if args.random_splits:
        print("| split (scored devices) | rule | " + head + "\n|---|---|---|---|---|---|---|---|---|")
        for name, by_rule in per_split.items():
            tested = ", ".join(r["device"] for r in rows if r["split"] == name)
            for rule in ("calibrated", "mean"):
                print(f"| {name} ({tested}) | {rule} | {summary_cells(by_rule[rule])} |")
        met = [100 * x["calibrated"]["met"] / x["calibrated"]["picks"] for x in per_split.values()]
        print(f"\ncalibrated picks meeting the limit in >= 95 % of cases: {sum(m >= 95 for m in met)}/{len(met)} splits "
              f"(range {min(met):.1f}-{max(met):.1f} %)")
    print("\n| rule | " + head + "\n|---|---|---|---|---|---|---|---|")
    for rule, summ in summary.items():
        print(f"| {rule} | {summary_cells(summ)} |")
    print(f"\nWhat the coverage goals allow: an exactly valid distribution-free bound from {measurements} measurements "
          f"exchangeable with the queries (split conformal; no fixed reference archs), {args.seeds} adaptations on each "
          f"of {n_dev} devices:\n\n| confidence | coverage per adaptation: mean (sd) | P(a device's mean in its band) | "
          f"P(all {n_dev} in band) | P(an adaptation >= {100 * WORST_ADAPTATION_GOAL:g} %) | "
          f"P(all {n_dev * args.seeds} >= {100 * WORST_ADAPTATION_GOAL:g} %) |\n|---|---|---|---|---|---|")
    for r in report["exchangeable_reference"]:
        lo, hi = GOAL_BANDS[r["confidence"]]
        print(f"| {r['confidence']:g} (band {100 * lo:g}-{100 * hi:g} %) | {100 * r['mean']:.1f} ({100 * r['sd']:.1f}) | "
              f"{r['p_device_in_band']:.2f} | {r['p_all_devices_in_band']:.2g} | {r['p_adaptation_at_worst_goal']:.3f} | "
              f"{r['p_all_adaptations_at_worst_goal']:.2g} |")
    if args.tables:
        t4, t5 = report["tables"]["table4"], report["tables"]["table5"]
        print("\n| HELP table | HELP's rule (mean) | 95 % selection-aware bound |\n|---|---|---|")
        print("| Table 4 (MetaD2A, 5 devices x limits x 20 seeds): picks meeting the limit | "
              + " | ".join(f"{t4[c]['met']}/{t4[c]['runs']} (none feasible: {t4[c]['runs'] - t4[c]['found']})"
                           for c in ("None", "0.95")) + " |")
        print("| Table 5 (OFA finders, titan_rtx_64, 3 limits x 2 finders): first winner met / after "
              "search_and_measure | " + " | ".join(
                  f"{sum(v.endswith('yes') or v.endswith('yes)') for v in t5[c]['first_winner_met'])}/"
                  f"{len(t5[c]['first_winner_met'])} / "
                  f"{sum(v.endswith('yes') or v.endswith('yes)') for v in t5[c]['after_search_and_measure_met'])}/"
                  f"{len(t5[c]['after_search_and_measure_met'])}" for c in ("None", "0.95")) + " |")
    print(f"\nwrote {args.out} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
