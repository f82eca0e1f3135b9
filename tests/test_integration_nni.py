"""NNI 3.0 adapter (integrations.nni_nas) against the real nni package, with HELP adapted to pixel2 (unseen)."""
import logging
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("nni")
pytest.importorskip("pytorch_lightning")

with warnings.catch_warnings():  # nni warns about torch classes it does not know, at import
    warnings.simplefilter("ignore", RuntimeWarning)
    import nni
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.experiment import NasExperiment, NasExperimentConfig
    from nni.nas.hub.pytorch import MobileNetV3Space, NasBench201, ProxylessNAS
    from nni.nas.hub.pytorch.proxylessnas import InvertedResidual
    from nni.nas.oneshot.pytorch.profiler import (
        RangeProfilerFilter,
        SampleProfilerPenalty,
    )
    from nni.nas.space import ModelStatus
    from nni.nas.strategy import (
        DARTS,
        ENAS,
        Random,
        RandomOneShot,
        RegularizedEvolution,
    )

from help_plugin.integrations.nni_nas import (
    FBNET_PROXYLESS_WIDTHS,
    OFA_MOBILENETV3_KWARGS,
    DifferentiableLatencyPenalty,
    HELPProfiler,
    LatencyDARTS,
    LatencyGumbelDARTS,
    LatencyProxyless,
    NasBench201Mapping,
    UnmappedChoiceError,
    latency_chain,
)

from help_plugin import HELPEstimator
from help_plugin.predictors import torch_threads
from help_plugin.spaces.fbnet import BLOCKS, block_spec, layer_shapes

