"""Any black box ``measure(arch) -> ms`` as a device: a phone over adb, a remote board, a simulator."""
from __future__ import annotations

import functools
import hashlib
import inspect
import math
import os
import pickle
import select
import signal
import sys
import threading
import time
import types
import uuid
from typing import Any, Callable

import numpy as np

from ..errors import DeviceError
from ..spaces import SearchSpace, get_space
from ..validation import check_latency
from .base import Device, Measurements

_SIMPLE = (str, bytes, int, float, bool, type(None))
#: Seconds a killed worker gets between SIGTERM and SIGKILL.
_KILL_GRACE_S = 1.0
ISOLATIONS = ("process", "thread")


def _stable(value, depth: int = 0) -> str:
    """A text of ``value`` that is the same in every process: simple values and containers of them as
    their repr, code objects by their content, anything else by its type only."""
    if isinstance(value, _SIMPLE):
        return repr(value)
    if isinstance(value, types.CodeType):
        return _code_text(value, depth + 1)
    if depth < 3 and isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({','.join(_stable(v, depth + 1) for v in value)})"
    if depth < 3 and isinstance(value, (frozenset, set)):
        return f"{type(value).__name__}({','.join(sorted(_stable(v, depth + 1) for v in value))})"
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _code_text(code: types.CodeType, depth: int = 0) -> str:
    return "|".join([code.co_qualname if hasattr(code, "co_qualname") else code.co_name, code.co_code.hex(),
                     _stable(code.co_consts, depth), ",".join(code.co_names)])


def function_fingerprint(fn: Callable) -> str:
    """A short hash of what ``fn`` computes, as far as Python shows it: its module and qualified name, its
    source (else its byte code), constants, names and defaults, and the simple values (numbers, strings,
    tuples of them) it closes over, is a ``functools.partial`` of, or holds as attributes of its object (a bound
    method's ``self``, a callable instance). Two functions that differ only in other objects they close over
    (two device handles, two arrays) get the same fingerprint: name them."""
    parts = []
    while isinstance(fn, functools.partial):
        parts += [_stable(fn.args), _stable(tuple(sorted(fn.keywords.items())))]
        fn = fn.func
    target = fn if isinstance(fn, (types.FunctionType, types.MethodType)) else type(fn).__call__
    owner = getattr(fn, "__self__", None) if isinstance(fn, types.MethodType) else (
        None if isinstance(fn, types.FunctionType) else fn)
    if owner is not None and hasattr(owner, "__dict__"):
        parts.append(_stable(tuple(sorted((k, v) for k, v in vars(owner).items() if isinstance(v, _SIMPLE)))))
    parts.append(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}")
    code = getattr(target, "__code__", None)
    if code is not None:
        try:
            parts.append(inspect.getsource(target))
        except (OSError, TypeError):
            parts.append(_code_text(code))
        parts.append(_stable(getattr(target, "__defaults__", None)))
        parts.append(_stable(tuple(c.cell_contents for c in getattr(target, "__closure__", None) or ()
                                   if _has_contents(c))))
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:12]


