"""Calibrated latency bounds and the latency constraint: the arithmetic, the shipped constants, coverage and
adversarial picks on HELP's real test devices, and the one default (95 %, selection-aware) of every adapter."""
import inspect
import json

import numpy as np
import pytest

from help_plugin import HELPEstimator, get_split
from help_plugin.evaluation.constraints import (
    GOAL_BANDS,
    WORST_ADAPTATION_GOAL,
    Adaptation,
    adversarial_picks,
    coverage,
    exchangeable_reference,
    objective_values,
    simulate_adaptation,
    smallest_multiplier,
)
from help_plugin.predictors.calibration import Calibration, HeldOut, MetaCalibration, t_multiplier
from help_plugin.predictors.help import PRETRAINED_DIR
from help_plugin.search import LatencyConstraint, VerifiedSearch, evolutionary_search

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ the arithmetic
def test_the_exchangeable_reference_is_what_split_conformal_reaches():
    """Split conformal simulated on exchangeable scores (any continuous law: normal here), its coverage on one
    adaptation exact (the normal cdf at the bound), against the reference's Beta law and band probability."""
    from scipy.stats import norm

    rng = np.random.default_rng(1)
    n, seeds, devices = 20, 5, 10
    scores = np.sort(rng.standard_normal((40_000, n)), axis=1)
    for ref in exchangeable_reference(n, seeds, devices, draws=50_000):
        cov = norm.cdf(scores[:, ref.k - 1])  # the bound: the k-th smallest score
        assert cov.mean() == pytest.approx(ref.mean, abs=0.002) and cov.std() == pytest.approx(ref.sd, abs=0.002)
        assert np.mean(cov >= WORST_ADAPTATION_GOAL) == pytest.approx(ref.p_adaptation_at_worst_goal, abs=0.01)
        lo, hi = GOAL_BANDS[ref.confidence]
        means = cov.reshape(-1, seeds).mean(axis=1)
        assert np.mean((means >= lo) & (means <= hi)) == pytest.approx(ref.p_device_in_band, abs=0.02)
        assert ref.p_all_devices_in_band == pytest.approx(ref.p_device_in_band ** devices)
    with pytest.raises(ValueError, match="10 measurements give no finite split-conformal bound at 0.95"):
        exchangeable_reference(10, seeds, devices)


def test_calibration_follows_its_formulas():
    """Three held-out models of 4 measurements: residuals, spread-normalised scale and bounds by hand."""
    y = np.array([10.0, 20.0, 30.0, 40.0])
    fold = {0: np.array([11.0, 20.0, 30.0, 40.0]), 1: np.array([10.0, 18.0, 30.0, 44.0]),
            2: np.array([10.0, 20.0, 33.0, 40.0])}  # model k left out rows[k]
    rows = [np.array([0]), np.array([1, 3]), np.array([2])]
    queries = {"a": (12.0, [12.0, 13.0, 14.0])}

    def predict(idx):
        if len(idx) == 4:
            return y, np.stack([fold[k] for k in range(3)])
        return np.array([queries["a"][0]]), np.array(queries["a"][1])[:, None]

    cal = Calibration(HeldOut(rows, predict), np.zeros((4, 1)), y, None)
    own = np.log([11.0, 18.0, 44.0, 33.0])  # rows in held-out order: 0, 1, 3, 2
    np.testing.assert_allclose(cal.residuals, np.log(y[[0, 1, 3, 2]]) - own)
    fold_log = np.log(np.stack([fold[k] for k in range(3)]))
    spread = fold_log[:, [0, 1, 3, 2]].std(axis=0)
    l_fit = spread / np.median(spread)
    np.testing.assert_allclose(cal.scores, cal.residuals / l_fit)  # the measurement's residual in units of l(x_i)
    assert cal.scale == pytest.approx(np.mean(np.abs(cal.scores)))
    pred, lower, upper = cal.bounds(np.zeros((1, 1)), 0.9)
    width = cal.scale * np.log([12.0, 13.0, 14.0]).std() / np.median(spread)
    c = t_multiplier(0.9, 4)
    assert pred[0] == 12.0 and upper[0] == pytest.approx(12.0 * np.exp(c * width))
    assert lower[0] == pytest.approx(12.0 * np.exp(-c * width))
    with pytest.raises(ValueError, match="at least 3 measurements that can be left out"):
        Calibration(HeldOut(rows[:1], predict), np.zeros((4, 1)), y, None)
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\) \(e.g. 0.95\), got 1.2"):
        cal.multiplier(1.2)


