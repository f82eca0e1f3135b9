"""The interface of a meta-learning algorithm: what it learns from a device pool, and how a device adapts.

A :class:`MetaLearner` is meta-trained once on a pool of devices (:meth:`MetaLearner.meta_fit`) and then
adapts to any new device from that device's latencies of the fixed reference architectures plus a few
more (:meth:`MetaLearner.adapt`), returning a typed :class:`DeviceHead`: everything device-specific.
:class:`~help_plugin.predictors.HELPEstimator` holds one learner (its ``meta_model``) and one head.

Adding an algorithm = one module in this package with a ``MetaLearner`` subclass and its head,
registered in :data:`help_plugin.predictors.learners.METHODS`.
"""
from __future__ import annotations

import abc
import json
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from ...data import LatencyDataset
from ...spaces import SearchSpace
from ..calibration import HeldOut, MetaCalibration


class DeviceHead(abc.ABC):
    """What a learner adapted to one device: serialisable to tensors, nothing else."""

    @abc.abstractmethod
    def state(self) -> dict[str, torch.Tensor]:
        """The head as named tensors (for safetensors checkpoints)."""

    @classmethod
    @abc.abstractmethod
    def from_state(cls, tensors: dict[str, torch.Tensor]) -> "DeviceHead":
        """Inverse of :meth:`state`."""


@dataclass
class LearnerConfig:
    """Base of every learner's hyper-parameters (a dataclass; ``seed`` and ``train_threads`` are shared)."""

    train_threads: int = 1
    seed: int = 0

    @classmethod
    def from_options(cls, method: str, options: dict | None, preset: dict | None = None, **fixed) -> "LearnerConfig":
        """``cls(**preset, **options, **fixed)`` with a clear error for an unknown option."""
        names = {f.name for f in fields(cls)}
        unknown = set(options or {}) - names
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} for method {method!r}; it has {sorted(names)}")
        both = set(options or {}) & set(fixed)
        if both:
            raise ValueError(f"option(s) {sorted(both)} are the estimator's own parameters: set them there")
        return cls(**{**(preset or {}), **(options or {}), **fixed})

    def to_dict(self) -> dict:
        return asdict(self)

    def learned_settings(self, space: SearchSpace) -> dict:
        """The settings that change what a model of ``space`` learns from its pool, as JSON values (meta-calibration
        constants derived for them apply to any model with the same ones): all but ``seed`` (which draw) and
        ``train_threads``."""
        return {k: v for k, v in json.loads(json.dumps(self.to_dict())).items() if k not in ("seed", "train_threads")}


