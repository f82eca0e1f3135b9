"""A device farm on Ray: many devices and hosts measuring into the driver's store (``pip install 'help-plugin[farm]'``).

A device host joins a Ray cluster advertising its device as a custom resource::

    ray start --address=HEAD:6379 --resources='{"device:jetson-orin": 1}'

and :meth:`RayFarm.measure` (or ``help-nas measure --farm ADDRESS --device jetson-orin``) starts one
:class:`FarmHost` actor per unit of ``device:jetson-orin`` in the cluster. Each host builds the requested
backend there (``local_device(space, backend, **settings)``: the backend and its settings travel with the
request) and reports its device id; the driver looks every architecture up in its own
:class:`~help_plugin.measure.MeasurementStore`, sends only the missing ones, in chunks, to idle hosts, and
commits each chunk's results as soon as it arrives (``ray.wait``). Several devices measure in parallel.

Faults: a host that dies mid-chunk (its process killed, its node gone) loses nothing: the chunk goes back
to the queue and the remaining hosts measure it. Results are committed only on the driver and only once,
and stored keys are never sent again, so nothing is measured twice. A device whose hosts are all gone (or
never start within ``host_timeout_s``) stops with a :class:`FarmError` naming it, after the other devices
have finished; everything measured before is in the store, and a rerun resumes.

``ray`` is imported only when a farm is used.
"""
from __future__ import annotations

import collections
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import DeviceError
from ..spaces import SearchSpace, get_space
from .store import MeasurementStore

log = logging.getLogger(__name__)

#: A host advertises device NAME as the Ray resource ``device:NAME``.
RESOURCE_PREFIX = "device:"


class FarmError(DeviceError):
    """A device has no host left, its hosts disagree on what they are, or a chunk keeps killing its hosts."""

    def __init__(self, message: str, results: dict | None = None):
        super().__init__(message)
        #: What the devices that did finish measured: name -> (latency_ms, info), as :meth:`RayFarm.measure`.
        self.results = results or {}


def resource(device: str) -> str:
    """The Ray resource a host of ``device`` advertises (``device:NAME``)."""
    return RESOURCE_PREFIX + device


def _ray():
    try:
        import ray
    except ImportError as err:
        raise RuntimeError(f"the device farm needs Ray: pip install 'help-plugin[farm]' ({err})") from None
    return ray


