"""Latency data: HELP's published layout, users' own tidy tables, device pools and splits.

The HELP layout (``HELP_DATA_DIR``, default ``../shared/data/help``) holds, per space,
``latency/DEVICE.pt`` (one latency in ms per architecture), the architecture list and
``hardware_embedding_index.pt`` (rows of the 10 reference architectures). A user's own
measurements are a tidy CSV or Parquet table with columns ``space, arch, device, latency_ms``.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .spaces import SearchSpace, get_space
from .validation import check_latencies

log = logging.getLogger(__name__)

DATA_DIR_ENV = "HELP_DATA_DIR"


def default_data_dir() -> Path:
    """``$HELP_DATA_DIR``, else ``../shared/data/help`` beside the working directory or the checkout."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    candidates = [Path.cwd() / ".." / "shared" / "data" / "help",
                  Path(__file__).resolve().parents[2] / "shared" / "data" / "help"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return candidates[0]


@dataclass
class LatencyDataset:
    """Latencies of many architectures on many devices.

    Attributes:
        space: the search space.
        archs: ``[n_archs, arch_length]`` int64 indices.
        devices: device names, one per column of ``latency_ms``.
        latency_ms: ``[n_archs, n_devices]`` float64; ``NaN`` where not measured.
        reference_rows: rows of ``archs`` holding the reference architectures (may be empty).
    """

    space: SearchSpace
    archs: np.ndarray
    devices: tuple[str, ...]
    latency_ms: np.ndarray
    reference_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self):
        self.space = get_space(self.space)
        self.devices = tuple(self.devices)
        if self.latency_ms.shape != (len(self.archs), len(self.devices)):
            raise ValueError(
                f"latency_ms has shape {list(self.latency_ms.shape)}, expected "
                f"[{len(self.archs)}, {len(self.devices)}]"
            )
        if len(set(self.devices)) != len(self.devices):
            raise ValueError(f"duplicate device names in {self.devices}")

    def __len__(self) -> int:
        return len(self.archs)

    def device_index(self, device: str) -> int:
        if device not in self.devices:
            raise ValueError(f"unknown device {device!r}; this {self.space.name} data has {list(self.devices)}")
        return self.devices.index(device)

    def latency(self, device: str) -> np.ndarray:
        """``[n_archs]`` latencies (ms) on ``device`` (``NaN`` where unmeasured)."""
        return self.latency_ms[:, self.device_index(device)]

    def select_devices(self, devices: Sequence[str]) -> "LatencyDataset":
        cols = [self.device_index(d) for d in devices]
        return LatencyDataset(self.space, self.archs, tuple(devices), self.latency_ms[:, cols], self.reference_rows)

    @property
    def reference_archs(self) -> np.ndarray:
        return self.archs[self.reference_rows]

    def to_records(self) -> Iterable[dict]:
        """Tidy rows ``{space, arch, device, latency_ms}`` for measured entries."""
        for i, j in zip(*np.nonzero(np.isfinite(self.latency_ms))):
            yield {"space": self.space.name, "arch": self.space.canonical(self.archs[i]),
                   "device": self.devices[j], "latency_ms": float(self.latency_ms[i, j])}

    def to_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["space", "arch", "device", "latency_ms"])
            w.writeheader()
            w.writerows(self.to_records())


# ---------------------------------------------------------------------------- HELP layout
def _torch_load(path: Path):
    import torch

    if not path.exists():
        raise FileNotFoundError(f"missing data file {path} (set {DATA_DIR_ENV} to HELP's data/ folder)")
    return torch.load(path, weights_only=True)


def _load_ofa_archs(path: Path):
    """``ofa_archs.pt`` stores numpy int64 resolutions: allow exactly those types, nothing else."""
    import torch

    allowed = [np.dtype, type(np.dtype(np.int64))]
    try:
        allowed.append((np._core.multiarray.scalar, "numpy.core.multiarray.scalar"))
    except AttributeError:  # numpy < 2
        allowed.append(np.core.multiarray.scalar)
    with torch.serialization.safe_globals(allowed):
        return _torch_load(path)


def help_devices(space: str, root: str | Path | None = None) -> list[str]:
    """Device names available in the HELP layout for ``space``."""
    folder = Path(root or default_data_dir()) / space / "latency"
    if not folder.is_dir():
        raise FileNotFoundError(f"no latency folder {folder} (set {DATA_DIR_ENV} to HELP's data/ folder)")
    return sorted(p.stem for p in folder.glob("*.pt"))


