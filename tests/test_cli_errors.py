"""``help-nas`` on bad input: a non-zero exit, one line on stderr naming the bad value, never a traceback.

In-process through :func:`help_plugin.cli.main` (fast), and a few through a real subprocess (exit codes,
Ctrl-C, a closed pipe).
"""
import os
import time

import numpy as np
import pytest

from help_plugin.cli import main


def run_cli(capsys, *argv) -> tuple[int, str]:
    """``(exit code, stderr)`` of ``help-nas argv`` in this process."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def assert_user_error(code: int, err: str, *named: str, exit_code: int = 2) -> str:
    """Exit ``exit_code``, exactly one line on stderr, naming each of ``named``, and no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == exit_code, err
    assert "Traceback" not in err and len(lines) == 1, err
    for value in named:
        assert value in lines[0], (value, lines[0])
    return lines[0]


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder this process cannot write in (a read-only file system where permissions do not bind root)."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    if not os.path.isdir("/sys") or os.access("/sys", os.W_OK) and _writable("/sys"):
        pytest.skip("running as root without a read-only folder to test with")
    yield type(tmp_path)("/sys")


def _writable(folder) -> bool:
    try:
        with open(os.path.join(folder, ".help-nas-probe"), "w"):
            pass
    except OSError:
        return False
    os.remove(os.path.join(folder, ".help-nas-probe"))
    return True


# ---------------------------------------------------------------------------- outputs checked before the work
def test_an_output_in_a_missing_folder_fails_before_meta_training(capsys, tmp_path):
    """It used to meta-train for ~50 s and then fail with a traceback."""
    start = time.perf_counter()
    code, err = run_cli(capsys, "meta-train", "--space", "nasbench201", "--out", tmp_path / "missing/dir/m.safetensors")
    assert time.perf_counter() - start < 1.0
    assert_user_error(code, err, "missing/dir/m.safetensors", "does not exist")


@pytest.mark.parametrize("argv", [
    ["meta-train", "--space", "fbnet", "--out", "{dir}/m.safetensors"],
    ["adapt", "--measurements", "t.csv", "--device", "d", "--out", "{dir}/m.safetensors"],
    ["search", "--latency-ms", "5", "--out", "{dir}/r.json"],
    ["benchmark", "--space", "nasbench201", "--out", "{dir}/b.json"],
    ["measure", "--random", "2", "--export", "{dir}/e.csv"],
    ["references", "--out", "{dir}/r.json"],
])
def test_unwritable_outputs_fail_first(capsys, unwritable_dir, argv):
    code, err = run_cli(capsys, *[a.format(dir=unwritable_dir) for a in argv])
    assert_user_error(code, err, str(unwritable_dir), "cannot write")


def test_an_unwritable_or_odd_store_fails_before_measuring(capsys, tmp_path, unwritable_dir):
    for store, message in [(unwritable_dir / "m.sqlite", "cannot be opened for writing"),
                           (unwritable_dir / "new" / "m.sqlite", "cannot create the folder"),
                           (tmp_path, "is a directory")]:
        code, err = run_cli(capsys, "measure", "--random", "2", "--store", store, "--quiet")
        assert_user_error(code, err, str(store), message)


# ---------------------------------------------------------------------------- every command, bad arguments
NB201_ARCH = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
PRETRAINED = "help_plugin/pretrained/nasbench201.safetensors"  # meta-trained, not adapted