class FarmHost:
    """The actor on a device host: builds ``local_device(space, backend, **settings)`` there and times chunks."""

    def __init__(self, space_name: str, space_params: dict, backend: str, settings: dict):
        from .base import local_device

        self.device = local_device(get_space(space_name, **space_params), backend, **settings)

    def describe(self) -> dict:
        """What this host is: the local device id and settings (the store key), host name, pid, Ray node."""
        import ray

        return {"device_id": self.device.device_id, "settings": self.device.settings, "host": socket.gethostname(),
                "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    def measure(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, str]:
        """``(latency_ms, per_pass_ms, retest_rho, device_id)`` of index rows ``idx``."""
        m = self.device.measure(idx)
        return m.latency_ms, m.per_pass_ms, m.retest_rho, self.device.device_id


_REMOTE_HOST = None


def _remote_host():
    global _REMOTE_HOST
    if _REMOTE_HOST is None:
        _REMOTE_HOST = _ray().remote(FarmHost)
    return _REMOTE_HOST


@dataclass
class ChunkDone:
    """One committed chunk, passed to ``on_chunk``: the device, its archs (canonical keys), their latencies
    and the host that measured them (``describe()``'s dict)."""

    device: str
    archs: list[str]
    latency_ms: np.ndarray
    host: dict


@dataclass
class _Chunk:
    rows: list[int]
    attempts: int = 0


@dataclass
class _Host:
    actor: Any
    info: dict = field(default_factory=dict)
    deadline: float = 0.0


@dataclass
class _DeviceRun:
    """The driver's bookkeeping of one device during :meth:`RayFarm.measure`."""

    name: str
    backend: str
    settings: dict
    device_id: str | None = None  # NAME/<the hosts' local device id>, known once the first host describes itself
    local_id: str = ""
    store_settings: str = ""
    known: dict = field(default_factory=dict)
    queue: collections.deque = field(default_factory=collections.deque)
    idle: list = field(default_factory=list)
    live: int = 0  # hosts started and not lost
    starting: int = 0
    error: str | None = None
    last_host_error: str = ""
    info: dict = field(default_factory=lambda: {"hosts": 0, "hosts_lost": 0, "cached": 0, "measured": 0,
                                                "requeued_chunks": 0, "chunk_retest_rho": []})


class RayFarm:
    """Measure architectures on the devices of a Ray cluster (see the module docstring).

    Args:
        address: the Ray head, e.g. ``"ray://HEAD:10001"`` (Ray Client) or ``"HEAD:6379"`` / ``"auto"`` on a
            cluster node; ``None`` uses the Ray instance this process already started (``ray.init``).
        chunk_size: architectures per chunk (timed together, interleaved, and committed together; default 25).
        host_timeout_s: how long a host may take to start (import, build the backend) before it counts as absent.
        max_attempts: a chunk whose host dies this many times stops the device (the chunk itself may be
            what kills it).
        keep_hosts: keep the hosts (and the devices they hold) between :meth:`measure` calls, for many small
            calls; :meth:`close` (or leaving a ``with RayFarm(...) as farm:`` block) releases them. Default:
            each call releases its hosts when it ends, so other drivers can use the devices.
        init_kwargs: more arguments of ``ray.init`` when connecting.
    """

    def __init__(self, address: str | None = None, chunk_size: int = 25, host_timeout_s: float = 120.0,
                 max_attempts: int = 3, keep_hosts: bool = False, **init_kwargs):
        for name, value in (("chunk_size", chunk_size), ("max_attempts", max_attempts)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not host_timeout_s > 0:
            raise ValueError(f"host_timeout_s must be > 0, got {host_timeout_s!r}")
        self.address, self.chunk_size, self.host_timeout_s, self.max_attempts = (
            address, int(chunk_size), float(host_timeout_s), int(max_attempts))
        self.keep_hosts = bool(keep_hosts)
        self.init_kwargs = init_kwargs
        self._pool: dict[tuple, list[_Host]] = {}  # (device, space, backend, settings) -> idle hosts kept

    def close(self) -> None:
        """Release the hosts kept between calls (``keep_hosts=True``)."""
        if self._pool:
            ray = _ray()
            for hosts in self._pool.values():
                for host in hosts:
                    _kill(ray, host)
            self._pool.clear()

    def __enter__(self) -> "RayFarm":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ cluster
    def connect(self):
        """Connect to the cluster (once); returns the ``ray`` module."""
        ray = _ray()
        if not ray.is_initialized():
            if self.address is None:
                raise RuntimeError("RayFarm(address=None) needs a running Ray in this process (ray.init(...)); "
                                   "or give the head's address, e.g. ray://HEAD:10001")
            _check_reachable(self.address)
            try:
                ray.init(address=self.address, log_to_driver=False, **self.init_kwargs)
            except (ConnectionError, RuntimeError, ValueError) as err:
                hint = "" if os.environ.get("RAY_AUTH_MODE") == "token" else (
                    "; if the cluster uses token authentication, set RAY_AUTH_MODE=token and copy the head's "
                    "~/.ray/auth_token here")
                raise RuntimeError(f"cannot connect to the Ray cluster at {self.address!r}: {err}{hint}") from None
        return ray

    def hosts(self) -> dict[str, int]:
        """Devices the cluster advertises: name -> number of hosts (units of ``device:NAME``)."""
        ray = self.connect()
        return {k[len(RESOURCE_PREFIX):]: int(v) for k, v in ray.cluster_resources().items()
                if k.startswith(RESOURCE_PREFIX)}

    # ------------------------------------------------------------------ measuring
    def measure(self, space: str | SearchSpace, archs: Any, devices: str | Sequence[str] | Mapping[str, Mapping],
                store: MeasurementStore | None = None, backend: str = "torch", settings: Mapping | None = None,
                progress: bool = False, on_chunk: Callable[[ChunkDone], None] | None = None
                ) -> dict[str, tuple[np.ndarray, dict]]:
        """Latency (ms) of ``archs`` on each device, measuring only what ``store`` lacks.

        Args:
            space: search space (its settings travel to the hosts).
            archs: any form the space accepts, or indices ``[n, arch_length]``.
            devices: a device name, a list of names (all timed with ``backend`` and ``settings``), or a
                mapping name -> ``{"backend": ..., **settings}`` for devices timed differently.
            store: the driver's measurement store (``None``: nothing is kept or looked up).
            backend, settings: the local backend each host runs and its settings (``threads``,
                ``batch_size``, ``passes``, ...; see :func:`~help_plugin.measure.local_device`).
            on_chunk: called on the driver after each committed chunk with a :class:`ChunkDone`.
        Returns:
            ``{device name: (latency_ms [n], info)}``; ``info`` has the store's ``device`` id and ``settings``,
            ``hosts`` started, ``hosts_lost``, ``cached``, ``measured``, ``requeued_chunks`` and
            ``chunk_retest_rho``.
        Raises:
            FarmError: a device has no host in the cluster (at once), or lost all its hosts (after the others
                finished; ``err.results`` holds theirs).
        """
        from tqdm.auto import tqdm

        from ..validation import check_latencies
        from .base import local_device

        ray = self.connect()
        sp = get_space(space)
        idx = sp.to_indices(archs)
        keys = [sp.canonical(r) for r in idx]
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        runs = self._requests(devices, backend, settings)
        for run in runs.values():  # bad backends or settings fail here, before any host starts
            local_device(sp, run.backend, **run.settings)
        available = self.hosts()
        absent = [name for name in runs if available.get(name, 0) < 1]
        if absent:
            raise FarmError(f"no host in the Ray cluster advertises device {absent[0]!r} (resource "
                            f"{resource(absent[0])!r}); advertised: {sorted(available) or 'none'}. Start one with: "
                            f"ray start --address=HEAD:6379 --resources='{{\"{resource(absent[0])}\": 1}}'")
        remote = _remote_host()
        starting: dict[Any, tuple[str, _Host]] = {}  # describe() ref -> host being started
        inflight: dict[Any, tuple[str, _Host, _Chunk]] = {}  # measure() ref -> chunk on a host
        all_hosts: list[_Host] = []
        bar = tqdm(total=0, desc="measuring on the farm", disable=not progress)

        def kill(host: _Host) -> None:
            _kill(ray, host)

        def pool_key(run: _DeviceRun) -> tuple:
            return (run.name, sp.name, repr(sorted(sp.get_params().items())), run.backend,
                    repr(sorted(run.settings.items())))

        def start_host(run: _DeviceRun) -> None:
            actor = remote.options(resources={resource(run.name): 1}, num_cpus=0, max_restarts=0,
                                   max_task_retries=0).remote(sp.name, sp.get_params(), run.backend, run.settings)
            host = _Host(actor, deadline=time.monotonic() + self.host_timeout_s)
            all_hosts.append(host)
            starting[actor.describe.remote()] = (run.name, host)
            run.starting += 1

        def dispatch(run: _DeviceRun) -> None:
            while run.idle and run.queue and run.error is None:
                host, chunk = run.idle.pop(), run.queue.popleft()
                inflight[host.actor.measure.remote(idx[chunk.rows])] = (run.name, host, chunk)
            busy = any(n == run.name for n, _, _ in inflight.values())
            if (run.device_id is not None or run.error is not None) and not run.queue and not busy:
                if not self.keep_hosts or run.error is not None:
                    for h in run.idle:  # the device is done: free its hosts, stop waiting for more
                        kill(h)
                    run.idle.clear()
                for ref, (n, h) in list(starting.items()):
                    if n == run.name:
                        del starting[ref]
                        run.starting -= 1
                        kill(h)

        def lose_host(run: _DeviceRun, host: _Host, why: str) -> None:
            run.live -= 1
            run.info["hosts_lost"] += 1
            run.last_host_error = why
            kill(host)
            if run.live == 0 and run.starting == 0 and run.queue and run.error is None:
                log.warning("device %s: no host left; trying to start another", run.name)
                start_host(run)

        def fail(run: _DeviceRun, message: str) -> None:
            if run.error is None:
                run.error = message
                log.error(message)
                run.queue.clear()
            dispatch(run)

        def host_ready(run: _DeviceRun, host: _Host, info: dict) -> None:
            local_id = info["device_id"]
            if run.device_id is None:
                run.local_id, run.store_settings = local_id, info["settings"]
                run.device_id = f"{run.name}/{local_id}"
                if store is not None:
                    run.known = store.get(run.device_id, sp.name, list(first), run.store_settings)
                todo = [i for k, i in first.items() if k not in run.known]
                run.info.update(device=run.device_id, settings=run.store_settings, cached=len(first) - len(todo))
                run.queue.extend(_Chunk(todo[s:s + self.chunk_size]) for s in range(0, len(todo), self.chunk_size))
                bar.total += len(todo)
                bar.refresh()
            elif (local_id, info["settings"]) != (run.local_id, run.store_settings):
                kill(host)
                fail(run, f"device {run.name!r}: host {info['host']} is {local_id} [{info['settings']}] but another "
                          f"host of it is {run.local_id} [{run.store_settings}]; the hosts of one device must "
                          f"have the same hardware, backend version and settings")
                return
            host.info = info
            run.live += 1
            run.info["hosts"] += 1
            run.idle.append(host)
            dispatch(run)

        try:
            for run in runs.values():
                kept = self._pool.pop(pool_key(run), [])
                for _ in range(available[run.name] - len(kept)):
                    start_host(run)
                for host in kept:
                    all_hosts.append(host)
                    host_ready(run, host, host.info)
            while starting or inflight:
                now = time.monotonic()
                deadline = min((h.deadline for _, h in starting.values()), default=None)
                timeout = None if deadline is None else max(0.0, deadline - now)
                done, _ = ray.wait(list(starting) + list(inflight), num_returns=1, timeout=timeout)
                if not done:  # a host did not start in time
                    for ref, (name, host) in list(starting.items()):
                        if ref in starting and host.deadline <= time.monotonic():
                            del starting[ref]
                            run = runs[name]
                            run.starting -= 1
                            kill(host)
                            log.warning("device %s: a host did not start within %.0f s", name, self.host_timeout_s)
                            if run.live == 0 and run.starting == 0 and (run.queue or run.device_id is None):
                                fail(run, self._no_host(run, f"none started within {self.host_timeout_s:.0f} s"))
                    continue
                ref = done[0]
                if ref in starting:
                    name, host = starting.pop(ref)
                    run = runs[name]
                    run.starting -= 1
                    try:
                        info = ray.get(ref)
                    except ray.exceptions.RayError as err:
                        run.last_host_error = _short(err)
                        log.warning("device %s: a host failed to start: %s", name, run.last_host_error)
                        kill(host)
                        if run.live == 0 and run.starting == 0:
                            fail(run, self._no_host(run, f"the last failed to start: {run.last_host_error}"))
                        continue
                    if run.error is None:
                        host_ready(run, host, info)
                    else:
                        kill(host)
                    continue
                name, host, chunk = inflight.pop(ref)
                run = runs[name]
                try:
                    lat, per_pass, retest, local_id = ray.get(ref)
                except ray.exceptions.RayTaskError as err:  # the backend raised: deterministic, not the host's fault
                    fail(run, f"device {name!r}: measuring failed on host {host.info.get('host')}: {_short(err)}")
                    continue
                except ray.exceptions.RayError as err:  # the host died mid-chunk: the chunk goes back to the queue
                    chunk.attempts += 1
                    log.warning("device %s: host %s (pid %s) died measuring %d architectures (%s); they go back to "
                                "the queue", name, host.info.get("host"), host.info.get("pid"), len(chunk.rows),
                                _short(err))
                    if chunk.attempts >= self.max_attempts:
                        fail(run, f"device {name!r}: {chunk.attempts} hosts died measuring the chunk of "
                                  f"{keys[chunk.rows[0]]!r} and {len(chunk.rows) - 1} more; giving up on it")
                        lose_host(run, host, _short(err))
                        continue
                    run.queue.appendleft(chunk)
                    run.info["requeued_chunks"] += 1
                    lose_host(run, host, _short(err))
                    dispatch(run)
                    continue
                if local_id != run.local_id:
                    fail(run, f"device {name!r}: host {host.info.get('host')} reports device id {local_id}, "
                              f"expected {run.local_id}")
                    continue
                chunk_keys = [keys[i] for i in chunk.rows]
                lat = check_latencies(lat, f"latencies of {chunk_keys[0]!r} and {len(chunk_keys) - 1} more from "
                                           f"device {name!r}")
                spread = np.ptp(per_pass, axis=0) if per_pass.shape[0] > 1 else None
                if store is not None:
                    store.add(run.device_id, sp.name, chunk_keys, lat, run.store_settings, spread, retest)
                run.known.update(zip(chunk_keys, map(float, lat)))
                run.info["measured"] += len(chunk_keys)
                if np.isfinite(retest):
                    run.info["chunk_retest_rho"].append(float(retest))
                bar.update(len(chunk_keys))
                run.idle.append(host)
                dispatch(run)
                if on_chunk is not None:
                    on_chunk(ChunkDone(name, chunk_keys, lat, dict(host.info)))
        finally:
            bar.close()
            kept = set()
            if self.keep_hosts:
                for run in runs.values():
                    if run.error is None and run.idle:
                        self._pool[pool_key(run)] = list(run.idle)
                        kept.update(id(h) for h in run.idle)
            for host in all_hosts:
                if id(host) not in kept:
                    kill(host)
        results = {name: (np.array([run.known[k] for k in keys]), run.info)
                   for name, run in runs.items() if run.error is None}
        failed = [run.error for run in runs.values() if run.error is not None]
        if failed:
            done = f" (finished: {sorted(results)}; everything measured is in the store)" if results else ""
            raise FarmError("; ".join(failed) + done, results)
        return results

    @staticmethod
    def _no_host(run: _DeviceRun, why: str) -> str:
        left = sum(len(c.rows) for c in run.queue)
        what = f"{left} architectures left unmeasured" if run.device_id else "nothing measured"
        last = f" (last host error: {run.last_host_error})" if run.last_host_error and run.last_host_error not in why \
            else ""
        return (f"device {run.name!r} has no host left in the Ray cluster (resource {resource(run.name)!r}; {why})"
                f"{last}; {what}")

    @staticmethod
    def _requests(devices, backend: str, settings: Mapping | None) -> dict[str, _DeviceRun]:
        if isinstance(devices, str):
            devices = [devices]
        if isinstance(devices, Mapping):
            out = {}
            for name, spec in devices.items():
                spec = dict(spec or {})
                out[str(name)] = _DeviceRun(str(name), spec.pop("backend", backend), {**(settings or {}), **spec})
        else:
            names = list(devices)
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"device {dupes[0]!r} is given twice")
            out = {str(n): _DeviceRun(str(n), backend, dict(settings or {})) for n in names}
        if not out:
            raise ValueError("no devices given")
        for name in out:
            if not name or any(c in name for c in " ,/[]"):
                raise ValueError(f"bad device name {name!r} (no spaces, commas, slashes or brackets)")
        return out


def export_results(store: MeasurementStore, space: str | SearchSpace, results: Mapping[str, tuple[np.ndarray, dict]],
                   path) -> int:
    """Write the tidy table of :meth:`RayFarm.measure`'s devices, named as in the farm (``jetson-orin``, not the
    store's ``jetson-orin/local-...[settings]``), for ``help-nas meta-train --measurements``; returns the rows."""
    from ..data.tables import write_measurements

    name = get_space(space).name

    def records():
        for device, (_, info) in results.items():
            stored = info["device"] + (f"[{info['settings']}]" if info["settings"] else "")
            for r in store.records(name, info["device"]):
                if r["device"] == stored:
                    yield {**r, "device": device}

    return write_measurements(path, records())


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast on a head that does not answer (``ray.init`` retries a wrong address for many minutes)."""
    target = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local" or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise RuntimeError(f"cannot reach the Ray head at {address!r} ({err}); start it with "
                           f"'ray start --head --port={port}' or check the address") from None


def _kill(ray, host: _Host) -> None:
    try:
        ray.kill(host.actor, no_restart=True)
    except Exception:  # already gone
        pass


def _short(err: BaseException) -> str:
    """The first line of a Ray error (its tracebacks are long)."""
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    cause = getattr(err, "cause", None)
    if cause is not None and str(cause).strip():
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}"
    return lines[0] if lines else type(err).__name__
