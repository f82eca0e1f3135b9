"""Timing on this machine (PyTorch eager, ONNX Runtime), black-box devices and the measurement store."""
import platform

import numpy as np
import pytest
import torch

from help_plugin.measure import (
    CallableDevice,
    OnnxRuntimeDevice,
    TorchEagerDevice,
    local_device,
)


def test_local_cpu_timing_is_consistent():
    dev = TorchEagerDevice("nasbench201", passes=3, runs=2, warmup=1)
    archs = ["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
             "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"]
    m = dev.measure(archs)
    assert m.per_pass_ms.shape == (3, 2) and (m.latency_ms > 0).all()
    assert m.latency_ms[1] > m.latency_ms[0]  # 9 3x3 convs per cell cost more than nothing
    assert dev.device_id.startswith("local-cpu-t1-b1-")

def test_callable_device_rejects_bad_measurements():
    with pytest.raises(ValueError, match="nan"):
        CallableDevice("nasbench201", lambda a: float("nan")).measure(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"])
    def broken(a):
        raise OSError("adb: device offline")
    with pytest.raises(RuntimeError, match="adb: device offline"):
        CallableDevice("nasbench201", broken).measure(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"])

def test_store_resumes_and_never_repeats(tmp_path):
    from help_plugin.measure import MeasurementStore, StoreError, measure_archs

    calls = []

    def flaky(arch):
        calls.append(arch)
        if len(calls) == 3:
            raise OSError("usb unplugged")
        return 1.0 + len(arch) / 100

    store = MeasurementStore(tmp_path / "m.sqlite")
    archs = [f"|nor_conv_3x3~0|+|{a}~0|none~1|+|none~0|none~1|none~2|" for a in
             ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")]
    dev = CallableDevice("nasbench201", flaky, name="board")
    with pytest.raises(RuntimeError, match="usb unplugged"):
        measure_archs(dev, archs, store)
    assert len(store) == 2  # what was measured before the failure is kept
    ms, info = measure_archs(dev, archs + archs[:1], store)  # resume; a repeated arch is measured once
    assert info == {"cached": 3, "measured": 3, "chunk_retest_rho": []}
    assert len(calls) == 6 and len(store) == 5
    np.testing.assert_allclose(ms[0], ms[-1])
    n = store.export_csv(tmp_path / "t.csv")
    from help_plugin import load_measurements
    back = load_measurements(tmp_path / "t.csv")
    assert n == 5 and back.devices == ("board",)
    (tmp_path / "bad.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="bad.sqlite"):
        MeasurementStore(tmp_path / "bad.sqlite")

def test_callable_device_timeout():
    import time as _t
    dev = CallableDevice("nasbench201", lambda a: _t.sleep(2) or 1.0, timeout_s=0.2)
    with pytest.raises(RuntimeError, match="longer than 0.2 s"):
        dev.measure(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"])

#: No op at all, and a 3x3 convolution on every edge: the second costs more on any device.
EMPTY_AND_ALL_CONV3 = ["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                       "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"]


def backend_times_the_bigger_network_slower(backend: str, cls, id_prefix: str, passes: int = 2):
    """A registered backend on this CPU: the right class, its own device id, the bigger network slower."""
    for module in {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx")}.get(backend, ()):
        pytest.importorskip(module)
    dev = local_device("nasbench201", backend, passes=passes, runs=2, warmup=1)
    assert isinstance(dev, cls)
    m = dev.measure(EMPTY_AND_ALL_CONV3)
    assert m.per_pass_ms.shape == (passes, 2) and np.isfinite(m.per_pass_ms).all()
    assert m.latency_ms[1] > m.latency_ms[0] > 0
    assert dev.device_id.startswith(id_prefix) and dev.device_id != TorchEagerDevice("nasbench201").device_id
    return dev


def test_onnxruntime_backend_times_the_same_networks():
    backend_times_the_bigger_network_slower("onnxruntime", OnnxRuntimeDevice, "local-cpu-ort-t1-b1-")
    with pytest.raises(ValueError, match="unknown backend 'tvm'"):
        local_device("nasbench201", backend="tvm")

def test_openvino_backend_times_nasbench201_on_this_cpu(tmp_path, capsys):
    import json

    from help_plugin.cli import main
    from help_plugin.measure import OpenVinoDevice

    dev = backend_times_the_bigger_network_slower("openvino", OpenVinoDevice, "local-cpu-ov-t1-b1-", passes=3)
    ids = {dev.device_id, TorchEagerDevice("nasbench201").device_id, OnnxRuntimeDevice("nasbench201").device_id,
           OpenVinoDevice("nasbench201", precision="bf16").device_id, OpenVinoDevice("nasbench201", threads=2).device_id}
    assert len(ids) == 5
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        OpenVinoDevice("nasbench201", precision="int4")
    with pytest.raises(ValueError, match="openvino backend has no setting 'dtype'"):
        local_device("nasbench201", "openvino", dtype="float16")
    capsys.readouterr()
    assert main(["measure", "--random", "1", "--backend", "openvino", "--passes", "1", "--store",
                 str(tmp_path / "m.sqlite"), "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"] == dev.device_id and out["measured"] == 1

def test_dtype_and_torch_device_are_part_of_the_device():
    archs = ["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
             "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"]
    bf16 = TorchEagerDevice("nasbench201", passes=2, runs=1, warmup=1, dtype="bfloat16")
    m = bf16.measure(archs)
    assert m.latency_ms[1] > m.latency_ms[0] > 0
    assert "-bfloat16-" in bf16.device_id and bf16.device_id != TorchEagerDevice("nasbench201").device_id
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        TorchEagerDevice("nasbench201", dtype="int8")
    with pytest.raises(ValueError, match="unknown torch_device 'tpu'"):
        TorchEagerDevice("nasbench201", torch_device="tpu")
    with pytest.raises(ValueError, match="onnxruntime backend has no setting 'dtype'"):
        local_device("nasbench201", "onnxruntime", dtype="float16")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="torch_device='cuda' requested"):
            TorchEagerDevice("nasbench201", torch_device="cuda").measure(archs[:1])
    else:
        cuda = TorchEagerDevice("nasbench201", passes=2, runs=1, torch_device="cuda")
        assert cuda.device_id.startswith("local-cuda-") and (cuda.measure(archs).latency_ms > 0).all()

_SESSION_FAULTS = """
import resource, sys
import scipy.stats, torch  # imported up front: a first import's page faults are not the allocator's
from help_plugin.measure import TorchEagerDevice
dev = TorchEagerDevice("nasbench201", batch_size=16, passes=2, runs=1, warmup=1, steady_heap=sys.argv[1] == "1")
archs = dev.space.sample(3, 0)
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    dev.measure(archs)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(dev.settings, faults)
"""

@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_steady_heap_stops_page_faults_between_sessions():
    """The cause of timings that drift within one process: with glibc's default thresholds the
    activations of NAS-Bench-201 at batch 16 are mmap-ed and page-fault on every forward; with the
    steady heap (the default) a session after the first causes next to none. Fresh processes,
    since the setting is process-wide."""
    import subprocess
    import sys

    out = {}
    for steady in ("0", "1"):
        res = subprocess.run([sys.executable, "-c", _SESSION_FAULTS, steady], capture_output=True, text=True,
                             check=True)
        settings, faults = res.stdout.strip().rsplit(" [", 1)
        out[steady] = (settings, [int(f) for f in faults.rstrip("]").split(",")])
    assert "heap=steady" in out["1"][0] and "heap=steady" not in out["0"][0]
    assert max(out["1"][1][1:]) < 1000, out
    assert sum(out["0"][1]) > 10 * sum(out["1"][1]), out
