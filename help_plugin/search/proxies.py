"""Training-free accuracy proxies computed by the project itself (no data set, no weights)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..spaces import SearchSpace, get_space


def synflow_score(space: str | SearchSpace, arch: Any, seed: int = 0) -> float:
    """SynFlow (Tanaka et al., NeurIPS'20; used as a zero-cost NAS proxy by Abdelfattah et al., ICLR'21):
    log of sum |theta * dR/dtheta| with R the output sum of the network with absolute weights on an
    all-ones input. Grows with useful capacity, so under a latency limit it favours using the budget.
    """
    import torch

    from ..predictors.training import torch_threads

    space = get_space(space)
    idx = space.to_indices([arch])[0]
    torch.manual_seed(seed)
    net = space.build_network(idx).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    with torch_threads(1):
        inputs = tuple(torch.ones_like(t, dtype=torch.float64) if t.is_floating_point() else t
                       for t in space.example_input(idx, 1))
        net(*inputs).sum().backward()
    total = sum(float((p.detach() * p.grad).abs().sum()) for p in net.parameters() if p.grad is not None)
    return float(np.log(total)) if total > 0 else float("-inf")
