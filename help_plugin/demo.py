"""``help-nas demo``: this machine as the unseen device, end to end, on embedded defaults."""
from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from .evaluation import metrics
from .help import HELPEstimator
from .measure import LocalTorchDevice
from .proxies import synflow_score
from .search import NoFeasibleArchitecture, evolutionary_search
from .validation import check_latencies, check_same_length

log = logging.getLogger(__name__)


def adapt_on_this_machine(space: str, device: LocalTorchDevice, store=None, shots: int = 10, seed: int = 0,
                          progress: bool = False) -> HELPEstimator:
    """The shipped model adapted to ``device`` from its reference archs + ``shots`` random ones (via ``store``)."""
    from .store import measure_archs

    est = HELPEstimator.pretrained(space, device=device.device_id)
    refs = est.space.to_indices(est.reference_archs)
    few = est.space.sample(shots, seed)
    ms, _ = measure_archs(device, np.concatenate([refs, few]), store, progress=progress)
    return est.adapt(ms[:len(refs)], few, ms[len(refs):])


def search_and_verify(est: HELPEstimator, device, latency_limit_ms: float, cycles: int = 60,
                      seed: int = 0, progress: bool = False, verify_top: int = 4, guard: float = 0.03,
                      budget_use: float | None = 0.9,
                      anchors: tuple[np.ndarray, np.ndarray] | str | None = "references",
                      calibration_tolerance: float = 0.05, retries: int = 2, final_sessions: int = 3,
                      remeasure: int = 3, remeasure_tolerance: float = 0.03) -> dict:
    """Latency-constrained search on a real device, checked by measurement.

    The aim is a winner whose measured latency lies in the *target band*
    ``[budget_use * (1 + guard) * limit, (1 - guard) * limit]`` ms: under the limit by at least
    ``guard`` (a fraction, room for re-measurement noise) and not wasting the budget (at least
    ``budget_use`` of it, with the same room). ``budget_use=None`` or ``0`` drops the lower end.

    0. Calibration: the ``anchors`` are timed with every measuring session on ``device``; the
       ratio of their latency now to that at adaptation (median over anchors) is the device's
       *speed* in that session, and the median over sessions so far its *typical speed*
       (``device_speed``). Predictions are in the units of the adaptation measurements, so a device
       that has since become slower or faster (load on a shared machine, thermal state, another
       power mode) is met where it is: the search works in predicted ms divided by the typical
       speed, unless that is within ``calibration_tolerance`` of 1 (taken for timing noise; 10
       anchors re-timed on a quiet 2-vCPU VM scatter by about +-2.5 %).
    1. Regularised evolution maximises the SynFlow proxy over architectures *predicted* within the
       target band divided by that speed (``search_window_ms``).
    2. The ``verify_top`` best-scoring candidates not measured before are measured on ``device``
       (interleaved with the anchors) and brought to the typical speed (times typical / session
       speed, so a load spike during one session cancels out). The best-scoring one within the
       target band wins. When none is, the search runs again (up to ``retries`` times) with the
       predictor re-adapted on these measurements too (on a copy of ``est``, when it keeps its
       adaptation data, see :meth:`HELPEstimator.partial_fit`) -- without anchors or re-adaptation,
       with the speed set to the candidates' median measured / predicted ratio instead. After the
       last attempt the candidate of any attempt measured closest under the band's top wins (the one
       that spends most of the budget), else the fastest.
    3. The winner is re-measured afresh in ``final_sessions`` measuring sessions (each with the
       anchors), and the median of those raw figures is ``measured_ms``, so the selection in step 2
       does not bias it and one session's noise does not decide it. A session whose anchors run more
       than ``remeasure_tolerance`` off the typical speed (a load spike, or the few-% wander of a
       shared VM's speed over seconds) is replaced by another, up to ``remeasure`` times; the
       sessions whose anchors are closest to the typical speed count (chosen by the anchors alone,
       never by the winner's own figures).

    ``anchors``: ``(archs, latency_ms)`` measured on ``device`` when ``est`` was adapted (any
    architectures, typically its reference archs); ``"references"`` (default) takes ``est``'s own
    reference archs and the latencies it was adapted with (when it has them); ``None`` skips
    calibration and drift reports (``drift`` fields are NaN), saving ``3 k`` measurements.
    """
    if not 0 <= guard < 1:
        raise ValueError(f"guard must be a fraction in [0, 1), got {guard!r}")
    if final_sessions < 1 or remeasure < 0:
        raise ValueError(f"need final_sessions >= 1 and remeasure >= 0, got {final_sessions!r} and {remeasure!r}")
    band_ms = ((budget_use or 0.0) * (1 + guard) * latency_limit_ms, (1 - guard) * latency_limit_ms)
    if budget_use is not None and not 0 <= band_ms[0] < band_ms[1]:
        raise ValueError(f"budget_use={budget_use!r} with guard={guard!r} leaves no target band under the limit: "
                         "budget_use * (1 + guard) must be below 1 - guard")
    if isinstance(anchors, str):
        if anchors != "references":
            raise ValueError(f"anchors must be (archs, latency_ms), 'references' or None, not {anchors!r}")
        ref_ms = getattr(est, "reference_latencies_ms_", None)
        anchors = None if ref_ms is None else (est.space.to_indices(est.reference_archs), ref_ms)
    if anchors is not None:
        anchors = (est.space.to_indices(anchors[0]), check_latencies(anchors[1], "anchor latency_ms"))
        check_same_length(anchors[0], anchors[1], "anchor archs", "anchor latency_ms")
    n_anchors = 0 if anchors is None else len(anchors[0])
    n_measured = 0
    speeds: list[float] = []  # the device's speed vs adaptation in each measuring session (anchors re-timed)

    def timed(archs: np.ndarray) -> tuple[np.ndarray, float]:
        nonlocal n_measured
        n_measured += len(archs) + n_anchors
        if anchors is None:
            return device.measure(archs).latency_ms, float("nan")
        ms = device.measure(np.concatenate([archs, anchors[0]])).latency_ms
        speeds.append(float(np.median(ms[len(archs):] / anchors[1])))
        return ms[:len(archs)], speeds[-1]

    def typical_speed() -> float:
        return float(np.median(speeds)) if speeds else float("nan")

    def speed_from_anchors() -> float:
        return typical_speed() if abs(typical_speed() - 1) > calibration_tolerance else 1.0

    calibration_drift = float("nan") if anchors is None else timed(np.zeros((0, est.space.arch_length), np.int64))[1]
    speed = speed_from_anchors()
    if speed != 1:
        log.info("the device runs %.0f %% %s than when the estimator was adapted (anchor archs re-timed): "
                 "searching within %.2f-%.2f ms of adaptation-time latency", 100 * abs(speed - 1),
                 "slower" if speed > 1 else "faster", band_ms[0] / speed, band_ms[1] / speed)
    proxy_scores: dict = {}  # SynFlow builds a network per arch: score each arch once across retries

    def proxy(arch: np.ndarray) -> float:
        key = est.space.canonical(arch)
        if key not in proxy_scores:
            proxy_scores[key] = synflow_score(est.space, arch)
        return proxy_scores[key]

    windows, search_s = [], 0.0
    verified, candidates = [], []  # (arch, score, predicted, raw ms, ms at typical speed); what evolution scored
    searcher = est  # re-adapted (on a copy) with the verified candidates before a retry, when it can be
    refit = getattr(est, "shot_latencies_ms_", None) is not None

    def evolve(floor_ms: float, limit_ms: float):
        return evolutionary_search(searcher, proxy, limit_ms, cycles=cycles, margin_std=0.0, seed=seed,
                                   progress=progress, latency_floor_ms=floor_ms)

    for attempt in range(retries + 1):
        windows.append((band_ms[0] / speed, band_ms[1] / speed))
        t0 = time.perf_counter()
        try:
            found = evolve(*windows[-1])
        except NoFeasibleArchitecture:
            if windows[-1][0] == 0:
                raise
            log.warning("no architecture is predicted within %.2f-%.2f ms: searching under the limit alone",
                        *windows[-1])
            windows[-1] = (0.0, windows[-1][1])
            found = evolve(*windows[-1])
        search_s += time.perf_counter() - t0
        candidates += found.evaluated
        checked = {est.space.canonical(v[0]) for v in verified}
        ranked = [e for e in sorted(found.evaluated, key=lambda e: -e[1])
                  if est.space.canonical(e[0]) not in checked][:max(1, verify_top)]
        if not ranked:
            break  # every candidate of this attempt was measured before
        ranked_archs = np.stack([arch for arch, _, _ in ranked])
        raw_ms, session_speed = timed(ranked_archs)
        verify_speed = session_speed
        typical_ms = raw_ms if anchors is None else raw_ms * typical_speed() / session_speed
        verified += [(*r, float(raw), float(typ)) for r, raw, typ in zip(ranked, raw_ms, typical_ms)]
        if ((band_ms[0] <= typical_ms) & (typical_ms <= band_ms[1])).any() or attempt == retries:
            break
        if anchors is not None and refit:  # the anchors tell the device's speed, the predictor learns the rest
            speed, adaptation_ms = speed_from_anchors(), raw_ms / session_speed
        else:  # the candidates' error near this limit is the best estimate
            speed = float(np.median(typical_ms / np.array([ms for _, _, ms in ranked])))
            adaptation_ms = typical_ms / speed
        if refit:
            searcher = (copy.deepcopy(est) if searcher is est else searcher).partial_fit(ranked_archs, adaptation_ms)
        log.info("no candidate measured within %.2f-%.2f ms (%.2f-%.2f ms): searching again%s at %.2fx the "
                 "predicted latency", *band_ms, float(typical_ms.min()), float(typical_ms.max()),
                 f" with the predictor re-adapted on {searcher.n_measurements} measurements" if refit else "", speed)
    verified.sort(key=lambda v: -v[1])
    winner, score, predicted_ms, verify_ms, _ = (
        next((v for v in verified if band_ms[0] <= v[4] <= band_ms[1]), None)
        or max((v for v in verified if v[4] <= band_ms[1]), key=lambda v: v[4], default=None)
        or min(verified, key=lambda v: v[4]))
    device_speed = typical_speed()
    finals = []  # (how far the session's anchors are off the typical speed, measured ms, session speed)

    def steady(final: tuple) -> bool:  # NaN without anchors: every session counts
        return not final[0] > remeasure_tolerance

    while sum(map(steady, finals)) < final_sessions and len(finals) < final_sessions + remeasure:
        measured_ms, session_speed = timed(winner[None])
        finals.append((abs(session_speed / device_speed - 1), float(measured_ms[0]), session_speed))
        if not steady(finals[-1]):
            log.info("the anchors re-timed with the winner ran %.0f %% off the device's typical speed: measuring "
                     "again", 100 * finals[-1][0])
    counted = sorted(finals, key=lambda f: 0.0 if np.isnan(f[0]) else f[0])[:final_sessions]
    measured, drift = (float(np.median([f[i] for f in counted])) for i in (1, 2))
    if abs(drift / device_speed - 1) > 0.1:
        log.warning("the device's speed was %.0f %% off its typical speed while the winner was re-measured (anchor "
                    "archs re-timed): the re-measured latency is shifted by that much", 100 * abs(drift / device_speed - 1))
    return {"latency_limit_ms": latency_limit_ms, "arch": est.space.format(winner),
            "proxy": "SynFlow (training-free, no data)", "proxy_score": float(score),
            "predicted_ms": float(predicted_ms), "verify_ms": verify_ms, "measured_ms": measured,
            "target_band_ms": band_ms, "calibration_drift": calibration_drift, "device_speed": device_speed,
            "search_window_ms": windows[0], "final_search_window_ms": windows[-1],
            "search_attempts": len(windows), "verify_drift": verify_speed,
            "drift": drift, "final_sessions": len(finals),
            "constraint_met": measured <= latency_limit_ms,
            "within_10pct_below": 0.9 * latency_limit_ms <= measured <= latency_limit_ms,
            "verify_measurements": n_measured,
            "evaluated": len(candidates),
            "search_seconds": search_s,
            "candidates": [(float(ms), float(score)) for _, score, ms in candidates]}


