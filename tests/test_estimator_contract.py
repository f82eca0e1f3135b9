"""The LatencyEstimator contract, checked on every estimator (in the spirit of scikit-learn's ``check_estimator``).

Every estimator: explicit constructor parameters stored as given, ``get_params``/``set_params``, ``sklearn.base.clone``
gives an unfitted copy that, fitted on the same measurements, predicts exactly the same; ``predict`` returns float64 ms
``[n]``; ``NotFittedError`` before ``fit``; a safetensors round trip keeps parameters, space settings and predictions;
bad input raises an error that names it; calibrated bounds (``predict_upper``, ``predict_interval``) are ordered,
positive and finite. Meta-trained estimators are meta-trained small, once per module.
"""
import json
from pathlib import Path

import numpy as np
import pytest

sklearn_base = pytest.importorskip("sklearn.base")

from help_plugin import HELPEstimator, NotFittedError, get_split  # noqa: E402
from help_plugin.checkpoint import CheckpointError  # noqa: E402
from help_plugin.predictors import ESTIMATOR_KINDS, LatencyEstimator, torch_threads  # noqa: E402
from help_plugin.predictors.baselines import (BRPGCNEstimator, ClosestDeviceEstimator, FLOPsEstimator,  # noqa: E402
                                              HATMLPEstimator, ScratchMLPEstimator, TransferEmbeddingEstimator)
from help_plugin.spaces import FBNet, get_space  # noqa: E402

SMALL_GRADIENT = {"steps": 20, "validate_every": 20, "query": 20}
POOL = get_split("fbnet").train[:4]


def _fbnet_task(fbnet):
    """Reference archs + 10 shots of eyeriss (unseen by the pools), and 200 archs to predict."""
    lat = fbnet.latency("eyeriss")
    rest = np.setdiff1d(np.arange(len(fbnet)), fbnet.reference_rows)
    fit_rows = np.concatenate([fbnet.reference_rows, rest[:10]])
    return fbnet.archs[fit_rows], lat[fit_rows], fbnet.archs[rest[100:300]]


def _hat_task():
    sp = get_space("hat")
    archs = sp.sample(60, seed=3)
    return archs[:40], 1e-7 * sp.cost_features(archs[:40])[:, 2], archs[40:]


FACTORIES = {
    "help+": lambda fbnet: HELPEstimator.pretrained("fbnet"),
    "help": lambda fbnet: HELPEstimator.meta_train("fbnet", fbnet, POOL, method="help", **SMALL_GRADIENT),
    "meta-sgd": lambda fbnet: HELPEstimator.meta_train("fbnet", fbnet, POOL, method="meta-sgd", **SMALL_GRADIENT),
    "maml": lambda fbnet: HELPEstimator.meta_train("fbnet", fbnet, POOL, method="maml", **SMALL_GRADIENT),
    "flops": lambda fbnet: FLOPsEstimator("fbnet"),
    "closest-device": lambda fbnet: ClosestDeviceEstimator(
        "fbnet", pool_options={"steps": 100, "ensemble": 1, "hidden": 32}).meta_fit(fbnet, POOL),
    "scratch-mlp": lambda fbnet: ScratchMLPEstimator("fbnet", hidden=32, epochs=20),
    "brp-gcn": lambda fbnet: BRPGCNEstimator("fbnet", hidden=32, layers=2, epochs=2),
    "tl-et": lambda fbnet: TransferEmbeddingEstimator("fbnet", hidden=32, steps=50, finetune_steps=10).meta_fit(
        fbnet, POOL),
    "hat-mlp": lambda fbnet: HATMLPEstimator(train_steps=30, lr=1e-3),
}


@pytest.fixture(scope="module")
def estimators(fbnet):
    with torch_threads(1):
        return {name: make(fbnet) for name, make in FACTORIES.items()}


def _task(name, fbnet):
    return _hat_task() if name == "hat-mlp" else _fbnet_task(fbnet)


