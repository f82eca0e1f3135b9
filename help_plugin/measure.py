"""Measuring latency on a real device: the local PyTorch CPU, or any black-box ``measure(arch) -> ms``.

Shared machines are noisy, so :class:`LocalTorchDevice` interleaves: it makes ``passes``
passes over *all* architectures (in a fresh random order each pass), times ``runs``
back-to-back forwards per architecture per pass and keeps their minimum, then reports the
median over passes. The Spearman correlation between the medians of the even and the odd
passes (``retest_rho``) measures the harness's own reliability: the ceiling any predictor
can reach on this device.
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


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class LocalTorchDevice:
    """PyTorch eager inference on this machine's CPU.

    Args:
        space: search space whose ``build_network`` makes the models.
        threads: ``torch.set_num_threads`` during timing.
        batch_size: images per forward.
        runs: back-to-back timed forwards per architecture per pass (the minimum is kept).
        passes: interleaved passes over all architectures (the median is reported).
        warmup: untimed forwards per architecture before the first pass.
    """

    BACKENDS = ("torch", "onnxruntime")

    def __init__(self, space: str | SearchSpace, threads: int = 1, batch_size: int = 1, runs: int = 3,
                 passes: int = 5, warmup: int = 2, seed: int = 0, backend: str = "torch"):
        if backend not in self.BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; available: {self.BACKENDS}")
        self.space = get_space(space)
        self.threads, self.batch_size, self.runs, self.passes, self.warmup, self.seed = (
            threads, batch_size, runs, passes, warmup, seed)
        self.backend = backend

    chunk_size = 25  # architectures measured (interleaved) and stored together

    @property
    def settings(self) -> str:
        """The timing protocol, part of the measurement-store key."""
        return f"passes={self.passes},runs={self.runs},warmup={self.warmup}"

    @property
    def device_id(self) -> str:
        """Stable id of (hardware, backend, threads, batch, dtype)."""
        import torch

        version = torch.__version__
        if self.backend == "onnxruntime":
            import onnxruntime

            version = f"ort-{onnxruntime.__version__}"
        key = f"{_cpu_name()}|{self.backend}-{version}|cpu|t{self.threads}|b{self.batch_size}|float32"
        prefix = "local-cpu" if self.backend == "torch" else "local-cpu-ort"
        return f"{prefix}-t{self.threads}-b{self.batch_size}-" + hashlib.sha1(key.encode()).hexdigest()[:8]

    def _runner(self, net, x) -> Callable[[], Any]:
        """A zero-argument callable that runs one inference of ``net`` on ``x`` with this backend."""
        if self.backend == "torch":
            return lambda: net(x)
        import io

        import onnxruntime as ort
        import torch

        buf = io.BytesIO()
        with warnings.catch_warnings():  # the TorchScript exporter needs only `onnx`; it warns it is legacy
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(net, (x,), buf, dynamo=False, input_names=["x"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        return lambda: session.run(None, feed)

    def measure(self, archs: Any, progress: bool = False) -> Measurements:
        import torch
        from tqdm.auto import tqdm

        idx = self.space.to_indices(archs)
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        rng = np.random.default_rng(self.seed)
        per_pass = np.zeros((self.passes, len(idx)))
        t_start = time.perf_counter()
        try:
            with torch.inference_mode():
                runners = [self._runner(self.space.build_network(row).eval(),
                                        torch.randn(self.batch_size, *self.space.input_size(row))) for row in idx]
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
