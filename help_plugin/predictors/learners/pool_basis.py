"""help+ (the default method): what a device pool teaches, and a closed-form head per device.

Meta-knowledge, learned from the pool devices' measurements of the meta-training architectures:

* ``luts``: one additive look-up table per pool device (the ms of each position's choice, plus a constant): a
  ridge least-squares fit (``lut_ridge``) of the device's ms on the space's one-hot encoding, in a fraction of a
  second;
* ``mlp``, where the groups include it (the shipped HAT model; opt-in elsewhere): an ensemble of small MLPs
  predicting every pool device's standardised log latency from the one-hot encoding and the log analytic costs.

A device's head (:class:`~help_plugin.predictors.ridge.GroupRidgeHead`) combines feature groups by Bayesian ridge
regression on its reference + few-shot measurements, in closed form, its strengths per group and its link (ms or
log ms) chosen by the evidence, its predictions > 0 by construction (:mod:`help_plugin.predictors.ridge`). The
groups (:data:`GROUPS`): ``flops`` (MACs, never switched off: a head that ignores the architecture cannot rank),
``cost3`` (params, memory, kernels), ``detail`` (the space's op-type costs,
:meth:`~help_plugin.spaces.SearchSpace.detail_features`), ``luts`` and ``mlp`` (each pool device's predicted ms).

Default groups (``PoolBasisConfig.groups=None``), chosen by leave-one-device-out on the pools, never a test device
(issue 14): ``flops, cost3, detail, luts`` (``detail`` where the space has op-type costs: NAS-Bench-201, FBNet). With
the LUTs in, the pool MLP added nothing measurable (with it, NAS-Bench-201 and FBNet lost 0.001-0.003 rho at 20
measurements; OFA, 11 devices x 2 seeds x 3 draws, rho 0.8969 / 0.8964 / 0.8945 with it and 0.8965 / 0.8956 /
0.8971 without at 15 / 20 / 30 measurements), and it costs 20-40 s of meta-training and most of the prediction time.

Prediction takes the fastest exact path: an identity-link head on additive groups is itself an additive table,
folded into one ``[arch_length, max_choice]`` table; on a space small enough to enumerate (NAS-Bench-201's 15,625
cells) every architecture's prediction is computed once per head; otherwise the features are computed group by
group, the MLPs as one float32 numpy pass.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from ...checkpoint import CheckpointError, module_spec
from ...spaces.base import PARSE_MEMO_SIZE
from ...validation import check_reference_spread
from ..calibration import HeldOut
from ..nets import PoolLatencyNet
from ..ridge import LINKS, GroupRidgeHead, fit_heads, positive
from ..training import PREDICT_CHUNK, Standardiser, moments, progress_bar, train_adam
from .base import LearnerConfig, MetaLearner, sub_state

log = logging.getLogger(__name__)

#: Feature group -> how the log link feeds it: ``log1p`` (costs, which may be 0), ``log`` (ms), ``None`` (as is).
GROUPS = {"flops": "log1p", "cost3": "log1p", "detail": None, "luts": "log", "mlp": "log"}
#: Groups a head never switches off.
REQUIRED = ("flops",)
#: The groups of a help+ model saved before the pool LUTs existed (its meta-knowledge is the MLP ensemble).
EARLIER_GROUPS = ("flops", "cost3", "mlp")


def default_groups(space) -> tuple[str, ...]:
    """The groups chosen by validation for ``space`` (see the module docstring)."""
    return ("flops", "cost3", "detail", "luts") if space.detail_names else ("flops", "cost3", "luts")


#: The pool MLP ensemble's settings: they change nothing a model learns when its groups leave out ``mlp``.
MLP_SETTINGS = ("hidden", "depth", "steps", "batch_size", "lr", "weight_decay", "ensemble")


@dataclass
class PoolBasisConfig(LearnerConfig):
    """help+'s settings. ``groups``: the head's feature groups (``None``: :func:`default_groups`); ``lut_ridge``:
    the pool LUTs' ridge strength; ``links``: the candidate links; ``guard``: the identity link's guard at this
    fraction of the smallest measured ms. The rest configure the pool MLP ensemble (groups with ``mlp``)."""

    groups: tuple[str, ...] | None = None
    lut_ridge: float = 1e-3
    links: tuple[str, ...] = LINKS
    guard: float = 0.5
    hidden: int = 128
    depth: int = 2
    steps: int = 4000
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-5
    ensemble: int = 3  # averaged pool networks; compare: help-nas benchmark --methods help+,help+:ensemble=1:hidden=256

    def __post_init__(self):
        if self.groups is not None:
            self.groups = tuple(self.groups)
            unknown = sorted(set(self.groups) - set(GROUPS))
            if unknown or not self.groups or len(set(self.groups)) < len(self.groups):
                raise ValueError(f"groups must be distinct names from {sorted(GROUPS)}, got {list(self.groups)}")
        self.links = tuple(self.links)
        if not self.links or not set(self.links) <= set(LINKS) or len(set(self.links)) < len(self.links):
            raise ValueError(f"links must be distinct names from {list(LINKS)}, got {list(self.links)}")
        if not 0 < self.guard <= 1:
            raise ValueError(f"guard must be in (0, 1], got {self.guard!r}")

    def learned_settings(self, space) -> dict:
        """As :meth:`LearnerConfig.learned_settings`, with the groups spelt out (``None``: the default ones) and
        without :data:`MLP_SETTINGS` when they leave out ``mlp``."""
        groups = self.groups or default_groups(space)
        settings = super().learned_settings(space) | {"groups": list(groups)}
        return settings if "mlp" in groups else {k: v for k, v in settings.items() if k not in MLP_SETTINGS}


class PoolBasisLearner(MetaLearner):
    """help+: see the module docstring. Heads are :class:`GroupRidgeHead`; predictions have a std."""

    method = "help+"
    config_class = PoolBasisConfig
    head_class = GroupRidgeHead
    has_std = True
    selects_shots = True

    def __init__(self, space, config: PoolBasisConfig | None = None):
        super().__init__(space, config)
        self.groups: tuple[str, ...] = ()
        self.pool_devices: tuple[str, ...] = ()
        self.lut: np.ndarray | None = None  # [sum(choices) + 1, n_pool]: per-choice ms, then the constant
        self.nets: list[PoolLatencyNet] = []
        self._tables: dict = {}  # group (or tuple of groups) -> its table per term (_term_table, _summed_table)
        self._arch_rows: dict = {}  # memo key of an architecture -> its row of a compiled table (predict_one)

    # -------------------------------------------------------------- meta-training
    def _meta_fit(self, data, train_devices, valid_devices, rows, progress) -> None:
        self.groups = self._checked_groups(self.config.groups or default_groups(self.space))
        self._tables = {}
        self.pool_devices = train_devices + tuple(d for d in valid_devices if d not in train_devices)
        ms = data.select_devices(self.pool_devices).latency_ms[rows]
        measured = np.isfinite(ms)
        if measured.sum(0).min() < 2:
            bad = self.pool_devices[int(np.argmin(measured.sum(0)))]
            raise ValueError(f"pool device {bad!r} has fewer than 2 measured architectures")
        self.lut = self._fit_luts(data.archs[rows], ms, measured) if "luts" in self.groups else None
        self.nets = []
        if "mlp" in self.groups:
            self._fit_nets(data.archs[rows], ms, measured, progress)

    def _checked_groups(self, groups) -> tuple[str, ...]:
        groups = tuple(groups)
        if "detail" in groups and not self.space.detail_names:
            raise ValueError(f"the {self.space.name} space has no op-type costs: drop 'detail' from the groups")
        return groups

    def _fit_luts(self, archs: np.ndarray, ms: np.ndarray, measured: np.ndarray) -> np.ndarray:
        """Per pool device, ridge least squares of its ms on the one-hot encoding and a constant (its rows only)."""
        x = np.concatenate([self.space.one_hot(archs).astype(np.float64), np.ones((len(archs), 1))], axis=1)
        lut = np.empty((x.shape[1], ms.shape[1]))
        ridge = self.config.lut_ridge * np.eye(x.shape[1])
        for j in range(ms.shape[1]):
            xj = x[measured[:, j]]
            lut[:, j] = np.linalg.solve(xj.T @ xj + ridge, xj.T @ ms[measured[:, j], j])
        return lut

    def _fit_nets(self, archs: np.ndarray, ms: np.ndarray, measured: np.ndarray, progress: bool) -> None:
        cfg = self.config
        enc = self.space.encode(archs)
        self.encoding = Standardiser.of(enc)
        log_lat = np.log(ms)
        self.y_mean, self.y_std = moments(log_lat)
        x = self.encoding(enc)
        y = torch.tensor(np.nan_to_num((log_lat - self.y_mean) / self.y_std), dtype=torch.float32)
        mask = torch.tensor(measured, dtype=torch.float32)
        bar = progress_bar(cfg.steps * cfg.ensemble, "meta-training (pool networks)", progress)
        for k in range(cfg.ensemble):
            torch.manual_seed(cfg.seed + k)
            net = PoolLatencyNet(x.shape[1], len(self.pool_devices), cfg.hidden, cfg.depth)
            gen = torch.Generator().manual_seed(cfg.seed + k)

            def loss(_):
                b = torch.randint(0, len(x), (min(cfg.batch_size, len(x)),), generator=gen)
                return (((net(x[b]) - y[b]) ** 2) * mask[b]).sum() / mask[b].sum().clamp(min=1)

            final = train_adam(net.parameters(), loss, cfg.steps, cfg.lr, cfg.weight_decay, scheduler="one-cycle",
                               on_step=lambda: bar.update(1))
            self.nets.append(net.eval().requires_grad_(False))
            log.info("pool net %d/%d: final batch loss %.4f", k + 1, cfg.ensemble, final)
        bar.close()
        self._compile_nets()

    def _compile_nets(self) -> None:
        """The ensemble as float32 numpy layers for inference: the input standardisation folded into the first
        layer (one matrix for all networks), the later ones stacked per network, the average into the last."""
        layers = [[m for m in net.body if isinstance(m, torch.nn.Linear)] for net in self.nets]
        first = [(lin[0].weight.numpy() / self.encoding.std, lin[0].bias.numpy()) for lin in layers]
        w1 = np.concatenate([w for w, _ in first], axis=0).T
        b1 = np.concatenate([b - w @ self.encoding.mean for w, b in first])
        hidden = [(np.stack([lin[i].weight.numpy().T for lin in layers]), np.stack([lin[i].bias.numpy() for lin in layers]))
                  for i in range(1, len(layers[0]) - 1)]
        last_w = np.concatenate([lin[-1].weight.numpy().T for lin in layers], axis=0) / len(layers)
        last_b = np.mean([lin[-1].bias.numpy() for lin in layers], axis=0)
        self._numpy_nets = (np.ascontiguousarray(w1, np.float32), b1.astype(np.float32),
                            [(w.astype(np.float32), b.astype(np.float32)) for w, b in hidden],
                            np.ascontiguousarray(last_w, np.float32), last_b.astype(np.float32))

    # -------------------------------------------------------------- features
    def widths(self) -> dict[str, int]:
        """Features per group."""
        n_pool = len(self.pool_devices)
        return {"flops": 1, "cost3": 3, "detail": len(self.space.detail_names), "luts": n_pool, "mlp": n_pool}

    def features(self, indices: np.ndarray, groups=None) -> dict[str, np.ndarray]:
        """Raw features ``group -> [n, width]`` float64 of index rows ``[n, arch_length]`` (default: every group).
        The groups that are sums over the space's terms (:meth:`~help_plugin.spaces.SearchSpace.terms`) come from
        one gather-and-sum, the others from the space's functions."""
        groups = self.groups if groups is None else tuple(groups)
        summed = tuple(g for g in groups if self._term_table(g) is not None)
        out = {}
        if summed:
            table, const = self._summed_table(summed)
            terms = self.space.terms(indices)
            x = np.concatenate([table[terms[i:i + PREDICT_CHUNK]].sum(1) for i in range(0, len(terms), PREDICT_CHUNK)]
                               or [np.zeros((0, table.shape[1]))]) + const
            out.update(zip(summed, np.split(x, np.cumsum([self.widths()[g] for g in summed])[:-1], axis=1)))
        rest = set(groups) - set(out)
        costs = self.space.cost_features(indices) if {"flops", "cost3", "mlp"} & rest else None
        if costs is not None:
            out.update({g: c for g, c in (("flops", costs[:, :1]), ("cost3", costs[:, 1:])) if g in rest})
        if "detail" in rest:
            out["detail"] = self.space.detail_features(indices)
        one_hot = self.space.one_hot(indices) if {"luts", "mlp"} & rest else None
        if "luts" in rest:
            out["luts"] = one_hot @ self.lut[:-1] + self.lut[-1]
        if "mlp" in rest:
            out["mlp"] = self.pool_ms(indices, costs, one_hot)
        return {g: out[g] for g in groups}

    def _term_table(self, group: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(per term [n_terms, width], constant [width])`` of a group that is a sum over the space's terms, else
        ``None`` (computed once)."""
        if group not in self._tables:
            try:
                tables = self.space.term_tables()
            except NotImplementedError:  # the space has no terms
                tables = {}
            width = self.widths()[group]
            table = {"flops": lambda: tables["costs"][:, :1], "cost3": lambda: tables["costs"][:, 1:],
                     "detail": lambda: tables["detail"], "luts": lambda: tables["one_hot"] @ self.lut[:-1]}
            try:
                self._tables[group] = (table[group](), self.lut[-1] if group == "luts" else np.zeros(width))
            except KeyError:
                self._tables[group] = None
        return self._tables[group]

    def _summed_table(self, groups: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_term_table` of ``groups`` side by side (computed once per combination)."""
        if groups not in self._tables:
            parts = [self._term_table(g) for g in groups]
            self._tables[groups] = (np.concatenate([t for t, _ in parts], 1), np.concatenate([c for _, c in parts]))
        return self._tables[groups]

    def pool_ms(self, indices: np.ndarray, costs: np.ndarray | None = None, one_hot: np.ndarray | None = None
                ) -> np.ndarray:
        """The pool networks' predicted ms on every pool device, ``[n, n_pool]`` (in :attr:`pool_devices` order);
        ``costs``/``one_hot`` may pass in the space's ``cost_features``/``one_hot`` of ``indices``."""
        if not self.nets:
            raise ValueError("this help+ model has no pool networks (its groups lack 'mlp')")
        w1, b1, hidden, w_last, b_last = self._numpy_nets
        h = self.space.encode(indices, costs, one_hot) @ w1
        h += b1
        np.maximum(h, 0, out=h)
        for w, b in hidden:  # each network's slice of h through its own layer
            h = np.matmul(h.reshape(len(h), len(w), -1).transpose(1, 0, 2), w) + b[:, None]
            np.maximum(h, 0, out=h)
            h = h.transpose(1, 0, 2).reshape(len(indices), -1)
        z = h @ w_last + b_last
        return np.exp(z.astype(np.float64) * self.y_std + self.y_mean)

    def _design(self, feats: dict, log_link: bool, xp=np):
        """The head's input ``[n, P]`` (every group, in order; zeros for groups not in ``feats``), transformed for
        the link. ``feats`` holds numpy arrays (``xp=np``) or torch tensors (``xp=torch``)."""
        widths, cols = self.widths(), []
        n = len(next(iter(feats.values())))
        for g in self.groups:
            x = feats.get(g)
            if x is None:
                x = xp.zeros((n, widths[g]), dtype=xp.float64)
            elif log_link and GROUPS[g] == "log1p":
                x = xp.log1p(x)
            elif log_link and GROUPS[g] == "log":
                x = xp.log(x.clip(min=1e-6))
            cols.append(x)
        return xp.cat(cols, 1) if xp is torch else np.concatenate(cols, 1)

    def design_features(self, indices: np.ndarray) -> np.ndarray:
        """Every group's features for the identity link (the link the shot design was chosen with)."""
        return self._design(self.features(indices), log_link=False)

    def _active(self, head: GroupRidgeHead) -> tuple[str, ...]:
        """The groups with weight in ``head`` (the only ones its predictions need)."""
        return tuple(g for g in self.groups if (head.strength[self._columns(g)] > 0).any())

    # -------------------------------------------------------------- a device
    def _fit(self, reference_ms, shot_idx, shot_ms, leave_one_out: bool = False) -> list[GroupRidgeHead]:
        """``[the head]`` on all measurements or, ``leave_one_out``, the heads without one measurement each."""
        check_reference_spread(reference_ms)
        idx = np.concatenate([self.reference_indices, shot_idx])
        ms = np.concatenate([reference_ms, shot_ms])
        feats = self.features(idx)
        x = {link: self._design(feats, link == "log") for link in self.config.links}
        n = len(ms)
        keep = np.array([np.delete(np.arange(n), i) for i in range(n)]) if leave_one_out else None
        required = [g in REQUIRED for g in self.groups]
        widths = [self.widths()[g] for g in self.groups]
        return fit_heads(x, ms, widths, required, keep, self.config.guard)

    def adapt(self, reference_ms: np.ndarray, shot_idx: np.ndarray, shot_ms: np.ndarray) -> GroupRidgeHead:
        return self._fit(reference_ms, shot_idx, shot_ms)[0]

    def predict(self, head: GroupRidgeHead, indices: np.ndarray, return_std: bool = False):
        if return_std:
            return self._predict_features(head, indices, True)
        compiled = self._compiled(head)
        if compiled is None:
            return self._predict_features(head, indices)
        kind, table, arg = compiled
        if kind == "every":  # table [all archs], arg: the strides of the index rows
            return table[indices @ arg]
        return head.ms(table[self.space.terms(indices)].sum(1) + arg)  # folded: table per term, arg the constant

    def predict_one(self, head: GroupRidgeHead, arch) -> float:
        """One architecture through the head's compiled table in plain Python: its terms (or its position in
        the enumerated space) are remembered per memo key (:meth:`~help_plugin.spaces.SearchSpace.memo_key`),
        so a repeated string or dict is one lookup and a short sum; the same value as :meth:`predict` to float
        rounding."""
        compiled = self._compiled(head)
        if compiled is None:
            return super().predict_one(head, arch)
        kind, values, const = head.__dict__.get("_scalar") or self._scalar(head, compiled)
        key = arch if type(arch) is str else self.space.memo_key(arch)
        row = self._arch_rows.get(key) if key is not None else None
        if row is None:
            indices = self.space.to_indices(arch[None] if isinstance(arch, np.ndarray) else [arch])  # validates
            row = int(indices[0] @ compiled[2]) if kind == "every" else self.space.row_terms(indices[0])
            if key is not None:
                if len(self._arch_rows) >= PARSE_MEMO_SIZE:
                    self._arch_rows.clear()
                self._arch_rows[key] = row
        return self._scalar_sum(head, kind, values, const, row)

    def predict_row(self, head: GroupRidgeHead, row: np.ndarray) -> float:
        """:meth:`predict_one` of a valid index row, through the compiled table without the parse or its memo."""
        compiled = self._compiled(head)
        if compiled is None:
            return super().predict_row(head, row)
        kind, values, const = head.__dict__.get("_scalar") or self._scalar(head, compiled)
        return self._scalar_sum(head, kind, values, const,
                                int(np.asarray(row) @ compiled[2]) if kind == "every" else self.space.row_terms(row))

    @staticmethod
    def _scalar_sum(head: GroupRidgeHead, kind: str, values: list, const: float, row) -> float:
        """The compiled table's value at ``row`` (a position in the enumerated space, or the arch's terms)."""
        if kind == "every":
            return values[row]
        t = sum(map(values.__getitem__, row), const)
        return t if t >= head.floor else float(head.ms(np.array([t]))[0])

    def _scalar(self, head: GroupRidgeHead, compiled) -> tuple[str, list, float]:
        """The compiled table as Python floats, for :meth:`predict_one` (built once per head)."""
        kind, table, arg = compiled
        head.__dict__["_scalar"] = (kind, table.tolist(), 0.0 if kind == "every" else float(arg))
        return head.__dict__["_scalar"]

    def _predict_features(self, head: GroupRidgeHead, indices: np.ndarray, return_std: bool = False):
        """:meth:`predict` through the features of the head's active groups, in chunks."""
        if not len(indices):
            return (np.zeros(0), np.zeros(0)) if return_std else np.zeros(0)
        groups = self._active(head)
        parts = [head.predict(self._design(self.features(indices[i:i + PREDICT_CHUNK], groups), head.log_link),
                              return_std) for i in range(0, len(indices), PREDICT_CHUNK)]
        return tuple(np.concatenate(p) for p in zip(*parts)) if return_std else np.concatenate(parts)

    def _compiled(self, head: GroupRidgeHead):
        """The head as a table, built on first use: ``("every", ms of every architecture [N], index strides)`` on
        an enumerable space, ``("folded", table [arch_length, max_choice], constant)`` for a foldable head (see the
        module docstring), else ``None``."""
        if "_compiled" not in head.__dict__:
            folded = self._folded(head)
            compiled = None if folded is None else ("folded", *folded)
            head.__dict__["_compiled"] = compiled
            every = self.space.every_index()
            if every is not None:
                strides = np.cumprod((1,) + self.space.choices[:0:-1])[::-1]
                compiled = ("every", self.predict(head, every), strides)
            head.__dict__["_compiled"] = compiled
        return head.__dict__["_compiled"]

    def _folded(self, head: GroupRidgeHead):
        """``(per term [n_terms], constant)`` with ``t = sum of the architecture's terms + constant`` for an
        identity-link head whose active groups are all sums over the space's terms, else ``None``."""
        active = self._active(head)
        if head.log_link or not active or any(self._term_table(g) is None for g in active):
            return None
        table, const = self._fold(active, head.weights[None], np.array([head.offset]))
        return table[:, 0], float(const[0])

    def _fold(self, groups: tuple[str, ...], weights: np.ndarray, offsets: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """Identity-link heads ``t = x @ weights[k] + offsets[k]`` (``weights`` ``[K, P]``) whose weight is all on
        ``groups``, sums over the space's terms, as ``(per term [n_terms, K], constant [K])``."""
        table, const = self._summed_table(groups)
        columns = np.concatenate([self._columns(g) for g in groups])
        w = weights[:, columns].T
        return table @ w, offsets + const @ w

    def _columns(self, group: str) -> np.ndarray:
        """The columns of ``group`` in the head's input."""
        widths = self.widths()
        start = sum(widths[g] for g in self.groups[:self.groups.index(group)])
        return np.arange(start, start + widths[group])

    def leave_one_out(self, head: GroupRidgeHead, reference_ms, shot_idx, shot_ms) -> HeldOut:
        """Any measurement can be left out (references too): each held-out head makes every choice again
        (standardisation, strengths, link), all in one batched fit; the queried archs' features are computed
        once for all heads; the full head's prediction is :meth:`predict`'s own."""
        heads = self._fit(reference_ms, shot_idx, shot_ms, leave_one_out=True)
        groups = tuple(g for g in self.groups if any(g in self._active(h) for h in heads))
        weights = np.stack([h.weights for h in heads])
        offsets = np.array([h.offset for h in heads])
        log_link = np.array([h.log_link for h in heads])
        floors = np.array([h.floor for h in heads])

        if all(self._term_table(g) is not None for g in groups):
            predict_t = self._term_predictor(groups, weights, offsets, log_link)
        else:
            def predict_t(indices: np.ndarray) -> np.ndarray:
                feats = self.features(indices, groups)
                t = np.empty((len(heads), len(indices)))
                for link in (False, True):
                    rows = np.flatnonzero(log_link == link)
                    if len(rows):
                        t[rows] = (self._design(feats, link) @ weights[rows].T + offsets[rows]).T
                return t

        def predict(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            t = predict_t(indices)
            ms = np.where(log_link[:, None], positive(t, True, 0.0), positive(t, False, floors[:, None]))
            return self.predict(head, indices), ms

        return HeldOut([np.array([i]) for i in range(len(heads))], predict, self._row_predictor((head, *heads)))

    def _row_predictor(self, heads: tuple[GroupRidgeHead, ...]):
        """``row [L] -> (ms of heads[0], log ms of the others [K], in no fixed order)`` for one valid index row,
        through one table gather for all heads, where their groups are all sums over the space's terms (else
        ``None``): the identity-link heads folded into per-term columns, beside the features the log-link heads
        transform (what :meth:`_term_predictor` computes for many rows, written for one). The others come in log ms
        because that is what a bound needs (:meth:`~help_plugin.predictors.calibration.Calibration.row_bound`): a
        log-link head's is its output itself, not ``log(exp(.))``."""
        groups = tuple(g for g in self.groups if any(g in self._active(h) for h in heads))
        if not groups or any(self._term_table(g) is None for g in groups):
            return None
        log_link = np.array([h.log_link for h in heads])
        weights, offsets = np.stack([h.weights for h in heads]), np.array([h.offset for h in heads])
        identity, log_rows = np.flatnonzero(~log_link), np.flatnonzero(log_link)
        order = np.concatenate([identity, log_rows])
        first = int(np.flatnonzero(order == 0)[0])  # where heads[0] lands in the output order
        floors = np.array([heads[i].floor for i in identity])
        table, const = self._summed_table(groups)
        columns = np.concatenate([self._columns(g) for g in groups])
        w_log, off_log = weights[log_rows][:, columns].T, offsets[log_rows]
        folded, folded_const = self._fold(groups, weights[identity], offsets[identity])
        kinds = np.concatenate([[GROUPS[g]] * self.widths()[g] for g in groups])
        # the log link's transform as log(max(x + shift, low)): log1p(x) for costs (>= 0), log(max(x, 1e-6)) for ms;
        # the shift goes into the constant (it is 0 on the columns taken as they are)
        shift, low = (kinds == "log1p").astype(np.float64), np.where(kinds == "log1p", 0.0, 1e-6)
        gather_const = np.concatenate([folded_const, const + shift]) if len(log_rows) else folded_const
        # the constant is one more gathered row, so one gather and one sum give every head's output
        gather = np.concatenate([np.concatenate([folded, table], 1) if len(log_rows) else folded, gather_const[None]])
        const_row = len(gather) - 1
        as_is = np.flatnonzero([k is None for k in kinds])  # columns the log link takes as they are
        n_id = len(identity)

        def predict_one(row) -> tuple[float, np.ndarray]:
            terms = self.space.row_terms(row)  # a list: numpy indexes by an array of it faster than by the list
            x = np.add.reduce(gather.take(np.fromiter([*terms, const_row], np.intp, len(terms) + 1), 0))
            t = x[:n_id]
            if (t < floors).any():
                t = positive(t, False, floors)
            log_ms = np.log(t)
            if len(log_rows):
                f = x[n_id:]
                design = np.log(np.maximum(f, low))
                if len(as_is):
                    design[as_is] = f[as_is]
                log_ms = np.concatenate([log_ms, design @ w_log + off_log])
            full = float(t[first]) if first < n_id else math.exp(min(float(log_ms[first]), 700.0))  # positive()
            log_ms[first] = log_ms[0]  # heads[0] out, the others in log_ms[1:]
            return full, log_ms[1:]

        return predict_one

    def _term_predictor(self, groups: tuple[str, ...], weights: np.ndarray, offsets: np.ndarray,
                        log_link: np.ndarray):
        """``indices [m, L] -> t [K, m]`` of heads ``t = design(x) @ weights[k] + offsets[k]`` whose weight is
        on ``groups``, all sums over the space's terms: the identity-link heads folded into one table per term,
        the log-link heads through the features gathered from the terms, transformed column by column."""
        identity, log_rows = np.flatnonzero(~log_link), np.flatnonzero(log_link)
        table, const = self._summed_table(groups)
        folded = self._fold(groups, weights[identity], offsets[identity]) if len(identity) else None
        columns = np.concatenate([self._columns(g) for g in groups])
        w_log, off_log = weights[log_rows][:, columns].T, offsets[log_rows]
        kinds = np.concatenate([[GROUPS[g]] * self.widths()[g] for g in groups])
        log1p_cols, log_cols = np.flatnonzero(kinds == "log1p"), np.flatnonzero(kinds == "log")

        def predict_t(indices: np.ndarray) -> np.ndarray:
            t = np.empty((len(log_link), len(indices)))
            for i in range(0, len(indices), PREDICT_CHUNK):
                terms, out = self.space.terms(indices[i:i + PREDICT_CHUNK]), slice(i, i + PREDICT_CHUNK)
                if folded is not None:
                    t[identity, out] = (folded[0][terms].sum(1) + folded[1]).T
                if len(log_rows):
                    x = table[terms].sum(1) + const
                    x[:, log1p_cols] = np.log1p(x[:, log1p_cols])
                    x[:, log_cols] = np.log(x[:, log_cols].clip(min=1e-6))
                    t[log_rows, out] = (x @ w_log + off_log).T
            return t

        return predict_t

    def predict_tensor(self, head: GroupRidgeHead, probs: torch.Tensor) -> torch.Tensor:
        p = probs.to(torch.float64)
        groups = self._active(head)
        costs = self.space.relaxed_costs(p)
        feats = {"flops": costs[:, :1], "cost3": costs[:, 1:]}
        if "detail" in groups:
            feats["detail"] = self.space.relaxed_detail_features(p)
        if "luts" in groups:
            one_hot = self.space.relaxed_encode(p, costs)[:, :int(sum(self.space.choices))]
            feats["luts"] = one_hot @ torch.from_numpy(self.lut[:-1]) + torch.from_numpy(self.lut[-1])
        if "mlp" in groups:
            feats["mlp"] = self._pool_ms_torch(self.space.relaxed_encode(probs, costs).to(torch.float32))
        x = self._design({g: feats[g] for g in groups}, head.log_link, torch)
        return head.predict_torch(x).to(probs.dtype)

    def _pool_ms_torch(self, encoding: torch.Tensor) -> torch.Tensor:
        """Differentiable :meth:`pool_ms` of encodings ``[n, encoding_dim]`` (float32 networks), float64."""
        x = (encoding - torch.as_tensor(self.encoding.mean)) / torch.as_tensor(self.encoding.std)
        z = sum(net(x) for net in self.nets) / len(self.nets)
        return torch.exp(z.double() * torch.as_tensor(self.y_std).double() + torch.as_tensor(self.y_mean).double())

    # -------------------------------------------------------------- persistence
    def _state(self):
        tensors = {}
        if self.lut is not None:
            tensors["lut"] = torch.from_numpy(self.lut)
        if self.nets:
            tensors.update({**self.encoding.state("enc_"), "y_mean": torch.from_numpy(self.y_mean),
                            "y_std": torch.from_numpy(self.y_std)})
        for k, net in enumerate(self.nets):
            tensors.update({f"net{k}.{n}": p.detach() for n, p in net.state_dict().items()})
        return {"pool_devices": list(self.pool_devices), "groups": list(self.groups), "n_nets": len(self.nets)}, tensors

    def _expected_state(self):
        spec, n_pool = {}, len(self.pool_devices)
        if "luts" in self.groups:
            spec["lut"] = ((int(sum(self.space.choices)) + 1, n_pool), torch.float64)
        if "mlp" in self.groups:
            spec.update({**Standardiser.spec("enc_", self.space.encoding_dim), "y_mean": ((n_pool,), torch.float32),
                         "y_std": ((n_pool,), torch.float32)})
            net = PoolLatencyNet(self.space.encoding_dim, n_pool, self.config.hidden, self.config.depth)
            for k in range(len(self.nets)):
                spec.update(module_spec(f"net{k}.", net))
        return spec

    @classmethod
    def upgrade_checkpoint(cls, path, meta, tensors):
        """An adapted model saved before the evidence head (``head.alpha``: one ridge strength per group of
        costs and pool ms, identity link, no floor): the same head, guarded at half its smallest stored
        measurement, so it predicts as before except where that was below it (now > 0)."""
        if not meta.get("adapted") or "head.log_link" in tensors or "head.alpha" not in tensors:
            return tensors
        if "reference_latencies_ms" not in tensors or "shot_latencies_ms" not in tensors:
            raise CheckpointError(f"{path} was adapted by an early help-plugin with help+'s earlier head and does not "
                                  "keep its measurements: adapt the model again")
        measured = torch.cat([tensors["reference_latencies_ms"], tensors["shot_latencies_ms"]]).double()
        head = sub_state(tensors, "head.")
        alpha, n = head["alpha"].double(), len(head["coef"])
        per_feature = alpha.repeat(n) if len(alpha) == 1 else torch.cat([alpha[:1].repeat(4), alpha[1:].repeat(n - 4)])
        upgraded = {k: v for k, v in head.items() if k != "alpha"}
        upgraded.update({"log_link": torch.zeros(1, dtype=torch.float64), "strength": 1.0 / per_feature,
                         "floor": cls.config_class().guard * measured.min().reshape(1)})
        return {**{k: v for k, v in tensors.items() if not k.startswith("head.")},
                **{f"head.{k}": v for k, v in upgraded.items()}}

    @classmethod
    def from_state(cls, space, meta: dict, tensors: dict[str, torch.Tensor]) -> "PoolBasisLearner":
        if "groups" not in meta:  # saved before the pool LUTs: its MLP ensemble carries the same head features
            known = {f.name for f in fields(PoolBasisConfig)}
            config = {k: v for k, v in meta["config"].items() if k in known}
            meta = {**meta, "groups": list(EARLIER_GROUPS), "config": {**config, "groups": list(EARLIER_GROUPS)}}
        return super().from_state(space, meta, tensors)

    def _from_state(self, meta, tensors) -> None:
        self.pool_devices = tuple(meta["pool_devices"])
        self.groups = self._checked_groups(meta["groups"])
        if "luts" in self.groups:
            self.lut = tensors["lut"].numpy()
        if "mlp" in self.groups:
            self.encoding = Standardiser.from_state(tensors, "enc_")
            self.y_mean, self.y_std = tensors["y_mean"].numpy(), tensors["y_std"].numpy()
            for k in range(int(meta["n_nets"])):
                net = PoolLatencyNet(self.space.encoding_dim, len(self.pool_devices), self.config.hidden,
                                     self.config.depth)
                net.load_state_dict(sub_state(tensors, f"net{k}."))
                self.nets.append(net.eval().requires_grad_(False))
            if not self.nets:
                raise ValueError("the groups include 'mlp' but the checkpoint has no pool networks")
            self._compile_nets()

