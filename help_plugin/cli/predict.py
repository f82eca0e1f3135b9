"""``help-nas predict``: latencies (ms) of architectures with an adapted model."""
from __future__ import annotations

from .common import check_output, emit, parse_archs


def add_parser(sub, common):
    p = sub.add_parser("predict", parents=[common["out"]], help="predict latencies (ms) with an adapted model",
                       description="Architectures: one per line (NB201 strings, FBNet '-'-joined blocks, OFA "
                                   "JSON dicts) or a JSON list; '-' reads stdin. Prints JSON.")
    p.add_argument("--model", required=True, help="adapted .safetensors model")
    p.add_argument("--archs", required=True, help="file of architectures, or - for stdin")
    p.set_defaults(run=run)


def run(args) -> int:
    check_output(args.out, make_folder=True)

    from ..predictors import LatencyEstimator

    est = LatencyEstimator.load(args.model)
    if not est.is_fitted:
        raise ValueError(f"--model {args.model} is not adapted to a device yet: adapt it with 'help-nas adapt --model "
                         f"{args.model} --measurements TABLE --device NAME --out ADAPTED.safetensors' (or, on this "
                         "machine, --device local-cpu)")
    idx = parse_archs(est.space, args.archs)
    pred = est.predict(idx)
    emit([{"arch": est.space.format(i), "latency_ms": round(float(p), 4)} for i, p in zip(idx, pred)], args.out)
    return 0
