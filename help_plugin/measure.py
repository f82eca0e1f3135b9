"""Measuring latency on a real device: the local PyTorch CPU, or any black-box ``measure(arch) -> ms``.

Shared machines are noisy, so :class:`LocalTorchDevice` interleaves: it makes ``passes``
passes over *all* architectures (in a fresh random order each pass), times ``runs``
back-to-back forwards per architecture per pass and keeps their minimum, then reports the
median over passes. The Spearman correlation between the medians of the even and the odd
passes (``retest_rho``) measures the harness's own reliability: the ceiling any predictor
can reach on this device.

Allocator state is part of what a timing measures. With glibc's default ``malloc``, large tensors
are mmap-ed and their pages handed back to the kernel when freed, and the threshold for that moves
with the process's history, so the same network timed at different moments of one process runs
with or without a page fault per activation: on a 2-vCPU VM, FBNet's reference networks timed
0.88-0.92x as long in a process's later timing sessions as in its first, NAS-Bench-201 at batch 16
0.84-0.88x (``benchmarks/timing_drift_checks.py``). :func:`set_steady_heap` fixes glibc's thresholds
once per process, so every session times the steady state (the minor page faults per session drop
from ~10^5-10^6 to ~0).
"""
from __future__ import annotations

import hashlib
import logging
import platform
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy.stats import spearmanr

from .spaces import SearchSpace, get_space
from .validation import check_latencies

log = logging.getLogger(__name__)


@dataclass
class Measurements:
    """``latency_ms`` ``[n]`` (median over passes), ``per_pass_ms`` ``[passes, n]``, ``retest_rho``."""

    latency_ms: np.ndarray
    per_pass_ms: np.ndarray
    retest_rho: float
    seconds: float


# glibc mallopt parameters (malloc.h) and the values set_steady_heap sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_THRESHOLD_BYTES, _MMAP_THRESHOLD_BYTES = 1 << 30, 32 << 20  # 32 MiB: glibc's maximum mmap threshold
_steady_heap_state: bool | None = None


