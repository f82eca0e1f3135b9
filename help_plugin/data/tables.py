"""Users' own measurements as tidy tables: ``space, arch, device, latency_ms`` (CSV or Parquet).

Reading is strict, because a table silently read wrong gives a silently wrong predictor: every
problem is a ``ValueError`` naming the file, the line (CSV; ``row`` for Parquet, counting data rows
from 1) and the value. A row with more fields than the header (an unquoted decimal comma:
``...,dev,5,3``), a value that is not a plain number (``fast``, ``5,3``, ``1_000``, a boolean), NaN,
inf or <= 0, an unknown space (``nasbench-201``), an empty arch or device, a repeated column name:
each is an error. Columns besides the four are allowed and ignored. CSV is read as UTF-8 with or
without a byte-order mark.
"""
from __future__ import annotations

import csv
import math
import numbers
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..spaces import available_spaces, get_space
from .dataset import LatencyDataset

COLUMNS = ("space", "arch", "device", "latency_ms")
PARQUET_SUFFIXES = (".parquet", ".pq")

#: A plain decimal number as text (no thousands separators, no decimal comma, no underscores).
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)


def write_measurements(path: str | Path, records: Iterable[dict]) -> int:
    """Write ``{space, arch, device, latency_ms}`` records as a tidy CSV; returns the number of rows."""
    n = 0
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow(r)
            n += 1
    return n


def _latency(value, where: str) -> float:
    """The latency in a cell as a finite float > 0, or a ``ValueError`` naming ``where`` and the value."""
    if isinstance(value, str):
        text = value.strip()
        if not _NUMBER.fullmatch(text):
            hint = " (a decimal comma? write 5.3)" if re.fullmatch(r"[+-]?\d+,\d+", text) else ""
            raise ValueError(f"{where}: latency_ms {value!r} is not a number{hint}")
        ms = float(text)
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where}: latency_ms {value!r} ({type(value).__name__}) is not a number in ms")
    else:
        ms = float(value)
    if not math.isfinite(ms) or ms <= 0:
        raise ValueError(f"{where}: latency_ms = {value!r} is not a finite positive latency in ms")
    return ms


def _csv_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """``(where, row)`` of each data line of a CSV, with the field count checked against the header."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path} is empty (expected the header {','.join(COLUMNS)})")
            header = [h.strip() for h in header]
            _check_header(path, header)
            for row in reader:
                where = f"{path}, line {reader.line_num}"
                if not any(cell.strip() for cell in row):
                    continue  # a blank line
                if len(row) != len(header):
                    hint = " (an unquoted decimal comma? write 5.3 or quote the value)" if len(row) > len(header) else ""
                    raise ValueError(f"{where}: {len(row)} fields {','.join(row)!r} for the {len(header)} columns "
                                     f"{','.join(header)}{hint}")
                yield where, dict(zip(header, row))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a UTF-8 text table (byte {err.start}: {err.reason}); CSV tables are UTF-8, "
                         f"Parquet tables end in {' or '.join(PARQUET_SUFFIXES)}") from None
    except csv.Error as err:
        raise ValueError(f"{path} is not a readable CSV table: {err}") from None


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable Parquet table: {err}") from None
    header = [str(c) for c in frame.columns]
    _check_header(path, header)
    if pd.api.types.is_bool_dtype(frame["latency_ms"]):
        raise ValueError(f"{path}: column latency_ms holds booleans, not latencies in ms")
    for i, row in enumerate(frame.to_dict("records")):
        yield f"{path}, row {i + 1}", row


def _check_header(path: Path, header: list[str]) -> None:
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise ValueError(f"{path}: column(s) {repeated} appear more than once in the header {header}")
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing} (its header: {header}; expected {','.join(COLUMNS)})")


def _text(row: dict, column: str, where: str) -> str:
    value = row[column]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {column} {value!r} is empty or not text")
    return value.strip()


def load_measurements(path: str | Path, space: str | None = None,
                      reference_archs: Sequence | None = None) -> LatencyDataset:
    """Read a tidy table (CSV, or Parquet with pandas+pyarrow) ``space, arch, device, latency_ms``.

    Repeated (arch, device) measurements are combined by their median. ``space`` selects the rows of
    one space when the table holds several (by default the table's only space). ``reference_archs``
    marks which rows are the reference architectures (they must be in the table). Every malformed row
    is a ``ValueError`` naming the file, line and value (see the module docstring); extra columns are
    ignored.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a table of measurements")
    if not path.is_file():
        raise FileNotFoundError(f"no table of measurements at {path}")
    known = available_spaces()
    if space is not None and space not in known:
        get_space(space)  # the registry's error for an unknown space
    rows = []
    for where, row in (_parquet_rows(path) if path.suffix in PARQUET_SUFFIXES else _csv_rows(path)):
        name = _text(row, "space", where)
        if name not in known:
            raise ValueError(f"{where}: unknown search space {name!r}; available: {known}")
        rows.append((where, name, row))
    if not rows:
        raise ValueError(f"{path} has no measurements")
    spaces = sorted({name for _, name, _ in rows})
    if space is None:
        if len(spaces) != 1:
            raise ValueError(f"{path} holds spaces {spaces}; choose one (space=, or --space)")
        space = spaces[0]
    sp = get_space(space)
    keys: dict[str, int] = {}
    archs, devices, cells = [], [], {}
    for where, name, r in rows:
        if name != sp.name:
            continue
        arch = r["arch"]
        if not isinstance(arch, dict):
            arch = _text(r, "arch", where)
        try:
            idx = sp.parse(arch)
        except (ValueError, TypeError) as err:
            raise (ValueError if isinstance(err, ValueError) else TypeError)(f"{where}: {err}") from None
        device = _text(r, "device", where)
        ms = _latency(r["latency_ms"], where)
        key = sp.canonical(idx)
        if key not in keys:
            keys[key] = len(archs)
            archs.append(idx)
        if device not in devices:
            devices.append(device)
        cells.setdefault((keys[key], devices.index(device)), []).append(ms)
    if not archs:
        raise ValueError(f"{path} has no rows for space {sp.name!r} (it has {spaces})")
    lat = np.full((len(archs), len(devices)), np.nan)
    for (i, j), v in cells.items():
        lat[i, j] = float(np.median(v))
    ref = np.zeros(0, dtype=np.int64)
    if reference_archs is not None:
        ref_keys = []
        for i, a in enumerate(reference_archs):
            try:
                ref_keys.append(sp.canonical(a))
            except (ValueError, TypeError) as err:
                raise (ValueError if isinstance(err, ValueError) else TypeError)(
                    f"reference architecture {i}: {err}") from None
        absent = [k for k in ref_keys if k not in keys]
        if absent:
            raise ValueError(f"{len(absent)} reference architecture(s) are not in {path}, e.g. {absent[:3]}")
        ref = np.array([keys[k] for k in ref_keys], dtype=np.int64)
    return LatencyDataset(sp, np.stack(archs), tuple(devices), lat, ref)
