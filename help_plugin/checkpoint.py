"""Safe persistence: safetensors tensors plus a JSON header; never pickle."""
from __future__ import annotations

import json
from pathlib import Path

import torch

FORMAT = "help-plugin/2"
#: help-plugin 0.1's format (no constructor parameters or space settings); ``HELPEstimator.load`` converts it.
FORMAT_1 = "help-plugin/1"


class CheckpointError(ValueError):
    """A file that is not a readable help-plugin checkpoint."""


def save_checkpoint(path: str | Path, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={"format": FORMAT, "meta": json.dumps(meta)})


def load_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Return ``(meta, tensors)``; raise :class:`CheckpointError` naming the file if it is corrupt or foreign."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors checkpoint: {err}") from err
    if header.get("format") not in (FORMAT, FORMAT_1):
        raise CheckpointError(f"{path} is not a help-plugin checkpoint (format {header.get('format')!r}, expected {FORMAT!r})")
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} has a corrupt help-plugin header: {err}") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has a corrupt help-plugin header: {meta!r} is not a JSON object")
    meta["format"] = header["format"]
    return meta, tensors
