"""NNI 3.0 adapter: any :class:`help_plugin.LatencyEstimator` as the latency profiler of NNI's NAS strategies.

* :class:`HELPProfiler` is an ``nni.nas.profiler.Profiler``: ``profile(sample) -> ms`` for a sample
  (label -> chosen value) of an NNI hub model space, converted to an architecture of the estimator's space.
  What it profiles is the estimator's 95 % selection-aware latency bound (``confidence=0.95``, see
  :class:`help_plugin.search.LatencyConstraint`): a filter or penalty comparing it with a limit lets
  through samples that meet the limit on the device at that rate. ``confidence=None``: the mean prediction
  (HELP's rule; searches then overshoot the limit about half the time).
* Multi-trial: :func:`latency_filter` builds the ``Filter`` middleware for ``Chain(RegularizedEvolution(), ...)``
  or ``Chain(Random(), ...)``. NNI's ``Filter`` calls its function with the *model*
  (an ``ExecutableModelSpace``), not with a sample dict, so the filter reads ``model.sample``. It logs each
  model it rejects (in place of the strategy's "... has no metric. Skip.") and, at the end, how many.
* One-shot sampling strategies take NNI's own classes with a :class:`HELPProfiler` directly:
  ``RandomOneShot(filter=RangeProfilerFilter(profiler, max=limit_ms))`` and
  ``ENAS(penalty=SampleProfilerPenalty(profiler, baseline=limit_ms, scale=-1.0, nonlinear="positive"))``
  (ENAS adds the penalty to the *reward*, hence the negative scale; NNI's ENAS also needs
  ``reward_metric_name`` when the evaluator logs several metrics, tianshou 0.5 and gym, and
  pytorch-lightning 2.0: later versions unpack its train/val loader's batches and ENAS fails;
  ``pip install 'help-plugin[nni]'`` installs that set).
* Differentiable strategies: NNI's ``ExpectationProfilerPenalty`` is handed ``export_probs()``, whose
  probabilities are Python floats detached from the architecture weights, so the latency term has no
  gradient and does not change the search (``DARTS(penalty={"profiler": HELPProfiler(...), ...})`` raises
  an error saying so). :class:`DifferentiableLatencyPenalty` computes the expected latency (mean
  predictions) from the architecture weights themselves (``help_plugin.losses``), and :class:`LatencyDARTS`,
  :class:`LatencyGumbelDARTS` and :class:`LatencyProxyless` connect it to the strategy's weights. This is
  LA-DARTS' ``L_val + lambda * LAT(alpha)`` (``scale / baseline`` plays lambda's role): a soft pressure on
  the expected latency, not a limit; check the exported architecture against the limit with the profiler.

What maps onto which ``help_plugin`` space (``default_mapping`` picks it from the model space's type):

* ``NasBench201`` -> ``nasbench201``, exactly, for any constructor arguments: a sample is a cell, and the
  latency predicted is that of the NAS-Bench-201 benchmark network (16 stem channels, 5 cells per stage,
  CIFAR 32x32) with this cell, whatever proxy width/depth the NNI space is built with. NNI labels the edges
  ``cell/{source}_{target}`` and spells ``nor_conv_3x3`` as ``conv_3x3`` (``integrations.nb201_formats``).
* ``MobileNetV3Space(**OFA_MOBILENETV3_KWARGS)`` -> ``ofa`` (OFA MobileNetV3, ``ofa_mbv3_d234_e346_k357_w1.0``)
  at a fixed input ``resolution``. This configuration builds OFA's layers, channels, strides, activations
  and squeeze-excite placement; the sample must also choose ``stem_ks=3`` and ``s0_i0_ks=3`` (OFA's fixed
  stem and first block), else :class:`UnmappedChoiceError` names the label. Any other configuration is
  refused when the profiler is built, naming the first module that differs.
* ``ProxylessNAS(base_widths=FBNET_PROXYLESS_WIDTHS)`` -> ``fbnet`` (HW-NAS-Bench FBNet), a *conversion*, not
  an identity: the 22 layers, channels (16, 24, 32, 64, 112, 184, 352, head 1504) and block types match
  (``kKeE`` -> ``kK_eE``; layers beyond a stage's depth -> ``skip``; NNI's fixed first block, a separable
  3x3 conv, -> ``k3_e1``), and at a 128x128 input every stage from ``s2`` on runs at the feature-map size
  FBNet's CIFAR network has at 32x32. They differ in the stem and first block (at 64x64 in NNI), ReLU6 for
  ReLU, and NNI's stride-2 first ``s2`` block. The estimator predicts the FBNet network's latency: use it to
  rank and filter ProxylessNAS samples, not as their absolute milliseconds. FBNet has no 7x7 kernels, and
  ``ProxylessNAS`` has no argument to remove them: an active ``k7e3``/``k7e6`` choice raises
  :class:`UnmappedChoiceError` (or profiles as ``inf`` with ``unmapped="inf"``, which a latency filter then
  rejects, restricting the search to the FBNet-convertible samples).

Create a profiler from the model space *before* a one-shot strategy mutates it into a supernet.
"""
from __future__ import annotations

