"""Baseline latency predictors the benchmark compares HELP against, one module each.

Every baseline is a :class:`~help_plugin.predictors.LatencyEstimator`: ``fit(archs, latencies_ms)``
on the target device's measurements, ``predict(archs) -> np.ndarray[float64] [n]`` in ms. Baselines
that learn from a device pool also have ``meta_fit(data, train_devices, valid_devices=(), *,
arch_rows=None, progress=False)``; the pool is ``train_devices`` plus ``valid_devices``.

* :class:`FLOPsEstimator` (``"flops"``): ms = exp(b) * FLOPs ** a (a power law, fit in log space).
* :class:`ClosestDeviceEstimator` (``"closest-device"``): the pool device whose (predicted)
  latencies rank-correlate best with the target's samples, mapped to the target by a power law.
* :class:`ScratchMLPEstimator` (``"scratch-mlp"``): an MLP trained on the few samples only.
* :class:`BRPGCNEstimator` (``"brp-gcn"``): BRP-NAS's GCN latency predictor trained on many
  (``default_shots = 900``) samples of the target device only.
* :class:`TransferEmbeddingEstimator` (``"tl-et"``): Multi-Predict's transfer learning with a
  learned hardware-embedding table; a new device fine-tunes a new embedding row.
* :class:`HATMLPEstimator` (``"hat-mlp"``): HAT's own MLP on its 10 config features (``hat`` space only).

Adding a baseline = one module here with a LatencyEstimator subclass, and a line in :data:`BASELINES`.
"""
from .brp_gcn import BRPGCNEstimator
from .closest_device import ClosestDeviceEstimator
from .flops import FLOPsEstimator
from .hat_mlp import HATMLPEstimator, hat_features
from .scratch_mlp import ScratchMLPEstimator
from .tl_et import TransferEmbeddingEstimator

#: Benchmark name -> baseline class.
BASELINES: dict[str, type] = {
    "flops": FLOPsEstimator,
    "closest-device": ClosestDeviceEstimator,
    "scratch-mlp": ScratchMLPEstimator,
    "brp-gcn": BRPGCNEstimator,
    "tl-et": TransferEmbeddingEstimator,
    "hat-mlp": HATMLPEstimator,
}

__all__ = ["BASELINES", "FLOPsEstimator", "ClosestDeviceEstimator", "ScratchMLPEstimator", "BRPGCNEstimator",
           "TransferEmbeddingEstimator", "HATMLPEstimator", "hat_features"]
