"""Meta-learning algorithms, one module each, behind one :class:`MetaLearner` interface."""
from __future__ import annotations

from ...spaces import SearchSpace
from .base import DeviceHead, LearnerConfig, MetaLearner
from .gradient import (
    GradientHead,
    GradientMetaConfig,
    GradientMetaLearner,
    HELPLearner,
    MAMLLearner,
    MetaSGDLearner,
)
from .pool_basis import PoolBasisConfig, PoolBasisLearner

#: method name -> learner class.
METHODS: dict[str, type[MetaLearner]] = {cls.method: cls for cls in
                                         (PoolBasisLearner, HELPLearner, MetaSGDLearner, MAMLLearner)}


def make_learner(method: str, space: SearchSpace, options: dict | None = None, seed: int | None = None) -> MetaLearner:
    """A new (not yet meta-trained) learner for ``method`` with its config updated by ``options``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {sorted(METHODS)}")
    cls = METHODS[method]
    preset = getattr(cls, "preset", {})
    fixed = {} if seed is None else {"seed": seed}
    return cls(space, cls.config_class.from_options(method, options, preset, **fixed))


__all__ = ["METHODS", "make_learner", "MetaLearner", "DeviceHead", "LearnerConfig", "PoolBasisLearner",
           "PoolBasisConfig", "GradientMetaLearner", "GradientMetaConfig", "GradientHead", "HELPLearner",
           "MetaSGDLearner", "MAMLLearner"]
