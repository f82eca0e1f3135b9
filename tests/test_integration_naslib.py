"""NASLib adapter, tested against NASLib's documented formats (NASLib itself is GitHub-only, Python <= 3.9).

The formats come from NASLib's source: ``naslib/search_spaces/nasbench201/conversions.py``
(``EDGE_LIST = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))`` with 1-based nodes,
``OP_NAMES_NB201 = ['skip_connect', 'none', 'nor_conv_3x3', 'nor_conv_1x1', 'avg_pool_3x3']``),
``graph.py`` (``get_op_indices``/``set_op_indices``/``clone``/``get_type``) and
``naslib/predictors/predictor.py`` (``fit``/``query``/``get_data_reqs``). ``FakeGraph`` below is a
stand-in for NASLib's ``NasBench201SearchSpace`` exposing exactly that interface (it is not NASLib).
NNI's labels are checked against the installed ``nni`` package. Latencies are HELP's real data.
"""
import numpy as np
import pytest
from help_plugin.integrations.naslib import (
    NASLibLatencyPredictor,
    constrained_evolution,
    naslib_available,
    naslib_nasbench201_space,
    to_space_indices,
)
from help_plugin.integrations.nb201_formats import (
    NASLIB_OPS,
    NNI_OPS,
    indices_to_naslib,
    indices_to_nni,
    naslib_to_indices,
    naslib_to_str,
    nni_to_indices,
    str_to_naslib,
)
from scipy.stats import spearmanr

from help_plugin import HELPEstimator
from help_plugin.measure import CallableDevice
from help_plugin.predictors import torch_threads
from help_plugin.predictors.baselines import FLOPsEstimator

# NASLib's documented NB201 format, written out independently of integrations.nb201_formats
NASLIB_EDGE_LIST = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))
NASLIB_OP_NAMES_NB201 = ["skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3"]


def naslib_doc_str(op_indices) -> str:
    """NB201 string of NASLib op_indices, following NASLib's convert_op_indices_to_str semantics."""
    by_target = {}
    for (src, dst), op in zip(NASLIB_EDGE_LIST, op_indices):
        by_target.setdefault(dst, []).append((src, f"{NASLIB_OP_NAMES_NB201[op]}~{src - 1}"))
    return "+".join("|" + "|".join(tok for _, tok in sorted(by_target[n])) + "|" for n in (2, 3, 4))


class FakeGraph:
    """Stand-in for NASLib's NasBench201SearchSpace: get/set_op_indices, clone, get_type (NOT NASLib)."""

    def __init__(self, op_indices=None):
        self.op_indices = None if op_indices is None else list(op_indices)

    def get_op_indices(self):
        return self.op_indices

    def set_op_indices(self, op_indices):
        assert self.op_indices is None, "NASLib refuses to overwrite an architecture"
        assert isinstance(op_indices, list) and len(op_indices) == 6
        self.op_indices = op_indices

    def clone(self):
        return FakeGraph(self.op_indices)

    def get_type(self):
        return "nasbench201"


@pytest.fixture(scope="module")
def all_idx(nb201):
    return nb201.archs


@pytest.fixture(scope="module")
def nb201_est():
    return HELPEstimator.pretrained("nasbench201")


def _shots(data, n=10, seed=0):
    pool = np.setdiff1d(np.arange(len(data)), data.reference_rows)
    return np.random.default_rng(seed).choice(pool, n, replace=False)


# ------------------------------------------------------------------ converters, all 15,625 archs
def test_naslib_roundtrip_is_a_bijection_on_all_archs(all_idx):
    assert len(all_idx) == 15625
    nas = indices_to_naslib(all_idx)
    assert nas.shape == (15625, 6) and nas.min() == 0 and nas.max() == 4
    assert len({tuple(r) for r in nas}) == 15625
    np.testing.assert_array_equal(naslib_to_indices(nas), all_idx)
    for row, n in zip(all_idx[::97], nas[::97]):  # single-arch calls agree with the batch
        np.testing.assert_array_equal(indices_to_naslib(row), n)
        np.testing.assert_array_equal(naslib_to_indices(list(n)), row)


def test_naslib_matches_nb201_strings_on_all_archs(nb201, all_idx):
    space = nb201.space
    strings = [space.format(r) for r in all_idx]  # the keys of HELP's str_arch2idx.pt, in index order
    nas = indices_to_naslib(all_idx)
    for s, n in zip(strings, nas):
        assert naslib_doc_str(n) == s
    assert naslib_to_str(nas) == strings
    np.testing.assert_array_equal(str_to_naslib(strings), nas)
    assert str_to_naslib(strings[123]).tolist() == nas[123].tolist()


