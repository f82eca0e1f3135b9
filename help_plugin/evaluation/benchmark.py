"""Metrics and the benchmark protocol (numbers, not tests).

Protocol ``disjoint`` (default), per seed: the architectures are split at random into a
meta-training half (plus the reference architectures) and an evaluation half. Every method
meta-trains on the pool devices using only the meta-training half; on each test device it is
given the reference architectures plus ``K`` architectures drawn from the evaluation half,
and is scored on *all* remaining evaluation architectures. Protocol ``help`` mimics HELP's
meta-test: the scored architectures are trimmed to the device's 10-90 % latency range and
800 of them are drawn.
"""
from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..data import DeviceSplit, LatencyDataset, get_split, load_help_data
from ..predictors import BASELINES, METHODS, HELPEstimator, LatencyEstimator
from ..predictors.shot_design import SELECTIONS
from .metrics import data_ceiling, metrics

log = logging.getLogger(__name__)


def _help_factory(method: str) -> Callable[..., LatencyEstimator]:
    return lambda space, **options: HELPEstimator(space, method=method, options=options or None)


def parse_method_spec(spec: str) -> tuple[str, dict]:
    """``"help+:ensemble=1:links=["log"]"`` -> ``("help+", {"ensemble": 1, "links": ["log"]})``.

    Values are JSON literals where they parse (numbers, true/false), strings otherwise.
    """
    name, *pairs = spec.split(":")
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"bad option {pair!r} in method {spec!r}; expected KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return name, options


def method_factories() -> dict[str, Callable[..., LatencyEstimator]]:
    """Every method the benchmark knows: HELP variants and the baselines, ``factory(space, **options)``."""
    return {**{m: _help_factory(m) for m in METHODS}, **BASELINES}