logging.getLogger("nni").setLevel(logging.WARNING)
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
logging.getLogger("lightning").setLevel(logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning", "ignore::DeprecationWarning")


def _adapted(data, device, seed=0):
    lat = data.latency(device)
    rng = np.random.default_rng(seed)
    shots = rng.choice(np.setdiff1d(np.flatnonzero(np.isfinite(lat)), data.reference_rows), 10, replace=False)
    return HELPEstimator.pretrained(data.space.name).adapt(lat[data.reference_rows], data.archs[shots], lat[shots])


@pytest.fixture(scope="module")
def est(nb201):
    return _adapted(nb201, "pixel2")


@pytest.fixture(scope="module")
def limit_ms(est, nb201):
    return float(np.median(est.predict(nb201.archs)))  # half the space meets it


def _run(exp, tmp_path):
    """Run an experiment in-process; NNI's ``run`` leaves it to ``stop`` (or atexit) to end it."""
    exp.config.experiment_working_directory = str(tmp_path)
    try:
        with torch_threads(1):
            exp.run()
    finally:
        exp.stop()


def _n_params(net, weights_of=None):
    if weights_of is None:
        return sum(p.numel() for p in net.parameters())
    return sum(m.weight.numel() for m in net.modules() if isinstance(m, weights_of))


def _random_sample(space, rng):
    return {label: m.values[rng.integers(len(m.values))] for label, m in space.simplify().items()}


# ------------------------------------------------------------------------------------------------ profiler
def test_nasbench201_samples_map_exactly(est, nb201):
    space = NasBench201()
    mapping = NasBench201Mapping()
    assert list(space.simplify()) == mapping.labels  # NNI's own label order is the NB201 string's edge order
    prof = HELPProfiler(space, est)
    rows = np.random.default_rng(0).choice(len(nb201), 200, replace=False)
    samples = [mapping.to_sample(a) for a in nb201.archs[rows]]
    nni_ops = set(space.simplify()["cell/0_1"].values)
    assert all(set(s.values()) <= nni_ops for s in samples)
    np.testing.assert_array_equal(np.stack([prof.to_arch(s) for s in samples]), nb201.archs[rows])
    # the profiler's default is the 95 % selection-aware bound; HELP's rule (the mean) only when asked
    np.testing.assert_allclose([prof.profile(s) for s in samples],
                               est.predict_upper(nb201.archs[rows], 0.95, selection=True), rtol=1e-5)
    np.testing.assert_allclose([HELPProfiler(space, est, confidence=None).profile(s) for s in samples],
                               est.predict(nb201.archs[rows]), rtol=1e-5)
    assert prof.bound == "95 % selection-aware bound" and "95 % selection-aware bound" in repr(prof)
    # the NNI network frozen with a sample has our op on every edge (NNI's cells[0].layers[target - 1][source])
    names = {"none": "Zero", "skip_connect": "Identity", "nor_conv_1x1": "ReLUConvBN", "nor_conv_3x3": "ReLUConvBN",
             "avg_pool_3x3": "Pooling"}
    small = NasBench201(stem_out_channels=4, num_modules_per_stack=1)  # same cell, faster to freeze
    for arch in nb201.archs[rows[:2]]:
        net = small.freeze(mapping.to_sample(arch))
        # ops in the NB201 string's edge order, read from the string: |a~0|+|b~0|c~1|+|d~0|e~1|f~2|
        ops = [est.space.format(arch).split("|")[i].split("~")[0] for i in (1, 3, 4, 6, 7, 8)]
        for (target, source), op in zip(((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)), ops):
            module = net.cells[0].layers[target - 1][source]
            assert type(module).__name__ == names[op]
            if op.startswith("nor_conv"):
                assert module.op[1].kernel_size == ((3, 3) if op.endswith("3x3") else (1, 1))
    # and the full-size NNI network has exactly the parameters of help_plugin's NAS-Bench-201 network
    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
    assert _n_params(space.freeze(mapping.to_sample(arch))) == _n_params(est.space.build_network(arch))


def test_proxylessnas_converts_to_fbnet(fbnet):
    fest = _adapted(fbnet, "eyeriss")
    space = ProxylessNAS(base_widths=FBNET_PROXYLESS_WIDTHS)
    prof = HELPProfiler(space, fest)
    rng = np.random.default_rng(0)
    sample = _random_sample(space, rng)
    sample.update({label: v.replace("k7", "k5") for label, v in sample.items() if isinstance(v, str)})
    arch = prof.to_arch(sample)
    assert prof.profile(sample) == pytest.approx(fest.predict_upper(arch[None], selection=True)[0])
    # (kernel, expansion, c_in, c_out) of every layer NNI builds equals FBNet's, skips left out
    net = space.freeze(sample)
    nni_layers = [(blk[3].kernel_size[0], blk[0].out_channels // blk[0].in_channels, blk[0].in_channels,
                   blk[-1].num_features) for blk in net.modules() if isinstance(blk, InvertedResidual)]
    ours = [(*block_spec(BLOCKS[b])[:2], c_in, c_out) for b, (c_in, c_out, _, _) in zip(arch, layer_shapes())
            if BLOCKS[b] != "skip"]
    assert BLOCKS[arch[0]] == "k3_e1" and nni_layers == ours[1:]
    assert sum(BLOCKS[b] != "skip" for b in arch) == 2 + sum(sample[f"s{s}_depth"] for s in range(2, 7))
    # 7x7 kernels have no FBNet counterpart
    sample.update({"s3_depth": 2, "s3_i1": "k7e6"})
    with pytest.raises(UnmappedChoiceError, match="'s3_i1' = 'k7e6'"):
        prof.profile(sample)
    assert HELPProfiler(space, fest, unmapped="inf").profile(sample) == np.inf
    with pytest.raises(ValueError, match="out_channels=32"):
        HELPProfiler(ProxylessNAS(), fest)  # default widths are not FBNet's


def test_mobilenetv3space_maps_to_ofa(ofa):
    oest = _adapted(ofa, "titan_rtx_64")
    space = MobileNetV3Space(**OFA_MOBILENETV3_KWARGS)
    prof = HELPProfiler(space, oest)
    sample = _random_sample(space, np.random.default_rng(1))
    sample.update(stem_ks=3, s0_i0_ks=3)
    arch = oest.space.format(prof.to_arch(sample))
    assert arch["r"] == 224 and arch["d"] == [sample[f"s{s}_depth"] for s in range(1, 6)]
    net = space.freeze(sample)
    nni_layers = [(blk[3].kernel_size[0], blk[0].out_channels // blk[0].in_channels) for blk in net.modules()
                  if isinstance(blk, InvertedResidual)]
    ours = [(arch["ks"][4 * s + i], arch["e"][4 * s + i]) for s in range(5) for i in range(arch["d"][s])]
    assert nni_layers == ours
    # conv and linear weights: exactly the analytic count of the OFA subnet
    assert _n_params(net, (torch.nn.Conv2d, torch.nn.Linear)) == oest.space.params(arch)
    assert prof.profile(sample) == pytest.approx(oest.predict_upper([arch], selection=True)[0])
    sample["stem_ks"] = 5
    with pytest.raises(UnmappedChoiceError, match="'stem_ks' = 5"):
        prof.profile(sample)
    with pytest.raises(ValueError, match="width_mult"):
        HELPProfiler(MobileNetV3Space(), oest)  # the default space searches widths, OFA does not


def test_profiler_refuses_mismatches(est, fbnet):
    with pytest.raises(ValueError, match="map to 'nasbench201'.* predicts 'fbnet'"):
        HELPProfiler(NasBench201(), _adapted(fbnet, "eyeriss"))
    with pytest.raises(ValueError, match="not fitted"):
        HELPProfiler(NasBench201(), HELPEstimator.pretrained("nasbench201"))
    with pytest.raises(ValueError, match="no label 'cell/0_2'"):
        HELPProfiler(NasBench201(), est).profile({"cell/0_1": "none"})
    with pytest.raises(ValueError, match="confidence must be in"):
        HELPProfiler(NasBench201(), est, confidence=1.0)


# ------------------------------------------------------------------------------------------------ multi-trial
def test_multi_trial_experiment_meets_the_latency_limit(est, limit_ms, tmp_path, caplog):
    """RegularizedEvolution + latency filter, NNI's in-process sequential engine, a training-free score
    (parameter count, which prefers the slow 3x3 convolutions). Each rejected model is logged as rejected by
    the latency limit (not as NNI's "... has no metric. Skip."), and the count comes at the end."""
    space = NasBench201()
    prof = HELPProfiler(space, est)

    def n_params(model):
        nni.report_final_result(float(sum(p.numel() for p in model.parameters())))

    strategy = latency_chain(RegularizedEvolution(population_size=8, sample_size=4), prof, limit_ms)
    config = NasExperimentConfig("sequential", "simplified")
    config.max_trial_number = 24
    exp = NasExperiment(space, FunctionalEvaluator(n_params), strategy, config)
    with caplog.at_level(logging.INFO):
        _run(exp, tmp_path)
    check = strategy[1].filter_fn
    rejections = [r for r in caplog.records if r.getMessage().startswith("rejected by the latency limit: 95 %")]
    assert len(rejections) == check.rejected > 0 and check.checked == 24 + check.rejected
    assert not [r for r in caplog.records if "has no metric" in r.getMessage()]
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("latency limit: rejected")] == [
        f"latency limit: rejected {check.rejected} of {check.checked} sampled models (95 % selection-aware bound "
        f"outside [0, {limit_ms}] ms)"]
    trained = list(strategy[1].list_models(ModelStatus.Trained))
    rejected = list(strategy[1].list_models(ModelStatus.Invalid))
    assert len(trained) == 24 and len(rejected) > 0
    assert all(prof.profile(m.sample) <= limit_ms for m in trained)
    assert all(prof.profile(m.sample) > limit_ms for m in rejected)
    best = exp.export_top_models(formatter="dict")[0]
    assert prof.profile(best) <= limit_ms
    assert max(m.metric for m in rejected + trained if m.metric is not None) == pytest.approx(
        max(m.metric for m in trained))  # rejected models were never evaluated
    # without the filter the same score would pick an architecture over the limit (all 3x3 convolutions)
    assert prof.profile({label: "conv_3x3" for label in prof.mapping.labels}) > limit_ms


def test_random_strategy_chain_and_oneshot_filter(est, limit_ms, tmp_path):
    space = NasBench201(stem_out_channels=4, num_modules_per_stack=1)
    prof = HELPProfiler(space, est)
    assert isinstance(latency_chain(Random(), prof, limit_ms)[0], Random)
    seen = []
    range_filter = RangeProfilerFilter(prof, max=limit_ms)

    def recording_filter(sample):
        seen.append((prof.profile(sample), range_filter(sample)))
        return seen[-1][1]

    _run(NasExperiment(space, _tiny_classification(8), RandomOneShot(filter=recording_filter)), tmp_path)
    accepted = [ms for ms, ok in seen if ok]
    assert len(accepted) >= 8 and len(accepted) < len(seen) and max(accepted) <= limit_ms


def test_sample_penalty_for_enas(est, limit_ms, nb201):
    prof = HELPProfiler(NasBench201(), est)
    penalty = SampleProfilerPenalty(prof, baseline=limit_ms, scale=-1.0, nonlinear="positive")
    slow = {label: "conv_3x3" for label in prof.mapping.labels}
    fast = prof.mapping.to_sample(nb201.archs[np.argmin(est.predict_upper(nb201.archs, selection=True))])
    assert penalty(0.9, fast)[0] == pytest.approx(0.9)  # under the limit: reward unchanged
    assert penalty(0.9, slow)[0] == pytest.approx(0.9 - (prof.profile(slow) / limit_ms - 1))


def test_enas_controller_learns_the_latency_limit(est, limit_ms, tmp_path):
    """NNI's own ENAS (tianshou PPO controller) with the HELP penalty on its reward, 48 rewarded samples:
    without the penalty the controller drifts to slow all-convolution cells (accuracy rewards them),
    with it the late samples stay near the limit (HELP's rule, the mean prediction) or, with the default
    profiler (the 95 % bound), well under the unpenalised ones."""
    late_ms = {}
    for scale, confidence in ((0.0, None), (-1.0, None), (-1.0, 0.95)):
        torch.manual_seed(0)
        space = NasBench201(stem_out_channels=4, num_modules_per_stack=1)
        prof = HELPProfiler(space, est, confidence=confidence)
        seen = []

        class RecordingPenalty(SampleProfilerPenalty):
            def __call__(self, reward, sample):
                seen.append(sample)
                return super().__call__(reward, sample)

        penalty = RecordingPenalty(prof, baseline=limit_ms, scale=scale, nonlinear="positive")
        strategy = ENAS(penalty=penalty, reward_metric_name="val_acc", batches_per_update=4)
        _run(NasExperiment(space, _tiny_classification(16, epochs=6), strategy), tmp_path)
        assert len(seen) == 48  # 8 validation batches (rewards) per epoch
        late_ms[scale, confidence] = float(np.mean(est.predict([prof.to_arch(s) for s in seen[-20:]])))
    assert late_ms[-1.0, None] < late_ms[0.0, None] - 5.0, late_ms
    assert late_ms[-1.0, None] < 1.15 * limit_ms, (late_ms, limit_ms)
    assert late_ms[-1.0, 0.95] < late_ms[0.0, None] - 5.0, late_ms


# ------------------------------------------------------------------------------------------------ differentiable
def _tiny_classification(steps, epochs=1):
    gen = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(64, 3, 8, 8, generator=gen),
                                        torch.randint(0, 10, (64,), generator=gen))
    return Classification(train_dataloaders=DataLoader(ds, batch_size=8), val_dataloaders=DataLoader(ds, batch_size=8),
                          num_classes=10, max_epochs=epochs, limit_train_batches=steps, limit_val_batches=1,
                          accelerator="cpu", enable_progress_bar=False, logger=False, enable_checkpointing=False,
                          enable_model_summary=False)


