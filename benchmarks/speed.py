"""Prediction speed against the anchor the plug-in replaces: a per-choice lookup table (LUT) in Python.

    python benchmarks/speed.py                      # all three spaces, ~2-4 min on 2 vCPUs
    python benchmarks/speed.py --spaces nasbench201 --finder-generations 500   # + OFA's finder at its default budget

A LUT latency model, as OFA, ProxylessNAS and FBNet build them per device, sums one table entry per
searchable position: parse the architecture (the string, or OFA's dict), look up each position's choice,
add. Here its entries come from the adapted estimator itself (its predicted latency of each choice in a
fixed context; the values do not matter for speed). Every row is measured in one process, interleaved
(LUT, estimator, LUT, estimator, ...) over ``--repeats`` rounds, and the median of each is reported, so a
load change on a shared machine hits both sides; read the ratios, not the absolute rates.

Rows per space (the estimator: the shipped help+ model adapted to one of HELP's test devices with its
10 reference archs + 10 shots):

* ``per call``: ``estimator.predict_one(canonical form)`` vs the LUT on one architecture at a time
  (NAS-Bench-201 strings, FBNet block strings, OFA dicts), on a pool of distinct architectures;
* ``batched canonical``: ``estimator.predict(list of canonical forms)`` vs the LUT in a loop;
* ``batched indices``: ``estimator.predict(index array [100000, L])`` (archs/s; the LUT's rate on
  index rows, a vectorised numpy gather-and-sum, is shown beside it).

``--finder-generations N`` also times OFA's own ``ofa.nas.search_algorithm.EvolutionFinder`` (population
100, N generations; OFA's default is 500) given an OFA-style per-layer LUT (:class:`OFALayerLUT`, whose
entries are the adapted head's own, so it answers what help+'s mean answers) vs ``HELPEfficiencyPredictor``
on the mean (the same search path: the ratio is the cost of prediction) and on the default 95 % bound
(a stricter efficiency: the finder rejects more random samples, so it makes more queries), and given the
bound's answers recorded in a dict (the bound's search path at the cost of a lookup: the finder's own time on it).

Prints a Markdown table and writes ``results/speed.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from help_plugin import HELPEstimator, get_split, load_help_data
from help_plugin.predictors import torch_threads


class LookupTable:
    """A per-position, per-choice latency table of one space, called like a LUT latency model is.

    ``table[position, choice]`` ms; :meth:`__call__` parses one canonical form in plain Python and sums.
    """

    def __init__(self, space, table: np.ndarray):
        self.space, self.table = space, table
        self.rows = table.tolist()  # Python lists: what a hand-written LUT indexes
        if space.name == "nasbench201":
            from help_plugin.spaces.nasbench201 import OPS
            self.names = {op: i for i, op in enumerate(OPS)}
        elif space.name == "fbnet":
            from help_plugin.spaces.fbnet import BLOCKS
            self.names = {b: i for i, b in enumerate(BLOCKS)}
        elif space.name == "ofa":
            from help_plugin.spaces.ofa import DEPTHS, EXPANDS, KERNELS, RESOLUTIONS
            self.kernels = {k: i for i, k in enumerate(KERNELS)}
            self.expands = {e: i for i, e in enumerate(EXPANDS)}
            self.depths = {d: i for i, d in enumerate(DEPTHS)}
            self.resolutions = {r: i for i, r in enumerate(RESOLUTIONS)}
        else:
            raise ValueError(f"no LUT for space {space.name!r}")

    def __call__(self, arch) -> float:
        rows = self.rows
        if self.space.name == "nasbench201":  # '|op~0|+|op~0|op~1|+|...|'
            ops = [tok.partition("~")[0] for tok in arch.replace("+", "").split("|") if tok]
            return sum(rows[i][self.names[op]] for i, op in enumerate(ops))
        if self.space.name == "fbnet":  # 'k3_e1-k3_e6-...'
            return sum(rows[i][self.names[b]] for i, b in enumerate(arch.split("-")))
        total = rows[45][self.resolutions[arch["r"]]]  # ofa: active layers' kernel and expand entries
        for stage, d in enumerate(arch["d"]):
            for j in range(d):
                layer = 4 * stage + j
                total += rows[layer][self.kernels[arch["ks"][layer]]] + rows[20 + layer][self.expands[arch["e"][layer]]]
        return total

    def batch_indices(self, idx: np.ndarray) -> np.ndarray:
        """The vectorised LUT: gather one entry per position and sum, ``[n]`` ms (inactive OFA layers included)."""
        return self.table[np.arange(idx.shape[1]), idx].sum(1)


def lut_from_estimator(est) -> LookupTable:
    """Each choice's predicted latency with every other position at choice 0 (only the speed matters)."""
    space = est.space
    width = max(space.choices)
    table = np.zeros((space.arch_length, width))
    base = np.zeros((1, space.arch_length), np.int64)
    for pos, n in enumerate(space.choices):
        rows = np.repeat(base, n, axis=0)
        rows[:, pos] = np.arange(n)
        table[pos, :n] = est.predict(rows) / space.arch_length
    return LookupTable(space, table)


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each zero-argument function, run round-robin ``repeats`` times."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def adapted(space: str):
    data = load_help_data(space)
    device = get_split(space).test[0]
    lat = data.latency(device)
    rest = np.setdiff1d(np.arange(len(data)), data.reference_rows)
    est = HELPEstimator.pretrained(space).adapt(lat[data.reference_rows], data.archs[rest[:10]], lat[rest[:10]])
    return est, device


