"""Once-for-All MobileNetV3 (``ofa_mbv3_d234_e346_k357_w1.0``) subnets.

An architecture is OFA's own config dict ``{"ks": [20 ints], "e": [20 ints], "d": [5 ints], "r": int}``
with kernel sizes in {3, 5, 7}, expand ratios in {3, 4, 6}, stage depths in {2, 3, 4} and input
resolution in {128, 132, ..., 224}. ``r`` may also be a one-element list (``ofa.tutorial``) or be
given as ``image_size`` (``ofa.nas.search_algorithm``); a ``"wid": None`` entry is ignored.
Layer ``4 * stage + j`` is active when ``j < d[stage]``; the ks/e of inactive layers are kept
in the canonical form (as OFA does) but do not affect the encoding or the cost.

Index layout: 20 kernel indices, 20 expand indices, 5 depth indices, 1 resolution index.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import SearchSpace

KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
DEPTHS = (2, 3, 4)
RESOLUTIONS = tuple(range(128, 225, 4))
STAGE_CHANNELS = (24, 40, 80, 112, 160)
STAGE_STRIDES = (2, 2, 2, 1, 2)
STAGE_SE = (False, True, False, True, True)
FIRST_CHANNELS, FINAL_EXPAND, FEATURE_MIX, NUM_CLASSES = 16, 960, 1280, 1000


def make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _ceil_half(h):
    return -(-h // 2)


class OFAMobileNetV3(SearchSpace):
    """OFA's elastic MobileNetV3 space (about 2x10^19 subnets x 25 resolutions)."""

    name = "ofa"
    choices = (3,) * 20 + (3,) * 20 + (3,) * 5 + (len(RESOLUTIONS),)

    def parse(self, arch: Any) -> np.ndarray:
        if not isinstance(arch, dict):
            raise TypeError(f"ofa: an architecture is a dict with keys ks, e, d, r; got {type(arch).__name__}")
        unknown = set(arch) - {"ks", "e", "d", "r", "image_size", "wid"}
        if unknown:
            raise ValueError(f"ofa: unknown key(s) {sorted(unknown)} in architecture")
        if arch.get("wid") is not None:
            raise ValueError(f"ofa: width multipliers are not part of this space, got wid={arch['wid']!r}")
        missing = [k for k in ("ks", "e", "d") if k not in arch]
        if missing or ("r" not in arch and "image_size" not in arch):
            raise ValueError(f"ofa: architecture is missing {missing or ['r']}")
        r = arch.get("r", arch.get("image_size"))
        if isinstance(r, (list, tuple)):
            if len(r) != 1:
                raise ValueError(f"ofa: r must be one resolution, got {r!r}")
            r = r[0]
        out = np.empty(46, dtype=np.int64)
        for key, values, n, offset in (("ks", KERNELS, 20, 0), ("e", EXPANDS, 20, 20), ("d", DEPTHS, 5, 40)):
            seq = arch[key]
            if not isinstance(seq, (list, tuple, np.ndarray)) or len(seq) != n:
                raise ValueError(f"ofa: {key} must be a list of {n} values, got {seq!r}")
            for i, v in enumerate(seq):
                if v not in values:
                    raise ValueError(f"ofa: {key}[{i}] = {v!r} is not one of {values}")
                out[offset + i] = values.index(int(v))
        if r not in RESOLUTIONS:
            raise ValueError(f"ofa: resolution r = {r!r} is not one of 128, 132, ..., 224")
        out[45] = RESOLUTIONS.index(int(r))
        return out

    def format(self, indices) -> dict:
        idx = [int(i) for i in indices]
        return {
            "ks": [KERNELS[i] for i in idx[:20]],
            "e": [EXPANDS[i] for i in idx[20:40]],
            "d": [DEPTHS[i] for i in idx[40:45]],
            "r": RESOLUTIONS[idx[45]],
        }

    def active_mask(self, indices: np.ndarray) -> np.ndarray:
        """``[n, 20]`` bool: which of the 20 elastic layers each subnet uses."""
        depth = np.asarray(DEPTHS)[indices[:, 40:45]]  # [n, 5]
        return (np.arange(4)[None, None, :] < depth[:, :, None]).reshape(len(indices), 20)

    def one_hot(self, indices: np.ndarray) -> np.ndarray:
        indices = self.to_indices(indices)
        out = super().one_hot(indices)
        mask = np.repeat(self.active_mask(indices), 3, axis=1).astype(np.float32)
        out[:, :60] *= mask  # kernel one-hots of inactive layers
        out[:, 60:120] *= mask  # expand one-hots of inactive layers
        return out

    def cost_features(self, indices: np.ndarray) -> np.ndarray:
        indices = self.to_indices(indices)
        n = len(indices)
        res = np.asarray(RESOLUTIONS, dtype=np.float64)[indices[:, 45]]
        ks = np.asarray(KERNELS, dtype=np.float64)[indices[:, :20]]
        ex = np.asarray(EXPANDS, dtype=np.float64)[indices[:, 20:40]]
        active = self.active_mask(indices)
        h = _ceil_half(res)  # after the stride-2 first conv
        c = FIRST_CHANNELS
        hw = h * h
        # first conv 3x3 (3 -> 16) and the fixed first block (dw 3x3 + 1x1 16 -> 16)
        macs = 27 * c * hw + 9 * c * hw + c * c * hw
        params = np.full(n, 27 * c + 9 * c + c * c, dtype=np.float64)
        memory = (3 * res * res) + 4 * c * hw
        kernels = np.full(n, 6.0)
        for stage, (c_out, stride, se) in enumerate(zip(STAGE_CHANNELS, STAGE_STRIDES, STAGE_SE)):
            for j in range(4):
                layer = 4 * stage + j
                on = active[:, layer]
                s = stride if j == 0 else 1
                h_out = _ceil_half(h) if s == 2 else h
                c_in = c if j == 0 else c_out
                mid = c_in * ex[:, layer]  # make_divisible is the identity for these channel counts
                lm = c_in * mid * h * h + mid * ks[:, layer] ** 2 * h_out ** 2 + mid * c_out * h_out ** 2
                lp = c_in * mid + mid * ks[:, layer] ** 2 + mid * c_out
                lmem = c_in * h * h + 2 * mid * h * h + 2 * mid * h_out ** 2 + c_out * h_out ** 2
                lk = 9.0 + (j > 0)
                if se:
                    squeeze = np.array([make_divisible(m // 4) for m in mid], dtype=np.float64)
                    lm = lm + 2 * mid * squeeze + mid * h_out ** 2
                    lp = lp + 2 * mid * squeeze
                    lmem = lmem + 2 * mid * h_out ** 2
                    lk = lk + 5
                macs = macs + on * lm
                params = params + on * lp
                memory = memory + on * lmem
                kernels = kernels + on * lk
                if j == 0:
                    h = h_out
            c = c_out
        hw = h * h
        macs = macs + c * FINAL_EXPAND * hw + FINAL_EXPAND * FEATURE_MIX + FEATURE_MIX * NUM_CLASSES
        params = params + c * FINAL_EXPAND + FINAL_EXPAND * FEATURE_MIX + FEATURE_MIX * NUM_CLASSES
        memory = memory + (c + FINAL_EXPAND) * hw
        kernels = kernels + 6
        return np.stack([macs, params, memory, kernels], axis=1)
