"""``help-nas``: meta-train, adapt, predict and benchmark hardware-adaptive latency predictors."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from . import __version__

log = logging.getLogger("help_plugin.cli")


def _csv_list(s: str) -> list[str]:
    return [t for t in s.split(",") if t]


def _int_list(s: str) -> list[int]:
    try:
        return [int(t) for t in _csv_list(s)]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from err


def _emit(obj, out: str | None) -> None:
    text = json.dumps(obj, indent=1)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
        log.info("wrote %s", out)
    else:
        print(text)


def _read_archs(path: str) -> list:
    """One architecture per line (NB201 strings, FBNet block lists, OFA JSON dicts) or a JSON list."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) if line.lstrip().startswith("{") else line.strip()
            for line in text.splitlines() if line.strip()]


def _load_estimator(args):
    from .help import HELPEstimator

    if getattr(args, "model", None):
        return HELPEstimator.load(args.model)
    return HELPEstimator.pretrained(args.space)


# ---------------------------------------------------------------------------- commands
def cmd_references(args) -> int:
    est = _load_estimator(args)
    _emit({"space": est.space.name, "reference_archs": est.reference_archs}, args.out)
    return 0


def cmd_meta_train(args) -> int:
    from .data import get_split, load_help_data, load_measurements
    from .help import HELPEstimator

    split = get_split(args.split) if args.split else None
    space = args.space or (split.space if split else None)
    if space is None:
        raise SystemExit("help-nas meta-train: give --space or --split")
    if args.measurements:
        ref = (_read_archs(args.reference_archs) if args.reference_archs
               else HELPEstimator.pretrained(space).reference_archs)
        data = load_measurements(args.measurements, space=space, reference_archs=ref)
    else:
        data = load_help_data(space, root=args.data)
    train = _csv_list(args.train_devices) if args.train_devices else (split.train if split else None)
    valid = _csv_list(args.valid_devices) if args.valid_devices else (split.valid if split else ())
    options = {"steps": args.steps} if args.steps else {}
    est = HELPEstimator.meta_train(space, data, train, valid, method=args.method, progress=not args.quiet, **options)
    est.save(args.out)
    _emit({"space": space, "method": args.method, "train_devices": list(est.train_devices_),
           "valid_devices": list(est.valid_devices_), "meta_train_seconds": round(est.meta_train_seconds_, 2),
           "model": args.out}, None)
    return 0


def cmd_adapt(args) -> int:
    from .data import load_measurements

    if args.measurements is None:
        if args.device != "local-cpu":
            raise ValueError(f"--measurements is required for device {args.device!r} (only local-cpu is measured here)")
        from .demo import adapt_on_this_machine
        from .measure import LocalTorchDevice
        from .store import MeasurementStore

        device = LocalTorchDevice(args.space, threads=args.threads)
        est = adapt_on_this_machine(args.space, device, MeasurementStore(args.store), shots=args.shots, progress=True)
        est.save(args.out)
        _emit({"space": est.space.name, "device": device.device_id, "measurements": est.n_measurements,
               "model": args.out}, None)
        return 0
    est = _load_estimator(args)
    data = load_measurements(args.measurements, space=est.space.name)
    lat = data.latency(args.device)
    ok = np.isfinite(lat)
    est.device = args.device
    est.fit(data.archs[ok], lat[ok])
    est.save(args.out)
    _emit({"space": est.space.name, "device": args.device, "measurements": est.n_measurements,
           "adapt_seconds": round(est.adapt_seconds_, 4), "model": args.out}, None)
    return 0


def cmd_predict(args) -> int:
    from .help import HELPEstimator

    est = HELPEstimator.load(args.model)
    archs = _read_archs(args.archs)
    pred = est.predict(archs)
    _emit([{"arch": est.space.format(est.space.parse(a)), "latency_ms": round(float(p), 4)}
           for a, p in zip(archs, pred)], args.out)
    return 0


