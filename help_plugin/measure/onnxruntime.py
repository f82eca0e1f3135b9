"""ONNX Runtime inference on this machine's CPU (backend ``"onnxruntime"``; ``pip install 'help-plugin[onnx]'``)."""
from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any, Callable

import numpy as np

from ..errors import DeviceError
from .base import LocalDevice, cpu_name, register_backend
from .torch_eager import prepare


def to_onnx(net, inputs: tuple, path=None) -> bytes:
    """Export ``net`` on ``inputs`` to ONNX with static shapes (the TorchScript exporter; inputs ``x0, x1, ...``).

    Returns the model bytes, also written to ``path`` when given.
    """
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter needs only `onnx`; it warns it is legacy
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, inputs, buf, dynamo=False, input_names=[f"x{i}" for i in range(len(inputs))])
    data = buf.getvalue()
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data


@register_backend
class OnnxRuntimeDevice(LocalDevice):
    """Each network exported to ONNX and run by ONNX Runtime's CPU execution provider (float32)."""

    backend = "onnxruntime"
    id_prefix = "local-cpu-ort"

    def _identity(self) -> tuple[str, str]:
        import onnxruntime

        return cpu_name(), onnxruntime.__version__

    def _options(self) -> str:
        return "cpu|float32"

    def _check_available(self) -> None:
        try:
            import onnx  # noqa: F401  (the exporter needs it)
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise DeviceError(f"the onnxruntime backend needs onnxruntime and onnx: pip install 'help-plugin[onnx]' "
                               f"({err})") from None

    @contextlib.contextmanager
    def _threads(self):
        yield  # ONNX Runtime's threads are a session option (below)

    def _runner(self, row: np.ndarray) -> Callable[[], Any]:
        import onnxruntime as ort

        net, inputs = prepare(self.space, row, self.batch_size)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        session = ort.InferenceSession(to_onnx(net, inputs), options, providers=["CPUExecutionProvider"])
        feed = {f"x{i}": t.numpy() for i, t in enumerate(inputs)}
        return lambda: session.run(None, feed)
