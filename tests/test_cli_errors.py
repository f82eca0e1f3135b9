"""``help-nas`` on bad input: a non-zero exit, one line on stderr naming the bad value, never a traceback.

In-process through :func:`help_plugin.cli.main` (fast), and a few through a real subprocess (exit codes,
Ctrl-C, a closed pipe).
"""
import os
import time

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
