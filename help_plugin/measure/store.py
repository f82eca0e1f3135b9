"""A measurement store that never loses or repeats work (SQLite).

Each row is keyed by (device id, space, canonical architecture, settings); measuring goes through
:func:`measure_archs`, which looks every architecture up first, measures only what is missing and
commits chunk by chunk, so an interrupted (even killed) run resumes where it stopped. The store exports
the tidy ``space, arch, device, latency_ms`` table that :func:`help_plugin.load_measurements` reads.

Concurrent runs on one store share the work: a run *claims* the rows of a chunk (owner, host, pid and an
expiry, in one write transaction that also checks what is measured or claimed already) before it
measures them, renews its claims while it measures, and releases them when it stops. Other runs skip
claimed rows and wait for their results, so nothing is measured twice. The claims of a killed process
expire: at once when it ran on this host (its pid is gone), else after :attr:`MeasurementStore.claim_ttl_s`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import HelpPluginError

log = logging.getLogger(__name__)

STORE_ENV = "HELP_PLUGIN_STORE"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    device_id TEXT NOT NULL, space TEXT NOT NULL, arch TEXT NOT NULL, settings TEXT NOT NULL,
    latency_ms REAL NOT NULL CHECK (latency_ms > 0), spread_ms REAL, retest_rho REAL, created REAL NOT NULL,
    PRIMARY KEY (device_id, space, arch, settings));
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, description TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS claims (
    device_id TEXT NOT NULL, space TEXT NOT NULL, arch TEXT NOT NULL, settings TEXT NOT NULL,
    owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (device_id, space, arch, settings));
"""
#: Seconds between two looks at rows another run is measuring.
_WAIT_POLL_S = 0.5


class StoreError(HelpPluginError, RuntimeError):
    """The store file is corrupt, locked or not a measurement store."""


class MeasurementInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`measure_archs`: ``measured`` architectures of this run were stored (in ``store``, or
    nowhere without one) before it stopped."""

    def __init__(self, measured: int, store: Path | None):
        super().__init__(f"interrupted after {measured} measurement(s)")
        self.measured, self.store = measured, store


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def default_store_path() -> Path:
    """``$HELP_PLUGIN_STORE``, else ``$XDG_CACHE_HOME/help-plugin/measurements.sqlite`` (``~/.cache``)."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "help-plugin" / "measurements.sqlite"