import logging
import math
import re
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from nni.nas.hub.pytorch import MobileNetV3Space, NasBench201, ProxylessNAS
from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty
from nni.nas.profiler import ExpressionProfiler, Profiler
from nni.nas.strategy import DARTS, GumbelDARTS, Proxyless, Strategy
from nni.nas.strategy.middleware import Chain, Filter
from torch import nn

from ..predictors import LatencyEstimator
from ..predictors.cache import PredictionCache
from ..search.constraint import checked_confidence, describe_rule, predict_with_bound
from ..search.losses import ExpectedLatencyLoss
from ..spaces import get_space
from ..spaces.fbnet import BLOCKS
from ..spaces.ofa import RESOLUTIONS
from .nb201_formats import EDGES, NNI_OPS, indices_to_nni, nni_to_indices

log = logging.getLogger(__name__)

__all__ = ["HELPProfiler", "UnmappedChoiceError", "NasBench201Mapping", "ProxylessFBNetMapping", "ModelLatencyFilter",
           "LatencyFilter", "MobileNetV3OFAMapping", "default_mapping", "latency_filter", "latency_chain",
           "DifferentiableLatencyPenalty", "LatencyDARTS", "LatencyGumbelDARTS", "LatencyProxyless",
           "FBNET_PROXYLESS_WIDTHS", "OFA_MOBILENETV3_KWARGS"]

#: ``ProxylessNAS(base_widths=...)`` whose channels are HW-NAS-Bench FBNet's (stem, 7 stages, head).
FBNET_PROXYLESS_WIDTHS = (16, 16, 24, 32, 64, 112, 184, 352, 1504)
#: ``MobileNetV3Space(**OFA_MOBILENETV3_KWARGS)`` is OFA's MobileNetV3 space (``ofa_mbv3_d234_e346_k357_w1.0``).
OFA_MOBILENETV3_KWARGS = dict(base_widths=(16, 16, 24, 40, 80, 112, 160, 960, 1280), width_multipliers=1.0,
                              expand_ratios=(3, 4, 6), depth_range=(2, 4),
                              squeeze_excite=("none", "none", "force", "none", "force", "force"))


class UnmappedChoiceError(ValueError):
    """A sampled value has no counterpart in the estimator's search space."""


def _value(sample: Mapping[str, Any], label: str, space: str) -> Any:
    try:
        return sample[label]
    except KeyError:
        raise ValueError(f"{space} sample has no label {label!r}; got labels {sorted(sample)}") from None


def _structure(module: nn.Module) -> list[str]:
    """``repr(module)`` lines without the settings that do not change the architecture (BN eps/momentum,
    dropout rate, number of classes)."""
    strip = re.compile(r",?\s*\b(eps|momentum|p|out_features)=[^,)]*")
    return [strip.sub("", line) for line in repr(module).splitlines()]