def test_penalty_changes_the_architecture_gradient(est):
    torch.manual_seed(0)
    space = NasBench201(stem_out_channels=4, num_modules_per_stack=1)
    penalty = DifferentiableLatencyPenalty(HELPProfiler(space, est), baseline=15.0, scale=10.0)
    strategy = LatencyDARTS(penalty=penalty)
    supernet = strategy.mutate_model(space)
    alphas = list(strategy._arch_parameters.values())
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))

    def grads(with_penalty):
        for a in alphas:
            a.grad = None
        loss = torch.nn.functional.cross_entropy(supernet(x), y)
        if with_penalty:
            loss = penalty(loss, {})[0]
        loss.backward()
        return torch.stack([a.grad.clone() for a in alphas])

    with torch_threads(1):
        plain, penalised = grads(False), grads(True)
        for a in alphas:
            a.grad = None
        (10.0 * penalty.expected_latency() / 15.0).backward()
        latency_only = torch.stack([a.grad.clone() for a in alphas])
    assert (penalised - plain).abs().max() > 1e-3
    torch.testing.assert_close(penalised - plain, latency_only)
    # NNI's own ExpectationProfilerPenalty is handed these probabilities: plain floats, no gradient to alpha
    oneshot = DARTS().configure_oneshot_module(_tiny_classification(1).module)
    oneshot.set_model(supernet)
    probs = oneshot.export_probs()["cell/0_1"]
    assert all(type(p) is float for p in probs.values())


