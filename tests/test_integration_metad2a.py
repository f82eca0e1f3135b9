"""MetaD2A-style selection under a latency limit: selector logic, HELP's rule, and the calibrated bound on real data."""
import numpy as np
import pytest
from help_plugin.integrations.metad2a import (
    HELP_SHORTLIST,
    NoFeasibleArchitecture,
    load_metad2a_candidates,
    select,
)

from help_plugin import HELPEstimator, LatencyEstimator
from help_plugin.predictors import torch_threads
from help_plugin.spaces import get_space

UNSEEN = ("titan_rtx_256", "gold_6226", "pixel2", "eyeriss", "fpga")


class TableEstimator(LatencyEstimator):
    """Predicts fixed ms per architecture row of ``archs``; its bounds are ``mean + std`` (marginal) and
    ``mean + 3 std`` (selection-aware), whatever the confidence."""

    def __init__(self, archs, mean, std):
        self.space = get_space("nasbench201")
        self.keys = [self.space.canonical(a) for a in self.space.to_indices(archs)]
        self.mean, self.std = np.asarray(mean, float), np.asarray(std, float)
        self.n_measurements_ = 0

    def fit(self, archs, latencies_ms):
        return self

    def _rows(self, archs):
        return [self.keys.index(self.space.canonical(r)) for r in self.space.to_indices(archs)]

    def predict(self, archs):
        return self.mean[self._rows(archs)]

    def calibration(self):
        est = self

        class Table:
            def bounds(self, idx, confidence, selection=False):
                rows = est._rows(idx)
                k = 3.0 if selection else 1.0
                return est.mean[rows], est.mean[rows] - k * est.std[rows], est.mean[rows] + k * est.std[rows]

        return Table()


@pytest.fixture(scope="module")
def toy():
    archs = [get_space("nasbench201").format(r) for r in get_space("nasbench201").sample(6, seed=0)]
    #            0     1     2     3     4     5
    mean = [12.0, 9.0, 9.5, 8.0, 9.9, 7.0]
    std = [0.5, 0.2, 1.0, 0.3, 0.05, 0.1]
    score = [80.0, 70.0, 75.0, 60.0, 72.0, 75.0]
    return archs, mean, std, score


def test_picks_the_best_feasible_score(toy):
    archs, mean, std, score = toy
    est = TableEstimator(archs, mean, std)
    s = select(zip(archs, score), est, 10.0, confidence=None)
    assert (s.position, s.arch, s.score) == (2, archs[2], 75.0)  # 0 is infeasible; 2 and 5 tie -> earlier
    assert s.n_feasible == 5 and s.n_candidates == 6 and s.predicted_ms == 9.5 and s.upper_ms == 9.5
    assert s.constraint == "mean prediction (HELP's rule)"


def test_default_compares_the_selection_aware_bound(toy):
    archs, mean, std, score = toy
    est = TableEstimator(archs, mean, std)
    s = select(zip(archs, score), est, 10.0)  # mean + 3 std: 0, 2 (12.5) and 4 (10.05) are out
    assert s.position == 5 and s.upper_ms == pytest.approx(7.3) and s.predicted_ms == 7.0 and s.n_feasible == 3
    assert s.constraint == "95 % selection-aware bound"
    s = select(zip(archs, score), est, 10.0, shortlist=1)
    assert s.position == 1 and s.upper_ms == pytest.approx(9.6)  # the first feasible


def test_shortlist_is_helps_rule(toy):
    archs, mean, std, score = toy
    est = TableEstimator(archs, mean, std)
    assert HELP_SHORTLIST == 3
    s = select(zip(archs, score), est, 10.0, confidence=None, shortlist=3)  # first 3 feasible: 1, 2, 3
    assert s.position == 2
    assert select(zip(archs, score), est, 10.0, confidence=None, shortlist=1).position == 1


def test_no_feasible_candidate_is_a_clear_error(toy):
    archs, mean, std, score = toy
    est = TableEstimator(archs, mean, std)
    with pytest.raises(NoFeasibleArchitecture, match=r"by its 95 % selection-aware bound: the lowest is 7.300 ms "
                                                     r"\(7.000 ms predicted\) for candidate 5"):
        select(zip(archs, score), est, 7.0)
    assert issubclass(NoFeasibleArchitecture, ValueError)


