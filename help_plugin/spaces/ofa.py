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

import functools
import itertools
import threading
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


#: The term of an inactive layer in :meth:`OFAMobileNetV3.terms` (after the 20 x resolutions x 3 x 3 layer terms).
_EMPTY_TERM = 20 * len(RESOLUTIONS) * 9
#: ks/e/d value -> choice index.
_CODES = {key: {v: i for i, v in enumerate(values)} for key, values in (("ks", KERNELS), ("e", EXPANDS), ("d", DEPTHS))}


#: Each elastic layer's first term (``layer * resolutions * 9``).
_LAYER_BASE = tuple(layer * len(RESOLUTIONS) * 9 for layer in range(20))
#: Resolution index -> its index, as a dict (a single query's parse).
_RESOLUTION_CODES = {r: i for i, r in enumerate(RESOLUTIONS)}


#: Depth codes of the 5 stages -> (the active layers, the inactive layers, the inactive layers' terms, the 5 depth
#: terms): a single query's canonical form and terms without a loop over the stages.
_BY_DEPTHS = {codes: (tuple(layer for s, c in enumerate(codes) for layer in range(4 * s, 4 * s + DEPTHS[c])),
                      tuple(layer for s, c in enumerate(codes) for layer in range(4 * s + DEPTHS[c], 4 * s + 4)),
                      [_EMPTY_TERM] * (20 - sum(DEPTHS[c] for c in codes)),
                      [_EMPTY_TERM + 1 + 3 * s + c for s, c in enumerate(codes)])
              for codes in itertools.product(range(len(DEPTHS)), repeat=5)}
#: ks/e/d value -> choice index, as functions (a finder's query maps its lists through them).
_CODE_OF = {key: codes.__getitem__ for key, codes in _CODES.items()}


def _subnet_terms(row: list[int]) -> list[int]:
    """:meth:`OFAMobileNetV3.terms` of one index row, in another order (the active layers first; only their sum
    matters). The term of layer ``l`` at resolution ``r``, kernel ``k``, expand ``e`` is
    ``((l * resolutions + r) * 3 + k) * 3 + e``."""
    layers, _, inactive, depth_terms = _BY_DEPTHS[tuple(row[40:45])]
    r9 = 9 * row[45]
    return ([_LAYER_BASE[layer] + r9 + 3 * row[layer] + row[20 + layer] for layer in layers] + inactive + depth_terms
            + [_EMPTY_TERM + 16 + row[45]])


