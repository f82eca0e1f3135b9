"""A measurement store that never loses or repeats work (SQLite).

Each row is keyed by (device id, space, canonical architecture, settings); measuring goes through
:func:`measure_archs`, which looks every architecture up first, measures only what is missing and
commits chunk by chunk, so an interrupted run resumes where it stopped. The store exports the tidy
``space, arch, device, latency_ms`` table that :func:`help_plugin.load_measurements` reads.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)

STORE_ENV = "HELP_PLUGIN_STORE"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    device_id TEXT NOT NULL, space TEXT NOT NULL, arch TEXT NOT NULL, settings TEXT NOT NULL,
    latency_ms REAL NOT NULL CHECK (latency_ms > 0), spread_ms REAL, retest_rho REAL, created REAL NOT NULL,
    PRIMARY KEY (device_id, space, arch, settings));
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, description TEXT, created REAL NOT NULL);
"""


class StoreError(RuntimeError):
    """The store file is corrupt, locked or not a measurement store."""


def default_store_path() -> Path:
    """``$HELP_PLUGIN_STORE``, else ``$XDG_CACHE_HOME/help-plugin/measurements.sqlite`` (``~/.cache``)."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "help-plugin" / "measurements.sqlite"


class MeasurementStore:
    """SQLite-backed latency measurements. ``path`` defaults to :func:`default_store_path`."""

    def __init__(self, path: str | Path | None = None, timeout_s: float = 30.0):
        self.path = Path(path) if path else default_store_path()
        if self.path.is_dir():
            raise StoreError(f"measurement store {self.path} is a directory; give a file name (e.g. {self.path / 'm.sqlite'})")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the folder {self.path.parent} of measurement store {self.path}: "
                             f"{err.strerror or err}") from None
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout_s)
            self._db.executescript(_SCHEMA)
            self._db.commit()
            self._db.execute("BEGIN IMMEDIATE")  # can we write? (an existing store may be read-only): fail now, not
            self._db.rollback()  # after the first chunk of measurements
        except sqlite3.OperationalError as err:
            raise StoreError(f"measurement store {self.path} cannot be opened for writing ({err})") from err
        except sqlite3.DatabaseError as err:
            raise StoreError(f"measurement store {self.path} is unusable ({err}); move it aside to start a new one") from err

    def _run(self, sql: str, args=()):
        try:
            return self._db.execute(sql, args)
        except sqlite3.OperationalError as err:
            raise StoreError(f"measurement store {self.path}: {err}") from err

    def get(self, device_id: str, space: str, archs: Sequence[str], settings: str = "") -> dict[str, float]:
        """Stored latency (ms) of each canonical arch string that has one."""
        out: dict[str, float] = {}
        for i in range(0, len(archs), 500):
            chunk = list(archs[i:i + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._run(f"SELECT arch, latency_ms FROM measurements WHERE device_id=? AND space=? AND settings=? "
                             f"AND arch IN ({marks})", [device_id, space, settings] + chunk).fetchall()
            out.update(dict(rows))
        return out

    def add(self, device_id: str, space: str, archs: Sequence[str], latency_ms: Sequence[float],
            settings: str = "", spread_ms: Sequence[float] | None = None, retest_rho: float | None = None) -> None:
        """Insert (or replace) measurements and commit at once."""
        spread = spread_ms if spread_ms is not None else [None] * len(archs)
        now = time.time()
        rows = [(device_id, space, a, settings, float(ms), None if s is None else float(s),
                 None if retest_rho is None or not np.isfinite(retest_rho) else float(retest_rho), now)
                for a, ms, s in zip(archs, latency_ms, spread)]
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO measurements VALUES (?,?,?,?,?,?,?,?)", rows)
        except sqlite3.DatabaseError as err:
            raise StoreError(f"measurement store {self.path}: {err}") from err

    def check_device(self, device_id: str, fingerprint: str, description: str = "") -> None:
        """Record ``fingerprint`` for ``device_id`` on first use; raise :class:`StoreError` if the store already
        holds another fingerprint for it (another device under the same name)."""
        try:
            with self._db:
                self._db.execute("INSERT OR IGNORE INTO devices VALUES (?,?,?,?)",
                                 (device_id, fingerprint, description, time.time()))
                stored, first = self._db.execute("SELECT fingerprint, description FROM devices WHERE device_id=?",
                                                 (device_id,)).fetchone()
        except sqlite3.DatabaseError as err:
            raise StoreError(f"measurement store {self.path}: {err}") from err
        if stored != fingerprint:
            n = self._run("SELECT COUNT(*) FROM measurements WHERE device_id=?", (device_id,)).fetchone()[0]
            raise StoreError(
                f"measurement store {self.path} holds {n} measurements of another device named {device_id!r} "
                f"(measured by {first or '?'}, fingerprint {stored}; this one: {description or '?'}, fingerprint "
                f"{fingerprint}): give this device another name, or pass fingerprint={stored!r} if it is the same device")

    def records(self, space: str | None = None, device_id: str | None = None) -> Iterator[dict[str, Any]]:
        sql, args = "SELECT device_id, space, arch, settings, latency_ms FROM measurements WHERE 1=1", []
        if space:
            sql, args = sql + " AND space=?", args + [space]
        if device_id:
            sql, args = sql + " AND device_id=?", args + [device_id]
        for dev, sp, arch, settings, ms in self._run(sql + " ORDER BY created", args):
            yield {"space": sp, "arch": arch, "device": dev + (f"[{settings}]" if settings else ""), "latency_ms": ms}

    def __len__(self) -> int:
        return int(self._run("SELECT COUNT(*) FROM measurements").fetchone()[0])

    def export_csv(self, path: str | Path, space: str | None = None, device_id: str | None = None) -> int:
        """Write the tidy table (:func:`help_plugin.data.load_measurements` reads it); returns the number of rows."""
        from ..data.tables import write_measurements

        return write_measurements(path, self.records(space, device_id))

    def close(self) -> None:
        self._db.close()


def measure_archs(device, archs: Any, store: MeasurementStore | None = None, chunk_size: int | None = None,
                  progress: bool = False) -> tuple[np.ndarray, dict]:
    """Latency (ms) of ``archs`` on ``device``, measuring only what ``store`` lacks.

    ``device`` is any :class:`~help_plugin.measure.Device` (``space``, ``device_id``,
    ``settings``, ``chunk_size`` and ``measure(index_array) -> Measurements``). Work is committed every
    ``chunk_size`` architectures (default: the device's ``chunk_size``), so nothing measured is lost.
    Returns ``(latency_ms [n], info)`` with counts and the test-retest rho of each measured chunk.
    """
    from tqdm.auto import tqdm

    space = device.space
    idx = space.to_indices(archs)
    keys = [space.canonical(r) for r in idx]
    settings = getattr(device, "settings", "")
    if store is not None:
        if not getattr(device, "persistent_id", True):
            raise ValueError(f"{device!r} has no name: give it name= to keep its measurements in a store (they are "
                             "stored and found under the name)")
        fingerprint = getattr(device, "fingerprint", "")
        if fingerprint:
            describe = getattr(device, "describe", None)
            store.check_device(device.device_id, fingerprint, describe() if describe else "")
    known = store.get(device.device_id, space.name, keys, settings) if store is not None else {}
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    todo = [i for k, i in first.items() if k not in known]
    chunk = chunk_size or getattr(device, "chunk_size", 25)
    retests = []
    bar = tqdm(total=len(todo), desc=f"measuring on {device.device_id}", disable=not progress)
    for start in range(0, len(todo), chunk):
        rows = todo[start:start + chunk]
        m = device.measure(idx[rows])
        spread = np.ptp(m.per_pass_ms, axis=0) if m.per_pass_ms.shape[0] > 1 else None
        if store is not None:
            store.add(device.device_id, space.name, [keys[i] for i in rows], m.latency_ms, settings, spread, m.retest_rho)
        known.update({keys[i]: float(v) for i, v in zip(rows, m.latency_ms)})
        if np.isfinite(m.retest_rho):
            retests.append(m.retest_rho)
        bar.update(len(rows))
    bar.close()
    info = {"cached": len(keys) - len(todo), "measured": len(todo), "chunk_retest_rho": retests}
    return np.array([known[k] for k in keys]), info