@pytest.mark.parametrize("kwargs, err, msg", [
    ({"candidates": []}, ValueError, "no candidates"),
    ({"candidates": ["|none~0|"]}, TypeError, "pairs"),
    ({"candidates": [("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", float("nan"))]}, ValueError, "nan"),
    ({"candidates": [("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "high")]}, TypeError, "numbers"),
    ({"candidates": [("|bogus~0|+|none~0|none~1|+|none~0|none~1|none~2|", 1.0)]}, ValueError, "bogus"),
    ({"latency_limit_ms": 0.0}, ValueError, "latency limit must be a finite positive number of ms, got 0.0"),
    ({"latency_limit_ms": float("inf")}, ValueError, "latency limit"),
    ({"confidence": 1.5}, ValueError, r"confidence must be in \(0, 1\) \(e.g. 0.95\), got 1.5"),
    ({"shortlist": 0}, ValueError, "shortlist"),
])
def test_bad_arguments(toy, kwargs, err, msg):
    archs, mean, std, score = toy
    args = {"candidates": list(zip(archs, score)), "estimator": TableEstimator(archs, mean, std),
            "latency_limit_ms": 10.0, **kwargs}
    with pytest.raises(err, match=msg):
        select(**args)


# ------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def metad2a(nb201):
    cands, seconds = load_metad2a_candidates()
    row_of = {nb201.space.canonical(r): i for i, r in enumerate(nb201.archs)}
    rows = np.array([row_of[nb201.space.canonical(c.arch)] for c in cands])
    return cands, seconds, rows


def test_candidate_file(nb201, metad2a):
    cands, seconds, rows = metad2a
    assert len(cands) == 500 and len(set(rows)) == 500 and seconds > 0
    scores = np.array([c.score for c in cands])
    assert np.all(np.diff(scores) <= 0)  # MetaD2A's ranking is the file order
    acc = np.array([c.accuracy for c in cands])
    assert 0 < acc.min() and acc.max() < 100


@pytest.mark.parametrize("text, msg", [
    ("", "empty"), ("abc\n", "line 1"), ("1.0\n|a|, 1\n", ":2: expected"), ("1.0\n|a|, x, 2\n", "must be numbers")])
def test_candidate_file_errors(tmp_path, text, msg):
    p = tmp_path / "cands.txt"
    p.write_text(text)
    with pytest.raises(ValueError, match=msg):
        load_metad2a_candidates(p)
    with pytest.raises(FileNotFoundError, match="HELP_DATA_DIR"):
        load_metad2a_candidates(tmp_path / "missing.txt")


def _adapt(nb201, est, device, seed):
    lat = nb201.latency(device)
    pool = np.setdiff1d(np.arange(len(nb201)), nb201.reference_rows)
    few = np.random.default_rng(seed).choice(pool, 10, replace=False)
    with torch_threads(1):
        return est.adapt(lat[nb201.reference_rows], nb201.archs[few], lat[few])


def test_real_devices_default_bound_and_helps_rule(nb201, metad2a):
    """On HELP's unseen devices (20 measurements, 4 seeds, limits at the 20/50/80th percentile of the candidates'
    latencies): HELP's rule is exactly its official loop; the default (the 95 % selection-aware bound) picks
    candidates whose true latency meets the limit at least 90 % of the time, and more often than HELP's rule."""
    cands, _, rows = metad2a
    archs = [c.arch for c in cands]
    acc = np.array([c.accuracy for c in cands])
    est = HELPEstimator.pretrained("nasbench201")
    met = {None: 0, 0.95: 0}
    total = 0
    for device in UNSEEN:
        lat = nb201.latency(device)[rows]
        for seed in range(4):
            _adapt(nb201, est, device, seed)
            mean, bound = est.predict(archs), est.predict_upper(archs, 0.95, selection=True)
            for q in (0.2, 0.5, 0.8):
                limit = float(np.quantile(lat, q))
                total += 1
                for confidence in met:
                    s = select(zip(archs, acc), est, limit, confidence=confidence, shortlist=HELP_SHORTLIST)
                    compared = mean if confidence is None else bound
                    assert compared[s.position] <= limit and s.upper_ms == pytest.approx(compared[s.position])
                    if confidence is None:  # HELP's official loop: first 3 with prediction <= const, most accurate
                        first3 = [i for i in range(len(archs)) if mean[i] <= limit][:3]
                        assert s.position == max(first3, key=lambda i: acc[i])
                    met[confidence] += lat[s.position] <= limit
    assert met[0.95] > met[None] and met[0.95] / total >= 0.9, (met, total)
