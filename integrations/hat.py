"""HAT (Hardware-Aware Transformers, ACL'20) adapter: any LatencyEstimator as HAT's latency predictor.

HAT (``mit-han-lab/hardware-aware-transformers`` on GitHub, a fairseq fork, not installable here)
searches SubTransformers with ``fairseq.evolution.Evolution``, which builds its latency constraint as::

    self.latency_predictor = LatencyPredictor(feature_norm=args.feature_norm, lat_norm=args.lat_norm,
                                              ckpt_path=args.ckpt_path)
    self.latency_predictor.load_ckpt()
    ...
    if self.latency_predictor.predict_lat(config) > self.latency_constraint: ...   # ms

``LatencyPredictor`` (HAT's ``latency_predictor.py``) is an MLP on 10 config features (utils'
``get_config_features``: embed dims, layer numbers, mean FFN dims, mean heads, mean arbitrary
encoder-decoder attention), each divided by ``feature_norm``, output times ``lat_norm`` (ms),
trained on about 2,000 measured SubTransformers of the target device (``lat-dataset-size: 2000``).

:class:`LatencyPredictor` here keeps that constructor (same keywords and defaults), ``load_ckpt()``
and ``predict_lat(config) -> ms``, but is backed by any :class:`~help_plugin.LatencyEstimator` for
the ``hat`` space (:class:`help_plugin.spaces.hat.HATTransformer`): by default the file at
``ckpt_path`` saved with ``HELPEstimator.save`` after adapting to the device from 10 reference + a
few measured SubTransformers. ``feature_norm``/``lat_norm`` and the training arguments only matter
to HAT's own MLP; they are accepted and kept for compatibility. Configs may be ``gene2config``'s
(6-entry lists) or a SubTransformer yml's (``layer_num`` entries); predictions are cached per
canonical config, because Evolution's rejection sampling asks about the same genes repeatedly.

Install into HAT's search without editing HAT::

    from integrations.hat import install
    install()                   # fairseq.evolution.LatencyPredictor -> ours; ckpt-path: an adapted estimator
    install(estimator=my_est)   # or bind an in-memory LatencyEstimator (ckpt_path is then ignored)

:class:`HATMLPEstimator` is HAT's own predictor recipe behind the LatencyEstimator interface, the
baseline HELP replaces (``benchmarks/hat_devices.py`` compares them on measured devices).
Nothing here imports fairseq; :func:`install` imports ``fairseq.evolution`` only when called.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from help_plugin.cache import PredictionCache
from help_plugin.estimator import LatencyEstimator
from help_plugin.meta import torch_threads
from help_plugin.models import mlp
from help_plugin.spaces import get_space
from help_plugin.spaces.hat import DECODER_LAYERS, EMBED_DIMS, ENCODER_LAYERS, ENDE_ATTN, FFN_DIMS, HEADS
from help_plugin.validation import check_latencies, check_same_length

log = logging.getLogger(__name__)

#: HAT's default ``--feature-norm`` (latency_predictor.py and every WMT config).
HAT_FEATURE_NORM = (640.0, 6.0, 2048.0, 6.0, 640.0, 6.0, 2048.0, 6.0, 6.0, 2.0)
#: Names of HAT's 10 features (utils.get_feature_info).
HAT_FEATURES = ("encoder_embed_dim", "encoder_layer_num", "encoder_ffn_embed_dim_avg",
                "encoder_self_attention_heads_avg", "decoder_embed_dim", "decoder_layer_num",
                "decoder_ffn_embed_dim_avg", "decoder_self_attention_heads_avg",
                "decoder_ende_attention_heads_avg", "decoder_arbitrary_ende_attn_avg")


def hat_features(archs: Any) -> np.ndarray:
    """HAT's 10 latency-predictor features of each architecture, ``[n, 10]`` float64 (not normalised).

    ``archs``: HAT configs (or anything the ``hat`` space accepts) or an index array ``[n, 40]``.
    Means run over active layers; the arbitrary attention -1/1/2 counts as 1/2/3 attended layers.
    """
    space = get_space("hat")
    idx = space.canonical_indices(space.to_indices(archs))
    n_dec = np.asarray(DECODER_LAYERS, dtype=np.float64)[idx[:, 15]]
    on = np.arange(6)[None, :] < n_dec[:, None]

    def mean(values, pos, mask=None):
        v = np.asarray(values, dtype=np.float64)[idx[:, pos:pos + 6]]
        return v.mean(1) if mask is None else (v * mask).sum(1) / mask.sum(1)

    attended = np.where(np.asarray(ENDE_ATTN) == -1, 1, np.asarray(ENDE_ATTN) + 1)
    return np.stack([
        np.asarray(EMBED_DIMS, dtype=np.float64)[idx[:, 0]], np.asarray(ENCODER_LAYERS, dtype=np.float64)[idx[:, 1]],
        mean(FFN_DIMS, 2), mean(HEADS, 8),
        np.asarray(EMBED_DIMS, dtype=np.float64)[idx[:, 14]], n_dec,
        mean(FFN_DIMS, 16, on), mean(HEADS, 22, on), mean(HEADS, 28, on), mean(attended, 34, on)], axis=1)


# ============================================================================ HAT's own predictor
class HATMLPEstimator(LatencyEstimator):
    """HAT's latency predictor (``latency_predictor.py``) as a LatencyEstimator: the baseline.

    Features: :func:`hat_features` divided by ``feature_norm``; target: ms / ``lat_norm``; an MLP
    ``10 -> hidden_dim -> (hidden_layer_num x hidden_dim) -> 1`` with ReLU, trained with Adam
    (``lr``) and MSE for ``train_steps`` steps on random batches of ``bsz`` — HAT's defaults.
    ``lat_norm=None`` uses the largest training latency (HAT sets 200-300 ms by hand per device).
    HAT trains on 80 % of ~2,000 measurements; here ``fit`` uses every measurement it is given.
    """

    def __init__(self, feature_norm: Sequence[float] = HAT_FEATURE_NORM, lat_norm: float | None = None,
                 hidden_dim: int = 400, hidden_layer_num: int = 3, train_steps: int = 5000, bsz: int = 128,
                 lr: float = 1e-5, seed: int = 0):
        self.space = get_space("hat")
        self.feature_norm = np.asarray(feature_norm, dtype=np.float64)
        if self.feature_norm.shape != (len(HAT_FEATURES),) or not (self.feature_norm > 0).all():
            raise ValueError(f"feature_norm must be {len(HAT_FEATURES)} positive numbers, got {list(feature_norm)}")
        if lat_norm is not None and not lat_norm > 0:
            raise ValueError(f"lat_norm must be a positive latency in ms, got {lat_norm!r}")
        self.lat_norm = lat_norm
        self.hidden_dim, self.hidden_layer_num, self.train_steps, self.bsz, self.lr, self.seed = (
            hidden_dim, hidden_layer_num, train_steps, bsz, lr, seed)

    def _x(self, archs) -> torch.Tensor:
        return torch.tensor(hat_features(archs) / self.feature_norm, dtype=torch.float32)

    def fit(self, archs: Any, latencies_ms: Any) -> "HATMLPEstimator":
        """Train on ``n >= 2`` measurements (``latencies_ms`` ``[n]`` ms)."""
        idx = self.space.to_indices(archs)
        ms = check_latencies(latencies_ms)
        check_same_length(idx, ms, "archs", "latencies_ms")
        if len(ms) < 2:
            raise ValueError(f"HATMLPEstimator.fit needs at least 2 measurements, got {len(ms)}")
        self.lat_norm_ = float(self.lat_norm or ms.max())
        x, y = self._x(idx), torch.tensor(ms / self.lat_norm_, dtype=torch.float32)
        torch.manual_seed(self.seed)
        self.net_ = nn.Sequential(*mlp([x.shape[1]] + [self.hidden_dim] * (self.hidden_layer_num + 1) + [1]),
                                  nn.Flatten(0))
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        with torch_threads(1):
            for _ in range(self.train_steps):
                b = torch.randperm(len(x), generator=gen)[:self.bsz]  # HAT: random.sample, no repeats
                loss = ((self.net_(x[b]) - y[b]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.net_.eval()
        self.n_measurements_ = len(ms)
        return self

    def predict(self, archs: Any) -> np.ndarray:
        """Predicted ms ``[n]`` (float64; HAT's MLP is unconstrained, so it can be <= 0 far from the data)."""
        self._check_fitted()
        with torch.inference_mode():
            return self.net_(self._x(self.space.to_indices(archs))).double().numpy() * self.lat_norm_


# ============================================================================ the drop-in
def _load_help_estimator(path: str) -> LatencyEstimator:
    from help_plugin.help import HELPEstimator

    return HELPEstimator.load(path)


class LatencyPredictor:
    """Drop-in for HAT's ``LatencyPredictor``: ``load_ckpt()``, then ``predict_lat(config) -> ms``.

    Args (HAT's, same names, order and defaults): ``feature_norm``, ``lat_norm``, ``ckpt_path``
    (here: an estimator saved with ``.save()``, adapted to the target device), ``lat_dataset_path``,
    ``feature_dim``, ``hidden_dim``, ``hidden_layer_num``, ``train_steps``, ``bsz``, ``lr`` — all
    but ``ckpt_path`` are kept for compatibility and unused.
    ``estimator``: an adapted LatencyEstimator of the ``hat`` space to use instead of ``ckpt_path``.
    ``loader``: ``path -> LatencyEstimator`` for ``load_ckpt`` (default ``HELPEstimator.load``).
    """

    #: Set by :func:`install` (``estimator=``) so that HAT's own ``LatencyPredictor(...)`` call uses it.
    default_estimator: LatencyEstimator | None = None
    cache_size = 100_000

    def __init__(self, feature_norm=HAT_FEATURE_NORM, lat_norm=None, ckpt_path=None,
                 lat_dataset_path="./latency_dataset/lat.tmp", feature_dim=10, hidden_dim=400, hidden_layer_num=3,
                 train_steps=5000, bsz=128, lr=1e-5, *, estimator: LatencyEstimator | None = None,
                 loader: Callable[[str], LatencyEstimator] | None = None):
        self.feature_norm = np.asarray(feature_norm, dtype=np.float64) if feature_norm is not None else None
        self.lat_norm = lat_norm
        self.ckpt_path = ckpt_path
        self.dataset_path = lat_dataset_path
        self.feature_dim, self.hidden_dim, self.hidden_layer_num = feature_dim, hidden_dim, hidden_layer_num
        self.train_steps, self.bsz, self.lr = train_steps, bsz, lr
        self.loader = loader or _load_help_estimator
        self.estimator = self._cache = None
        if estimator is not None or self.default_estimator is not None:
            self._bind(estimator if estimator is not None else self.default_estimator, "estimator")

    def _bind(self, est, source: str) -> None:
        self._check_estimator(est, source)
        self.estimator = est
        self._cache = PredictionCache(est.space, est.predict, self.cache_size)

    @staticmethod
    def _check_estimator(est, source: str) -> None:
        if not isinstance(est, LatencyEstimator):
            raise TypeError(f"{source} must be a help_plugin.LatencyEstimator, got {type(est).__name__}")
        if est.space.name != "hat":
            raise ValueError(f"{source} predicts the {est.space.name!r} space; HAT needs a 'hat' space estimator")
        if not est.is_fitted:
            raise ValueError(f"{source} is not adapted to a device yet (adapt()/fit() it on the target's "
                             "measurements, then save it)")

    def load_ckpt(self) -> None:
        """Load the estimator from ``ckpt_path`` (no-op when one was given or bound by :func:`install`)."""
        if self.estimator is not None:
            return
        if self.ckpt_path is None:
            raise ValueError("LatencyPredictor has no estimator and no ckpt_path to load one from")
        path = Path(self.ckpt_path)
        if path.suffix in (".pt", ".pth"):
            raise ValueError(f"{path} looks like HAT's own MLP checkpoint; the HELP drop-in loads an estimator "
                             "saved with HELPEstimator.save(...) (a .safetensors file) as ckpt-path")
        self._bind(self.loader(str(path)), f"the estimator in {path}")

    def predict_lat(self, config: dict) -> float:
        """Latency in ms of one HAT SubTransformer config (HAT's dict, as ``gene2config`` returns it)."""
        return float(self.predict_lats([config])[0])

    def predict_lats(self, configs: Sequence[dict]) -> np.ndarray:
        """Latency in ms of several configs, ``[n]``, batched; cached per canonical config."""
        if self.estimator is None:
            raise RuntimeError("LatencyPredictor: call load_ckpt() first (or pass estimator=)")
        return self._cache(self.estimator.space.to_indices(list(configs)))


def install(estimator: LatencyEstimator | None = None, module: Any = None) -> Any:
    """Make HAT's evolutionary search use :class:`LatencyPredictor`; returns the class it replaced.

    Rebinds ``LatencyPredictor`` in ``module`` (default: HAT's ``fairseq.evolution``, imported now),
    which ``Evolution.__init__`` looks up when it builds its predictor. With ``estimator`` the
    installed class uses that adapted estimator and ignores ``ckpt_path``; otherwise set HAT's
    ``--ckpt-path`` to an estimator file saved with ``.save()``. Restore with
    ``module.LatencyPredictor = previous``.
    """
    if module is None:
        if importlib.util.find_spec("fairseq") is None:
            raise ImportError("fairseq is not importable: run from HAT's repository "
                              "(github.com/mit-han-lab/hardware-aware-transformers), or pass module=")
        try:
            module = importlib.import_module("fairseq.evolution")
        except ModuleNotFoundError as err:
            raise ImportError(f"fairseq.evolution not found ({err}); the PyPI fairseq is not HAT's fork") from err
    if not hasattr(module, "LatencyPredictor"):
        raise AttributeError(f"{getattr(module, '__name__', module)!r} has no LatencyPredictor to replace")
    cls = LatencyPredictor
    if estimator is not None:
        LatencyPredictor._check_estimator(estimator, "estimator")
        cls = type("BoundLatencyPredictor", (LatencyPredictor,), {"default_estimator": estimator,
                                                                   "__doc__": LatencyPredictor.__doc__})
    previous = module.LatencyPredictor
    module.LatencyPredictor = cls
    log.info("%s.LatencyPredictor -> %s", getattr(module, "__name__", module), cls.__name__)
    return previous