def test_every_estimator_is_covered(estimators):
    """A new estimator class must get a factory here (so the contract is checked on it)."""
    library = {cls for cls in ESTIMATOR_KINDS.values() if cls.__module__.startswith("help_plugin.")}
    assert library <= {type(est) for est in estimators.values()}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_parameters_are_stored_as_given_and_settable(name, estimators):
    est = estimators[name]
    params = est.get_params()
    again = type(est)(**params)
    assert all(again.get_params()[k] is v for k, v in params.items())  # the constructor stores, nothing else
    assert "seed" not in params or est.set_params(seed=params["seed"]) is est
    with pytest.raises(ValueError, match="invalid parameter 'no_such_parameter'"):
        est.set_params(no_such_parameter=1)
    assert type(est).__name__ in repr(est)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_clone_then_fit_predicts_exactly_the_same(name, estimators, fbnet):
    archs, ms, new = _task(name, fbnet)
    with torch_threads(1):
        fitted = sklearn_base.clone(estimators[name]).fit(archs, ms)
        twin = sklearn_base.clone(fitted)
        assert not twin.is_fitted
        with pytest.raises(NotFittedError):
            twin.predict(new)
        pred = fitted.predict(new)
        np.testing.assert_array_equal(twin.fit(archs, ms).predict(new), pred)
    assert isinstance(pred, np.ndarray) and pred.dtype == np.float64 and pred.shape == (len(new),)
    assert np.isfinite(pred).all() and fitted.n_measurements == len(ms)
    assert fitted.predict_one(new[0]) == pytest.approx(pred[0], rel=1e-6)
    assert fitted.predict_row(fitted.space.to_indices(new[:1])[0]) == pytest.approx(pred[0], rel=1e-6)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_save_load_round_trip(name, estimators, fbnet, tmp_path):
    archs, ms, new = _task(name, fbnet)
    est = sklearn_base.clone(estimators[name])
    est.save(tmp_path / "unfitted.safetensors")
    unfitted = LatencyEstimator.load(tmp_path / "unfitted.safetensors")
    assert type(unfitted) is type(est) and not unfitted.is_fitted
    with torch_threads(1):
        est.fit(archs, ms)
    est.save(tmp_path / "fitted.safetensors")
    back = type(est).load(tmp_path / "fitted.safetensors")
    assert back.space == est.space and back.n_measurements == est.n_measurements
    def plain(e):  # parameters as JSON stores them (tuples become lists)
        return json.loads(json.dumps({k: v for k, v in e.get_params().items() if k not in ("space", "meta_model")}))

    assert plain(back) == plain(est)
    np.testing.assert_allclose(back.predict(new), est.predict(new), rtol=1e-6)
    other = FLOPsEstimator if not isinstance(est, FLOPsEstimator) else ScratchMLPEstimator
    with pytest.raises(CheckpointError, match=f"not a {other.__name__}"):
        other.load(tmp_path / "fitted.safetensors")


@pytest.mark.parametrize("name", list(FACTORIES))
def test_bad_input_is_named(name, estimators, fbnet):
    archs, ms, new = _task(name, fbnet)
    est = sklearn_base.clone(estimators[name])
    with pytest.raises(NotFittedError):
        est.predict(new)
    bad = np.array(ms, dtype=np.float64)
    bad[3] = np.nan
    with pytest.raises(ValueError, match=r"\[3\] = nan"):
        est.fit(archs, bad)
    with pytest.raises(ValueError, match=r"has 20 entries but latencies_ms has 19|has 40 entries but latencies_ms has 39"):
        est.fit(archs, ms[:-1])
    wrong = np.array(archs, copy=True)
    wrong[0, 0] = 99
    with pytest.raises(ValueError, match="index 99 at position 0"):
        est.fit(wrong, ms)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_calibrated_bounds(name, estimators, fbnet, tmp_path):
    """``predict_upper`` / ``predict_interval``: float64 ms ``[n]``, positive and finite, ordered (lower <= prediction
    <= marginal <= selection-aware; higher confidence, higher bound), cached until the next fit, kept through a
    checkpoint; a bad confidence is named."""
    archs, ms, new = _task(name, fbnet)
    est = sklearn_base.clone(estimators[name])
    with pytest.raises(NotFittedError):
        est.predict_upper(new)
    with torch_threads(1):
        est.fit(archs, ms)
        pred = np.maximum(est.predict(new), est.calibration().floor_ms)
        up, up80, sel = est.predict_upper(new), est.predict_upper(new, 0.8), est.predict_upper(new, selection=True)
        lo, hi = est.predict_interval(new, 0.9)
    for b in (up, up80, sel, lo, hi):
        assert isinstance(b, np.ndarray) and b.dtype == np.float64 and b.shape == (len(new),)
        assert np.isfinite(b).all() and (b > 0).all()
    assert (lo <= pred * (1 + 1e-12)).all() and (pred <= hi * (1 + 1e-12)).all()
    assert (up80 <= up).all() and (pred <= up * (1 + 1e-12)).all() and (up <= sel * (1 + 1e-12)).all()
    first = est.calibration()
    assert est.calibration() is first
    est.save(tmp_path / "fitted.safetensors")
    back = type(est).load(tmp_path / "fitted.safetensors")
    np.testing.assert_allclose(back.predict_upper(new), up, rtol=1e-5)
    with torch_threads(1):
        est.fit(archs[:-1], ms[:-1])
    assert est.calibration() is not first
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\) \(e.g. 0.95\), got 0"):
        est.predict_upper(new, confidence=0)


