"""The device farm on a real local Ray cluster: two devices backed by two local backends (PyTorch eager and
ONNX Runtime), a host killed mid-chunk, nothing lost or measured twice, a device without a host."""
import collections
import os
import shutil
import signal
import tempfile

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from help_plugin.measure import MeasurementStore  # noqa: E402
from help_plugin.measure.farm import FarmError, RayFarm, export_results  # noqa: E402
from help_plugin.spaces import get_space  # noqa: E402

FAST = {"passes": 2, "runs": 1, "warmup": 0}


@pytest.fixture(scope="module")
def cluster():
    """One node playing three hosts: two of device a, one of b; device busy's only host is taken by a squatter."""
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's sockets need a short path; its logs stay out of the repo
    ray.init(num_cpus=2, resources={"device:a": 2, "device:b": 1, "device:busy": 1}, _temp_dir=temp,
             include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def test_killed_host_loses_nothing_and_repeats_nothing(cluster, tmp_path, request):
    pytest.importorskip("onnxruntime")
    space = get_space("nasbench201")
    archs = space.sample(6, 0)
    keys = [space.canonical(a) for a in archs]
    store = MeasurementStore(tmp_path / "farm.sqlite")
    events, killed = [], []

    def on_chunk(done):
        events.append(done)
        if done.device == "a" and not killed:  # that host was just given its next chunk: kill it mid-chunk
            killed.append(done.host["pid"])
            os.kill(done.host["pid"], signal.SIGKILL)

    farm = RayFarm(chunk_size=2, host_timeout_s=90, keep_hosts=True)  # hosts stay up for the second call
    request.addfinalizer(farm.close)
    res = farm.measure(space, archs, {"a": {"backend": "torch"}, "b": {"backend": "onnxruntime"}}, store=store,
                       settings=FAST, on_chunk=on_chunk)
    a, b = res["a"][1], res["b"][1]
    assert killed and a["hosts"] == 2 and a["hosts_lost"] == 1 and a["requeued_chunks"] == 1
    assert a["measured"] == b["measured"] == 6 and b["hosts_lost"] == 0
    assert a["device"].startswith("a/local-cpu-t1-b1-") and b["device"].startswith("b/local-cpu-ort-t1-b1-")
    for name in ("a", "b"):  # every arch committed exactly once, all of them stored, as returned
        sent = collections.Counter(k for e in events if e.device == name for k in e.archs)
        assert sorted(sent) == sorted(keys) and set(sent.values()) == {1}
        stored = {r["arch"]: r["latency_ms"] for r in store.records("nasbench201", res[name][1]["device"])}
        np.testing.assert_allclose([stored[k] for k in keys], res[name][0])
        assert (res[name][0] > 0).all()
    assert len(store) == 12
    # what the store holds is never sent again; the run resumes with the rest
    events.clear()
    more = np.concatenate([archs, space.sample(8, 1)[6:]])
    again = farm.measure(space, more, ["a"], store=store, settings=FAST, on_chunk=on_chunk)
    assert again["a"][1]["cached"] == 6 and again["a"][1]["measured"] == 2
    assert sorted(k for e in events for k in e.archs) == sorted(space.canonical(x) for x in more[6:])
    np.testing.assert_allclose(again["a"][0][:6], res["a"][0])
    # the farm's table names its devices as the farm does, and load_measurements reads it
    from help_plugin import load_measurements

    assert export_results(store, space, res, tmp_path / "farm.csv") == 14  # all the store holds of a and b
    table = load_measurements(tmp_path / "farm.csv")
    assert set(table.devices) == {"a", "b"} and len(table) == 8


def test_a_device_without_a_host_is_a_clear_error(cluster):
    farm = RayFarm(host_timeout_s=3)
    archs = get_space("nasbench201").sample(2, 0)
    with pytest.raises(FarmError, match=r"no host in the Ray cluster advertises device 'jetson' \(resource "
                                        r"'device:jetson'\); advertised: \['a', 'b', 'busy'\]"):
        farm.measure("nasbench201", archs, ["jetson"])

    @ray.remote(num_cpus=0, resources={"device:busy": 1})
    class Squatter:
        def ping(self):
            return True

    squatter = Squatter.remote()
    assert ray.get(squatter.ping.remote())
    try:
        with pytest.raises(FarmError, match=r"device 'busy' has no host left in the Ray cluster .*none started "
                                            r"within 3 s"):
            farm.measure("nasbench201", archs, ["busy"], settings=FAST)
    finally:
        ray.kill(squatter)
    with pytest.raises(ValueError, match="the torch backend has no setting 'precision'"):
        farm.measure("nasbench201", archs, ["a"], settings={"precision": "f16"})


def test_measure_command_on_the_farm_reports_errors_in_one_line(cluster, tmp_path, capsys):
    from help_plugin.cli import main

    store = ["--store", str(tmp_path / "s.sqlite"), "--quiet", "--random", "2"]
    for argv, message in ((["--device", "jetson"], "no host in the Ray cluster advertises device 'jetson'"),
                          (["--device", "a=tvm"], "unknown backend 'tvm' for device 'a'"),
                          (["--device", "a", "--precision", "f16"], "--precision applies to the openvino backend, "
                                                                     "which no device uses")):
        assert main(["measure", "--farm", "auto", *argv, *store]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1
