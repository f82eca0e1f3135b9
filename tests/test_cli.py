"""The ``help-nas`` command line on real data: help, references, adapt/predict round trip, meta-train, benchmark,
search."""
import json

import numpy as np
import pytest

from help_plugin import HELPEstimator, get_split
from help_plugin.cli import main
from help_plugin.evaluation import run_benchmark


def test_help_text_explains_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("meta-train", "adapt", "predict", "benchmark", "demo", "references"):
        assert cmd in out

def test_adapt_and_predict_round_trip_through_csv(tmp_path, capsys, fbnet):
    main(["references", "--space", "fbnet", "--out", str(tmp_path / "refs.json")])
    refs = json.loads((tmp_path / "refs.json").read_text())["reference_archs"]
    lat = fbnet.latency("raspi4")
    rows = np.concatenate([fbnet.reference_rows, np.arange(100, 110)])
    with open(tmp_path / "m.csv", "w") as f:
        f.write("space,arch,device,latency_ms\n")
        for r in rows:
            f.write(f"fbnet,{fbnet.space.format(fbnet.archs[r])},my_pi,{lat[r]}\n")
    assert [fbnet.space.format(a) for a in fbnet.archs[fbnet.reference_rows]] == refs
    assert main(["adapt", "--space", "fbnet", "--measurements", str(tmp_path / "m.csv"), "--device", "my_pi",
                 "--out", str(tmp_path / "pi.safetensors")]) == 0
    (tmp_path / "archs.txt").write_text("\n".join(fbnet.space.format(a) for a in fbnet.archs[200:205]))
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "pi.safetensors"), "--archs", str(tmp_path / "archs.txt")]) == 0
    out = json.loads(capsys.readouterr().out)
    direct = HELPEstimator.load(tmp_path / "pi.safetensors").predict(fbnet.archs[200:205])
    np.testing.assert_allclose([o["latency_ms"] for o in out], direct, rtol=1e-3)
    # an unknown device in the table is a clear error, not a traceback
    assert main(["adapt", "--space", "fbnet", "--measurements", str(tmp_path / "m.csv"), "--device", "nope",
                 "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "unknown device 'nope'" in capsys.readouterr().err

def test_benchmark_protocol_small(nb201):
    r = run_benchmark("nasbench201", methods=["help+", "flops"], shots=[10], seeds=[0], data=nb201)
    s = r.summary()
    assert s["help+"][10]["measurements"] == 20
    assert s["help+"][10]["mean"]["spearman"][0] > s["flops"][10]["mean"]["spearman"][0] > 0.5
    assert all(row["n_scored"] > 7000 for row in r.runs)  # all held-out archs are scored
    assert "| help+ | 10 | 20 |" in r.table()
    h = run_benchmark("nasbench201", methods=["flops", "help+:ensemble=1:steps=200"], shots=[10], seeds=[0],
                      data=nb201, protocol="help")
    assert all(row["n_scored"] == 800 for row in h.runs)
    assert set(h.summary()) == {"flops", "help+:ensemble=1:steps=200"}
    with pytest.raises(ValueError, match="unknown option"):
        run_benchmark("nasbench201", methods=["help+:ensembles=2"], shots=[10], seeds=[0], data=nb201)


def test_benchmark_on_a_device_split_of_ones_own(tmp_path, capsys):
    """--test-devices alone: the named split's pool less those devices meta-trains, and the JSON says which."""
    out = tmp_path / "b.json"
    assert main(["benchmark", "--space", "fbnet", "--test-devices", "pixel3,samsung_s7", "--seeds", "1",
                 "--methods", "help+,flops", "--quiet", "--out", str(out)]) == 0
    assert "meta-trained on 1080ti_1" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["split"] == "fbnet-custom" and r["test_devices"] == ["pixel3", "samsung_s7"]
    assert "pixel3" not in r["train_devices"] + r["valid_devices"] and "titanx_1" in r["valid_devices"]
    assert {row["device"] for row in r["runs"]} == {"pixel3", "samsung_s7"}
    rho = {m: r["summary"][m]["10"]["pixel3"]["spearman"][0] for m in ("help+", "flops")}
    assert rho["help+"] > 0.98 > rho["flops"] > 0.9  # pixel3 is additive: the pool's LUTs span it
    assert main(["benchmark", "--space", "fbnet", "--train-devices", "titanx_1,titanx_32", "--test-devices", "fpga",
                 "--seeds", "1", "--quiet", "--out", str(out), "--no-plot"]) == 0
    r = json.loads(out.read_text())
    assert (r["train_devices"], r["valid_devices"], r["test_devices"]) == (["titanx_1", "titanx_32"], [], ["fpga"])


def test_benchmark_on_random_halves_of_a_pool(tmp_path, capsys):
    """--random-splits: Multi-Predict's random device subsets of the split's pool, one JSON for all."""
    out = tmp_path / "r.json"
    assert main(["benchmark", "--space", "fbnet", "--random-splits", "2", "--seeds", "1", "--methods", "help+,flops",
                 "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert [s["split"] for s in r["splits"]] == ["fbnet-random0", "fbnet-random1"] and "mean over splits" in printed
    assert "help+ @10 shots below flops on " in printed
    pool = get_split("fbnet").pool
    for s in r["splits"]:
        assert sorted(s["train_devices"] + s["test_devices"]) == sorted(pool) and s["valid_devices"] == []
        assert len(s["train_devices"]) == len(pool) // 2
        assert {row["device"] for row in s["runs"]} == set(s["test_devices"])
        assert s["summary"]["help+"]["10"]["mean"]["spearman"][0] > s["summary"]["flops"]["10"]["mean"]["spearman"][0]
    assert r["splits"][0]["test_devices"] != r["splits"][1]["test_devices"]


def test_meta_train_on_own_tidy_table(tmp_path, capsys, fbnet):
    pool = fbnet.select_devices(["fpga", "raspi4", "eyeriss"])
    rows = np.concatenate([fbnet.reference_rows, np.arange(0, 600)])
    pool.archs, pool.latency_ms = pool.archs[rows], pool.latency_ms[rows]
    pool.to_csv(tmp_path / "pool.csv")
    (tmp_path / "refs.txt").write_text("\n".join(fbnet.space.format(a) for a in fbnet.archs[fbnet.reference_rows]))
    assert main(["meta-train", "--space", "fbnet", "--measurements", str(tmp_path / "pool.csv"),
                 "--reference-archs", str(tmp_path / "refs.txt"), "--train-devices", "fpga,raspi4",
                 "--valid-devices", "eyeriss", "--method", "help", "--steps", "200",
                 "--out", str(tmp_path / "own.safetensors"), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["bound_multipliers"] == "t-rule"  # no constants for HELP's method
    est = HELPEstimator.load(tmp_path / "own.safetensors")
    assert est.meta_model.train_devices == ("fpga", "raspi4") and est.meta_model.valid_devices == ("eyeriss",)
    assert est.reference_archs == [fbnet.space.format(a) for a in fbnet.archs[fbnet.reference_rows]]
    assert main(["meta-train", "--space", "fbnet", "--measurements", str(tmp_path / "pool.csv"),
                 "--reference-archs", str(tmp_path / "refs.txt"), "--train-devices", "fpga,raspi4",
                 "--steps", "200", "--out", str(tmp_path / "own.safetensors"), "--quiet"]) == 0
    # the shipped settings: help+'s default groups leave the MLPs, and so --steps, out
    assert json.loads(capsys.readouterr().out)["bound_multipliers"] == "meta-calibrated (calibration.json)"
    assert HELPEstimator.load(tmp_path / "own.safetensors").meta_model.calibration is not None  # saved with it


_HELP_IMPORTS = """
import sys
from help_plugin.cli import main, COMMANDS
for argv in [["--help"]] + [[c, "--help"] for c in sys.argv[1:]]:
    try:
        main(argv)
    except SystemExit:
        pass
heavy = sorted(m for m in ("torch", "scipy", "nni", "ofa", "matplotlib", "onnxruntime", "pandas", "openvino", "ray")
               if m in sys.modules)
print("HEAVY", heavy)
"""


def test_help_starts_without_heavy_imports():
    """``help-nas --help`` and every ``help-nas COMMAND --help`` import neither torch nor scipy, nni, ofa, matplotlib."""
    import subprocess
    import sys

    commands = ["demo", "measure", "export", "search", "references", "meta-train", "adapt", "predict", "benchmark"]
    res = subprocess.run([sys.executable, "-c", _HELP_IMPORTS, *commands], capture_output=True, text=True, check=True)
    assert "usage: help-nas" in res.stdout and res.stdout.count("usage: help-nas") == 1 + len(commands)
    assert "HEAVY []" in res.stdout, res.stdout[-300:]


def test_benchmark_of_a_space_without_a_split_is_a_clear_error(capsys):
    assert main(["benchmark", "--space", "hat"]) == 2
    err = capsys.readouterr().err
    assert "no split for space 'hat'" in err and "Traceback" not in err


def test_adapters_install_under_help_plugin_only(tmp_path):
    """No generic top-level ``integrations`` package: the adapters are ``help_plugin.integrations.*``."""
    import subprocess
    import sys

    code = ("import importlib.util, help_plugin.integrations.ofa_search as m, help_plugin.integrations.nb201_formats;"
            "print(importlib.util.find_spec('integrations') is None, m.__name__)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert res.stdout.split() == ["True", "help_plugin.integrations.ofa_search"]


def test_adapt_and_meta_train_take_the_space_from_the_table(tmp_path, capsys, fbnet):
    """Without --space the table's space is used (it used to default to nasbench201)."""
    pool = fbnet.select_devices(["fpga", "raspi4", "eyeriss"])
    rows = np.concatenate([fbnet.reference_rows, np.arange(0, 200)])
    pool.archs, pool.latency_ms = pool.archs[rows], pool.latency_ms[rows]
    pool.to_csv(tmp_path / "pool.csv")
    assert main(["adapt", "--measurements", str(tmp_path / "pool.csv"), "--device", "raspi4",
                 "--out", str(tmp_path / "pi.safetensors")]) == 0
    assert json.loads(capsys.readouterr().out)["space"] == "fbnet"
    assert HELPEstimator.load(tmp_path / "pi.safetensors").space.name == "fbnet"
    assert main(["meta-train", "--measurements", str(tmp_path / "pool.csv"), "--train-devices", "fpga,raspi4",
                 "--steps", "5", "--out", str(tmp_path / "own.safetensors"), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["space"] == "fbnet"


def test_search_prints_a_verdict_and_a_table_and_documents_its_json(tmp_path, capsys, monkeypatch, nb201):
    """``help-nas search`` on a stand-in device (pixel2's recorded latencies): a one-line verdict and a short table
    by default; ``--json`` gives the result, every key documented in ``VerifiedSearchResult``; ``--plot`` the
    Pareto plot; ``--mean-only`` HELP's rule."""
    import inspect
    import re

    from help_plugin import measure
    from help_plugin.search import VerifiedSearchResult

    lat = nb201.latency("pixel2")
    row = {nb201.space.canonical(a): i for i, a in enumerate(nb201.archs)}
    monkeypatch.setattr(measure, "TorchEagerDevice", lambda space, **_: measure.CallableDevice(
        space, lambda a: float(lat[row[a]]), name="pixel2-table"))
    HELPEstimator.pretrained("nasbench201").adapt(lat[nb201.reference_rows], nb201.archs[:10], lat[:10]).save(
        tmp_path / "m.safetensors")
    limit = f"{float(np.percentile(lat, 40)):.2f}"
    common = ["search", "--latency-ms", limit, "--model", str(tmp_path / "m.safetensors"), "--cycles", "5",
              "--quiet"]
    assert main(common + ["--plot", str(tmp_path / "pareto.png")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"limit {limit} ms met: measured ") or out[0].startswith(f"limit {limit} ms MISSED")
    assert "95 % selection-aware bound" in out[0] and "| constraint | 95 % selection-aware bound |" in out
    assert (tmp_path / "pareto.png").stat().st_size > 0
    assert main(common + ["--json", "--mean-only"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["constraint"] == "mean prediction (HELP's rule)" and result["confidence"] is None
    assert result["bound_ms"] == result["predicted_ms"]
    doc = inspect.getdoc(VerifiedSearchResult)
    assert [k for k in result if not re.search(rf"(\b{k}[,:]|``{k}``)", doc)] == []
