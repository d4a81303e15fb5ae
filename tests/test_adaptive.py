"""VeLU and SmartMixed, whose output depends on more than one element."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch

import relulab
from relulab import functional as F

from conftest import build


def _velu_reference(
    row: list[float], scale=1.0, alpha=0.1, beta1=0.1, beta2=0.1, gamma=0.1, mu=0.9, eps=1e-6
):
    """VeLU of one feature vector, from the authors' Keras code, in 50-digit arithmetic."""
    with mp.workdps(50):
        xs = [mp.mpf(v) for v in row]
        inverse_rms = 1 / mp.sqrt(sum(v * v for v in xs) / len(xs) + mp.mpf(eps))
        adaptive = 1 + gamma * mp.tanh(mu * inverse_rms)
        out = []
        for v in xs:
            mix = mp.atan(beta1 * v) + mp.asin(min(max(beta2 * v, -1), 1))
            out.append(float(scale * v / (1 + mp.exp(-alpha * mix)) * adaptive))
        return out


def test_velu_matches_its_reference_per_sample():
    rows = [
        [-1e4, -20.0, -10.0, -3.0, 0.0],
        [0.5, 2.0, 9.99, 10.0, 50.0],
        [0.0] * 5,
        [1e-3, -1e-3, 0.1, 7.0, -7.0],
    ]
    x = torch.tensor(rows, dtype=torch.float64)
    got = build("velu", {}).eval()(x).tolist()
    for row, got_row in zip(rows, got):
        for g, want in zip(got_row, _velu_reference(row)):
            assert math.isclose(g, want, rel_tol=1e-12, abs_tol=1e-300)


def test_velu_averages_over_the_feature_axis_of_images():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    got = build("velu", {"gamma": 0.5, "mu": 2.0}).eval()(x)
    for n, h, w in [(0, 0, 0), (1, 3, 4), (1, 2, 1)]:
        want = _velu_reference(x[n, :, h, w].tolist(), gamma=0.5, mu=2.0)
        assert np.allclose(got[n, :, h, w].detach().numpy(), want, rtol=1e-12)


def test_velu_stores_its_w2_auxiliary_loss_in_training_only():
    module = build("velu", {"lambda_ot": 0.5})
    x = torch.randn(64, 8, dtype=torch.float64) * 3
    with torch.no_grad():
        module.scale.fill_(2.0)
    y = module(x)
    unscaled = (y / 2.0).detach().numpy()
    w2 = unscaled.mean() ** 2 + (unscaled.std() - 1.0) ** 2  # numpy's std is the population std
    assert math.isclose(module.aux_loss.item(), 0.5 * w2, rel_tol=1e-12)
    module.eval()
    module(x)
    assert module.aux_loss is None


def test_velu_gradcheck_input_and_scale():
    module = build("velu", {})
    x = (torch.randn(3, 6, dtype=torch.float64) * 4).requires_grad_()
    scale = module.scale.detach().clone().requires_grad_()

    def apply(x, scale):
        return torch.func.functional_call(module, {"scale": scale}, (x,))

    assert torch.autograd.gradcheck(apply, (x, scale))
    assert torch.autograd.gradgradcheck(apply, (x, scale))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_velu_low_precision_is_finite_and_nan_stays_in_its_row(dtype):
    x = torch.tensor([[-1e4, -5.0, 0.0, 5.0, 1e4], [1.0, float("nan"), 2.0, 3.0, 4.0]], dtype=dtype)
    x.requires_grad_()
    y = build("velu", {}, dtype)(x)
    y[0].sum().backward()
    assert y[0].isfinite().all() and x.grad[0].isfinite().all()
    assert y[1].isnan().all()


# SmartMixed's six candidates, written out independently.
def _candidates(v: float) -> list[float]:
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    return [
        max(v, 0.0),
        1 / (1 + math.exp(-v)) if v > -700 else 0.0,
        math.tanh(v),
        v if v >= 0 else 0.01 * v,
        v if v > 0 else math.expm1(v),
        scale * (v if v > 0 else alpha * math.expm1(v)),
    ]


def _clip(v: float, bound: float = 10.0) -> float:
    return min(max(v, -bound), bound)


