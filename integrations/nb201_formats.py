"""NAS-Bench-201 architecture formats of NASLib and NNI, converted to and from ``help_plugin``'s.

Pure Python + NumPy (no NASLib, no NNI import). Four forms of one NAS-Bench-201 cell:

* ``help_plugin`` index vector (``help_plugin.spaces.nasbench201``): 6 op indices in the string's
  edge order ``0->1, 0->2, 1->2, 0->3, 1->3, 2->3``; ops 0 none, 1 skip_connect, 2 nor_conv_1x1,
  3 nor_conv_3x3, 4 avg_pool_3x3.
* NAS-Bench-201 string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (``help_plugin``'s canonical form).
* NASLib ``op_indices`` (``NasBench201SearchSpace.get_op_indices()`` / ``set_op_indices()``, see
  ``naslib/search_spaces/nasbench201/conversions.py``): 6 ints in edge order
  ``0->1, 0->2, 0->3, 1->2, 1->3, 2->3``; ops 0 skip_connect, 1 none, 2 nor_conv_3x3,
  3 nor_conv_1x1, 4 avg_pool_3x3.
* NNI 3.0 sample dict of ``nni.nas.hub.pytorch.NasBench201``: keys ``cell/{source}_{target}``
  (``cell/0_1`` ... ``cell/2_3``), values ``none``, ``skip_connect``, ``conv_1x1``, ``conv_3x3``,
  ``avg_pool_3x3`` (NNI drops the ``nor_`` prefix).

Every converter takes one architecture (``[6]``) or a batch (``[n, 6]``) and returns the same rank;
bad input raises ``ValueError``/``TypeError`` naming the bad value.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..spaces.nasbench201 import EDGES, OPS, NASBench201

#: NASLib's op names, in NASLib op-index order.
NASLIB_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
#: NASLib's edge order as (source, target) nodes.
NASLIB_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
#: NNI's op names for help_plugin's ops (same order as ``help_plugin.spaces.nasbench201.OPS``).
NNI_OPS = ("none", "skip_connect", "conv_1x1", "conv_3x3", "avg_pool_3x3")

# help_plugin position of each NASLib edge, and help_plugin op index of each NASLib op index
_POS_OF_NASLIB_EDGE = np.array([EDGES.index((t, s)) for s, t in NASLIB_EDGES])
_OP_OF_NASLIB_OP = np.array([OPS.index(name) for name in NASLIB_OPS])
_NASLIB_OP_OF_OP = np.argsort(_OP_OF_NASLIB_OP)
_SPACE = NASBench201()


def _as_int_array(values: Any, what: str, n_choices: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == object or arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{what} must be integers, got {values!r}")
    if arr.ndim not in (1, 2) or arr.shape[-1] != 6:
        raise ValueError(f"{what} must have 6 entries (or shape [n, 6]), got shape {list(arr.shape)}: {values!r}")
    bad = (arr < 0) | (arr >= n_choices)
    if bad.any():
        raise ValueError(f"{what}: op index {int(arr[bad][0])} is out of range 0..{n_choices - 1} in {values!r}")
    return arr.astype(np.int64)


def naslib_to_indices(op_indices: Any) -> np.ndarray:
    """NASLib ``op_indices`` (``[6]`` or ``[n, 6]``) -> help_plugin index vectors of the same shape."""
    arr = _as_int_array(op_indices, "NASLib op_indices", len(NASLIB_OPS))
    out = np.empty_like(arr)
    out[..., _POS_OF_NASLIB_EDGE] = _OP_OF_NASLIB_OP[arr]
    return out


def indices_to_naslib(indices: Any) -> np.ndarray:
    """help_plugin index vectors (``[6]`` or ``[n, 6]``) -> NASLib ``op_indices`` of the same shape.

    NASLib's ``set_op_indices`` expects a list: pass ``indices_to_naslib(x).tolist()``.
    """
    arr = _as_int_array(indices, "nasbench201 indices", len(OPS))
    return _NASLIB_OP_OF_OP[arr[..., _POS_OF_NASLIB_EDGE]]


def naslib_to_str(op_indices: Any) -> str | list[str]:
    """NASLib ``op_indices`` -> NAS-Bench-201 string (a list of strings for a batch ``[n, 6]``)."""
    idx = naslib_to_indices(op_indices)
    return _SPACE.format(idx) if idx.ndim == 1 else [_SPACE.format(r) for r in idx]


def str_to_naslib(arch: str | list[str]) -> np.ndarray:
    """NAS-Bench-201 string (or a list of them) -> NASLib ``op_indices`` ``[6]`` (or ``[n, 6]``)."""
    if isinstance(arch, str):
        return indices_to_naslib(_SPACE.parse(arch))
    return indices_to_naslib(_SPACE.to_indices(list(arch)))


def nni_to_indices(sample: Mapping[str, str], prefix: str = "cell") -> np.ndarray:
    """An NNI ``NasBench201`` sample dict -> help_plugin index vector ``[6]``.

    ``sample`` must hold exactly the 6 keys ``f"{prefix}/{source}_{target}"``; values are NNI op
    names (``conv_3x3``), and help_plugin's ``nor_conv_3x3`` spelling is accepted too.
    """
    if not isinstance(sample, Mapping):
        raise TypeError(f"an NNI NasBench201 sample is a dict like {{'{prefix}/0_1': 'conv_3x3', ...}}, got {sample!r}")
    labels = [f"{prefix}/{s}_{t}" for t, s in EDGES]
    missing = [k for k in labels if k not in sample]
    extra = [k for k in sample if k not in labels]
    if missing or extra:
        raise ValueError(f"NNI NasBench201 sample: missing labels {missing}, unexpected labels {extra}; "
                         f"expected exactly {labels}")
    out = np.empty(6, dtype=np.int64)
    for pos, label in enumerate(labels):
        op = sample[label]
        if op in NNI_OPS:
            out[pos] = NNI_OPS.index(op)
        elif op in OPS:
            out[pos] = OPS.index(op)
        else:
            raise ValueError(f"NNI NasBench201 sample: unknown op {op!r} for {label!r}; expected one of {NNI_OPS}")
    return out


def indices_to_nni(indices: Any, prefix: str = "cell") -> dict[str, str]:
    """help_plugin index vector ``[6]`` -> NNI ``NasBench201`` sample dict (keys in NNI's label order)."""
    arr = _as_int_array(indices, "nasbench201 indices", len(OPS))
    if arr.ndim != 1:
        raise ValueError(f"indices_to_nni converts one architecture ([6]), got shape {list(arr.shape)}")
    return {f"{prefix}/{s}_{t}": NNI_OPS[int(op)] for (t, s), op in zip(EDGES, arr)}