def load_help_data(space: str, root: str | Path | None = None,
                   devices: Sequence[str] | None = None) -> LatencyDataset:
    """Load HELP's published latencies for ``space`` (``nasbench201``, ``fbnet`` or ``ofa``)."""
    sp = get_space(space)
    root = Path(root or default_data_dir())
    base = root / sp.name
    if sp.name == "nasbench201":
        str2idx = _torch_load(base / "str_arch2idx.pt")
        archs = np.zeros((len(str2idx), 6), dtype=np.int64)
        for s, i in str2idx.items():
            archs[i] = sp.parse(s)
    elif sp.name == "fbnet":
        archs = sp.to_indices([list(a) for a in _torch_load(base / "arch.pt")])
    elif sp.name == "ofa":
        meta = _load_ofa_archs(base / "ofa_archs.pt")
        archs = sp.to_indices([{k: (int(v) if k == "r" else v) for k, v in a.items()} for a in meta["arch"]])
    else:
        raise ValueError(f"HELP's data has no {sp.name!r} space")
    available = help_devices(sp.name, root)
    devices = list(devices) if devices is not None else available
    unknown = [d for d in devices if d not in available]
    if unknown:
        raise ValueError(f"unknown device(s) {unknown} for {sp.name}; available: {available}")
    lat = np.empty((len(archs), len(devices)))
    for j, d in enumerate(devices):
        values = np.asarray(_torch_load(base / "latency" / f"{d}.pt"), dtype=np.float64)
        if len(values) != len(archs):
            raise ValueError(f"{d}.pt has {len(values)} latencies for {len(archs)} architectures")
        lat[:, j] = values
    ref = np.asarray(_torch_load(base / "hardware_embedding_index.pt"), dtype=np.int64)
    log.info("loaded %s: %d archs x %d devices from %s", sp.name, len(archs), len(devices), base)
    return LatencyDataset(sp, archs, tuple(devices), lat, ref)


# ---------------------------------------------------------------------------- tidy tables
def load_measurements(path: str | Path, space: str | None = None,
                      reference_archs: Sequence | None = None) -> LatencyDataset:
    """Read a tidy table (CSV, or Parquet with pandas+pyarrow) ``space, arch, device, latency_ms``.

    Repeated (arch, device) measurements are combined by their median. ``space`` filters rows
    when the table holds several spaces. ``reference_archs`` marks which rows are the
    reference architectures (they must be in the table).
    """
    path = Path(path)
    if path.suffix in (".parquet", ".pq"):
        import pandas as pd

        rows = pd.read_parquet(path).to_dict("records")
    else:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no measurements")
    missing = {"space", "arch", "device", "latency_ms"} - set(rows[0])
    if missing:
        raise ValueError(f"{path} lacks column(s) {sorted(missing)}")
    spaces = sorted({r["space"] for r in rows})
    if space is None:
        if len(spaces) != 1:
            raise ValueError(f"{path} holds spaces {spaces}; pass space=")
        space = spaces[0]
    sp = get_space(space)
    rows = [r for r in rows if r["space"] == sp.name]
    if not rows:
        raise ValueError(f"{path} has no rows for space {sp.name!r} (it has {spaces})")
    keys: dict[str, int] = {}
    archs, devices, cells = [], [], {}
    for n, r in enumerate(rows):
        a = r["arch"]
        if sp.name == "ofa" and isinstance(a, str):
            a = json.loads(a)
        idx = sp.parse(a)
        key = sp.canonical(idx)
        if key not in keys:
            keys[key] = len(archs)
            archs.append(idx)
        if r["device"] not in devices:
            devices.append(r["device"])
        ms = check_latencies([float(r["latency_ms"])], f"latency_ms of row {n + 2} in {path}")[0]
        cells.setdefault((keys[key], devices.index(r["device"])), []).append(ms)
    lat = np.full((len(archs), len(devices)), np.nan)
    for (i, j), v in cells.items():
        lat[i, j] = float(np.median(v))
    ref = np.zeros(0, dtype=np.int64)
    if reference_archs is not None:
        ref_keys = [sp.canonical(a) for a in reference_archs]
        absent = [k for k in ref_keys if k not in keys]
        if absent:
            raise ValueError(f"reference architecture(s) {absent[:3]} are not in {path}")
        ref = np.array([keys[k] for k in ref_keys], dtype=np.int64)
    return LatencyDataset(sp, np.stack(archs), tuple(devices), lat, ref)


# ---------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class DeviceSplit:
    """Which devices meta-train, meta-validate and meta-test, for one space."""

    space: str
    train: tuple[str, ...]
    valid: tuple[str, ...]
    test: tuple[str, ...]

    def __post_init__(self):
        overlap = (set(self.train) | set(self.valid)) & set(self.test)
        if overlap:
            raise ValueError(f"devices {sorted(overlap)} are both meta-training/validation and test devices")
        if not self.train:
            raise ValueError("a split needs at least one meta-training device")


def _csv(s: str) -> tuple[str, ...]:
    return tuple(s.split(","))


_GPU15 = tuple(f"{g}_{b}" for g in ("1080ti", "2080ti", "titan_rtx", "titanx", "titanxp") for b in (1, 32, 64))

#: Named splits: HELP's defaults (its README / Table 3) and the adversarial FBNet split.
SPLITS: dict[str, DeviceSplit] = {
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
}


def get_split(name: str) -> DeviceSplit:
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; available: {sorted(SPLITS)}")
    return SPLITS[name]
