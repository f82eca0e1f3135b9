"""``help-nas``: meta-train, adapt, predict, measure, search and benchmark hardware-adaptive latency predictors.

One module per command (``add_parser(subparsers, parents)`` and ``run(args) -> exit code``), shared
options in :mod:`help_plugin.cli.common`. Importing this package imports no torch, scipy or framework:
``help-nas --help`` starts instantly; each command imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import logging
import sys

from . import adapt, benchmark, demo, export, measure, meta_train, predict, references, search
from .common import parents

COMMANDS = (demo, measure, export, search, references, meta_train, adapt, predict, benchmark)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

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
    common = parents()
    for command in COMMANDS:
        command.add_parser(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"help-nas {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError, KeyError) as err:
        print(f"help-nas {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
