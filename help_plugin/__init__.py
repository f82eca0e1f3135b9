"""help-plugin: a meta-learned, hardware-adaptive latency predictor (HELP) for NAS frameworks."""
from .data import DeviceSplit, LatencyDataset, SPLITS, get_split, load_help_data, load_measurements
from .estimator import LatencyEstimator, NotFittedError
from .help import HELPEstimator
from .spaces import SearchSpace, available_spaces, get_space

__version__ = "0.1.0"

__all__ = ["LatencyEstimator", "NotFittedError", "HELPEstimator", "SearchSpace", "get_space", "available_spaces",
           "LatencyDataset", "DeviceSplit", "SPLITS", "get_split", "load_help_data", "load_measurements"]