def test_naslib_worked_example():
    # NASLib's test SPEC (tests/test_nb201_search_space.py), string derived by hand from conversions.py
    spec = (2, 2, 3, 4, 3, 2)
    s = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    assert naslib_to_str(spec) == s
    assert tuple(str_to_naslib(s)) == spec
    assert NASLIB_OPS == tuple(NASLIB_OP_NAMES_NB201)


def test_nni_roundtrip_on_all_archs(all_idx):
    for row in all_idx:
        np.testing.assert_array_equal(nni_to_indices(indices_to_nni(row)), row)
    d = indices_to_nni([3, 3, 4, 2, 2, 3])
    assert d == {"cell/0_1": "conv_3x3", "cell/0_2": "conv_3x3", "cell/1_2": "avg_pool_3x3",
                 "cell/0_3": "conv_1x1", "cell/1_3": "conv_1x1", "cell/2_3": "conv_3x3"}
    assert nni_to_indices({k: v.replace("conv", "nor_conv") for k, v in d.items()}).tolist() == [3, 3, 4, 2, 2, 3]


def test_nni_labels_match_the_installed_nni_hub_space(all_idx):
    hub = pytest.importorskip("nni.nas.hub.pytorch")
    mutables = hub.NasBench201().simplify()
    assert set(mutables) == set(indices_to_nni(all_idx[0]))
    for m in mutables.values():
        assert tuple(m.values) == NNI_OPS
    for row in all_idx[::25]:
        sample = indices_to_nni(row)
        assert all(m.contains(sample) for m in mutables.values())


@pytest.mark.parametrize("bad, err", [
    ([0, 1, 2], ValueError), ([0, 1, 2, 3, 4, 5], ValueError), ([0, 1, 2, 3, 4, -1], ValueError),
    ([0, 1, 2, 3, 4, 0.5], TypeError), (["none"] * 6, TypeError), (np.zeros((2, 3, 6), int), ValueError)])
def test_converters_reject_bad_op_indices(bad, err):
    with pytest.raises(err, match="op_indices"):
        naslib_to_indices(bad)


def test_nni_converter_rejects_bad_samples():
    good = indices_to_nni([0] * 6)
    with pytest.raises(ValueError, match="cell/2_3"):
        nni_to_indices({k: v for k, v in good.items() if k != "cell/2_3"})
    with pytest.raises(ValueError, match="'sep_conv'"):
        nni_to_indices({**good, "cell/0_1": "sep_conv"})
    with pytest.raises(TypeError):
        nni_to_indices([0] * 6)
    with pytest.raises(ValueError, match="out of range"):
        indices_to_nni([5, 0, 0, 0, 0, 0])


# ------------------------------------------------------------------ predictor
def test_predictor_on_naslib_graphs_real_device(nb201, nb201_est):
    lat = nb201.latency("gold_6226")
    few = _shots(nb201)
    graphs = [FakeGraph(r) for r in indices_to_naslib(nb201.archs[few]).tolist()]
    pred = NASLibLatencyPredictor(nb201_est, reference_latencies_ms=lat[nb201.reference_rows])
    pred.pre_process()
    with torch_threads(1):
        assert pred.fit(graphs, lat[few]) is pred
        test = np.random.default_rng(1).choice(len(nb201), 2000, replace=False)
        ms = pred.query([FakeGraph(r) for r in indices_to_naslib(nb201.archs[test]).tolist()])
        direct = nb201_est.predict(nb201.archs[test])
    assert isinstance(ms, np.ndarray) and ms.shape == (2000,)
    np.testing.assert_allclose(ms, direct)  # graphs are read in NASLib order, not ours
    assert spearmanr(ms, lat[test]).correlation > 0.9
    assert nb201_est.n_measurements == 20
    # the same architectures as op_indices lists, as an [n, 6] array and as NB201 strings
    ops = indices_to_naslib(nb201.archs[test[:50]])
    np.testing.assert_allclose(pred.query(ops.tolist()), ms[:50])
    np.testing.assert_allclose(pred.query(ops), ms[:50])
    np.testing.assert_allclose(pred.query([nb201.space.format(r) for r in nb201.archs[test[:50]]]), ms[:50])


def test_predictor_takes_references_from_xtrain(nb201, nb201_est):
    lat = nb201.latency("titan_rtx_256")
    rows = np.concatenate([nb201.reference_rows, _shots(nb201, seed=2)])
    pred = NASLibLatencyPredictor(nb201_est)
    pred.fit(indices_to_naslib(nb201.archs[rows]).tolist(), lat[rows])
    assert nb201_est.n_measurements == 20
    assert spearmanr(pred.query(indices_to_naslib(nb201.archs[:3000])), lat[:3000]).correlation > 0.95


