"""Preference losses (issue 14, item 3) against independent float64 and Python-loop references."""

import itertools
import math

import pytest
import torch

from relulab.errors import UserError
from relulab.losses import dpo_loss, preference_margin, repo_loss, sequence_logps, simpo_loss

GAMMA = 0.3


def _margins_away_from_gamma() -> torch.Tensor:
    # the limit 1[M < gamma] is discontinuous at M == gamma, so keep a gap of 0.05 around it
    below = torch.linspace(-2.0, GAMMA - 0.05, 20, dtype=torch.float64)
    above = torch.linspace(GAMMA + 0.05, 2.0, 20, dtype=torch.float64)
    return torch.cat([below, above])


def _sigmoid(x: float) -> float:
    # the two branches keep math.exp from overflowing at beta = 1000
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _simpo_weights(margin: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-pair weight from autograd: dL/dM = -beta * w / N, so w = -N * grad / beta."""
    m = margin.clone().requires_grad_(True)
    simpo_loss(m, beta=beta, gamma=GAMMA).backward()
    return -m.grad * len(m) / beta


def test_simpo_weights_converge_to_repo_indicator():
    margin = _margins_away_from_gamma()
    indicator = (margin < GAMMA).double()
    deviations = []
    for beta in (1.0, 10.0, 100.0, 1000.0):
        weights = _simpo_weights(margin, beta)
        # independent oracle: SimPO's weight sigma(beta * (gamma - M)) in closed form
        expected = torch.tensor(
            [_sigmoid(beta * (GAMMA - m)) for m in margin.tolist()], dtype=torch.float64
        )
        torch.testing.assert_close(weights, expected, rtol=1e-10, atol=1e-12)
        deviations.append((weights - indicator).abs().max().item())
    assert all(a > b for a, b in itertools.pairwise(deviations)), deviations
    # at beta = 1000 the nearest margin sits 0.05 from gamma: sigma(-50) ~ 2e-22
    assert deviations[-1] < 1e-20


def test_repo_gradient_filters_pairs_at_or_above_gamma():
    margin = torch.tensor([-1.0, 0.0, 0.29, GAMMA, 0.31, 2.0], dtype=torch.float64)
    margin.requires_grad_(True)
    repo_loss(margin, gamma=GAMMA).backward()
    n = len(margin)
    expected = [-1 / n if m < GAMMA else 0.0 for m in margin.tolist()]
    assert margin.grad.tolist() == expected


def test_repo_loss_value():
    margin = [-1.0, 0.0, 0.29, 0.31, 2.0]
    expected = sum(max(GAMMA - m, 0.0) for m in margin) / len(margin)
    got = repo_loss(torch.tensor(margin, dtype=torch.float64), gamma=GAMMA)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_simpo_loss_value():
    margin, beta = [-0.5, 0.3, 1.2], 2.5
    expected = sum(math.log1p(math.exp(-beta * (m - GAMMA))) for m in margin) / len(margin)
    got = simpo_loss(torch.tensor(margin, dtype=torch.float64), beta=beta, gamma=GAMMA)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_dpo_loss_against_hand_computed_value():
    pc, pr, rc, rr = [-10.0, -4.0], [-12.0, -3.0], [-11.0, -5.0], [-11.5, -2.5]
    beta = 0.1
    # pair 0: (pc - rc) - (pr - rr) = 1 - (-0.5) = 1.5; pair 1: 1 - (-0.5) = 1.5
    # so the loss is log(1 + exp(-0.15)) for both pairs
    expected = math.log(1 + math.exp(-0.15))
    args = [torch.tensor(v, dtype=torch.float64) for v in (pc, pr, rc, rr)]
    got = dpo_loss(*args, beta=beta)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def _loop_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """Reference: a Python loop over tokens, log-sum-exp in float64 by hand."""
    out = []
    for b in range(logits.shape[0]):
        total, count = 0.0, 0
        for t in range(logits.shape[1]):
            if not mask[b, t]:
                continue
            row = [float(v) for v in logits[b, t]]
            top = max(row)
            log_z = top + math.log(sum(math.exp(v - top) for v in row))
            total += row[int(labels[b, t])] - log_z
            count += 1
        out.append(total / count)
    return out


def test_sequence_logps_matches_python_loop_with_padding():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=gen, dtype=torch.float64) * 3
    labels = torch.randint(0, 7, (3, 5), generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    labels[mask == 0] = -100  # padding ids that would break an unmasked gather
    got = sequence_logps(logits, labels, mask)
    torch.testing.assert_close(
        got, torch.tensor(_loop_logps(logits, labels, mask), dtype=torch.float64)
    )


def test_sequence_logps_ignores_logits_at_padding():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 5, generator=gen)
    labels = torch.randint(0, 5, (2, 4), generator=gen)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    changed = logits.clone()
    changed[mask == 0] = 1e4
    torch.testing.assert_close(
        sequence_logps(changed, labels, mask), sequence_logps(logits, labels, mask)
    )


def test_preference_margin_with_different_lengths():
    gen = torch.Generator().manual_seed(2)
    cl = torch.randn(2, 3, 6, generator=gen, dtype=torch.float64)
    rl = torch.randn(2, 5, 6, generator=gen, dtype=torch.float64)
    cy, ry = torch.randint(0, 6, (2, 3), generator=gen), torch.randint(0, 6, (2, 5), generator=gen)
    cm, rm = torch.tensor([[1, 1, 0], [1, 1, 1]]), torch.tensor([[1, 1, 1, 1, 0], [1, 0, 0, 0, 0]])
    got = preference_margin(cl, cy, cm, rl, ry, rm)
    expected = [c - r for c, r in zip(_loop_logps(cl, cy, cm), _loop_logps(rl, ry, rm))]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_beta(beta):
    z = torch.zeros(2)
    with pytest.raises(UserError, match=rf"beta .*got {beta!r}"):
        simpo_loss(z, beta=beta, gamma=0.3)
    with pytest.raises(UserError, match=rf"beta .*got {beta!r}"):
        dpo_loss(z, z, z, z, beta=beta)


def test_dpo_shapes_that_differ():
    z = torch.zeros(2)
    with pytest.raises(UserError, match=r"ref_rejected_logps \(3,\)"):
        dpo_loss(z, z, z, torch.zeros(3), beta=0.1)


def test_sequence_logps_bad_inputs():
    logits, labels = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(UserError, match=r"mask rows \[1\] are all zero"):
        sequence_logps(logits, labels, torch.tensor([[1, 0, 0], [0, 0, 0]]))
    with pytest.raises(UserError, match=r"mask \(2, 2\)"):
        sequence_logps(logits, labels, torch.ones(2, 2))
    with pytest.raises(UserError, match=r"got \(2, 3\)"):
        sequence_logps(torch.zeros(2, 3), labels, torch.ones(2, 3))


def test_preference_margin_pair_counts_that_differ():
    with pytest.raises(UserError, match="got 2 and 3"):
        preference_margin(
            torch.zeros(2, 3, 4),
            torch.zeros(2, 3, dtype=torch.long),
            torch.ones(2, 3),
            torch.zeros(3, 3, 4),
            torch.zeros(3, 3, dtype=torch.long),
            torch.ones(3, 3),
        )
