"""Accuracy for OFA's finders: OFA's own accuracy predictor when its weights are at hand, else a training-free
proxy (log10 of the subnet's multiply-accumulates); ``name`` says which is in use."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..spaces import get_space
from ..spaces.ofa import RESOLUTIONS

try:
    import torch
    from ofa.nas.accuracy_predictor import MobileNetArchEncoder
except ImportError as _err:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"help_plugin.integrations.{__name__.rsplit('.', 1)[-1]} needs the `ofa` package and what it "
                      f"imports (torchvision matching your torch, Pillow, gdown): pip install 'help-plugin[ofa]' "
                      f"({_err})") from _err

log = logging.getLogger(__name__)

_SPACE = get_space("ofa")


class _AccuracyAdapter:
    """Both finders' accuracy interface over one scoring function of index rows ``[n, 46]``.

    ``arch_encoder`` is OFA's ``MobileNetArchEncoder`` over this space (``ofa.nas``'s finder draws
    candidates with it), ``predict_acc(archs) -> torch.Tensor[n]`` (``ofa.nas``),
    ``predict_accuracy(specs) -> torch.Tensor[n, 1]`` (``ofa.tutorial``). ``name`` says what the
    numbers are.
    """

    name = ""

    def __init__(self, image_size_list: Sequence[int] = RESOLUTIONS):
        self.space = _SPACE
        bad = [r for r in image_size_list if r not in RESOLUTIONS]
        if bad or not len(image_size_list):
            raise ValueError(f"image_size_list must hold resolutions of 128, 132, ..., 224; "
                             f"got {list(image_size_list)}")
        self.arch_encoder = MobileNetArchEncoder(image_size_list=[int(r) for r in image_size_list], ks_list=[3, 5, 7],
                                                 expand_list=[3, 4, 6], depth_list=[2, 3, 4])

    def score(self, archs: Any) -> np.ndarray:
        """``[n]`` float64, higher is better."""
        raise NotImplementedError

    def predict_acc(self, arch_dict_list: Sequence[dict]) -> torch.Tensor:
        return torch.as_tensor(self.score(list(arch_dict_list)), dtype=torch.float32)

    def predict_accuracy(self, population: Sequence[dict]) -> torch.Tensor:
        return self.predict_acc(population)[:, None]


class FLOPsAccuracyProxy(_AccuracyAdapter):
    """Training-free accuracy stand-in: ``log10(MACs)`` of the subnet (the space's analytic count).

    Not an accuracy: a monotone compute score. On OFA's MobileNetV3 space ImageNet accuracy rises
    with MACs (HELP's Table 5 reports 76.0, 76.8 and 77.9 % for its 230M, 268M and 346M-MAC subnets),
    so under a latency limit the search spends the budget on compute the device runs fastest. It
    costs microseconds per arch; SynFlow (``help_plugin.proxies.synflow_score``) costs ~0.6 s per
    224-px subnet on one CPU core, too slow for the tens of thousands of candidates a search scores.
    """

    name = "proxy: log10(MACs), training-free (OFA's accuracy predictor needs its weights file)"

    def score(self, archs: Any) -> np.ndarray:
        return np.log10(self.space.cost_features(self.space.to_indices(archs))[:, 0])


class OFAAccuracyPredictor(_AccuracyAdapter):
    """OFA's trained accuracy predictor, loaded safely (``weights_only``) from a local file.

    Two checkpoint formats exist: ``ofa.tutorial``'s ``acc_predictor.pth`` (an ``nn.Sequential`` on a
    128-d feature whose resolution one-hot has 8 slots, 112..224 in steps of 16; other resolutions
    fall in the slot below) and ``ofa.nas.accuracy_predictor.AccuracyPredictor``'s (``layers.*`` and
    ``base_acc``; the feature has one slot per resolution of ``image_size_list``, by default all 25
    of this space). Predictions are ImageNet top-1 as OFA's predictor gives them (a fraction).
    """

    def __init__(self, path: str | Path, image_size_list: Sequence[int] | None = None):
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path} is not a state dict of tensors (OFA accuracy-predictor checkpoint)")
        if "layers.0.0.weight" in state:
            from ofa.nas.accuracy_predictor import AccuracyPredictor

            n_res = state["layers.0.0.weight"].shape[1] - 120
            sizes = list(image_size_list) if image_size_list is not None else list(RESOLUTIONS)
            if len(sizes) != n_res:
                raise ValueError(f"{path} encodes {n_res} resolutions; pass image_size_list with that many "
                                 f"(got {len(sizes)})")
            super().__init__(sizes)
            self.model = AccuracyPredictor(self.arch_encoder, device="cpu")
            self.kind = "ofa.nas.accuracy_predictor.AccuracyPredictor"
        elif "0.weight" in state and tuple(state["0.weight"].shape) == (400, 128):
            from ofa.tutorial.accuracy_predictor import AccuracyPredictor

            super().__init__(image_size_list if image_size_list is not None else RESOLUTIONS)
            self.model = AccuracyPredictor(pretrained=False, device="cpu")
            self.kind = "ofa.tutorial.AccuracyPredictor"
        else:
            raise ValueError(f"{path} is neither OFA accuracy-predictor format (keys {sorted(state)[:4]} ...)")
        target = self.model.model if self.kind.startswith("ofa.tutorial") else self.model
        target.load_state_dict(state)
        target.eval()
        self.name = f"OFA accuracy predictor ({self.kind}, {Path(path).name})"

    @torch.no_grad()
    def score(self, archs: Any) -> np.ndarray:
        configs = [self.space.format(r) for r in self.space.to_indices(archs)]
        if self.kind.startswith("ofa.tutorial"):
            out = self.model.predict_accuracy([{**c, "r": [c["r"]]} for c in configs])
        else:
            out = self.model.predict_acc([{"ks": c["ks"], "e": c["e"], "d": c["d"], "image_size": c["r"]}
                                          for c in configs])
        return out.reshape(-1).double().numpy()


def accuracy_predictor(path: str | Path | None = None,
                       image_size_list: Sequence[int] | None = None) -> _AccuracyAdapter:
    """OFA's accuracy predictor if ``path`` is an existing weights file, else :class:`FLOPsAccuracyProxy`."""
    if path is not None and Path(path).is_file():
        return OFAAccuracyPredictor(path, image_size_list)
    if path is not None:
        log.warning("OFA accuracy-predictor weights %s not found; using the training-free FLOPs proxy", path)
    return FLOPsAccuracyProxy(image_size_list if image_size_list is not None else RESOLUTIONS)