def test_meta_calibration_interpolates_in_normal_quantiles():
    mc = MetaCalibration([0.5, 0.9, 0.95, 0.99], [0.0, 1.3, 2.0, 4.0], [None, 1.5, 3.0, None], 20)
    assert mc.multiplier(0.9) == 1.3 and mc.multiplier(0.95, selection=True) == 3.0
    z = [-0.0, 1.2815515655446004, 1.6448536269514722, 2.3263478740408408]
    zq = 1.4395314709384563  # z(0.925)
    assert mc.multiplier(0.925) == pytest.approx(1.3 + 0.7 * (zq - z[1]) / (z[2] - z[1]))
    assert mc.multiplier(0.995) > 4.0 and mc.multiplier(0.3) < 0.0  # extrapolated from the end segments
    # the selection-aware multiplier never falls below the marginal one (here past the last learned point)
    assert mc.multiplier(0.99, selection=True) == pytest.approx(max(4.0, 3.0 + 1.5 * (z[3] - z[2]) / (z[2] - z[1])))
    assert MetaCalibration.from_dict(json.loads(json.dumps(mc.to_dict()))) == mc
    with pytest.raises(ValueError, match=">= 2 confidences"):
        MetaCalibration([0.9], [1.0], [None], 20)
    from scipy.stats import t

    assert t_multiplier(0.95, 20) == pytest.approx(t.ppf(0.95, 19) * np.sqrt(1 + 1 / 20) * np.sqrt(np.pi / 2))


def test_adversarial_picks_and_multipliers_on_a_toy_device():
    true = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    pred = np.log([1.0, 2.0, 2.5, 4.0, 5.0, 6.0])  # row 2 is predicted fast: the pick a search would make
    a = Adaptation("toy", "d", 0, np.array([0]), true, pred, np.full(6, 0.1))
    macs = np.arange(6.0)
    met, ratio, found = adversarial_picks(a, np.stack([pred, pred + 0.3]), macs, percentiles=(40,))
    limit = np.percentile(true, 40)  # 3.0: rows 1 and 2 are truly feasible; the mean picks row 2 (3.0 <= 3.0)
    assert limit == 3.0 and found.all() and met.all() and ratio[0, 0] == 1.0 and ratio[1, 0] == 0.5
    met, _, _ = adversarial_picks(a, pred, macs, percentiles=(30,))  # limit 2.5: row 2 (3.0 ms) breaks it
    assert not met[0, 0]
    ties = Adaptation("toy", "d", 0, np.array([0]), np.array([1.0, 3.3998600000000003, 3.399860000000001, 5.0]),
                      np.log([1.0, 3.0, 3.0, 5.0]), np.full(4, 0.1))  # one recorded value, two float roundings
    met, _, found = adversarial_picks(ties, ties.log_pred, np.arange(4.0), percentiles=(34,))
    assert found.all() and met.all()  # the pick (row 2) has the limit's latency: it meets it
    assert coverage(a, pred + 0.1 * 3) == pytest.approx(1.0) and coverage(a, pred) == pytest.approx(0.8)
    grid = np.arange(0.0, 3.0, 0.5)
    assert smallest_multiplier([np.array([0.0, 0.5, 0.9, 0.96, 0.94, 0.97])], grid, 0.95) == 2.5
    assert smallest_multiplier([np.full(6, 0.5)], grid, 0.95) is None


# ------------------------------------------------------------------ shipped constants
def test_shipped_models_and_models_of_their_settings_carry_the_constants_others_use_the_t_rule(fbnet):
    shipped = json.loads((PRETRAINED_DIR / "calibration.json").read_text())["help+"]
    assert set(shipped) == {"nasbench201", "fbnet", "ofa"}
    for space in shipped:
        learner = HELPEstimator.pretrained(space).meta_model
        assert learner.calibration == MetaCalibration.from_dict(shipped[space])
        assert learner.calibration.info["spaces"] == [space]
    assert HELPEstimator.pretrained("hat").meta_model.calibration is None  # not among the derivation's spaces
    c = {space: MetaCalibration.from_dict(shipped[space]) for space in shipped}
    assert c["nasbench201"].marginal == c["fbnet"].marginal == c["ofa"].marginal  # shared over the spaces
    # the selection-aware multiplier is the space's own (NAS-Bench-201's 15,625 cells let a search exploit more)
    assert c["nasbench201"].multiplier(0.95, selection=True) > c["fbnet"].multiplier(0.95, selection=True)
    assert 0 < c["ofa"].multiplier(0.9) < c["ofa"].multiplier(0.95) < c["ofa"].multiplier(0.95, selection=True)
    lat = fbnet.latency("eyeriss")
    rows = np.concatenate([fbnet.reference_rows, np.arange(10)])
    pool = get_split("fbnet").train[:4]
    est = HELPEstimator.meta_train("fbnet", fbnet, pool, lut_ridge=1e-2)
    est.fit(fbnet.archs[rows], lat[rows])
    assert est.meta_model.calibration is None  # other settings: the constants were not derived for them
    assert est.calibration().multiplier(0.95, selection=True) == est.calibration().multiplier(0.95) == pytest.approx(
        t_multiplier(0.95, 20))
    with_mlps = HELPEstimator.meta_train("fbnet", fbnet, pool, groups=("flops", "cost3", "detail", "luts", "mlp"),
                                         steps=30, ensemble=1, hidden=16)
    assert with_mlps.meta_model.calibration is None  # MLP settings count where the groups use the MLPs
    # the shipped settings on a pool of one's own, any seed, MLP settings its groups leave unused: the constants
    # belong to the method, not to one pool
    own = HELPEstimator("fbnet", seed=3, options={"steps": 30}).meta_fit(fbnet, pool)
    assert own.meta_model.calibration == c["fbnet"]
    own.fit(fbnet.archs[rows], lat[rows])
    assert own.calibration().multiplier(0.95, selection=True) == pytest.approx(
        c["fbnet"].for_shots("random").multiplier(0.95, selection=True))


