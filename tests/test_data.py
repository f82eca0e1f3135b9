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
    assert all(split.name == name for name, split in SPLITS.items())  # results are labelled with it
    own = adv.with_devices(test=["pixel2"])
    assert own.name == "fbnet-custom" and own.test == ("pixel2",) and own.train == adv.train
    halves = get_split("nasbench201").random_halves(3)
    assert [h.name for h in halves] == [f"nasbench201-random{k}" for k in range(3)]
    assert halves == get_split("nasbench201").random_halves(3) != get_split("nasbench201").random_halves(3, seed=1)
    for h in halves:
        assert len(h.train) == 6 and len(h.test) == 7
        assert set(h.pool) | set(h.test) == set(get_split("nasbench201").pool)


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
    line = len(path.read_text().splitlines()) + 1
    with pytest.raises(ValueError, match=rf"bad.csv, line {line}: latency_ms = 'nan' is not a finite positive"):
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


NB201_ARCH = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"


def _table(path, lines, header="space,arch,device,latency_ms", encoding="utf-8"):
    path.write_text("\n".join([header] + lines) + "\n", encoding=encoding)
    return path


def test_tidy_table_defects_are_errors_naming_file_line_and_value(tmp_path, fbnet):
    """Each defect once read silently wrong (or dropped); now an error naming the file, line and value."""
    good = [f"nasbench201,{NB201_ARCH},dev,1.5", f"nasbench201,{NB201_ARCH.replace('none~1|+', 'skip_connect~1|+')},dev,2"]
    cases = {
        f"nasbench201,{NB201_ARCH},dev,5,3": r"line 4: 5 fields .* 4 columns .*decimal comma",  # was read as 5.0
        f"nasbench-201,{NB201_ARCH},dev,4.0": r"line 4: unknown search space 'nasbench-201'",  # was dropped
        f"nasbench201,{NB201_ARCH},dev,fast": r"line 4: latency_ms 'fast' is not a number",
        f'nasbench201,{NB201_ARCH},dev,"5,3"': r"line 4: latency_ms '5,3' is not a number \(a decimal comma",
        f"nasbench201,{NB201_ARCH},dev,1_000": r"line 4: latency_ms '1_000' is not a number",
        f"nasbench201,{NB201_ARCH},dev,True": r"line 4: latency_ms 'True' is not a number",
        f"nasbench201,{NB201_ARCH},dev,-2": r"line 4: latency_ms = '-2' is not a finite positive",
        f"nasbench201,{NB201_ARCH},,2.0": r"line 4: device '' is empty",
        f"nasbench201,{NB201_ARCH},dev": r"line 4: 3 fields",
        "nasbench201,|bogus~0|,dev,2.0": r"line 4: nasbench201: ",
    }
    for bad, message in cases.items():
        path = _table(tmp_path / "t.csv", good + [bad])
        with pytest.raises(ValueError, match=r"t\.csv, " + message):
            load_measurements(path)
    with pytest.raises(ValueError, match=r"column\(s\) \['device'\] appear more than once"):
        load_measurements(_table(tmp_path / "t.csv", good, header="space,arch,device,device,latency_ms"))
    with pytest.raises(ValueError, match=r"t\.csv is not a UTF-8 text table"):
        (tmp_path / "t.csv").write_bytes(b"space,arch,device,latency_ms\n\xff\xfe\x00garbage\n")
        load_measurements(tmp_path / "t.csv")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_measurements(tmp_path)


def test_tidy_table_bom_extra_columns_and_multi_space_line_numbers(tmp_path, fbnet):
    arch = fbnet.space.format(fbnet.archs[0])
    lines = [f"nasbench201,{NB201_ARCH},dev,1.5,ref,a.onnx,\"1,3,32,32\"",
             f"fbnet,{arch},dev,3.0,shot,b.onnx,\"1,3,224,224\""]
    header = "space,arch,device,latency_ms,role,file,input_shape"  # a manifest's extra columns are ignored
    path = _table(tmp_path / "bom.csv", lines, header=header, encoding="utf-8-sig")  # Excel writes a byte-order mark
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    back = load_measurements(path, space="fbnet")
    assert back.devices == ("dev",) and back.latency("dev").tolist() == [3.0]
    with pytest.raises(ValueError, match=r"holds spaces \['fbnet', 'nasbench201'\]; choose one"):
        load_measurements(path)
    # a bad fbnet row after a nasbench201 row: the error names its own line, not its rank among fbnet rows
    path = _table(tmp_path / "multi.csv", [f"nasbench201,{NB201_ARCH},dev,1.5", f"fbnet,{arch},dev,3.0",
                                           f"nasbench201,{NB201_ARCH},dev,1.6", f"fbnet,{arch},dev,slow"])
    with pytest.raises(ValueError, match=r"multi\.csv, line 5: latency_ms 'slow'"):
        load_measurements(path, space="fbnet")


def test_parquet_booleans_and_words_are_not_latencies(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"space": ["nasbench201"] * 2, "arch": [NB201_ARCH] * 2, "device": ["dev"] * 2,
                          "latency_ms": [True, False]})
    frame.to_parquet(tmp_path / "b.parquet")
    with pytest.raises(ValueError, match=r"b\.parquet: column latency_ms holds booleans"):  # was read as 1.0 ms
        load_measurements(tmp_path / "b.parquet")
    frame["latency_ms"] = ["1.5", "fast"]
    frame.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"t\.parquet, row 2: latency_ms 'fast' is not a number"):
        load_measurements(tmp_path / "t.parquet")