@pytest.fixture(scope="module")
def files(tmp_path_factory, nb201):
    """Bad inputs of every kind, made once."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    from help_plugin import HELPEstimator
    from help_plugin.measure import MeasurementStore
    from help_plugin.predictors import torch_threads

    d = tmp_path_factory.mktemp("bad")
    (d / "folder").mkdir()
    (d / "zero.safetensors").write_bytes(b"")
    (d / "random.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    lat = nb201.latency("pixel2")
    with torch_threads(1):
        est = HELPEstimator.pretrained("nasbench201").adapt(lat[nb201.reference_rows], nb201.archs[:10], lat[:10])
    est.save(d / "adapted.safetensors")
    (d / "trunc.safetensors").write_bytes((d / "adapted.safetensors").read_bytes()[:5000])
    tensors = load_file(str(d / "adapted.safetensors"))
    with safe_open(str(d / "adapted.safetensors"), framework="pt") as f:
        header = f.metadata()
    tensors["head.coef"] = torch.full_like(tensors["head.coef"], float("nan"))
    save_file(tensors, str(d / "nan.safetensors"), metadata=header)
    (d / "archs.txt").write_text(f"{NB201_ARCH}\n|nor_conv_3x3~0|+|bogus~0|\n")
    (d / "comma.csv").write_text(f"space,arch,device,latency_ms\nnasbench201,{NB201_ARCH},dev,1.5\n"
                                 f"nasbench201,{NB201_ARCH},dev,5,3\n")
    (d / "bom.csv").write_text(f"space,arch,device,latency_ms\nnasbench201,{NB201_ARCH},dev,1.5\n", encoding="utf-8-sig")
    (d / "not-a-dir").write_text("a file")
    store = MeasurementStore(d / "corrupt.sqlite")
    store.add("dev", "nasbench201", [f"{i:06d}" * 8 for i in range(3000)], [1.0] * 3000)
    store.close()
    with open(d / "corrupt.sqlite", "r+b") as f:
        f.seek((d / "corrupt.sqlite").stat().st_size // 2)
        f.write(np.random.default_rng(1).bytes(8192))
    return d


CASES = [  # (argv, what the one line must name)
    (["demo", "--test", "0"], ["--test", "'0'"]),
    (["demo", "--out", "{d}/not-a-dir"], ["not-a-dir", "not a folder"]),
    (["demo", "--space", "hat"], ["--space", "'hat'"]),
    (["measure", "--random", "-5"], ["--random", "'-5'"]),
    (["measure", "--random", "2", "--batch-size", "0"], ["--batch-size", "'0'"]),
    (["measure", "--random", "2", "--passes", "0"], ["--passes", "'0'"]),
    (["measure", "--archs", "{d}/missing.txt"], ["missing.txt", "no such file"]),
    (["measure", "--archs", "{d}/folder"], ["folder", "is a directory"]),
    (["measure", "--archs", "{d}/archs.txt", "--store", "{d}/s.sqlite"], ["archs.txt, line 2", "bogus"]),
    (["measure", "--random", "2", "--export", "{d}/folder"], ["--export", "is a directory"]),
    (["measure", "--random", "2", "--backend", "onnxruntime", "--dtype", "float16"], ["--dtype", "onnxruntime"]),
    (["measure", "--random", "2", "--torch-device", "tpu", "--store", "{d}/s.sqlite"], ["'tpu'"]),
    (["measure", "--random", "2", "--store", "{d}/corrupt.sqlite"], ["corrupt.sqlite", "malformed"]),
    (["measure", "--random", "2", "--store", "{d}/folder"], ["folder", "is a directory"]),
    (["search", "--latency-ms", "-5"], ["--latency-ms", "'-5'"]),
    (["search", "--latency-ms", "nan"], ["--latency-ms", "'nan'"]),
    (["search", "--latency-ms", "5", "--budget-use", "1.5"], ["--budget-use", "'1.5'"]),
    (["search", "--latency-ms", "5", "--cycles", "0"], ["--cycles", "'0'"]),
    (["search", "--latency-ms", "5", "--model", PRETRAINED], ["nasbench201.safetensors", "not adapted", "help-nas adapt"]),
    (["search", "--latency-ms", "5", "--model", "{d}/zero.safetensors"], ["zero.safetensors"]),
    (["references", "--model", "{d}/random.safetensors"], ["random.safetensors", "not a valid safetensors"]),
    (["references", "--model", "{d}/folder"], ["folder", "is a directory"]),
    (["references", "--space", "nope"], ["--space", "'nope'"]),
    (["meta-train", "--space", "fbnet", "--out", "{d}/folder"], ["--out", "is a directory"]),
    (["meta-train", "--measurements", "{d}/missing.csv", "--out", "{d}/m.safetensors"], ["missing.csv"]),
    (["meta-train", "--measurements", "{d}/folder", "--out", "{d}/m.safetensors"], ["folder", "is a directory"]),
    (["meta-train", "--measurements", "{d}/comma.csv", "--out", "{d}/m.safetensors"], ["comma.csv, line 3", "decimal comma"]),
    (["meta-train", "--split", "nope", "--out", "{d}/m.safetensors"], ["--split", "'nope'"]),
    (["adapt", "--measurements", "{d}/bom.csv", "--device", "nope", "--out", "{d}/a.safetensors"], ["unknown device 'nope'"]),
    (["adapt", "--measurements", "{d}/comma.csv", "--device", "dev", "--out", "{d}/a.safetensors"], ["line 3"]),
    (["adapt", "--model", "{d}/random.safetensors", "--measurements", "{d}/bom.csv", "--device", "dev", "--out",
      "{d}/a.safetensors"], ["random.safetensors"]),
    (["adapt", "--device", "phone", "--out", "{d}/a.safetensors"], ["--measurements is required", "'phone'"]),
    (["adapt", "--device", "local-cpu", "--shots", "-1", "--out", "{d}/a.safetensors"], ["--shots", "'-1'"]),
    (["predict", "--model", PRETRAINED, "--archs", "{d}/archs.txt"], ["not adapted", "help-nas adapt --model"]),
    (["predict", "--model", "{d}/nan.safetensors", "--archs", "{d}/archs.txt"], ["nan.safetensors", "'head.coef'", "NaN"]),
    (["predict", "--model", "{d}/trunc.safetensors", "--archs", "{d}/archs.txt"], ["trunc.safetensors"]),
    (["predict", "--model", "{d}/adapted.safetensors", "--archs", "{d}/archs.txt"], ["archs.txt, line 2", "bogus"]),
    (["predict", "--model", "{d}/adapted.safetensors", "--archs", "{d}/folder"], ["folder", "is a directory"]),
    (["benchmark", "--space", "nasbench201", "--seeds", "0"], ["--seeds", "'0'"]),
    (["benchmark", "--space", "nasbench201", "--shots", "5,-1", "--out", "{d}/b.json"], ["--shots", "-1"]),
    (["benchmark", "--space", "nasbench201", "--methods", "nope", "--out", "{d}/b.json"], ["'nope'"]),
    (["benchmark", "--space", "hat"], ["no split for space 'hat'"]),
    (["benchmark"], ["--split or --space"]),
    (["benchmark", "--space", "fbnet", "--test-devices", "pixel9", "--out", "{d}/b.json"], ["unknown device 'pixel9'"]),
    (["benchmark", "--space", "fbnet", "--train-devices", "pixel3", "--test-devices", "pixel3", "--out", "{d}/b.json"],
     ["['pixel3']", "both meta-training"]),
    (["benchmark", "--space", "fbnet", "--test-devices", "fpga,fpga", "--out", "{d}/b.json"], ["['fpga']", "twice"]),
    (["benchmark", "--space", "fbnet", "--valid-devices", "titanx_1"], ["--valid-devices goes with"]),
    (["benchmark", "--space", "fbnet", "--random-splits", "2", "--test-devices", "fpga"], ["--random-splits draws"]),
    (["benchmark", "--space", "fbnet", "--random-splits", "0"], ["--random-splits", "positive integer", "'0'"]),
]


@pytest.mark.parametrize("argv, named", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_every_command_reports_a_bad_argument_in_one_line(capsys, files, monkeypatch, argv, named):
    monkeypatch.setenv("HELP_PLUGIN_STORE", str(files / "default.sqlite"))
    code, err = run_cli(capsys, *[a.format(d=files) for a in argv])
    assert_user_error(code, err, *named)


def _data_dir_with(tmp_path, broken: bytes):
    """HELP's nasbench201 layout (links to the real files) with one latency file replaced by ``broken``."""
    from help_plugin.data import default_data_dir

    real = default_data_dir() / "nasbench201"
    mine = tmp_path / "data" / "nasbench201"
    (mine / "latency").mkdir(parents=True)
    for f in real.iterdir():
        if f.is_file():
            (mine / f.name).symlink_to(f)
    for f in (real / "latency").iterdir():
        (mine / "latency" / f.name).symlink_to(f)
    (mine / "latency" / "pixel3.pt").unlink()
    (mine / "latency" / "pixel3.pt").write_bytes(broken)
    return tmp_path / "data"


