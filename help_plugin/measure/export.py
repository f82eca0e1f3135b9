"""A device you can only hand files to: export the networks it must time as ONNX, read its timings back.

:func:`export_archs` writes one ONNX file with static input shapes per architecture (the model's
reference architectures, ``shots`` random ones to adapt on and ``holdout`` random ones to check the
adapted model with), a ``manifest.csv`` and a ``README.txt`` on how to time the files with the usual
tools. The manifest is a tidy measurement table (``space, arch, device, latency_ms``) with extra
columns ``role, file, input_shape``; once its ``latency_ms`` column is filled in,
:func:`read_manifest` reads it back (and :func:`help_plugin.data.load_measurements` reads its filled
rows like any other table).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
#: Columns of the manifest: the tidy table's four (``space, arch, device, latency_ms``) and three more.
MANIFEST_COLUMNS = ("space", "arch", "device", "role", "file", "input_shape", "latency_ms")
#: ``reference`` and ``shot`` rows adapt the model; ``holdout`` rows only score it.
ROLES = ("reference", "shot", "holdout")


def input_shapes(inputs) -> str:
    """``x0:1x3x32x32`` (``;``-separated for several inputs; non-float32 inputs get ``:dtype``)."""
    parts = []
    for i, t in enumerate(inputs):
        shape = "x".join(str(d) for d in t.shape)
        dtype = str(t.dtype).replace("torch.", "")
        parts.append(f"x{i}:{shape}" + ("" if dtype == "float32" else f":{dtype}"))
    return ";".join(parts)


def export_network(space: Any, arch: Any, path: str | Path, batch_size: int = 1, seed: int = 0) -> str:
    """Write the network of ``arch`` as an ONNX file with static input shapes; returns its :func:`input_shapes`.

    The weights are those ``space.build_network(arch)`` draws after ``torch.manual_seed(seed)`` (eval mode);
    torch's global random state is left as it was.
    """
    import torch

    from ..spaces import get_space
    from .onnxruntime import to_onnx
    from .torch_eager import prepare

    sp = get_space(space)
    row = sp.to_indices(arch if isinstance(arch, np.ndarray) else [arch])[0]
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        net, inputs = prepare(sp, row, batch_size)
        with torch.inference_mode():
            to_onnx(net, inputs, path)
    finally:
        torch.random.set_rng_state(state)
    return input_shapes(inputs)


def export_archs(space: Any = None, out_dir: str | Path = "export", shots: int = 10, holdout: int = 0,
                 batch_size: int = 1, seed: int = 0, device: str = "my-device", estimator=None,
                 progress: bool = False, shot_selection: str = "design") -> Path:
    """Write the networks a device must time as ONNX files, ``manifest.csv`` and ``README.txt`` in ``out_dir``.

    Args:
        space: search space of the shipped model (ignored when ``estimator`` is given).
        out_dir: output folder (created; it must not hold a manifest already, so that no filled-in
            manifest is overwritten).
        shots: architectures to adapt on, besides the reference architectures.
        holdout: random architectures (distinct from the others) to score the adapted model on.
        batch_size: the static batch dimension of every input.
        seed: seed of the sampled architectures and of the random weights: the network of manifest row
            ``k`` has the weights ``space.build_network(arch)`` draws after ``torch.manual_seed(seed + k)``,
            so every file can be rebuilt and checked in PyTorch.
        device: the ``device`` column (the name the device's measurements go by).
        estimator: a :class:`~help_plugin.predictors.HELPEstimator` whose reference architectures are
            exported (default: the shipped model of ``space``).
        shot_selection: ``"design"`` (default): the shots the model learns most from
            (:func:`~help_plugin.predictors.shot_design.choose_shots`); ``"random"``: drawn at random.
    Returns:
        the manifest's path.
    """
    from tqdm.auto import tqdm

    from ..predictors import HELPEstimator
    from ..predictors.shot_design import choose_shots

    for name, value, low in (("shots", shots, 0), ("holdout", holdout, 0), ("batch_size", batch_size, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not isinstance(device, str) or not device.strip() or any(c in device for c in ",\n\"'"):
        raise ValueError(f"device must be a non-empty name without commas or quotes, got {device!r}")
    est = estimator if estimator is not None else HELPEstimator.pretrained(space)
    sp = est.space
    if not sp.has_network:
        raise ValueError(f"space {sp.name!r} has no network builder, so there is nothing to export")
    out = Path(out_dir)
    manifest = out / MANIFEST
    if manifest.exists():
        raise FileExistsError(f"{manifest} exists (it may hold timings); export to a new folder or remove it")
    out.mkdir(parents=True, exist_ok=True)

    refs = est.reference_indices
    shot_idx = choose_shots(est, shots, seed, shot_selection)
    taken = {sp.canonical(r) for r in np.concatenate([refs, shot_idx])}
    groups = [("reference", refs), ("shot", shot_idx), ("holdout", sp.sample_distinct(holdout, seed + 1, taken))]
    rows = []
    total = sum(len(g) for _, g in groups)
    bar = tqdm(total=total, desc=f"exporting {sp.name} to ONNX", disable=not progress)
    try:
        for role, archs in groups:
            width = max(2, len(str(len(archs) - 1)))
            for i, row in enumerate(archs):
                name = f"{role}_{i:0{width}d}.onnx"
                shape = export_network(sp, row, out / name, batch_size, seed=seed + len(rows))
                rows.append({"space": sp.name, "arch": sp.canonical(row), "device": device, "role": role,
                             "file": name, "input_shape": shape, "latency_ms": ""})
                bar.update(1)
    finally:
        bar.close()
    tmp = manifest.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(MANIFEST_COLUMNS))
        w.writeheader()
        w.writerows(rows)
    tmp.replace(manifest)
    (out / "README.txt").write_text(_readme(sp.name, device, groups, batch_size, rows[0]["input_shape"], out))
    log.info("exported %d %s networks to %s", total, sp.name, out)
    return manifest


def _readme(space: str, device: str, groups, batch_size: int, shape: str, out: Path) -> str:
    n = {role: len(archs) for role, archs in groups}
    return f"""\
Networks for timing on {device!r} ({space}, batch size {batch_size}, written by help-nas export)
{'=' * 80}

{sum(n.values())} ONNX files, one per architecture, with static input shapes (first file: {shape}):
  reference_*.onnx  {n['reference']:4d}  the model's reference architectures  (must be timed)
  shot_*.onnx       {n['shot']:4d}  random architectures to adapt on      (must be timed)
  holdout_*.onnx    {n['holdout']:4d}  held-out architectures to score on   (optional)
manifest.csv lists them: space, arch, device, role, file, input_shape, latency_ms.
The weights are random: latency does not depend on them.

1. Time every file on the device, all under the same conditions (same power mode, clocks,
   threads, precision, batch size; nothing else running). Take the median of at least 100 runs
   after a warm-up, in milliseconds, of one inference. For example:

   TensorRT (Jetson, server GPUs):
     trtexec --onnx=reference_00.onnx --warmUp=500 --iterations=200
       -> "Latency: ... median = X ms" (add --fp16 or --int8 if the device runs so)
   OpenVINO:
     benchmark_app -m reference_00.onnx -d CPU -hint latency -niter 200
       -> "Median: X ms" in the Latency block
   ONNX Runtime:
     onnxruntime_perf_test -I -e cpu -m times -r 200 reference_00.onnx
       -> "P50 Latency: X s" (multiply by 1000)
   TFLite (phones, microcontrollers): convert first, e.g. with onnx2tf
     onnx2tf -i reference_00.onnx -o reference_00_tf
     benchmark_model --graph=reference_00_tf/reference_00_float32.tflite --num_threads=1 --num_runs=200
       -> "Inference (avg): X" in microseconds (divide by 1000)

   All files in one go (TensorRT as the example):
     for f in *.onnx; do echo "$f $(trtexec --onnx=$f --iterations=200 | grep -m1 -o 'median = [0-9.]* ms')"; done

2. Fill the latency_ms column of manifest.csv with each file's median in ms (a spreadsheet or a
   script; keep the other columns as they are). Every reference and shot row needs a value;
   holdout rows may stay blank (then there is no score).

