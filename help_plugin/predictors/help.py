"""HELPEstimator: the meta-learned, hardware-adaptive latency predictor."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..checkpoint import FORMAT_1, CheckpointError, load_checkpoint, rebuilding
from ..data import LatencyDataset, get_split, load_help_data
from ..spaces import SearchSpace, get_space
from ..validation import check_latencies, check_reference_spread, check_same_length
from .base import LatencyEstimator, NotFittedError
from .calibration import HeldOut, MetaCalibration, shipped_constants
from .learners import METHODS, MetaLearner, make_learner
from .learners.base import sub_state
from .shot_design import SELECTIONS, greedy_design

log = logging.getLogger(__name__)

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"


class HELPEstimator(LatencyEstimator):
    """Latency predictor meta-trained on a device pool, adapted to a new device from few measurements.

    Typical use::

        est = HELPEstimator.pretrained("nasbench201")
        ref_ms = [measure(a) for a in est.reference_archs]          # 10 measurements
        est.adapt(reference_latencies_ms=ref_ms, archs=few, latencies_ms=few_ms)
        est.predict(archs)                                           # -> np.ndarray [n] in ms

    Args:
        space: search space name or instance.
        method: ``"help+"`` (default; pool LUTs + closed-form evidence head), ``"help"``
            (the paper: hardware embedding, z modulator, Meta-SGD), ``"meta-sgd"`` or ``"maml"``.
        meta_model: the meta-trained :class:`~help_plugin.predictors.learners.MetaLearner` (set by
            :meth:`meta_fit`, :meth:`meta_train` and :meth:`pretrained`); ``None`` until then.
        options: hyper-parameters of the method for :meth:`meta_fit` (the fields of its config,
            e.g. ``PoolBasisConfig``: ``{"groups": ["flops", "luts"], "links": ["log"]}``).
        seed: seed of meta-training.
        device: a name for the target device (informational, saved with the estimator).

    Fitted attributes (after :meth:`adapt` / :meth:`fit`): ``head_`` (the typed device head),
    ``n_measurements_``, ``reference_latencies_ms_`` ``[n_reference]``, ``shot_indices_``
    ``[k, arch_length]``, ``shot_latencies_ms_`` ``[k]``, ``adapt_seconds_``, ``shot_selection_``
    (``"design"`` when any shot was chosen by this estimator's :meth:`select_shots`, else ``"random"``: which
    meta-calibration constants the bounds use).

    Calibrated bounds (:meth:`predict_upper`) come from the learner's leave-one-out heads
    (:meth:`~help_plugin.predictors.learners.MetaLearner.leave_one_out`) with the multipliers of
    ``meta_model.calibration``: the shipped models carry constants derived by leave-one-device-out on
    their pools (``benchmarks/meta_calibration.py``), and so does a model meta-trained here with the same settings
    on a space they were derived on (:func:`~help_plugin.predictors.calibration.shipped_constants`); any other
    uses the t-rule (:func:`~help_plugin.predictors.calibration.t_multiplier`).
    """

    def __init__(self, space: str | SearchSpace = "nasbench201", method: str = "help+",
                 meta_model: MetaLearner | None = None, options: dict | None = None, seed: int = 0,
                 device: str | None = None):
        self.space = space
        self.method = method
        self.meta_model = meta_model
        self.options = options
        self.seed = seed
        self.device = device

    # ------------------------------------------------------------------ meta-training
    @classmethod
    def meta_train(cls, space: str | SearchSpace, data: LatencyDataset | None = None,
                   train_devices: Sequence[str] | None = None, valid_devices: Sequence[str] = (),
                   *, split: str | None = None, arch_rows: np.ndarray | None = None,
                   method: str = "help+", device: str | None = None, seed: int = 0, progress: bool = False,
                   **options) -> "HELPEstimator":
        """Meta-train on a device pool and return the (not yet adapted) estimator.

        ``data`` defaults to HELP's published data for ``space``; devices default to the named
        ``split`` (or the space's default split). ``arch_rows`` restricts meta-training to those
        architectures (rows of ``data``), e.g. to keep evaluation architectures unseen.
        ``**options`` are the method's hyper-parameters (see the ``options`` parameter).
        """
        est = cls(space, method=method, options=options or None, seed=seed, device=device)
        return est.meta_fit(data, train_devices, valid_devices, split=split, arch_rows=arch_rows, progress=progress)

    def meta_fit(self, data: LatencyDataset | None = None, train_devices: Sequence[str] | None = None,
                 valid_devices: Sequence[str] = (), *, split: str | None = None,
                 arch_rows: np.ndarray | None = None, progress: bool = False) -> "HELPEstimator":
        """Meta-train ``meta_model`` (replacing any) on ``data``'s pool devices; forgets any adaptation."""
        data = data if data is not None else load_help_data(self.space.name)
        if data.space.name != self.space.name:
            raise ValueError(f"data is for space {data.space.name!r}, estimator for {self.space.name!r}")
        if train_devices is None:
            s = get_split(split or self.space.name)
            train_devices, valid_devices = s.train, s.valid
        for d in list(train_devices) + list(valid_devices):
            data.device_index(d)  # clear error for unknown devices
        if len(data.reference_rows) < 2:
            raise ValueError("meta-training needs the data's reference architectures (reference_rows)")
        learner = make_learner(self.method, self.space, self.options, seed=self.seed)
        self.meta_model = learner.meta_fit(data, train_devices, valid_devices, arch_rows=arch_rows, progress=progress)
        learner.calibration = shipped_constants(PRETRAINED_DIR, learner)
        self._forget_device()
        log.info("meta-trained %s on %s in %.1f s", self.method, self.space.name, learner.meta_train_seconds)
        return self

    @classmethod
    def pretrained(cls, space: str, device: str | None = None) -> "HELPEstimator":
        """The model this project meta-trained on HELP's default split for ``space`` (not adapted)."""
        name = get_space(space).name
        path = PRETRAINED_DIR / f"{name}.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"no pretrained model for {name!r} at {path}")
        est = cls.load(path)
        est.device = device
        learner = est.meta_model
        learner.calibration = shipped_constants(PRETRAINED_DIR, learner)
        if learner.calibration is None:
            log.info("no calibration constants for the shipped %s %s model: bounds use the t-rule", name,
                     learner.method)
        return est

    # ------------------------------------------------------------------ adaptation
    def _learner(self) -> MetaLearner:
        learner = self.meta_model
        if learner is None:
            raise NotFittedError("HELPEstimator is not meta-trained: use HELPEstimator.pretrained() or meta_train()")
        if not isinstance(learner, MetaLearner) or learner.method != self.method:
            raise ValueError(f"meta_model must be a meta-trained MetaLearner of method {self.method!r}, got "
                             f"{learner!r}")
        if learner.space is not self.space and learner.space != self.space:
            raise ValueError(f"meta_model is for space {learner.space!r}, the estimator for {self.space!r}")
        return learner

    @property
    def reference_indices(self) -> np.ndarray:
        """The fixed architectures a new device must time first, as indices ``[n_reference, arch_length]``."""
        return self._learner().reference_indices.copy()

    @property
    def reference_archs(self) -> list:
        """The fixed architectures a new device must time first, in the space's canonical form."""
        return [self.space.format(r) for r in self._learner().reference_indices]

    def adapt(self, reference_latencies_ms: Any, archs: Any = None, latencies_ms: Any = None) -> "HELPEstimator":
        """Adapt to the target device.

        Args:
            reference_latencies_ms: ``[n_reference]`` ms of :attr:`reference_archs`, in order.
            archs, latencies_ms: optional further measured architectures and their ms (few shots).
        """
        learner = self._learner()
        n_ref = len(learner.reference_indices)
        ref_ms = check_latencies(reference_latencies_ms, "reference_latencies_ms")
        if len(ref_ms) != n_ref:
            raise ValueError(f"expected {n_ref} reference latencies, got {len(ref_ms)}")
        check_reference_spread(ref_ms)
        if (archs is None) != (latencies_ms is None):
            raise ValueError("pass both archs and latencies_ms, or neither")
        if archs is None:
            shot_idx, shot_ms = np.zeros((0, self.space.arch_length), np.int64), np.zeros(0)
        else:
            shot_idx = self.space.to_indices(archs)
            shot_ms = check_latencies(latencies_ms)
            check_same_length(shot_idx, shot_ms, "archs", "latencies_ms")
        t0 = time.perf_counter()
        self._forget_calibration()
        self.head_ = learner.adapt(ref_ms, shot_idx, shot_ms)
        self.adapt_seconds_ = time.perf_counter() - t0
        self.n_measurements_ = len(ref_ms) + len(shot_ms)
        self.reference_latencies_ms_ = ref_ms.copy()  # re-timing them later shows device drift (search.verified)
        self.shot_indices_, self.shot_latencies_ms_ = shot_idx.copy(), shot_ms.copy()  # kept for partial_fit
        designed = self.__dict__.get("_designed_keys", set())
        self.shot_selection_ = ("design" if any(r.tobytes() in designed for r in self.space.canonical_indices(shot_idx))
                                else "random")
        return self

    def select_shots(self, candidates: Any, n: int) -> np.ndarray:
        """Positions ``[n]`` in ``candidates`` of the ``n`` architectures to measure (besides
        :attr:`reference_archs`) that teach the head most: a greedy I-optimal design on the model's features
        (:mod:`~help_plugin.predictors.shot_design`). Needs no measurement; the reference architectures and
        repeats of a chosen network are never chosen. Only help+ has the features (other methods: draw shots at
        random).

        ``candidates``: ``[m]`` architectures in any form the space accepts (e.g.
        :func:`~help_plugin.predictors.shot_design.candidate_indices`).

        Raises ``ValueError`` if fewer than ``n`` distinct candidates are not reference architectures.
        """
        learner = self._learner()
        if not learner.selects_shots:
            raise ValueError(f"method {self.method!r} cannot choose its shots (help+ can): draw them at random")
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        idx = self.space.to_indices(candidates)
        keys = [r.tobytes() for r in self.space.canonical_indices(idx)]
        seen = {r.tobytes() for r in self.space.canonical_indices(learner.reference_indices)}
        available = np.zeros(len(idx), bool)
        for i, key in enumerate(keys):  # the first of each distinct network, references excluded
            available[i] = key not in seen
            seen.add(key)
        if available.sum() < n:
            raise ValueError(f"only {int(available.sum())} of the {len(idx)} candidates are distinct and not reference "
                             f"architectures; cannot choose {n}")
        chosen = greedy_design(learner.design_features(idx), learner.design_features(learner.reference_indices), n,
                               available)
        self.__dict__.setdefault("_designed_keys", set()).update(keys[i] for i in chosen)
        return chosen

    @property
    def selects_shots(self) -> bool:
        """Whether :meth:`select_shots` can choose the shots (help+; other methods draw them at random)."""
        return self._learner().selects_shots

    def partial_fit(self, archs: Any, latencies_ms: Any) -> "HELPEstimator":
        """Adapt again with further measured architectures added to those it was adapted with.

        ``archs``/``latencies_ms``: ``[n]`` architectures and their ms on the same device, in the
        units of the earlier measurements (e.g. candidates a search verified near its limit, which
        sharpens the predictor where the search needs it).
        """
        ref_ms, shot_idx, shot_ms = self._adaptation_data("adapt() it again with all of them")
        idx = self.space.to_indices(archs)
        ms = check_latencies(latencies_ms)
        check_same_length(idx, ms, "archs", "latencies_ms")
        return self.adapt(ref_ms, np.concatenate([shot_idx, idx]), np.concatenate([shot_ms, ms]))

    def _adaptation_data(self, remedy: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(reference ms, shot indices, shot ms)`` the estimator was adapted with."""
        self._check_fitted()
        if getattr(self, "shot_latencies_ms_", None) is None or self.reference_latencies_ms_ is None:
            raise ValueError("this estimator does not keep the measurements it was adapted with (a checkpoint saved "
                             f"by an older version): {remedy}")
        return self.reference_latencies_ms_, self.shot_indices_, self.shot_latencies_ms_

    def fit(self, archs: Any, latencies_ms: Any) -> "HELPEstimator":
        """Adapt from measurements that include every reference architecture (scikit-learn style)."""
        learner = self._learner()
        idx = self.space.to_indices(archs)
        ms = check_latencies(latencies_ms)
        check_same_length(idx, ms, "archs", "latencies_ms")
        position = {self.space.canonical(r): i for i, r in enumerate(idx)}
        ref_keys = [self.space.canonical(r) for r in learner.reference_indices]
        missing = [k for k in ref_keys if k not in position]
        if missing:
            raise ValueError(f"fit() needs the {len(ref_keys)} reference architectures among archs; missing {missing[:3]}"
                             f"{' ...' if len(missing) > 3 else ''} (see .reference_archs)")
        ref_pos = [position[k] for k in ref_keys]
        rest = np.setdiff1d(np.arange(len(idx)), ref_pos)
        return self.adapt(ms[ref_pos], idx[rest], ms[rest])

    def _forget_device(self) -> None:
        for name in ("head_", "n_measurements_", "reference_latencies_ms_", "shot_indices_", "shot_latencies_ms_",
                     "adapt_seconds_", "shot_selection_", "_designed_keys"):
            self.__dict__.pop(name, None)
        self._forget_calibration()

    def _held_out(self) -> tuple[HeldOut, np.ndarray, np.ndarray]:
        ref_ms, shot_idx, shot_ms = self._adaptation_data("adapt() it again for calibrated bounds")
        learner = self._learner()
        return (learner.leave_one_out(self.head_, ref_ms, shot_idx, shot_ms),
                np.concatenate([learner.reference_indices, shot_idx]), np.concatenate([ref_ms, shot_ms]))

    def _calibration_constants(self) -> MetaCalibration | None:
        constants = self._learner().calibration
        return None if constants is None else constants.for_shots(self.shot_selection_)

    # ------------------------------------------------------------------ prediction
    def predict(self, archs: Any, return_std: bool = False):
        """Latency in ms of each architecture, ``[n]`` (and its predictive std with ``return_std``).

        ``archs``: a sequence of architectures in any form the space accepts, or an index array
        ``[n, arch_length]`` (fastest).
        """
        self._check_fitted()
        return self._learner().predict(self.head_, self.space.to_indices(archs), return_std=return_std)

    def predict_one(self, arch: Any) -> float:
        """Latency in ms of a single architecture (help+: a lookup in the head's table, the parse remembered)."""
        self._check_fitted()
        return self._learner().predict_one(self.head_, arch)

    def predict_row(self, row: np.ndarray) -> float:
        """Latency in ms of one valid index row ``[arch_length]`` (array or list), not checked again (a search's
        single query)."""
        self._check_fitted()
        return self._learner().predict_row(self.head_, row)

    def predict_tensor(self, probs: torch.Tensor) -> torch.Tensor:
        """Differentiable latency (ms) from relaxed choices ``probs`` ``[n, arch_length, max_choice]``.

        A one-hot ``probs`` gives exactly :meth:`predict`; gradients flow to ``probs`` (for
        differentiable NAS). Any floating dtype; the result has ``probs``'s dtype. Available for
        additive spaces (``space.differentiable``).
        """
        self._check_fitted()
        if not self.space.differentiable:
            raise NotImplementedError(f"{self.space.name} has no relaxed encoding")
        return self._learner().predict_tensor(self.head_, probs)

    # ------------------------------------------------------------------ persistence
    def _get_state(self):
        learner = self._learner()
        learner_meta, learner_tensors = learner.state()
        meta = {"learner": learner_meta, "adapted": self.is_fitted}
        tensors = {f"learner.{k}": v for k, v in learner_tensors.items()}
        if self.is_fitted:
            meta["n_measurements"] = self.n_measurements_
            meta["shot_selection"] = self.shot_selection_
            tensors["reference_latencies_ms"] = torch.from_numpy(np.asarray(self.reference_latencies_ms_, np.float64))
            tensors["shot_indices"] = torch.from_numpy(np.asarray(self.shot_indices_, np.int64))
            tensors["shot_latencies_ms"] = torch.from_numpy(np.asarray(self.shot_latencies_ms_, np.float64))
            tensors.update({f"head.{k}": v for k, v in self.head_.state().items()})
        return meta, tensors

    def _restore(self, path, meta: dict, tensors: dict) -> None:
        if self.method in METHODS:  # a checkpoint of an earlier version in this version's layout
            tensors = METHODS[self.method].upgrade_checkpoint(path, meta, tensors)
        super()._restore(path, meta, tensors)

    def _set_state(self, meta, tensors) -> None:
        if self.method not in METHODS:
            raise CheckpointError(f"unknown method {self.method!r} (this version knows {sorted(METHODS)})")
        learner_cls = METHODS[self.method]
        self.meta_model = learner_cls.from_state(self.space, meta["learner"], sub_state(tensors, "learner."))
        if meta.get("adapted"):
            self.reference_latencies_ms_ = self.shot_indices_ = self.shot_latencies_ms_ = None
            if "reference_latencies_ms" in tensors:  # absent from checkpoints of early versions
                self.reference_latencies_ms_ = check_latencies(tensors["reference_latencies_ms"].numpy(),
                                                               "reference_latencies_ms")
            if "shot_latencies_ms" in tensors:  # absent from checkpoints of early versions
                self.shot_indices_ = tensors["shot_indices"].numpy()
                self.space.check_indices(self.shot_indices_)
                self.shot_latencies_ms_ = check_latencies(tensors["shot_latencies_ms"].numpy(), "shot_latencies_ms")
                check_same_length(self.shot_indices_, self.shot_latencies_ms_, "shot_indices", "shot_latencies_ms")
            self.head_ = learner_cls.head_class.from_state(sub_state(tensors, "head."))
            self.n_measurements_ = int(meta["n_measurements"])
            selection = meta.get("shot_selection", "random")  # absent from checkpoints of earlier versions
            if selection not in SELECTIONS:
                raise CheckpointError(f"shot_selection must be one of {list(SELECTIONS)}, got {selection!r}")
            self.shot_selection_ = selection

    def _expected_tensors(self, meta, tensors):
        learner = self.meta_model
        spec = {f"learner.{k}": v for k, v in learner.expected_state(sub_state(tensors, "learner.")).items()}
        if self.is_fitted:
            n_ref, length = len(learner.reference_indices), self.space.arch_length
            if self.reference_latencies_ms_ is not None:
                spec["reference_latencies_ms"] = ((n_ref,), torch.float64)
            if self.shot_latencies_ms_ is not None:
                k = len(self.shot_latencies_ms_)
                spec.update({"shot_indices": ((k, length), torch.int64), "shot_latencies_ms": ((k,), torch.float64)})
            # the head must be what adapt() makes from the stored measurements (any learner's head, shapes only)
            ref = self.reference_latencies_ms_ if self.reference_latencies_ms_ is not None else np.linspace(1, 2, n_ref)
            shots = ((self.shot_indices_, self.shot_latencies_ms_) if self.shot_latencies_ms_ is not None
                     else (np.zeros((0, length), np.int64), np.zeros(0)))
            template = learner.adapt(ref, *shots).state()
            spec.update({f"head.{k}": (tuple(v.shape), v.dtype) for k, v in template.items()})
        return spec

    @classmethod
    def load(cls, path: str | Path) -> "HELPEstimator":
        meta, tensors = load_checkpoint(path)
        if meta.get("format") == FORMAT_1:
            return cls._from_format_1(path, meta, tensors)
        return super().load(path)

    @classmethod
    def _from_format_1(cls, path, meta: dict, tensors: dict) -> "HELPEstimator":
        """Checkpoints of help-plugin 0.1 (``help-plugin/1``: no constructor parameters, no space settings)."""
        if meta.get("kind") != "HELPEstimator" or meta.get("method") not in METHODS:
            raise CheckpointError(f"{path} holds a {meta.get('kind')!r}/{meta.get('method')!r}, not a HELPEstimator")
        with rebuilding(path, "HELPEstimator"):
            est = cls(meta["space"], method=meta["method"], device=meta.get("device"))
            learner_meta = {**meta["learner"], "train_devices": meta["train_devices"],
                            "valid_devices": meta["valid_devices"], "meta_train_seconds": meta.get("meta_train_seconds")}
            tensors = {**{k: v for k, v in tensors.items() if k != "reference_indices"},
                       "learner.reference_indices": tensors["reference_indices"]}
            state = {"learner": learner_meta, "adapted": bool(meta.get("adapted")), "n_measurements": meta.get("n_measurements")}
            est._restore(path, state, tensors)
        return est