def _check_same_structure(model_space: nn.Module, reference: nn.Module, how: str) -> None:
    got, want = _structure(model_space), _structure(reference)
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            raise ValueError(f"this {type(model_space).__name__} differs from {how} at line {i + 1} of its repr: "
                             f"got {g.strip()!r}, expected {w.strip()!r}")
    if len(got) != len(want):
        raise ValueError(f"this {type(model_space).__name__} has {len(got)} repr lines, {how} has {len(want)}")


# ---------------------------------------------------------------------------------------------- mappings
class NasBench201Mapping:
    """NNI ``NasBench201`` sample (``cell/{source}_{target}`` -> NNI op name) <-> ``nasbench201`` indices."""

    space_name = "nasbench201"

    def __init__(self, prefix: str = "cell"):
        self.prefix = prefix
        self.labels = [f"{prefix}/{s}_{t}" for t, s in EDGES]  # help_plugin's edge order

    def check_model_space(self, model_space: nn.Module) -> None:
        labels = set(model_space.simplify())
        missing = [label for label in self.labels if label not in labels]
        if missing:
            raise ValueError(f"model space has no NAS-Bench-201 cell labels {missing}; its labels: {sorted(labels)}")
        size = (getattr(model_space, "channels", None), getattr(model_space, "num_modules", None))
        if size != (16, 5):
            log.info("model space with (stem channels, cells per stage) = %s: latency is predicted for the "
                     "NAS-Bench-201 network (16, 5) with the sampled cell", size)

    def to_arch(self, sample: Mapping[str, Any]) -> np.ndarray:
        """Index vector ``[6]`` of the sampled cell."""
        return nni_to_indices({label: _value(sample, label, "NasBench201") for label in self.labels}, self.prefix)

    def to_sample(self, arch: Any) -> dict[str, str]:
        """NNI sample dict of an architecture (any form ``nasbench201`` accepts)."""
        return indices_to_nni(get_space(self.space_name).parse(arch), self.prefix)

    def relax(self, dists: Mapping[str, torch.Tensor], values: Mapping[str, Sequence[Any]]) -> torch.Tensor:
        """Per-edge op probabilities ``[6, 5]`` from per-label distributions ``dists[label]`` over ``values[label]``."""
        rows = []
        for label in self.labels:
            p, vals = dists[label], list(values[label])
            unknown = [v for v in vals if v not in NNI_OPS]
            if unknown:
                raise UnmappedChoiceError(f"NasBench201 label {label!r} has candidate(s) {unknown} outside {NNI_OPS}")
            index = torch.tensor([NNI_OPS.index(v) for v in vals], device=p.device)
            rows.append(torch.zeros(len(NNI_OPS), dtype=p.dtype, device=p.device).index_add(0, index, p))
        return torch.stack(rows)


class ProxylessFBNetMapping:
    """``ProxylessNAS(base_widths=FBNET_PROXYLESS_WIDTHS)`` sample -> ``fbnet`` indices (see the module docstring)."""

    space_name = "fbnet"
    STAGES = (2, 3, 4, 5, 6)  # NNI stages with a depth choice (1..4 layers); s7 has one layer

    def check_model_space(self, model_space: nn.Module) -> None:
        _check_same_structure(model_space, ProxylessNAS(base_widths=FBNET_PROXYLESS_WIDTHS),
                              "ProxylessNAS(base_widths=FBNET_PROXYLESS_WIDTHS)")

    @staticmethod
    def _block(label: str, value: Any) -> int:
        m = re.fullmatch(r"k(\d)e(\d)", str(value))
        name = f"k{m.group(1)}_e{m.group(2)}" if m else None
        if name not in BLOCKS:
            raise UnmappedChoiceError(f"ProxylessNAS label {label!r} = {value!r} has no FBNet counterpart "
                                      f"(FBNet blocks: {BLOCKS})")
        return BLOCKS.index(name)

    def to_arch(self, sample: Mapping[str, Any]) -> np.ndarray:
        """Index vector ``[22]``: layer 0 is NNI's fixed first block (``k3_e1``), layers 1-20 stages s2-s6
        (4 each, ``skip`` beyond the sampled depth), layer 21 is ``s7_i0``."""
        out = [BLOCKS.index("k3_e1")]
        for stage in self.STAGES:
            depth = int(_value(sample, f"s{stage}_depth", "ProxylessNAS"))
            for i in range(4):
                label = f"s{stage}_i{i}"
                out.append(self._block(label, _value(sample, label, "ProxylessNAS")) if i < depth
                           else BLOCKS.index("skip"))
        out.append(self._block("s7_i0", _value(sample, "s7_i0", "ProxylessNAS")))
        return np.asarray(out, dtype=np.int64)