def space_rows(space: str, args) -> dict:
    est, device = adapted(space)
    lut = lut_from_estimator(est)
    sp = est.space
    pool = sp.sample(args.calls, seed=1)
    forms = [sp.format(r) for r in pool]
    idx = sp.sample(args.batch, seed=2)

    def per_call_est():
        for a in forms:
            est.predict_one(a)

    def per_call_lut():
        for a in forms:
            lut(a)

    t = interleaved({"lut_call": per_call_lut, "est_call": per_call_est,
                     "lut_batch": lambda: [lut(a) for a in forms], "est_batch": lambda: est.predict(forms),
                     "lut_idx": lambda: lut.batch_indices(idx), "est_idx": lambda: est.predict(idx)}, args.repeats)
    n = len(forms)
    row = {"space": space, "device": device,
           "lut_calls_per_s": n / t["lut_call"], "est_calls_per_s": n / t["est_call"],
           "lut_batched_archs_per_s": n / t["lut_batch"], "est_batched_archs_per_s": n / t["est_batch"],
           "lut_index_archs_per_s": len(idx) / t["lut_idx"], "est_index_archs_per_s": len(idx) / t["est_idx"]}
    row["per_call_ratio"] = row["est_calls_per_s"] / row["lut_calls_per_s"]
    row["batched_ratio"] = row["est_batched_archs_per_s"] / row["lut_batched_archs_per_s"]
    return row


class OFALayerLUT:
    """The latency LUT OFA's own search builds per device: one entry per elastic layer at each input resolution,
    kernel and expand ratio, plus each stage's depth and each resolution's fixed part; :meth:`get_efficiency` sums
    the active layers' entries in plain Python. Its entries are the adapted help+ head's own folded table (the
    identity-link head is exactly this sum), so the LUT and ``HELPEfficiencyPredictor(est, confidence=None)`` give
    the same latencies and drive the finder down the same path: the timing difference is the cost of prediction."""

    def __init__(self, est):
        from help_plugin.spaces.ofa import DEPTHS, EXPANDS, KERNELS, RESOLUTIONS
        kind, table, const = est.meta_model._compiled(est.head_)  # ("folded", ms per term, constant)
        if kind != "folded":
            raise SystemExit("the adapted OFA head has a log link: it is no LUT (pick another device or seed)")
        self.table, self.const = table.tolist(), float(const)
        self.r = {r: i for i, r in enumerate(RESOLUTIONS)}
        self.k = {k: i for i, k in enumerate(KERNELS)}
        self.e = {e: i for i, e in enumerate(EXPANDS)}
        self.d = {d: i for i, d in enumerate(DEPTHS)}
        self.n_res, self.depth_start = len(RESOLUTIONS), 20 * len(RESOLUTIONS) * 9 + 1

    def get_efficiency(self, arch) -> float:
        t, r = self.table, self.r[arch["image_size"]]
        total = self.const + t[self.depth_start + 15 + r]
        for stage, d in enumerate(arch["d"]):
            total += t[self.depth_start + 3 * stage + self.d[d]]
            for layer in range(4 * stage, 4 * stage + d):
                total += t[((layer * self.n_res + r) * 3 + self.k[arch["ks"][layer]]) * 3 + self.e[arch["e"][layer]]]
        return total


