"""A device you can only hand files to: export ONNX files + manifest, time them with "the device's tool"
(ONNX Runtime here), fill the manifest, adapt, score the holdout."""
import csv
import json

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from help_plugin.cli import main  # noqa: E402
from help_plugin.measure.export import MANIFEST_COLUMNS, export_archs, export_network, read_manifest  # noqa: E402
from help_plugin.spaces import get_space  # noqa: E402


def rows_of(manifest):
    with open(manifest, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(manifest, rows):
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def feed(row, rng):
    """Random inputs of a manifest row's static shapes (``x0:1x3x32x32``)."""
    out = {}
    for part in row["input_shape"].split(";"):
        name, shape = part.split(":")[:2]
        out[name] = rng.standard_normal([int(d) for d in shape.split("x")]).astype(np.float32)
    return out


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_like_a_device_tool(folder, rows, passes=3, runs=5):
    """What a user does with trtexec or benchmark_app on the device: load each file, time it (median ms)."""
    import time

    rng = np.random.default_rng(0)
    sessions = [(session(folder / r["file"]), feed(r, rng)) for r in rows]
    per_pass = np.zeros((passes, len(rows)))
    for p in range(passes):
        for i in rng.permutation(len(rows)):
            s, x = sessions[i]
            s.run(None, x)
            best = np.inf
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, x)
                best = min(best, time.perf_counter() - t0)
            per_pass[p, i] = best * 1e3
    return np.median(per_pass, 0)


def same_outputs_as_pytorch(space, folder, rows, seed=0):
    """Each file computes what ``space.build_network(arch)`` computes (weights drawn after manual_seed(seed + k))."""
    import torch

    rng = np.random.default_rng(1)
    for k, r in rows:
        torch.manual_seed(seed + k)
        net = space.build_network(space.parse(r["arch"])).eval()
        x = feed(r, rng)
        with torch.inference_mode():
            want = net(*[torch.from_numpy(v) for v in x.values()]).numpy()
        got = session(folder / r["file"]).run(None, x)[0]
        assert got.shape == want.shape and np.std(want) > 0
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


@pytest.fixture(scope="module")
def nb201_export(tmp_path_factory, one_thread_module):
    out = tmp_path_factory.mktemp("nb201_export")
    manifest = export_archs("nasbench201", out, shots=2, holdout=10, device="ort-as-device")
    return out, manifest


@pytest.fixture(scope="module")
def one_thread_module():
    from help_plugin.predictors import torch_threads

    with torch_threads(1):
        yield


def test_export_writes_a_tidy_manifest_and_static_onnx_files(nb201_export):
    from help_plugin import HELPEstimator

    out, manifest = nb201_export
    rows = rows_of(manifest)
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    assert [r["role"] for r in rows] == ["reference"] * 10 + ["shot"] * 2 + ["holdout"] * 10
    refs = HELPEstimator.pretrained("nasbench201").reference_archs
    assert [r["arch"] for r in rows[:10]] == refs
    assert len({r["arch"] for r in rows}) == len(rows)  # no arch twice
    assert all(r["latency_ms"] == "" and r["device"] == "ort-as-device" and r["input_shape"] == "x0:1x3x32x32"
               for r in rows)
    assert all((out / r["file"]).is_file() for r in rows) and (out / "README.txt").is_file()
    readme = (out / "README.txt").read_text()
    for tool in ("trtexec", "benchmark_app", "onnxruntime_perf_test", "benchmark_model", "help-nas adapt"):
        assert tool in readme
    # static shapes: no symbolic dimension in any input
    s = session(out / rows[0]["file"])
    assert all(isinstance(d, int) for i in s.get_inputs() for d in i.shape)
    with pytest.raises(FileExistsError, match="manifest.csv exists"):  # a filled manifest is never overwritten
        export_archs("nasbench201", out, shots=1)


def test_onnx_files_compute_what_the_pytorch_builders_compute(nb201_export, tmp_path):
    out, manifest = nb201_export
    rows = rows_of(manifest)
    same_outputs_as_pytorch(get_space("nasbench201"), out, [(k, rows[k]) for k in (0, 10, 12, 21)])
    fbnet = get_space("fbnet")  # export_archs writes every file with export_network
    fb_rows = []
    for k, arch in enumerate(fbnet.sample(2, 3)):
        shape = export_network(fbnet, arch, tmp_path / f"fb{k}.onnx", seed=5 + k)
        fb_rows.append((k, {"arch": fbnet.canonical(arch), "file": f"fb{k}.onnx", "input_shape": shape}))
    same_outputs_as_pytorch(fbnet, tmp_path, fb_rows, seed=5)