class MobileNetV3OFAMapping:
    """``MobileNetV3Space(**OFA_MOBILENETV3_KWARGS)`` sample -> ``ofa`` indices at input ``resolution``."""

    space_name = "ofa"

    def __init__(self, resolution: int = 224):
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution {resolution!r} is not an OFA resolution (128, 132, ..., 224)")
        self.resolution = int(resolution)

    def check_model_space(self, model_space: nn.Module) -> None:
        _check_same_structure(model_space, MobileNetV3Space(**OFA_MOBILENETV3_KWARGS),
                              "MobileNetV3Space(**OFA_MOBILENETV3_KWARGS)")

    def to_arch(self, sample: Mapping[str, Any]) -> np.ndarray:
        """Index vector ``[46]`` of the OFA subnet (NNI stage ``s1..s5`` -> OFA stage 0..4, its layer ``i`` ->
        OFA layer ``4 * stage + i``)."""
        for label in ("stem_ks", "s0_i0_ks"):
            if _value(sample, label, "MobileNetV3Space") != 3:
                raise UnmappedChoiceError(f"MobileNetV3Space label {label!r} = {sample[label]!r}: OFA's stem and "
                                          "first block use a 3x3 kernel")
        layers = [(stage, i) for stage in range(1, 6) for i in range(4)]
        arch = {"ks": [_value(sample, f"s{s}_i{i}_ks", "MobileNetV3Space") for s, i in layers],
                "e": [_value(sample, f"s{s}_i{i}_exp", "MobileNetV3Space") for s, i in layers],
                "d": [_value(sample, f"s{s}_depth", "MobileNetV3Space") for s in range(1, 6)],
                "r": self.resolution}
        return get_space(self.space_name).parse(arch)


def default_mapping(model_space: nn.Module):
    """The mapping for an NNI hub model space: NasBench201, ProxylessNAS or MobileNetV3Space."""
    for cls, mapping in ((NasBench201, NasBench201Mapping), (ProxylessNAS, ProxylessFBNetMapping),
                         (MobileNetV3Space, MobileNetV3OFAMapping)):
        if isinstance(model_space, cls):
            return mapping()
    raise TypeError(f"no default mapping for {type(model_space).__name__}; supported: NasBench201, ProxylessNAS, "
                    "MobileNetV3Space, or pass mapping= (an object with space_name, check_model_space, to_arch)")


