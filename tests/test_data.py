import numpy as np
import pytest

from help_plugin import SPLITS, get_split, load_help_data, load_measurements
from help_plugin.data import DeviceSplit, help_devices


def test_help_layout_loads_all_spaces(nb201, fbnet, ofa):
    assert nb201.latency_ms.shape == (15625, 27) and len(nb201.reference_rows) == 10
    assert fbnet.latency_ms.shape == (5000, 27)
    assert ofa.latency_ms.shape == (5000, 12)
    for d in (nb201, fbnet, ofa):
        assert np.isfinite(d.latency_ms).all() and (d.latency_ms >= 0).all()
    # phone latencies have ms resolution (PROVENANCE.md)
    assert np.allclose(nb201.latency("pixel2"), np.round(nb201.latency("pixel2")))


def test_named_splits_refer_to_existing_devices():
    for name, split in SPLITS.items():
        available = help_devices(split.space)
        for d in split.train + split.valid + split.test:
            assert d in available, (name, d)
    adv = get_split("fbnet-adversarial")
    assert len(adv.train) == 15 and all(d.split("_")[-1] in ("1", "32", "64") for d in adv.train)


def test_bad_split_and_device_names(nb201):
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        get_split("nope")
    with pytest.raises(ValueError, match="both meta-training/validation and test"):
        DeviceSplit("fbnet", ("a", "b"), (), ("b",))
    with pytest.raises(ValueError, match="unknown device 'tpu_v9'"):
        nb201.latency("tpu_v9")
    with pytest.raises(ValueError, match=r"unknown device\(s\) \['tpu_v9'\]"):
        load_help_data("fbnet", devices=["tpu_v9"])


def test_tidy_csv_round_trip_with_repeats_and_validation(tmp_path, fbnet):
    small = fbnet.select_devices(["fpga", "raspi4"])
    small.archs, small.latency_ms = small.archs[:30], small.latency_ms[:30]
    small.reference_rows = np.arange(5)
    path = tmp_path / "m.csv"
    small.to_csv(path)
    with open(path, "a") as f:  # a repeated measurement: the median of the repeats is kept
        f.write(f"fbnet,{fbnet.space.format(small.archs[0])},fpga,{small.latency_ms[0, 0] + 2.0}\n")
        f.write(f"fbnet,{fbnet.space.format(small.archs[0])},fpga,{small.latency_ms[0, 0] + 4.0}\n")
    back = load_measurements(path, reference_archs=[fbnet.space.format(r) for r in small.archs[:5]])
    assert back.devices == ("fpga", "raspi4") and len(back) == 30
    assert back.latency("fpga")[0] == pytest.approx(small.latency_ms[0, 0] + 2.0)
    np.testing.assert_allclose(back.latency("raspi4"), small.latency_ms[:, 1])
    assert back.reference_rows.tolist() == [0, 1, 2, 3, 4]

    bad = tmp_path / "bad.csv"
    bad.write_text(path.read_text() + f"fbnet,{fbnet.space.format(small.archs[1])},fpga,nan\n")
    with pytest.raises(ValueError, match="latency_ms of row .* = nan"):
        load_measurements(bad)
    bad.write_text("space,arch,device,latency_ms\nfbnet,k3_e1,fpga,1.0\n")
    with pytest.raises(ValueError, match="22 layers, got 1"):
        load_measurements(bad)


def test_parquet_table(tmp_path, nb201):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rows = [{"space": "nasbench201", "arch": nb201.space.format(nb201.archs[i]), "device": "gold_6226",
             "latency_ms": float(nb201.latency("gold_6226")[i])} for i in range(20)]
    pd.DataFrame(rows).to_parquet(tmp_path / "m.parquet")
    back = load_measurements(tmp_path / "m.parquet")
    np.testing.assert_allclose(back.latency("gold_6226"), nb201.latency("gold_6226")[:20])
