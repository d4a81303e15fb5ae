"""Numerical helpers shared by the functional activations.

Every formula here keeps its value finite wherever the true value is finite and keeps its
autograd backward free of ``0 * inf``: a ``torch.where`` that discards a branch still
multiplies that branch's local derivative by zero, so discarded branches are evaluated on
safe inputs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

_LOW_PRECISION = (torch.float16, torch.bfloat16)

F = TypeVar("F", bound=Callable[..., Tensor])


# |x| beyond which Φ(x) is exactly 0 or 1 and φ(x) exactly 0 in float64 (and so in float32).
NORMAL_SATURATION = 40.0
# |t| beyond which σ(t) is exactly 0 or 1 in float64: σ(−745) is the last nonzero value.
SIGMOID_SATURATION = 800.0


# The dtype decisions below are torch.fx leaf functions, so that modules using them can be
# symbolically traced (fx cannot branch on a traced tensor's dtype).
@torch.fx.wrap
def to_compute_dtype(x: Tensor) -> Tensor:
    """float32 for float16/bfloat16 input, the input itself otherwise."""
    return x.float() if x.dtype in _LOW_PRECISION else x


@torch.fx.wrap
def like(result: Tensor, x: Tensor) -> Tensor:
    """``result`` cast back to the dtype of ``x``."""
    return result if result.dtype == x.dtype else result.to(x.dtype)


@torch.fx.wrap
def log_max(x: Tensor) -> float:
    """Largest t with exp(t) finite in the dtype of ``x``, less a margin of 1."""
    return math.log(torch.finfo(x.dtype).max) - 1.0


def upcast_low_precision(fn: F) -> F:
    """Evaluate ``fn`` in float32 for float16/bfloat16 input and cast the result back.

    Transcendental formulas lose most of their digits, and overflow early, in 16-bit
    arithmetic; torch's own CPU kernels compute these dtypes in float32 for the same reason.
    """

    @functools.wraps(fn)
    def wrapper(x: Tensor, *args, **kwargs) -> Tensor:
        return like(fn(to_compute_dtype(x), *args, **kwargs), x)

    return wrapper  # type: ignore[return-value]


def normal_cdf(x: Tensor) -> Tensor:
    """Φ(x) through erfc, accurate in both tails (1 + erf(x/√2) cancels to 0 for x ≪ 0).

    The argument is clamped where Φ is already exactly 0 or 1, which changes no value and
    keeps x² out of the derivatives (x·φ(x) would be ∞·0 at the dtype's maximum).
    """
    return 0.5 * torch.special.erfc(-x.clamp(-NORMAL_SATURATION, NORMAL_SATURATION) * INV_SQRT_2)


def saturating_sigmoid(t: Tensor) -> Tensor:
    """σ(t), with t clamped where σ is already exactly 0 or 1 (so βx = ±∞ never appears)."""
    return torch.sigmoid(t.clamp(-SIGMOID_SATURATION, SIGMOID_SATURATION))


def stable_softplus(v: Tensor) -> Tensor:
    """log(1 + eᵛ) = max(v, 0) + log1p(e^{−|v|}): one exponential, which never overflows.

    Exact everywhere, and every order of autograd derivative is right, at v = 0 too: written
    with ``v.abs()`` it would not be (torch takes |v|' = 0 there, which gives f'(0) = 0).
    −|v| is selected from −v and v instead, whose slopes are ∓1 on either side of 0, so
    f' = relu'(v) ± σ(−|v|) is σ(v) everywhere.
    """
    return torch.relu(v) + torch.log1p(torch.exp(torch.where(v > 0, -v, v)))


def masked_gradient(grad: Tensor, stopped: Tensor) -> Tensor:
    """``grad``, with 0 wherever the bool ``stopped`` is set: a selection, not a product, so
    an infinite or NaN ``grad`` is stopped too (``grad·mask`` would give NaN there), as
    torch's own ReLU backward does.

    This is ``torch.where(stopped, 0, grad)``, computed by torch's hardtanh backward on the
    mask as 0/1, which zeroes the gradient outside (−1, ½), i.e. where the mask is 1: the
    same selection, but vectorised, where ATen's CPU ``where`` is scalar code and some 3×
    slower. Compiled, both become the same select. Differentiable in ``grad``.
    """
    return torch.ops.aten.hardtanh_backward(grad, stopped.to(grad.dtype), -1.0, 0.5)


def normal_pdf(x: Tensor) -> Tensor:
    """φ(x) = exp(-x²/2)/√(2π)."""
    return torch.exp(-0.5 * x * x) * INV_SQRT_2PI