def run_demo(space: str = "nasbench201", shots: int = 10, n_test: int = 50, seed: int = 0, threads: int = 1,
             passes: int = 5, out_dir: str | Path = "results/demo", progress: bool = True,
             search_cycles: int = 60) -> dict:
    """Measure the shipped model's reference archs + ``shots`` + ``n_test`` random archs on this CPU,
    adapt on the first two groups, and score predictions on the held-out ``n_test``.

    Returns a report dict (also written as ``report.json``, with ``scatter.png``, in ``out_dir``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = LocalTorchDevice(space, threads=threads, passes=passes, seed=seed)
    est = HELPEstimator.pretrained(space, device=device.device_id)
    refs = est.space.to_indices(est.reference_archs)
    ref_keys = {est.space.canonical(r) for r in refs}
    pool = [r for r in est.space.sample(4 * (shots + n_test), seed) if est.space.canonical(r) not in ref_keys]
    unique = list({est.space.canonical(r): r for r in pool}.values())[: shots + n_test]
    sample = np.stack(unique)
    archs = np.concatenate([refs, sample])
    measured = device.measure(archs, progress=progress)
    ms = measured.latency_ms
    n_ref = len(refs)
    t0 = time.perf_counter()
    est.adapt(ms[:n_ref], sample[:shots], ms[n_ref:n_ref + shots])
    adapt_s = time.perf_counter() - t0
    test_idx, test_ms = sample[shots:], ms[n_ref + shots:]
    t0 = time.perf_counter()
    pred = est.predict(test_idx)
    predict_s = time.perf_counter() - t0
    flops = est.space.cost_features(test_idx)[:, 0]
    report = {
        "space": space, "device": device.device_id, "threads": threads, "batch_size": 1,
        "measurements_used": est.n_measurements, "held_out": len(test_idx),
        "retest_rho": measured.retest_rho,
        "help+": metrics(pred, test_ms),
        "flops_rho": float(spearmanr(flops, test_ms).correlation),
        "seconds": {"measure": measured.seconds, "adapt": adapt_s, "predict": predict_s},
        "held_out_archs": [{"arch": est.space.format(a), "measured_ms": float(m), "predicted_ms": float(p)}
                           for a, m, p in zip(test_idx, test_ms, pred)],
    }
    report["help+"]["fraction_of_ceiling"] = report["help+"]["spearman"] / report["retest_rho"]
    limit = float(np.round(np.median(test_ms), 2))  # a constraint in the middle of what this space costs here
    report["search"] = search_and_verify(est, device, limit, cycles=search_cycles, seed=seed, progress=progress)
    est.save(out_dir / "adapted.safetensors")
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    try:
        from .plots import predicted_vs_measured

        from .plots import pareto

        predicted_vs_measured(pred, test_ms, out_dir / "scatter.png", title=f"{space} on this CPU")
        report["scatter_png"] = str(out_dir / "scatter.png")
        pareto(report["search"], out_dir / "pareto.png")
        report["pareto_png"] = str(out_dir / "pareto.png")
    except ImportError:
        log.warning("matplotlib missing: no scatter plot (pip install 'help-plugin[plot]')")
    return report


def format_report(r: dict) -> str:
    h = r["help+"]
    lines = [
        f"device {r['device']} ({r['threads']} thread, batch 1), space {r['space']}",
        "",
        "| quantity | value |", "|---|---|",
        f"| target measurements used (reference + shots) | {r['measurements_used']} |",
        f"| held-out architectures scored | {r['held_out']} |",
        f"| harness test-retest Spearman (ceiling) | {r['retest_rho']:.3f} |",
        f"| HELP (help+) Spearman / Kendall | {h['spearman']:.3f} / {h['kendall']:.3f} |",
        f"| HELP share of the ceiling | {100 * h['fraction_of_ceiling']:.1f} % |",
        f"| HELP MAPE | {h['mape']:.1f} % |",
        f"| FLOPs proxy Spearman | {r['flops_rho']:.3f} |",
        f"| time: measure / adapt / predict | {r['seconds']['measure']:.1f} s / {1e3 * r['seconds']['adapt']:.1f} ms"
        f" / {1e3 * r['seconds']['predict']:.1f} ms |",
    ]
    sr = r["search"]
    lines += [
        f"| search: limit / predicted / re-measured | {sr['latency_limit_ms']:.2f} / {sr['predicted_ms']:.2f} / "
        f"{sr['measured_ms']:.2f} ms ({'met' if sr['constraint_met'] else 'MISSED'}"
        f"{', within 10 % below' if sr['within_10pct_below'] else ''}) |",
        f"| search: target band (measured); attempts | {sr['target_band_ms'][0]:.2f}-{sr['target_band_ms'][1]:.2f} ms; "
        f"{sr['search_attempts']} |",
        f"| search: device speed vs adaptation (reference archs re-timed) before / typical / at re-measure | "
        f"{sr['calibration_drift']:.2f}x / {sr['device_speed']:.2f}x / {sr['drift']:.2f}x |",
        f"| search: candidates scored, measured; time | {sr['evaluated']}, {sr['verify_measurements']}; "
        f"{sr['search_seconds']:.1f} s |",
        f"\nfound ({sr['proxy']}): {sr['arch']}",
    ]
    if "scatter_png" in r:
        lines.append(f"plots: {r['scatter_png']}, {r['pareto_png']}")
    return "\n".join(lines)