# ---------------------------------------------------------------------------------------------- profiler
class HELPProfiler(ExpressionProfiler):
    """NNI profiler returning a :class:`~help_plugin.LatencyEstimator`'s latency bound (ms) of a sample.

    Args:
        model_space: the NNI model space (``NasBench201``, ``ProxylessNAS``, ``MobileNetV3Space``, see the
            module docstring for the configurations that map), before any one-shot mutation.
        estimator: a fitted estimator of the mapped space (``nasbench201``, ``fbnet`` or ``ofa``).
        mapping: sample -> architecture converter; default from the model space's type.
        unmapped: ``"raise"`` (default) or ``"inf"``: what :meth:`profile` does for a sample with a choice
            the estimator's space lacks (``UnmappedChoiceError``); ``inf`` fails every latency filter.
        confidence: :meth:`profile` returns the estimator's selection-aware latency bound at this confidence
            (default 0.95), for filters and penalties that compare it with a limit; ``None``: the mean
            prediction (HELP's rule).

    Predictions are cached per architecture (up to ``cache_size``), since strategies profile repeatedly.
    It is an ``ExpressionProfiler`` only so that NNI's ``ExpectationProfilerPenalty`` (what
    ``DARTS(penalty={...})`` builds) reaches :attr:`expression`, which raises an error pointing to
    :class:`LatencyDARTS`; it has no symbolic expression.
    """

    def __init__(self, model_space: nn.Module, estimator: LatencyEstimator, mapping=None, *,
                 unmapped: str = "raise", confidence: float | None = 0.95, cache_size: int = 100_000):
        super().__init__(model_space)
        if not isinstance(estimator, LatencyEstimator):
            raise TypeError(f"estimator must be a help_plugin.LatencyEstimator, got {type(estimator).__name__}")
        if unmapped not in ("raise", "inf"):
            raise ValueError(f"unmapped must be 'raise' or 'inf', got {unmapped!r}")
        self.mapping = mapping if mapping is not None else default_mapping(model_space)
        if estimator.space.name != self.mapping.space_name:
            raise ValueError(f"{type(model_space).__name__} samples map to {self.mapping.space_name!r}, "
                             f"but the estimator predicts {estimator.space.name!r}")
        if not estimator.is_fitted:
            raise ValueError(f"{type(estimator).__name__} is not fitted to a device; adapt it before profiling")
        self.mapping.check_model_space(model_space)
        self.estimator = estimator
        self.unmapped = unmapped
        self.confidence = checked_confidence(confidence)
        self._cache = PredictionCache(estimator.space, lambda idx: predict_with_bound(estimator, idx, self.confidence)[1],
                                      cache_size)

    @property
    def bound(self) -> str:
        """What :meth:`profile` returns, e.g. ``"95 % selection-aware bound"``."""
        return describe_rule(self.confidence)

    @property
    def expression(self):
        raise TypeError("HELPProfiler has no symbolic expression for NNI's ExpectationProfilerPenalty (what "
                        "DARTS(penalty={...}) builds), and that penalty would get export_probs(), floats detached from "
                        "the architecture weights, so its latency term would have no gradient. Use "
                        "LatencyDARTS(penalty=DifferentiableLatencyPenalty(profiler, baseline=...)) (or "
                        "LatencyGumbelDARTS / LatencyProxyless) from help_plugin.integrations.nni_nas")

    def to_arch(self, sample: Mapping[str, Any]) -> np.ndarray:
        """The estimator-space index vector of an NNI sample."""
        return self.mapping.to_arch(sample)

    def profile(self, sample: Mapping[str, Any]) -> float:
        """Latency bound in ms (see ``confidence``) of the architecture ``sample`` (label -> value) selects."""
        try:
            arch = self.mapping.to_arch(sample)
        except UnmappedChoiceError:
            if self.unmapped == "inf":
                return math.inf
            raise
        return float(self._cache(arch[None])[0])

    def __repr__(self) -> str:
        return f"HELPProfiler({type(self.mapping).__name__} -> {self.estimator!r}, {self.bound})"


# ---------------------------------------------------------------------------------------------- multi-trial
class ModelLatencyFilter:
    """Callable for NNI's ``Filter`` middleware: ``True`` if the model's profiled latency is in range.

    ``Filter`` passes the model (``ExecutableModelSpace``); the check profiles ``model.sample`` (with a
    :class:`HELPProfiler`: its selection-aware bound). Each rejection is logged; ``rejected`` counts them,
    ``checked`` all models, ``last_rejected`` is the latest rejected model.
    """

    def __init__(self, profiler: Profiler, max_latency_ms: float | None = None, min_latency_ms: float | None = None):
        if max_latency_ms is None and min_latency_ms is None:
            raise ValueError("give max_latency_ms, min_latency_ms or both")
        self.profiler, self.max_latency_ms, self.min_latency_ms = profiler, max_latency_ms, min_latency_ms
        self.checked = self.rejected = 0
        self.last_rejected = None

    def __call__(self, model) -> bool:
        ms = self.profiler.profile(model.sample)
        ok = ((self.max_latency_ms is None or ms <= self.max_latency_ms)
              and (self.min_latency_ms is None or ms >= self.min_latency_ms))
        self.checked += 1
        if not ok:
            self.rejected += 1
            self.last_rejected = model
            log.info("rejected by the latency limit: %s %.2f ms outside [%s, %s] ms (%s)", self.bound, ms,
                     self.min_latency_ms or 0, self.max_latency_ms or "inf", model.sample)
        return ok

    @property
    def bound(self) -> str:
        """What is compared with the range (the profiler's ``bound``, e.g. ``"95 % selection-aware bound"``)."""
        return getattr(self.profiler, "bound", "profiled latency")

    def __repr__(self) -> str:
        return f"ModelLatencyFilter({self.profiler!r}, max={self.max_latency_ms}, min={self.min_latency_ms})"


