"""The ReLU family's gradients against torch's own modules: the mask kernels' backward at 0,
at the kinks, at ±inf and NaN inputs and with ±inf and NaN upstream gradients; and the
derivative at each kink, for the fused kernel and the reference formula (``fused=False``).

The expectations come from torch's modules (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardsigmoid,
nn.Hardswish), never from relulab's code.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import relulab
from relulab.kernels import engine

inf, nan = math.inf, math.nan
# 0, every kink (0, ±3, 6), both thresholds below (shift 1, −α = −0.05), ±inf and NaN.
X = [-inf, -7.0, -6.0, -3.0, -1.0, -0.05, -0.0, 0.0, 0.5, 1.0, 3.0, 6.0, 7.0, inf, nan]
UPSTREAM = [1.5, -2.0, 0.0, inf, -inf, nan]


def _shifted(by: float):
    return lambda x: x + by


# spec → (torch's module, the input it sees). shifted_relu is ReLU at x − shift, and HeLU's
# rule (the gradient passes where x > −α) is ReLU's backward at x + α: a float sum is > 0
# exactly where x > −α.
TORCH = {
    "relu": (nn.ReLU(), None),
    "relu6": (nn.ReLU6(), None),
    "leaky_relu": (nn.LeakyReLU(), None),
    "leaky_relu(negative_slope=0.2)": (nn.LeakyReLU(0.2), None),
    "hard_sigmoid": (nn.Hardsigmoid(), None),
    "shifted_relu": (nn.ReLU(), _shifted(-1.0)),
    "helu": (nn.ReLU(), _shifted(0.05)),
}


def _grid(dtype: torch.dtype, repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Every x against every upstream gradient (tiled ``repeat`` times)."""
    x = torch.tensor(X, dtype=dtype).repeat_interleave(len(UPSTREAM))
    upstream = torch.tensor(UPSTREAM, dtype=dtype).repeat(len(X))
    return x.repeat(repeat), upstream.repeat(repeat)


def _gradient(function, x: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    leaf = x.clone().requires_grad_()
    function(leaf).backward(upstream)
    return leaf.grad


def _torchs(spec: str, x: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    """torch's gradient, one element at a time: torch's scalar code is its definition. (Its
    vectorised hardtanh_backward, behind nn.ReLU6, stops a NaN x's gradient where the
    scalar code, ``x <= min || x >= max ? 0 : grad``, lets it through as ReLU's does, so
    which one a NaN gets in one call depends on where it sits in the tensor.)"""
    module, transform = TORCH[spec]
    module = module.to(x.dtype)
    function = module if transform is None else (lambda v: module(transform(v)))
    grad = torch.cat(
        [_gradient(function, x[i : i + 1], upstream[i : i + 1]) for i in range(len(x))]
    )
    if spec == "hard_sigmoid":
        # torch's backward multiplies by a float32 1/6, in float64 too; relulab divides by
        # 6 in the input's dtype. Where torch lets the gradient through, expect upstream/6.
        passes = _gradient(function, x, torch.ones_like(x)) != 0
        grad = torch.where(passes, upstream / 6, grad)
    return grad


def _assert_same(got: torch.Tensor, want: torch.Tensor, x: torch.Tensor, g: torch.Tensor):
    same = (got == want) | (got.isnan() & want.isnan())
    assert same.all(), list(zip(x[~same].tolist(), g[~same].tolist(), got[~same].tolist(),
                                want[~same].tolist()))  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
@pytest.mark.parametrize("spec", list(TORCH))
def test_mask_backward_is_torchs_at_kinks_infinities_and_nan(spec, fused, dtype):
    """An infinite upstream gradient where the function is flat gives 0 (not ∞·0 = NaN), and
    a NaN input's gradient is what torch's backward makes of it (through, stopped, sloped)."""
    x, upstream = _grid(dtype)
    if spec == "relu6" and not fused:  # F.relu6 is torch's own: NaN as its vectorised code has it
        upstream, x = upstream[~x.isnan()], x[~x.isnan()]
    module = relulab.get_activation(spec, fused=fused).to(dtype)
    leaf = x.clone().requires_grad_()
    y = module(leaf)
    assert ("Fused" in type(y.grad_fn).__name__) == fused
    y.backward(upstream)
    _assert_same(leaf.grad, _torchs(spec, x, upstream), x, upstream)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("spec", list(TORCH))
def test_compiled_mask_backward_is_torchs(spec, dtype):
    """The same, through the compiled kernels (which build their select differently)."""
    repeat = -(-engine.COMPILE_MIN_NUMEL // (len(X) * len(UPSTREAM)))
    x, upstream = _grid(dtype, repeat)
    with engine.compilation(True):
        got = _gradient(relulab.get_activation(spec).to(dtype), x, upstream)
    assert not engine.failures, engine.failures
    x, upstream = _grid(dtype)
    _assert_same(
        got, _torchs(spec, x, upstream).repeat(repeat), x.repeat(repeat), upstream.repeat(repeat)
    )


# Each activation's kinks and torch's module for it.
KINKS = {
    "relu": (nn.ReLU(), [0.0]),
    "relu6": (nn.ReLU6(), [0.0, 6.0]),
    "hard_sigmoid": (nn.Hardsigmoid(), [-3.0, 3.0]),
    "leaky_relu": (nn.LeakyReLU(), [0.0]),
    "hard_swish": (nn.Hardswish(), [-3.0, 3.0]),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", list(KINKS))
def test_the_derivative_at_each_kink_is_torchs(name, dtype):
    """relu'(0) = 0; relu6' = 0 at 0 and 6; hard_sigmoid' = 0 at ±3 (torch's open interval);
    leaky_relu'(0) = slope; hard_swish' = 0 and 1 at −3 and 3: fused and reference."""
    module, kinks = KINKS[name]
    x = torch.tensor(kinks, dtype=dtype)
    upstream = torch.ones_like(x)
    want = _gradient(module.to(dtype), x, upstream)
    for fused in (True, False):
        got = _gradient(relulab.get_activation(name, fused=fused).to(dtype), x, upstream)
        # A wrong convention is off by 1/6 at least; torch's 1/6 is a float32 one.
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0, msg=f"fused={fused}")