def test_clone_of_the_shipped_model_fits_exactly_like_it(nb201):
    """The issue's example: ``clone(HELPEstimator.pretrained("nasbench201"))`` then fit on the same measurements."""
    shipped = HELPEstimator.pretrained("nasbench201")
    twin = sklearn_base.clone(shipped)
    lat = nb201.latency("gold_6226")
    rows = np.concatenate([nb201.reference_rows, np.arange(10)])
    a = shipped.fit(nb201.archs[rows], lat[rows]).predict(nb201.archs[100:600])
    b = twin.fit(nb201.archs[rows], lat[rows]).predict(nb201.archs[100:600])
    np.testing.assert_array_equal(a, b)


def test_space_settings_survive_a_checkpoint(fbnet, tmp_path):
    """An estimator on FBNet(resolution=64) reloads on FBNet(resolution=64), predicting exactly the same."""
    with torch_threads(1):
        est = HELPEstimator.meta_train(FBNet(resolution=64), fbnet, POOL, steps=50, ensemble=1, hidden=32)
        archs, ms, new = _fbnet_task(fbnet)
        est.fit(archs, ms)
    est.save(tmp_path / "r64.safetensors")
    back = HELPEstimator.load(tmp_path / "r64.safetensors")
    assert back.space == FBNet(resolution=64) and back.space.resolution == 64
    np.testing.assert_array_equal(back.predict(new), est.predict(new))
    default = FBNet()
    assert back.space != default and not np.allclose(back.space.cost_features(new), default.cost_features(new))


def test_old_checkpoint_format_still_loads(tmp_path, nb201):
    """Checkpoints of help-plugin 0.1 (format help-plugin/1, no constructor parameters) load and predict."""
    from safetensors.torch import load_file, save_file

    est = HELPEstimator.pretrained("nasbench201")
    lat = nb201.latency("pixel2")
    est.adapt(lat[nb201.reference_rows], nb201.archs[:10], lat[:10])
    est.save(tmp_path / "new.safetensors")
    tensors = load_file(str(tmp_path / "new.safetensors"))
    learner_meta, _ = est.meta_model.state()
    old_meta = {"kind": "HELPEstimator", "space": "nasbench201", "method": "help+", "device": "pixel2",
                "learner": {k: learner_meta[k] for k in ("config", "pool_devices", "groups", "n_nets")},
                "train_devices": learner_meta["train_devices"], "valid_devices": learner_meta["valid_devices"],
                "meta_train_seconds": 1.0, "adapted": True, "n_measurements": 20}
    tensors["reference_indices"] = tensors.pop("learner.reference_indices")
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"format": "help-plugin/1",
                                                                     "meta": json.dumps(old_meta)})
    old = HELPEstimator.load(tmp_path / "old.safetensors")
    assert old.device == "pixel2" and old.n_measurements == 20
    np.testing.assert_array_equal(old.predict(nb201.archs[:300]), est.predict(nb201.archs[:300]))
    save_file(tensors, str(tmp_path / "broken.safetensors"), metadata={"format": "help-plugin/1", "meta": "{}"})
    with pytest.raises(CheckpointError, match="not a HELPEstimator"):
        HELPEstimator.load(tmp_path / "broken.safetensors")


