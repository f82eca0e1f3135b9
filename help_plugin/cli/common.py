"""What every ``help-nas`` command shares: parent parsers for common options, input/output helpers.

Nothing here imports torch, scipy or the frameworks: ``help-nas --help`` and every ``COMMAND --help``
start instantly. Commands import the library inside their ``run``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
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
fraction = _checked(float, lambda v: 0 <= v < 1, "a fraction in [0, 1)")
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

    shots = argparse.ArgumentParser(add_help=False)
    shots.add_argument("--shots", type=non_negative_int, default=10,
                       help="architectures measured besides the model's references (default 10)")
    shots.add_argument("--shot-selection", choices=["design", "random"], default="design",
                       help="design (default): the shots the model learns most from (help+'s greedy I-optimal design, "
                            "chosen by leave-one-device-out validation); random: drawn at random")
    return {"quiet": quiet, "store": store, "out": out, "timing": timing, "shots": shots}


def check_output(path: str | None, option: str = "--out", make_folder: bool = False, folder: bool = False) -> None:
    """Fail now, before any long work, if ``path`` cannot be written: a directory given for a file, a folder that
    does not exist (created instead with ``make_folder``), no permission. ``folder``: ``path`` is an output folder."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir() and not folder:
        raise IsADirectoryError(f"{option} {path} is a directory; give a file name")
    if p.exists() and folder and not p.is_dir():
        raise NotADirectoryError(f"{option} {path} is a file, not a folder")
    parent = p if folder else p.parent
    if make_folder:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(f"{option} {path}: cannot create the folder {parent} ({err.strerror or err})") from None
    if not parent.is_dir():
        raise FileNotFoundError(f"{option} {path}: the folder {parent} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".help-nas-", suffix=".tmp"):
            pass
        if p.is_file():
            open(p, "ab").close()
    except OSError as err:
        raise PermissionError(f"{option} {path}: cannot write there ({err.strerror or err})") from None


def _json_safe(obj):
    """``obj`` with NaN and infinities as ``None``: JSON has no such numbers (``NaN`` would make the file invalid)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def emit(obj, out: str | None) -> None:
    """``obj`` as JSON (valid JSON: non-finite numbers become null) to ``out``, else stdout."""
    text = json.dumps(_json_safe(obj), indent=1, allow_nan=False)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
        log.info("wrote %s", out)
    else:
        print(text)


def _located_archs(path: str, option: str) -> list[tuple[str, object]]:
    """``(where, arch)`` of each architecture in ``path`` (``-``: stdin): one per line, or a JSON list."""
    if path == "-":
        text, name = sys.stdin.read(), "stdin"
    else:
        p, name = Path(path), f"{option} {path}"
        if p.is_dir():
            raise IsADirectoryError(f"{name} is a directory, not a file of architectures")
        if not p.is_file():
            raise FileNotFoundError(f"{name}: no such file")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise ValueError(f"{name} is not UTF-8 text (byte {err.start})") from None
    if text.strip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name} is not a valid JSON list of architectures: {err}") from None
        located = [(f"{name}, item {i + 1}", a) for i, a in enumerate(items)]
    else:
        located = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            arch = line.strip()
            if arch.startswith("{"):
                try:
                    arch = json.loads(arch)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{name}, line {n}: {arch!r} is not a JSON architecture ({err})") from None
            located.append((f"{name}, line {n}", arch))
    if not located:
        raise ValueError(f"{name} holds no architectures")
    return located


def read_archs(path: str, option: str = "--archs") -> list:
    """One architecture per line (NB201 strings, FBNet block lists, OFA JSON dicts) or a JSON list."""
    return [arch for _, arch in _located_archs(path, option)]


def parse_archs(space, path: str, option: str = "--archs"):
    """The architectures of ``path`` as ``space`` index rows ``[n, arch_length]``; errors name the line."""
    import numpy as np

    rows = []
    for where, arch in _located_archs(path, option):
        try:
            rows.append(space.parse(arch))
        except (ValueError, TypeError) as err:
            raise (ValueError if isinstance(err, ValueError) else TypeError)(f"{where}: {err}") from None
    return np.stack(rows)


def load_estimator(model: str | None, space: str):
    """The estimator saved at ``model``, else the shipped model of ``space``."""
    from ..predictors import HELPEstimator

    return HELPEstimator.load(model) if model else HELPEstimator.pretrained(space)
