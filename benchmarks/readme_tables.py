"""Markdown tables for the README from the JSON that `help-nas benchmark` writes.

    python benchmarks/readme_tables.py results/benchmark_nasbench201_disjoint.json [...]

One table per file (every method at K=10, or its only K) with the per-device Spearman, the share of the
data ceiling, Kendall, +-10 % accuracy, MAPE and MAPE above the latency floor, meta-train time, adaptation
time and throughput; and, when several K were run, mean rho against K.
"""
import json
import sys

from help_plugin.data import SPLITS


def _seconds(s: float) -> str:
    return f"{s:.2f}" if s < 1 else f"{s:.1f}" if s < 10 else f"{s:.0f}"


def main(paths: list[str]) -> None:
    if not paths:
        sys.exit("usage: python benchmarks/readme_tables.py results/benchmark_SPLIT_PROTOCOL.json [...]")
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        s, devs = r["summary"], r["test_devices"]
        custom = r["split"] not in SPLITS and r.get("train_devices")  # a named split's pool is in its name
        pool = f"; meta-trained on {', '.join(r['train_devices'] + r['valid_devices'])}" if custom else ""
        print(f"\n**{r['split']}** (protocol `{r['protocol']}`, {len(r['seeds'])} seeds; test devices: {', '.join(devs)}{pool})\n")
        head = (["method", "measurements"] + devs + ["mean rho", "share of ceiling", "Kendall", "+-10 % acc",
                 "MAPE %", "MAPE>p10 %", "meta-train s", "adapt ms", "archs/s"])
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        first = next(iter(s.values()))
        k0 = "10" if "10" in first else next(k for k in first if k.isdigit())
        ceiling = [first[k0][d]["ceiling"][0] for d in devs]
        print("| data ceiling | | " + " | ".join(f"{c:.3f}" for c in ceiling)
              + f" | {sum(ceiling) / len(ceiling):.3f} | 100 % |" + " |" * 7)
        for m, per in s.items():
            k = "10" if "10" in per else next(x for x in per if x.isdigit())
            p, mean = per[k], per[k]["mean"]
            rho = f"{mean['spearman'][0]:.3f} ± {mean['spearman'][1]:.3f}"
            cells = [m, str(p["measurements"])] + [f"{p[d]['spearman'][0]:.3f}" for d in devs] + [
                f"**{rho}**" if m.split(" ")[0] == "help+" else rho, f"{100 * mean['share_of_ceiling'][0]:.1f} %",
                f"{mean['kendall'][0]:.3f}", f"{mean['within_10pct'][0]:.1f}", f"{mean['mape'][0]:.1f}",
                f"{mean['mape_above_floor'][0]:.1f}", _seconds(per["meta_train_seconds"]),
                f"{p['adapt_seconds'] * 1e3:.1f}", f"{per['throughput_archs_per_s']:,.0f}"]
            print("| " + " | ".join(cells) + " |")
        ks = r["shots"]
        if len(ks) > 1:
            print("\nMean rho against shots K (measurements = 10 reference + K):\n")
            print("| method | " + " | ".join(f"K={k} ({k + 10})" for k in ks) + " |")
            print("|" + "---|" * (len(ks) + 1))
            for m, per in s.items():
                if str(ks[0]) not in per:
                    continue
                print(f"| {m} | " + " | ".join(f"{per[str(k)]['mean']['spearman'][0]:.3f}" for k in ks) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
