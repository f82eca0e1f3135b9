"""help-plugin: a meta-learned, hardware-adaptive latency predictor (HELP) for NAS frameworks.

The data flow, one sub-package per stage::

    spaces/       an architecture and its search space: parse, format, encode, analytic costs, networks
    data/         latencies of many archs on many devices: HELP's layout, tidy tables, device splits
    predictors/   LatencyEstimator; HELPEstimator and its meta-learners; the baselines
    measure/      timing on real devices: the Device interface, backends, black boxes, the store
    search/       latency-constrained search, verified on a device; proxies; differentiable losses
    evaluation/   metrics, the benchmark protocol, plots
    integrations/ thin adapters for OFA, NNI, NASLib, HAT and MetaD2A
    cli/          the ``help-nas`` command, one module per sub-command

The names below are imported lazily, so ``import help_plugin`` (and ``help-nas --help``) stays fast.
"""
from __future__ import annotations

import importlib

__version__ = "0.2.0"

_EXPORTS = {
    "LatencyEstimator": "predictors", "NotFittedError": "predictors", "HELPEstimator": "predictors",
    "SearchSpace": "spaces", "get_space": "spaces", "available_spaces": "spaces",
    "LatencyDataset": "data", "DeviceSplit": "data", "SPLITS": "data", "get_split": "data",
    "load_help_data": "data", "load_measurements": "data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
