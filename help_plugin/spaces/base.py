"""The search-space interface: parse, validate, encode, sample and cost an architecture.

Every space stores an architecture internally as a vector of integer choice indices
(``space.arch_length`` positions, position ``i`` taking values ``0 .. space.choices[i] - 1``).
Batches are ``np.ndarray`` of shape ``[n, arch_length]`` and dtype ``int64``; every public
method accepts the user-facing forms (strings, lists, dicts) and converts at the boundary.

Adding a search space means adding one module that subclasses :class:`SearchSpace` and
registers it with :func:`help_plugin.spaces.register`.
"""
from __future__ import annotations

import abc
import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np

#: Names of the analytic cost features, in column order of :meth:`SearchSpace.cost_features`.
COST_FEATURES = ("flops", "params", "memory", "kernels")
#: Parsed architectures :meth:`SearchSpace.to_indices` remembers per space instance (then it starts afresh;
#: up to ~1 kB each for dict forms).
PARSE_MEMO_SIZE = 100_000
#: Spaces of at most this many architectures can be enumerated (:meth:`SearchSpace.every_index`).
ENUMERABLE = 1 << 16


class SearchSpace(abc.ABC):
    """Base class of a search space (one instance per space, stateless).

    Subclasses set ``name`` and ``choices`` and implement :meth:`parse`, :meth:`format`
    and :meth:`cost_features` (or provide ``_cost_table`` for additive spaces).
    """

    name: str = ""
    #: Number of options at each position of the index vector.
    choices: tuple[int, ...] = ()

    @property
    def arch_length(self) -> int:
        return len(self.choices)

    # ------------------------------------------------------------------ parsing
    @abc.abstractmethod
    def parse(self, arch: Any) -> np.ndarray:
        """Validate one architecture in any accepted form; return its index vector ``[arch_length]``.

        Raises ``ValueError``/``TypeError`` naming the offending value.
        """

    @abc.abstractmethod
    def format(self, indices: Sequence[int]) -> Any:
        """The canonical user-facing form of one index vector (string or dict)."""

    def canonical(self, arch: Any) -> str:
        """A canonical string key for ``arch`` (stable across input forms)."""
        out = self.format(self.to_indices([arch])[0] if isinstance(arch, np.ndarray) else self.parse(arch))
        return out if isinstance(out, str) else self._dict_key(out)

    @staticmethod
    def _dict_key(d: dict) -> str:
        import json

        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    def to_indices(self, archs: Any) -> np.ndarray:
        """Parse a batch: a sequence of architectures, or an int array ``[n, arch_length]``.

        Returns ``np.ndarray[int64]`` of shape ``[n, arch_length]``. Architectures given as strings (and
        other forms :meth:`memo_key` can key) are parsed once: the rows of up to :data:`PARSE_MEMO_SIZE`
        of them are remembered (parsing is a pure function of the form; forms not seen yet are validated).
        """
        if isinstance(archs, np.ndarray) and archs.dtype.kind in "iu":
            arr = archs.reshape(1, -1) if archs.ndim == 1 else archs
            self.check_indices(arr)
            return arr.astype(np.int64, copy=False)
        if type(archs) is not list and (isinstance(archs, (str, dict)) or not isinstance(archs, Iterable)):
            raise TypeError(
                f"expected a sequence of {self.name} architectures, got a single {type(archs).__name__}; "
                "wrap it in a list"
            )
        memo = self.__dict__.setdefault("_parsed", {})
        rows = []
        for a in archs:
            if isinstance(a, np.ndarray):
                rows.append(self._check_row(a))
                continue
            key = a if type(a) is str else self.memo_key(a)
            row = memo.get(key) if key is not None else None
            if row is None:
                row = self.parse(a)
                if key is not None:
                    if len(memo) >= PARSE_MEMO_SIZE:
                        memo.clear()
                    memo[key] = row
            rows.append(row)
        if not rows:
            return np.zeros((0, self.arch_length), dtype=np.int64)
        return np.array(rows, dtype=np.int64)

    def memo_key(self, arch: Any):
        """A hashable key that determines ``parse(arch)`` entirely, for the memo of :meth:`to_indices`, or
        ``None`` (not remembered). Strings are their own key; a space whose canonical form is not a string may
        key it here (see the OFA space)."""
        return None

    def _names_to_indices(self, values, names: Sequence[str], item: str, where: str) -> np.ndarray:
        """Map a sequence of choice names or indices (``names`` order) to an index vector.

        ``item``/``where`` word the errors, e.g. ``"op"``/``"edge"`` -> "unknown op 'x' on edge 2".
        """
        out = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            if isinstance(v, str):
                if v not in names:
                    raise ValueError(f"{self.name}: unknown {item} {v!r} on {where} {i}; expected one of {tuple(names)}")
                out[i] = names.index(v)
            elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                if not 0 <= v < len(names):
                    raise ValueError(f"{self.name}: {item} index {v} on {where} {i} is out of range 0..{len(names) - 1}")
                out[i] = v
            else:
                raise TypeError(f"{self.name}: the {item} on {where} {i} must be a name or an index, got {v!r}")
        return out

    def _check_row(self, row: np.ndarray) -> np.ndarray:
        if row.dtype.kind not in "iu":
            return self.parse(row)
        self.check_indices(row.reshape(1, -1))
        return row.astype(np.int64)

    def check_indices(self, arr: np.ndarray) -> None:
        """Raise ``ValueError`` if an index array has the wrong shape or an out-of-range value."""
        if arr.ndim != 2 or arr.shape[1] != self.arch_length:
            raise ValueError(
                f"{self.name}: index array must have shape [n, {self.arch_length}], got {list(arr.shape)}"
            )
        limits = self.__dict__.get("_choices_array")
        if limits is None:
            limits = self.__dict__["_choices_array"] = np.asarray(self.choices)
        if arr.size and (arr.min() < 0 or (arr >= limits).any()):
            bad = (arr < 0) | (arr >= limits)
            if bad.any():
                row, col = map(int, np.argwhere(bad)[0])
                raise ValueError(
                    f"{self.name}: index {int(arr[row, col])} at position {col} of architecture {row} "
                    f"is out of range 0..{self.choices[col] - 1}"
                )

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """``n`` architectures drawn uniformly at random, as indices ``[n, arch_length]``."""
        rng = np.random.default_rng(seed)  # row by row, so sample(n) is a prefix of sample(n + m)
        return rng.integers(0, np.asarray(self.choices), size=(n, self.arch_length)).astype(np.int64)

    def every_index(self) -> np.ndarray | None:
        """Every architecture's index row ``[N, arch_length]`` in row-major order (row ``i`` is architecture
        ``i``), for a space of at most :data:`ENUMERABLE` architectures (NAS-Bench-201's 15,625); else ``None``."""
        size = math.prod(self.choices)
        if size > ENUMERABLE:
            return None
        return np.stack(np.unravel_index(np.arange(size), self.choices), 1).astype(np.int64)

    def sample_distinct(self, n: int, seed: int, taken: set[str]) -> np.ndarray:
        """``n`` random architectures ``[n, arch_length]`` whose :meth:`canonical` keys are not in ``taken`` (which
        grows by them)."""
        out: list[np.ndarray] = []
        rng_seed = seed
        while len(out) < n:
            for row in self.sample(4 * (n - len(out)) + 8, rng_seed):
                key = self.canonical(row)
                if key not in taken:
                    taken.add(key)
                    out.append(row)
                    if len(out) == n:
                        break
            rng_seed += 1_000_003
            if rng_seed - seed > 50 * 1_000_003:
                raise ValueError(f"could not draw {n} distinct {self.name} architectures")
        return np.stack(out) if out else np.zeros((0, self.arch_length), dtype=np.int64)

    # ------------------------------------------------------------------ encodings
    def one_hot(self, indices: np.ndarray) -> np.ndarray:
        """Concatenated one-hot encoding ``[n, sum(choices)]`` (float32)."""
        indices = self.to_indices(indices)
        offsets = np.concatenate([[0], np.cumsum(self.choices)[:-1]])
        out = np.zeros((len(indices), int(sum(self.choices))), dtype=np.float32)
        out[np.arange(len(indices))[:, None], indices + offsets] = 1.0
        return out

    def encode(self, indices: np.ndarray, costs: np.ndarray | None = None, one_hot: np.ndarray | None = None
               ) -> np.ndarray:
        """The predictor's input: one-hot plus log analytic costs, ``[n, encoding_dim]`` float32.

        ``costs`` and ``one_hot`` may pass in ``cost_features(indices)`` and ``one_hot(indices)`` when the caller
        has them already.
        """
        indices = self.to_indices(indices)
        costs = self.cost_features(indices) if costs is None else costs
        one_hot = self.one_hot(indices) if one_hot is None else one_hot
        return np.concatenate([one_hot, np.log1p(costs).astype(np.float32)], axis=1)

    @property
    def encoding_dim(self) -> int:
        return int(sum(self.choices)) + len(COST_FEATURES)

    # ------------------------------------------------------------------ costs
    _cost_table: np.ndarray | None = None  # [arch_length, max_choice, 4] for additive spaces

    def cost_features(self, indices: np.ndarray) -> np.ndarray:
        """Analytic cost of each architecture, ``[n, 4]`` float64.

        Columns (see ``COST_FEATURES``): multiply-accumulates (FLOPs), parameters,
        activation memory traffic (elements read + written) and number of kernels launched.
        """
        indices = self.to_indices(indices)
        table = self._flat_cost_table()
        offsets = np.arange(self.arch_length) * table.shape[0] // self.arch_length
        return table[indices + offsets].sum(axis=1) + self.fixed_cost()

    def _flat_cost_table(self) -> np.ndarray:
        if getattr(self, "_flat_table", None) is None:
            t = self.cost_table()
            self._flat_table = t.reshape(-1, t.shape[-1])
        return self._flat_table

    def cost_table(self) -> np.ndarray:
        """Per-position, per-choice cost ``[arch_length, max_choice, 4]`` of an additive space."""
        raise NotImplementedError(f"{self.name} is not an additive space")

    def fixed_cost(self) -> np.ndarray:
        """Cost of the parts of the network every architecture shares (stem, head), ``[4]``."""
        return np.zeros(len(COST_FEATURES))

    # ------------------------------------------------------------------ terms
    def terms(self, indices: np.ndarray) -> np.ndarray:
        """``[n, T]`` int64: the parts each architecture is the sum of, as rows of :meth:`term_tables` (its analytic
        costs and its one-hot encoding are the sums of those rows'), so that any feature linear in them is a
        gather-and-sum. Additive spaces (the default): each position's choice, then the fixed part; others raise
        ``NotImplementedError`` unless they define terms."""
        self.term_tables()  # the tables exist: the space is additive
        indices = self.to_indices(indices)
        width = max(self.choices)
        fixed = np.full((len(indices), 1), self.arch_length * width)
        return np.concatenate([indices + np.arange(self.arch_length) * width, fixed], axis=1)

    def parse_row(self, arch: Any) -> list[int]:
        """:meth:`parse` of one architecture as a list of choice indices, validated (a single query's path; spaces
        may answer it without building arrays)."""
        return self.to_indices([arch])[0].tolist()

    def row_terms(self, row) -> list[int]:
        """:meth:`terms` of one valid index row ``[arch_length]`` (array or list; not checked again), as a list in any
        order (only their sum is used): the path of a single query (spaces may answer it in plain Python)."""
        return self.terms(np.asarray(row, dtype=np.int64)[None])[0].tolist()

    def term_tables(self) -> dict[str, np.ndarray]:
        """Per term of :meth:`terms` (computed once): ``"costs"`` ``[n_terms, 4]``, ``"one_hot"``
        ``[n_terms, sum(choices)]`` and, where the op-type costs are additive too, ``"detail"``."""
        tables = self.__dict__.get("_term_tables")
        if tables is None:
            tables = self.__dict__["_term_tables"] = self._term_tables()
        return tables

    def _term_tables(self) -> dict[str, np.ndarray]:
        def per_term(table, fixed):
            return np.concatenate([table.reshape(-1, table.shape[-1]), fixed[None]])

        tables = {"costs": per_term(self.cost_table(), self.fixed_cost())}
        width, offsets = max(self.choices), np.concatenate([[0], np.cumsum(self.choices)[:-1]])
        tables["one_hot"] = np.zeros((len(tables["costs"]), int(sum(self.choices))))
        for pos, (start, n) in enumerate(zip(offsets, self.choices)):
            tables["one_hot"][pos * width + np.arange(n), start + np.arange(n)] = 1.0
        try:
            tables["detail"] = per_term(self._detail_table(), np.zeros(len(self.detail_names)))
        except NotImplementedError:
            pass
        return tables

    # ------------------------------------------------------------------ op-type costs
    #: Names of the columns of :meth:`detail_features`; empty: the space has none.
    detail_names: tuple[str, ...] = ()

    def detail_features(self, indices: np.ndarray) -> np.ndarray:
        """Op-type costs ``[n, len(detail_names)]`` float64: what the analytic costs lump together, split by the
        kind of operation (e.g. the MACs of 1x1 and of depthwise convolutions), for help+'s ``detail`` group.

        Default: the sum over positions of :meth:`detail_table` (a space whose op-type costs are additive).
        """
        indices = self.to_indices(indices)
        return self._detail_table()[np.arange(self.arch_length), indices].sum(axis=1)

    def detail_table(self) -> np.ndarray:
        """Per-position, per-choice op-type costs ``[arch_length, max_choice, len(detail_names)]`` of a space whose
        :meth:`detail_features` are a sum over positions."""
        raise NotImplementedError(f"{self.name} has no additive op-type costs")

    def _detail_table(self) -> np.ndarray:
        table = self.__dict__.get("_detail_table_cache")
        if table is None:
            table = self.__dict__["_detail_table_cache"] = self.detail_table()
        return table

    def relaxed_detail_features(self, probs):
        """Expected :meth:`detail_features` ``[n, len(detail_names)]`` under choice probabilities ``probs``
        ``[n, arch_length, max_choice]`` (a one-hot ``probs`` gives exactly :meth:`detail_features`)."""
        import torch

        table = torch.as_tensor(self._detail_table(), dtype=probs.dtype, device=probs.device)
        return torch.einsum("nlc,lck->nk", probs, table)

    def flops(self, arch: Any) -> float:
        """Multiply-accumulate count of one architecture."""
        return float(self.cost_features(self.to_indices([arch]))[0, 0])

    def params(self, arch: Any) -> float:
        """Parameter count of the searchable network (conv/linear weights)."""
        return float(self.cost_features(self.to_indices([arch]))[0, 1])

    # ------------------------------------------------------------------ networks
    input_shape: tuple[int, ...] = ()  # (channels, height, width) of one input image

    def build_network(self, arch: Any):
        """A ``torch.nn.Module`` of the architecture, as the benchmark measured it."""
        raise NotImplementedError(f"{self.name} has no network builder yet")

    def canonical_indices(self, indices: np.ndarray) -> np.ndarray:
        """Valid index rows ``[n, arch_length]`` with positions that do not change the network set to 0:
        equal rows, equal networks (used as cache keys). Default: the rows themselves."""
        return np.asarray(indices)

    def canonical_row(self, row) -> list[int]:
        """:meth:`canonical_indices` of one valid index row ``[arch_length]``, as a list (a single query's path;
        spaces may answer it in plain Python)."""
        return self.canonical_indices(np.asarray(row, dtype=np.int64)[None])[0].tolist()

    @property
    def measurement_settings(self) -> str:
        """What an instance times beyond the architecture (e.g. sequence lengths), for store keys."""
        return ""

    @property
    def has_network(self) -> bool:
        """Whether :meth:`build_network` is implemented (the space can be measured on a device)."""
        return type(self).build_network is not SearchSpace.build_network

    def input_size(self, arch: Any) -> tuple[int, ...]:
        """``(channels, height, width)`` of this architecture's input."""
        return self.input_shape

    def example_input(self, arch: Any, batch_size: int = 1) -> tuple:
        """The positional inputs of one forward pass of ``build_network(arch)``, for timing.

        Default: one random image batch ``[batch_size, *input_size(arch)]``. Spaces whose networks
        take other inputs (token ids, several tensors) override this.
        """
        import torch

        return (torch.randn(batch_size, *self.input_size(arch)),)

    # ------------------------------------------------------------------ relaxed (differentiable) input
    @property
    def differentiable(self) -> bool:
        """Whether :meth:`relaxed_encode` is available (additive spaces)."""
        try:
            self.cost_table()
        except NotImplementedError:
            return False
        return True

    def relaxed_costs(self, probs):
        """Expected analytic costs ``[n, 4]`` under choice probabilities ``[n, arch_length, max_choice]``."""
        import torch

        table = torch.as_tensor(self.cost_table(), dtype=probs.dtype, device=probs.device)
        fixed = torch.as_tensor(self.fixed_cost(), dtype=probs.dtype, device=probs.device)
        return torch.einsum("nlc,lck->nk", probs, table) + fixed

    def relaxed_encode(self, probs, costs=None):
        """Differentiable encoding from per-position choice probabilities.

        ``probs``: ``torch.Tensor`` ``[n, arch_length, max_choice]`` (rows sum to 1; a one-hot
        tensor gives exactly :meth:`encode`). ``costs`` may pass in :meth:`relaxed_costs`.
        Returns ``[n, encoding_dim]``.
        """
        import torch

        costs = self.relaxed_costs(probs) if costs is None else costs
        onehot = torch.cat([probs[:, i, :c] for i, c in enumerate(self.choices)], dim=1)
        return torch.cat([onehot, torch.log1p(costs)], dim=1)

    # ------------------------------------------------------------------ settings
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments of this instance (what a checkpoint stores to rebuild it exactly).

        ``deep`` is accepted for scikit-learn's ``clone``, which treats a space like an estimator parameter.
        """
        import inspect

        names = [n for n, p in inspect.signature(type(self).__init__).parameters.items()
                 if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return {n: getattr(self, n) for n in names}

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_params() == other.get_params()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.get_params().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ data and graph forms
    def help_archs(self, load: Callable[..., Any]) -> np.ndarray:
        """The architecture list of HELP's data layout for this space, as indices ``[n, arch_length]``.

        ``load(file_name, numpy_scalars=False)`` reads one ``.pt`` file of the space's folder safely
        (see :mod:`help_plugin.data.help_layout`).
        """
        raise ValueError(f"HELP's data has no {self.name!r} space")

    def graph_adjacency(self) -> np.ndarray:
        """Directed adjacency ``[N, N]`` of the architecture graph (``a[i, j] = 1``: node ``i`` receives from ``j``)
        that graph predictors (the BRP-NAS GCN baseline) use."""
        raise NotImplementedError(f"{self.name} has no graph form")

    def graph_features(self, indices: np.ndarray) -> np.ndarray:
        """Node features ``[n, N, F]`` float32 of each architecture's graph (see :meth:`graph_adjacency`)."""
        raise NotImplementedError(f"{self.name} has no graph form")

    @staticmethod
    def _chain_features(layers: np.ndarray) -> np.ndarray:
        """Per-layer features ``[n, N, F]`` of a chain graph plus the layer's position one-hot ``[n, N, F + N]``."""
        n, length = layers.shape[:2]
        pos = np.broadcast_to(np.eye(length, dtype=np.float32), (n, length, length))
        return np.concatenate([layers.astype(np.float32), pos], axis=2)
