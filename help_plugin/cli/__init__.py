"""``help-nas``: meta-train, adapt, predict, measure, search and benchmark hardware-adaptive latency predictors.

One module per command (``add_parser(subparsers, parents)`` and ``run(args) -> exit code``), shared
options in :mod:`help_plugin.cli.common`. Importing this package imports no torch, scipy or framework:
``help-nas --help`` starts instantly; each command imports what it needs when it runs.

Exit codes: 0 done; 2 a user error (a bad argument, file, value, store or device), reported as one line on
stderr naming it; 130 interrupted (Ctrl-C; ``measure`` says how many measurements were kept); 141 the
output pipe was closed (``help-nas references | head``). Anything else is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys

from ..errors import HelpPluginError
from . import adapt, benchmark, demo, export, measure, meta_train, predict, references, search
from .common import parents

#: What a user can cause: bad values and types, files and folders, the library's own errors.
USER_ERRORS = (HelpPluginError, ValueError, TypeError, OSError, EOFError, sqlite3.DatabaseError)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

COMMANDS = (demo, measure, export, search, references, meta_train, adapt, predict, benchmark)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = Parser(
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


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 2000 else text[:2000] + " ..."


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except KeyboardInterrupt as err:
        kept = getattr(err, "measured", None)
        where = getattr(err, "store", None)
        note = (f"; {kept} measurement(s) of this run are kept in {where} (run the command again to resume)"
                if kept is not None and where is not None else "")
        print(f"help-nas {args.command}: interrupted{note}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to write at exit
        return 141
    except USER_ERRORS as err:
        print(f"help-nas {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
