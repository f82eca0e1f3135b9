"""Neural networks of the predictors (plain ``torch.nn`` modules, no training logic)."""
from __future__ import annotations

import torch
from torch import nn


def mlp(sizes: list[int], final_activation: bool = False) -> nn.Sequential:
    """``Linear -> ReLU -> ... -> Linear`` over ``sizes`` (input, hidden..., output)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class PoolLatencyNet(nn.Module):
    """Predicts the standardised log-latency of an architecture on each of ``n_devices`` pool devices.

    ``forward(encoding [n, in_dim]) -> [n, n_devices]``.
    """

    def __init__(self, in_dim: int, n_devices: int, hidden: int = 256, depth: int = 2):
        super().__init__()
        self.body = mlp([in_dim] + [hidden] * depth + [n_devices])

    def forward(self, encoding: torch.Tensor) -> torch.Tensor:
        return self.body(encoding)


class HardwareConditionedNet(nn.Module):
    """HELP's predictor ``f(x, h; theta)``: architecture encoder and hardware-embedding encoder,
    concatenated, then a regressor. With ``use_hardware=False`` it is the plain MAML/Meta-SGD
    regressor ``f(x; theta)``.

    ``forward(encoding [n, in_dim], hardware [n_ref] or [n, n_ref]) -> [n]`` (normalised latency).
    """

    def __init__(self, in_dim: int, n_reference: int, hidden: int = 100, use_hardware: bool = True):
        super().__init__()
        self.use_hardware = use_hardware
        self.arch_encoder = mlp([in_dim, hidden, hidden], final_activation=True)
        if use_hardware:
            self.hardware_encoder = mlp([n_reference, hidden, hidden], final_activation=True)
        self.regressor = mlp([hidden * (2 if use_hardware else 1), hidden, 1])

    def forward(self, encoding: torch.Tensor, hardware: torch.Tensor) -> torch.Tensor:
        h = self.arch_encoder(encoding)
        if self.use_hardware:
            hw = self.hardware_encoder(hardware.reshape(-1, hardware.shape[-1]))
            h = torch.cat([h, hw.expand(len(h), -1)], dim=1)
        return self.regressor(h).squeeze(-1)


class ZModulator(nn.Module):
    """HELP's hardware-adaptive modulator ``z = g(V_h; phi)`` of the initial parameters.

    For every weight matrix it yields a per-output-unit scale (``theta * z``), for every bias a
    shift (``theta + z``). Initialised to the identity (scale 1, shift 0).
    """

    def __init__(self, target: nn.Module, n_reference: int, hidden: int = 100):
        super().__init__()
        self.shapes = {name: p.shape for name, p in target.named_parameters()}
        self.sizes = {name: shape[0] for name, shape in self.shapes.items()}
        self.encoder = mlp([n_reference, hidden, sum(self.sizes.values())])
        nn.init.zeros_(self.encoder[-1].weight)
        nn.init.zeros_(self.encoder[-1].bias)

    def forward(self, params: dict[str, torch.Tensor], hardware: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encoder(hardware.reshape(-1))
        out, start = {}, 0
        for name, p in params.items():
            zi = z[start:start + self.sizes[name]]
            start += self.sizes[name]
            out[name] = p * (1.0 + zi).unsqueeze(-1) if p.dim() == 2 else p + zi
        return out
