"""HELPEstimator: the meta-learned, hardware-adaptive latency predictor."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import LatencyDataset, get_split, load_help_data
from .estimator import LatencyEstimator
from .meta import METHODS, PoolBasisLearner, make_learner
from .ridge import RidgeHead
from .spaces import SearchSpace, get_space
from .validation import check_latencies, check_reference_spread, check_same_length

log = logging.getLogger(__name__)

PRETRAINED_DIR = Path(__file__).parent / "pretrained"


class HELPEstimator(LatencyEstimator):
    """Latency predictor meta-trained on a device pool, adapted to a new device from few measurements.

    Typical use::

        est = HELPEstimator.pretrained("nasbench201")
        ref_ms = [measure(a) for a in est.reference_archs]          # 10 measurements
        est.adapt(reference_latencies_ms=ref_ms, archs=few, latencies_ms=few_ms)
        est.predict(archs)                                           # -> np.ndarray [n] in ms

    Args:
        space: search space name or instance.
        device: a name for the target device (informational, saved with the estimator).
        method: ``"help+"`` (default; pool-basis network + closed-form ridge head), ``"help"``
            (the paper: hardware embedding, z modulator, Meta-SGD), ``"meta-sgd"`` or ``"maml"``.
        **options: hyper-parameters of the method (see ``PoolBasisConfig``/``GradientMetaConfig``).
    """

    def __init__(self, space: str | SearchSpace, device: str | None = None, method: str = "help+", **options):
        self.space = get_space(space)
        self.device = device
        self.method = method
        self.options = options

    # ------------------------------------------------------------------ meta-training
    @classmethod
    def meta_train(cls, space: str | SearchSpace, data: LatencyDataset | None = None,
                   train_devices: Sequence[str] | None = None, valid_devices: Sequence[str] = (),
                   *, split: str | None = None, arch_rows: np.ndarray | None = None,
                   method: str = "help+", device: str | None = None, progress: bool = False,
                   **options) -> "HELPEstimator":
        """Meta-train on a device pool and return the (not yet adapted) estimator.

        ``data`` defaults to HELP's published data for ``space``; devices default to the named
        ``split`` (or the space's default split). ``arch_rows`` restricts meta-training to those
        architectures (rows of ``data``), e.g. to keep evaluation architectures unseen.
        """
        est = cls(space, device=device, method=method, **options)
        return est.meta_fit(data, train_devices, valid_devices, split=split, arch_rows=arch_rows, progress=progress)

    def meta_fit(self, data: LatencyDataset | None = None, train_devices: Sequence[str] | None = None,
                 valid_devices: Sequence[str] = (), *, split: str | None = None,
                 arch_rows: np.ndarray | None = None, progress: bool = False) -> "HELPEstimator":
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
        t0 = time.perf_counter()
        self.learner_ = make_learner(self.method, self.space, **self.options)
        self.learner_.meta_fit(data, train_devices, valid_devices, arch_rows=arch_rows, progress=progress)
        self.meta_train_seconds_ = time.perf_counter() - t0
        self.reference_indices_ = data.archs[data.reference_rows].copy()
        self.train_devices_ = tuple(train_devices)
        self.valid_devices_ = tuple(valid_devices)
        self.head_ = None
        self.n_measurements_ = None
        self.reference_latencies_ms_ = None
        log.info("meta-trained %s on %s in %.1f s", self.method, self.space.name, self.meta_train_seconds_)
        return self

    @classmethod
    def pretrained(cls, space: str, device: str | None = None) -> "HELPEstimator":
        """The model this project meta-trained on HELP's default split for ``space``."""
        space = get_space(space).name
        path = PRETRAINED_DIR / f"{space}.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"no pretrained model for {space!r} at {path}")
        est = cls.load(path)
        est.device = device
        return est

    # ------------------------------------------------------------------ adaptation
    def _check_meta_trained(self) -> None:
        if getattr(self, "learner_", None) is None:
            raise RuntimeError("HELPEstimator is not meta-trained: use HELPEstimator.pretrained() or meta_train()")

    @property
    def reference_archs(self) -> list:
        """The fixed architectures a new device must time first (canonical form)."""
        self._check_meta_trained()
        return [self.space.format(r) for r in self.reference_indices_]

    def adapt(self, reference_latencies_ms: Any, archs: Any = None, latencies_ms: Any = None) -> "HELPEstimator":
        """Adapt to the target device.

        Args:
            reference_latencies_ms: ``[n_reference]`` ms of :attr:`reference_archs`, in order.
            archs, latencies_ms: optional further measured architectures and their ms (few shots).
        """
        self._check_meta_trained()
        ref_ms = check_latencies(reference_latencies_ms, "reference_latencies_ms")
        if len(ref_ms) != len(self.reference_indices_):
            raise ValueError(f"expected {len(self.reference_indices_)} reference latencies, got {len(ref_ms)}")
        check_reference_spread(ref_ms)
        if archs is None and latencies_ms is not None or archs is not None and latencies_ms is None:
            raise ValueError("pass both archs and latencies_ms, or neither")
        if archs is None:
            shot_idx, shot_ms = np.zeros((0, self.space.arch_length), np.int64), np.zeros(0)
        else:
            shot_idx = self.space.to_indices(archs)
            shot_ms = check_latencies(latencies_ms)
            check_same_length(shot_idx, shot_ms, "archs", "latencies_ms")
        t0 = time.perf_counter()
        self.head_ = self.learner_.adapt(self.reference_indices_, ref_ms, shot_idx, shot_ms)
        self.adapt_seconds_ = time.perf_counter() - t0
        self.n_measurements_ = len(ref_ms) + len(shot_ms)
        self.reference_latencies_ms_ = ref_ms.copy()  # re-timing them later shows device drift (demo.search_and_verify)
        self.shot_indices_, self.shot_latencies_ms_ = shot_idx.copy(), shot_ms.copy()  # kept for partial_fit
        return self

    def partial_fit(self, archs: Any, latencies_ms: Any) -> "HELPEstimator":
        """Adapt again with further measured architectures added to those it was adapted with.

        ``archs``/``latencies_ms``: ``[n]`` architectures and their ms on the same device, in the
        units of the earlier measurements (e.g. candidates a search verified near its limit, which
        sharpens the predictor where the search needs it).
        """
        self._check_fitted()
        if getattr(self, "shot_latencies_ms_", None) is None or self.reference_latencies_ms_ is None:
            raise ValueError("this estimator does not keep the measurements it was adapted with (a checkpoint saved "
                             "by an older version): adapt() it again with all of them")
        idx = self.space.to_indices(archs)
        ms = check_latencies(latencies_ms)
        check_same_length(idx, ms, "archs", "latencies_ms")
        return self.adapt(self.reference_latencies_ms_, np.concatenate([self.shot_indices_, idx]),
                          np.concatenate([self.shot_latencies_ms_, ms]))

    def fit(self, archs: Any, latencies_ms: Any) -> "HELPEstimator":
        """Adapt from measurements that include every reference architecture (sklearn-style)."""
        self._check_meta_trained()
        idx = self.space.to_indices(archs)
        ms = check_latencies(latencies_ms)
        check_same_length(idx, ms, "archs", "latencies_ms")
        keys = [self.space.canonical(r) for r in idx]
        ref_keys = [self.space.canonical(r) for r in self.reference_indices_]
        missing = [k for k in ref_keys if k not in keys]
        if missing:
            raise ValueError(f"fit() needs the {len(ref_keys)} reference architectures among archs; missing {missing[:3]}"
                             f"{' ...' if len(missing) > 3 else ''} (see .reference_archs)")
        ref_pos = [keys.index(k) for k in ref_keys]
        rest = np.setdiff1d(np.arange(len(idx)), ref_pos)
        return self.adapt(ms[ref_pos], idx[rest], ms[rest])

    # ------------------------------------------------------------------ prediction
    def predict(self, archs: Any, return_std: bool = False):
        """Latency in ms of each architecture, ``[n]`` (and its predictive std with ``return_std``).

        ``archs``: a sequence of architectures in any form the space accepts, or an index array
        ``[n, arch_length]`` (fastest).
        """
        self._check_fitted()
        idx = self.space.to_indices(archs)
        if isinstance(self.learner_, PoolBasisLearner):
            return self.head_.predict(self.learner_.basis(idx), return_std=return_std)
        mean = self.learner_.predict(self.head_, idx)
        if return_std:
            raise NotImplementedError(f"method {self.method!r} has no predictive uncertainty")
        return mean

    def predict_tensor(self, probs: torch.Tensor) -> torch.Tensor:
        """Differentiable latency (ms) from relaxed choices ``probs`` ``[n, arch_length, max_choice]``.

        A one-hot ``probs`` gives exactly :meth:`predict`; gradients flow to ``probs`` (for
        differentiable NAS). Any floating dtype; the result has ``probs``'s dtype. Available for additive spaces (``space.differentiable``).
        """
        self._check_fitted()
        if not self.space.differentiable:
            raise NotImplementedError(f"{self.space.name} has no relaxed encoding")
        costs = self.space.relaxed_costs(probs.to(torch.float64))
        enc = self.space.relaxed_encode(probs, costs).to(torch.float32)  # the predictor networks are float32
        if isinstance(self.learner_, PoolBasisLearner):
            return self.head_.predict_torch(self.learner_.basis_torch(enc, costs)).to(probs.dtype)
        return self.learner_.predict_torch(self.head_, enc).to(probs.dtype)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write a safetensors checkpoint (meta-trained model, plus the device head once adapted)."""
        self._check_meta_trained()
        meta, tensors = self.learner_.state()
        meta = {"kind": "HELPEstimator", "space": self.space.name, "method": self.method, "device": self.device,
                "learner": meta, "train_devices": list(self.train_devices_), "valid_devices": list(self.valid_devices_),
                "meta_train_seconds": self.meta_train_seconds_, "adapted": False}
        tensors = {f"learner.{k}": v for k, v in tensors.items()}
        tensors["reference_indices"] = torch.from_numpy(self.reference_indices_)
        if self.is_fitted:
            meta["adapted"] = True
            meta["n_measurements"] = self.n_measurements_
            tensors["reference_latencies_ms"] = torch.from_numpy(np.asarray(self.reference_latencies_ms_, np.float64))
            tensors["shot_indices"] = torch.from_numpy(np.asarray(self.shot_indices_, np.int64))
            tensors["shot_latencies_ms"] = torch.from_numpy(np.asarray(self.shot_latencies_ms_, np.float64))
            if isinstance(self.head_, RidgeHead):
                tensors.update({f"head.{k}": torch.from_numpy(np.atleast_1d(v)) for k, v in self.head_.state().items()})
            else:
                tensors.update({f"head.params.{k}": v for k, v in self.head_["params"].items()})
                tensors["head.hw"] = self.head_["hw"]
                tensors["head.lo_span"] = torch.tensor([self.head_["lo"], self.head_["span"]], dtype=torch.float64)
        save_checkpoint(path, meta, tensors)

    @classmethod
    def load(cls, path: str | Path) -> "HELPEstimator":
        meta, tensors = load_checkpoint(path)
        if meta.get("kind") != "HELPEstimator" or meta.get("method") not in METHODS:
            raise CheckpointError(f"{path} holds a {meta.get('kind')!r}/{meta.get('method')!r}, not a HELPEstimator")
        try:
            est = cls(meta["space"], device=meta.get("device"), method=meta["method"])
            sub = lambda p: {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}  # noqa: E731
            learner_cls = METHODS[meta["method"]][0]
            est.learner_ = learner_cls.from_state(est.space, meta["learner"], sub("learner."))
            est.options = dict(meta["learner"]["config"])
            est.reference_indices_ = tensors["reference_indices"].numpy()
            est.space.check_indices(est.reference_indices_)
            est.train_devices_ = tuple(meta["train_devices"])
            est.valid_devices_ = tuple(meta["valid_devices"])
            est.meta_train_seconds_ = meta.get("meta_train_seconds")
            est.head_, est.n_measurements_, est.reference_latencies_ms_ = None, None, None
            est.shot_indices_, est.shot_latencies_ms_ = None, None
            if meta.get("adapted"):
                est.n_measurements_ = int(meta["n_measurements"])
                if "reference_latencies_ms" in tensors:  # absent from older checkpoints
                    est.reference_latencies_ms_ = check_latencies(tensors["reference_latencies_ms"].numpy(),
                                                                  "reference_latencies_ms")
                if "shot_latencies_ms" in tensors:  # absent from older checkpoints
                    est.shot_indices_ = tensors["shot_indices"].numpy()
                    est.space.check_indices(est.shot_indices_)
                    est.shot_latencies_ms_ = check_latencies(tensors["shot_latencies_ms"].numpy(), "shot_latencies_ms")
                    check_same_length(est.shot_indices_, est.shot_latencies_ms_, "shot_indices", "shot_latencies_ms")
                if learner_cls is PoolBasisLearner:
                    est.head_ = RidgeHead.from_state({k: v.numpy() for k, v in sub("head.").items()})
                else:
                    lo, span = tensors["head.lo_span"].tolist()
                    est.head_ = {"params": sub("head.params."), "hw": tensors["head.hw"], "lo": lo, "span": span}
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{path} is an incomplete or incompatible HELPEstimator checkpoint: {err}") from err
        return est

    def __repr__(self) -> str:
        state = "adapted" if self.is_fitted else ("meta-trained" if getattr(self, "learner_", None) else "untrained")
        return f"HELPEstimator(space={self.space.name!r}, method={self.method!r}, device={self.device!r}) [{state}]"
