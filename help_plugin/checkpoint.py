"""Safe persistence: safetensors tensors plus a JSON header; never pickle.

A checkpoint is validated when it is read, so that a corrupt or tampered file is a
:class:`CheckpointError` naming the file and the tensor, never a model that predicts garbage:

* every floating-point tensor must be finite;
* the header lists each tensor's dtype and shape as saved (``meta["tensors"]``): the tensors must match it;
* each estimator declares the names, shapes and dtypes its state must have, built from its parameters,
  its space and the header's metadata (``LatencyEstimator._expected_tensors``), checked by
  :func:`check_tensors`.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from .errors import HelpPluginError

FORMAT = "help-plugin/2"
#: help-plugin 0.1's format (no constructor parameters or space settings); ``HELPEstimator.load`` converts it.
FORMAT_1 = "help-plugin/1"


class CheckpointError(HelpPluginError, ValueError):
    """A file that is not a readable help-plugin checkpoint."""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def save_checkpoint(path: str | Path, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    manifest = {k: [_dtype_name(v.dtype), list(v.shape)] for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={"format": FORMAT, "meta": json.dumps({**meta, "tensors": manifest})})


def module_spec(prefix: str, module: torch.nn.Module) -> dict:
    """The expected ``name -> (shape, dtype)`` of ``module.state_dict()`` under ``prefix`` (for a module built
    from parameters, not from the checkpoint)."""
    return {prefix + k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}


def check_tensors(path: str | Path, tensors: dict[str, torch.Tensor], expected: dict) -> None:
    """Raise :class:`CheckpointError` unless ``tensors`` has exactly the names of ``expected``
    (``name -> (shape, dtype)``, or ``None`` for a tensor whose shape is not declared; ``None`` in a shape: any
    size along that axis) with their shapes and dtypes."""
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing:
        raise CheckpointError(f"{path} lacks tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        raise CheckpointError(f"{path} has unexpected tensor(s) {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for name, spec in expected.items():
        if spec is None:
            continue
        shape, dtype = spec
        t = tensors[name]
        if len(t.shape) != len(shape) or any(w is not None and w != n for w, n in zip(shape, t.shape)):
            want = ["any" if w is None else w for w in shape]
            raise CheckpointError(f"{path}: tensor {name!r} has shape {list(t.shape)}, expected [{', '.join(map(str, want))}]")
        if t.dtype != dtype:
            raise CheckpointError(f"{path}: tensor {name!r} is {_dtype_name(t.dtype)}, expected {_dtype_name(dtype)}")


def _check_saved(path: Path, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Finite floats, and the tensors as the header's manifest lists them (checkpoints since it was added)."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{path}: tensor {name!r} holds {bad} NaN/inf value(s) of {t.numel()}")
    manifest = meta.get("tensors")
    if manifest is None:
        return
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path} has a corrupt help-plugin header: 'tensors' is not an object")
    for name, t in tensors.items():
        if name not in manifest:
            raise CheckpointError(f"{path}: tensor {name!r} is not in the header's list of tensors")
        if manifest[name] != [_dtype_name(t.dtype), list(t.shape)]:
            raise CheckpointError(f"{path}: tensor {name!r} is {_dtype_name(t.dtype)} {list(t.shape)}, the header "
                                  f"says {manifest[name]}")
    absent = sorted(set(manifest) - set(tensors))
    if absent:
        raise CheckpointError(f"{path} lacks tensor(s) {absent[:5]} its header lists")


@contextlib.contextmanager
def rebuilding(path: str | Path, kind: str):
    """Any error while an estimator of ``kind`` is rebuilt from ``path`` as a :class:`CheckpointError` naming the file."""
    try:
        yield
    except CheckpointError as err:
        if str(path) in str(err):
            raise
        raise CheckpointError(f"{path}: {err}") from err
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
        raise CheckpointError(f"{path} is an incomplete or incompatible {kind} checkpoint: {err}") from err


def load_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Return ``(meta, tensors)``; raise :class:`CheckpointError` naming the file if it is corrupt or foreign."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a checkpoint")
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
    _check_saved(path, meta, tensors)
    return meta, tensors