def _glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def set_steady_heap() -> bool:
    """Make glibc keep freed memory for reuse (trim threshold 1 GiB, mmap threshold 32 MiB), once per process.

    Afterwards tensors up to 32 MiB come from the heap and freed memory is not returned to the
    kernel, so forwards stop page-faulting and timings no longer depend on what the process did
    before. Process-wide and irreversible (the memory the process holds may stay higher); returns
    False, changing nothing, where the C library is not glibc (macOS, Windows, musl).
    """
    global _steady_heap_state
    if _steady_heap_state is None:
        _steady_heap_state = False
        if _glibc():
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            _steady_heap_state = bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
                                      and libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))
            log.info("glibc malloc: trim threshold %d B, mmap threshold %d B (%s)", _TRIM_THRESHOLD_BYTES,
                     _MMAP_THRESHOLD_BYTES, "set" if _steady_heap_state else "mallopt refused")
    return _steady_heap_state


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class LocalTorchDevice:
    """PyTorch inference on this machine: eager on the CPU or a CUDA GPU, or ONNX Runtime on the CPU.

    Args:
        space: search space whose ``build_network`` makes the models.
        threads: ``torch.set_num_threads`` during timing (intra-op threads for ONNX Runtime).
        batch_size: inputs per forward.
        runs: back-to-back timed forwards per architecture per pass (the minimum is kept).
        passes: interleaved passes over all architectures (the median is reported).
        warmup: untimed forwards per architecture before the first pass.
        backend: ``"torch"`` (eager) or ``"onnxruntime"`` (CPU execution provider).
        torch_device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"`` (torch backend; each timed forward ends
            with a device synchronisation).
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` weights and inputs (torch backend).
        steady_heap: call :func:`set_steady_heap` before timing (default), so that timings do not depend
            on the allocator's history in this process; part of :attr:`settings` when it takes effect.
    """

    BACKENDS = ("torch", "onnxruntime")
    DTYPES = ("float32", "float16", "bfloat16")

    def __init__(self, space: str | SearchSpace, threads: int = 1, batch_size: int = 1, runs: int = 3,
                 passes: int = 5, warmup: int = 2, seed: int = 0, backend: str = "torch",
                 torch_device: str = "cpu", dtype: str = "float32", steady_heap: bool = True):
        if backend not in self.BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; available: {self.BACKENDS}")
        if dtype not in self.DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; available: {self.DTYPES}")
        if not (torch_device == "cpu" or torch_device.split(":")[0] == "cuda"):
            raise ValueError(f"unknown torch_device {torch_device!r}; use 'cpu', 'cuda' or 'cuda:N'")
        if backend == "onnxruntime" and (torch_device != "cpu" or dtype != "float32"):
            raise ValueError(f"the onnxruntime backend times float32 on the CPU; got torch_device={torch_device!r}, "
                             f"dtype={dtype!r}")
        self.space = get_space(space)
        self.threads, self.batch_size, self.runs, self.passes, self.warmup, self.seed = (
            threads, batch_size, runs, passes, warmup, seed)
        self.backend, self.torch_device, self.dtype = backend, torch_device, dtype
        self.steady_heap = steady_heap

    chunk_size = 25  # architectures measured (interleaved) and stored together

    @property
    def settings(self) -> str:
        """The timing protocol (and the space's own input settings), part of the measurement-store key."""
        protocol = f"passes={self.passes},runs={self.runs},warmup={self.warmup}"
        if self.steady_heap and _glibc():
            protocol += ",heap=steady"
        extra = self.space.measurement_settings
        return f"{protocol},{extra}" if extra else protocol

    @property
    def device_id(self) -> str:
        """Stable id of (hardware, backend, threads, batch, dtype)."""
        import torch

        version = torch.__version__
        hardware = _cpu_name()
        if self.backend == "onnxruntime":
            import onnxruntime

            version = f"ort-{onnxruntime.__version__}"
        if self.torch_device != "cpu":
            hardware = f"{torch.cuda.get_device_name(self.torch_device)}|cuda-{torch.version.cuda}"
        key = f"{hardware}|{self.backend}-{version}|{self.torch_device}|t{self.threads}|b{self.batch_size}|{self.dtype}"
        prefix = "local-cuda" if self.torch_device != "cpu" else "local-cpu" if self.backend == "torch" else "local-cpu-ort"
        suffix = "" if self.dtype == "float32" else f"-{self.dtype}"
        return f"{prefix}-t{self.threads}-b{self.batch_size}{suffix}-" + hashlib.sha1(key.encode()).hexdigest()[:8]

    def _check_torch_device(self) -> None:
        import torch

        if self.torch_device != "cpu" and not torch.cuda.is_available():
            raise RuntimeError(f"torch_device={self.torch_device!r} requested but torch.cuda.is_available() is False "
                               f"(torch {torch.__version__})")

    def _prepare(self, row: np.ndarray) -> tuple[Any, tuple]:
        """The network of ``row`` and its example inputs, on this device and dtype."""
        import torch

        dtype = getattr(torch, self.dtype)
        net = self.space.build_network(row).eval().to(self.torch_device, dtype)
        inputs = tuple(t.to(self.torch_device, dtype) if t.is_floating_point() else t.to(self.torch_device)
                       for t in self.space.example_input(row, self.batch_size))
        return net, inputs

    def _runner(self, net, inputs: tuple) -> Callable[[], Any]:
        """A zero-argument callable that runs one inference of ``net`` on ``inputs`` with this backend."""
        if self.backend == "torch":
            if self.torch_device == "cpu":
                return lambda: net(*inputs)
            import torch

            def run_and_sync():
                net(*inputs)
                torch.cuda.synchronize(self.torch_device)
            return run_and_sync
        import io

        import onnxruntime as ort
        import torch

        buf = io.BytesIO()
        with warnings.catch_warnings():  # the TorchScript exporter needs only `onnx`; it warns it is legacy
            warnings.simplefilter("ignore", DeprecationWarning)
            names = [f"x{i}" for i in range(len(inputs))]
            torch.onnx.export(net, inputs, buf, dynamo=False, input_names=names)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
        feed = {name: t.numpy() for name, t in zip(names, inputs)}
        return lambda: session.run(None, feed)

    def measure(self, archs: Any, progress: bool = False) -> Measurements:
        import torch
        from tqdm.auto import tqdm

        idx = self.space.to_indices(archs)
        self._check_torch_device()
        if self.steady_heap:
            set_steady_heap()
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        rng = np.random.default_rng(self.seed)
        per_pass = np.zeros((self.passes, len(idx)))
        t_start = time.perf_counter()
        try:
            with torch.inference_mode():
                runners = [self._runner(*self._prepare(row)) for row in idx]
            bar = tqdm(total=self.passes * len(idx), desc="measuring", disable=not progress, leave=False)
            with torch.inference_mode():
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
        finally:
            torch.set_num_threads(previous_threads)
        retest = float(spearmanr(np.median(per_pass[0::2], 0), np.median(per_pass[1::2], 0)).correlation) \
            if self.passes > 1 and len(idx) > 2 else float("nan")
        return Measurements(np.median(per_pass, 0), per_pass, retest, time.perf_counter() - t_start)


class CallableDevice:
    """Any black box ``measure_fn(arch) -> ms`` (a phone over adb, a remote board, a simulator).

    ``measure_fn`` receives the architecture in the space's canonical form (string or dict). A call
    that raises, returns NaN/inf/<= 0, or runs past ``timeout_s`` stops the run with an error naming
    the architecture; everything measured before it is kept by :func:`help_plugin.store.measure_archs`.
    """

    chunk_size = 1  # store every measurement as soon as it arrives
    settings = ""

    def __init__(self, space: str | SearchSpace, measure_fn: Callable[[Any], float], name: str = "callable",
                 timeout_s: float | None = None):
        self.space = get_space(space)
        self.measure_fn = measure_fn
        self.device_id = name
        self.timeout_s = timeout_s

    def _call(self, arch):
        if self.timeout_s is None:
            return self.measure_fn(arch)
        from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout

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
