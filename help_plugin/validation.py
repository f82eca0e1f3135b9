"""Boundary checks shared by every estimator: latencies, lengths, sample counts."""
from __future__ import annotations

import numbers

import numpy as np

_NOT_NUMBERS = (bool, np.bool_, str, bytes)


def _number_or_raise(value, name: str, nested: bool = False):
    """``value`` if it is a real number of ms (not a bool, string or None), else ``TypeError`` naming it.
    ``nested`` also lets sequences through (their shape is checked later)."""
    allowed = (numbers.Real, np.ndarray, list, tuple) if nested else numbers.Real
    if isinstance(value, _NOT_NUMBERS) or not isinstance(value, allowed):
        raise TypeError(f"{name} = {value!r} ({type(value).__name__}) is not a number of ms")
    return value


def check_latency(value, name: str = "latency_ms") -> float:
    """One latency: a real number (not a bool, string or None), finite and > 0; an error naming ``name`` otherwise."""
    if hasattr(value, "__array__") and np.ndim(value) == 0 and np.asarray(value).dtype.kind in "iuf":
        value = np.asarray(value).item()  # a 0-d numpy array or torch tensor
    ms = float(_number_or_raise(value, name))
    if not np.isfinite(ms) or ms <= 0:
        raise ValueError(f"{name} = {value!r} is not a finite positive latency in ms")
    return ms


def check_latencies(values, name: str = "latencies_ms") -> np.ndarray:
    """Return ``values`` as a 1-D float64 array of finite, strictly positive milliseconds.

    Booleans, strings and None are not latencies (``TypeError``, even where numpy would convert them:
    ``True`` to 1.0, ``"7.5"`` to 7.5). Raises ``ValueError`` naming the first bad value and its position.
    """
    if isinstance(values, (str, bytes, dict)) or values is None:
        raise TypeError(f"{name} must be numbers (ms), got {values!r}")
    if hasattr(values, "__array__"):
        arr = np.asarray(values)
        if arr.dtype.kind not in "iuf":
            if arr.dtype.kind != "O":
                raise TypeError(f"{name} must be numbers (ms), got an array of {arr.dtype}")
            for i, v in enumerate(arr.reshape(-1)):
                _number_or_raise(v, f"{name}[{i}]", nested=True)
    elif not np.isscalar(values):
        values = list(values)
        for i, v in enumerate(values):
            _number_or_raise(v, f"{name}[{i}]", nested=True)
    else:
        _number_or_raise(values, name)
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be numbers (ms), got {values!r}") from err
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 0 else arr
        if arr.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {list(arr.shape)}")
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] = {float(arr[i])!r} is not a finite positive latency in ms")
    return arr


def check_same_length(a, b, name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{name_a} has {len(a)} entries but {name_b} has {len(b)}")


def check_reference_spread(reference_ms: np.ndarray) -> None:
    """The hardware embedding min-max normalises the reference latencies: they must not all be equal."""
    if np.ptp(reference_ms) <= 0:
        raise ValueError(
            f"all {len(reference_ms)} reference latencies are equal ({reference_ms[0]!r} ms); "
            "the hardware embedding needs distinct values (check the measurement)"
        )
