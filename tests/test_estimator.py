"""The public HELPEstimator API on real data: shipped models, adaptation, meta-training, persistence."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from help_plugin import HELPEstimator, LatencyEstimator, NotFittedError, get_split
from help_plugin.checkpoint import CheckpointError


def _held_out(data, n_shots=10, seed=0):
    rng = np.random.default_rng(seed)
    rest = rng.permutation(np.setdiff1d(np.arange(len(data)), data.reference_rows))
    return rest[:n_shots], rest[n_shots:n_shots + 2000]


@pytest.mark.parametrize("space, device, bar", [("nasbench201", "gold_6226", 0.95), ("fbnet", "eyeriss", 0.95),
                                                ("ofa", "titan_rtx_64", 0.98)])
def test_pretrained_adapts_to_unseen_device(space, device, bar, request):
    data = request.getfixturevalue({"nasbench201": "nb201", "fbnet": "fbnet", "ofa": "ofa"}[space])
    est = HELPEstimator.pretrained(space)
    assert isinstance(est, LatencyEstimator) and device not in est.meta_model.train_devices + est.meta_model.valid_devices
    refs = est.reference_archs
    assert len(refs) == 10
    np.testing.assert_array_equal(est.space.to_indices(refs), data.archs[data.reference_rows])
    lat = data.latency(device)
    shots, held = _held_out(data)
    est.adapt(reference_latencies_ms=lat[data.reference_rows], archs=[est.space.format(r) for r in data.archs[shots]],
              latencies_ms=lat[shots])
    assert est.n_measurements == 20
    pred = est.predict(data.archs[held])
    assert pred.shape == (len(held),) and pred.dtype == np.float64
    rho = spearmanr(pred, lat[held]).correlation
    assert rho > bar, rho
    # single arch, string form, and the batch path agree
    one = est.space.format(data.archs[held[0]])
    assert est.predict_one(one) == pytest.approx(pred[0], rel=1e-5)


def test_fit_finds_reference_archs_and_equals_adapt(nb201):
    lat = nb201.latency("pixel2")
    shots, held = _held_out(nb201)
    rows = np.concatenate([shots[:5], nb201.reference_rows, shots[5:]])  # any order
    a = HELPEstimator.pretrained("nasbench201").fit(nb201.archs[rows], lat[rows])
    b = HELPEstimator.pretrained("nasbench201").adapt(lat[nb201.reference_rows], nb201.archs[shots[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]],
                                                       lat[shots])
    np.testing.assert_allclose(a.predict(nb201.archs[held[:100]]), b.predict(nb201.archs[held[:100]]), rtol=1e-6)
    with pytest.raises(ValueError, match="needs the 10 reference architectures"):
        HELPEstimator.pretrained("nasbench201").fit(nb201.archs[shots], lat[shots])


def test_predictive_std_and_gradient(nb201):
    lat = nb201.latency("titan_rtx_256")
    shots, held = _held_out(nb201)
    est = HELPEstimator.pretrained("nasbench201").adapt(lat[nb201.reference_rows], nb201.archs[shots], lat[shots])
    mean, std = est.predict(nb201.archs[held[:50]], return_std=True)
    assert (std > 0).all() and np.isfinite(mean).all()
    idx = torch.from_numpy(nb201.archs[held[:4]])
    probs = torch.nn.functional.one_hot(idx, 5).float()
    np.testing.assert_allclose(est.predict_tensor(probs).numpy(), est.predict(idx.numpy()), rtol=1e-3)
    logits = torch.zeros(1, 6, 5, requires_grad=True)
    est.predict_tensor(torch.softmax(logits, -1)).sum().backward()
    assert logits.grad.abs().sum() > 0
    # making conv3x3 likelier everywhere must raise the expected latency
    assert logits.grad[0, :, 3].sum() > logits.grad[0, :, 0].sum()


@pytest.mark.parametrize("method", ["help+", "help"])
def test_meta_train_own_pool_then_save_load(method, fbnet, tmp_path):
    split = get_split("fbnet")
    opts = {"steps": 300} if method == "help+" else {"steps": 60, "validate_every": 30}
    rows = np.concatenate([fbnet.reference_rows, np.arange(0, 5000, 3)])
    est = HELPEstimator.meta_train("fbnet", data=fbnet, train_devices=split.train[:5], valid_devices=split.valid[:1],
                                   arch_rows=rows, method=method, **opts)
    with pytest.raises(NotFittedError):
        est.predict(fbnet.archs[:3])
    lat = fbnet.latency("raspi4")
    held = np.setdiff1d(np.arange(1, 5000, 3), fbnet.reference_rows)[:1000]
    est.adapt(lat[fbnet.reference_rows], fbnet.archs[2:12], lat[2:12])
    pred = est.predict(fbnet.archs[held])
    assert spearmanr(pred, lat[held]).correlation > 0.6
    path = tmp_path / "m.safetensors"
    est.save(path)
    back = HELPEstimator.load(path)
    assert back.method == method and back.is_fitted and back.n_measurements == 20
    np.testing.assert_allclose(back.predict(fbnet.archs[held]), pred, rtol=1e-5)


def test_bad_inputs_raise_clear_errors(nb201, tmp_path):
    est = HELPEstimator.pretrained("nasbench201")
    ref = nb201.latency("gold_6226")[nb201.reference_rows]
    with pytest.raises(ValueError, match="expected 10 reference latencies, got 9"):
        est.adapt(ref[:9])
    with pytest.raises(ValueError, match=r"reference_latencies_ms\[2\] = nan"):
        est.adapt(np.where(np.arange(10) == 2, np.nan, ref))
    with pytest.raises(ValueError, match=r"reference_latencies_ms\[0\] = -1.0"):
        est.adapt(np.where(np.arange(10) == 0, -1.0, ref))
    with pytest.raises(ValueError, match=r"\[4\] = 0.0"):
        est.adapt(np.where(np.arange(10) == 4, 0.0, ref))
    with pytest.raises(ValueError, match=r"inf"):
        est.adapt(ref, nb201.archs[:2], [1.0, np.inf])
    with pytest.raises(ValueError, match="all 10 reference latencies are equal"):
        est.adapt(np.full(10, 3.0))
    with pytest.raises(ValueError, match="archs has 3 entries but latencies_ms has 2"):
        est.adapt(ref, nb201.archs[:3], [1.0, 2.0])
    with pytest.raises(ValueError, match="unknown op 'conv_5x5'"):
        est.adapt(ref, ["|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|"], [1.0])
    with pytest.raises(NotFittedError):
        est.predict(nb201.archs[:2])
    with pytest.raises(TypeError, match="single str"):
        est.adapt(ref).predict("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(ValueError, match="unknown device 'mystery_npu'"):
        HELPEstimator.meta_train("nasbench201", nb201, ["mystery_npu"], steps=1)
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        HELPEstimator.meta_train("nasbench201", nb201, ["pixel3"], method="magic")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        HELPEstimator.load(junk)
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not a help-plugin checkpoint"):
        HELPEstimator.load(tmp_path / "foreign.safetensors")


def test_partial_fit_adds_measurements_and_survives_save_load(nb201, tmp_path):
    lat = nb201.latency("raspi4")
    refs = lat[nb201.reference_rows]
    est = HELPEstimator.pretrained("nasbench201").adapt(refs, nb201.archs[:10], lat[:10])
    est.save(tmp_path / "adapted.safetensors")
    loaded = HELPEstimator.load(tmp_path / "adapted.safetensors")
    np.testing.assert_array_equal(loaded.shot_indices_, nb201.archs[:10])
    loaded.partial_fit(nb201.archs[10:30], lat[10:30])
    all_at_once = HELPEstimator.pretrained("nasbench201").adapt(refs, nb201.archs[:30], lat[:30])
    assert loaded.n_measurements == all_at_once.n_measurements == len(refs) + 30
    np.testing.assert_allclose(loaded.predict(nb201.archs[100:200]), all_at_once.predict(nb201.archs[100:200]))
    with pytest.raises(ValueError, match="nan"):
        loaded.partial_fit(nb201.archs[30:32], [1.0, float("nan")])
    loaded.shot_latencies_ms_ = None  # as loaded from a checkpoint that predates partial_fit
    with pytest.raises(ValueError, match="does not keep the measurements it was adapted with"):
        loaded.partial_fit(nb201.archs[30:32], lat[30:32])