def test_help_plus_checkpoints_of_the_earlier_head_still_load(tmp_path, nb201):
    """A help+ model adapted and saved before the evidence head (``tests/data``, written by that version: a small pool
    MLP, one ridge strength per group of costs and pool ms, adapted to raspi4, where it predicted 116 archs <= 0 ms)
    loads with its MLP ensemble as the ``mlp`` group and predicts as before, except that what it predicted below half
    its fastest measurement is now guarded above 0 (the pool networks now run in numpy: float32 rounding apart); it
    adapts again with the evidence head over those groups."""
    from safetensors.torch import load_file

    data = Path(__file__).parent / "data"
    before = np.load(data / "help_plus_earlier_head_predictions.npy")
    est = HELPEstimator.load(data / "help_plus_earlier_head.safetensors")
    assert est.meta_model.groups == ("flops", "cost3", "mlp") and est.head_.link == "identity"
    pred = est.predict(nb201.archs)
    floor = est.head_.floor
    assert floor == pytest.approx(0.5 * min(est.reference_latencies_ms_.min(), est.shot_latencies_ms_.min()))
    np.testing.assert_allclose(pred[before >= floor], before[before >= floor], rtol=1e-5, atol=1e-5)
    assert (before <= 0).sum() > 0 and (pred > 0).all() and (pred[before < floor] < floor).all()
    est.save(tmp_path / "now.safetensors")  # saved again in this version's layout
    np.testing.assert_array_equal(HELPEstimator.load(tmp_path / "now.safetensors").predict(nb201.archs), pred)
    lat = nb201.latency("raspi4")
    est.adapt(lat[nb201.reference_rows], nb201.archs[:10], lat[:10])
    assert (est.predict(nb201.archs) > 0).all()
    tensors = load_file(str(data / "help_plus_earlier_head.safetensors"))
    for dropped in ("reference_latencies_ms", "shot_latencies_ms"):
        tensors.pop(dropped)
    _resave(data / "help_plus_earlier_head.safetensors", tmp_path / "early.safetensors", tensors, update_manifest=True)
    with pytest.raises(CheckpointError, match="does not keep its measurements: adapt the model again"):
        HELPEstimator.load(tmp_path / "early.safetensors")


def _steep_task(name, fbnet):
    """The task's architectures on a device whose latency grows with the cube of the FLOPs from 0.01 ms: a straight
    line through its samples crosses 0 ms before the smallest architectures."""
    archs, _, _ = _task(name, fbnet)
    space = get_space("hat") if name == "hat-mlp" else fbnet.space
    flops = space.cost_features(archs)[:, 0]
    return archs, 0.01 + 50 * ((flops - flops.min()) / np.ptp(flops)) ** 3, space


@pytest.mark.parametrize("name", list(FACTORIES))
def test_predictions_are_positive_and_finite_on_the_whole_space(name, estimators, fbnet):
    """A latency is > 0 ms: on 20,000 random archs of the space (most far from the few fitted ones) every
    prediction is finite and positive, so a constrained search never treats a network as free."""
    archs, ms, space = _steep_task(name, fbnet)
    with torch_threads(1):
        fitted = sklearn_base.clone(estimators[name]).fit(archs, ms)
        pred = fitted.predict(space.sample(20000, seed=12))
    assert pred.shape == (20000,) and np.isfinite(pred).all()
    assert (pred > 0).all(), f"{(pred <= 0).sum()} predictions <= 0 ms, the lowest {pred.min():.4g} ms"


