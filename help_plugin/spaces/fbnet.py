"""FBNet (as benchmarked by HW-NAS-Bench): 22 searchable layers, 9 candidate blocks each.

Block order (indices 0..8, as in HELP's ``fbnet/metainfo.pt``): k3_e1, k3_e1_g2, k3_e3, k3_e6,
k5_e1, k5_e1_g2, k5_e3, k5_e6, skip. ``kK_eE[_gG]`` is an inverted bottleneck with a KxK depthwise
conv, expansion E and G groups in the 1x1 convs; ``skip`` is the identity (a 1x1 conv where the
shape changes).

Macro-architecture (CIFAR setting, 32x32 input): 3x3 stem to 16 channels (stride 1), stages of
1, 4, 4, 4, 4, 4, 1 layers with 16, 24, 32, 64, 112, 184, 352 channels and first-layer strides
1, 1, 2, 2, 1, 2, 1, a 1x1 conv to 1504 channels, global pooling and a linear classifier.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import SearchSpace

BLOCKS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
LAYERS_PER_STAGE = (1, 4, 4, 4, 4, 4, 1)
CHANNELS = (16, 24, 32, 64, 112, 184, 352)
STRIDES_CIFAR = (1, 1, 2, 2, 1, 2, 1)
STEM_CHANNELS = 16
HEAD_CHANNELS = 1504


def block_spec(name: str) -> tuple[int, int, int] | None:
    """(kernel, expansion, groups) of a block name, ``None`` for skip."""
    if name == "skip":
        return None
    parts = name.split("_")
    return int(parts[0][1:]), int(parts[1][1:]), int(parts[2][1:]) if len(parts) == 3 else 1


def layer_shapes(resolution: int = 32) -> list[tuple[int, int, int, int]]:
    """(c_in, c_out, stride, input side) of each of the 22 searchable layers."""
    shapes, c_in, h = [], STEM_CHANNELS, resolution
    for n, c_out, s in zip(LAYERS_PER_STAGE, CHANNELS, STRIDES_CIFAR):
        for i in range(n):
            stride = s if i == 0 else 1
            shapes.append((c_in, c_out, stride, h))
            c_in, h = c_out, -(-h // stride)
    return shapes


#: The MACs of a block by kind of operation (:meth:`FBNet.detail_features` adds memory, kernels and params).
MACS_BY_OP = ("pw_macs", "dw3_macs", "dw5_macs", "grouped_pw_macs", "skip_conv_macs")


def _block_macs(name: str, c_in: int, c_out: int, stride: int, h: int) -> tuple[float, ...]:
    """MACs of one block split as :data:`MACS_BY_OP`: ungrouped and grouped 1x1 convs, 3x3 and 5x5 depthwise
    convs, the 1x1 conv of a skip that changes the shape."""
    h_out = -(-h // stride)
    out = [0.0] * len(MACS_BY_OP)
    spec = block_spec(name)
    if spec is None:
        if not (stride == 1 and c_in == c_out):
            out[4] = float(c_in * c_out * h_out * h_out)
        return tuple(out)
    k, e, g = spec
    mid = c_in * e
    out[3 if g > 1 else 0] = float(c_in * mid // g * h * h + mid * c_out // g * h_out * h_out)
    out[1 if k == 3 else 2] = float(mid * k * k * h_out * h_out)
    return tuple(out)


def _block_cost(name: str, c_in: int, c_out: int, stride: int, h: int) -> tuple[float, float, float, float]:
    macs = sum(_block_macs(name, c_in, c_out, stride, h))
    h_out = -(-h // stride)
    spec = block_spec(name)
    if spec is None:
        if stride == 1 and c_in == c_out:
            return (0.0, 0.0, 0.0, 0.0)
        return (macs, float(c_in * c_out), float(c_in * h * h + c_out * h_out * h_out), 3.0)
    k, e, g = spec
    mid = c_in * e
    params = c_in * mid // g + mid * k * k + mid * c_out // g
    memory = c_in * h * h + 2 * mid * h * h + 2 * mid * h_out * h_out + c_out * h_out * h_out
    kernels = 9 + (g > 1) + (stride == 1 and c_in == c_out)
    return (macs, float(params), float(memory), float(kernels))


class FBNet(SearchSpace):
    """The FBNet layer-wise space of HW-NAS-Bench (9^22 architectures)."""

    name = "fbnet"
    choices = (9,) * 22

    def __init__(self, num_classes: int = 100, resolution: int = 32):
        self.num_classes = num_classes
        self.resolution = resolution

    def parse(self, arch: Any) -> np.ndarray:
        if isinstance(arch, dict):
            arch = arch.get("op_idx_list", arch.get("arch_str"))
        if isinstance(arch, str):
            arch = [t for t in arch.replace(",", "-").replace(" ", "-").split("-") if t]
        if not isinstance(arch, (list, tuple, np.ndarray)):
            raise TypeError(f"fbnet: an architecture is 22 block names or indices, got {type(arch).__name__}: {arch!r}")
        if len(arch) != 22:
            raise ValueError(f"fbnet: an architecture has 22 layers, got {len(arch)}")
        return self._names_to_indices(arch, BLOCKS, "block", "layer")

    def format(self, indices) -> str:
        return "-".join(BLOCKS[int(i)] for i in indices)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.resolution, self.resolution)

    def help_archs(self, load) -> np.ndarray:
        """``arch.pt``: 22 block indices per architecture."""
        return self.to_indices([list(a) for a in load("arch.pt")])

    def graph_adjacency(self) -> np.ndarray:
        """A chain of the 22 searchable layers."""
        return np.eye(22, k=-1)

    def graph_features(self, indices: np.ndarray) -> np.ndarray:
        """The layer's block one-hot (9) + the layer position one-hot (22), ``[n, 22, 31]``."""
        idx = self.to_indices(indices)
        return self._chain_features(self.one_hot(idx).reshape(len(idx), 22, 9))

    def build_network(self, arch: Any):
        idx = arch if isinstance(arch, np.ndarray) else self.parse(arch)
        return build_network(idx, self.num_classes, self.resolution)

    def cost_table(self) -> np.ndarray:
        table = np.zeros((22, 9, 4))
        for layer, (c_in, c_out, stride, h) in enumerate(layer_shapes(self.resolution)):
            for b, name in enumerate(BLOCKS):
                table[layer, b] = _block_cost(name, c_in, c_out, stride, h)
        return table

    detail_names = MACS_BY_OP + ("memory", "kernels", "params")

    def detail_table(self) -> np.ndarray:
        """Each block's MACs by kind of operation (:data:`MACS_BY_OP`), then its memory, kernels and params."""
        table = np.zeros((22, 9, len(self.detail_names)))
        for layer, (c_in, c_out, stride, h) in enumerate(layer_shapes(self.resolution)):
            for b, name in enumerate(BLOCKS):
                table[layer, b, :len(MACS_BY_OP)] = _block_macs(name, c_in, c_out, stride, h)
        table[:, :, len(MACS_BY_OP):] = self.cost_table()[:, :, [2, 3, 1]]
        return table

    def fixed_cost(self) -> np.ndarray:
        r = self.resolution
        h_last = layer_shapes(r)[-1][3]
        macs = 27 * STEM_CHANNELS * r * r + CHANNELS[-1] * HEAD_CHANNELS * h_last ** 2 + HEAD_CHANNELS * self.num_classes
        params = 27 * STEM_CHANNELS + CHANNELS[-1] * HEAD_CHANNELS + HEAD_CHANNELS * self.num_classes
        memory = (3 + STEM_CHANNELS) * r * r + (CHANNELS[-1] + HEAD_CHANNELS) * h_last ** 2
        return np.array([macs, params, memory, 8.0])


