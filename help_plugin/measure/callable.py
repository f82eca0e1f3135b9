"""Any black box ``measure(arch) -> ms`` as a device: a phone over adb, a remote board, a simulator."""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from ..spaces import SearchSpace, get_space
from ..validation import check_latencies
from .base import Device, Measurements


class CallableDevice(Device):
    """Any black box ``measure_fn(arch) -> ms`` (a phone over adb, a remote board, a simulator).

    ``measure_fn`` receives the architecture in the space's canonical form (string or dict). A call
    that raises, returns NaN/inf/<= 0, or runs past ``timeout_s`` stops the run with an error naming
    the architecture; everything measured before it is kept by :func:`help_plugin.store.measure_archs`.
    """

    chunk_size = 1  # store every measurement as soon as it arrives

    def __init__(self, space: str | SearchSpace, measure_fn: Callable[[Any], float], name: str = "callable",
                 timeout_s: float | None = None):
        self.space = get_space(space)
        self.measure_fn = measure_fn
        self.name = name
        self.timeout_s = timeout_s

    @property
    def device_id(self) -> str:
        return self.name

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
            values.append(check_latencies([ms], f"measure_fn({key!r})")[0])
        lat = np.asarray(values)
        return Measurements(lat, lat[None, :], float("nan"), time.perf_counter() - t0)
