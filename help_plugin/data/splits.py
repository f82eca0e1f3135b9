"""Named device splits: which devices meta-train, meta-validate and meta-test, per space."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

#: Seed of :meth:`DeviceSplit.random_halves` (split ``k`` draws with ``[RANDOM_SPLIT_SEED, k]``).
RANDOM_SPLIT_SEED = 200


@dataclass(frozen=True)
class DeviceSplit:
    """Which devices meta-train, meta-validate and meta-test, for one space; ``name`` labels results (a named
    split's key in :data:`SPLITS`; default ``"{space}-custom"``)."""

    space: str
    train: tuple[str, ...]
    valid: tuple[str, ...]
    test: tuple[str, ...]
    name: str = ""

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", f"{self.space}-custom")
        overlap = (set(self.train) | set(self.valid)) & set(self.test)
        if overlap:
            raise ValueError(f"devices {sorted(overlap)} are both meta-training/validation and test devices")
        if not self.train:
            raise ValueError("a split needs at least one meta-training device")

    def with_devices(self, train=None, valid=None, test=None) -> "DeviceSplit":
        """This split with the device lists given replaced (``None``: not given): ``train`` replaces the pool (and
        then ``valid`` defaults to none); ``test`` alone takes those devices out of the pool (e.g. one of
        Multi-Predict's random device subsets). ``ValueError`` for a device listed twice."""
        test = tuple(test) if test else self.test
        if train:
            train, valid = tuple(train), tuple(valid or ())
        else:
            train = tuple(d for d in self.train if d not in test)
            valid = tuple(valid) if valid else tuple(d for d in self.valid if d not in test)
        repeated = sorted({d for devices in (train, valid, test) for d in devices if devices.count(d) > 1})
        if repeated:
            raise ValueError(f"device(s) {repeated} listed twice")
        return DeviceSplit(self.space, train, valid, test)  # a split of one's own: named "{space}-custom"

    def random_halves(self, n: int, seed: int = RANDOM_SPLIT_SEED) -> list["DeviceSplit"]:
        """``n`` splits of this split's pool, as Multi-Predict's random device subsets: a random half of the pool
        meta-trains (no meta-validation devices), the other half is scored; named ``{space}-random{k}``, the same
        devices for the same ``seed``."""
        out = []
        for k in range(n):
            half = set(np.random.default_rng([seed, k]).choice(self.pool, len(self.pool) // 2, replace=False).tolist())
            out.append(DeviceSplit(self.space, tuple(d for d in self.pool if d in half), (),
                                   tuple(d for d in self.pool if d not in half), name=f"{self.space}-random{k}"))
        return out

    @property
    def pool(self) -> tuple[str, ...]:
        """Every device the split lets a method learn from (meta-training, then meta-validation)."""
        return self.train + tuple(d for d in self.valid if d not in self.train)


def _csv(s: str) -> tuple[str, ...]:
    return tuple(s.split(","))


_GPU15 = tuple(f"{g}_{b}" for g in ("1080ti", "2080ti", "titan_rtx", "titanx", "titanxp") for b in (1, 32, 64))

#: Named splits: HELP's defaults (its README / Table 3) and the adversarial FBNet split.
SPLITS: dict[str, DeviceSplit] = {name: replace(split, name=name) for name, split in {
    "nasbench201": DeviceSplit(
        "nasbench201",
        _csv("1080ti_1,1080ti_32,1080ti_256,silver_4114,silver_4210r,samsung_a50,pixel3,essential_ph_1,samsung_s7"),
        _csv("titanx_1,titanx_32,titanx_256,gold_6240"),
        _csv("titan_rtx_256,gold_6226,fpga,pixel2,raspi4,eyeriss")),
    "fbnet": DeviceSplit(
        "fbnet",
        _csv("1080ti_1,1080ti_32,1080ti_64,silver_4114,silver_4210r,samsung_a50,pixel3,essential_ph_1,samsung_s7"),
        _csv("titanx_1,titanx_32,titanx_64,gold_6240"),
        _csv("fpga,raspi4,eyeriss")),
    "fbnet-adversarial": DeviceSplit(
        "fbnet", _GPU15, (), _csv("gold_6226,essential_ph_1,samsung_s7,pixel2")),
    "ofa": DeviceSplit(
        "ofa",
        _csv("2080ti_1,2080ti_32,2080ti_64,titan_xp_1,titan_xp_32,titan_xp_64,v100_1,v100_32,v100_64"),
        _csv("titan_rtx_1,titan_rtx_32"),
        _csv("titan_rtx_64")),
}.items()}


def get_split(name: str) -> DeviceSplit:
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; available: {sorted(SPLITS)}")
    return SPLITS[name]
