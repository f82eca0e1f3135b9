"""Property-based tests (hypothesis) of the public boundary: architectures, tidy tables, latencies.

* every space: ``parse``/``format``/``canonical`` round trips on random valid architectures;
* random invalid architectures always raise the space's error types (``ValueError``/``TypeError``), never
  anything else (an ``IndexError``, a ``KeyError``), and never parse into an invalid index row;
* random tidy tables with one injected defect always raise a ``ValueError`` naming the file and the line;
* latencies: booleans, strings and None are never latencies; the smooth positive floor keeps the order.
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from help_plugin import load_measurements
from help_plugin.spaces import available_spaces, get_space

SPACES = {name: get_space(name) for name in available_spaces()}
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def rows(space):
    """Random valid index rows of ``space``."""
    return st.tuples(*[st.integers(0, c - 1) for c in space.choices]).map(lambda r: np.array(r, dtype=np.int64))


def each_space(test):
    """``test(space, row, data)`` on every space, with a random valid index row of it (and hypothesis's ``data``)."""
    @pytest.mark.parametrize("name", sorted(SPACES))
    @FAST
    @given(data=st.data())
    def run(name, data):
        test(SPACES[name], data.draw(rows(SPACES[name])), data)

    run.__name__, run.__doc__ = test.__name__, test.__doc__
    return run


# ---------------------------------------------------------------------------- architectures
@each_space
def test_parse_format_canonical_round_trip(space, row, data):
    canon = space.canonical_indices(row[None])[0]
    np.testing.assert_array_equal(space.canonical_indices(canon[None])[0], canon)  # idempotent
    back = space.parse(space.format(canon))
    np.testing.assert_array_equal(back, canon)
    assert space.format(space.parse(space.format(row))) == space.format(row)
    assert space.canonical(space.format(row)) == space.canonical(row) == space.canonical(space.parse(space.format(row)))
    # rows that differ only where the network does not look are one network: one canonical key of their canonical rows
    assert space.canonical(canon) == space.canonical(space.canonical_indices(back[None])[0])


def _mutations(text: str):
    """``text`` with a random slice deleted, replaced or duplicated."""
    return st.tuples(st.integers(0, len(text)), st.integers(0, len(text)), st.text(max_size=6)).map(
        lambda t: text[:min(t[0], t[1])] + t[2] + text[max(t[0], t[1]):])


def _junk():
    return st.recursive(st.none() | st.booleans() | st.integers(-10, 100) | st.floats(allow_nan=True) | st.text(max_size=20),
                        lambda inner: st.lists(inner, max_size=25) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
                        max_leaves=30)


@each_space
def test_invalid_architectures_raise_the_space_s_error_types(space, row, data):
    valid = space.format(row)
    text = valid if isinstance(valid, str) else space.canonical(valid)  # dict spaces: their JSON form
    arch = data.draw(st.one_of(_junk(), _mutations(text)))
    try:
        row = space.parse(arch)
    except (ValueError, TypeError):
        return
    space.check_indices(np.asarray(row)[None])  # whatever parses is a valid architecture


@each_space
def test_out_of_range_index_rows_are_value_errors(space, row, data):
    pos = data.draw(st.integers(0, space.arch_length - 1))
    row[pos] = data.draw(st.sampled_from([-1, space.choices[pos], space.choices[pos] + 7]))
    with pytest.raises(ValueError, match=f"at position {pos}"):
        space.to_indices(row[None])


# ---------------------------------------------------------------------------- tidy tables
NB201 = SPACES["nasbench201"]
DEFECTS = {  # what replaces one field (or the row) -> what the error says
    "nan": ("latency_ms", "nan", "not a finite positive latency"),
    "inf": ("latency_ms", "inf", "not a finite positive latency"),
    "negative": ("latency_ms", "-3.5", "not a finite positive latency"),
    "zero": ("latency_ms", "0", "not a finite positive latency"),
    "text": ("latency_ms", "fast", "is not a number"),
    "bool": ("latency_ms", "True", "is not a number"),
    "underscore": ("latency_ms", "1_000", "is not a number"),
    "quoted decimal comma": ("latency_ms", '"5,3"', "decimal comma"),
    "decimal comma": ("latency_ms", "5,3", "decimal comma"),
    "unknown space": ("space", "nasbench-201", "unknown search space 'nasbench-201'"),
    "empty device": ("device", "", "device '' is empty"),
    "bad arch": ("arch", "|nor_conv_3x3~0|+|", "nasbench201: "),
    "missing field": (None, None, "3 fields"),
}


@FAST
@given(n=st.integers(1, 30), defect=st.sampled_from(sorted(DEFECTS)), data=st.data(),
       extra=st.booleans(), bom=st.booleans())
def test_a_table_with_a_defect_raises_naming_its_line(tmp_path_factory, n, defect, data, extra, bom):
    seed = data.draw(st.integers(0, 2**31))
    archs = NB201.sample(n, seed)
    ms = np.random.default_rng(seed).uniform(0.1, 50, n)
    header = ["space", "arch", "device", "latency_ms"] + (["role", "file"] if extra else [])
    lines = [",".join(["nasbench201", NB201.format(a), f"dev{i % 3}", repr(float(m))] + (["shot", "x.onnx"] if extra else []))
             for i, (a, m) in enumerate(zip(archs, ms))]
    bad = data.draw(st.integers(0, n - 1))
    column, value, message = DEFECTS[defect]
    fields = lines[bad].split(",")
    if column is None:
        fields = fields[:3]
    else:
        fields[header.index(column)] = value
    lines[bad] = ",".join(fields)
    path = tmp_path_factory.mktemp("tables") / "t.csv"
    path.write_text("\n".join([",".join(header)] + lines) + "\n", encoding="utf-8-sig" if bom else "utf-8")
    with pytest.raises(ValueError) as err:
        load_measurements(path)
    assert f"t.csv, line {bad + 2}:" in str(err.value) and message in str(err.value), str(err.value)


@FAST
@given(n=st.integers(1, 30), repeats=st.integers(0, 5), data=st.data())
def test_a_good_table_reads_back_exactly(tmp_path_factory, n, repeats, data):
    """Without a defect: every value back (repeated measurements: their median)."""
    seed = data.draw(st.integers(0, 2**31))
    archs = NB201.sample(n, seed)
    ms = np.random.default_rng(seed).uniform(0.01, 500, n)
    path = tmp_path_factory.mktemp("tables") / "t.csv"
    lines = [f"nasbench201,{NB201.format(a)},dev,{float(m)!r}" for a, m in zip(archs, ms)]
    lines += [f"nasbench201,{NB201.format(archs[0])},dev,{float(ms[0])!r}"] * repeats
    path.write_text("space,arch,device,latency_ms\n" + "\n".join(lines) + "\n")
    back = load_measurements(path)
    values: dict = {}
    for a, m in list(zip(archs, ms)) + [(archs[0], ms[0])] * repeats:
        values.setdefault(NB201.canonical(a), []).append(float(m))
    assert len(back) == len(values)
    for a, m in zip(back.archs, back.latency("dev")):
        assert m == np.median(values[NB201.canonical(a)])


# ---------------------------------------------------------------------------- latencies
@FAST
@given(values=st.lists(st.floats(1e-6, 1e6), min_size=1, max_size=20), data=st.data())
def test_latencies_are_numbers_never_bools_strings_or_none(values, data):
    from help_plugin.validation import check_latencies

    np.testing.assert_array_equal(check_latencies(values), values)
    spoiled = list(values)
    spoiled[data.draw(st.integers(0, len(values) - 1))] = data.draw(st.sampled_from([True, False, "7.5", None, b"1"]))
    with pytest.raises(TypeError, match="not a number of ms|must be numbers"):
        check_latencies(spoiled)


@FAST
@given(xs=st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=50), scale=st.floats(1e-4, 1e3))
def test_the_positive_floor_keeps_the_order_and_large_values(xs, scale):
    import torch

    from help_plugin.predictors.training import FLOOR_FRACTION, positive_ms

    x = torch.tensor(sorted(set(xs)), dtype=torch.float64)
    assume(len(x) >= 2)
    y = positive_ms(x, scale)
    assert bool((y > 0).all()) and bool(torch.isfinite(y).all())
    assert bool((y[1:] >= y[:-1]).all())  # non-decreasing (strictly, up to float rounding)
    big = x >= scale
    assert torch.allclose(y[big], x[big], rtol=2.1 * FLOOR_FRACTION ** 2, atol=0)
    floor = float(positive_ms(torch.zeros(1, dtype=torch.float64), scale))  # e: the value at 0 ms
    assert FLOOR_FRACTION * scale / math.sqrt(2) <= floor <= FLOOR_FRACTION * scale * math.sqrt(2)