def make_divisible(v, divisor: int = 8):
    """OFA's channel rounding (to a multiple of ``divisor``, never below 90 % of ``v``); elementwise on arrays."""
    v = np.asarray(v, dtype=np.float64)
    new_v = np.maximum(divisor, np.floor(v + divisor / 2) // divisor * divisor)
    out = np.where(new_v < 0.9 * v, new_v + divisor, new_v)
    return int(out) if out.ndim == 0 else out


def _ceil_half(h):
    return -(-h // 2)


class OFAMobileNetV3(SearchSpace):
    """OFA's elastic MobileNetV3 space (about 2x10^19 subnets x 25 resolutions)."""

    name = "ofa"
    choices = (3,) * 20 + (3,) * 20 + (3,) * 5 + (len(RESOLUTIONS),)
    num_classes = NUM_CLASSES

    def parse(self, arch: Any) -> np.ndarray:
        return np.array(self.parse_row(arch), dtype=np.int64)

    def parse_row(self, arch: Any) -> list[int]:
        if type(arch) is dict and len(arch) == 4:  # a finder's query: its 4 keys read straight into the codes
            try:
                r = arch["r"] if "r" in arch else arch["image_size"]
                if type(r) is list and len(r) == 1:
                    r = r[0]
                ks, e, d = arch["ks"], arch["e"], arch["d"]
                if type(ks) is list and type(e) is list and type(d) is list and len(ks) == len(e) == 20 and len(d) == 5:
                    code = _CODE_OF
                    return [*map(code["ks"], ks), *map(code["e"], e), *map(code["d"], d), _RESOLUTION_CODES[r]]
            except (KeyError, TypeError):  # the full check below names the problem
                pass
        if isinstance(arch, str):  # the canonical JSON form (tidy tables, store keys)
            import json

            try:
                arch = json.loads(arch)
            except json.JSONDecodeError as err:
                raise ValueError(f"ofa: {arch!r} is not an architecture dict in JSON ({err})") from None
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
        r = self._one_resolution(arch.get("r", arch.get("image_size")))
        if "r" in arch and "image_size" in arch and self._one_resolution(arch["image_size"]) != r:
            raise ValueError(f"ofa: r = {arch['r']!r} and image_size = {arch['image_size']!r} disagree; give one "
                             f"resolution")
        out = []
        for key, values, n in (("ks", KERNELS, 20), ("e", EXPANDS, 20), ("d", DEPTHS, 5)):
            seq = arch[key]
            if not isinstance(seq, (list, tuple, np.ndarray)) or len(seq) != n:
                raise ValueError(f"ofa: {key} must be a list of {n} values, got {seq!r}")
            codes = _CODES[key]
            try:
                out += [codes[v] for v in seq]
            except (KeyError, TypeError):
                bad = next(i for i, v in enumerate(seq) if not (isinstance(v, (int, float, np.number)) and v in values))
                raise ValueError(f"ofa: {key}[{bad}] = {seq[bad]!r} is not one of {values}") from None
        if r not in RESOLUTIONS:
            raise ValueError(f"ofa: resolution r = {r!r} is not one of 128, 132, ..., 224")
        out.append(RESOLUTIONS.index(int(r)))
        return out

    @staticmethod
    def _one_resolution(r: Any) -> Any:
        """``r`` (or ``image_size``) as one value: a one-element list or tuple is its element."""
        if isinstance(r, (list, tuple)):
            if len(r) != 1:
                raise ValueError(f"ofa: r must be one resolution, got {r!r}")
            return r[0]
        return r

    def memo_key(self, arch: Any):
        """An arch dict as a tuple of its items (lists as tuples), so that parsing it is remembered."""
        if not isinstance(arch, dict):
            return None
        if len(arch) == 4 and ("r" in arch or "image_size" in arch):  # {"ks", "e", "d", "r"} (or OFA's finder's
            # "image_size", which parses the same): its values, tagged (no sorted-items key below has a string first)
            try:
                ks, e, d, r = arch["ks"], arch["e"], arch["d"], arch["r"] if "r" in arch else arch["image_size"]
                if type(ks) is list and type(e) is list and type(d) is list:
                    key = ("ks,e,d,r", tuple(ks), tuple(e), tuple(d), tuple(r) if type(r) is list else r)
                    hash(key)
                    return key
            except (KeyError, TypeError):
                pass
        try:
            key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in arch.items()))
            hash(key)
        except TypeError:  # unhashable or unorderable: parsed every time (and its error raised)
            return None
        return key

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

    def canonical_indices(self, indices: np.ndarray) -> np.ndarray:
        """``indices`` with the kernel and expand positions of layers beyond a stage's depth set to 0."""
        idx = np.array(indices, copy=True)
        inactive = ~self.active_mask(idx)
        idx[:, :20][inactive] = 0
        idx[:, 20:40][inactive] = 0
        return idx

    def cost_features(self, indices: np.ndarray) -> np.ndarray:
        """Costs of the fixed parts at the subnet's resolution plus those of its active layers (:meth:`_cost_tables`)."""
        indices = self.to_indices(indices)
        fixed, layers = _cost_tables()
        res = indices[:, 45:]
        per_layer = layers[np.arange(20), res, indices[:, :20], indices[:, 20:40]]  # [n, 20, 4]
        return fixed[res[:, 0]] + np.einsum("nlk,nl->nk", per_layer, self.active_mask(indices).astype(np.float64))

    def terms(self, indices: np.ndarray) -> np.ndarray:
        """Each elastic layer at the subnet's resolution with its kernel and expand (an empty term when inactive),
        each stage's depth, the resolution (with the fixed parts): ``[n, 26]``."""
        idx = self.to_indices(indices)
        r = idx[:, 45:]
        layer = ((np.arange(20) * len(RESOLUTIONS) + r) * 3 + idx[:, :20]) * 3 + idx[:, 20:40]
        layer = np.where(self.active_mask(idx), layer, _EMPTY_TERM)
        return np.concatenate([layer, _EMPTY_TERM + 1 + np.arange(5) * 3 + idx[:, 40:45], _EMPTY_TERM + 16 + r], axis=1)

    def canonical_row(self, row) -> list[int]:
        out = row.tolist() if isinstance(row, np.ndarray) else list(row)
        for layer in _BY_DEPTHS[tuple(out[40:45])][1]:
            out[layer] = out[20 + layer] = 0
        return out

    def row_terms(self, row) -> list[int]:
        return _subnet_terms(row.tolist() if isinstance(row, np.ndarray) else row)  # only read

    def _term_tables(self) -> dict[str, np.ndarray]:
        fixed, layers = _cost_tables()
        costs = np.concatenate([layers.reshape(-1, 4), np.zeros((16, 4)), fixed])
        one_hot = np.zeros((len(costs), int(sum(self.choices))))
        layer, r, k, e = np.unravel_index(np.arange(_EMPTY_TERM), layers.shape[:4])
        one_hot[np.arange(_EMPTY_TERM), 3 * layer + k] = one_hot[np.arange(_EMPTY_TERM), 60 + 3 * layer + e] = 1.0
        one_hot[_EMPTY_TERM + 1 + np.arange(15), 120 + np.arange(15)] = 1.0  # depth terms: stage-major, like the one-hot
        one_hot[_EMPTY_TERM + 16 + np.arange(len(RESOLUTIONS)), 135 + np.arange(len(RESOLUTIONS))] = 1.0
        return {"costs": costs, "one_hot": one_hot}

    # ------------------------------------------------------------------ data and graph forms
    def help_archs(self, load) -> np.ndarray:
        """``ofa_archs.pt``: OFA config dicts (numpy int64 resolutions)."""
        meta = load("ofa_archs.pt", numpy_scalars=True)
        return self.to_indices([{k: (int(v) if k == "r" else v) for k, v in a.items()} for a in meta["arch"]])

    def graph_adjacency(self) -> np.ndarray:
        """A chain of the 20 elastic layers."""
        return np.eye(20, k=-1)

    def graph_features(self, indices: np.ndarray) -> np.ndarray:
        """The layer's kernel and expand one-hots (3 + 3, zero for inactive layers), the input resolution as a
        scalar ((r - 176) / 48, on every node) + the layer position one-hot (20): ``[n, 20, 27]``."""
        idx = self.to_indices(indices)
        n, oh = len(idx), self.one_hot(idx)
        res = (np.asarray(RESOLUTIONS, dtype=np.float32)[idx[:, 45]] - 176.0) / 48.0
        return self._chain_features(np.concatenate([oh[:, :60].reshape(n, 20, 3), oh[:, 60:120].reshape(n, 20, 3),
                                                    np.repeat(res[:, None, None], 20, axis=1)], axis=2))

    # ------------------------------------------------------------------ networks
    def _row(self, arch: Any) -> np.ndarray:
        return self.to_indices(arch)[0] if isinstance(arch, np.ndarray) else self.parse(arch)

    def input_size(self, arch: Any) -> tuple[int, int, int]:
        """``(3, r, r)``: the subnet's input image at its resolution ``r``."""
        r = RESOLUTIONS[int(self._row(arch)[45])]
        return (3, r, r)

    def build_network(self, arch: Any):
        """The subnet as OFA extracts it: a ``MobileNetV3`` module in eval mode, ``[n, 3, r, r] -> [n, 1000]`` logits.

        Built by the ``ofa`` package (``OFAMobileNetV3(ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
        depth_list=[2, 3, 4], width_mult=1.0)``, ``set_active_subnet``, ``get_active_subnet``) with
        *random* weights: no checkpoint is downloaded, which is all latency needs. The subnet's weights
        are slices of one supernet initialised with seed 0, so a given arch always gets the same network.
        Its conv/linear weight count equals :meth:`params`; BN parameters and biases come on top.
        Raises ``ImportError`` naming the missing package if ``ofa`` is not installed.
        """
        cfg = self.format(self._row(arch))
        supernet = _supernet()
        with _SUPERNET_LOCK:  # the active subnet is state of the shared supernet
            supernet.set_active_subnet(ks=cfg["ks"], e=cfg["e"], d=cfg["d"])
            net = supernet.get_active_subnet(preserve_weight=True)
        return net.eval()


