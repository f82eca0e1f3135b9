"""The :class:`Device` interface, the interleaved timing harness of local backends, and the backend registry.

A device is anything that times architectures of one search space: ``device.measure(archs) ->
Measurements``, plus a ``device_id`` and ``settings`` that key its results in the measurement store
(:mod:`help_plugin.measure.store`). Local backends (PyTorch eager, ONNX Runtime, ...) share
:class:`LocalDevice`, the harness: shared machines are noisy, so it makes ``passes`` passes over *all*
architectures (in a fresh random order each pass), times ``runs`` back-to-back inferences per
architecture per pass and keeps their minimum, then reports the median over passes. The Spearman
correlation between the medians of the even and the odd passes (``retest_rho``) measures the
harness's own reliability: the ceiling any predictor can reach on this device.

Adding a backend = one module with a :class:`LocalDevice` subclass decorated with
:func:`register_backend`; ``help-nas measure --backend NAME`` then offers it.
"""
from __future__ import annotations

import abc
import contextlib
import hashlib
import platform
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from ..spaces import SearchSpace, get_space
from .heap import glibc, set_steady_heap


@dataclass
class Measurements:
    """``latency_ms`` ``[n]`` (median over passes), ``per_pass_ms`` ``[passes, n]``, ``retest_rho``, ``seconds``."""

    latency_ms: np.ndarray
    per_pass_ms: np.ndarray
    retest_rho: float
    seconds: float


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two ``[n]`` arrays (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).correlation)


class Device(abc.ABC):
    """Times architectures of one search space. See the module docstring."""

    space: SearchSpace
    #: Architectures measured together (interleaved) and committed to the store together.
    chunk_size: ClassVar[int] = 25

    @property
    @abc.abstractmethod
    def device_id(self) -> str:
        """Stable id of the hardware and everything that changes its latencies (part of the store key)."""

    @property
    def settings(self) -> str:
        """The timing protocol (part of the store key): results taken under other settings are not reused."""
        return ""

    @property
    def persistent_id(self) -> bool:
        """Whether :attr:`device_id` names this device in every process (required to use a measurement store)."""
        return True

    @property
    def fingerprint(self) -> str:
        """What the store checks besides :attr:`device_id` ("" for nothing): a device whose id is a user-chosen
        name has one, so that another device under the same name is detected instead of served its results."""
        return ""

    @abc.abstractmethod
    def measure(self, archs: Any, progress: bool = False) -> Measurements:
        """Time ``archs`` (any form the space accepts, or indices ``[n, arch_length]``)."""


#: backend name -> LocalDevice subclass.
BACKENDS: dict[str, type["LocalDevice"]] = {}


def register_backend(cls: type["LocalDevice"]) -> type["LocalDevice"]:
    """Register a :class:`LocalDevice` subclass under ``cls.backend`` (a class decorator)."""
    if not cls.backend:
        raise ValueError(f"{cls.__name__} has no backend name")
    BACKENDS[cls.backend] = cls
    return cls


def available_backends() -> list[str]:
    return sorted(BACKENDS)


