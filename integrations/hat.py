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

``predict_lat`` returns the estimator's 95 % selection-aware latency bound (``confidence=0.95``, see
:class:`help_plugin.search.LatencyConstraint`), the value HAT's evolution compares with its
``latency_constraint``: its winner then meets the constraint on the device at that rate.
``confidence=None`` returns the mean prediction (HELP's rule; HAT's own predictor works that way).

Install into HAT's search without editing HAT::

    from help_plugin.integrations.hat import install
    install()                   # fairseq.evolution.LatencyPredictor -> ours; ckpt-path: an adapted estimator
    install(estimator=my_est)   # or bind an in-memory LatencyEstimator (ckpt_path is then ignored)
    install(confidence=None)    # HELP's rule: the mean prediction

:class:`help_plugin.predictors.baselines.HATMLPEstimator` is HAT's own predictor recipe behind the
LatencyEstimator interface, the baseline HELP replaces (``benchmarks/hat_devices.py`` compares them on
measured devices).
Nothing here imports fairseq; :func:`install` imports ``fairseq.evolution`` only when called.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..predictors import LatencyEstimator
from ..predictors.baselines.hat_mlp import HAT_FEATURE_NORM
from ..predictors.cache import PredictionCache
from ..search.constraint import checked_confidence, predict_with_bound

log = logging.getLogger(__name__)


# ============================================================================ the drop-in
def _load_help_estimator(path: str) -> LatencyEstimator:
    from ..predictors import HELPEstimator

    return HELPEstimator.load(path)


class LatencyPredictor:
    """Drop-in for HAT's ``LatencyPredictor``: ``load_ckpt()``, then ``predict_lat(config) -> ms``.

    Args (HAT's, same names, order and defaults): ``feature_norm``, ``lat_norm``, ``ckpt_path``
    (here: an estimator saved with ``.save()``, adapted to the target device), ``lat_dataset_path``,
    ``feature_dim``, ``hidden_dim``, ``hidden_layer_num``, ``train_steps``, ``bsz``, ``lr`` — all
    but ``ckpt_path`` are kept for compatibility and unused.
    ``estimator``: an adapted LatencyEstimator of the ``hat`` space to use instead of ``ckpt_path``.
    ``confidence``: ``predict_lat`` returns the selection-aware latency bound at this confidence (default
    0.95); ``None``: the mean prediction (HELP's rule).
    ``loader``: ``path -> LatencyEstimator`` for ``load_ckpt`` (default ``HELPEstimator.load``).
    """

    cache_size = 100_000

    def __init__(self, feature_norm=HAT_FEATURE_NORM, lat_norm=None, ckpt_path=None,
                 lat_dataset_path="./latency_dataset/lat.tmp", feature_dim=10, hidden_dim=400, hidden_layer_num=3,
                 train_steps=5000, bsz=128, lr=1e-5, *, estimator: LatencyEstimator | None = None,
                 confidence: float | None = 0.95, loader: Callable[[str], LatencyEstimator] | None = None):
        self.feature_norm = np.asarray(feature_norm, dtype=np.float64) if feature_norm is not None else None
        self.lat_norm = lat_norm
        self.ckpt_path = ckpt_path
        self.dataset_path = lat_dataset_path
        self.feature_dim, self.hidden_dim, self.hidden_layer_num = feature_dim, hidden_dim, hidden_layer_num
        self.train_steps, self.bsz, self.lr = train_steps, bsz, lr
        self.loader = loader or _load_help_estimator
        self.confidence = checked_confidence(confidence)
        self.estimator = self._cache = None
        if estimator is not None:
            self._bind(estimator, "estimator")

    def _bind(self, est, source: str) -> None:
        self._check_estimator(est, source)
        self.estimator = est
        self._cache = PredictionCache(est.space, lambda idx: predict_with_bound(est, idx, self.confidence)[1],
                                      self.cache_size)

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
        """Latency bound in ms (see ``confidence``) of one HAT SubTransformer config (HAT's dict, as
        ``gene2config`` returns it)."""
        return float(self.predict_lats([config])[0])

    def predict_lats(self, configs: Sequence[dict]) -> np.ndarray:
        """Latency bounds in ms of several configs, ``[n]``, batched; cached per canonical config."""
        if self.estimator is None:
            raise RuntimeError("LatencyPredictor: call load_ckpt() first (or pass estimator=)")
        return self._cache(self.estimator.space.to_indices(list(configs)))


def install(estimator: LatencyEstimator | None = None, module: Any = None, confidence: float | None = 0.95) -> Any:
    """Make HAT's evolutionary search use :class:`LatencyPredictor`; returns the class it replaced.

    Rebinds ``LatencyPredictor`` in ``module`` (default: HAT's ``fairseq.evolution``, imported now),
    which ``Evolution.__init__`` looks up when it builds its predictor. With ``estimator`` the
    installed class uses that adapted estimator and ignores ``ckpt_path``; otherwise set HAT's
    ``--ckpt-path`` to an estimator file saved with ``.save()``. ``confidence``: of the bound it returns
    (``None``: the mean prediction). Restore with ``module.LatencyPredictor = previous``.
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
    defaults = {"confidence": checked_confidence(confidence)}
    if estimator is not None:
        LatencyPredictor._check_estimator(estimator, "estimator")
        defaults["estimator"] = estimator
    if estimator is not None or confidence != 0.95:
        def __init__(self, *args, **kwargs):  # HAT's Evolution constructs it with its own arguments only
            LatencyPredictor.__init__(self, *args, **{**defaults, **kwargs})

        cls = type("InstalledLatencyPredictor", (LatencyPredictor,), {"__init__": __init__,
                                                                      "__doc__": LatencyPredictor.__doc__})
    previous = module.LatencyPredictor
    module.LatencyPredictor = cls
    log.info("%s.LatencyPredictor -> %s", getattr(module, "__name__", module), cls.__name__)
    return previous