@pytest.mark.parametrize("broken", [b"", bytes(range(256)) * 4], ids=["empty", "random"])
def test_a_broken_data_file_is_named_and_never_unpickled_unsafely(capsys, tmp_path, monkeypatch, broken):
    """An EOFError / UnpicklingError (whose text advises weights_only=False) becomes one line naming the file."""
    monkeypatch.setenv("HELP_DATA_DIR", str(_data_dir_with(tmp_path, broken)))
    code, err = run_cli(capsys, "meta-train", "--space", "nasbench201", "--out", tmp_path / "m.safetensors", "--quiet")
    line = assert_user_error(code, err, "nasbench201/latency/pixel3.pt", "not a readable data file")
    assert "weights_only" not in line


def test_malformed_checkpoint_metadata_is_the_file_s_problem(capsys, tmp_path, nb201):
    """Metadata that points past the tensors (an IndexError or missing keys inside) is one line naming the file."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from help_plugin.predictors import torch_threads
    from help_plugin.predictors.baselines import ClosestDeviceEstimator

    with torch_threads(1):
        est = ClosestDeviceEstimator("nasbench201", pool_options={"steps": 5, "ensemble": 1, "hidden": 8})
        est.meta_fit(nb201, ["pixel2", "gold_6226"], arch_rows=np.arange(200))
        lat = nb201.latency("raspi4")
        est.fit(nb201.archs[:20], lat[:20]).save(tmp_path / "c.safetensors")
    with safe_open(str(tmp_path / "c.safetensors"), framework="pt") as f:
        header = f.metadata()
    (tmp_path / "a.txt").write_text(NB201_ARCH + "\n")
    for key, value, message in [("closest_index", 99, "closest_index 99 is not one of the 2 pool devices"),
                                ("n_nets", 3, "incomplete or incompatible ClosestDeviceEstimator")]:
        meta = json.loads(header["meta"])
        (meta["learner"] if key == "n_nets" else meta)[key] = value
        save_file(load_file(str(tmp_path / "c.safetensors")), str(tmp_path / "bad.safetensors"),
                  metadata={**header, "meta": json.dumps(meta)})
        code, err = run_cli(capsys, "predict", "--model", tmp_path / "bad.safetensors", "--archs", tmp_path / "a.txt")
        assert_user_error(code, err, "bad.safetensors", message)


# ---------------------------------------------------------------------------- the real command, in a subprocess
def _command() -> list[str]:
    """The installed ``help-nas`` console script (else the same entry point through this Python)."""
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "help-nas"
    return [str(script)] if script.exists() else [sys.executable, "-c",
                                                  "import sys; from help_plugin.cli import main; sys.exit(main())"]


def _help_nas(*argv):
    import signal
    import subprocess

    # Ctrl-C reaches the command as a user's would even when pytest itself runs in the background (a shell starts
    # background jobs with SIGINT ignored, and children inherit that)
    return subprocess.Popen(_command() + [str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_the_command_exits_2_with_one_line(tmp_path):
    run = _help_nas("predict", "--model", tmp_path / "none.safetensors", "--archs", tmp_path / "none.txt")
    out, err = run.communicate(timeout=120)
    assert_user_error(run.returncode, err, "none.safetensors", "no checkpoint")


def test_a_closed_output_pipe_ends_quietly():
    """``help-nas references | head``: the reader is gone; no BrokenPipeError, no traceback."""
    import subprocess

    run = subprocess.Popen(_command() + ["references"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run.stdout.close()  # closed before the command writes
    err = run.stderr.read().decode()
    assert run.wait(timeout=120) == 141 and err == "", err


def test_ctrl_c_during_measure_keeps_what_was_measured(tmp_path):
    import signal
    import sqlite3

    store = tmp_path / "m.sqlite"
    run = _help_nas("measure", "--random", "60", "--passes", "2", "--store", store, "--quiet")
    deadline = time.monotonic() + 240
    stored = 0
    while time.monotonic() < deadline and run.poll() is None:
        if store.exists():
            try:
                stored = sqlite3.connect(store).execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
        if stored:
            break
        time.sleep(0.2)
    assert stored == 25, "the first chunk was not stored in time"
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    kept = sqlite3.connect(store).execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
    line = assert_user_error(run.returncode, err, "interrupted", str(store), exit_code=130)
    assert f"{kept} measurement(s) of this run are kept" in line and kept >= 25


def test_json_output_is_always_valid_json(capsys):
    """A NaN (e.g. a retest rho of one architecture) is written as null, never as the invalid token NaN."""
    import json

    from help_plugin.cli.common import emit

    emit({"rho": float("nan"), "ms": [1.5, float("inf")], "nested": {"x": np.float64("nan")}}, None)
    assert json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"invalid JSON token {c}")) == {
        "rho": None, "ms": [1.5, None], "nested": {"x": None}}