class _SkipRejectedModel(logging.Filter):
    """Drops NNI's "<model> has no metric. Skip." for the model the latency check just rejected (it said why)."""

    def __init__(self, check: ModelLatencyFilter):
        super().__init__()
        self.check = check

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == "%s has no metric. Skip." and record.args
                    and record.args[0] is self.check.last_rejected)


#: NNI's strategies that log "<model> has no metric. Skip." for a model a Filter rejected.
_NNI_STRATEGY_LOGGERS = ("nni.nas.strategy.evolution", "nni.nas.strategy.rl")


class LatencyFilter(Filter):
    """NNI's ``Filter`` middleware with a :class:`ModelLatencyFilter` that says what it rejects: one log line per
    rejected model (replacing the strategy's "... has no metric. Skip.") and a count when the strategy ends."""

    def __init__(self, check: ModelLatencyFilter, **filter_kwargs):
        super().__init__(check, **filter_kwargs)
        self._quiet = _SkipRejectedModel(check)

    def _initialize_engine(self, engine) -> None:
        super()._initialize_engine(engine)
        for name in _NNI_STRATEGY_LOGGERS:
            logging.getLogger(name).addFilter(self._quiet)

    def _cleanup(self) -> None:
        super()._cleanup()
        for name in _NNI_STRATEGY_LOGGERS:
            logging.getLogger(name).removeFilter(self._quiet)
        check = self.filter_fn
        log.info("latency limit: rejected %d of %d sampled models (%s outside [%s, %s] ms)", check.rejected,
                 check.checked, check.bound, check.min_latency_ms or 0, check.max_latency_ms or "inf")


def latency_filter(profiler: Profiler, max_latency_ms: float | None = None, min_latency_ms: float | None = None,
                   **filter_kwargs) -> LatencyFilter:
    """``Filter`` middleware rejecting models whose profiled latency is outside ``[min, max]`` ms.

    Use as ``Chain(RegularizedEvolution(), latency_filter(profiler, 20.0))``; ``filter_kwargs`` go to
    ``Filter`` (``metric_for_invalid``, ``patience``, ``retain_history``). With a :class:`HELPProfiler` the
    latency compared is its selection-aware bound (``HELPProfiler(confidence=...)``).
    """
    return LatencyFilter(ModelLatencyFilter(profiler, max_latency_ms, min_latency_ms), **filter_kwargs)


def latency_chain(strategy: Strategy, profiler: Profiler, max_latency_ms: float, **filter_kwargs) -> Chain:
    """``Chain(strategy, latency_filter(profiler, max_latency_ms))`` for a multi-trial strategy."""
    return Chain(strategy, latency_filter(profiler, max_latency_ms, **filter_kwargs))


