"""Backward passes: gradcheck in float64 for inputs and trainable parameters, gradgradcheck for
the smooth activations, and HeLU's hysteresis rule."""

from __future__ import annotations

import pytest
import torch

import relulab

from conftest import CASES, build, case_id
from reference_formulas import kinks

POINTS = [-4.7, -3.6, -2.4, -1.3, -0.7, -0.2, 0.3, 0.9, 1.7, 2.6, 3.4, 4.9, 6.8, -25.0, 40.0]


def _as_function(module: torch.nn.Module):
    """module(x) as a function of (x, *trainable parameters)."""
    names = [n for n, p in module.named_parameters() if p.requires_grad]

    def apply(x, *parameters):
        return torch.func.functional_call(module, dict(zip(names, parameters)), (x,))

    params = [
        p.detach().clone().requires_grad_() for n, p in module.named_parameters() if n in names
    ]
    return apply, params


def _inputs(name: str, arguments: dict) -> torch.Tensor:
    points = [p for p in POINTS if all(abs(p - k) > 1e-2 for k in kinks(name, arguments))]
    return torch.tensor(points, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] != "helu"], ids=case_id)
def test_gradcheck(case):
    name, arguments = case
    apply, params = _as_function(build(name, arguments))
    assert torch.autograd.gradcheck(apply, (_inputs(name, arguments), *params))


SMOOTH_CASES = [c for c in CASES if relulab.activation_info(c[0]).smooth]


@pytest.mark.parametrize("case", SMOOTH_CASES, ids=case_id)
def test_gradgradcheck(case):
    name, arguments = case
    apply, params = _as_function(build(name, arguments))
    assert torch.autograd.gradgradcheck(apply, (_inputs(name, arguments), *params))


@pytest.mark.parametrize("alpha", [0.0, 0.05, 0.5])
def test_helu_backward_follows_its_hysteresis_rule(alpha):
    x = torch.tensor([-1.0, -alpha, -0.6 * alpha, -1e-9, 0.0, 1e-9, 0.7, 3.0], requires_grad=True)
    upstream = torch.arange(1.0, 9.0)
    y = relulab.HeLU(alpha=alpha)(x)
    y.backward(upstream)
    assert torch.equal(y, torch.clamp(x.detach(), min=0.0))  # the forward is plain ReLU
    # dL/dx = g · 1[x > −α]: strictly greater, so x = −α itself gets nothing.
    expected = torch.tensor(
        [upstream[i].item() if v > -alpha else 0.0 for i, v in enumerate(x.tolist())]
    )
    assert torch.equal(x.grad, expected)


def test_helu_differs_from_relu_only_in_the_hysteresis_band():
    x = torch.linspace(-1, 1, 201, requires_grad=True)
    relulab.HeLU(alpha=0.05)(x).sum().backward()
    band = (x > -0.05) & (x <= 0)
    assert x.grad[band].eq(1).all() and x.grad[x <= -0.05].eq(0).all() and x.grad[x > 0].eq(1).all()


def test_helu_forward_mode_follows_the_same_rule():
    x = torch.tensor([-1.0, -0.03, 0.0, 0.5])
    _, tangent = torch.func.jvp(lambda v: relulab.HeLU(alpha=0.05)(v), (x,), (torch.ones(4),))
    assert tangent.tolist() == [0.0, 1.0, 1.0, 1.0]
