"""``help-nas demo``: this machine as the unseen device, end to end, on embedded defaults.

A thin script over the library: time the shipped model's reference archs, K shots and held-out archs
on this CPU (:mod:`help_plugin.measure`), adapt (:mod:`help_plugin.predictors`), score the held-out
ones (:mod:`help_plugin.evaluation`), run a verified latency-constrained search
(:mod:`help_plugin.search`), and write ``report.json`` with plots.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from .evaluation.metrics import metrics, spearman
from .measure import TorchEagerDevice
from .predictors import HELPEstimator
from .predictors.shot_design import choose_shots
from .search import VerifiedSearch, synflow_proposer
from .search.verified import SYNFLOW

log = logging.getLogger(__name__)

#: How the report names each shot selection.
SHOTS_WORD = {"design": "designed", "random": "random"}


def run_demo(space: str = "nasbench201", shots: int = 10, n_test: int = 50, seed: int = 0, threads: int = 1,
             passes: int = 5, out_dir: str | Path = "results/demo", progress: bool = True,
             search_cycles: int = 60, shot_selection: str = "design") -> dict:
    """Measure the shipped model's reference archs + ``shots`` (chosen by ``shot_selection``, see
    :func:`~help_plugin.predictors.shot_design.choose_shots`) + ``n_test`` random archs on this CPU,
    adapt on the first two groups, score predictions on the held-out ``n_test``, and search under the
    median held-out latency.

    Returns a report dict (also written as ``report.json``, with ``scatter.png`` and ``pareto.png``, in
    ``out_dir``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = TorchEagerDevice(space, threads=threads, passes=passes, seed=seed)
    est = HELPEstimator.pretrained(space, device=device.device_id)
    refs = est.reference_indices
    shot_idx = choose_shots(est, shots, seed, shot_selection)
    taken = {est.space.canonical(r) for r in np.concatenate([refs, shot_idx])}
    sample = np.concatenate([shot_idx, est.space.sample_distinct(n_test, seed + 1, taken)])
    measured = device.measure(np.concatenate([refs, sample]), progress=progress)
    ms, n_ref = measured.latency_ms, len(refs)
    t0 = time.perf_counter()
    est.adapt(ms[:n_ref], sample[:shots], ms[n_ref:n_ref + shots])
    adapt_s = time.perf_counter() - t0
    test_idx, test_ms = sample[shots:], ms[n_ref + shots:]
    t0 = time.perf_counter()
    pred = est.predict(test_idx)
    predict_s = time.perf_counter() - t0
    report = {
        "space": space, "device": device.device_id, "threads": threads, "batch_size": 1,
        "measurements_used": est.n_measurements, "shot_selection": shot_selection, "held_out": len(test_idx),
        "retest_rho": measured.retest_rho,
        "help+": metrics(pred, test_ms),
        "flops_rho": spearman(est.space.cost_features(test_idx)[:, 0], test_ms),
        "seconds": {"measure": measured.seconds, "adapt": adapt_s, "predict": predict_s},
        "held_out_archs": [{"arch": est.space.format(a), "measured_ms": float(m), "predicted_ms": float(p)}
                           for a, m, p in zip(test_idx, test_ms, pred)],
    }
    report["help+"]["fraction_of_ceiling"] = report["help+"]["spearman"] / report["retest_rho"]
    limit = float(np.round(np.median(test_ms), 2))  # a constraint in the middle of what this space costs here
    search = VerifiedSearch(est, device, synflow_proposer(est.space, cycles=search_cycles, seed=seed,
                                                          progress=progress), objective=SYNFLOW)
    result = search.run(limit)
    report["search"] = result.to_dict(candidates=True)
    report["search_verdict"] = result.verdict()
    est.save(out_dir / "adapted.safetensors")
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    try:
        from .evaluation.plots import pareto, predicted_vs_measured

        predicted_vs_measured(pred, test_ms, out_dir / "scatter.png", title=f"{space} on this CPU")
        report["scatter_png"] = str(out_dir / "scatter.png")
        pareto(result, out_dir / "pareto.png")
        report["pareto_png"] = str(out_dir / "pareto.png")
    except ImportError:
        log.warning("matplotlib missing: no plots (pip install 'help-plugin[plot]')")
    return report


def format_report(r: dict) -> str:
    h, sr = r["help+"], r["search"]
    lines = [
        f"device {r['device']} ({r['threads']} thread, batch 1), space {r['space']}",
        "",
        "| quantity | value |", "|---|---|",
        f"| target measurements used (reference + {SHOTS_WORD[r['shot_selection']]} shots) | {r['measurements_used']} |",
        f"| held-out architectures scored | {r['held_out']} |",
        f"| harness test-retest Spearman (ceiling) | {r['retest_rho']:.3f} |",
        f"| HELP (help+) Spearman / Kendall | {h['spearman']:.3f} / {h['kendall']:.3f} |",
        f"| HELP share of the ceiling | {100 * h['fraction_of_ceiling']:.1f} % |",
        f"| HELP MAPE | {h['mape']:.1f} % |",
        f"| FLOPs proxy Spearman | {r['flops_rho']:.3f} |",
        f"| time: measure / adapt / predict | {r['seconds']['measure']:.1f} s / {1e3 * r['seconds']['adapt']:.1f} ms"
        f" / {1e3 * r['seconds']['predict']:.1f} ms |",
        f"| search: limit / predicted / {sr['constraint']} / re-measured | {sr['latency_limit_ms']:.2f} / "
        f"{sr['predicted_ms']:.2f} / {sr['bound_ms']:.2f} / {sr['measured_ms']:.2f} ms "
        f"({'met' if sr['constraint_met'] else 'MISSED'}{', in the target band' if sr['within_band'] else ''}) |",
        f"| search: target band (measured); attempts | {sr['target_band_ms'][0]:.2f}-{sr['target_band_ms'][1]:.2f} ms; "
        f"{sr['attempts']} |",
        f"| search: device speed vs adaptation (reference archs re-timed) before / typical / at re-measure | "
        f"{sr['calibration_speed']:.2f}x / {sr['device_speed']:.2f}x / {sr['final_speed']:.2f}x |",
        f"| search: candidates scored, measured; time | {sr['evaluated']}, {sr['measurements']}; "
        f"{sr['search_seconds']:.1f} s |",
        f"\nfound ({sr['objective']}): {sr['arch']}",
        f"verdict: {r['search_verdict']}",
    ]
    if "scatter_png" in r:
        lines.append(f"plots: {r['scatter_png']}, {r['pareto_png']}")
    return "\n".join(lines)
