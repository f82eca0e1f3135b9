import numpy as np
import pytest

from help_plugin.predictors.cache import PredictionCache
from help_plugin.spaces import get_space


def test_cache_batches_misses_and_shares_entries_of_equal_networks():
    ofa = get_space("ofa")
    calls = []
    cache = PredictionCache(ofa, lambda idx: calls.append(len(idx)) or ofa.cost_features(idx)[:, 0] / 1e6, size=10)
    archs = ofa.sample(4, seed=0)
    same_net = archs[:1].copy()
    inactive = ~ofa.active_mask(same_net)[0]
    same_net[0, :20][inactive] = (same_net[0, :20][inactive] + 1) % 3  # layers beyond the depth: same network
    out = cache(np.concatenate([archs, same_net, archs[:2]]))
    assert calls == [4] and out[4] == out[0] and out[5] == out[0] and cache.queries == 7 and len(cache) == 4
    np.testing.assert_allclose(out[:4], ofa.cost_features(archs)[:, 0] / 1e6)
    np.testing.assert_array_equal(cache(archs[::-1]), out[:4][::-1])
    assert calls == [4] and cache.hits == 4
    singles = []  # a search's single queries share the batched entries (and the other way round)
    one = lambda row: singles.append(list(row)) or float(ofa.cost_features(np.asarray(row)[None])[0, 0] / 1e6)
    assert cache.one(ofa.parse_row(ofa.format(same_net[0])), one) == out[0] and not singles
    fresh = ofa.sample(1, seed=9)[0]
    first = cache.one(fresh.tolist(), one)
    assert singles == [ofa.canonical_row(fresh)] and cache(fresh[None])[0] == first and calls == [4]


def test_cache_rejects_non_finite_predictions_naming_the_arch():
    nb201 = get_space("nasbench201")
    cache = PredictionCache(nb201, lambda idx: np.full(len(idx), np.nan))
    with pytest.raises(ValueError, match=r"predicted nan ms for \|"):
        cache(nb201.sample(2, seed=0))
    assert len(cache) == 0
    with pytest.raises(ValueError, match="cache size must be a positive int, got 0"):
        PredictionCache(nb201, np.ones, size=0)