# ---------------------------------------------------------------------------------------------- differentiable
class DifferentiableLatencyPenalty(ExpectationProfilerPenalty):
    """NNI's ``ProfilerPenalty`` with the expected latency computed from the architecture weights (with gradient).

    The penalised loss is ``aggregate(loss, nonlinear(LAT(alpha) / baseline - 1))``; with the defaults
    (``linear``, ``add``) it is ``loss + scale * (LAT / baseline - 1)``: LA-DARTS with lambda = scale / baseline.
    ``LAT`` is the expected latency (ms) under the softmax of the architecture weights, ``"exact"``
    (default for NAS-Bench-201: the sum over all 15,625 architectures, any estimator) or ``"relaxed"``
    (``estimator.predict_tensor``), see :mod:`help_plugin.losses`.

    The strategy binds its weights (:meth:`bind`) once it has created them: use it with :class:`LatencyDARTS`,
    :class:`LatencyGumbelDARTS` or :class:`LatencyProxyless`. It needs a mapping with ``relax``
    (``NasBench201Mapping``); GumbelDARTS' penalty uses the plain softmax of the weights, not the noisy sample.
    """

    def __init__(self, profiler: HELPProfiler, baseline: float, scale: float = 1.0, *,
                 nonlinear: str = "linear", aggregate: str = "add", mode: str | None = None):
        super().__init__(profiler, baseline, scale, nonlinear=nonlinear, aggregate=aggregate)
        if not isinstance(profiler, HELPProfiler):
            raise TypeError(f"profiler must be a HELPProfiler, got {type(profiler).__name__}")
        if not callable(getattr(profiler.mapping, "relax", None)):
            raise TypeError(f"{type(profiler.mapping).__name__} has no differentiable (relaxed) form; "
                            "differentiable latency is available for NasBench201")
        if not (math.isfinite(baseline) and baseline > 0):
            raise ValueError(f"baseline must be a positive latency in ms, got {baseline!r}")
        self.latency = ExpectedLatencyLoss(profiler.estimator, mode=mode)
        self._alphas: dict[str, torch.Tensor] | None = None
        self._values: dict[str, list] | None = None

    def bind(self, arch_parameters: Mapping[str, torch.Tensor], values: Mapping[str, Sequence[Any]]) -> None:
        """Use ``arch_parameters[label]`` (logits over ``values[label]``) as the architecture distribution."""
        needed = self.profiler.mapping.labels
        missing = [label for label in needed if label not in arch_parameters or label not in values]
        if missing:
            raise ValueError(f"the strategy has no architecture weights for labels {missing}")
        # a plain dict (not registered): the weights belong to the supernet, not to the penalty
        self._alphas = {label: arch_parameters[label] for label in needed}
        self._values = {label: list(values[label]) for label in needed}

    def expected_latency(self) -> torch.Tensor:
        """Expected latency (ms, scalar tensor with gradient) under the bound architecture weights."""
        if self._alphas is None:
            raise RuntimeError("DifferentiableLatencyPenalty is not bound to architecture weights; use it with "
                               "LatencyDARTS / LatencyGumbelDARTS / LatencyProxyless, or call bind()")
        dists = {label: torch.softmax(alpha, -1) for label, alpha in self._alphas.items()}
        probs = self.profiler.mapping.relax(dists, self._values)
        table = self.latency.table
        return self.latency.expected_latency(probs if table is None else probs.to(table.device))

    def profile(self, sample) -> torch.Tensor:
        """The expected latency of the bound weights; ``sample`` (NNI's detached ``export_probs()``) is not used."""
        lat = self.expected_latency()
        alpha = next(iter(self._alphas.values()))
        return lat.to(alpha.device)


class _BindsLatencyPenalty:
    """Mixin for NNI's differentiable strategies: binds a :class:`DifferentiableLatencyPenalty` to the weights."""

    def __init__(self, *, penalty: DifferentiableLatencyPenalty, **kwargs):
        if not isinstance(penalty, DifferentiableLatencyPenalty):
            raise TypeError(f"penalty must be a DifferentiableLatencyPenalty, got {type(penalty).__name__}")
        super().__init__(penalty=penalty, **kwargs)

    def mutate_model(self, model):
        values = {label: list(m.values) for label, m in model.simplify().items()}
        model = super().mutate_model(model)
        self.penalty.bind(self._arch_parameters, values)
        return model


class LatencyDARTS(_BindsLatencyPenalty, DARTS):
    """NNI's ``DARTS`` whose latency penalty has a gradient (``penalty=DifferentiableLatencyPenalty(...)``)."""


class LatencyGumbelDARTS(_BindsLatencyPenalty, GumbelDARTS):
    """NNI's ``GumbelDARTS`` with a :class:`DifferentiableLatencyPenalty`."""


class LatencyProxyless(_BindsLatencyPenalty, Proxyless):
    """NNI's ``Proxyless`` with a :class:`DifferentiableLatencyPenalty`."""

