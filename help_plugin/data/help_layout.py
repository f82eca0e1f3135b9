"""HELP's published data layout (``HELP_DATA_DIR``, default ``../shared/data/help``).

Per space, a folder holds ``latency/DEVICE.pt`` (one latency in ms per architecture), the
architecture list (each space reads its own file, :meth:`~help_plugin.spaces.SearchSpace.help_archs`)
and ``hardware_embedding_index.pt`` (rows of the 10 reference architectures). Every file is read
with ``torch.load(weights_only=True)``: plain containers only, never arbitrary pickles.
"""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataFileError
from ..spaces import get_space
from .dataset import LatencyDataset

log = logging.getLogger(__name__)

DATA_DIR_ENV = "HELP_DATA_DIR"


def default_data_dir() -> Path:
    """``$HELP_DATA_DIR``, else ``../shared/data/help`` beside the working directory or the checkout."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    candidates = [Path.cwd() / ".." / "shared" / "data" / "help",
                  Path(__file__).resolve().parents[3] / "shared" / "data" / "help"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return candidates[0]


def load_pt(path: Path, numpy_scalars: bool = False) -> Any:
    """One ``.pt`` file of the layout, loaded with ``weights_only=True``.

    ``numpy_scalars`` also allows numpy int64 scalars (``ofa_archs.pt`` stores its resolutions so).
    """
    import torch

    if not path.exists():
        raise FileNotFoundError(f"missing data file {path} (set {DATA_DIR_ENV} to HELP's data/ folder)")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not one of HELP's data files")
    allowed = []
    if numpy_scalars:
        allowed = [np.dtype, type(np.dtype(np.int64))]
        try:
            allowed.append((np._core.multiarray.scalar, "numpy.core.multiarray.scalar"))
        except AttributeError:  # numpy < 2
            allowed.append(np.core.multiarray.scalar)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, weights_only=True)
    except (EOFError, pickle.UnpicklingError, RuntimeError, ValueError) as err:
        # never retried with weights_only=False: that would run whatever code the file holds
        what = "an empty file" if path.stat().st_size == 0 else f"truncated, corrupt or not such a file ({type(err).__name__})"
        raise DataFileError(f"{path} is not a readable data file of HELP's layout: {what}; restore it from HELP's "
                            "data") from None


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
    base = Path(root or default_data_dir()) / sp.name
    archs = sp.help_archs(lambda name, numpy_scalars=False: load_pt(base / name, numpy_scalars))
    available = help_devices(sp.name, base.parent)
    devices = list(devices) if devices is not None else available
    unknown = [d for d in devices if d not in available]
    if unknown:
        raise ValueError(f"unknown device(s) {unknown} for {sp.name}; available: {available}")
    lat = np.empty((len(archs), len(devices)))
    for j, d in enumerate(devices):
        values = np.asarray(load_pt(base / "latency" / f"{d}.pt"), dtype=np.float64)
        if len(values) != len(archs):
            raise ValueError(f"{d}.pt has {len(values)} latencies for {len(archs)} architectures")
        lat[:, j] = values
    ref = np.asarray(load_pt(base / "hardware_embedding_index.pt"), dtype=np.int64)
    log.info("loaded %s: %d archs x %d devices from %s", sp.name, len(archs), len(devices), base)
    return LatencyDataset(sp, archs, tuple(devices), lat, ref)