3. Adapt the model to the device (run where help-plugin is installed):
     help-nas adapt --measurements {(out / MANIFEST).as_posix()} --out {device}.safetensors
   It prints the held-out Spearman, MAPE and +/-10 % accuracy when holdout rows are filled and
   writes a predicted-vs-measured plot next to the model.
"""


def read_manifest(path: str | Path):
    """Read a filled manifest back: ``(adapt, holdout)``, two :class:`~help_plugin.data.LatencyDataset`.

    ``adapt`` holds the reference and shot rows (``reference_rows`` marks the references), every one
    with a latency; ``holdout`` the held-out rows, ``NaN`` where the latency is blank. Both have the
    manifest's single device as their one column. A blank or bad latency of a reference or shot row,
    an unknown role or space, or several devices raise ``ValueError`` naming the file and line.
    """
    from ..data import LatencyDataset
    from ..spaces import get_space

    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("space", "arch", "device", "role", "latency_ms") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} is not an export manifest: it lacks column(s) {missing}")
        rows = [(reader.line_num, r) for r in reader]
    if not rows:
        raise ValueError(f"{path} has no rows")
    names = {r["space"] for _, r in rows}
    devices = {r["device"] for _, r in rows}
    if len(names) != 1:
        raise ValueError(f"{path} holds several spaces {sorted(names)}; a manifest has one")
    if len(devices) != 1:
        raise ValueError(f"{path} holds several devices {sorted(devices)}; a manifest has one")
    sp = get_space(names.pop())
    device = devices.pop()
    parts: dict[str, tuple[list, list]] = {role: ([], []) for role in ROLES}
    for line, r in rows:
        where = f"{path}, line {line}"
        role = r["role"]
        if role not in ROLES:
            raise ValueError(f"{where}: unknown role {role!r}; expected one of {ROLES}")
        try:
            arch = sp.parse(r["arch"])
        except (ValueError, TypeError) as err:
            raise ValueError(f"{where}: {err}") from None
        text = (r["latency_ms"] or "").strip()
        if not text:
            if role != "holdout":
                raise ValueError(f"{where}: latency_ms of {role} {r.get('file') or r['arch']!r} is blank; "
                                 f"time that file on the device and fill it in")
            ms = float("nan")
        else:
            try:
                ms = float(text)
            except ValueError:
                raise ValueError(f"{where}: latency_ms {text!r} is not a number") from None
            if not np.isfinite(ms) or ms <= 0:
                raise ValueError(f"{where}: latency_ms = {text!r} is not a finite positive latency in ms")
        parts[role][0].append(arch)
        parts[role][1].append(ms)
    if not parts["reference"][0]:
        raise ValueError(f"{path} has no reference rows")

    def dataset(roles):
        archs = [a for role in roles for a in parts[role][0]]
        ms = [v for role in roles for v in parts[role][1]]
        stacked = np.stack(archs) if archs else np.zeros((0, sp.arch_length), dtype=np.int64)
        return LatencyDataset(sp, stacked, (device,), np.asarray(ms, dtype=np.float64).reshape(-1, 1))

    adapt = dataset(("reference", "shot"))
    adapt.reference_rows = np.arange(len(parts["reference"][0]))
    return adapt, dataset(("holdout",))


def adapt_from_manifest(path: str | Path, estimator=None, plot: str | Path | None = None, device: str | None = None):
    """Adapt a model to the device of a filled manifest; score it on the timed holdout rows.

    Args:
        path: the manifest (``manifest.csv`` of :func:`export_archs`, ``latency_ms`` filled in).
        estimator: the :class:`~help_plugin.predictors.HELPEstimator` to adapt (default: the shipped
            model of the manifest's space); the manifest must hold its reference architectures.
        plot: where to write the predicted-vs-measured PNG of the holdout (skipped without matplotlib).
        device: the device the manifest must be for (default: whichever it names).
    Returns:
        ``(estimator, report)``: the adapted estimator and a dict with ``space``, ``device``,
        ``measurements``, ``adapt_seconds`` and ``holdout``: ``archs``, ``timed`` and, with two or more
        timed, ``spearman``, ``kendall``, ``mape`` (%) and ``within_10pct`` (% of archs predicted within
        +/-10 %), and ``plot``.
    """
    from ..evaluation.metrics import metrics
    from ..predictors import HELPEstimator

    adapt, holdout = read_manifest(path)
    est = estimator if estimator is not None else HELPEstimator.pretrained(adapt.space.name)
    if est.space.name != adapt.space.name:
        raise ValueError(f"{path} is a {adapt.space.name} manifest but the model predicts {est.space.name}")
    if device is not None and device != adapt.devices[0]:
        raise ValueError(f"{path} is the manifest of device {adapt.devices[0]!r}, not {device!r}")
    device = adapt.devices[0]
    est.device = device
    est.fit(adapt.archs, adapt.latency(device))
    measured = holdout.latency(device)
    timed = np.isfinite(measured)
    score: dict[str, Any] = {"archs": len(holdout), "timed": int(timed.sum())}
    if timed.sum() >= 2:
        pred = est.predict(holdout.archs[timed])
        m = metrics(pred, measured[timed])
        score.update({k: round(float(m[k]), 4) for k in ("spearman", "kendall", "mape", "within_10pct")})
        if plot is not None:
            from ..evaluation.plots import predicted_vs_measured

            try:
                score["plot"] = str(predicted_vs_measured(pred, measured[timed], plot, title=f"{device} holdout"))
            except ImportError as err:
                log.warning("no plot: %s", err)
                score["plot"] = None
    report = {"space": est.space.name, "device": device, "measurements": est.n_measurements,
              "adapt_seconds": round(est.adapt_seconds_, 4), "holdout": score}
    log.info("adapted to %s from %s: %s", device, path, score)
    return est, report


def is_manifest(path: str | Path) -> bool:
    """Whether the CSV at ``path`` has the manifest's ``role`` column (cheap: reads the header)."""
    path = Path(path)
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), [])
    return "role" in header
