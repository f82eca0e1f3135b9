"""``help-nas benchmark``: few-shot accuracy and cost of HELP variants and baselines on HELP's data."""
from __future__ import annotations

import json
from pathlib import Path

from .common import (
    BASELINES_HELP,
    METHODS_HELP,
    check_output,
    csv_list,
    int_list,
    positive_int,
    spaces,
)


def add_parser(sub, common):
    from ..data.splits import SPLITS

    p = sub.add_parser("benchmark", parents=[common["quiet"]],
                       help="few-shot accuracy and cost of HELP variants and baselines",
                       description="Meta-trains every method on the split's pool (on half of the architectures), "
                                   "adapts on each test device with the reference archs + K shots, scores Spearman, "
                                   "Kendall and MAPE on all other held-out archs; 5 seeds by default. Prints a "
                                   "table and writes JSON (and a sample-efficiency PNG for several --shots).")
    p.add_argument("--space", choices=spaces(), help="space (its default split unless --split)")
    p.add_argument("--split", choices=sorted(SPLITS), help="named device split")
    p.add_argument("--train-devices", type=csv_list,
                   help="a split of your own: comma-separated meta-training devices (then no meta-validation devices "
                        "unless --valid-devices); default: the named split's")
    p.add_argument("--valid-devices", type=csv_list, help="comma-separated meta-validation devices")
    p.add_argument("--test-devices", type=csv_list,
                   help="comma-separated test devices; without --train-devices the named split's pool less these "
                        "meta-trains (e.g. --space fbnet --test-devices pixel3,samsung_s7)")
    p.add_argument("--random-splits", type=positive_int,
                   help="instead: N random halves of the named split's pool (Multi-Predict's random device subsets), "
                        "half meta-trains, the other half is scored; a table per split, then one row per split; one "
                        "JSON for all (default results/benchmark_SPACE-random_PROTOCOL.json), no PNG")
    p.add_argument("--shots", type=int_list, default=[10], help="comma-separated K values (default 10)")
    p.add_argument("--seeds", type=positive_int, default=5, help="number of seeds (default 5)")
    p.add_argument("--methods", type=csv_list, default=["help+"],
                   help=f"comma-separated, from {METHODS_HELP} and the baselines {BASELINES_HELP} (default "
                        "help+); options as METHOD:KEY=VALUE[:KEY=VALUE], e.g. help+:ensemble=1 for an ablation row")
    p.add_argument("--protocol", choices=["disjoint", "help"], default="disjoint",
                   help="disjoint: score all held-out archs; help: HELP's 800 archs in the 10-90%% latency range")
    p.add_argument("--shot-selection", choices=["random", "design"], default="random",
                   help="random: the protocol's random shots (default); design: methods that can choose their shots "
                        "(help+) pick them by the greedy I-optimal design among the held-out archs")
    p.add_argument("--out", help="JSON path (default results/benchmark_SPLIT_PROTOCOL.json)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..data import SPLITS
    from ..data.splits import RANDOM_SPLIT_SEED
    from ..evaluation import run_benchmark, save_result, splits_table

    split = args.split or args.space
    if split is None:
        raise ValueError("give --split or --space")
    if split not in SPLITS:
        raise ValueError(f"HELP's data has no split for space {split!r}; splits: {sorted(SPLITS)} (benchmark other "
                         "spaces on your own measurements with the Python API)")
    if args.space and SPLITS[split].space != args.space:
        raise ValueError(f"split {split!r} is for space {SPLITS[split].space!r}, not {args.space!r}")
    if any(k < 0 for k in args.shots):
        raise ValueError(f"--shots must be >= 0, got {args.shots}")
    if args.valid_devices and not args.train_devices and not args.test_devices:
        raise ValueError("--valid-devices goes with --train-devices or --test-devices")
    own = args.train_devices or args.valid_devices or args.test_devices
    if args.random_splits and own:
        raise ValueError("--random-splits draws the devices: leave out --train-devices, --valid-devices, "
                         "--test-devices")
    devices = SPLITS[split]
    if own:
        devices = devices.with_devices(args.train_devices, args.valid_devices, args.test_devices)
    scored = devices.random_halves(args.random_splits) if args.random_splits else [devices]
    name = f"{devices.space}-random" if args.random_splits else devices.name
    out = Path(args.out or f"results/benchmark_{name}_{args.protocol}.json")
    check_output(str(out), make_folder=True)
    seeds = list(range(args.seeds))
    results = []
    for one in scored:
        result = run_benchmark(one, methods=args.methods, shots=args.shots, seeds=seeds, protocol=args.protocol,
                               progress=not args.quiet, shot_selection=args.shot_selection)
        print(f"\n## {one.name} ({result.space}), protocol {args.protocol}, {len(seeds)} seed(s): Spearman rho per "
              "test device" + ("" if one.name == split else f"; meta-trained on {', '.join(one.pool)}") + "\n")
        print(result.table())
        results.append(result)
    if args.random_splits:
        print(f"\n## {len(results)} random halves of the {split} split's pool: mean rho over each split's test devices "
              "(worst device)\n")
        print(splits_table(results))
        out.write_text(json.dumps({"random_split_seed": RANDOM_SPLIT_SEED, "splits": [r.to_json() for r in results]},
                                  indent=1))
    else:
        save_result(result, out)
    print(f"\nwrote {out}")
    if len(args.shots) > 1 and not args.no_plot and not args.random_splits:
        from ..evaluation.plots import sample_efficiency

        png = sample_efficiency(result.summary(), out.with_suffix(".png"), title=f"{name} ({args.protocol})")
        print(f"wrote {png}")
    return 0