def local_device(space: str | SearchSpace, backend: str = "torch", **settings) -> "LocalDevice":
    """This machine timed with ``backend`` (see :func:`available_backends`) and its ``settings``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {available_backends()}")
    import inspect

    cls = BACKENDS[backend]
    known = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "space")]
    unknown = [k for k in settings if k not in known]
    if unknown:
        raise ValueError(f"the {backend} backend has no setting {unknown[0]!r}; its settings: {known}")
    return cls(space, **settings)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class LocalDevice(Device):
    """This machine, timed by a backend with the interleaved harness (see the module docstring).

    Args:
        space: search space whose ``build_network`` makes the models.
        threads: intra-op threads during timing.
        batch_size: inputs per inference.
        runs: back-to-back timed inferences per architecture per pass (the minimum is kept).
        passes: interleaved passes over all architectures (the median is reported).
        warmup: untimed inferences per architecture before the first pass.
        seed: seed of the pass orders.
        steady_heap: call :func:`~help_plugin.measure.heap.set_steady_heap` before timing (default), so that
            timings do not depend on the allocator's history in this process; part of :attr:`settings`
            when it takes effect.
    """

    backend: ClassVar[str] = ""
    #: Prefix of :attr:`device_id` (what a reader sees first in the store).
    id_prefix: ClassVar[str] = "local"

    def __init__(self, space: str | SearchSpace, threads: int = 1, batch_size: int = 1, runs: int = 3,
                 passes: int = 5, warmup: int = 2, seed: int = 0, steady_heap: bool = True):
        self.space = get_space(space)
        self.threads, self.batch_size, self.runs, self.passes, self.warmup, self.seed = (
            threads, batch_size, runs, passes, warmup, seed)
        self.steady_heap = steady_heap
        self._check_settings()

    def _check_settings(self) -> None:
        for name in ("threads", "batch_size", "runs", "passes"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(self.warmup, (int, np.integer)) or self.warmup < 0:
            raise ValueError(f"warmup must be an int >= 0, got {self.warmup!r}")

    # -------------------------------------------------------------- what a backend provides
    @abc.abstractmethod
    def _runner(self, row: np.ndarray) -> Callable[[], Any]:
        """A zero-argument callable that runs one inference of the network of index row ``row``."""

    @abc.abstractmethod
    def _identity(self) -> tuple[str, str]:
        """``(hardware name, backend version)`` for :attr:`device_id`."""

    def _options(self) -> str:
        """The backend's own settings in the device-id key (e.g. ``"cpu|float32"``)."""
        return ""

    def _id_suffix(self) -> str:
        """Human-readable extras after ``-t{threads}-b{batch}`` in :attr:`device_id`."""
        return ""

    def _check_available(self) -> None:
        """Raise a clear error when the backend or its hardware is missing here."""

    @contextlib.contextmanager
    def _threads(self):
        """Set the backend's intra-op threads for the timing session (default: PyTorch's)."""
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    # -------------------------------------------------------------- identity
    @property
    def settings(self) -> str:
        """The timing protocol (and the space's own input settings), part of the measurement-store key."""
        protocol = f"passes={self.passes},runs={self.runs},warmup={self.warmup}"
        if self.steady_heap and glibc():
            protocol += ",heap=steady"
        extra = self.space.measurement_settings
        return f"{protocol},{extra}" if extra else protocol

    @property
    def device_id(self) -> str:
        """Stable id of (hardware, backend and its version and settings, threads, batch)."""
        hardware, version = self._identity()
        key = f"{hardware}|{self.backend}-{version}|{self._options()}|t{self.threads}|b{self.batch_size}"
        return (f"{self.id_prefix}-t{self.threads}-b{self.batch_size}{self._id_suffix()}-"
                + hashlib.sha1(key.encode()).hexdigest()[:8])

    # -------------------------------------------------------------- the harness
    def measure(self, archs: Any, progress: bool = False) -> Measurements:
        import scipy.stats  # noqa: F401  (imported before timing: a first import inside a session costs page faults)
        import torch
        from tqdm.auto import tqdm

        idx = self.space.to_indices(archs)
        self._check_available()
        if self.steady_heap:
            set_steady_heap()
        rng = np.random.default_rng(self.seed)
        per_pass = np.zeros((self.passes, len(idx)))
        t_start = time.perf_counter()
        with self._threads(), torch.inference_mode():
            runners = [self._runner(row) for row in idx]
            bar = tqdm(total=self.passes * len(idx), desc="measuring", disable=not progress, leave=False)
            for run in runners:
                for _ in range(self.warmup):
                    run()
            for p in range(self.passes):
                for i in rng.permutation(len(idx)):
                    best = np.inf
                    for _ in range(self.runs):
                        t0 = time.perf_counter()
                        runners[i]()
                        best = min(best, time.perf_counter() - t0)
                    per_pass[p, i] = best * 1e3
                    bar.update(1)
            bar.close()
        retest = rank_correlation(np.median(per_pass[0::2], 0), np.median(per_pass[1::2], 0)) \
            if self.passes > 1 and len(idx) > 2 else float("nan")
        return Measurements(np.median(per_pass, 0), per_pass, retest, time.perf_counter() - t_start)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.space!r}, threads={self.threads}, batch_size={self.batch_size}, "
                f"passes={self.passes})")