def test_blank_or_bad_latencies_are_errors_naming_file_and_line(nb201_export, tmp_path):
    _, manifest = nb201_export
    rows = rows_of(manifest)
    for r in rows:
        r["latency_ms"] = "1.5"
    rows[11]["latency_ms"] = ""
    write_rows(tmp_path / "m.csv", rows)
    with pytest.raises(ValueError, match=r"m.csv, line 13: latency_ms of shot 'shot_01.onnx' is blank"):
        read_manifest(tmp_path / "m.csv")
    rows[11]["latency_ms"] = "fast"
    write_rows(tmp_path / "m.csv", rows)
    with pytest.raises(ValueError, match=r"m.csv, line 13: latency_ms 'fast' is not a number"):
        read_manifest(tmp_path / "m.csv")
    rows[11]["latency_ms"] = "-2"
    write_rows(tmp_path / "m.csv", rows)
    with pytest.raises(ValueError, match=r"m.csv, line 13: latency_ms = '-2' is not a finite positive latency"):
        read_manifest(tmp_path / "m.csv")
    rows[11]["latency_ms"], rows[20]["latency_ms"] = "2.5", ""  # a blank holdout is fine: no score for it
    write_rows(tmp_path / "m.csv", rows)
    adapt, holdout = read_manifest(tmp_path / "m.csv")
    assert len(adapt) == 12 and list(adapt.reference_rows) == list(range(10)) and adapt.devices == ("ort-as-device",)
    assert len(holdout) == 10 and np.isnan(holdout.latency_ms[:, 0]).sum() == 1


def test_export_time_fill_adapt_round_trip(nb201_export, tmp_path, capsys):
    """The whole path of a device you can only hand files to, with ONNX Runtime as the device's own tool."""
    from help_plugin import HELPEstimator
    from help_plugin.evaluation.metrics import spearman

    out, manifest = nb201_export
    rows = rows_of(manifest)
    ms = time_like_a_device_tool(out, rows)
    for r, v in zip(rows, ms):
        r["latency_ms"] = f"{v:.4f}"
    rows[-1]["latency_ms"] = ""  # one held-out file not timed: no score for it, no error
    filled = tmp_path / "manifest.csv"
    write_rows(filled, rows)
    capsys.readouterr()
    model = tmp_path / "ort.safetensors"
    assert main(["adapt", "--measurements", str(filled), "--out", str(model)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"] == "ort-as-device" and report["space"] == "nasbench201" and report["measurements"] == 12
    hold = report["holdout"]
    assert hold["archs"] == 10 and hold["timed"] == 9
    assert set(hold) >= {"spearman", "kendall", "mape", "within_10pct", "plot"}
    est = HELPEstimator.load(model)  # the printed score is the saved model's on the timed holdout files
    pred = est.predict([r["arch"] for r in rows[12:21]])
    assert hold["spearman"] == pytest.approx(spearman(pred, ms[12:21]), abs=1e-3)
    assert hold["mape"] == pytest.approx(float(np.mean(np.abs(pred - ms[12:21]) / ms[12:21]) * 100), abs=0.01)
    assert 0 <= hold["within_10pct"] <= 100 and hold["spearman"] > 0.5  # ranks the held-out files sensibly
    assert (tmp_path / "ort.holdout.png").stat().st_size > 0 and hold["plot"].endswith("ort.holdout.png")
    # an unfilled shot is an error naming file and line, in one line on stderr
    rows[10]["latency_ms"] = ""
    write_rows(filled, rows)
    assert main(["adapt", "--measurements", str(filled), "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert f"{filled}, line 12: latency_ms of shot 'shot_00.onnx' is blank" in err and "Traceback" not in err
    rows[10]["latency_ms"] = f"{ms[10]:.4f}"
    write_rows(filled, rows)
    assert main(["adapt", "--measurements", str(filled), "--device", "other", "--out", str(model)]) == 2
    assert "manifest of device 'ort-as-device', not 'other'" in capsys.readouterr().err
