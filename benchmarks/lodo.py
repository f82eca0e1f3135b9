"""Leave-one-device-out (LODO) on a split's pool: how the project chooses help+'s settings without a test device.

    python benchmarks/lodo.py --split fbnet --variants 'default;mlp:groups=["flops","cost3","detail","luts","mlp"]'
    python benchmarks/lodo.py --split fbnet-adversarial --targets silver_4114,silver_4210r,gold_6240,samsung_a50,pixel3
    python benchmarks/lodo.py --split nasbench201 --selection random,design

Per seed the architectures are split in half at random (as ``help-nas benchmark`` does). Each pool device in turn
is the unseen one: help+ meta-trains on the other pool devices (first half + the reference archs), adapts on the
held-out device with its 10 reference archs + K random archs of the second half (``--draws`` draws) and is scored
(Spearman) on the rest of the second half. The split's test devices are never read. Each variant is a name and
``HELPEstimator.meta_train`` options (``key=value``, lists comma-separated); the FLOPs power law is the floor every
variant is compared with. ``--selection design`` adds each variant with its shots chosen by
``HELPEstimator.select_shots`` among the second half's measured archs (one choice per seed, no draws; FLOPs gets the
same shots as a row of its own). Prints mean rho per K, the worst device and the devices below FLOPs; writes JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from help_plugin import HELPEstimator, get_split, load_help_data
from help_plugin.predictors.shot_design import SELECTIONS
from help_plugin.evaluation.benchmark import parse_method_spec
from help_plugin.predictors import torch_threads
from help_plugin.predictors.baselines import FLOPsEstimator


def parse_variants(text: str) -> dict[str, dict]:
    """``'default;mlp:groups=["flops","luts","mlp"]'`` -> ``{"default": {}, "mlp": {"groups": [...]}}`` (values
    are JSON literals where they parse, as in ``help-nas benchmark --methods``)."""
    out = {}
    for spec in filter(None, text.split(";")):
        name, _, opts = spec.partition(":")
        out[name] = parse_method_spec("help+:" + opts)[1] if opts else {}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", required=True)
    p.add_argument("--variants", default="default")
    p.add_argument("--shots", default="5,10,20")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--targets", default=None,
                   help="comma-separated devices outside the pool to score instead (never the split's test devices); "
                        "the model then meta-trains on the whole pool")
    p.add_argument("--selection", default="random", help="comma-separated from random, design")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    split = get_split(args.split)
    data = load_help_data(split.space)
    pool = tuple(split.train) + tuple(split.valid)
    targets = tuple(args.targets.split(",")) if args.targets else pool
    if set(targets) & set(split.test):
        raise SystemExit(f"{sorted(set(targets) & set(split.test))} are test devices of {args.split}: not for validation")
    if args.targets and set(targets) & set(pool):
        raise SystemExit(f"{sorted(set(targets) & set(pool))} are pool devices")
    variants = parse_variants(args.variants)
    selections = args.selection.split(",")
    if not selections or not set(selections) <= set(SELECTIONS):
        raise SystemExit(f"--selection takes random and/or design, got {args.selection!r}")
    shots = [int(k) for k in args.shots.split(",")]
    label = (lambda v, s: f"{v} ({s})") if len(selections) > 1 else (lambda v, s: v)
    rows = {label(v, s): (v, s) for s in selections for v in [*variants, "flops"]}  # row -> (variant, selection)
    rho = {r: {k: {d: [] for d in targets} for k in shots} for r in rows}
    t0 = time.perf_counter()
    refs = np.asarray(data.reference_rows)
    for seed in range(args.seeds):
        rest = np.setdiff1d(np.arange(len(data)), refs)
        perm = np.random.default_rng(seed).permutation(rest)
        train_rows, eval_rows = np.concatenate([refs, perm[:len(perm) // 2]]), perm[len(perm) // 2:]
        for device in targets:
            others = tuple(d for d in pool if d != device)
            lat = data.latency(device)
            measured = eval_rows[np.isfinite(lat[eval_rows])]
            models = {v: HELPEstimator.meta_train(split.space, data, others, arch_rows=train_rows, seed=seed, **o)
                      for v, o in variants.items()}
            for k in shots:
                for selection in selections:
                    for draw in range(args.draws if selection == "random" else 1):
                        if selection == "random":
                            picks = {v: np.random.default_rng([seed, draw, k]).choice(measured, k, replace=False)
                                     for v in models}
                        else:
                            picks = {v: measured[est.select_shots(data.archs[measured], k)] for v, est in models.items()}
                        for v, est in models.items():
                            pick = picks[v]
                            scored = np.setdiff1d(measured, pick)
                            pred = est.adapt(lat[refs], data.archs[pick], lat[pick]).predict(data.archs[scored])
                            rho[label(v, selection)][k][device].append(spearmanr(pred, lat[scored])[0])
                        pick = picks[next(iter(models))]
                        scored = np.setdiff1d(measured, pick)
                        idx = np.concatenate([data.archs[refs], data.archs[pick]])
                        ms = np.concatenate([lat[refs], lat[pick]])
                        pred = FLOPsEstimator(split.space).fit(idx, ms).predict(data.archs[scored])
                        rho[label("flops", selection)][k][device].append(spearmanr(pred, lat[scored])[0])
    summary = {}
    print(f"\n{'LODO on the ' + args.split + ' pool' if not args.targets else args.split + ' pool -> ' + args.targets} "
          f"({len(targets)} devices, {args.seeds} seeds x {args.draws} draws; "
          f"{time.perf_counter() - t0:.0f} s)\n")
    print("| variant | " + " | ".join(f"rho@{k + len(refs)}" for k in shots)
          + f" | worst device @{shots[-1] + len(refs)} | devices below FLOPs @{shots[-1] + len(refs)} |")
    print("|---" * (len(shots) + 3) + "|")
    for v, per in rho.items():
        means = {k: {d: float(np.mean(r)) for d, r in per[k].items()} for k in shots}
        last = means[shots[-1]]
        variant, selection = rows[v]
        floor = {d: float(np.mean(r)) for d, r in rho[label("flops", selection)][shots[-1]].items()}
        below = [d for d in targets if last[d] < floor[d]] if variant != "flops" else []
        worst = min(last, key=last.get)
        summary[v] = {"options": variants.get(variant, {}), "selection": selection, "mean_rho": {k: float(np.mean(list(means[k].values())))
                                                                   for k in shots},
                      "per_device": means, "below_flops": below}
        print(f"| {v} | " + " | ".join(f"{summary[v]['mean_rho'][k]:.4f}" for k in shots)
              + f" | {worst} {last[worst]:.3f} | {len(below)} |")
    out = Path(args.out or f"results/lodo_{args.split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"split": args.split, "pool": pool, "targets": targets, "shots": shots, "seeds": args.seeds,
                               "draws": args.draws, "summary": summary}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    with torch_threads(1):
        main()
