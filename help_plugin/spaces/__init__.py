"""Search spaces: one module each, registered by name."""
from __future__ import annotations

from .base import COST_FEATURES, SearchSpace
from .fbnet import FBNet
from .hat import HATTransformer
from .nasbench201 import NASBench201
from .ofa import OFAMobileNetV3

_REGISTRY: dict[str, type[SearchSpace]] = {}


def register(cls: type[SearchSpace]) -> type[SearchSpace]:
    """Register a :class:`SearchSpace` subclass under ``cls.name`` (usable as a decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


for _cls in (NASBench201, FBNet, OFAMobileNetV3, HATTransformer):
    register(_cls)


def available_spaces() -> list[str]:
    return sorted(_REGISTRY)


def get_space(space: str | SearchSpace, **params) -> SearchSpace:
    """The space called ``space``, built with its constructor ``params`` (or ``space`` itself if it already
    is one and no ``params`` are given)."""
    if isinstance(space, SearchSpace):
        if params:
            raise TypeError(f"space settings {sorted(params)} given with a SearchSpace instance {space!r}")
        return space
    if not isinstance(space, str) or space not in _REGISTRY:
        raise ValueError(f"unknown search space {space!r}; available: {available_spaces()}")
    return _REGISTRY[space](**params)


__all__ = ["COST_FEATURES", "SearchSpace", "NASBench201", "FBNet", "OFAMobileNetV3", "HATTransformer",
           "register", "get_space", "available_spaces"]