def _has_contents(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # an empty cell (a variable assigned later)
        return False
    return True


class _CallFailed(Exception):
    """``measure_fn`` raised (in a worker process: its exception's type and message)."""


def _call_in_fork(fn: Callable, arg: Any, timeout_s: float) -> Any:
    """``fn(arg)`` in a forked child process (its own process group), killed with everything it started after
    ``timeout_s`` or when this process is interrupted. The child sees this process's memory as it is now;
    what it changes stays in the child. The result comes back pickled."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = 0
        try:
            os.close(read_fd)
            os.setpgid(0, 0)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                payload = (True, fn(arg))
            except BaseException as err:  # noqa: BLE001 - everything goes back to the caller
                payload = (False, f"{type(err).__name__}: {err}")
            try:
                data = pickle.dumps(payload)
            except Exception as err:  # noqa: BLE001
                data = pickle.dumps((False, f"returned {type(payload[1]).__name__}, which cannot be sent back: {err}"))
            with os.fdopen(write_fd, "wb") as out:
                out.write(data)
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        os.setpgid(pid, pid)  # also from here, so the group exists before any kill (no race with the child)
    except OSError:
        pass
    chunks, deadline, finished = [], time.monotonic() + timeout_s, False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([read_fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    finished = True
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        if not finished:
            _kill_group(pid)  # on timeout, and on Ctrl-C or any error here
    if not finished:
        raise TimeoutError(f"measure_fn took longer than {timeout_s} s; its worker process (pid {pid}) and what it "
                           "started were killed")
    status = os.waitpid(pid, 0)[1]
    if not chunks:
        how = (f"was killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exited with code {os.WEXITSTATUS(status)}")
        raise _CallFailed(f"its worker process {how} before returning")
    ok, value = pickle.loads(b"".join(chunks))
    if not ok:
        raise _CallFailed(value)
    return value


def _kill_group(pid: int) -> int:
    """Kill the child ``pid`` and its process group (SIGTERM, then SIGKILL for whatever is left after a grace
    period); returns the child's wait status (it is reaped)."""
    _signal_group(pid, signal.SIGTERM)
    end, status = time.monotonic() + _KILL_GRACE_S, None
    while status is None and time.monotonic() < end:
        done, st = os.waitpid(pid, os.WNOHANG)
        status = st if done else None
        if status is None:
            time.sleep(0.02)
    _signal_group(pid, signal.SIGKILL)  # the child if it ignored SIGTERM, and anything it started
    return status if status is not None else os.waitpid(pid, 0)[1]


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _call_in_thread(fn: Callable, arg: Any, timeout_s: float) -> Any:
    """``fn(arg)`` in a daemon thread: after ``timeout_s`` this returns (and the process can exit), but the call
    itself cannot be killed and runs on in the background."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn(arg)
        except BaseException as err:  # noqa: BLE001
            box["error"] = err

    thread = threading.Thread(target=target, name="help-plugin measure_fn", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"measure_fn took longer than {timeout_s} s; the call could not be killed (it runs in a "
                           "thread) and goes on in the background until it returns or this process exits")
    if "error" in box:
        raise box["error"]
    return box["value"]


class CallableDevice(Device):
    """Any black box ``measure_fn(arch) -> ms`` (a phone over adb, a remote board, a simulator).

    ``measure_fn`` receives the architecture in the space's canonical form (string or dict). A call
    that raises, returns NaN/inf/<= 0 or anything but a number, or runs past ``timeout_s`` stops the
    run with an error naming the architecture; everything measured before it is kept by
    :func:`help_plugin.measure.measure_archs`.

    How a call runs (``isolation``) decides what a timeout can do:

    * ``"process"`` (the default where ``os.fork`` exists: Linux, macOS): each call runs in a fork of this
      process, as it is at the call, in its own process group. A call past ``timeout_s`` (or interrupted by
      Ctrl-C) is killed together with everything it started (``adb``, ``ssh``, a simulator), and the caller
      goes on. Forking (not spawning) is what lets closures and lambdas run there: nothing is pickled but the
      result. The trade-offs: what the call changes in Python objects (a counter, a list, a cached client)
      stays in the fork; objects that depend on background threads of this process (some SSH/HTTP clients)
      do not work there: create them inside ``measure_fn``; and each call costs a fork (milliseconds to tens
      of milliseconds for a process holding torch).
    * ``"thread"`` (the fallback without ``fork``, e.g. Windows): the call runs in a daemon thread of this
      process and shares its objects; after ``timeout_s`` the caller gets a ``TimeoutError`` and the process
      can exit, but a thread cannot be killed: the call runs on in the background (the error says so).

    Args:
        space: the search space of the architectures.
        measure_fn: ``arch -> ms``.
        name: the device's id in a measurement store (its results are stored and found under it). A device
            without a name gets an id unique to this object and cannot use a store.
        timeout_s: seconds one call may take (default 600; ``None``: no limit, the call runs in the caller's
            thread).
        isolation: ``"process"`` or ``"thread"`` (see above); default ``"process"`` where ``os.fork`` exists.
        fingerprint: what the store checks under ``name`` (default: :func:`function_fingerprint` of
            ``measure_fn``). A store remembers the first fingerprint used under each name and refuses
            another one, so two different black boxes never share results; pass the stored fingerprint
            (the error names it) to keep using a name after editing ``measure_fn``.
    """

    chunk_size = 1  # store every measurement as soon as it arrives

    def __init__(self, space: str | SearchSpace, measure_fn: Callable[[Any], float], name: str | None = None,
                 timeout_s: float | None = 600.0, fingerprint: str | None = None, isolation: str | None = None):
        if not callable(measure_fn):
            raise TypeError(f"measure_fn must be a function arch -> ms, got {measure_fn!r}")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if fingerprint is not None and (not isinstance(fingerprint, str) or not fingerprint):
            raise ValueError(f"fingerprint must be a non-empty string, got {fingerprint!r}")
        if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                      or not 0 < timeout_s < math.inf):
            raise ValueError(f"timeout_s must be a positive number of seconds or None, got {timeout_s!r}")
        if isolation is None:
            isolation = "process" if hasattr(os, "fork") else "thread"
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        if isolation == "process" and not hasattr(os, "fork"):
            raise ValueError("isolation='process' needs os.fork, which this platform lacks; use isolation='thread'")
        self.space = get_space(space)
        self.measure_fn = measure_fn
        self.name = name
        self.timeout_s = timeout_s
        self.isolation = isolation
        self._fingerprint = fingerprint
        self._unnamed_id = f"callable-unnamed-{uuid.uuid4().hex[:12]}"

    @property
    def device_id(self) -> str:
        return self.name if self.name is not None else self._unnamed_id

    @property
    def persistent_id(self) -> bool:
        return self.name is not None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = function_fingerprint(self.measure_fn)
        return self._fingerprint

    def describe(self) -> str:
        fn = self.measure_fn
        return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"

    def _call(self, arch):
        if self.timeout_s is None:
            return self.measure_fn(arch)
        run = _call_in_fork if self.isolation == "process" else _call_in_thread
        return run(self.measure_fn, arch, self.timeout_s)

    def measure(self, archs: Any, progress: bool = False) -> Measurements:
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        values = []
        for row in tqdm(self.space.to_indices(archs), desc="measuring", disable=not progress, leave=False):
            arch = self.space.format(row)
            key = self.space.canonical(row)
            try:
                ms = self._call(arch)
            except Exception as err:
                raise DeviceError(f"measure_fn failed on {key!r}: {err}") from err
            values.append(check_latency(ms, f"measure_fn({key!r})"))
        lat = np.asarray(values)
        return Measurements(lat, lat[None, :], float("nan"), time.perf_counter() - t0)

    def __repr__(self) -> str:
        return f"CallableDevice({self.space.name!r}, {self.describe()}, name={self.name!r})"
