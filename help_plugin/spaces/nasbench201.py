"""NAS-Bench-201: a cell of 4 nodes and 6 edges, each edge one of 5 operations.

Architectures are accepted as the NAS-Bench-201 string
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (the keys of HELP's ``str_arch2idx.pt``), as 6 op
names, or as 6 op indices in that string's edge order: ``1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2``.
Op indices follow the NAS-Bench-201 API: 0 none, 1 skip_connect, 2 nor_conv_1x1,
3 nor_conv_3x3, 4 avg_pool_3x3.

The network is the standard CIFAR one: a 3x3 stem (16 channels, 32x32 input), three stages of
5 cells (C = 16, 32, 64 at 32, 16, 8 pixels) joined by residual reduction blocks, global
pooling and a linear classifier.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import SearchSpace

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (target node, source node) of each edge, in string order.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
STAGES = ((16, 32), (32, 16), (64, 8))  # (channels, feature-map side)
CELLS_PER_STAGE = 5


def _op_cost(op: str, c: int, h: int) -> tuple[float, float, float, float]:
    """(MACs, params, memory elements, kernels) of one edge op, including its add into the node."""
    hw = h * h
    if op == "none":
        return (0.0, 0.0, 0.0, 0.0)
    if op == "skip_connect":
        return (0.0, 0.0, 2.0 * c * hw, 1.0)
    if op == "avg_pool_3x3":
        return (9.0 * c * hw, 0.0, 3.0 * c * hw, 2.0)
    k = 1 if op == "nor_conv_1x1" else 3
    # ReLU -> Conv(k x k) -> BN, then the add into the node sum
    return (float(k * k * c * c * hw), float(k * k * c * c), 5.0 * c * hw, 4.0)


class NASBench201(SearchSpace):
    """The NAS-Bench-201 cell space (15,625 architectures)."""

    name = "nasbench201"
    choices = (5,) * 6
    input_shape = (3, 32, 32)

    def __init__(self, num_classes: int = 10):
        self.num_classes = num_classes

    def parse(self, arch: Any) -> np.ndarray:
        if isinstance(arch, str):
            ops = self._ops_from_string(arch)
        elif isinstance(arch, (list, tuple, np.ndarray)):
            ops = list(arch)
        else:
            raise TypeError(
                f"nasbench201: an architecture is a string like '|nor_conv_3x3~0|+|...|' or 6 ops, "
                f"got {type(arch).__name__}: {arch!r}"
            )
        if len(ops) != 6:
            raise ValueError(f"nasbench201: an architecture has 6 edges, got {len(ops)}: {arch!r}")
        return self._names_to_indices(ops, OPS, "op", "edge")

    @staticmethod
    def _ops_from_string(s: str) -> list[str]:
        nodes = s.strip().strip("|").split("|+|")
        if len(nodes) != 3:
            raise ValueError(f"nasbench201: expected 3 nodes separated by '+', got {len(nodes)} in {s!r}")
        ops = []
        for target, node in enumerate(nodes, start=1):
            tokens = node.strip("|").split("|")
            if len(tokens) != target:
                raise ValueError(
                    f"nasbench201: node {target} must have {target} input edge(s), got {len(tokens)} in {s!r}"
                )
            for source, token in enumerate(tokens):
                op, sep, src = token.partition("~")
                if not sep or src != str(source):
                    raise ValueError(f"nasbench201: malformed edge {token!r} (expected 'op~{source}') in {s!r}")
                ops.append(op)
        return ops

    def format(self, indices) -> str:
        ops = [OPS[int(i)] for i in indices]
        return "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops)

    def help_archs(self, load) -> np.ndarray:
        """``str_arch2idx.pt``: NAS-Bench-201 string -> row."""
        str2idx = load("str_arch2idx.pt")
        archs = np.zeros((len(str2idx), 6), dtype=np.int64)
        for s, i in str2idx.items():
            archs[i] = self.parse(s)
        return archs

    def graph_adjacency(self) -> np.ndarray:
        """BRP-NAS's graph: node 0 = cell input, nodes 1..6 = the 6 edge operations (string order), node 7 =
        output. The op on edge ``s -> t`` receives from the ops on edges ending at ``s`` (from the input when
        ``s = 0``); the output collects the ops on edges ending at 3."""
        a = np.zeros((8, 8))
        for k, (t, s) in enumerate(EDGES):
            if s == 0:
                a[1 + k, 0] = 1
            a[1 + k, [1 + j for j, (t2, _) in enumerate(EDGES) if t2 == s]] = 1
            a[7, 1 + k] = float(t == 3)
        return a

    def graph_features(self, indices: np.ndarray) -> np.ndarray:
        """One-hot node type over (input, output, 5 ops), ``[n, 8, 7]``."""
        idx = self.to_indices(indices)
        n = len(idx)
        x = np.zeros((n, 8, 7), dtype=np.float32)
        x[:, 0, 0] = x[:, 7, 1] = 1.0
        x[np.arange(n)[:, None], np.arange(1, 7), 2 + idx] = 1.0
        return x

    def build_network(self, arch: Any):
        return build_network(self.parse(arch) if not isinstance(arch, np.ndarray) else arch, self.num_classes)

    def cost_table(self) -> np.ndarray:
        table = np.zeros((6, 5, 4))
        for c, h in STAGES:
            for o, op in enumerate(OPS):
                table[:, o] += CELLS_PER_STAGE * np.asarray(_op_cost(op, c, h))
        return table

    #: Counts of each op over all edges, then over the *live* edges (on a path of non-``none`` edges from the
    #: cell's input to its output: the others compute nothing that reaches the output), then whether any is live.
    detail_names = tuple(OPS[1:]) + tuple(f"live_{op}" for op in OPS[1:]) + ("has_live_path",)

    def detail_features(self, indices: np.ndarray) -> np.ndarray:
        """Op counts over all and over live edges and the live-path flag (see :attr:`detail_names`)."""
        idx = self.to_indices(indices)
        return _op_counts(np.eye(len(OPS))[idx], np.stack)

    def relaxed_detail_features(self, probs):
        """:meth:`detail_features` with each edge's op drawn from ``probs`` ``[n, 6, 5]``: an edge is on with
        probability ``1 - p(none)`` and a node reached as in a noisy OR of its inputs (exact for one-hot ``probs``)."""
        import torch

        return _op_counts(probs, torch.stack)

    def fixed_cost(self) -> np.ndarray:
        macs = 27 * 16 * 32 * 32  # stem
        params = 27 * 16
        for (c_in, _), (c_out, h) in zip(STAGES[:-1], STAGES[1:]):  # residual reduction blocks
            hw = h * h
            macs += 9 * c_in * c_out * hw + 9 * c_out * c_out * hw + c_in * c_out * hw
            params += 9 * c_in * c_out + 9 * c_out * c_out + c_in * c_out
        macs += 64 * self.num_classes
        params += 64 * self.num_classes
        memory = 2 * 16 * 32 * 32 + 2 * (32 * 16 * 16) * 3 + 2 * (64 * 8 * 8) * 3
        return np.array([macs, params, memory, 12.0])


def _op_counts(probs, stack):
    """:meth:`NASBench201.detail_features` of per-edge op probabilities ``[n, 6, 5]`` (numpy or torch, with its
    ``stack``): node reachability from the input and to the output as noisy ORs over the edges (0/1 for one-hot)."""
    on = 1 - probs[:, :, 0]
    reach = _noisy_or(on, (0, 1, 2, 3), lambda v: [(e, s) for e, (t, s) in enumerate(EDGES) if t == v])
    back = _noisy_or(on, (3, 2, 1, 0), lambda v: [(e, t) for e, (t, s) in enumerate(EDGES) if s == v])
    live = stack([reach[s] * back[t] for t, s in EDGES], 1)  # the edge's ends are connected to input and output
    ops = probs[:, :, 1:]
    live_ops = ops * live[:, :, None]
    return stack([ops[:, :, o].sum(1) for o in range(len(OPS) - 1)]
                 + [live_ops[:, :, o].sum(1) for o in range(len(OPS) - 1)] + [reach[3]], 1)


def _noisy_or(on, order, links) -> dict:
    """``node -> probability it is connected to order[0]`` along edges that are on with probability ``on[:, e]``,
    nodes visited in ``order``; ``links(v)``: ``(edge, neighbour)`` pairs joining ``v`` to nodes visited before."""
    reach = {order[0]: on[:, 0] * 0 + 1}
    for v in order[1:]:
        miss = 1
        for e, u in links(v):
            miss = miss * (1 - reach[u] * on[:, e])
        reach[v] = 1 - miss
    return reach


def build_network(indices, num_classes: int = 10, channels: int = 16, cells_per_stage: int = CELLS_PER_STAGE):
    """The NAS-Bench-201 CIFAR network of one architecture as a ``torch.nn.Module`` (input ``[b, 3, 32, 32]``)."""
    from torch import nn

    def relu_conv_bn(c_in, c_out, k, stride):
        return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out))

    class Zero(nn.Module):
        def forward(self, x):
            return x.mul(0.0)

    def op(name, c):
        return {"none": Zero, "skip_connect": nn.Identity,
                "nor_conv_1x1": lambda: relu_conv_bn(c, c, 1, 1),
                "nor_conv_3x3": lambda: relu_conv_bn(c, c, 3, 1),
                "avg_pool_3x3": lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False)}[name]()

    class Cell(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.edges = nn.ModuleList(op(OPS[int(i)], c) for i in indices)

        def forward(self, x):
            nodes = [x]
            for target in (1, 2, 3):
                nodes.append(sum(self.edges[e](nodes[src]) for e, (t, src) in enumerate(EDGES) if t == target))
            return nodes[3]

    class Reduction(nn.Module):
        def __init__(self, c_in, c_out):
            super().__init__()
            self.conv_a = relu_conv_bn(c_in, c_out, 3, 2)
            self.conv_b = relu_conv_bn(c_out, c_out, 3, 1)
            self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

        def forward(self, x):
            return self.shortcut(x) + self.conv_b(self.conv_a(x))

    layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)]
    c = channels
    for stage in range(3):
        if stage:
            layers.append(Reduction(c, 2 * c))
            c *= 2
        layers.extend(Cell(c) for _ in range(cells_per_stage))
    layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)