def test_predictor_measures_references_once_with_a_device(nb201, nb201_est):
    lat = nb201.latency("fpga")
    row_of = {nb201.space.canonical(r): i for i, r in enumerate(nb201.archs)}
    calls = []

    def fpga(arch_str):  # a black-box device: HELP's recorded fpga latency of the architecture
        calls.append(arch_str)
        return float(lat[row_of[arch_str]])

    pred = NASLibLatencyPredictor(nb201_est, device=CallableDevice("nasbench201", fpga, name="fpga-oracle",
                                                                  isolation="thread"))  # calls counted here
    few = _shots(nb201, seed=3)
    pred.fit(indices_to_naslib(nb201.archs[few]).tolist(), lat[few])
    assert sorted(calls) == sorted(nb201_est.reference_archs)
    np.testing.assert_allclose(pred.reference_latencies_ms, lat[nb201.reference_rows])
    pred.fit(indices_to_naslib(nb201.archs[few]).tolist(), lat[few])
    assert len(calls) == 10  # cached, not re-measured
    pred = NASLibLatencyPredictor(nb201_est, device=fpga)  # a plain function works too (in a worker process,
    pred.fit(indices_to_naslib(nb201.archs[few]).tolist(), lat[few])  # so its calls are not counted here)
    np.testing.assert_allclose(pred.reference_latencies_ms, lat[nb201.reference_rows])
    assert pred.device.isolation == "process" and nb201_est.n_measurements == 20
    with pytest.raises(TypeError, match="function arch -> ms"):
        NASLibLatencyPredictor(nb201_est, device=3)


def test_predictor_errors(nb201, nb201_est):
    lat = nb201.latency("pixel2")
    few = _shots(nb201, seed=4)
    ops = indices_to_naslib(nb201.archs[few]).tolist()
    with pytest.raises(ValueError, match="reference_archs"):
        NASLibLatencyPredictor(nb201_est).fit(ops, lat[few])
    pred = NASLibLatencyPredictor(nb201_est, reference_latencies_ms=lat[nb201.reference_rows][:9])
    with pytest.raises(ValueError, match="9 values for 10"):
        pred.fit(ops, lat[few])
    pred = NASLibLatencyPredictor(nb201_est, reference_latencies_ms=lat[nb201.reference_rows])
    with pytest.raises(ValueError, match="xtrain has 10 entries but ytrain has 9"):
        pred.fit(ops, lat[few][:9])
    with pytest.raises(ValueError, match=r"ytrain\[0\] = -1.0"):
        pred.fit(ops, -np.ones(10))
    with pytest.raises(ValueError, match="None"):
        pred.fit([FakeGraph()] + [FakeGraph(o) for o in ops[1:]], lat[few])
    with pytest.raises(TypeError, match="single FakeGraph"):
        pred.query(FakeGraph(ops[0]))
    with pytest.raises(ValueError, match="'nasbench101'"):
        pred.set_ss_type("nasbench101")
    pred.set_ss_type("nasbench201")
    with pytest.raises(TypeError, match="LatencyEstimator"):
        NASLibLatencyPredictor(object())
    with pytest.raises(ValueError, match="'fbnet'"):
        NASLibLatencyPredictor(nb201_est, device=CallableDevice("fbnet", lambda arch: 1.0))


def test_predictor_data_reqs_follow_naslib():
    reqs = NASLibLatencyPredictor(FLOPsEstimator("nasbench201")).get_data_reqs()
    assert reqs == {"requires_partial_lc": False, "metric": None, "requires_hyperparameters": False,
                    "hyperparams": {}, "unlabeled": False, "unlabeled_factor": 0}


def test_predictor_wraps_any_estimator(nb201):
    lat = nb201.latency("eyeriss")
    few = _shots(nb201, n=20, seed=5)
    pred = NASLibLatencyPredictor(FLOPsEstimator("nasbench201")).fit(
        [FakeGraph(r) for r in indices_to_naslib(nb201.archs[few]).tolist()], lat[few])
    ms = pred.query(indices_to_naslib(nb201.archs[:2000]))
    assert spearmanr(ms, lat[:2000]).correlation > 0.5


def test_predictor_on_fbnet_index_lists(fbnet):
    """NASLib has no FBNet space: help_plugin's fbnet space is the equivalent (22 block indices)."""
    est = HELPEstimator.pretrained("fbnet")
    lat = fbnet.latency("fpga")
    few = _shots(fbnet, seed=6)
    pred = NASLibLatencyPredictor(est, reference_latencies_ms=lat[fbnet.reference_rows])
    with torch_threads(1):
        pred.fit(fbnet.archs[few].tolist(), lat[few])
        ms = pred.query(fbnet.archs[:2000].tolist())
    assert spearmanr(ms, lat[:2000]).correlation > 0.9
    np.testing.assert_allclose(pred.query([fbnet.space.format(r) for r in fbnet.archs[:20]]), ms[:20])
    np.testing.assert_array_equal(to_space_indices(est.space, fbnet.archs[:5]), fbnet.archs[:5])