def test_gradient_learners_stay_positive_on_a_near_zero_latency_device(nb201):
    """The paper's linear min-max targets extrapolate below 0 ms on raspi4 (NAS-Bench-201 latencies from 0.011 ms;
    MAML meta-trained briefly predicted 41 of 15,625 archs <= 0 ms, down to -3.3 ms). The smooth positive floor keeps
    every prediction > 0 and the ranking of the unfloored predictions."""
    from scipy.stats import spearmanr

    split = get_split("nasbench201")
    with torch_threads(1):
        est = HELPEstimator.meta_train("nasbench201", nb201, split.train, method="maml", steps=100, query=50)
        lat = nb201.latency("raspi4")
        est.adapt(lat[nb201.reference_rows], nb201.archs[:10], lat[:10])
        pred = est.predict(nb201.archs)
    assert np.isfinite(pred).all() and (pred > 0).all(), f"{(pred <= 0).sum()} predictions <= 0 ms"
    assert spearmanr(pred, lat).correlation > 0.8


def _resave(src, dst, tensors, update_manifest: bool):
    """``tensors`` written to ``dst`` with ``src``'s header (and its tensor list rewritten to match, if asked)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        header = f.metadata()
    meta = json.loads(header["meta"])
    if update_manifest:
        meta["tensors"] = {k: [str(v.dtype).replace("torch.", ""), list(v.shape)] for k, v in tensors.items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dst), metadata={**header, "meta": json.dumps(meta)})


def _grown(t):
    """``t`` with one more entry along its last axis (a 0-d tensor becomes [2])."""
    import torch

    flat = t.reshape(1) if t.dim() == 0 else t
    return torch.cat([flat, flat[..., :1]], dim=-1)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_tampered_or_corrupt_checkpoints_are_refused(name, estimators, fbnet, tmp_path):
    """NaN in any weight, and a tensor of another shape or dtype, are a CheckpointError naming the file and the tensor,
    also when the header's list of tensors was rewritten to match (then the estimator's declared shapes catch it)."""
    from safetensors.torch import load_file

    archs, ms, _ = _task(name, fbnet)
    with torch_threads(1):
        est = sklearn_base.clone(estimators[name]).fit(archs, ms)
    path, bad = tmp_path / "est.safetensors", tmp_path / "bad.safetensors"
    est.save(path)
    tensors = load_file(str(path))
    weight = max((k for k, v in tensors.items() if v.is_floating_point()), key=lambda k: tensors[k].numel())
    poisoned = dict(tensors)
    poisoned[weight] = tensors[weight].clone().reshape(-1)
    poisoned[weight][0] = float("nan")
    _resave(path, bad, {**poisoned, weight: poisoned[weight].reshape(tensors[weight].shape)}, update_manifest=False)
    with pytest.raises(CheckpointError, match=rf"bad.safetensors: tensor '{weight}' holds 1 NaN/inf"):
        LatencyEstimator.load(bad)
    declared = est._expected_tensors({}, tensors)
    for tensor in [k for k in tensors if declared.get(k) is not None]:
        _resave(path, bad, {**tensors, tensor: _grown(tensors[tensor])}, update_manifest=False)
        with pytest.raises(CheckpointError, match=rf"bad.safetensors: tensor '{tensor}' is .* the header says"):
            LatencyEstimator.load(bad)
        _resave(path, bad, {**tensors, tensor: _grown(tensors[tensor])}, update_manifest=True)
        with pytest.raises(CheckpointError, match=r"bad.safetensors"):
            LatencyEstimator.load(bad)
    if name == "help+":  # the example: the head's strengths of another shape
        assert "head.strength" in declared
        _resave(path, bad, {**tensors, "head.strength": tensors["head.strength"][:1]}, update_manifest=True)
        width = len(tensors["head.strength"])
        with pytest.raises(CheckpointError, match=rf"tensor 'head.strength' has shape \[1\], expected \[{width}\]"):
            LatencyEstimator.load(bad)
    floating = next(k for k in sorted(tensors) if tensors[k].dtype.is_floating_point and declared.get(k) is not None)
    other = tensors[floating].double() if tensors[floating].dtype != torch_float64() else tensors[floating].float()
    _resave(path, bad, {**tensors, floating: other}, update_manifest=True)
    with pytest.raises(CheckpointError, match=rf"tensor '{floating}' is float"):
        LatencyEstimator.load(bad)
    extra = {**tensors, "stowaway": tensors[floating].clone()}
    _resave(path, bad, extra, update_manifest=True)
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) \['stowaway'\]"):
        LatencyEstimator.load(bad)


def torch_float64():
    import torch

    return torch.float64