class MeasurementStore:
    """SQLite-backed latency measurements. ``path`` defaults to :func:`default_store_path`."""

    #: Seconds a claim lasts unless its run renews it (a run renews its claims every third of this).
    claim_ttl_s: float = 60.0

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
            problem = self._db.execute("PRAGMA quick_check").fetchone()[0]  # corrupted pages: now, not mid-run
            if problem != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed: {problem}")
            self._db.executescript(_SCHEMA)
            self._db.commit()
            self._db.execute("BEGIN IMMEDIATE")  # can we write? (an existing store may be read-only): fail now, not
            self._db.rollback()  # after the first chunk of measurements
        except sqlite3.OperationalError as err:
            raise StoreError(f"measurement store {self.path} cannot be opened for writing ({err})") from err
        except sqlite3.DatabaseError as err:
            raise StoreError(f"measurement store {self.path} is unusable ({err}); move it aside to start a new one") from err

    @contextlib.contextmanager
    def _write(self):
        """One write transaction, taken at once (``BEGIN IMMEDIATE``): reads inside it see no concurrent writer."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
        except sqlite3.DatabaseError as err:
            raise StoreError(f"measurement store {self.path}: {err}") from err

    def _run(self, sql: str, args=()):
        try:
            return self._db.execute(sql, args)
        except sqlite3.OperationalError as err:
            raise StoreError(f"measurement store {self.path}: {err}") from err
        except sqlite3.DatabaseError as err:  # e.g. corrupted pages
            raise StoreError(f"measurement store {self.path} is unusable ({err}); move it aside to start a new one") from err

    def get(self, device_id: str, space: str, archs: Sequence[str], settings: str = "") -> dict[str, float]:
        """Stored latency (ms) of each canonical arch string that has one."""
        return dict(self._select("measurements", "latency_ms", device_id, space, archs, settings))

    def _select(self, table: str, column: str, device_id: str, space: str, archs: Sequence[str], settings: str):
        """``(arch, column)`` rows of ``table`` for ``archs`` (queried 500 at a time)."""
        out = []
        for i in range(0, len(archs), 500):
            chunk = list(archs[i:i + 500])
            marks = ",".join("?" * len(chunk))
            out += self._run(f"SELECT arch, {column} FROM {table} WHERE device_id=? AND space=? AND settings=? "
                             f"AND arch IN ({marks})", [device_id, space, settings] + chunk).fetchall()
        return out

    # ------------------------------------------------------------------ claims (concurrent runs)
    def claim(self, owner: str, device_id: str, space: str, archs: Sequence[str], settings: str = "",
              limit: int | None = None) -> tuple[list[str], dict[str, float]]:
        """Claim for ``owner`` up to ``limit`` of ``archs`` that are neither measured nor claimed by a live run.

        Returns ``(claimed, measured)``: the archs now claimed (in ``archs`` order) and the stored latencies of
        those measured already (e.g. by another run since this one looked). Expired claims, and claims of
        processes of this host that no longer exist, are dropped first.
        """
        now, host = time.time(), socket.gethostname()
        with self._write() as db:
            db.execute("DELETE FROM claims WHERE expires < ?", (now,))
            for other, pid in db.execute("SELECT DISTINCT owner, pid FROM claims WHERE host=? AND owner!=?",
                                         (host, owner)).fetchall():
                if not _alive(pid):
                    db.execute("DELETE FROM claims WHERE owner=?", (other,))
            measured = self.get(device_id, space, archs, settings)
            taken = {a for a, o in self._select("claims", "owner", device_id, space, archs, settings) if o != owner}
            free = [a for a in dict.fromkeys(archs) if a not in measured and a not in taken][:limit]
            db.executemany("INSERT OR REPLACE INTO claims VALUES (?,?,?,?,?,?,?,?)",
                           [(device_id, space, a, settings, owner, host, os.getpid(), now + self.claim_ttl_s)
                            for a in free])
        return free, measured

    def release(self, owner: str) -> None:
        """Drop every claim of ``owner``."""
        with self._write() as db:
            db.execute("DELETE FROM claims WHERE owner=?", (owner,))

    def renew(self, owner: str) -> None:
        """Move the expiry of ``owner``'s claims :attr:`claim_ttl_s` into the future."""
        with self._write() as db:
            db.execute("UPDATE claims SET expires=? WHERE owner=?", (time.time() + self.claim_ttl_s, owner))

    def add(self, device_id: str, space: str, archs: Sequence[str], latency_ms: Sequence[float],
            settings: str = "", spread_ms: Sequence[float] | None = None, retest_rho: float | None = None,
            owner: str | None = None) -> None:
        """Insert (or replace) measurements and commit at once (releasing ``owner``'s claims on them)."""
        spread = spread_ms if spread_ms is not None else [None] * len(archs)
        now = time.time()
        rows = [(device_id, space, a, settings, float(ms), None if s is None else float(s),
                 None if retest_rho is None or not np.isfinite(retest_rho) else float(retest_rho), now)
                for a, ms, s in zip(archs, latency_ms, spread)]
        with self._write() as db:
            db.executemany("INSERT OR REPLACE INTO measurements VALUES (?,?,?,?,?,?,?,?)", rows)
            if owner is not None:
                db.executemany("DELETE FROM claims WHERE device_id=? AND space=? AND arch=? AND settings=? AND owner=?",
                               [(device_id, space, a, settings, owner) for a in archs])

    def check_device(self, device_id: str, fingerprint: str, description: str = "") -> None:
        """Record ``fingerprint`` for ``device_id`` on first use; raise :class:`StoreError` if the store already
        holds another fingerprint for it (another device under the same name)."""
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO devices VALUES (?,?,?,?)", (device_id, fingerprint, description, time.time()))
            stored, first = db.execute("SELECT fingerprint, description FROM devices WHERE device_id=?",
                                       (device_id,)).fetchone()
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