def arch_split(data: LatencyDataset, seed: int, meta_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(meta-training rows incl. the reference rows, evaluation rows), disjoint."""
    rng = np.random.default_rng(seed)
    rest = rng.permutation(np.setdiff1d(np.arange(len(data)), data.reference_rows))
    n_meta = int(round(len(rest) * meta_fraction))
    return np.concatenate([data.reference_rows, rest[:n_meta]]), np.sort(rest[n_meta:])


def scored_rows(lat: np.ndarray, rows: np.ndarray, protocol: str, rng: np.random.Generator) -> np.ndarray:
    if protocol == "disjoint":
        return rows
    if protocol == "help":
        lo, hi = np.percentile(lat[rows], [10, 90])
        inside = rows[(lat[rows] >= lo) & (lat[rows] <= hi)]
        return np.sort(rng.choice(inside, size=min(800, len(inside)), replace=False))
    raise ValueError(f"unknown protocol {protocol!r}; use 'disjoint' or 'help'")


def throughput(est: LatencyEstimator, n: int = 100_000, repeats: int = 3, seed: int = 0) -> float:
    """Batched prediction throughput (architectures/s, median of ``repeats``) on index arrays."""
    t0 = time.perf_counter()
    est.predict(est.space.sample(2000, seed))
    if 2000 / (time.perf_counter() - t0) < 20_000:  # slow predictors (GCN): a smaller batch tells as much
        n, repeats = 10_000, 1
    idx = est.space.sample(n, seed)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        est.predict(idx)
        times.append(time.perf_counter() - t0)
    return float(n / np.median(times))


#: What each run row reports, summarised per device and as the mean over devices.
METRICS = ("spearman", "kendall", "mape", "within_10pct", "mape_above_floor", "ceiling", "share_of_ceiling")


#: One-hot encodings up to this width also get their pairwise products in the ceiling's features.
PAIRWISE_MAX_WIDTH = 64


def _ceiling_features(data: LatencyDataset, rows: np.ndarray) -> list[np.ndarray]:
    """The feature sets of :func:`data_ceiling` for ``rows``: the space's one-hot encoding with the log analytic
    costs, and for small spaces the same plus the one-hot's pairwise products (NAS-Bench-201's cells interact)."""
    idx = data.archs[rows]
    onehot = data.space.one_hot(idx)
    additive = np.concatenate([onehot, np.log1p(data.space.cost_features(idx))], axis=1)
    if onehot.shape[1] > PAIRWISE_MAX_WIDTH:
        return [additive]
    i, j = np.triu_indices(onehot.shape[1], k=1)
    return [additive, np.concatenate([additive, onehot[:, i] * onehot[:, j]], axis=1)]


@dataclass
class BenchmarkResult:
    split: str
    space: str
    protocol: str
    shots: list[int]
    seeds: list[int]
    test_devices: list[str]
    train_devices: list[str] = field(default_factory=list)  # the pool the methods meta-trained on
    valid_devices: list[str] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)  # one row per method x seed x device x shots
    costs: list[dict] = field(default_factory=list)  # one row per method x seed

    def summary(self) -> dict:
        """method -> shots -> {device or 'mean': {metric: (mean, std) over seeds}} plus costs."""
        out: dict = {}
        for method in dict.fromkeys(r["method"] for r in self.runs):
            out[method] = {}
            for k in dict.fromkeys(r["shots"] for r in self.runs if r["method"] == method):
                rows = [r for r in self.runs if r["method"] == method and r["shots"] == k]
                per = {}
                for dev in self.test_devices + ["mean"]:
                    per[dev] = {}
                    for m in METRICS:
                        if dev == "mean":  # mean over devices within a seed, then over seeds
                            vals = [np.mean([r[m] for r in rows if r["seed"] == s]) for s in self.seeds]
                        else:
                            vals = [r[m] for r in rows if r["device"] == dev]
                        per[dev][m] = (float(np.mean(vals)), float(np.std(vals)))
                per["measurements"] = int(np.median([r["measurements"] for r in rows]))
                per["adapt_seconds"] = float(np.median([r["adapt_seconds"] for r in rows]))
                out[method][k] = per
            costs = [c for c in self.costs if c["method"] == method]
            out[method]["meta_train_seconds"] = float(np.median([c["meta_train_seconds"] for c in costs]))
            out[method]["throughput_archs_per_s"] = float(np.median([c["throughput"] for c in costs]))
        return out

    def to_json(self) -> dict:
        return {"split": self.split, "space": self.space, "protocol": self.protocol, "shots": self.shots,
                "seeds": self.seeds, "test_devices": self.test_devices, "train_devices": self.train_devices,
                "valid_devices": self.valid_devices, "machine": platform.platform(),
                "summary": self.summary(), "runs": self.runs, "costs": self.costs}

    def ceilings(self) -> dict[str, float]:
        """Per test device, its data ceiling (mean over seeds; see :func:`~help_plugin.evaluation.metrics.data_ceiling`)."""
        return {dev: float(np.mean([r["ceiling"] for r in self.runs if r["device"] == dev])) for dev in self.test_devices}

    def table(self) -> str:
        """A Markdown table: per method and shots, Spearman per device and mean, accuracy metrics and costs."""
        s = self.summary()
        ceil = self.ceilings()
        head = (["method", "shots", "meas."] + self.test_devices + ["mean rho", "share of ceiling", "tau",
                 "+-10 % acc", "MAPE %", "MAPE>p10 %", "meta-train s", "adapt ms", "archs/s"])
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                 "| data ceiling | | | " + " | ".join(f"{ceil[d]:.3f}" for d in self.test_devices)
                 + f" | {np.mean(list(ceil.values())):.3f} | 100 % |" + " |" * 7]
        for method, per_k in s.items():
            for k in [k for k in per_k if isinstance(k, int)]:
                p, m = per_k[k], per_k[k]["mean"]
                cells = [method, str(k), str(p["measurements"])]
                cells += [f"{p[d]['spearman'][0]:.3f}" for d in self.test_devices]
                cells += [f"{m['spearman'][0]:.3f} ± {m['spearman'][1]:.3f}", f"{100 * m['share_of_ceiling'][0]:.1f} %",
                          f"{m['kendall'][0]:.3f}", f"{m['within_10pct'][0]:.1f}", f"{m['mape'][0]:.1f}",
                          f"{m['mape_above_floor'][0]:.1f}", f"{per_k['meta_train_seconds']:.1f}",
                          f"{p['adapt_seconds'] * 1e3:.1f}", f"{per_k['throughput_archs_per_s']:,.0f}"]
                lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def run_benchmark(split: str | DeviceSplit, methods: Sequence[str] = ("help+",), shots: Sequence[int] = (10,),
                  seeds: Sequence[int] = (0, 1, 2, 3, 4), protocol: str = "disjoint",
                  data: LatencyDataset | None = None, meta_fraction: float = 0.5,
                  progress: bool = False, shot_selection: str = "random") -> BenchmarkResult:
    """Run the protocol for ``methods`` on ``split``; see the module docstring. ``shot_selection``: ``"random"``
    (the protocol's draws) or ``"design"`` (methods that can choose their shots,
    :meth:`~help_plugin.predictors.HELPEstimator.select_shots`, choose them among the evaluation archs; their rows
    are labelled "(designed shots)"; the others still draw them)."""
    if shot_selection not in SELECTIONS:
        raise ValueError(f"unknown shot_selection {shot_selection!r}; use one of {list(SELECTIONS)}")
    split = get_split(split) if isinstance(split, str) else split
    data = data if data is not None else load_help_data(split.space)
    for device in split.train + split.valid + split.test:
        data.device_index(device)  # an unknown device: an error naming it, before any work
    factories = method_factories()
    unknown = [m for m in methods if parse_method_spec(m)[0] not in factories]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {sorted(factories)}")
    result = BenchmarkResult(split.name, split.space, protocol, list(shots), list(seeds), list(split.test),
                             list(split.train), list(split.valid))
    ref = data.reference_rows
    for seed in seeds:
        meta_rows, eval_rows = arch_split(data, seed, meta_fraction)
        ceilings = {}
        for dev in split.test:  # the device's own data: half of its evaluation archs fit, half scored
            lat = data.latency(dev)
            ok = eval_rows[np.isfinite(lat[eval_rows])]
            ceilings[dev] = data_ceiling(_ceiling_features(data, ok), lat[ok], seed)
        for method in methods:
            name, options = parse_method_spec(method)
            est = factories[name](split.space, **options)
            if "seed" in est.get_params():
                est.set_params(seed=seed)
            t0 = time.perf_counter()
            if hasattr(est, "meta_fit"):
                est.meta_fit(data, split.train, split.valid, arch_rows=meta_rows, progress=progress)
            meta_seconds = time.perf_counter() - t0
            n_shots_override = getattr(est, "default_shots", None)
            designed = shot_selection == "design" and getattr(est, "selects_shots", False)
            label = f"{method} (designed shots)" if designed else method
            for dev in split.test:
                lat = data.latency(dev)
                ok = eval_rows[np.isfinite(lat[eval_rows])]
                # a method that needs many samples (the GCN: 900) runs once, at its own count
                many = n_shots_override is not None and n_shots_override > max(shots)
                for k in ([n_shots_override] if many else shots):
                    rng = np.random.default_rng([seed, split.test.index(dev), k])
                    picked = ok[est.select_shots(data.archs[ok], k)] if designed else rng.choice(ok, size=k, replace=False)
                    scored = scored_rows(lat, np.setdiff1d(ok, picked), protocol, rng)
                    fit_rows = np.concatenate([ref, picked])
                    t0 = time.perf_counter()
                    est.fit(data.archs[fit_rows], lat[fit_rows])
                    adapt_seconds = time.perf_counter() - t0
                    pred = est.predict(data.archs[scored])
                    row = {"method": label, "seed": seed, "device": dev, "shots": k,
                           "measurements": est.n_measurements, "adapt_seconds": adapt_seconds,
                           "n_scored": int(len(scored)), **metrics(pred, lat[scored]), "ceiling": ceilings[dev]}
                    row["share_of_ceiling"] = row["spearman"] / row["ceiling"]
                    result.runs.append(row)
                    log.info("%s seed %d %s K=%d: rho %.4f", method, seed, dev, k, row["spearman"])
            result.costs.append({"method": label, "seed": seed, "meta_train_seconds": meta_seconds,
                                 "throughput": throughput(est)})
    return result


def splits_table(results: Sequence[BenchmarkResult]) -> str:
    """A Markdown table of several runs (e.g. :meth:`~help_plugin.data.DeviceSplit.random_halves`): a row per run,
    per method and shots the mean Spearman rho over its test devices (and its worst device's), then the mean row."""
    summaries = [r.summary() for r in results]
    columns = [(m, k) for m, per_k in summaries[0].items() for k in per_k if isinstance(k, int)]
    head = ["split (test devices)"] + [f"{m} @{summaries[0][m][k]['measurements']}" for m, k in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    means = {c: [] for c in columns}
    for r, s in zip(results, summaries):
        cells = [f"{r.split} ({', '.join(r.test_devices)})"]
        for m, k in columns:
            rho = {d: s[m][k][d]["spearman"][0] for d in r.test_devices}
            worst = min(rho, key=rho.get)
            means[(m, k)].append(s[m][k]["mean"]["spearman"][0])
            cells.append(f"{means[(m, k)][-1]:.3f} ({worst} {rho[worst]:.3f})")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| mean over splits | " + " | ".join(f"{np.mean(means[c]):.3f}" for c in columns) + " |")
    for m, k in columns:  # issue 14: never below the analytic baseline, on any device
        if "flops" in summaries[0] and m != "flops":
            below = [f"{r.split} {d} {s[m][k][d]['spearman'][0]:.3f} < {s['flops'][k][d]['spearman'][0]:.3f}"
                     for r, s in zip(results, summaries) for d in r.test_devices
                     if s[m][k][d]["spearman"][0] < s["flops"][k][d]["spearman"][0]]
            n = sum(len(r.test_devices) for r in results)
            lines.append(f"\n{m} @{k} shots below flops on {len(below)} of {n} devices" + (": " if below else "")
                         + "; ".join(below))
    return "\n".join(lines)


def save_result(result: BenchmarkResult, path) -> None:
    with open(path, "w") as f:
        json.dump(result.to_json(), f, indent=1)