def test_help_plus_leaves_out_any_measurement_and_help_only_shots(fbnet):
    lat = fbnet.latency("eyeriss")
    est = HELPEstimator.pretrained("fbnet").adapt(lat[fbnet.reference_rows], fbnet.archs[:10], lat[:10])
    held = est._held_out()[0]
    assert [list(r) for r in held.rows] == [[i] for i in range(20)]
    full, folds = held.predict(fbnet.archs[100:105])
    np.testing.assert_allclose(full, est.predict(fbnet.archs[100:105]))
    assert folds.shape == (20, 5) and not np.allclose(folds, full)
    gradient = HELPEstimator.meta_train("fbnet", fbnet, get_split("fbnet").train[:4], method="help", steps=10,
                                        validate_every=10, query=20)
    gradient.adapt(lat[fbnet.reference_rows], fbnet.archs[:10], lat[:10])
    assert [list(r) for r in gradient._held_out()[0].rows] == [[10 + i] for i in range(10)]  # references stay
    first = est.calibration()
    assert est.calibration() is first  # cached ...
    est.partial_fit(fbnet.archs[10:12], lat[10:12])
    assert est.calibration() is not first and len(est.calibration().residuals) == 22  # ... until the next fit


# ------------------------------------------------------------------ HELP's test devices
@pytest.mark.parametrize("space, device", [("nasbench201", "pixel2"), ("fbnet", "fpga")])
def test_bounds_cover_and_picks_meet_the_limit_on_unseen_devices(space, device, request):
    """20 measurements, 5 seeds: the 95 % bound covers 91-99 % of the other recorded archs (every seed >= 80 %),
    HELP's rule (the mean) about half; the largest-MACs / -params arch whose selection-aware bound is under a
    limit (10/30/50/70/90th percentile) meets it in at least 90 % of picks, more often than under the mean."""
    data = request.getfixturevalue({"nasbench201": "nb201", "fbnet": "fbnet"}[space])
    est = HELPEstimator.pretrained(space)
    objectives = objective_values(data)
    cov, cov_mean, met, met_mean = [], [], [], []
    for seed in range(5):
        a = simulate_adaptation(est, data, device, seed)
        c, c_sel = est.calibration().multiplier(0.95), est.calibration().multiplier(0.95, selection=True)
        # the leave-out residuals in the multiplier's unit, as errors() are: their mean absolute value is 1
        assert len(a.residual_scores) == len(a.measured) and np.mean(np.abs(a.residual_scores)) == pytest.approx(1)
        cov.append(coverage(a, a.log_pred + c * a.log_width))
        cov_mean.append(coverage(a, a.log_pred))
        if seed < 3:
            for k in range(objectives.shape[1]):
                met.append(adversarial_picks(a, a.log_pred + c_sel * a.log_width, objectives[:, k])[0])
                met_mean.append(adversarial_picks(a, a.log_pred, objectives[:, k])[0])
    assert 0.91 <= np.mean(cov) <= 0.99 and min(cov) >= 0.8, cov
    assert np.mean(cov_mean) < 0.7, cov_mean
    assert np.mean(met) >= 0.9 and np.mean(met) > np.mean(met_mean), (np.mean(met), np.mean(met_mean))


# ------------------------------------------------------------------ one default everywhere
def _default(fn, name="confidence"):
    return inspect.signature(fn).parameters[name].default


def test_every_adapter_defaults_to_the_calibrated_95_rule():
    """The same keyword with the same default in the library and every adapter; HELP's rule only on request."""
    pytest.importorskip("nni")
    pytest.importorskip("ofa")
    from help_plugin.integrations import hat, metad2a, naslib, nni_nas, ofa_predictor, ofa_search

    from help_plugin.cli import build_parser
    from help_plugin.search.verified import evolution_proposer

    for fn in (evolutionary_search, VerifiedSearch, ofa_predictor.HELPEfficiencyPredictor, ofa_search.search,
               ofa_search.search_and_measure, nni_nas.HELPProfiler, naslib.NASLibLatencyPredictor,
               naslib.constrained_evolution, metad2a.select, hat.LatencyPredictor, hat.install):
        assert _default(fn) == 0.95, fn
    assert LatencyConstraint(10.0).confidence == 0.95 and LatencyConstraint(10.0).rule == "selection"
    assert "confidence" not in inspect.signature(evolution_proposer).parameters  # it gets VerifiedSearch's
    args = build_parser().parse_args(["search", "--latency-ms", "8"])
    assert args.confidence == 0.95 and not args.mean_only
