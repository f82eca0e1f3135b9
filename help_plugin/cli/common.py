"""What every ``help-nas`` command shares: parent parsers for common options, input/output helpers.

Nothing here imports torch, scipy or the frameworks: ``help-nas --help`` and every ``COMMAND --help``
start instantly. Commands import the library inside their ``run``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("help_plugin.cli")

METHODS_HELP = "help+ (default), help, meta-sgd or maml"
BASELINES_HELP = "flops, closest-device, scratch-mlp, brp-gcn, tl-et, hat-mlp"


def csv_list(s: str) -> list[str]:
    return [t for t in s.split(",") if t]


def int_list(s: str) -> list[int]:
    try:
        return [int(t) for t in csv_list(s)]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from err


def _checked(convert, ok, what: str):
    """An argparse ``type`` converting with ``convert`` and accepting values where ``ok(value)``."""
    def parse(s: str):
        try:
            value = convert(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
        return value
    return parse


positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _checked(float, lambda v: 0 < v < float("inf"), "a positive number")
unit_interval = _checked(float, lambda v: 0 < v < 1, "a number in (0, 1)")


def spaces() -> list[str]:
    from ..spaces import available_spaces

    return available_spaces()


def measurable_spaces() -> list[str]:
    from ..spaces import available_spaces, get_space

    return [s for s in available_spaces() if get_space(s).has_network]


def parents() -> dict[str, argparse.ArgumentParser]:
    """Parent parsers of the options several commands share, by name."""
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress bars")

    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--store", help="SQLite measurement store (default $HELP_PLUGIN_STORE or "
                                       "~/.cache/help-plugin/measurements.sqlite)")

    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--out", help="write JSON here instead of stdout")

    timing = argparse.ArgumentParser(add_help=False)
    timing.add_argument("--threads", type=positive_int, default=1, help="inference threads (default 1)")
    timing.add_argument("--seed", type=int, default=0, help="seed of the sampled architectures (default 0)")
    return {"quiet": quiet, "store": store, "out": out, "timing": timing}


def emit(obj, out: str | None) -> None:
    text = json.dumps(obj, indent=1)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
        log.info("wrote %s", out)
    else:
        print(text)


def read_archs(path: str) -> list:
    """One architecture per line (NB201 strings, FBNet block lists, OFA JSON dicts) or a JSON list."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) if line.lstrip().startswith("{") else line.strip()
            for line in text.splitlines() if line.strip()]


def load_estimator(model: str | None, space: str):
    """The estimator saved at ``model``, else the shipped model of ``space``."""
    from ..predictors import HELPEstimator

    return HELPEstimator.load(model) if model else HELPEstimator.pretrained(space)