@functools.lru_cache(maxsize=1)
def _cost_tables() -> tuple[np.ndarray, np.ndarray]:
    """``(fixed [resolution, 4], per layer [20, resolution, kernel, expand, 4])``: the MACs, params, memory and
    kernels of the parts every subnet has (first conv and block, final layers) and of each elastic layer when
    active, for every resolution and choice (a layer's input size depends only on the resolution)."""
    res = np.asarray(RESOLUTIONS, dtype=np.float64)[:, None, None]
    ks = np.asarray(KERNELS, dtype=np.float64)[None, :, None]
    ex = np.asarray(EXPANDS, dtype=np.float64)[None, None, :]
    grid = np.zeros((len(RESOLUTIONS), len(KERNELS), len(EXPANDS)))
    h = _ceil_half(res)  # after the stride-2 first conv
    c = FIRST_CHANNELS
    hw = h * h
    # first conv 3x3 (3 -> 16) and the fixed first block (dw 3x3 + 1x1 16 -> 16)
    fixed = [27 * c * hw + 9 * c * hw + c * c * hw, 0 * hw + 27 * c + 9 * c + c * c, 3 * res * res + 4 * c * hw, 0 * hw + 6]
    layers = np.zeros((20,) + grid.shape + (4,))
    for stage, (c_out, stride, se) in enumerate(zip(STAGE_CHANNELS, STAGE_STRIDES, STAGE_SE)):
        for j in range(4):
            s = stride if j == 0 else 1
            h_out = _ceil_half(h) if s == 2 else h
            c_in = c if j == 0 else c_out
            mid = c_in * ex  # make_divisible is the identity for these channel counts
            lm = c_in * mid * h * h + mid * ks ** 2 * h_out ** 2 + mid * c_out * h_out ** 2
            lp = c_in * mid + mid * ks ** 2 + mid * c_out
            lmem = c_in * h * h + 2 * mid * h * h + 2 * mid * h_out ** 2 + c_out * h_out ** 2
            lk = 9.0 + (j > 0)
            if se:
                squeeze = make_divisible(mid // 4)
                lm = lm + 2 * mid * squeeze + mid * h_out ** 2
                lp = lp + 2 * mid * squeeze
                lmem = lmem + 2 * mid * h_out ** 2
                lk = lk + 5
            layers[4 * stage + j] = np.stack(np.broadcast_arrays(lm, lp, lmem, lk + grid), axis=-1)
            if j == 0:
                h = h_out
        c = c_out
    hw = h * h
    fixed[0] = fixed[0] + c * FINAL_EXPAND * hw + FINAL_EXPAND * FEATURE_MIX + FEATURE_MIX * NUM_CLASSES
    fixed[1] = fixed[1] + c * FINAL_EXPAND + FINAL_EXPAND * FEATURE_MIX + FEATURE_MIX * NUM_CLASSES
    fixed[2] = fixed[2] + (c + FINAL_EXPAND) * hw
    fixed[3] = fixed[3] + 6
    return np.stack([np.broadcast_to(f, res.shape).ravel() for f in fixed], axis=1), layers


_SUPERNET_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _supernet():
    """OFA's elastic MobileNetV3 supernet for this space (random init, seed 0), built once per process."""
    try:
        import torch
        from ofa.imagenet_classification.elastic_nn.networks import (
            OFAMobileNetV3 as OFASupernet,
        )
    except ImportError as err:
        raise ImportError(
            f"building OFA MobileNetV3 subnets needs the `ofa` package and what it imports (torchvision matching "
            f"your torch, Pillow, gdown): pip install 'help-plugin[ofa]' ({err})") from err
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = OFASupernet(n_classes=NUM_CLASSES, ks_list=list(KERNELS), expand_ratio_list=list(EXPANDS),
                          depth_list=list(DEPTHS), width_mult=1.0)
    return net.eval()
