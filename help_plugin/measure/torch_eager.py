"""PyTorch eager inference on this machine's CPU or a CUDA GPU (backend ``"torch"``)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import DeviceError
from .base import LocalDevice, cpu_name, register_backend

DTYPES = ("float32", "float16", "bfloat16")


def prepare(space, row: np.ndarray, batch_size: int, torch_device: str = "cpu", dtype: str = "float32"):
    """The network of index row ``row`` in eval mode and its example inputs, on ``torch_device`` and ``dtype``."""
    import torch

    dt = getattr(torch, dtype)
    net = space.build_network(row).eval().to(torch_device, dt)
    inputs = tuple(t.to(torch_device, dt) if t.is_floating_point() else t.to(torch_device)
                   for t in space.example_input(row, batch_size))
    return net, inputs


@register_backend
class TorchEagerDevice(LocalDevice):
    """PyTorch eager inference, on the CPU or a CUDA GPU.

    Args (besides :class:`~help_plugin.measure.base.LocalDevice`'s):
        torch_device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"`` (each timed inference ends with a device
            synchronisation).
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` weights and inputs.
    """

    backend = "torch"

    def __init__(self, space, threads: int = 1, batch_size: int = 1, runs: int = 3, passes: int = 5, warmup: int = 2,
                 seed: int = 0, steady_heap: bool = True, torch_device: str = "cpu", dtype: str = "float32"):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; available: {DTYPES}")
        if not isinstance(torch_device, str) or not (torch_device == "cpu" or torch_device.split(":")[0] == "cuda"):
            raise ValueError(f"unknown torch_device {torch_device!r}; use 'cpu', 'cuda' or 'cuda:N'")
        self.torch_device, self.dtype = torch_device, dtype
        super().__init__(space, threads, batch_size, runs, passes, warmup, seed, steady_heap)

    @property
    def id_prefix(self) -> str:
        return "local-cpu" if self.torch_device == "cpu" else "local-cuda"

    def _id_suffix(self) -> str:
        return "" if self.dtype == "float32" else f"-{self.dtype}"

    def _options(self) -> str:
        return f"{self.torch_device}|{self.dtype}"

    def _identity(self) -> tuple[str, str]:
        import torch

        if self.torch_device == "cpu":
            return cpu_name(), torch.__version__
        self._check_available()
        return f"{torch.cuda.get_device_name(self.torch_device)}|cuda-{torch.version.cuda}", torch.__version__

    def _check_available(self) -> None:
        import torch

        if self.torch_device != "cpu" and not torch.cuda.is_available():
            raise DeviceError(f"torch_device={self.torch_device!r} requested but torch.cuda.is_available() is False "
                               f"(torch {torch.__version__})")

    def _runner(self, row: np.ndarray) -> Callable[[], Any]:
        net, inputs = prepare(self.space, row, self.batch_size, self.torch_device, self.dtype)
        if self.torch_device == "cpu":
            return lambda: net(*inputs)
        import torch

        def run_and_sync():
            net(*inputs)
            torch.cuda.synchronize(self.torch_device)
        return run_and_sync
