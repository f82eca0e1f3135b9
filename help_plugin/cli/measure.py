"""``help-nas measure``: time architectures on this machine, or on a device farm, into the measurement store."""
from __future__ import annotations

from .common import (check_output, csv_list, emit, measurable_spaces, non_negative_int, parse_archs, positive_float,
                     positive_int)

#: Backend-specific options: option -> the backend it applies to.
BACKEND_OPTIONS = {"torch_device": "torch", "dtype": "torch", "precision": "openvino"}


def add_parser(sub, common):
    from ..measure.base import available_backends
    from ..measure.openvino import PRECISIONS
    from ..measure.torch_eager import DTYPES

    p = sub.add_parser("measure", parents=[common["store"], common["timing"], common["quiet"]],
                       help="time architectures on this machine into the measurement store",
                       description="Builds each architecture and times it on this machine with a backend "
                                   "(interleaved passes, min of runs per pass, median over passes). Results go to a "
                                   "SQLite store keyed by device id + space + arch + settings: nothing is measured "
                                   "twice, an interrupted run resumes. --export writes the tidy CSV that "
                                   "meta-train/adapt read. With --farm and --device the architectures are timed on "
                                   "the hosts of a Ray cluster that advertise the resource device:NAME (each runs "
                                   "--backend there), chunk by chunk into this machine's store.")
    p.add_argument("--space", choices=measurable_spaces(), default="nasbench201")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--archs", help="file of architectures (one per line, or a JSON list)")
    group.add_argument("--random", type=non_negative_int, help="this many random architectures")
    p.add_argument("--batch-size", type=positive_int, default=1)
    p.add_argument("--passes", type=positive_int, default=5, help="interleaved timing passes (default 5)")
    p.add_argument("--backend", choices=available_backends(), default="torch",
                   help="torch: PyTorch eager; onnxruntime: ONNX Runtime on the CPU (pip install 'help-plugin[onnx]'); "
                        "openvino: OpenVINO on the CPU (pip install 'help-plugin[openvino]')")
    p.add_argument("--torch-device", help="torch backend: cpu (default), cuda or cuda:N")
    p.add_argument("--dtype", choices=DTYPES, help="torch backend: weights and inputs (default float32)")
    p.add_argument("--precision", choices=PRECISIONS, help="openvino backend: inference precision hint (default f32)")
    p.add_argument("--with-references", action="store_true",
                   help="also time the shipped model's reference architectures (what adapt and meta-train need)")
    p.add_argument("--export", help="also write the measured devices' measurements as a tidy CSV")
    farm = p.add_argument_group("device farm (pip install 'help-plugin[farm]')")
    farm.add_argument("--farm", metavar="ADDRESS",
                      help="the Ray head: ray://HEAD:10001 (Ray Client) or HEAD:6379 / auto on a cluster node")
    farm.add_argument("--device", type=csv_list, metavar="NAME[=BACKEND],...",
                      help="with --farm: the devices to measure on (their hosts advertise the resource device:NAME), "
                           "each timed with --backend or its own BACKEND")
    farm.add_argument("--chunk-size", type=positive_int, default=25,
                      help="with --farm: architectures per chunk sent to a host (default 25)")
    farm.add_argument("--host-timeout", type=positive_float, default=120.0,
                      help="with --farm: seconds a host may take to start before it counts as absent (default 120)")
    p.set_defaults(run=run)


def run(args) -> int:
    check_output(args.export, "--export", make_folder=True)

    import numpy as np

    from ..measure import MeasurementStore, local_device, measure_archs
    from ..spaces import get_space

    space = get_space(args.space)
    archs = space.to_indices(parse_archs(space, args.archs) if args.archs else space.sample(args.random, args.seed))
    if args.with_references:
        from ..predictors import HELPEstimator

        archs = np.concatenate([HELPEstimator.pretrained(space.name).reference_indices, archs])
    options = {"threads": args.threads, "batch_size": args.batch_size, "passes": args.passes, "seed": args.seed}
    backend_options = {k: getattr(args, k) for k in BACKEND_OPTIONS if getattr(args, k) is not None}
    if (args.farm is None) != (args.device is None):
        raise ValueError("--farm and --device go together (without them this machine is measured)")
    if args.farm is not None:
        return _run_farm(args, space, archs, options, backend_options)
    for k in backend_options:
        if BACKEND_OPTIONS[k] != args.backend:
            raise ValueError(f"--{k.replace('_', '-')} applies to the {BACKEND_OPTIONS[k]} backend, "
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


def _run_farm(args, space, archs, options, backend_options) -> int:
    import numpy as np

    from ..measure import MeasurementStore
    from ..measure.base import available_backends
    from ..measure.farm import RayFarm, export_results

    devices = {}
    for item in args.device:
        name, _, backend = item.partition("=")
        backend = backend or args.backend
        if backend not in available_backends():
            raise ValueError(f"unknown backend {backend!r} for device {name!r}; available: {available_backends()}")
        if name in devices:
            raise ValueError(f"device {name!r} is given twice")
        devices[name] = {"backend": backend, **options,
                         **{k: v for k, v in backend_options.items() if BACKEND_OPTIONS[k] == backend}}
    for k in backend_options:
        if all(spec["backend"] != BACKEND_OPTIONS[k] for spec in devices.values()):
            raise ValueError(f"--{k.replace('_', '-')} applies to the {BACKEND_OPTIONS[k]} backend, "
                             f"which no device uses")
    if not devices:
        raise ValueError("--device names no device")
    store = MeasurementStore(args.store)
    farm = RayFarm(args.farm, chunk_size=args.chunk_size, host_timeout_s=args.host_timeout)
    results = farm.measure(space, archs, devices, store=store, progress=not args.quiet)
    summary = {"store": str(store.path), "architectures": len(archs), "devices": {}}
    for name, (_, info) in results.items():
        rho = info["chunk_retest_rho"]
        summary["devices"][name] = {"backend": devices[name]["backend"],
                                    **{k: v for k, v in info.items() if k != "chunk_retest_rho"},
                                    "median_chunk_retest_rho": float(np.median(rho)) if rho else None}
    if args.export:
        summary["exported_rows"] = export_results(store, space, results, args.export)
    emit(summary, None)
    return 0
