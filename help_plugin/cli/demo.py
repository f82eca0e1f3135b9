"""``help-nas demo``: this machine as the unseen device, end to end (see :mod:`help_plugin.demo`)."""
from __future__ import annotations

from pathlib import Path

from .common import check_output, non_negative_int, positive_int


def add_parser(sub, common):
    p = sub.add_parser("demo", parents=[common["shots"], common["timing"], common["quiet"]],
                       help="this machine as the unseen device: measure, adapt the shipped model, score, search",
                       description="Times the shipped model's reference architectures, K shots and held-out "
                                   "architectures on this CPU (PyTorch eager, interleaved passes), adapts the shipped "
                                   "model and reports its accuracy on the held-out ones next to the harness's own "
                                   "test-retest ceiling and the FLOPs proxy, then runs a verified latency-constrained "
                                   "search; writes report.json, scatter.png and pareto.png.")
    p.add_argument("--space", choices=["nasbench201", "fbnet"], default="nasbench201",
                   help="search space (default nasbench201; ofa and hat networks take too long per forward pass "
                        "on a CPU for a minutes-long demo: use `help-nas measure`/`search` for them)")
    p.add_argument("--test", type=positive_int, default=50, help="held-out architectures to score (default 50)")
    p.add_argument("--passes", type=positive_int, default=5, help="interleaved timing passes (default 5)")
    p.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    p.set_defaults(run=run)


def run(args) -> int:
    check_output(args.out, folder=True, make_folder=True)

    from ..demo import format_report, run_demo

    report = run_demo(args.space, shots=args.shots, n_test=args.test, seed=args.seed, threads=args.threads,
                      passes=args.passes, out_dir=args.out, progress=not args.quiet,
                      shot_selection=args.shot_selection)
    print(format_report(report))
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0
