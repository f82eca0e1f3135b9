"""LA-DARTS latency loss (help_plugin.losses) with HELP adapted to an unseen device from the shared data."""
import numpy as np
import pytest
import torch

from help_plugin import HELPEstimator
from help_plugin.predictors import torch_threads
from help_plugin.predictors.baselines import FLOPsEstimator
from help_plugin.search.losses import (
    ExpectedLatencyLoss,
    enumerate_archs,
    exact_expected_latency,
    latency_loss,
    latency_table,
    probs_from_logits,
)


def _adapted(data, device, seed=0):
    lat = data.latency(device)
    rng = np.random.default_rng(seed)
    shots = rng.choice(np.setdiff1d(np.flatnonzero(np.isfinite(lat)), data.reference_rows), 10, replace=False)
    est = HELPEstimator.pretrained(data.space.name)
    return est.adapt(lat[data.reference_rows], data.archs[shots], lat[shots])


@pytest.fixture(scope="module")
def est(nb201):
    return _adapted(nb201, "pixel2")  # an unseen device of HELP's nasbench201 split


@pytest.fixture(scope="module")
def exact(est):
    return ExpectedLatencyLoss(est)


def _one_hot(archs, c=5):
    return torch.nn.functional.one_hot(torch.as_tensor(archs), c).double()


def test_default_mode_is_exact_for_nasbench201_and_table_holds_every_prediction(est, exact):
    assert exact.mode == "exact" and tuple(exact.table.shape) == (5,) * 6
    archs = enumerate_archs(est.space)
    assert archs.shape == (15625, 6) and len(np.unique(archs, axis=0)) == 15625
    rows = np.random.default_rng(1).choice(15625, 50, replace=False)
    np.testing.assert_allclose(exact.table.reshape(-1)[rows].numpy(), est.predict(archs[rows]))


def test_one_hot_gives_the_architecture_latency_in_both_modes(est, exact, nb201):
    archs = nb201.archs[:20]
    want = est.predict(archs)
    np.testing.assert_allclose(exact.expected_latency(_one_hot(archs)).numpy(), want, rtol=1e-10)
    relaxed = ExpectedLatencyLoss(est, mode="relaxed")
    np.testing.assert_allclose(relaxed.expected_latency(_one_hot(archs).float()).detach().numpy(), want, rtol=1e-4)
    # a single distribution [L, C] gives a scalar
    assert exact.expected_latency(_one_hot(archs[0])).shape == ()


def test_exact_is_the_sum_over_all_15625_architectures(est, exact):
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(3, 6, 5, dtype=torch.float64) * 2, -1)
    got = exact.expected_latency(probs).numpy()
    archs = enumerate_archs(est.space)
    ms = est.predict(archs)
    for k in range(3):
        weight = np.prod(probs[k].numpy()[np.arange(6), archs], axis=1)  # prod_e p_e(op_e)
        assert weight.sum() == pytest.approx(1.0)
        assert got[k] == pytest.approx(float(weight @ ms), rel=1e-9)


def test_exact_gradient_is_correct(exact):
    probs = torch.softmax(torch.randn(2, 6, 5, dtype=torch.float64), -1).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: exact_expected_latency(p, exact.table), (probs,))


def test_any_estimator_works_in_exact_mode_but_relaxed_needs_predict_tensor(nb201):
    flops = FLOPsEstimator("nasbench201").fit(nb201.archs[:30], nb201.latency("pixel2")[:30])
    loss = ExpectedLatencyLoss(flops, lam=0.5)
    probs = torch.full((6, 5), 0.2, dtype=torch.float64, requires_grad=True)
    value = loss(probs)
    assert value.item() == pytest.approx(0.5 * flops.predict(enumerate_archs(flops.space)).mean())
    value.backward()
    assert probs.grad.abs().sum() > 0
    with pytest.raises(TypeError, match="predict_tensor"):
        latency_loss(flops, probs.detach())  # no table -> relaxed -> needs predict_tensor
    assert latency_loss(flops, probs.detach(), 2.0, table=latency_table(flops)).item() == pytest.approx(
        4 * value.item())


def test_larger_lambda_gives_lower_expected_latency(exact):
    """A short LA-DARTS-style optimisation of alpha: a fixed task loss that rewards the 3x3 convolution (the
    slowest op) on each edge with a different weight, plus lambda * LAT(alpha); lambda in units of 1/median ms."""
    task_reward = torch.zeros(6, 5, dtype=torch.float64)
    task_reward[:, 3] = 0.1 * 2.0 ** torch.arange(6)
    median_ms = float(exact.table.median())
    finals, picks = [], []
    with torch_threads(1):
        for lam in (0.0, 0.5, 2.0, 8.0):
            loss_fn = ExpectedLatencyLoss(exact.estimator, lam=lam / median_ms, from_logits=True)
            alpha = torch.zeros(6, 5, dtype=torch.float64, requires_grad=True)
            opt = torch.optim.Adam([alpha], lr=0.1)
            for _ in range(150):
                total = -(torch.softmax(alpha, -1) * task_reward).sum() + loss_fn(alpha)
                opt.zero_grad()
                total.backward()
                opt.step()
            finals.append(loss_fn.expected_latency(alpha).item())
            picks.append(alpha.argmax(-1).tolist())
    assert picks[0] == [3] * 6  # lambda = 0: the task alone picks the slow convolution everywhere
    assert all(a > 1.05 * b for a, b in zip(finals, finals[1:])), finals
    # the edges with the weakest task reward give up the convolution first
    n_conv = [sum(op == 3 for op in p) for p in picks]
    assert n_conv == sorted(n_conv, reverse=True) and n_conv[-1] < 6, picks


def test_fbnet_defaults_to_relaxed_with_gradient(fbnet):
    est = _adapted(fbnet, "eyeriss")
    loss = ExpectedLatencyLoss(est, lam=1.0, from_logits=True)
    assert loss.mode == "relaxed"
    alpha = torch.zeros(22, 9, requires_grad=True)
    loss(alpha).backward()
    assert alpha.grad.abs().sum() > 0
    arch = fbnet.archs[:4]
    np.testing.assert_allclose(loss.expected_latency(torch.log(_one_hot(arch, 9).float() + 1e-12)).detach().numpy(),
                               est.predict(arch), rtol=1e-3)
    with pytest.raises(ValueError, match="more than max_archs"):
        ExpectedLatencyLoss(est, mode="exact")


def test_logits_of_uneven_spaces_are_masked(ofa):
    space = ofa.space  # 45 positions of 3 choices, 1 of 25 resolutions
    probs = probs_from_logits(space, torch.randn(46, 25))
    assert torch.allclose(probs.sum(-1), torch.ones(46))
    assert (probs[:45, 3:] == 0).all() and (probs[45] > 0).all()


def test_bad_input_is_named(est, exact):
    with pytest.raises(ValueError, match=r"shape \[6, 5\]"):
        exact(torch.zeros(6, 4))
    bad = torch.full((6, 5), 0.2)
    bad[4] = torch.tensor([0.5, 0.5, 0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="position 4 .* sum to 1.5"):
        exact(bad)
    with pytest.raises(ValueError, match="unknown mode 'sampled'"):
        ExpectedLatencyLoss(est, mode="sampled")
    with pytest.raises(ValueError, match="not fitted"):
        ExpectedLatencyLoss(HELPEstimator.pretrained("nasbench201"))
    with pytest.raises(TypeError, match="torch.Tensor"):
        exact(np.full((6, 5), 0.2))
