"""Piecewise-linear and piecewise-polynomial rectifiers: ReLU and its close relatives.

These are exact in every floating dtype, so none of them needs a float32 detour.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from relulab.functional._common import masked_gradient


def identity(x: Tensor) -> Tensor:
    """f(x) = x (a removed activation, e.g. after ReLU culling)."""
    return x


def relu(x: Tensor) -> Tensor:
    """f(x) = max(0, x)."""
    return F.relu(x)


def relu6(x: Tensor) -> Tensor:
    """f(x) = min(max(0, x), 6)."""
    return F.relu6(x)


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    """f(x) = x for x ≥ 0, negative_slope·x otherwise."""
    return F.leaky_relu(x, negative_slope)


def prelu(x: Tensor, weight: Tensor) -> Tensor:
    """f(x) = x for x ≥ 0, a·x otherwise; ``weight`` holds one a, or one per channel (dim 1)."""
    return F.prelu(x, weight.to(x.dtype))


def shifted_relu(x: Tensor, shift: float = 1.0) -> Tensor:
    """f(x) = max(0, x − shift)."""
    return F.relu(x - shift)


def squared_relu(x: Tensor) -> Tensor:
    """f(x) = max(0, x)²."""
    return F.relu(x).square()


def hard_sigmoid(x: Tensor) -> Tensor:
    """f(x) = relu6(x + 3)/6 (torch's definition), with torch's derivative: 1/6 strictly
    inside (−3, 3), and 0 at ±3, outside and at NaN, as ``nn.Hardsigmoid``'s backward.

    Not ``F.hardsigmoid``: its backward multiplies by a float32 1/6 even in float64.
    """
    # Neither changes a value: hardtanh's backward stops the gradient at ±3 (clamp's would
    # pass it there), and clamp's stops it at NaN (hardtanh's would pass it).
    return (F.hardtanh(x, -3.0, 3.0).clamp(-3.0, 3.0) + 3.0) / 6.0


def hard_swish(x: Tensor) -> Tensor:
    """f(x) = x·relu6(x + 3)/6, with torch's derivative at ±3 (0 and 1, as ``nn.Hardswish``'s
    backward: the outer pieces' slopes).

    Written as x·hard_sigmoid(x): torch's fused kernel forms x·relu6(x + 3) first and so
    overflows to inf near the dtype's maximum, where the true value is x.
    """
    return x * hard_sigmoid(x)


def hard_mish(x: Tensor) -> Tensor:
    """f(x) = x·clamp(x + 2, 0, 2)/2 (timm's piecewise-quadratic Mish)."""
    return x * (0.5 * (x + 2.0).clamp(0.0, 2.0))


def smelu(x: Tensor, beta: float = 2.0) -> Tensor:
    """f(x) = 0 for x ≤ −β, (x + β)²/(4β) for |x| ≤ β, x for x ≥ β."""
    # The quadratic piece sees x clamped to [−β, β], so it stays finite (and its gradient
    # stays out of the result) where the linear pieces apply.
    inner = x.clamp(-beta, beta)
    return torch.where(x >= beta, x, (inner + beta).square() / (4.0 * beta))


def helu_stops(x: Tensor, alpha: float) -> Tensor:
    """Where HeLU's backward stops the gradient: x ≤ −α (a NaN x lets it through, as in
    ReLU's backward). A bool, one byte per element."""
    return x <= -alpha


class _HeLUFunction(torch.autograd.Function):
    """ReLU forward; the backward lets the gradient through wherever x > −α."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, alpha: float) -> Tensor:
        return F.relu(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, alpha = inputs
        stops = helu_stops(x, alpha)
        ctx.save_for_backward(stops)
        # For jvp: an attribute, not save_for_forward, which rejects torch.fx's proxies (the
        # mask is never modified in place, so no version check is lost).
        ctx.stops = stops

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None]:
        (stops,) = ctx.saved_tensors
        return masked_gradient(grad_output, stops), None

    @staticmethod
    def jvp(ctx, x_tangent: Tensor, alpha_tangent: None) -> Tensor:
        # Forward mode follows the same hysteresis rule as the backward pass.
        return masked_gradient(x_tangent, ctx.stops)


def helu(x: Tensor, alpha: float = 0.05) -> Tensor:
    """f(x) = max(0, x); backward: ∂f/∂x := 1[x > −α] (hysteresis, not the true derivative)."""
    return _HeLUFunction.apply(x, alpha)