class MetaLearner(abc.ABC):
    """Meta-knowledge learned from a device pool (see the module docstring).

    Attributes after :meth:`meta_fit` (or :meth:`from_state`): ``reference_indices``
    ``[n_reference, arch_length]`` (the architectures every new device must time first),
    ``train_devices``, ``valid_devices``, ``meta_train_seconds``, ``calibration`` (the
    :class:`~help_plugin.predictors.calibration.MetaCalibration` constants of calibrated bounds where
    they were derived for this method and its settings (the shipped ones, set by ``HELPEstimator``); ``None``: the
    t-rule).
    """

    method: str = ""
    config_class: ClassVar[type[LearnerConfig]] = LearnerConfig
    head_class: ClassVar[type[DeviceHead]] = DeviceHead
    #: Whether :meth:`predict` can return a predictive standard deviation.
    has_std: ClassVar[bool] = False
    #: Whether :meth:`design_features` exists (the estimator can choose which architectures to measure).
    selects_shots: ClassVar[bool] = False

    def __init__(self, space: SearchSpace, config: LearnerConfig | None = None):
        self.space = space
        self.config = config or self.config_class()
        self.reference_indices = np.zeros((0, space.arch_length), np.int64)
        self.train_devices: tuple[str, ...] = ()
        self.valid_devices: tuple[str, ...] = ()
        self.meta_train_seconds: float | None = None
        self.calibration: MetaCalibration | None = None

    # -------------------------------------------------------------- meta-training
    def meta_fit(self, data: LatencyDataset, train_devices: Sequence[str], valid_devices: Sequence[str] = (),
                 arch_rows: np.ndarray | None = None, progress: bool = False) -> "MetaLearner":
        """Learn from ``data`` on the pool ``train_devices`` (+ ``valid_devices``), using ``arch_rows`` only."""
        from ..training import torch_threads

        t0 = time.perf_counter()
        rows = np.arange(len(data)) if arch_rows is None else np.asarray(arch_rows, dtype=np.int64)
        self.reference_indices = data.archs[data.reference_rows].copy()
        with torch_threads(self.config.train_threads):
            self._meta_fit(data, tuple(train_devices), tuple(valid_devices), rows, progress)
        self.train_devices, self.valid_devices = tuple(train_devices), tuple(valid_devices)
        self.meta_train_seconds = time.perf_counter() - t0
        self.calibration = None  # HELPEstimator.meta_fit sets the constants where they apply
        return self

    @abc.abstractmethod
    def _meta_fit(self, data: LatencyDataset, train_devices: tuple[str, ...], valid_devices: tuple[str, ...],
                  rows: np.ndarray, progress: bool) -> None:
        """Algorithm-specific meta-training on ``data.archs[rows]``."""

    # -------------------------------------------------------------- a device
    @abc.abstractmethod
    def adapt(self, reference_ms: np.ndarray, shot_idx: np.ndarray, shot_ms: np.ndarray) -> DeviceHead:
        """The head for a device from its ``reference_ms`` ``[n_reference]`` (of :attr:`reference_indices`)
        and further measured architectures ``shot_idx`` ``[k, arch_length]`` with ``shot_ms`` ``[k]``."""

    @abc.abstractmethod
    def predict(self, head: DeviceHead, indices: np.ndarray, return_std: bool = False):
        """Latency in ms ``[n]`` of ``indices`` ``[n, arch_length]`` on the head's device (and its std)."""

    def predict_one(self, head: DeviceHead, arch) -> float:
        """Latency in ms of one architecture in any form the space accepts (learners may take a faster path
        than :meth:`predict` on a batch of one)."""
        return float(self.predict(head, self.space.to_indices([arch]))[0])

    def predict_row(self, head: DeviceHead, row: np.ndarray) -> float:
        """Latency in ms of one valid index row ``[arch_length]`` (not checked again)."""
        return float(self.predict(head, np.asarray(row)[None])[0])

    def predict_tensor(self, head: DeviceHead, probs: torch.Tensor) -> torch.Tensor:
        """Differentiable latency (ms) ``[n]`` from relaxed choices ``probs`` ``[n, arch_length, max_choice]``."""
        raise NotImplementedError(f"method {self.method!r} has no differentiable prediction")

    def design_features(self, indices: np.ndarray) -> np.ndarray:
        """Features ``[n, P]`` of ``indices`` on which a device head is linear, for choosing which architectures to
        measure (:func:`~help_plugin.predictors.shot_design.greedy_design`); learners with them set
        :attr:`selects_shots`."""
        raise NotImplementedError(f"method {self.method!r} has no features to choose shots by")

    def leave_one_out(self, head: DeviceHead, reference_ms: np.ndarray, shot_idx: np.ndarray,
                      shot_ms: np.ndarray) -> HeldOut:
        """``head`` (adapted on these measurements) and heads adapted without one measurement each, for
        calibrated bounds; the rows count the references first, then the shots.

        Default: each shot left out in turn and the head adapted again (the reference archs stay: the
        hardware embedding needs all of them). A learner whose head can leave out any measurement, or
        predict many heads at once more cheaply, overrides this.
        """
        heads = [self.adapt(reference_ms, np.delete(shot_idx, i, axis=0), np.delete(shot_ms, i))
                 for i in range(len(shot_ms))]
        rows = [np.array([len(reference_ms) + i]) for i in range(len(shot_ms))]
        return HeldOut(rows, lambda idx: (self.predict(head, idx), np.stack([self.predict(h, idx) for h in heads])))

    # -------------------------------------------------------------- persistence
    @classmethod
    def upgrade_checkpoint(cls, path, meta: dict, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensors of a ``HELPEstimator`` checkpoint (``meta``: its header) saved by an earlier version of this
        method, in this version's layout (default: as they are)."""
        return tensors

    def state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """``(JSON-able meta, tensors)`` of the meta-trained learner."""
        meta, tensors = self._state()
        meta = {"config": self.config.to_dict(), "train_devices": list(self.train_devices),
                "valid_devices": list(self.valid_devices), "meta_train_seconds": self.meta_train_seconds,
                "calibration": None if self.calibration is None else self.calibration.to_dict(), **meta}
        return meta, {"reference_indices": torch.from_numpy(np.asarray(self.reference_indices, np.int64)), **tensors}

    @classmethod
    def from_state(cls, space: SearchSpace, meta: dict, tensors: dict[str, torch.Tensor]) -> "MetaLearner":
        self = cls(space, cls.config_class(**meta["config"]))
        self.reference_indices = tensors["reference_indices"].numpy()
        space.check_indices(self.reference_indices)
        self.train_devices, self.valid_devices = tuple(meta["train_devices"]), tuple(meta["valid_devices"])
        self.meta_train_seconds = meta.get("meta_train_seconds")
        if meta.get("calibration") is not None:
            self.calibration = MetaCalibration.from_dict(meta["calibration"])
        self._from_state(meta, tensors)
        return self

    def expected_state(self, tensors: dict) -> dict:
        """What :meth:`state` of this learner (as loaded) must hold: ``name -> (shape, dtype)``, built from its
        config and space (``None``: a tensor of ``tensors``, the learner's part of a checkpoint, whose shape this
        learner does not declare; ``None`` in a shape: any size, e.g. the number of reference architectures)."""
        declared = self._expected_state()
        spec = {"reference_indices": ((None, self.space.arch_length), torch.int64)}
        if declared is None:
            return {**{k: None for k in tensors}, **spec}
        return {**spec, **declared}

    def _expected_state(self) -> dict | None:
        """Algorithm-specific part of :meth:`expected_state` (default ``None``: not declared)."""
        return None

    @abc.abstractmethod
    def _state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """Algorithm-specific part of :meth:`state`."""

    @abc.abstractmethod
    def _from_state(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Algorithm-specific part of :meth:`from_state`."""

    def __repr__(self) -> str:
        state = f"pool of {len(self.train_devices) + len(self.valid_devices)}" if self.meta_train_seconds is not None \
            else "not meta-trained"
        return f"{type(self).__name__}(method={self.method!r}, space={self.space!r}) [{state}]"


def sub_state(tensors: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``tensors`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
