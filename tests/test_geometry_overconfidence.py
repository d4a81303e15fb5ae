"""Far-from-data confidence against a numpy forward pass and the rays' limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from relulab.errors import UserError
from relulab.geometry.overconfidence import confidence_along_rays


def numpy_net(layer1: nn.Linear, layer2: nn.Linear, activation, x: np.ndarray) -> np.ndarray:
    w1, b1 = layer1.weight.detach().double().numpy(), layer1.bias.detach().double().numpy()
    w2, b2 = layer2.weight.detach().double().numpy(), layer2.bias.detach().double().numpy()
    logits = activation(x @ w1.T + b1) @ w2.T + b2
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).max(axis=1)


@pytest.mark.parametrize(
    ("module", "function"), [(nn.ReLU(), lambda z: np.maximum(z, 0)), (nn.Tanh(), np.tanh)]
)
def test_confidence_equals_a_numpy_forward_at_every_alpha(module, function):
    torch.manual_seed(0)
    layer1, layer2 = nn.Linear(5, 16), nn.Linear(16, 4)
    model = nn.Sequential(layer1, module, layer2)
    x = torch.randn(30, 5)
    curves = confidence_along_rays(model, x, alphas=[1, 10, 100, 1e4])
    for j, alpha in enumerate([1, 10, 100, 1e4]):
        expected = numpy_net(layer1, layer2, function, alpha * x.double().numpy())
        np.testing.assert_allclose(curves.confidence[:, j], expected, rtol=1e-12)
    assert model[0].weight.dtype == torch.float32  # the user's model is left as it was


def test_relu_becomes_certain_far_away_and_tanh_tends_to_its_finite_limit():
    torch.manual_seed(1)
    layer1, layer2 = nn.Linear(5, 16), nn.Linear(16, 4)
    x = torch.randn(30, 5)
    relu = confidence_along_rays(nn.Sequential(layer1, nn.ReLU(), layer2), x, alphas=[1e6])
    assert relu.confidence.min() > 1 - 1e-9  # along every ray: A x has a unique top entry
    tanh = confidence_along_rays(nn.Sequential(layer1, nn.Tanh(), layer2), x, alphas=[1e6])
    # tanh(alpha w.x + b) -> sign(w.x): the logits, hence the confidence, tend to a finite
    # limit (written out here, the bias of the first layer dropping out)
    w1 = layer1.weight.detach().double().numpy()
    w2, b2 = layer2.weight.detach().double().numpy(), layer2.bias.detach().double().numpy()
    logits = np.sign(x.double().numpy() @ w1.T) @ w2.T + b2
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    limit = (p / p.sum(axis=1, keepdims=True)).max(axis=1)
    np.testing.assert_allclose(tanh.confidence[:, 0], limit, rtol=1e-9)
    assert limit.min() < 0.999  # so the bounded net does not become certain


def test_bad_alphas_and_inputs_are_refused():
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(UserError, match="alphas"):
        confidence_along_rays(model, torch.randn(3, 2), alphas=[])
    with pytest.raises(UserError, match="batch of inputs"):
        confidence_along_rays(model, torch.randn(2))
