"""``help-nas export``: the networks a device you can only hand files to must time, as ONNX files + a manifest."""
from __future__ import annotations

from .common import emit, measurable_spaces, non_negative_int, positive_int


def add_parser(sub, common):
    p = sub.add_parser("export", parents=[common["shots"], common["quiet"]],
                       help="write the networks a device must time as ONNX files, with a manifest to fill in",
                       description="For a device this machine cannot drive (a phone, a board, a GPU server with "
                                   "TensorRT): writes the model's reference architectures, --shots more (--shot-selection) and "
                                   "--holdout held-out ones as ONNX files with static input shapes, DIR/manifest.csv "
                                   "(space, arch, device, role, file, input_shape, latency_ms) and DIR/README.txt on "
                                   "how to time them (trtexec, benchmark_app, onnxruntime_perf_test, TFLite). "
                                   "Fill latency_ms, then: help-nas adapt --measurements DIR/manifest.csv "
                                   "--out M.safetensors")
    p.add_argument("--space", choices=measurable_spaces(), default="nasbench201", help="space of the shipped model")
    p.add_argument("--model", help="a meta-trained model whose reference architectures to export instead")
    p.add_argument("--out", required=True, help="output folder (must not hold a manifest yet)")
    p.add_argument("--holdout", type=non_negative_int, default=0,
                   help="held-out architectures to score the adapted model on (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="static batch size of the inputs (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled architectures and weights (default 0)")
    p.add_argument("--device", default="my-device", help="the device's name in the manifest (default my-device)")
    p.set_defaults(run=run)


def run(args) -> int:
    import csv
    from collections import Counter

    from ..measure.export import export_archs
    from .common import load_estimator

    est = load_estimator(args.model, args.space)
    manifest = export_archs(out_dir=args.out, shots=args.shots, holdout=args.holdout, batch_size=args.batch_size,
                            seed=args.seed, device=args.device, estimator=est, progress=not args.quiet,
                            shot_selection=args.shot_selection)
    with open(manifest, newline="") as f:
        roles = Counter(r["role"] for r in csv.DictReader(f))
    emit({"space": est.space.name, "device": args.device, "manifest": str(manifest),
          "files": sum(roles.values()), **{role: roles.get(role, 0) for role in ("reference", "shot", "holdout")},
          "next": f"time each file on the device (see {manifest.parent / 'README.txt'}), fill latency_ms, then: "
                  f"help-nas adapt --measurements {manifest} --out {args.device}.safetensors"}, None)
    return 0
