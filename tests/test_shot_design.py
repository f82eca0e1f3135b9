"""Choosing which architectures to measure: the greedy I-optimal design, help+'s select_shots and its use as the
default of adapt_on_device, export and the demo."""
import numpy as np
import pytest
from scipy.stats import spearmanr

from help_plugin import HELPEstimator, get_split
from help_plugin.predictors import torch_threads
from help_plugin.predictors.shot_design import candidate_indices, choose_shots, greedy_design


def _mean_variance(z_all, z_measured, strength=1.0):
    """Mean predictive variance (over ``z_all``) of a ridge fit on ``z_measured``, computed directly."""
    inv = np.linalg.inv(z_measured.T @ z_measured + strength * np.eye(z_all.shape[1]))
    return np.einsum("ip,pq,iq->i", z_all, inv, z_all).mean()


def test_each_greedy_step_adds_the_candidate_that_most_reduces_the_mean_variance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)) * [1.0, 3.0, 0.1, 10.0] + 5.0
    measured = x[:3]
    chosen = greedy_design(x, measured, 5)
    z = (x - x.mean(0)) / x.std(0)
    so_far: list[int] = []
    for i in chosen:  # brute force: the mean variance after adding each candidate not chosen yet
        variances = {j: _mean_variance(z, z[[0, 1, 2] + so_far + [j]]) for j in range(len(x)) if j not in so_far}
        assert i == min(variances, key=variances.get)
        so_far.append(int(i))
    assert len(set(chosen)) == 5


def test_greedy_design_checks_its_count_and_respects_available():
    x = np.random.default_rng(1).normal(size=(10, 3))
    available = np.zeros(10, bool)
    available[[2, 5, 7]] = True
    assert sorted(greedy_design(x, x[:0], 3, available)) == [2, 5, 7]
    with pytest.raises(ValueError, match="cannot choose 4 of 3 available"):
        greedy_design(x, x[:0], 4, available)


def test_select_shots_never_picks_a_reference_or_a_repeat():
    est = HELPEstimator.pretrained("nasbench201")
    refs = est.reference_indices
    candidates = np.concatenate([refs, candidate_indices(est.space), refs])
    pos = est.select_shots(candidates, 40)
    assert len(set(pos)) == 40
    keys = {est.space.canonical(r) for r in candidates[pos]}
    assert len(keys) == 40 and not keys & {est.space.canonical(r) for r in refs}
    assert np.array_equal(pos, est.select_shots(candidates, 40))  # deterministic, needs no measurement
    with pytest.raises(ValueError, match="only 0 of the 10 candidates are distinct and not reference"):
        est.select_shots(refs, 1)
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        est.select_shots(candidates, -1)


def test_methods_without_design_features_draw_shots_at_random(nb201):
    with torch_threads(1):
        est = HELPEstimator.meta_train("nasbench201", nb201, split="nasbench201", method="maml", steps=2)
    assert not est.selects_shots
    with pytest.raises(ValueError, match="cannot choose its shots"):
        est.select_shots(candidate_indices(est.space), 3)
    shots = choose_shots(est, 12, seed=3)
    keys = {est.space.canonical(r) for r in shots}
    assert len(keys) == 12 and not keys & {est.space.canonical(r) for r in est.reference_indices}
    with pytest.raises(ValueError, match="unknown shot selection 'best'"):
        choose_shots(est, 3, selection="best")


@pytest.mark.parametrize("split", ["nasbench201", "fbnet"])
def test_designed_shots_teach_more_than_random_ones_on_held_out_pool_devices(split, request):
    """Leave-one-device-out on the pool (never a test device): with 10 designed shots help+ ranks the held-out
    devices' other archs better on average than with 10 random ones (3 draws)."""
    data = request.getfixturevalue({"nasbench201": "nb201", "fbnet": "fbnet"}[split])
    pool = get_split(split).train
    refs = data.reference_rows
    rest = np.random.default_rng(0).permutation(np.setdiff1d(np.arange(len(data)), refs))
    meta_rows, eval_rows = np.concatenate([refs, rest[:len(rest) // 2]]), rest[len(rest) // 2:]
    designed, drawn = [], []
    for device in pool[:4]:
        with torch_threads(1):
            est = HELPEstimator.meta_train(split, data, [d for d in pool if d != device], arch_rows=meta_rows)
        lat = data.latency(device)
        measured = eval_rows[np.isfinite(lat[eval_rows])]

        def rho(pick):
            scored = np.setdiff1d(measured, pick)
            pred = est.adapt(lat[refs], data.archs[pick], lat[pick]).predict(data.archs[scored])
            return spearmanr(pred, lat[scored])[0]

        designed.append(rho(measured[est.select_shots(data.archs[measured], 10)]))
        drawn.append(np.mean([rho(np.random.default_rng(s).choice(measured, 10, replace=False)) for s in range(3)]))
    assert np.mean(designed) > np.mean(drawn)


def test_adapt_on_device_measures_the_designed_shots(nb201):
    from help_plugin.measure import CallableDevice
    from help_plugin.measure.adapt import adapt_on_device

    lat = nb201.latency("fpga")
    row_of = {nb201.space.canonical(r): i for i, r in enumerate(nb201.archs)}
    device = CallableDevice("nasbench201", lambda arch: float(lat[row_of[arch]]), timeout_s=None)
    adapted = adapt_on_device("nasbench201", device, shots=6)
    assert np.array_equal(adapted.shot_indices_, choose_shots(HELPEstimator.pretrained("nasbench201"), 6))
    np.testing.assert_allclose(adapted.shot_latencies_ms_, lat[[row_of[nb201.space.canonical(r)]
                                                               for r in adapted.shot_indices_]])
    drawn = adapt_on_device("nasbench201", device, shots=6, shot_selection="random")
    assert not np.array_equal(drawn.shot_indices_, adapted.shot_indices_)


def test_bounds_of_designed_shots_use_their_own_meta_calibration(nb201, tmp_path):
    """Designed shots sit where the head learns most, so the shipped model carries larger multipliers for them
    (benchmarks/meta_calibration.py --shot-selection design); an estimator knows which of its shots it chose."""
    est = HELPEstimator.pretrained("nasbench201")
    lat = nb201.latency("pixel2")
    refs = nb201.reference_rows
    designed = est.select_shots(nb201.archs, 10)
    est.adapt(lat[refs], nb201.archs[designed], lat[designed])
    assert est.shot_selection_ == "design"
    constants = est.meta_model.calibration
    assert constants.designed is not None
    assert est.calibration().multiplier(0.95, True) == constants.designed.multiplier(0.95, True)
    assert constants.designed.multiplier(0.95, True) > constants.multiplier(0.95, True)
    upper = est.predict_upper(nb201.archs[:50])
    est.save(tmp_path / "designed.safetensors")
    again = HELPEstimator.load(tmp_path / "designed.safetensors")
    assert again.shot_selection_ == "design"
    np.testing.assert_allclose(again.predict_upper(nb201.archs[:50]), upper)

    drawn = np.random.default_rng(0).choice(np.setdiff1d(np.arange(len(nb201)), refs), 10, replace=False)
    est.adapt(lat[refs], nb201.archs[drawn], lat[drawn])
    assert est.shot_selection_ == "random"
    assert est.calibration().multiplier(0.95, True) == constants.multiplier(0.95, True)
