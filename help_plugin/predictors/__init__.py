"""Latency predictors: the :class:`LatencyEstimator` interface, :class:`HELPEstimator` and the baselines."""
from .base import ESTIMATOR_KINDS, LatencyEstimator, NotFittedError
from .baselines import BASELINES
from .help import HELPEstimator
from .learners import METHODS
from .training import torch_threads

__all__ = ["LatencyEstimator", "NotFittedError", "HELPEstimator", "BASELINES", "METHODS", "ESTIMATOR_KINDS",
           "torch_threads"]
