"""``help-nas meta-train``: meta-train a predictor on a device pool and save it."""
from __future__ import annotations

from .common import METHODS_HELP, check_output, csv_list, emit, positive_int, read_archs, spaces


def add_parser(sub, common):
    from ..data.splits import SPLITS

    p = sub.add_parser("meta-train", parents=[common["quiet"]], help="meta-train a predictor on a device pool and save it",
                       description="Meta-train on HELP's data (or a tidy CSV/Parquet of your own measurements: "
                                   "columns space, arch, device, latency_ms) and save a safetensors model.")
    p.add_argument("--space", choices=spaces(), help="search space (default: the --split's, or the --measurements "
                                                    "table's)")
    p.add_argument("--split", choices=sorted(SPLITS), help="named device split (default: the space's HELP split)")
    p.add_argument("--train-devices", help="comma-separated meta-training devices (overrides --split)")
    p.add_argument("--valid-devices", help="comma-separated meta-validation devices")
    p.add_argument("--data", help="HELP data folder (default $HELP_DATA_DIR or ../shared/data/help)")
    p.add_argument("--measurements", help="your own tidy CSV/Parquet table instead of HELP's data")
    p.add_argument("--reference-archs", help="with --measurements: file of the reference archs the table contains "
                                             "(default: the shipped model's, see 'help-nas references')")
    p.add_argument("--method", default="help+", help=f"meta-learning method: {METHODS_HELP}")
    p.add_argument("--steps", type=positive_int,
                   help="optimisation steps (method default if omitted; help+: its pool MLPs', which its default "
                        "groups leave out)")
    p.add_argument("--out", required=True, help="output .safetensors path")
    p.set_defaults(run=run)


def run(args) -> int:
    check_output(args.out)

    from ..data import get_split, load_help_data, load_measurements
    from ..predictors import HELPEstimator

    split = get_split(args.split) if args.split else None
    space = args.space or (split.space if split else None)
    if space is None and args.measurements:
        space = load_measurements(args.measurements).space.name  # the table's only space
    if space is None:
        raise ValueError("give --space or --split")
    if args.measurements:
        ref = (read_archs(args.reference_archs) if args.reference_archs
               else HELPEstimator.pretrained(space).reference_archs)
        data = load_measurements(args.measurements, space=space, reference_archs=ref)
    else:
        data = load_help_data(space, root=args.data)
    train = csv_list(args.train_devices) if args.train_devices else (split.train if split else None)
    valid = csv_list(args.valid_devices) if args.valid_devices else (split.valid if split else ())
    options = {"steps": args.steps} if args.steps else {}
    est = HELPEstimator.meta_train(space, data, train, valid, method=args.method, progress=not args.quiet, **options)
    est.save(args.out)
    learner = est.meta_model
    emit({"space": space, "method": args.method, "train_devices": list(learner.train_devices),
          "valid_devices": list(learner.valid_devices), "meta_train_seconds": round(learner.meta_train_seconds, 2),
          "bound_multipliers": "t-rule" if learner.calibration is None else "meta-calibrated (calibration.json)",
          "model": args.out}, None)
    return 0