class _Renewal:
    """Renews ``owner``'s claims in ``store`` from a background thread (its own connection) while a run measures."""

    def __init__(self, store: MeasurementStore, owner: str):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(store.path, store.claim_ttl_s, owner), daemon=True,
                                       name="help-plugin claim renewal")
        self.thread.start()

    def _run(self, path: Path, ttl: float, owner: str) -> None:
        store = None
        while not self.stop.wait(ttl / 3):
            try:
                store = store or MeasurementStore(path)  # a connection of this thread
                store.claim_ttl_s = ttl
                store.renew(owner)
            except StoreError as err:  # the claims then expire: another run may measure them too, nothing is lost
                log.warning("could not renew claims in %s: %s", path, err)
        if store is not None:
            store.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def measure_archs(device, archs: Any, store: MeasurementStore | None = None, chunk_size: int | None = None,
                  progress: bool = False) -> tuple[np.ndarray, dict]:
    """Latency (ms) of ``archs`` on ``device``, measuring only what ``store`` lacks.

    ``device`` is any :class:`~help_plugin.measure.Device` (``space``, ``device_id``,
    ``settings``, ``chunk_size`` and ``measure(index_array) -> Measurements``). Architectures are keyed by
    their canonical form (``space.canonical_indices``: OFA subnets that differ only in inactive layers are
    one network, measured once). Work is claimed and committed every ``chunk_size`` architectures (default:
    the device's ``chunk_size``), so nothing measured is lost, and a concurrent run on the same store measures
    the other chunks (this one waits for its results). Ctrl-C raises :class:`MeasurementInterrupted` (a
    ``KeyboardInterrupt``) with the number of measurements this run stored.
    Returns ``(latency_ms [n], info)``: ``cached`` (found in the store, also those a concurrent run measured),
    ``measured`` (by this run) and the test-retest rho of each measured chunk.
    """
    from tqdm.auto import tqdm

    space = device.space
    idx = space.canonical_indices(space.to_indices(archs))
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
    remaining = [k for k in first if k not in known]
    chunk = chunk_size or getattr(device, "chunk_size", 25)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    retests, measured = [], 0
    bar = tqdm(total=len(remaining), desc=f"measuring on {device.device_id}", disable=not progress)
    renewal = _Renewal(store, owner) if store is not None and remaining else None
    try:
        while remaining:
            if store is None:
                batch = remaining[:chunk]
            else:
                batch, done = store.claim(owner, device.device_id, space.name, remaining, settings, chunk)
                known.update(done)
            if batch:
                m = device.measure(idx[[first[k] for k in batch]])
                spread = np.ptp(m.per_pass_ms, axis=0) if m.per_pass_ms.shape[0] > 1 else None
                if store is not None:
                    store.add(device.device_id, space.name, batch, m.latency_ms, settings, spread, m.retest_rho, owner)
                known.update({k: float(v) for k, v in zip(batch, m.latency_ms)})
                measured += len(batch)
                if np.isfinite(m.retest_rho):
                    retests.append(m.retest_rho)
            left = [k for k in remaining if k not in known]
            bar.update(len(remaining) - len(left))
            remaining = left
            if remaining and not batch:
                time.sleep(_WAIT_POLL_S)  # the rest is being measured by another run: wait for its results
    except KeyboardInterrupt as err:
        raise MeasurementInterrupted(measured, store.path if store is not None else None) from err
    finally:
        bar.close()
        if renewal is not None:
            renewal.close()
            store.release(owner)
    info = {"cached": len(keys) - measured, "measured": measured, "chunk_retest_rho": retests}
    return np.array([known[k] for k in keys]), info
