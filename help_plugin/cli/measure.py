"""``help-nas measure``: time architectures on this machine into the measurement store."""
from __future__ import annotations

from .common import check_output, emit, measurable_spaces, non_negative_int, parse_archs, positive_int


def add_parser(sub, common):
    from ..measure.base import available_backends
    from ..measure.torch_eager import DTYPES

    p = sub.add_parser("measure", parents=[common["store"], common["timing"], common["quiet"]],
                       help="time architectures on this machine into the measurement store",
                       description="Builds each architecture and times it on this machine with a backend "
                                   "(interleaved passes, min of runs per pass, median over passes). Results go to a "
                                   "SQLite store keyed by device id + space + arch + settings: nothing is measured "
                                   "twice, an interrupted run resumes. --export writes the tidy CSV that "
                                   "meta-train/adapt read.")
    p.add_argument("--space", choices=measurable_spaces(), default="nasbench201")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--archs", help="file of architectures (one per line, or a JSON list)")
    group.add_argument("--random", type=non_negative_int, help="this many random architectures")
    p.add_argument("--batch-size", type=positive_int, default=1)
    p.add_argument("--passes", type=positive_int, default=5, help="interleaved timing passes (default 5)")
    p.add_argument("--backend", choices=available_backends(), default="torch",
                   help="torch: PyTorch eager; onnxruntime: ONNX Runtime on the CPU (pip install 'help-plugin[onnx]')")
    p.add_argument("--torch-device", help="torch backend: cpu (default), cuda or cuda:N")
    p.add_argument("--dtype", choices=DTYPES, help="torch backend: weights and inputs (default float32)")
    p.add_argument("--export", help="also write this device's measurements as a tidy CSV")
    p.set_defaults(run=run)


def run(args) -> int:
    check_output(args.export, "--export", make_folder=True)

    import numpy as np

    from ..measure import MeasurementStore, local_device, measure_archs
    from ..spaces import get_space

    space = get_space(args.space)
    archs = parse_archs(space, args.archs) if args.archs else space.sample(args.random, args.seed)
    options = {"threads": args.threads, "batch_size": args.batch_size, "passes": args.passes, "seed": args.seed}
    backend_options = {k: v for k, v in (("torch_device", args.torch_device), ("dtype", args.dtype)) if v is not None}
    if backend_options and args.backend != "torch":
        raise ValueError(f"--{'/--'.join(k.replace('_', '-') for k in backend_options)} apply to the torch backend, "
                         f"not {args.backend!r}")
    device = local_device(space, args.backend, **options, **backend_options)
    store = MeasurementStore(args.store)
    ms, info = measure_archs(device, archs, store, progress=not args.quiet)
    summary = {"device": device.device_id, "settings": device.settings, "store": str(store.path),
               "architectures": len(ms), **info,
               "median_chunk_retest_rho": float(np.median(info["chunk_retest_rho"])) if info["chunk_retest_rho"] else None}
    if args.export:
        summary["exported_rows"] = store.export_csv(args.export, space=space.name, device_id=device.device_id)
    emit(summary, None)
    return 0