# ------------------------------------------------------------------ regularized evolution
def _adapted(nb201, est, device="gold_6226", seed=7):
    lat = nb201.latency(device)
    few = _shots(nb201, seed=seed)
    return est.adapt(lat[nb201.reference_rows], nb201.archs[few], lat[few])


def test_evolution_on_graphs_meets_the_limit(nb201, nb201_est):
    est = _adapted(nb201, nb201_est)
    limit = float(np.quantile(est.predict(nb201.archs), 0.3))
    seen = []

    def n_conv3x3(graph):  # counts NASLib op 2 (nor_conv_3x3) on the graph's NASLib op_indices
        assert isinstance(graph, FakeGraph)
        seen.append(graph.get_op_indices())
        return float(sum(op == 2 for op in graph.get_op_indices()))

    res = constrained_evolution(est, n_conv3x3, limit, search_space=FakeGraph(), cycles=60, seed=0)
    assert isinstance(res.best, FakeGraph) and res.best.get_op_indices() == res.best_op_indices
    best_idx = naslib_to_indices(res.best_op_indices)
    bound = est.predict_upper([best_idx], selection=True)  # the default: the 95 % selection-aware bound
    assert bound[0] <= limit and res.predicted_ms == pytest.approx(est.predict([best_idx])[0])
    assert res.search.bound_ms == pytest.approx(bound[0]) and res.search.constraint == "95 % selection-aware bound"
    assert res.best_score == max(sum(op == 2 for op in ops) for ops in seen)
    # every evaluated graph was feasible: infeasible children are rejected before the objective
    assert np.all(est.predict_upper(naslib_to_indices(np.array(seen)), selection=True) <= limit)
    predictor = NASLibLatencyPredictor(est)
    assert predictor.feasible(seen, limit).all() and predictor.feasible([res.best], limit)[0]
    assert NASLibLatencyPredictor(est, confidence=None).feasible(seen, limit).all()
    helps = constrained_evolution(est, n_conv3x3, limit, search_space=FakeGraph(), cycles=60, seed=0,
                                  confidence=None)  # HELP's rule
    assert helps.search.constraint == "mean prediction (HELP's rule)" and helps.predicted_ms <= limit


def test_evolution_on_op_indices_finds_the_optimum_without_limit(nb201, nb201_est):
    est = _adapted(nb201, nb201_est)
    res = constrained_evolution(est, lambda ops: float(sum(op == 2 for op in ops)), 1e9, cycles=150, seed=1)
    assert res.best_op_indices == [2] * 6 and res.best == [2] * 6  # all nor_conv_3x3 in NASLib's numbering
    assert naslib_to_str(res.best_op_indices) == "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+" \
                                                 "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def test_evolution_on_fbnet(fbnet):
    est = HELPEstimator.pretrained("fbnet")
    lat = fbnet.latency("raspi4")
    few = _shots(fbnet, seed=8)
    est.adapt(lat[fbnet.reference_rows], fbnet.archs[few], lat[few])
    limit = float(np.median(lat))
    res = constrained_evolution(est, lambda ops: float(sum(op != 8 for op in ops)), limit, cycles=40, seed=0)
    assert len(res.best) == 22 and res.predicted_ms <= limit


def test_evolution_errors(nb201, nb201_est):
    est = _adapted(nb201, nb201_est)

    class FBNetGraph(FakeGraph):
        def get_type(self):
            return "fbnet"

    with pytest.raises(ValueError, match="'fbnet'"):
        constrained_evolution(est, lambda g: 0.0, 10.0, search_space=FBNetGraph())
    with pytest.raises(TypeError, match="clone"):
        constrained_evolution(est, lambda g: 0.0, 10.0, search_space=object())
    with pytest.raises(ValueError, match="nan"):
        constrained_evolution(est, lambda g: float("nan"), 1e9, cycles=2)
    with pytest.raises(ValueError, match="no sampled architecture meets"):
        constrained_evolution(est, lambda g: 0.0, 1e-6, cycles=2)


@pytest.mark.skipif(naslib_available(), reason="NASLib is installed here")
def test_naslib_space_needs_naslib():
    with pytest.raises(ImportError, match="automl/NASLib"):
        naslib_nasbench201_space()