def finder_row(generations: int, repeats: int) -> dict:
    """OFA's own EvolutionFinder (population 100, same seed) with an OFA-style per-layer LUT, with
    ``HELPEfficiencyPredictor`` on the mean (HELP's rule: the LUT's own values, so the same search path), with
    the default 95 % selection-aware bound (a stricter efficiency, so the finder rejects more samples) and with the
    bound's answers recorded (the same path as the bound's: the finder's own time on it)."""
    import random

    from ofa.nas.search_algorithm import EvolutionFinder

    from help_plugin.integrations.ofa_search import HELPEfficiencyPredictor, accuracy_predictor, arch_key

    est, device = adapted("ofa")
    lut = OFALayerLUT(est)
    sample = [est.space.format(r) for r in est.space.sample(200, seed=4)]
    mean = HELPEfficiencyPredictor(est, confidence=None)
    gap = max(abs(lut.get_efficiency({**a, "image_size": a["r"]}) - mean.get_efficiency(a)) for a in sample)
    limit = float(np.median(est.predict(est.space.sample(2000, seed=3))))
    acc = accuracy_predictor()
    queries, estimated = {}, {}  # finder queries; of them, those the estimator answered (not from the cache)

    def run(name, predictor):
        calls = [0]
        inner = predictor.get_efficiency

        class Counted:
            def get_efficiency(self, arch):
                calls[0] += 1
                return inner(arch)

        random.seed(0)
        np.random.seed(0)
        best = EvolutionFinder(Counted(), acc, population_size=100, max_time_budget=generations
                               ).run_evolution_search(limit)
        queries[name] = calls[0], float(best[1][0])  # (best_valids, (acc, sample, efficiency))
        if isinstance(predictor, HELPEfficiencyPredictor):
            estimated[name] = predictor.estimator_archs

    answers = {}  # the bound's efficiency of every arch its search asks about, recorded in a first run

    class Recorded:
        """The bound's answers from a dict: the same search path at the cost of a key and a lookup, so its time is
        the finder's own on that path (what no predictor can go below)."""

        def __init__(self, predictor=None):
            self.predictor = predictor

        def get_efficiency(self, arch):
            if self.predictor is None:
                return answers[arch_key(arch)]
            answers[arch_key(arch)] = ms = self.predictor.get_efficiency(arch)
            return ms

    run("recorded", Recorded(HELPEfficiencyPredictor(est)))
    t = interleaved({"lut": lambda: run("lut", OFALayerLUT(est)),
                     "mean": lambda: run("mean", HELPEfficiencyPredictor(est, confidence=None)),
                     "bound": lambda: run("bound", HELPEfficiencyPredictor(est)),
                     "recorded": lambda: run("recorded", Recorded())}, repeats)
    return {"space": "ofa", "device": device, "generations": generations, "limit_ms": limit,
            "lut_vs_mean_max_gap_ms": gap, "lut_seconds": t["lut"], "mean_seconds": t["mean"],
            "bound_seconds": t["bound"], "recorded_bound_seconds": t["recorded"],
            "queries": {k: v[0] for k, v in queries.items()}, "estimator_archs": estimated,
            "best_accuracy": {k: v[1] for k, v in queries.items()},
            "ratio": t["mean"] / t["lut"], "bound_ratio": t["bound"] / t["lut"],
            "recorded_bound_ratio": t["recorded"] / t["lut"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spaces", default="nasbench201,fbnet,ofa")
    p.add_argument("--calls", type=int, default=2000, help="distinct architectures per per-call round (default 2000)")
    p.add_argument("--batch", type=int, default=100_000, help="index rows per batched call (default 100000)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds; medians reported (default 5)")
    p.add_argument("--finder-generations", type=int, default=0,
                   help="also time OFA's EvolutionFinder for this many generations (0: skip; OFA's default 500)")
    p.add_argument("--out", default="results/speed.json")
    args = p.parse_args()
    with torch_threads(1):
        rows = [space_rows(s, args) for s in args.spaces.split(",")]
        finder = finder_row(args.finder_generations, 3) if args.finder_generations else None
    print("\n| space | per call: help+ / LUT calls/s (ratio) | batched canonical: help+ / LUT archs/s (ratio) | "
          "index arrays: help+ archs/s (LUT gather) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['space']} | {r['est_calls_per_s']:,.0f} / {r['lut_calls_per_s']:,.0f} ({r['per_call_ratio']:.3f}x) | "
              f"{r['est_batched_archs_per_s']:,.0f} / {r['lut_batched_archs_per_s']:,.0f} ({r['batched_ratio']:.2f}x) | "
              f"{r['est_index_archs_per_s']:,.0f} ({r['lut_index_archs_per_s']:,.0f}) |")
    if finder:
        q = finder["queries"]
        print(f"\nOFA EvolutionFinder, {finder['generations']} generations, limit {finder['limit_ms']:.2f} ms "
              f"(LUT = help+ mean to {finder['lut_vs_mean_max_gap_ms']:.1e} ms): per-layer LUT "
              f"{finder['lut_seconds']:.1f} s ({q['lut']:,} queries); help+ mean {finder['mean_seconds']:.1f} s "
              f"({q['mean']:,}), {finder['ratio']:.2f}x; help+ 95 % bound (default) {finder['bound_seconds']:.1f} s "
              f"({q['bound']:,}, {finder['estimator_archs']['bound']:,} uncached), {finder['bound_ratio']:.2f}x; "
              f"the bound's answers recorded (the finder's own time "
              f"on its path) {finder['recorded_bound_seconds']:.1f} s, {finder['recorded_bound_ratio']:.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "repeats": args.repeats, "rows": rows,
                               "finder": finder}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
