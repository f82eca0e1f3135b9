"""``help-nas references``: the reference architectures a new device must time first."""
from __future__ import annotations

from .common import check_output, emit, load_estimator, spaces


def add_parser(sub, common):
    p = sub.add_parser("references", parents=[common["out"]],
                       help="print the reference architectures a new device must time first")
    p.add_argument("--space", choices=spaces(), default="nasbench201", help="search space of the shipped model")
    p.add_argument("--model", help="a saved model instead of the shipped one")
    p.set_defaults(run=run)


def run(args) -> int:
    check_output(args.out, make_folder=True)
    est = load_estimator(args.model, args.space)
    emit({"space": est.space.name, "reference_archs": est.reference_archs}, args.out)
    return 0