def test_smartmixed_phase_one_clips_each_candidate_and_the_mix():
    x = torch.tensor([[-30.0, -2.0, 0.5, 15.0, 40.0, 3.0]], dtype=torch.float64)
    choice = [0, 1, 2, 3, 4, 5]
    weights = torch.nn.functional.one_hot(torch.tensor(choice), 6).double()
    got = F.smartmixed(x, weights)[0].tolist()
    want = [_clip(_clip(_candidates(v)[k])) for v, k in zip(x[0].tolist(), choice)]
    assert np.allclose(got, want, rtol=1e-14, atol=0)


def test_smartmixed_eval_mode_uses_the_argmax_and_harden_fixes_it_unclipped():
    module = build("smartmixed", {"num_features": 6})
    with torch.no_grad():
        module.logits.zero_()
        module.logits[torch.arange(6), torch.tensor([5, 4, 3, 2, 1, 0])] = 1.0
    x = torch.tensor([[-3.0, -0.5, -20.0, 2.0, 0.25, 30.0]], dtype=torch.float64)
    module.eval()
    clipped = module(x)[0].tolist()
    assert clipped == pytest.approx(
        [_clip(_candidates(v)[k]) for v, k in zip(x[0].tolist(), [5, 4, 3, 2, 1, 0])], rel=1e-14
    )
    assert module.summary() == dict.fromkeys(F.SMARTMIXED_CANDIDATES, 1)
    module.harden()
    assert module.hardened and not module.logits.requires_grad
    fixed = module(x)[0].tolist()
    assert fixed == pytest.approx(
        [_candidates(v)[k] for v, k in zip(x[0].tolist(), [5, 4, 3, 2, 1, 0])], rel=1e-14
    )
    assert fixed[-1] == 30.0  # relu, no longer clipped at 10


def test_smartmixed_hardened_choice_survives_a_state_dict_round_trip():
    module = relulab.SmartMixed(5).harden()
    fresh = relulab.SmartMixed(5)
    assert not fresh.hardened
    fresh.load_state_dict(module.state_dict())
    assert fresh.hardened and torch.equal(fresh.choice, module.choice)


def test_smartmixed_samples_candidates_with_softmax_probabilities():
    """Hard Gumbel-softmax picks argmax(logits + Gumbel noise): candidate k with softmax prob."""
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5, 0.0]])
    draws = 20000
    counts = torch.zeros(6)
    for _ in range(draws // 500):
        samples = F.gumbel_one_hot(logits.expand(500, 6), tau=0.5)
        assert torch.equal(samples.sum(-1), torch.ones(500))  # one-hot
        counts += samples.sum(0)
    expected = torch.softmax(logits[0], 0) * draws
    sigma = (expected * (1 - expected / draws)).sqrt()
    assert ((counts - expected).abs() < 5 * sigma).all(), (counts, expected)


def test_smartmixed_training_passes_straight_through_gradients_to_the_logits():
    torch.manual_seed(1)
    module = relulab.SmartMixed(4).double()
    x = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    module(x).sum().backward()
    assert module.logits.grad is not None and module.logits.grad.isfinite().all()
    assert module.logits.grad.abs().sum() > 0


def test_smartmixed_gradcheck_in_both_phases():
    module = build("smartmixed", {"num_features": 6}).eval()
    x = torch.tensor([[-2.3, -0.7, 0.4, 1.9, 3.1, -5.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,))
    module.harden()
    assert torch.autograd.gradcheck(module, (x,))


def test_smartmixed_rejects_inputs_whose_features_do_not_match():
    with pytest.raises(ValueError, match=r"expected x of shape \(N, 4, \.\.\.\)"):
        relulab.SmartMixed(4)(torch.randn(3, 5))


def test_hardened_smartmixed_checks_its_input():
    module = relulab.SmartMixed(3).harden()
    with pytest.raises(ValueError, match=r"expected x of shape \(N, 3, \.\.\.\)"):
        module(torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"choices in 0\.\.5"):
        F.smartmixed_select(torch.ones(2, 3), torch.tensor([0, 7, -1]))


def test_smartmixed_phase_is_a_python_flag_restored_by_load_state_dict():
    hardened = relulab.SmartMixed(4).harden()
    fresh = relulab.SmartMixed(4)
    assert fresh.hardened is False
    fresh.load_state_dict(hardened.state_dict())
    assert fresh.hardened is True and not fresh.logits.requires_grad


def test_velu_rejects_inputs_without_a_feature_axis():
    with pytest.raises(ValueError, match="expected input of shape"):
        relulab.VeLU()(torch.randn(5))
