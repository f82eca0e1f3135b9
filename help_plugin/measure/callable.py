"""Any black box ``measure(arch) -> ms`` as a device: a phone over adb, a remote board, a simulator."""
from __future__ import annotations

import functools
import hashlib
import inspect
import time
import types
import uuid
from typing import Any, Callable

import numpy as np

from ..spaces import SearchSpace, get_space
from ..validation import check_latency
from .base import Device, Measurements

_SIMPLE = (str, bytes, int, float, bool, type(None))


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


class CallableDevice(Device):
    """Any black box ``measure_fn(arch) -> ms`` (a phone over adb, a remote board, a simulator).

    ``measure_fn`` receives the architecture in the space's canonical form (string or dict). A call
    that raises, returns NaN/inf/<= 0 or anything but a number, or runs past ``timeout_s`` stops the
    run with an error naming the architecture; everything measured before it is kept by
    :func:`help_plugin.measure.measure_archs`.

    Args:
        space: the search space of the architectures.
        measure_fn: ``arch -> ms``.
        name: the device's id in a measurement store (its results are stored and found under it). A device
            without a name gets an id unique to this object and cannot use a store.
        timeout_s: seconds one call may take.
        fingerprint: what the store checks under ``name`` (default: :func:`function_fingerprint` of
            ``measure_fn``). A store remembers the first fingerprint used under each name and refuses
            another one, so two different black boxes never share results; pass the stored fingerprint
            (the error names it) to keep using a name after editing ``measure_fn``.
    """

    chunk_size = 1  # store every measurement as soon as it arrives

    def __init__(self, space: str | SearchSpace, measure_fn: Callable[[Any], float], name: str | None = None,
                 timeout_s: float | None = None, fingerprint: str | None = None):
        if not callable(measure_fn):
            raise TypeError(f"measure_fn must be a function arch -> ms, got {measure_fn!r}")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if fingerprint is not None and (not isinstance(fingerprint, str) or not fingerprint):
            raise ValueError(f"fingerprint must be a non-empty string, got {fingerprint!r}")
        self.space = get_space(space)
        self.measure_fn = measure_fn
        self.name = name
        self.timeout_s = timeout_s
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
        from concurrent.futures import ThreadPoolExecutor
        from concurrent.futures import TimeoutError as FutureTimeout

        pool = ThreadPoolExecutor(max_workers=1)
        try:
            return pool.submit(self.measure_fn, arch).result(timeout=self.timeout_s)
        except FutureTimeout:
            raise TimeoutError(f"measure_fn took longer than {self.timeout_s} s") from None
        finally:
            pool.shutdown(wait=False)

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
                raise RuntimeError(f"measure_fn failed on {key!r}: {err}") from err
            values.append(check_latency(ms, f"measure_fn({key!r})"))
        lat = np.asarray(values)
        return Measurements(lat, lat[None, :], float("nan"), time.perf_counter() - t0)

    def __repr__(self) -> str:
        return f"CallableDevice({self.space.name!r}, {self.describe()}, name={self.name!r})"
