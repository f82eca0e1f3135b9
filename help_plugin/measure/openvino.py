"""OpenVINO inference on this machine's CPU (backend ``"openvino"``; ``pip install 'help-plugin[openvino]'``)."""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import numpy as np

from ..errors import DeviceError
from .base import LocalDevice, cpu_name, register_backend
from .onnxruntime import to_onnx
from .torch_eager import prepare

#: OpenVINO's inference precision hints on the CPU (``INFERENCE_PRECISION_HINT``).
PRECISIONS = ("f32", "bf16", "f16")


@register_backend
class OpenVinoDevice(LocalDevice):
    """Each network exported to ONNX, read and compiled by OpenVINO for its ``"CPU"`` device.

    Compiled with the latency performance hint, one stream and ``threads`` inference threads.

    Args (besides :class:`~help_plugin.measure.base.LocalDevice`'s):
        precision: OpenVINO's inference precision hint: ``"f32"`` (default), ``"bf16"`` or ``"f16"``
            (where the CPU supports them; part of the device id).
    """

    backend = "openvino"
    id_prefix = "local-cpu-ov"
    ov_device = "CPU"

    def __init__(self, space, threads: int = 1, batch_size: int = 1, runs: int = 3, passes: int = 5, warmup: int = 2,
                 seed: int = 0, steady_heap: bool = True, precision: str = "f32"):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; available: {PRECISIONS}")
        self.precision = precision
        super().__init__(space, threads, batch_size, runs, passes, warmup, seed, steady_heap)
        self._core = None

    def _check_available(self) -> None:
        try:
            import onnx  # noqa: F401  (the exporter needs it)
            import openvino  # noqa: F401
        except ImportError as err:
            raise DeviceError(f"the openvino backend needs openvino and onnx: pip install 'help-plugin[openvino]' "
                              f"({err})") from None

    def _ov_core(self):
        if self._core is None:
            self._check_available()
            import openvino as ov

            self._core = ov.Core()
        return self._core

    def _identity(self) -> tuple[str, str]:
        self._check_available()
        import openvino as ov

        return cpu_name(), ov.get_version()

    def _options(self) -> str:
        return f"{self.ov_device}|{self.precision}|latency"

    def _id_suffix(self) -> str:
        return "" if self.precision == "f32" else f"-{self.precision}"

    @contextlib.contextmanager
    def _threads(self):
        yield  # OpenVINO's threads are a compile property (below)

    def _runner(self, row: np.ndarray) -> Callable[[], Any]:
        core = self._ov_core()
        net, inputs = prepare(self.space, row, self.batch_size)
        model = core.read_model(to_onnx(net, inputs))
        compiled = core.compile_model(model, self.ov_device, {
            "INFERENCE_NUM_THREADS": self.threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": self.precision})
        request = compiled.create_infer_request()
        feed = [t.numpy() for t in inputs]
        return lambda: request.infer(feed)

    def __getstate__(self):  # the OpenVINO core is process-local: a copy or a pickle makes its own
        return {**self.__dict__, "_core": None}
