"""Users' own measurements as tidy tables: ``space, arch, device, latency_ms`` (CSV or Parquet)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..spaces import get_space
from ..validation import check_latencies
from .dataset import LatencyDataset

COLUMNS = ("space", "arch", "device", "latency_ms")


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


def load_measurements(path: str | Path, space: str | None = None,
                      reference_archs: Sequence | None = None) -> LatencyDataset:
    """Read a tidy table (CSV, or Parquet with pandas+pyarrow) ``space, arch, device, latency_ms``.

    Repeated (arch, device) measurements are combined by their median. ``space`` filters rows
    when the table holds several spaces. ``reference_archs`` marks which rows are the
    reference architectures (they must be in the table).
    """
    path = Path(path)
    if path.suffix in (".parquet", ".pq"):
        import pandas as pd

        rows = pd.read_parquet(path).to_dict("records")
    else:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no measurements")
    missing = {"space", "arch", "device", "latency_ms"} - set(rows[0])
    if missing:
        raise ValueError(f"{path} lacks column(s) {sorted(missing)}")
    spaces = sorted({r["space"] for r in rows})
    if space is None:
        if len(spaces) != 1:
            raise ValueError(f"{path} holds spaces {spaces}; pass space=")
        space = spaces[0]
    sp = get_space(space)
    rows = [r for r in rows if r["space"] == sp.name]
    if not rows:
        raise ValueError(f"{path} has no rows for space {sp.name!r} (it has {spaces})")
    keys: dict[str, int] = {}
    archs, devices, cells = [], [], {}
    for n, r in enumerate(rows):
        idx = sp.parse(r["arch"])
        key = sp.canonical(idx)
        if key not in keys:
            keys[key] = len(archs)
            archs.append(idx)
        if r["device"] not in devices:
            devices.append(r["device"])
        ms = check_latencies([float(r["latency_ms"])], f"latency_ms of row {n + 2} in {path}")[0]
        cells.setdefault((keys[key], devices.index(r["device"])), []).append(ms)
    lat = np.full((len(archs), len(devices)), np.nan)
    for (i, j), v in cells.items():
        lat[i, j] = float(np.median(v))
    ref = np.zeros(0, dtype=np.int64)
    if reference_archs is not None:
        ref_keys = [sp.canonical(a) for a in reference_archs]
        absent = [k for k in ref_keys if k not in keys]
        if absent:
            raise ValueError(f"reference architecture(s) {absent[:3]} are not in {path}")
        ref = np.array([keys[k] for k in ref_keys], dtype=np.int64)
    return LatencyDataset(sp, np.stack(archs), tuple(devices), lat, ref)
