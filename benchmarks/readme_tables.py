"""Markdown tables for the README from the JSON that `help-nas benchmark` writes.

    python benchmarks/readme_tables.py results/benchmark_nasbench201_disjoint.json [...]

One table per file (every method at K=10, or its only K) and, when several K were run,
mean rho against K.
"""
import json
import sys

for path in sys.argv[1:]:
    r = json.load(open(path)); s = r['summary']; devs = r['test_devices']
    print(f"\n**{r['split']}** (protocol `{r['protocol']}`, {len(r['seeds'])} seeds; test devices: {', '.join(devs)})\n")
    head = ['method', 'measurements'] + devs + ['mean rho', 'Kendall', 'MAPE %', 'meta-train s', 'adapt ms', 'archs/s']
    print('| ' + ' | '.join(head) + ' |'); print('|' + '---|' * len(head))
    for m, per in s.items():
        k = 10 if '10' in per or 10 in per else [x for x in per if x.isdigit()][0]
        p = per[str(k)] if str(k) in per else per[k]
        cells = [m, str(p['measurements'])] + [f"{p[d]['spearman'][0]:.3f}" for d in devs] + [
            f"**{p['mean']['spearman'][0]:.3f}** ± {p['mean']['spearman'][1]:.3f}" if m == 'help+' else f"{p['mean']['spearman'][0]:.3f} ± {p['mean']['spearman'][1]:.3f}",
            f"{p['mean']['kendall'][0]:.3f}", f"{p['mean']['mape'][0]:.1f}", f"{per['meta_train_seconds']:.0f}",
            f"{p['adapt_seconds']*1e3:.1f}", f"{per['throughput_archs_per_s']:,.0f}"]
        print('| ' + ' | '.join(cells) + ' |')
    ks = [k for k in r['shots']]
    if len(ks) > 1:
        print("\nMean rho against shots K (measurements = 10 reference + K):\n")
        print('| method | ' + ' | '.join(f'K={k} ({k+10})' for k in ks) + ' |'); print('|' + '---|' * (len(ks) + 1))
        for m, per in s.items():
            if str(ks[0]) not in per: continue
            print(f'| {m} | ' + ' | '.join(f"{per[str(k)]['mean']['spearman'][0]:.3f}" for k in ks) + ' |')
