"""``help-nas adapt``: adapt a model to a device from its measurements (a table, or this machine) and save it."""
from __future__ import annotations

from .common import check_output, emit, non_negative_int, spaces


def add_parser(sub, common):
    p = sub.add_parser("adapt", parents=[common["shots"], common["store"], common["timing"]],
                       help="adapt a model to a device from its measurements and save it",
                       description="Reads a tidy CSV/Parquet (space, arch, device, latency_ms) that contains the "
                                   "reference architectures (see 'help-nas references') and any further samples; "
                                   "or a filled manifest of 'help-nas export' (its device; held-out rows are scored); "
                                   "or, with --device local-cpu, measures them (the reference architectures + --shots) on this "
                                   "machine through the store.")
    p.add_argument("--space", choices=spaces(),
                   help="space of the shipped model (default: the table's space, the --model's, or nasbench201 for "
                        "--device local-cpu)")
    p.add_argument("--model", help="a meta-trained model instead of the shipped one")
    p.add_argument("--measurements", help="tidy table of the device's measurements (omit with --device local-cpu)")
    p.add_argument("--device",
                   help="device name in the table (a manifest's by default), or local-cpu to measure this machine "
                        "(reference archs + --shots)")
    p.add_argument("--out", required=True, help="output .safetensors path of the adapted estimator")
    p.set_defaults(run=run)


def run(args) -> int:
    check_output(args.out)

    import numpy as np

    from ..data import load_measurements
    from ..measure.export import is_manifest
    from .common import load_estimator

    if args.measurements is not None and is_manifest(args.measurements):
        return _adapt_manifest(args)
    if args.device is None:
        raise ValueError("--device is required: the device's name in the table, or local-cpu to measure this machine")
    if args.measurements is None:
        if args.device != "local-cpu":
            raise ValueError(f"--measurements is required for device {args.device!r} (only local-cpu is measured here)")
        from ..measure import MeasurementStore, TorchEagerDevice
        from ..measure.adapt import adapt_on_device

        model = load_estimator(args.model, None) if args.model else None
        space = model.space.name if model is not None else args.space or "nasbench201"
        device = TorchEagerDevice(space, threads=args.threads)
        est = adapt_on_device(space, device, MeasurementStore(args.store), shots=args.shots, seed=args.seed,
                              progress=True, estimator=model, shot_selection=args.shot_selection)
        est.save(args.out)
        emit({"space": est.space.name, "device": device.device_id, "measurements": est.n_measurements,
              "model": args.out}, None)
        return 0
    if args.model:
        est = load_estimator(args.model, None)
        if args.space and args.space != est.space.name:
            raise ValueError(f"--model {args.model} predicts space {est.space.name!r}, not --space {args.space!r}")
        data = load_measurements(args.measurements, space=est.space.name)
    else:
        data = load_measurements(args.measurements, space=args.space)  # the table's space unless --space
        est = load_estimator(None, data.space.name)
    lat = data.latency(args.device)
    ok = np.isfinite(lat)
    est.device = args.device
    est.fit(data.archs[ok], lat[ok])
    est.save(args.out)
    emit({"space": est.space.name, "device": args.device, "measurements": est.n_measurements,
          "adapt_seconds": round(est.adapt_seconds_, 4), "model": args.out}, None)
    return 0


def _adapt_manifest(args) -> int:
    """A filled manifest of ``help-nas export``: adapt on its reference + shot rows, score its timed holdout rows."""
    from pathlib import Path

    from ..measure.export import adapt_from_manifest
    from .common import load_estimator

    est, report = adapt_from_manifest(args.measurements, load_estimator(args.model, None) if args.model else None,
                                      plot=Path(args.out).with_suffix(".holdout.png"), device=args.device)
    est.save(args.out)
    emit({**report, "model": args.out}, None)
    return 0