def cmd_benchmark(args) -> int:
    from .data import SPLITS
    from .evaluation import run_benchmark, save_result

    split = args.split or args.space
    if split is None:
        raise SystemExit("help-nas benchmark: give --split or --space")
    if args.space and SPLITS[split].space != args.space:
        raise SystemExit(f"split {split!r} is for space {SPLITS[split].space!r}, not {args.space!r}")
    seeds = list(range(args.seeds))
    result = run_benchmark(split, methods=args.methods, shots=args.shots, seeds=seeds, protocol=args.protocol,
                           progress=not args.quiet)
    print(f"\n## {split} ({result.space}), protocol {args.protocol}, {len(seeds)} seed(s): Spearman rho per test device\n")
    print(result.table())
    out = Path(args.out or f"results/benchmark_{split}_{args.protocol}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_result(result, out)
    print(f"\nwrote {out}")
    if len(args.shots) > 1 and not args.no_plot:
        from .plots import sample_efficiency

        png = sample_efficiency(result.summary(), out.with_suffix(".png"), title=f"{split} ({args.protocol})")
        print(f"wrote {png}")
    return 0


def cmd_measure(args) -> int:
    from .measure import LocalTorchDevice
    from .spaces import get_space
    from .store import MeasurementStore, measure_archs

    space = get_space(args.space)
    if args.archs:
        archs = _read_archs(args.archs)
    else:
        archs = space.sample(args.random, args.seed)
    device = LocalTorchDevice(space, threads=args.threads, batch_size=args.batch_size, passes=args.passes,
                              seed=args.seed, backend=args.backend, torch_device=args.torch_device, dtype=args.dtype)
    store = MeasurementStore(args.store)
    ms, info = measure_archs(device, archs, store, progress=not args.quiet)
    summary = {"device": device.device_id, "settings": device.settings, "store": str(store.path),
               "architectures": len(ms), **info,
               "median_chunk_retest_rho": float(np.median(info["chunk_retest_rho"])) if info["chunk_retest_rho"] else None}
    if args.export:
        summary["exported_rows"] = store.export_csv(args.export, space=space.name, device_id=device.device_id)
    _emit(summary, None)
    return 0


def cmd_search(args) -> int:
    from .demo import adapt_on_this_machine, search_and_verify
    from .help import HELPEstimator
    from .measure import LocalTorchDevice
    from .store import MeasurementStore

    device = LocalTorchDevice(args.space, threads=args.threads, seed=args.seed)
    if args.model:
        est = HELPEstimator.load(args.model)
    else:
        est = adapt_on_this_machine(args.space, device, MeasurementStore(args.store), shots=args.shots,
                                    seed=args.seed, progress=not args.quiet)
    result = search_and_verify(est, device, args.latency_ms, cycles=args.cycles, seed=args.seed,
                               progress=not args.quiet, verify_top=args.verify_top,
                               budget_use=args.budget_use)
    result.pop("candidates")
    _emit(result, args.out)
    return 0


def cmd_demo(args) -> int:
    from .demo import format_report, run_demo

    report = run_demo(args.space, shots=args.shots, n_test=args.test, seed=args.seed, threads=args.threads,
                      passes=args.passes, out_dir=args.out, progress=not args.quiet)
    print(format_report(report))
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from .data import SPLITS
    from .evaluation import method_factories
    from .meta import METHODS
    from .spaces import available_spaces, get_space

    spaces = available_spaces()
    measurable = [s for s in spaces if get_space(s).has_network]  # spaces with a network builder
    p = argparse.ArgumentParser(
        prog="help-nas",
        description="Meta-learned, hardware-adaptive latency prediction (HELP) for NAS. A new device is "
                    "measured on the model's reference architectures plus a few more; the adapted model then "
                    "predicts the latency (ms) of any architecture of the search space.",
        epilog="Data: HELP's published layout is read from $HELP_DATA_DIR (default ../shared/data/help). "
               "Run 'help-nas COMMAND --help' for each command.")
    p.add_argument("--version", action="version", version=f"help-plugin {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="this machine as the unseen device: measure, adapt the shipped model, score",
                       description="Times the shipped model's reference architectures, K shots and held-out "
                                   "architectures on this CPU (PyTorch eager, interleaved passes), adapts the shipped "
                                   "model and reports its accuracy on the held-out ones next to the harness's own "
                                   "test-retest ceiling and the FLOPs proxy; writes report.json and scatter.png.")
    d.add_argument("--space", choices=["nasbench201", "fbnet"], default="nasbench201",
                   help="search space (default nasbench201; ofa and hat networks take too long per forward pass "
                        "on a CPU for a minutes-long demo: use `help-nas measure`/`search` for them)")
    d.add_argument("--shots", type=int, default=10, help="measured samples besides the reference archs (default 10)")
    d.add_argument("--test", type=int, default=50, help="held-out architectures to score (default 50)")
    d.add_argument("--threads", type=int, default=1, help="CPU threads for inference (default 1)")
    d.add_argument("--passes", type=int, default=5, help="interleaved timing passes (default 5)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)

    ms = sub.add_parser("measure", help="time architectures on this CPU into the measurement store",
                        description="Builds each architecture in PyTorch and times it on this CPU (interleaved passes, "
                                    "min of runs per pass, median over passes). Results go to a SQLite store keyed by "
                                    "device id + space + arch + settings: nothing is measured twice, an interrupted run "
                                    "resumes. --export writes the tidy CSV that meta-train/adapt read.")
    ms.add_argument("--space", choices=measurable, default="nasbench201")
    group = ms.add_mutually_exclusive_group(required=True)
    group.add_argument("--archs", help="file of architectures (one per line, or a JSON list)")
    group.add_argument("--random", type=int, help="this many random architectures")
    ms.add_argument("--seed", type=int, default=0)
    ms.add_argument("--threads", type=int, default=1)
    ms.add_argument("--batch-size", type=int, default=1)
    ms.add_argument("--passes", type=int, default=5)
    ms.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                    help="PyTorch eager, or ONNX Runtime (pip install 'help-plugin[onnx]')")
    ms.add_argument("--torch-device", default="cpu", help="cpu (default), cuda or cuda:N (torch backend)")
    ms.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                    help="weights and inputs (torch backend; default float32)")
    ms.add_argument("--store", help="SQLite file (default $HELP_PLUGIN_STORE or ~/.cache/help-plugin/measurements.sqlite)")
    ms.add_argument("--export", help="also write this device's measurements as a tidy CSV")
    ms.add_argument("--quiet", action="store_true", help="no progress bar")
    ms.set_defaults(func=cmd_measure)

    se = sub.add_parser("search", help="latency-constrained evolutionary search on this machine",
                        description="Adapts the shipped model to this CPU (reference archs + K shots, measured through "
                                    "the store, so a second run measures nothing) unless --model is given, re-times the "
                                    "reference archs to rescale the limit to the machine's current speed, runs "
                                    "regularised evolution maximising the SynFlow proxy over architectures predicted "
                                    "within the target band (between --budget-use of the limit and 3 % under it), "
                                    "measures the --verify-top best candidates and keeps the best one measured in the "
                                    "band (else searches again, up to twice, with the predictor re-adapted on those "
                                    "measurements), then re-measures it and reports predicted vs measured latency.")
    se.add_argument("--space", choices=measurable, default="nasbench201")
    se.add_argument("--latency-ms", type=float, required=True, help="latency limit in ms")
    se.add_argument("--model", help="an already adapted estimator for this machine")
    se.add_argument("--shots", type=int, default=10)
    se.add_argument("--cycles", type=int, default=60, help="evolution cycles (default 60)")
    se.add_argument("--verify-top", type=int, default=4,
                    help="best-scoring candidates measured before picking the winner (default 4)")
    se.add_argument("--budget-use", type=float, default=0.9,
                    help="the least share of the limit the winner should use (default 0.9: a network measured "
                         "within 10 %% below the limit); 0 accepts any network under it")
    se.add_argument("--threads", type=int, default=1)
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--store", help="measurement store (default ~/.cache/help-plugin/measurements.sqlite)")
    se.add_argument("--out", help="write JSON here instead of stdout")
    se.add_argument("--quiet", action="store_true", help="no progress bars")
    se.set_defaults(func=cmd_search)

    r = sub.add_parser("references", help="print the reference architectures a new device must time first")
    r.add_argument("--space", choices=spaces, default="nasbench201", help="search space of the shipped model")
    r.add_argument("--model", help="a saved model instead of the shipped one")
    r.add_argument("--out", help="write JSON here instead of stdout")
    r.set_defaults(func=cmd_references)

    m = sub.add_parser("meta-train", help="meta-train a predictor on a device pool and save it",
                       description="Meta-train on HELP's data (or a tidy CSV/Parquet of your own measurements: "
                                   "columns space, arch, device, latency_ms) and save a safetensors model.")
    m.add_argument("--space", choices=spaces)
    m.add_argument("--split", choices=sorted(SPLITS), help="named device split (default: the space's HELP split)")
    m.add_argument("--train-devices", help="comma-separated meta-training devices (overrides --split)")
    m.add_argument("--valid-devices", help="comma-separated meta-validation devices")
    m.add_argument("--data", help="HELP data folder (default $HELP_DATA_DIR or ../shared/data/help)")
    m.add_argument("--measurements", help="your own tidy CSV/Parquet table instead of HELP's data")
    m.add_argument("--reference-archs", help="with --measurements: file of the reference archs the table contains "
                                              "(default: the shipped model's, see 'help-nas references')")
    m.add_argument("--method", choices=sorted(METHODS), default="help+", help="meta-learning method (default help+)")
    m.add_argument("--steps", type=int, help="optimisation steps (method default if omitted)")
    m.add_argument("--out", required=True, help="output .safetensors path")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=cmd_meta_train)

    a = sub.add_parser("adapt", help="adapt a model to a device from its measurements and save it",
                       description="Reads a tidy CSV/Parquet (space, arch, device, latency_ms) that contains the "
                                   "reference architectures (see 'help-nas references') and any further samples; "
                                   "or, with --device local-cpu, measures them on this machine through the store.")
    a.add_argument("--space", choices=spaces, default="nasbench201", help="space of the shipped model")
    a.add_argument("--model", help="a meta-trained model instead of the shipped one")
    a.add_argument("--measurements", help="tidy table of the device's measurements (omit with --device local-cpu)")
    a.add_argument("--device", required=True,
                   help="device name in the table, or local-cpu to measure this machine (reference archs + --shots)")
    a.add_argument("--shots", type=int, default=10, help="local-cpu: random archs measured besides the references")
    a.add_argument("--threads", type=int, default=1, help="local-cpu: inference threads")
    a.add_argument("--store", help="local-cpu: measurement store (default ~/.cache/help-plugin/measurements.sqlite)")
    a.add_argument("--out", required=True, help="output .safetensors path of the adapted estimator")
    a.set_defaults(func=cmd_adapt)

    pr = sub.add_parser("predict", help="predict latencies (ms) with an adapted model",
                        description="Architectures: one per line (NB201 strings, FBNet '-'-joined blocks, OFA "
                                    "JSON dicts) or a JSON list; '-' reads stdin. Prints JSON.")
    pr.add_argument("--model", required=True, help="adapted .safetensors model")
    pr.add_argument("--archs", required=True, help="file of architectures, or - for stdin")
    pr.add_argument("--out", help="write JSON here instead of stdout")
    pr.set_defaults(func=cmd_predict)

    b = sub.add_parser("benchmark", help="few-shot accuracy and cost of HELP variants and baselines",
                       description="Meta-trains every method on the split's pool (on half of the architectures), "
                                   "adapts on each test device with the reference archs + K shots, scores Spearman, "
                                   "Kendall and MAPE on all other held-out archs; 5 seeds by default. Prints a "
                                   "table and writes JSON (and a sample-efficiency PNG for several --shots).")
    b.add_argument("--space", choices=spaces, help="space (its default split unless --split)")
    b.add_argument("--split", choices=sorted(SPLITS), help="named device split")
    b.add_argument("--shots", type=_int_list, default=[10], help="comma-separated K values (default 10)")
    b.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    b.add_argument("--methods", type=_csv_list, default=["help+"],
                   help=f"comma-separated, from {','.join(sorted(method_factories()))} (default help+); "
                        "options as METHOD:KEY=VALUE[:KEY=VALUE], e.g. help+:ensemble=1 for an ablation row")
    b.add_argument("--protocol", choices=["disjoint", "help"], default="disjoint",
                   help="disjoint: score all held-out archs; help: HELP's 800 archs in the 10-90%% latency range")
    b.add_argument("--out", help="JSON path (default results/benchmark_SPLIT_PROTOCOL.json)")
    b.add_argument("--no-plot", action="store_true", help="skip the PNG")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_benchmark)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError, RuntimeError) as err:
        print(f"help-nas {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