@pytest.mark.parametrize("strategy_cls", [LatencyDARTS, LatencyGumbelDARTS, LatencyProxyless])
def test_larger_scale_lowers_expected_latency_in_nni(est, strategy_cls, tmp_path):
    """A tiny search on NNI's NasBench201 (random data, 15 steps): scale 0 vs 50 from the same seed."""
    results = {}
    for scale in (0.0, 50.0):
        torch.manual_seed(0)
        space = NasBench201(stem_out_channels=4, num_modules_per_stack=1)
        prof = HELPProfiler(space, est)
        penalty = DifferentiableLatencyPenalty(prof, baseline=15.0, scale=scale)
        exp = NasExperiment(space, _tiny_classification(15), strategy_cls(penalty=penalty, arc_learning_rate=0.05))
        _run(exp, tmp_path)
        top = prof.to_arch(exp.export_top_models(formatter="dict")[0])
        results[scale] = (float(penalty.expected_latency()), float(est.predict(top[None])[0]))  # the mean, as LAT
    (lat0, top0), (lat50, top50) = results[0.0], results[50.0]
    assert lat50 < lat0 - 2.0, results
    assert top50 < top0, results


def test_nni_darts_with_a_help_profiler_points_to_latency_darts(est, tmp_path):
    """NNI's DARTS(penalty={...}) builds an ExpectationProfilerPenalty, whose latency term would have no gradient:
    a clear error naming LatencyDARTS, raised when the penalty is first used."""
    space = NasBench201(stem_out_channels=4, num_modules_per_stack=1)
    prof = HELPProfiler(space, est)
    with pytest.raises(TypeError, match=r"Use LatencyDARTS\(penalty=DifferentiableLatencyPenalty\(profiler"):
        _run(NasExperiment(space, _tiny_classification(2), DARTS(penalty={"profiler": prof, "baseline": 15.0})),
             tmp_path)


def test_differentiable_penalty_needs_a_relaxable_bound_profiler(est, fbnet):
    prof = HELPProfiler(NasBench201(), est)
    penalty = DifferentiableLatencyPenalty(prof, baseline=15.0)
    with pytest.raises(RuntimeError, match="not bound"):
        penalty(torch.tensor(1.0), {})
    with pytest.raises(TypeError, match="no differentiable"):
        DifferentiableLatencyPenalty(HELPProfiler(ProxylessNAS(base_widths=FBNET_PROXYLESS_WIDTHS),
                                                  _adapted(fbnet, "eyeriss")), baseline=15.0)
    with pytest.raises(TypeError, match="DifferentiableLatencyPenalty"):
        LatencyDARTS(penalty=SampleProfilerPenalty(prof, baseline=15.0))
    with pytest.raises(ValueError, match="baseline"):
        DifferentiableLatencyPenalty(prof, baseline=0.0)
