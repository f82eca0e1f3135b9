""":class:`LatencyDataset`: latencies of many architectures on many devices, in memory."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..spaces import SearchSpace, get_space


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

    def to_records(self) -> Iterable[dict]:
        """Tidy rows ``{space, arch, device, latency_ms}`` for measured entries."""
        for i, j in zip(*np.nonzero(np.isfinite(self.latency_ms))):
            yield {"space": self.space.name, "arch": self.space.canonical(self.archs[i]),
                   "device": self.devices[j], "latency_ms": float(self.latency_ms[i, j])}

    def to_csv(self, path: str | Path) -> int:
        """Write the tidy table :func:`~help_plugin.data.load_measurements` reads; returns the number of rows."""
        from .tables import write_measurements

        return write_measurements(path, self.to_records())
