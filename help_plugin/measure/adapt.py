"""Adapting a shipped model to a device you can measure: its reference archs + K shots, via the store."""
from __future__ import annotations

import numpy as np

from .base import Device
from .store import MeasurementStore, measure_archs


def adapt_on_device(space: str, device: Device, store: MeasurementStore | None = None, shots: int = 10,
                    seed: int = 0, progress: bool = False, estimator=None, shot_selection: str = "design"):
    """The shipped ``space`` model (or ``estimator``, a meta-trained HELPEstimator of that space) adapted to
    ``device`` from its reference archs + ``shots`` more, chosen by ``shot_selection``
    (:func:`~help_plugin.predictors.shot_design.choose_shots`: by default the ones the model learns most from).

    Measurements go through ``store`` (nothing is measured twice); returns the adapted
    :class:`~help_plugin.predictors.HELPEstimator`.
    """
    from ..predictors import HELPEstimator
    from ..predictors.shot_design import choose_shots

    if not isinstance(shots, (int, np.integer)) or shots < 0:
        raise ValueError(f"shots must be an int >= 0, got {shots!r}")
    if estimator is None:
        est = HELPEstimator.pretrained(space, device=device.device_id)
    elif estimator.space.name != device.space.name:
        raise ValueError(f"the model predicts space {estimator.space.name!r}, the device measures {device.space.name!r}")
    else:
        est, est.device = estimator, device.device_id
    refs = est.reference_indices
    few = choose_shots(est, shots, seed, shot_selection)
    ms, _ = measure_archs(device, np.concatenate([refs, few]), store, progress=progress)
    return est.adapt(ms[:len(refs)], few, ms[len(refs):])
