"""OFA integration: subnets built from the real `ofa` supernet, HELP inside OFA's two real evolution finders."""
import sys

import numpy as np
import pytest
import torch
from help_plugin.integrations.ofa_search import (
    BatchedEvolutionFinder,
    BatchedTutorialEvolutionFinder,
    FLOPsAccuracyProxy,
    HELPEfficiencyPredictor,
    OFAAccuracyPredictor,
    accuracy_predictor,
    search,
    search_and_measure,
)

from help_plugin import HELPEstimator
from help_plugin.measure import TorchEagerDevice
from help_plugin.predictors import NotFittedError
from help_plugin.search import NoFeasibleArchitecture
from help_plugin.spaces import get_space
from help_plugin.spaces import ofa as ofa_space

SPACE = get_space("ofa")
BASE = {"ks": [3, 5, 7, 3] * 5, "e": [3, 4, 6, 4] * 5, "d": [2, 3, 4, 2, 3]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def measured(ofa):
    """titan_rtx_64's latencies of the 10 reference archs + 10 random others: ``(archs [20, 46], ms [20])``."""
    rows = np.random.default_rng(0).choice(np.setdiff1d(np.arange(len(ofa)), ofa.reference_rows), 10, replace=False)
    rows = np.concatenate([ofa.reference_rows, rows])
    return ofa.archs[rows], ofa.latency("titan_rtx_64")[rows]


@pytest.fixture(scope="module")
def est(measured):
    """The shipped help+ OFA model adapted to the unseen titan_rtx_64 with 20 measurements."""
    return HELPEstimator.pretrained("ofa").fit(*measured)


def nas_form(arch):
    return {"ks": list(arch["ks"]), "e": list(arch["e"]), "d": list(arch["d"]), "image_size": arch["r"]}


def tutorial_form(arch):
    return {"wid": None, "ks": list(arch["ks"]), "e": list(arch["e"]), "d": list(arch["d"]), "r": [arch["r"]]}


# ---------------------------------------------------------------------------- network builder
def test_built_subnets_match_analytic_params_and_output_shape():
    for arch in [{**BASE, "r": 128}, SPACE.format(SPACE.sample(1, seed=3)[0])]:
        net = SPACE.build_network(arch)
        assert not net.training
        weights = sum(m.weight.numel() for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
        assert weights == SPACE.params(arch)  # conv/linear weights exactly; BN and biases come on top
        assert sum(p.numel() for p in net.parameters()) > weights
        assert SPACE.input_size(arch) == (3, arch["r"], arch["r"])
        with torch.no_grad():
            out = net(torch.randn(1, *SPACE.input_size(arch)))
        assert out.shape == (1, 1000)


def test_builder_accepts_every_form_and_is_deterministic():
    arch = {**BASE, "r": 128}
    a = SPACE.build_network(arch)
    for form in (SPACE.parse(arch), nas_form(arch), tutorial_form(arch)):
        b = SPACE.build_network(form)
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert SPACE.input_size(SPACE.parse(arch)) == SPACE.input_size(tutorial_form(arch)) == (3, 128, 128)
    with pytest.raises(ValueError, match=r"ks\[0\] = 4"):
        SPACE.build_network({**arch, "ks": [4] * 20})
    with pytest.raises(ValueError, match="out of range"):
        SPACE.build_network(np.full(46, 9))


def test_builder_without_ofa_names_the_extra(monkeypatch):
    ofa_space._supernet.cache_clear()
    monkeypatch.setitem(sys.modules, "ofa.imagenet_classification.elastic_nn.networks", None)
    try:
        with pytest.raises(ImportError, match=r"help-plugin\[ofa\]"):
            SPACE.build_network({**BASE, "r": 128})
    finally:
        ofa_space._supernet.cache_clear()


def test_subnets_are_measured_on_this_cpu():
    m = TorchEagerDevice("ofa", runs=1, passes=2, warmup=0).measure([{**BASE, "r": 128}, {**BASE, "r": 160}])
    assert m.latency_ms.shape == (2,) and np.all(m.latency_ms > 0)


# ---------------------------------------------------------------------------- efficiency predictor
def test_predictor_answers_both_conventions_from_one_cache(est):
    p = HELPEfficiencyPredictor(est)
    arch = SPACE.format(SPACE.sample(1, seed=5)[0])
    expected = float(est.predict_upper([arch], 0.95, selection=True)[0])  # the default: the 95 % bound
    assert p.get_efficiency(nas_form(arch)) == pytest.approx(expected)
    assert p.predict_efficiency(tutorial_form(arch)) == pytest.approx(expected)
    assert p.estimator_calls == 1 and p.hits == 1 and p.queries == 2
    # layers beyond a stage's depth do not exist in the network: same cache entry, no estimator call
    inactive = dict(nas_form(arch), ks=list(arch["ks"]))
    for stage, depth in enumerate(arch["d"]):
        for j in range(depth, 4):
            inactive["ks"][4 * stage + j] = 7 if inactive["ks"][4 * stage + j] != 7 else 3
    assert p.get_efficiency(inactive) == pytest.approx(expected) and p.estimator_calls == 1
    others = [SPACE.format(r) for r in SPACE.sample(5, seed=6)]
    batch = p.predict_batch([nas_form(arch)] + [tutorial_form(a) for a in others])
    np.testing.assert_allclose(batch, est.predict_upper([arch] + others, selection=True), rtol=1e-5)
    assert p.estimator_calls == 2 and p.estimator_archs == 6
    p.clear_cache()
    assert p.cache_info() == {"queries": 0, "hits": 0, "hit_rate": 0.0, "estimator_calls": 0, "estimator_archs": 0,
                              "size": 0}


def test_single_queries_give_the_batched_values(est):
    """A finder's uncached query takes the single-architecture path (the dict read straight into indices, the
    held-out heads in one gather): the same bound and mean as the batched path, to float rounding."""
    archs = [SPACE.format(r) for r in SPACE.sample(300, seed=9)]
    assert est.calibration().has_row_bound
    bound = [HELPEfficiencyPredictor(est).get_efficiency(nas_form(a)) for a in archs]
    np.testing.assert_allclose(bound, est.predict_upper(archs, 0.95, selection=True), rtol=1e-12)
    mean = [HELPEfficiencyPredictor(est, confidence=None).get_efficiency(nas_form(a)) for a in archs]
    np.testing.assert_allclose(mean, est.predict(archs), rtol=1e-12)
    assert [SPACE.parse_row(nas_form(a)) for a in archs] == SPACE.to_indices(archs).tolist()


def test_predictor_cache_is_bounded_and_helps_rule_is_the_mean(est):
    p = HELPEfficiencyPredictor(est, cache_size=3)
    archs = [nas_form(SPACE.format(r)) for r in SPACE.sample(5, seed=7)]
    p.predict_batch(archs)
    assert p.cache_info()["size"] == 3
    p.get_efficiency(archs[0])  # evicted: asked again
    assert p.estimator_calls == 2
    mean = float(est.predict([archs[1]])[0])
    assert HELPEfficiencyPredictor(est, confidence=None).get_efficiency(archs[1]) == pytest.approx(mean)
    assert p.get_efficiency(archs[1]) > HELPEfficiencyPredictor(est, confidence=0.8).get_efficiency(archs[1]) > mean


def test_predictor_rejects_bad_input(est):
    p = HELPEfficiencyPredictor(est)
    with pytest.raises(ValueError, match=r"ks\[3\] = 4"):
        p.get_efficiency({**nas_form({**BASE, "r": 160}), "ks": [3, 5, 7, 4] * 5})
    with pytest.raises(ValueError, match="resolution r = 300"):
        p.predict_efficiency({**BASE, "r": [300]})
    with pytest.raises(ValueError, match="missing"):
        p.get_efficiency({"ks": BASE["ks"], "e": BASE["e"], "image_size": 160})
    with pytest.raises(TypeError, match="got list"):
        p.get_efficiency([3] * 46)
    assert p.cache_info()["size"] == 0
    ok = nas_form({**BASE, "r": 160})
    ms = p.get_efficiency(ok)
    shifted = {**ok, "ks": ok["ks"][:19], "e": ok["ks"][19:] + ok["e"]}  # the same 46 values, in lists of 19 and 21
    with pytest.raises(ValueError, match="ks must be a list of 20 values"):
        p.get_efficiency(shifted)
    # the same values as floats: the same architecture, the same cache entry
    assert p.get_efficiency({**ok, "ks": [float(k) for k in ok["ks"]]}) == ms and p.estimator_calls == 1
    # a cached architecture's values beside an unknown key, or with an image_size that disagrees with r, are not
    # answered from the cache
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['depth'\]"):
        p.get_efficiency({**ok, "depth": 3})
    with pytest.raises(ValueError, match=r"r = \[224\] and image_size = 160 disagree"):
        p.get_efficiency({**ok, "r": [224]})
    assert p.get_efficiency({**ok, "r": [160]}) == ms and p.estimator_calls == 1  # both, agreeing
    assert p.get_efficiency(tutorial_form({**BASE, "r": 160})) == ms and p.estimator_calls == 1
    with pytest.raises(ValueError, match="'ofa' space; got HELPEstimator for space 'fbnet'"):
        HELPEfficiencyPredictor(HELPEstimator.pretrained("fbnet"))
    with pytest.raises(NotFittedError):
        HELPEfficiencyPredictor(HELPEstimator.pretrained("ofa"))
    with pytest.raises(ValueError, match="confidence must be in"):
        HELPEfficiencyPredictor(est, confidence=0.0)


# ---------------------------------------------------------------------------- OFA's finders
@pytest.mark.parametrize("finder", ["nas", "tutorial"])
@pytest.mark.parametrize("batched", [True, False])
def test_ofa_finders_return_an_arch_under_the_limit(est, finder, batched):
    r = search(est, 22.0, finder=finder, population_size=10, max_time_budget=3, batched=batched, seed=0)
    assert r.predicted_ms < r.efficiency_ms <= 22.0 and r.confidence == 0.95
    assert r.predicted_ms == pytest.approx(float(est.predict([r.arch])[0]))
    assert r.efficiency_ms == pytest.approx(float(est.predict_upper([r.arch], selection=True)[0]))
    assert SPACE.canonical(r.arch) and r.macs == SPACE.flops(r.arch)
    assert r.accuracy == pytest.approx(np.log10(r.macs), rel=1e-6)  # the default FLOPs proxy
    assert r.predictor["queries"] >= 10 * 4 and r.predictor["estimator_calls"] >= 1
    if finder == "tutorial":
        assert r.arch["r"] in (160, 176, 192, 208, 224)  # ofa.tutorial's ArchManager resolutions


def test_batching_cuts_estimator_calls_and_keeps_spares(est):
    plain = search(est, 22.0, finder="nas", population_size=20, max_time_budget=5, batched=False, seed=1)
    batched = search(est, 22.0, finder="nas", population_size=20, max_time_budget=5, batched=True, seed=1)
    assert batched.predictor["estimator_calls"] * 3 < plain.predictor["estimator_calls"]
    f = BatchedEvolutionFinder(HELPEfficiencyPredictor(est), accuracy_predictor(), batch_size=16)
    parent = nas_form({**BASE, "r": 160})
    first, second = f.mutate_sample(parent, 1e9), f.mutate_sample(parent, 1e9)
    assert f.predict_batch_calls == 1 and first[0] is not second[0]  # the second came from the spares
    f = BatchedEvolutionFinder(HELPEfficiencyPredictor(est), accuracy_predictor(), batch_size=16, max_draws=40)
    with pytest.raises(NoFeasibleArchitecture, match=r"none of 48 candidates drawn meets the efficiency constraint "
                                                     r"0.1: the lowest drawn is \d+\.\d{3}$"):
        f.random_valid_sample(0.1)  # OFA's own loop would never return


def test_batched_finders_check_their_settings(est):
    p, acc = HELPEfficiencyPredictor(est), accuracy_predictor()
    with pytest.raises(ValueError, match="unknown constraint_type 'ms'"):
        BatchedTutorialEvolutionFinder("ms", 20, p, acc)
    with pytest.raises(ValueError, match=r"efficiency_constraint 5 is outside \[15, 60\]"):
        BatchedTutorialEvolutionFinder("note10", 5, p, acc)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        BatchedEvolutionFinder(p, acc, batch_size=0)
    with pytest.raises(TypeError, match="predict_batch"):
        BatchedEvolutionFinder(object(), acc)
    with pytest.raises(ValueError, match="unknown finder 'random'"):
        search(est, 20.0, finder="random")


# ---------------------------------------------------------------------------- accuracy
def test_flops_proxy_serves_both_finders():
    acc = accuracy_predictor()
    assert isinstance(acc, FLOPsAccuracyProxy) and "proxy" in acc.name
    small, big = {**BASE, "r": 128}, {**BASE, "r": 224}
    scores = acc.predict_acc([nas_form(small), nas_form(big)])
    assert scores.shape == (2,) and scores[1] > scores[0]
    assert acc.predict_accuracy([tutorial_form(small)]).shape == (1, 1)
    assert acc.arch_encoder.image_size_list == list(ofa_space.RESOLUTIONS)


def test_ofa_accuracy_predictor_checkpoints_load_safely(tmp_path, caplog):
    from ofa.nas.accuracy_predictor import AccuracyPredictor, MobileNetArchEncoder
    from ofa.tutorial.accuracy_predictor import (
        AccuracyPredictor as TutorialAccuracyPredictor,
    )

    archs = [{**BASE, "r": r} for r in (128, 176, 224)]
    torch.manual_seed(0)
    tutorial = TutorialAccuracyPredictor(pretrained=False, device="cpu")
    torch.save(tutorial.model.state_dict(), tmp_path / "acc_predictor.pth")
    loaded = accuracy_predictor(tmp_path / "acc_predictor.pth")
    assert isinstance(loaded, OFAAccuracyPredictor) and "ofa.tutorial" in loaded.name
    np.testing.assert_allclose(loaded.predict_acc([nas_form(a) for a in archs]).numpy(),
                               tutorial.predict_accuracy([tutorial_form(a) for a in archs]).numpy()[:, 0], rtol=1e-6)

    nas = AccuracyPredictor(MobileNetArchEncoder(image_size_list=list(ofa_space.RESOLUTIONS)), device="cpu")
    torch.save({"state_dict": nas.state_dict()}, tmp_path / "nas.pth")
    loaded = accuracy_predictor(tmp_path / "nas.pth")
    assert "ofa.nas" in loaded.name
    with torch.no_grad():
        np.testing.assert_allclose(loaded.predict_accuracy([tutorial_form(a) for a in archs]).numpy()[:, 0],
                                   nas.predict_acc([nas_form(a) for a in archs]).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="encodes 25 resolutions"):
        OFAAccuracyPredictor(tmp_path / "nas.pth", image_size_list=[160, 224])

    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="neither OFA accuracy-predictor format"):
        accuracy_predictor(tmp_path / "other.pth")
    assert isinstance(accuracy_predictor(tmp_path / "missing.pth"), FLOPsAccuracyProxy)
    assert "not found" in caplog.text


# ---------------------------------------------------------------------------- timing the winner
def test_search_and_measure_tightens_the_target_after_a_miss(est):
    small = {"finder": "nas", "population_size": 10, "max_time_budget": 2, "seed": 0, "confidence": None}

    def slow_device(archs):  # 10 % slower than predicted
        return 1.1 * est.predict(archs)

    m = search_and_measure(est, slow_device, 22.0, rounds=3, **small)
    first, second = m.rounds[0], m.rounds[1]
    assert first["target_ms"] == 22.0 and first["measured_ms"] > 22.0
    assert second["target_ms"] == pytest.approx(first["predicted_ms"] * 22.0 / first["measured_ms"])
    assert m.met and len(m.rounds) == 2 and m.measured_ms <= 22.0
    assert m.result.arch == second["arch"] and m.measured_ms == pytest.approx(1.1 * second["predicted_ms"])

    m = search_and_measure(est, lambda a: 2 * est.predict(a), 22.0, rounds=1, **small)
    assert not m.met and len(m.rounds) == 1 and m.measured_ms > 22.0
    m = search_and_measure(est, lambda a: 2 * est.predict(a), 22.0, rounds=3, **small)
    assert m.met and len(m.rounds) == 2 and m.rounds[1]["target_ms"] < 11.5  # a device twice as slow: half the target
    m = search_and_measure(est, lambda a: 0.9 * est.predict(a), 22.0, **small)
    assert m.met and len(m.rounds) == 1
    with pytest.raises(ValueError, match=r"measure\(...\)"):
        search_and_measure(est, lambda a: [float("nan")], 22.0, **small)
    with pytest.raises(ValueError, match="rounds must be a positive int"):
        search_and_measure(est, slow_device, 22.0, rounds=0)
    # the default: the finder searched under the 95 % selection-aware bound, the mean prediction well under it
    m = search_and_measure(est, est.predict, 22.0, **{**small, "confidence": 0.95})
    assert m.met and m.rounds[0]["predicted_ms"] < m.rounds[0]["bound_ms"] <= 22.0 and m.result.confidence == 0.95


def test_search_and_measure_with_anchors_tells_a_slow_session_from_a_miss(est):
    """The session that first times the winner runs 1.5x slow (a shared machine). Alone, its measurement is the
    verdict: a miss. Timed beside the reference archs and re-measured in 3 fresh sessions, the slow session shows in
    the anchors and the winner's steady latency is the verdict: met."""
    small = {"finder": "nas", "population_size": 10, "max_time_budget": 2, "seed": 0}
    refs = est.space.to_indices(est.reference_archs)

    def shared_machine():
        timed = []

        def measure(archs):  # exact, but 1.5x slow in the first session that times more than the anchors
            slow = 1.5 if len(archs) != len(refs) and not any(timed) else 1.0
            timed.append(len(archs) != len(refs))
            return slow * est.predict(archs)
        return measure

    alone = search_and_measure(est, shared_machine(), 22.0, rounds=1, **small)
    predicted = alone.rounds[0]["predicted_ms"]
    assert not alone.met and alone.measured_ms == pytest.approx(1.5 * predicted) and 1.5 * predicted > 22.0
    steady = search_and_measure(est, shared_machine(), 22.0, rounds=1, anchors=(refs, est.predict(refs)),
                                final_sessions=3, **small)
    assert steady.rounds[0]["measured_ms"] == pytest.approx(1.5 * predicted)  # the same winner, the same slow session
    assert steady.met and steady.measured_ms == pytest.approx(predicted)
    # the anchors once, then with the winner's timing and each of 3 re-measurements: the typical speed counts every
    # session so far, so the steady ones after the slow one are not replaced
    assert alone.measurements == 1 and steady.measurements == len(refs) + 4 * (1 + len(refs))
    assert np.isnan(alone.rounds[0]["session_speed"]) and steady.rounds[0]["session_speed"] == pytest.approx(1.5)
