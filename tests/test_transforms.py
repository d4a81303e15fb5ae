"""The zoo under torch's transforms: torch.func, higher derivatives at extremes, torch.fx,
0-d and non-contiguous inputs, and (slow) torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import relulab

from conftest import ELEMENTWISE, build
from reference_formulas import reference


def _extremes(dtype: torch.dtype) -> torch.Tensor:
    top = torch.finfo(dtype).max
    values = [-top, -1e4, -100.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 100.0, 1e4, top]
    return torch.tensor(values, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_first_and_second_derivatives_are_finite_at_the_extremes(name, dtype):
    module = build(name, {}, dtype)

    def f(x):
        return module(x.reshape(1)).squeeze()

    x = _extremes(dtype)
    top = torch.finfo(dtype).max
    for order in (1, 2):
        derivative = f
        for _ in range(order):
            derivative = torch.func.grad(derivative)
        got = torch.func.vmap(derivative)(x).tolist()
        # Where the true derivative overflows the dtype (squared_relu's 2x at the maximum), inf
        # is right; everywhere else it must be finite.
        bad = [
            (v, g) for v, g in zip(x.tolist(), got)
            if abs(reference(name, {}, v, order)) <= top and not abs(g) <= top
        ]  # fmt: skip
        assert not bad, f"order {order}: (x, got) {bad}"


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_vmap_of_grad_equals_autograd(name):
    module = build(name, {})
    x = torch.linspace(-6, 6, 25, dtype=torch.float64)
    via_func = torch.func.vmap(torch.func.grad(lambda v: module(v.reshape(1)).squeeze()))(x)
    leaf = x.clone().requires_grad_()
    module(leaf).sum().backward()
    torch.testing.assert_close(via_func, leaf.grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_modules_trace_with_torch_fx(name, dtype):
    model = nn.Sequential(nn.Linear(4, 4), build(name, {}, torch.float32)).to(dtype)
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(3, 4).to(dtype)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_zero_dim_and_non_contiguous_inputs(name):
    module = build(name, {})
    grid = torch.linspace(-5, 5, 24, dtype=torch.float64).reshape(4, 6)
    with torch.no_grad():
        expected = module(grid.contiguous())
        assert torch.equal(module(grid.t()), expected.t())  # transposed view
        assert torch.equal(module(grid[:, ::2]), expected[:, ::2])  # strided view
        scalar = module(torch.tensor(1.5, dtype=torch.float64))
    assert (
        scalar.shape == ()
        and scalar.item() == module(torch.tensor([1.5], dtype=torch.float64)).item()
    )


COMPILED = ["golu", "sau", "mish", "gelu_tanh", "xsilu", "smelu", "helu", "softplus"]


@pytest.mark.slow
@pytest.mark.parametrize("name", COMPILED)
def test_torch_compile_matches_eager(name):
    module = relulab.get_activation(name)
    compiled = torch.compile(module, fullgraph=True)
    x = torch.randn(64, dtype=torch.float32) * 5
    torch.testing.assert_close(compiled(x), module(x), rtol=1e-6, atol=1e-7)
