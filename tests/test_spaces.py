import json

import numpy as np
import pytest
import torch

from help_plugin import get_space
from help_plugin.spaces import FBNet, NASBench201, OFAMobileNetV3

NB = "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"


def test_nasbench201_round_trip_every_form():
    sp = get_space("nasbench201")
    idx = sp.parse(NB)
    assert idx.tolist() == [3, 0, 2, 1, 2, 4]
    assert sp.format(idx) == NB
    assert sp.canonical([3, 0, 2, 1, 2, 4]) == sp.canonical(NB.split("|+|")[0] and NB)
    assert sp.canonical(["nor_conv_3x3", "none", "nor_conv_1x1", "skip_connect", "nor_conv_1x1", "avg_pool_3x3"]) == NB


def test_all_nasbench201_data_strings_parse(nb201):
    sp = nb201.space
    assert len({sp.format(r) for r in nb201.archs}) == 15625


@pytest.mark.parametrize("bad, match", [
    ("|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv_9x9'"),
    ("|none~0|+|none~0|none~1|", "3 nodes"),
    ([0, 1, 2], "6 edges, got 3"),
    ([0, 1, 2, 3, 4, 7], "op index 7"),
    (3.5, "got float"),
])
def test_nasbench201_rejects_bad_archs(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        NASBench201().parse(bad)


def test_fbnet_order_matches_shared_metainfo():
    from help_plugin.data.help_layout import default_data_dir, load_pt

    meta = load_pt(default_data_dir() / "fbnet" / "metainfo.pt")
    sp = FBNet()
    for a in meta["arch"][:50]:
        assert sp.parse(a["arch_str"]).tolist() == a["op_idx_list"]
    assert sp.canonical(meta["arch"][0]["arch_str"]) == sp.canonical(meta["arch"][0]["op_idx_list"])
    with pytest.raises(ValueError, match="unknown block 'k7_e6'"):
        sp.parse(["k7_e6"] * 22)
    with pytest.raises(ValueError, match="22 layers, got 21"):
        sp.parse([0] * 21)


def test_ofa_accepts_both_finder_conventions_and_validates():
    sp = OFAMobileNetV3()
    base = {"ks": [3, 5, 7, 3] * 5, "e": [3, 4, 6, 4] * 5, "d": [2, 3, 4, 2, 3]}
    a = sp.parse({**base, "r": 176})
    assert (sp.parse({**base, "r": [176], "wid": None}) == a).all()
    assert (sp.parse({**base, "image_size": 176}) == a).all()
    assert (sp.parse({**base, "r": 176, "image_size": [176]}) == a).all()  # both, agreeing
    assert sp.format(a) == {**base, "r": 176}
    json.dumps(sp.format(a))
    for bad, match in [({**base, "r": 300}, "resolution r = 300"), ({**base, "r": 176, "ks": [4] * 20}, r"ks\[0\] = 4"),
                       ({**base, "r": 176, "d": [2, 3]}, "d must be a list of 5"), ({"ks": [3] * 20}, "missing"),
                       ({**base, "r": 176, "image_size": 224}, "r = 176 and image_size = 224 disagree")]:
        with pytest.raises(ValueError, match=match):
            sp.parse(bad)


def test_ofa_inactive_layers_do_not_change_cost_or_encoding():
    sp = OFAMobileNetV3()
    a = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 224}
    b = {**a, "ks": [3, 3, 7, 7] * 5, "e": [3, 3, 6, 6] * 5}  # only layers 3-4 of each stage differ
    ia, ib = sp.to_indices([a, b])
    np.testing.assert_array_equal(sp.encode(ia[None]), sp.encode(ib[None]))
    big = {"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "r": 224}
    assert sp.flops(big) > sp.flops(a) * 3
    assert sp.flops({**big, "r": 128}) < sp.flops(big) / 2.5


def test_nasbench201_flops_match_published_range(nb201):
    sp = nb201.space
    flops = sp.cost_features(nb201.archs)[:, 0] / 1e6
    # NAS-Bench-201 CIFAR-10 networks range from ~7.8 to ~220 MFLOPs
    assert 7 < flops.min() < 9 and 219 < flops.max() < 221


@pytest.mark.parametrize("name", ["nasbench201", "fbnet", "ofa"])
def test_sampling_encoding_shapes(name):
    sp = get_space(name)
    idx = sp.sample(64, seed=1)
    assert idx.shape == (64, sp.arch_length)
    assert (sp.sample(64, seed=1) == idx).all()
    enc = sp.encode(idx)
    assert enc.shape == (64, sp.encoding_dim) and enc.dtype == np.float32 and np.isfinite(enc).all()
    formatted = [sp.format(r) for r in idx]
    np.testing.assert_array_equal(sp.to_indices(formatted), idx)
    with pytest.raises(ValueError, match="out of range"):
        bad = idx.copy()
        bad[0, -1] = 99
        sp.to_indices(bad)


@pytest.mark.parametrize("name", ["nasbench201", "fbnet"])
def test_relaxed_encoding_equals_hard_encoding_on_one_hot(name):
    sp = get_space(name)
    idx = sp.sample(8, seed=0)
    probs = torch.nn.functional.one_hot(torch.from_numpy(idx), max(sp.choices)).double()
    np.testing.assert_allclose(sp.relaxed_encode(probs).numpy(), sp.encode(idx), rtol=1e-5, atol=1e-5)


def test_unknown_space():
    with pytest.raises(ValueError, match="unknown search space 'nb301'"):
        get_space("nb301")


@pytest.mark.parametrize("name", ["nasbench201", "fbnet", "ofa"])
def test_built_networks_match_analytic_parameter_count(name):
    sp = get_space(name)
    for idx in sp.sample(3, seed=2):
        net = sp.build_network(idx)
        weights = sum(m.weight.numel() for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
        assert weights == pytest.approx(sp.params(idx), rel=0.02)
        out = net.eval()(torch.randn(1, *sp.input_size(idx)))
        assert out.shape == (1, sp.num_classes)


def test_graph_forms_shapes_and_ofa_inactive_layers():
    for name, shape in (("nasbench201", (8, 7)), ("fbnet", (22, 31)), ("ofa", (20, 27))):
        sp = get_space(name)
        x = sp.graph_features(sp.sample(5, 0))
        assert sp.graph_adjacency().shape == (shape[0], shape[0])
        assert x.shape == (5,) + shape and x.dtype == np.float32
    sp = get_space("ofa")
    arch = {"ks": [3] * 20, "e": [6] * 20, "d": [2] * 5, "r": 224}
    x = sp.graph_features(sp.to_indices([arch]))[0]
    active = np.array([j < 2 for _ in range(5) for j in range(4)])
    assert (x[active, :6].sum(1) == 2).all() and (x[~active, :6] == 0).all()
    assert np.allclose(x[:, 6], 1.0)  # (224 - 176) / 48 on every node


@pytest.mark.parametrize("name", ["nasbench201", "fbnet", "ofa", "hat"])
def test_parsed_forms_are_remembered_and_still_validated(name):
    """``to_indices`` parses a form once (strings; OFA's dicts too): the same rows again, a caller changing its array
    changes nothing remembered, and a bad form raises every time."""
    sp = get_space(name)
    forms = [sp.format(r) for r in sp.sample(50, seed=2)]
    first = sp.to_indices(forms)
    first[:] = 0
    again = sp.to_indices(forms)
    np.testing.assert_array_equal(again, sp.sample(50, seed=2))
    if name != "hat":  # HAT's dicts are not remembered
        assert len(sp._parsed) == 50
    bad = "|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|" if name == "nasbench201" else "nonsense"
    for _ in range(2):
        with pytest.raises((ValueError, TypeError)):
            sp.to_indices([bad])
    if name == "ofa":  # a dict equal to a remembered one but for an unknown key is parsed, and refused
        with pytest.raises(ValueError, match="unknown key"):
            sp.to_indices([{**forms[0], "depth_mult": 1}])


def test_nasbench201_op_counts_follow_the_cell_graph():
    """Live edges by brute force over the cell's paths: an edge is live iff some input -> output path of non-none
    edges runs through it."""
    from help_plugin.spaces.nasbench201 import EDGES, OPS

    sp = get_space("nasbench201")
    idx = np.array(np.unravel_index(np.arange(5 ** 6), (5,) * 6)).T
    detail = sp.detail_features(idx)
    assert detail.shape == (5 ** 6, len(sp.detail_names))
    for row, d in zip(idx[::37], detail[::37]):
        paths = [[e1] for e1, (t, s) in enumerate(EDGES) if s == 0 and t == 3]
        paths += [[e1, e2] for e1, (t1, s1) in enumerate(EDGES) for e2, (t2, s2) in enumerate(EDGES)
                  if s1 == 0 and s2 == t1 and t2 == 3]
        paths += [[e1, e2, e3] for e1, (t1, s1) in enumerate(EDGES) for e2, (t2, s2) in enumerate(EDGES)
                  for e3, (t3, s3) in enumerate(EDGES) if s1 == 0 and s2 == t1 and s3 == t2 and t3 == 3]
        live = {e for p in paths if all(row[e] != 0 for e in p) for e in p}
        for o in range(1, len(OPS)):
            assert d[o - 1] == (row == o).sum() and d[len(OPS) - 1 + o - 1] == sum(row[e] == o for e in live)
        assert d[-1] == bool(live)


def test_fbnet_op_type_macs_add_up_to_the_macs():
    sp = get_space("fbnet")
    idx = sp.sample(200, seed=1)
    detail = sp.detail_features(idx)
    assert len(sp.detail_names) == detail.shape[1] == 8
    np.testing.assert_allclose(detail[:, :5].sum(1) + sp.fixed_cost()[0], sp.cost_features(idx)[:, 0])
    np.testing.assert_allclose(detail[:, 5:], sp.cost_features(idx)[:, [2, 3, 1]] - sp.fixed_cost()[[2, 3, 1]])


@pytest.mark.parametrize("name", ["nasbench201", "fbnet", "ofa", "hat"])
def test_costs_and_one_hot_are_sums_over_terms(name):
    """What help+ folds its heads over: each architecture's analytic costs and one-hot encoding are the sums of its
    terms' (OFA: inactive layers are an empty term); HAT has no terms."""
    sp = get_space(name)
    idx = sp.sample(500, seed=3)
    if name == "hat":
        with pytest.raises(NotImplementedError):
            sp.terms(idx)
        return
    tables, terms = sp.term_tables(), sp.terms(idx)
    np.testing.assert_array_equal(np.concatenate([sp.terms(idx[i:i + 1]) for i in range(50)]), terms[:50])  # one row
    for i in range(50):  # a single query's terms (any order: only their sum is used)
        assert sorted(sp.row_terms(idx[i])) == sorted(terms[i].tolist())
    np.testing.assert_allclose(tables["costs"][terms].sum(1), sp.cost_features(idx), rtol=1e-12)
    np.testing.assert_array_equal(tables["one_hot"][terms].sum(1), sp.one_hot(idx))
    if "detail" in tables:
        np.testing.assert_allclose(tables["detail"][terms].sum(1), sp.detail_features(idx), rtol=1e-12)


@pytest.mark.parametrize("name", ["nasbench201", "fbnet", "ofa"])
def test_remembered_parses_are_exact_and_still_validate(name):
    """Parsing is remembered per form (strings; OFA dicts by their values): a remembered form parses to the same
    row, an edited copy of it is parsed afresh, and a bad form still raises after good ones were remembered."""
    sp = get_space(name)
    rows = sp.sample(200, seed=5)
    forms = [sp.format(r) for r in rows]
    np.testing.assert_array_equal(sp.to_indices(forms), rows)
    np.testing.assert_array_equal(sp.to_indices(forms), rows)  # from the memo
    if name == "ofa":
        edited = {**forms[0], "ks": list(forms[0]["ks"])}
        edited["ks"][0] = 7 if edited["ks"][0] != 7 else 3
        assert sp.to_indices([edited])[0][0] == (2 if edited["ks"][0] == 7 else 0)
        np.testing.assert_array_equal(sp.to_indices([{**forms[1], "r": [forms[1]["r"]]}]), rows[1:2])
        bad = {**forms[2], "e": [5] * 20}
    else:
        bad = forms[2].replace("|", "|bogus", 1) if name == "nasbench201" else "bogus" + forms[2]
    with pytest.raises(ValueError):
        sp.to_indices([bad])
