"""``help-nas search``: a latency-constrained search on this machine, verified by measurement."""
from __future__ import annotations

import json
from pathlib import Path

from .common import (
    check_output,
    emit,
    fraction,
    measurable_spaces,
    non_negative_int,
    positive_float,
    positive_int,
    unit_interval,
)


def add_parser(sub, common):
    p = sub.add_parser("search", parents=[common["shots"], common["store"], common["timing"], common["out"],
                                          common["quiet"]],
                       help="latency-constrained evolutionary search on this machine",
                       description="Adapts the shipped model to this CPU (reference archs + K shots, measured through "
                                   "the store, so a second run measures nothing) unless --model is given, re-times the "
                                   "reference archs to rescale the limit to the machine's current speed, runs "
                                   "regularised evolution maximising the SynFlow proxy over architectures predicted "
                                   "within the target band (between --budget-use of the limit and 3 % under it), "
                                   "measures the --verify-top best candidates and keeps the best one measured in the "
                                   "band (else searches again, up to twice, with the predictor re-adapted on those "
                                   "measurements), then re-measures it. Candidates must meet the band's top under the "
                                   "predictor's 95 %% selection-aware bound (--confidence; --mean-only: HELP's rule, "
                                   "the mean prediction). Prints a one-line verdict and a table (--json: the result "
                                   "as JSON, its keys documented in help_plugin.search.VerifiedSearchResult).")
    p.add_argument("--space", choices=measurable_spaces(), default="nasbench201")
    p.add_argument("--latency-ms", type=positive_float, required=True, help="latency limit in ms")
    p.add_argument("--model", help="an already adapted estimator for this machine")
    p.add_argument("--cycles", type=positive_int, default=60, help="evolution cycles (default 60)")
    p.add_argument("--verify-top", type=positive_int, default=4,
                   help="best-scoring candidates measured before picking the winner (default 4)")
    p.add_argument("--budget-use", type=fraction, default=0.9,
                   help="the least share of the limit the winner should use (default 0.9: a network measured "
                        "within 10 %% below the limit); 0 accepts any network under it")
    p.add_argument("--confidence", type=unit_interval, default=0.95,
                   help="confidence of the selection-aware latency bound candidates must meet (default 0.95)")
    p.add_argument("--mean-only", action="store_true",
                   help="HELP's rule: compare the mean prediction with the limit (no bound)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the verdict and table")
    p.add_argument("--plot", help="write the Pareto plot of the candidates (predicted and bound) here (a .png)")
    p.set_defaults(run=run)


def run(args) -> int:
    check_output(args.out, make_folder=True)

    from ..measure import MeasurementStore, TorchEagerDevice
    from ..measure.adapt import adapt_on_device
    from ..predictors import HELPEstimator
    from ..search import VerifiedSearch, synflow_proposer
    from ..search.verified import SYNFLOW

    device = TorchEagerDevice(args.space, threads=args.threads, seed=args.seed)
    if args.model:
        est = HELPEstimator.load(args.model)
        if not est.is_fitted:
            raise ValueError(f"--model {args.model} is not adapted to a device yet: adapt it to this machine with "
                             f"'help-nas adapt --model {args.model} --device local-cpu --out ADAPTED.safetensors', "
                             "or omit --model")
    else:
        est = adapt_on_device(args.space, device, MeasurementStore(args.store), shots=args.shots, seed=args.seed,
                              progress=not args.quiet, shot_selection=args.shot_selection)
    search = VerifiedSearch(est, device, synflow_proposer(est.space, cycles=args.cycles, seed=args.seed,
                                                          progress=not args.quiet),
                            objective=SYNFLOW, verify_top=args.verify_top, budget_use=args.budget_use,
                            confidence=None if args.mean_only else args.confidence)
    result = search.run(args.latency_ms)
    if args.out:
        emit(result.to_dict(), args.out)
    if args.plot:
        from ..evaluation.plots import pareto

        pareto(result, Path(args.plot))
    print(json.dumps(result.to_dict(), indent=1) if args.json else f"{result.verdict()}\n\n{result.table()}")
    return 0