def build_network(indices, num_classes: int = 100, resolution: int = 32):
    """The FBNet network of one architecture as a ``torch.nn.Module`` (input ``[b, 3, r, r]``)."""
    from torch import nn

    class ChannelShuffle(nn.Module):
        def __init__(self, groups):
            super().__init__()
            self.groups = groups

        def forward(self, x):
            n, c, h, w = x.shape
            return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def conv_bn(c_in, c_out, k, stride=1, groups=1, relu=True):
        layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
        return layers + [nn.ReLU(inplace=True)] if relu else layers

    class Block(nn.Module):
        def __init__(self, name, c_in, c_out, stride):
            super().__init__()
            spec = block_spec(name)
            self.residual = spec is not None and stride == 1 and c_in == c_out
            if spec is None:
                identity = stride == 1 and c_in == c_out
                self.body = nn.Identity() if identity else nn.Sequential(*conv_bn(c_in, c_out, 1, stride))
                return
            k, e, g = spec
            mid = c_in * e
            layers = conv_bn(c_in, mid, 1, groups=g) + ([ChannelShuffle(g)] if g > 1 else [])
            layers += conv_bn(mid, mid, k, stride, groups=mid) + conv_bn(mid, c_out, 1, groups=g, relu=False)
            self.body = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    layers = conv_bn(3, STEM_CHANNELS, 3)
    for i, (c_in, c_out, stride, _) in zip(indices, layer_shapes(resolution)):
        layers.append(Block(BLOCKS[int(i)], c_in, c_out, stride))
    layers += conv_bn(CHANNELS[-1], HEAD_CHANNELS, 1) + [nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                                          nn.Linear(HEAD_CHANNELS, num_classes)]
    return nn.Sequential(*layers)
