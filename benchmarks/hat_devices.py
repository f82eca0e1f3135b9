"""HAT SubTransformers measured on this CPU under several settings, each a "device": meta-train a
help+ model on some, adapt it to a held-out one from 10 reference + 10 measured SubTransformers, and
compare with HAT's own approach (its MLP predictor trained on every measurement of the held-out
setting) and the FLOPs proxy.

    python benchmarks/hat_devices.py                  # measures until --budget-s, then rerun: it resumes
    python benchmarks/hat_devices.py --budget-s 4000  # all of it in one go (timing 1,754 held-out SubTransformers took 33 min here)
    python benchmarks/hat_devices.py --save-model help_plugin/pretrained/hat.safetensors

A device is (threads, batch, source tokens, decoder steps) with PyTorch eager on this CPU; every
SubTransformer is HAT's WMT'14 En-De space0 network built by ``help_plugin.spaces.hat`` (real
widths, 32k vocabulary), timed as HAT times it (encoder once, then incremental decoder steps)
but with few decoder steps so that hundreds of networks fit in minutes. Measurements go through
``help_plugin.measure.TorchEagerDevice`` (interleaved passes, minimum of runs, median over passes)
into a ``MeasurementStore`` (default: the user cache store), so an interrupted run loses nothing;
each chunk's test-retest Spearman (``retest_rho``) is kept beside it and reported per device. That rho
is within a chunk: chunks timed minutes apart drift with the load of other jobs, so the held-out
setting also times 4 anchor architectures in every chunk and rescales the chunk by them
(:class:`AnchoredDevice`); the meta-training settings are not anchored (their drift is noise in
meta-training).

Architectures: ``--pool`` random SubTransformers measured on every meta-training device, and
``--target`` others measured only on the held-out device (never seen in meta-training), plus the 10
reference architectures (picked from the pool at evenly spaced analytic-MAC quantiles). On the
held-out device ``--test`` of the target architectures are scored; help+ and FLOPs get the 10
references + ``--shots`` others (``--seeds`` draws); HAT's MLP (HAT's recipe: lr 1e-5, 5000 steps; and
lr 1e-3, 1000 steps) gets the same 20, then 50, 100 (lr 1e-3) and every remaining measurement.
Prints a Markdown table and writes results/hat_devices.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from help_plugin import HELPEstimator
from help_plugin.data import LatencyDataset
from help_plugin.evaluation import metrics
from help_plugin.measure import (
    TorchEagerDevice,
    Measurements,
    MeasurementStore,
    default_store_path,
    measure_archs,
)
from help_plugin.predictors.baselines import FLOPsEstimator, HATMLPEstimator
from help_plugin.spaces import get_space
from help_plugin.spaces.hat import HATTransformer

log = logging.getLogger("hat_devices")

#: name -> (threads, batch, source tokens, decoder steps). Two-thread settings were left out: on this
#: 2-vCPU machine shared with other jobs their chunks' test-retest rho was 0.44 and 0.01.
DEVICES = {
    "t1-b1-s16-d4": (1, 1, 16, 4),
    "t1-b4-s16-d4": (1, 4, 16, 4),
    "t1-b1-s30-d2": (1, 1, 30, 2),
    "t1-b2-s24-d6": (1, 2, 24, 6),
}
TRAIN = ("t1-b1-s16-d4", "t1-b4-s16-d4", "t1-b1-s30-d2")
HELD_OUT = "t1-b2-s24-d6"
#: HAT's predictor recipe (latency_predictor.py: Adam lr 1e-5, 5000 steps) and a faster-learning
#: variant, so that the baseline is not held back by its learning rate. name -> HATMLPEstimator options
HAT_VARIANTS = {"hat-mlp": {"lr": 1e-5, "train_steps": 5000}, "hat-mlp lr=1e-3": {"lr": 1e-3, "train_steps": 1000}}


class AnchoredDevice(TorchEagerDevice):
    """Also times ``anchors`` ``[k, 40]`` in every chunk and scales the chunk by the median of
    (anchors' latencies in the first chunk / in this one).

    Chunks timed minutes apart on a machine shared with other jobs differ by a common factor: without
    anchors, this benchmark's held-out chunks were off by -13 % to +43 % (median residual of
    log-latency against analytic costs, per chunk) while spreading only 2-8 % within a chunk.
    ``state`` (a dict the caller persists) keeps the anchors' first latencies and every chunk's factor,
    so a resumed run scales to the same reference.
    """

    def __init__(self, space, anchors: np.ndarray, state: dict, **options):
        super().__init__(space, **options)
        self.anchors, self.state = anchors, state

    @property
    def settings(self) -> str:
        return f"{super().settings},anchors={len(self.anchors)}"

    def measure(self, archs, progress: bool = False) -> Measurements:
        idx, k = self.space.to_indices(archs), len(self.anchors)
        m = super().measure(np.concatenate([self.anchors, idx]), progress)
        first = np.asarray(self.state.setdefault("anchor_ms", m.latency_ms[:k].tolist()))
        factor = float(np.median(first / m.latency_ms[:k]))
        self.state.setdefault("factors", []).append(factor)
        return Measurements(m.latency_ms[k:] * factor, m.per_pass_ms[:, k:] * factor, m.retest_rho, m.seconds)


def make_device(name: str, passes: int, anchors: np.ndarray | None = None, state: dict | None = None):
    """The device ``name``; anchored (see :class:`AnchoredDevice`) when ``anchors`` are given."""
    threads, batch, src, steps = DEVICES[name]
    options = {"threads": threads, "batch_size": batch, "runs": 1, "passes": passes, "warmup": 1}
    space = HATTransformer(src_len=src, tgt_len=steps)
    if anchors is None:
        return TorchEagerDevice(space, **options)
    return AnchoredDevice(space, anchors, state, **options)


def reference_rows(space, archs: np.ndarray, n: int = 10) -> np.ndarray:
    """``n`` rows at evenly spaced quantiles (5 %, 15 %, ..., 95 %) of the analytic MACs."""
    order = np.argsort(space.cost_features(archs)[:, 0], kind="stable")
    return order[((np.arange(n) + 0.5) / n * len(archs)).astype(int)]


def measure_all(plan: dict[str, np.ndarray], archs: np.ndarray, anchors: np.ndarray, store: MeasurementStore,
                state_path: Path, passes: int, chunk: int, budget_s: float) -> tuple[dict[str, np.ndarray] | None, dict]:
    """Measure ``archs[plan[device]]`` on every device, chunk by chunk, until done or ``budget_s``.

    The held-out device is anchored with ``anchors``. Returns the latencies per device (None when the
    budget ran out first: rerun to resume) and the persisted state: per device the chunks' retest rho
    and, for the held-out device, the anchor factors.
    """
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    retest = state.setdefault("retest", {})
    t0 = time.perf_counter()
    out = {}
    for name, rows in plan.items():
        anchored = name == HELD_OUT
        device = make_device(name, passes, anchors if anchored else None, state.setdefault("anchors", {})
                             .setdefault(name, {}) if anchored else None)
        values = []
        for start in range(0, len(rows), chunk):
            sel = archs[rows[start:start + chunk]]
            if time.perf_counter() - t0 > budget_s:
                known = store.get(device.device_id, "hat", [device.space.canonical(r) for r in sel], device.settings)
                if len(known) < len(sel):
                    log.warning("budget of %.0f s used up at %s, rows %d..; rerun to resume", budget_s, name, start)
                    return None, state
            ms, info = measure_archs(device, sel, store=store, chunk_size=chunk)
            if info["measured"]:
                retest.setdefault(name, []).extend(info["chunk_retest_rho"])
                state_path.write_text(json.dumps(state))
                log.info("%s: rows %d-%d measured (%.0f s so far), chunk retest rho %s", name, start,
                         start + len(sel), time.perf_counter() - t0, np.round(info["chunk_retest_rho"], 3))
            values.append(ms)
        out[name] = np.concatenate(values)
    return out, state


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", type=int, default=150, help="architectures measured on every meta-training device")
    p.add_argument("--target", type=int, default=2000,
                   help="further architectures measured on the held-out device (HAT trains on ~2,000 per device)")
    p.add_argument("--test", type=int, default=200, help="of those, held out for scoring")
    p.add_argument("--shots", type=int, default=10)
    p.add_argument("--seeds", type=int, default=5, help="draws of the shots")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--chunk", type=int, default=16, help="architectures built and timed together")
    p.add_argument("--budget-s", type=float, default=270.0, help="stop measuring after this many seconds")
    p.add_argument("--store", default=None, help="measurement store (default: the user cache store)")
    p.add_argument("--save-model", default=None, help="write the meta-trained help+ model here (safetensors)")
    p.add_argument("--out", default="results/hat_devices.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    space = get_space("hat")  # the estimators' space: costs at HAT's 30/30 tokens, incremental decoding
    archs = space.sample(args.pool + args.target, seed=0)
    pool, target = np.arange(args.pool), np.arange(args.pool, args.pool + args.target)
    refs = reference_rows(space, archs[pool])
    plan = {name: pool for name in TRAIN}
    plan[HELD_OUT] = np.concatenate([refs, target])
    anchors = archs[reference_rows(space, archs[pool], 4)]  # 12.5 %, ..., 87.5 % MAC quantiles: not references

    store_path = Path(args.store) if args.store else default_store_path()
    store = MeasurementStore(store_path)
    t_measure = time.perf_counter()
    measured, state = measure_all(plan, archs, anchors, store, store_path.with_name("hat_devices_state.json"),
                                  args.passes, args.chunk, args.budget_s)
    if measured is None:
        print("measurement incomplete: rerun the same command to resume", file=sys.stderr)
        return 3
    measure_s = time.perf_counter() - t_measure
    retest = state["retest"]
    factors = state["anchors"][HELD_OUT]["factors"]

    lat = np.full((len(archs), len(DEVICES)), np.nan)
    names = list(DEVICES)
    for name, rows in plan.items():
        lat[rows, names.index(name)] = measured[name]
    data = LatencyDataset(space, archs, tuple(names), lat, refs)

    t0 = time.perf_counter()
    est = HELPEstimator.meta_train("hat", data, TRAIN, arch_rows=pool, device=HELD_OUT)
    meta_s = time.perf_counter() - t0
    if args.save_model:
        est.save(args.save_model)

    y = data.latency(HELD_OUT)
    test, rest = target[:args.test], target[args.test:]
    rows_by_method: dict[str, list] = {}
    n_used: dict[str, int] = {}

    def score(name: str, n: int, pred: np.ndarray) -> None:
        rows_by_method.setdefault(name, []).append(metrics(pred, y[test]))
        n_used[name] = n

    n_few = len(refs) + args.shots
    for seed in range(args.seeds):  # the same 10 references + a fresh draw of shots for every method
        shots = np.random.default_rng(seed).choice(rest, args.shots, replace=False)
        fit_rows = np.concatenate([refs, shots])
        est.adapt(y[refs], archs[shots], y[shots])
        score("help+", n_few, est.predict(archs[test]))
        score("flops", n_few, FLOPsEstimator("hat").fit(archs[fit_rows], y[fit_rows]).predict(archs[test]))
        for name, options in HAT_VARIANTS.items():
            hat = HATMLPEstimator(seed=seed, **options).fit(archs[fit_rows], y[fit_rows])
            score(name, n_few, hat.predict(archs[test]))
    n_all = len(rest) + len(refs)
    for n in sorted({min(50, n_all), min(100, n_all), n_all}):  # HAT's approach: many target measurements
        fit_rows = np.concatenate([refs, np.random.default_rng(0).permutation(rest)[:n - len(refs)]])
        for name, options in HAT_VARIANTS.items():
            if n == n_all or options["lr"] > 1e-5:  # HAT's own recipe (100 s per fit here) on all samples only
                hat = HATMLPEstimator(**options).fit(archs[fit_rows], y[fit_rows])
                score(f"{name}, {n} samples", n, hat.predict(archs[test]))

    summary = {}
    for name, runs in rows_by_method.items():
        rho = [r["spearman"] for r in runs]
        summary[name] = {"measurements": n_used[name], "spearman_mean": float(np.mean(rho)),
                         "spearman_std": float(np.std(rho)), "kendall_mean": float(np.mean([r["kendall"] for r in runs])),
                         "mape_mean": float(np.mean([r["mape"] for r in runs])), "runs": runs}
    device_info = {name: {"threads": DEVICES[name][0], "batch": DEVICES[name][1], "src_tokens": DEVICES[name][2],
                          "decoder_steps": DEVICES[name][3], "archs_measured": len(plan[name]),
                          "median_ms": float(np.median(measured[name])),
                          "retest_rho_median": float(np.median(retest[name])) if retest.get(name) else None,
                          "retest_chunks": len(retest.get(name, []))} for name in DEVICES}
    report = {"space": "hat (WMT'14 En-De space0)", "cpu_device_id": make_device(HELD_OUT, args.passes).device_id,
              "train_devices": list(TRAIN), "held_out": HELD_OUT, "devices": device_info,
              "protocol": {"pool": args.pool, "target": args.target, "test": args.test, "shots": args.shots,
                           "seeds": args.seeds, "passes": args.passes, "runs": 1, "warmup": 1, "chunk": args.chunk},
              "held_out_anchor_factors": {"min": min(factors), "max": max(factors), "chunks": len(factors)},
              "measure_seconds_this_run": measure_s, "meta_train_seconds": meta_s, "methods": summary,
              "saved_model": args.save_model}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))

    print("\n| device | threads | batch | src tokens | decoder steps | archs | median ms | retest rho (median over chunks) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, d in device_info.items():
        rr = "n/a" if d["retest_rho_median"] is None else f"{d['retest_rho_median']:.3f} ({d['retest_chunks']} chunks)"
        print(f"| {name}{' (held out)' if name == HELD_OUT else ''} | {d['threads']} | {d['batch']} | "
              f"{d['src_tokens']} | {d['decoder_steps']} | {d['archs_measured']} | {d['median_ms']:.1f} | {rr} |")
    ceiling = device_info[HELD_OUT]["retest_rho_median"]
    print(f"\nheld-out {HELD_OUT}: {args.test} test SubTransformers; help+ meta-trained on {len(TRAIN)} settings x "
          f"{args.pool} archs in {meta_s:.0f} s\n")
    print("| method | measurements on held-out | Spearman (mean ± std over seeds) | Kendall | MAPE % |")
    print("|---|---|---|---|---|")
    for name, s in summary.items():
        print(f"| {name} | {s['measurements']} | {s['spearman_mean']:.3f} ± {s['spearman_std']:.3f} | "
              f"{s['kendall_mean']:.3f} | {s['mape_mean']:.1f} |")
    print(f"\nharness test-retest rho on the held-out setting (median over chunks): {ceiling:.3f}; its chunks were "
          f"rescaled by anchor factors {min(factors):.2f}..{max(factors):.2f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
