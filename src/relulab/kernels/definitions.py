"""What the fused kernels compute: for each elementwise activation, its forward (the exact
formula of :mod:`relulab.functional`), what it keeps for backward, and a hand-derived backward.

A backward takes (saved, grad, *params) and returns grad_x followed by one entry per
parameter: grad·∂f/∂p elementwise (the engine sums it to the parameter's shape), or None
where the parameter has no derivative. Everything here is plain torch, so the same code
runs eagerly or compiled, and differentiates again for double backward.

What is saved:

- ``mask``: a bool (1 byte) per element, for the piecewise-linear ReLU family, whose
  derivative only needs to know which piece x fell in. The backward receives it as a bool
  and selects by it (never ``grad·mask``, which turns an infinite upstream gradient into
  NaN where the piece is flat), following torch's own backward of each function at its
  kinks, at ±inf and at NaN. The selections are torch's own backward ops, with the mask as
  0/1 standing in for x: the same as ``torch.where``, but vectorised in eager mode;
- ``output``: y, where f' is a function of y (ELU, SELU, CELU, softplus, sigmoid, tanh).
  The next layer usually keeps y anyway, so this costs no memory of its own;
- ``input``: x, for everything else.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from relulab import functional as F
from relulab.functional import _common
from relulab.functional._common import (
    INV_SQRT_2,
    NORMAL_SATURATION,
    SIGMOID_SATURATION,
    masked_gradient,
    normal_cdf,
    normal_pdf,
)
from relulab.functional.rectifiers import helu_stops
from relulab.functional.smoothed import smoothed_relu

Backward = Callable[..., tuple[Tensor | None, ...]]


@dataclass(frozen=True, eq=False)
class KernelDef:
    """One activation's fused kernel: forward, what it saves, backward, parameter names.

    An activation declares its kernel where it is registered
    (``@register("relu", kernel=definitions.relu, ...)``); nothing here is keyed by name.
    """

    name: str
    forward: Callable[..., Tensor]
    backward: Backward
    saves: str  # "mask", "output" or "input"
    params: tuple[str, ...] = ()  # the module's attributes passed after x, in this order
    mask: Callable[..., Tensor] | None = None  # saves == "mask": which piece x is in
    # The forward is one ATen kernel already (for float32 and float64): compiling it gains
    # nothing; 16-bit inputs still compile, which fuses their float32 detour.
    single_op: bool = False
    # (x, *params) ↦ can this kernel serve the call; where not, the reference formula runs.
    accepts: Callable[..., bool] | None = None
    # The first parameter may hold one value per channel (dim 1 of x), as PReLU's weight does:
    # the kernel then sees x as (N, C, rest), and that parameter's gradient is summed to (C,).
    per_channel: bool = False


def kernel(
    saves: str,
    forward: Callable[..., Tensor],
    params: tuple[str, ...] = (),
    **options: Any,
) -> Callable[[Backward], KernelDef]:
    """Decorator: a hand-derived backward becomes the :class:`KernelDef` named after it.

    ``options`` are the other KernelDef fields (mask, single_op, accepts, per_channel).
    """
    if saves not in ("mask", "output", "input"):
        raise ValueError(f"a kernel saves 'mask', 'output' or 'input', not {saves!r}")
    if (saves == "mask") != (options.get("mask") is not None):
        raise ValueError("a kernel that saves a mask needs mask=..., and only such a kernel")

    def decorator(backward: Backward) -> KernelDef:
        return KernelDef(backward.__name__, forward, backward, saves, params, **options)

    return decorator


def _sigmoid_pair(t: Tensor) -> tuple[Tensor, Tensor]:
    """σ(t) and σ(−t) = 1 − σ(t), each to full relative precision, from one exponential:
    with e = e^{−|t|}, they are 1/(1 + e) and e/(1 + e)."""
    e = torch.exp(-t.abs().clamp(max=SIGMOID_SATURATION))
    large, small = 1.0 / (1.0 + e), e / (1.0 + e)
    positive = t >= 0
    return torch.where(positive, large, small), torch.where(positive, small, large)


# ReLU family: a 1-byte mask is all the backward needs. Each mask is one comparison chosen
# so that NaN lands where torch's backward puts it: torch's ReLU, ReLU6 (hardtanh) and
# HeLU's rule let a NaN x's gradient through, its Hardsigmoid stops it, and its LeakyReLU
# scales it by the slope.


@kernel("mask", F.relu, mask=lambda x: x <= 0, single_op=True)  # where the gradient stops
def relu(stops: Tensor, grad: Tensor) -> tuple[Tensor]:
    return (masked_gradient(grad, stops),)  # torch's threshold_backward: 0 where x ≤ 0


@kernel("mask", F.relu6, mask=lambda x: (x <= 0) | (x >= 6), single_op=True)
def relu6(stops: Tensor, grad: Tensor) -> tuple[Tensor]:
    return (masked_gradient(grad, stops),)  # torch's hardtanh_backward: 0 at 0 and 6 too


@kernel("mask", F.leaky_relu, ("negative_slope",), mask=lambda x, slope: x > 0, single_op=True)
def leaky_relu(positive: Tensor, grad: Tensor, slope: float) -> tuple[Tensor, None]:
    # torch's leaky_relu_backward (grad where x > 0, grad·slope elsewhere), fed the mask.
    return torch.ops.aten.leaky_relu_backward(grad, positive.to(grad.dtype), slope, False), None


# ReLU's rule at x − shift: a float difference is ≤ 0 exactly where x ≤ shift.
@kernel("mask", F.shifted_relu, ("shift",), mask=lambda x, shift: x <= shift)
def shifted_relu(stops: Tensor, grad: Tensor, shift: float) -> tuple[Tensor, None]:
    return masked_gradient(grad, stops), None


@kernel("mask", F.helu, ("alpha",), mask=helu_stops)
def helu(stops: Tensor, grad: Tensor, alpha: float) -> tuple[Tensor, None]:
    return masked_gradient(grad, stops), None  # the hysteresis rule, as F.helu's backward


# torch's hardsigmoid_backward: grad/6 strictly inside (−3, 3), 0 at ±3, outside and at NaN.
@kernel("mask", F.hard_sigmoid, mask=lambda x: (x > -3) & (x < 3))
def hard_sigmoid(inside: Tensor, grad: Tensor) -> tuple[Tensor]:
    # grad/6 where inside, else 0: threshold_backward zeroes where the 0/1 mask is ≤ ½. Not
    # torch's hardsigmoid_backward, whose 1/6 is a float32 one even in float64.
    return (torch.ops.aten.threshold_backward(grad / 6.0, inside.to(grad.dtype), 0.5),)


# f' as a function of y. The next layer usually keeps y anyway, so y costs no memory of its
# own. Where y saturates (y → −α for the ELUs, y → ±1 for sigmoid and tanh), f' computed from
# y keeps its absolute accuracy, a few ulps of the largest slope, but not its relative one:
# torch's own backward of these (from the result) does the same.


# With α < 0 the left branch is positive too, and y no longer tells which branch x was in.
@kernel("output", F.elu, ("alpha",), single_op=True, accepts=lambda x, alpha: alpha >= 0)
def elu(y: Tensor, grad: Tensor, alpha: float) -> tuple[Tensor, None]:
    return grad * torch.where(y > 0, 1.0, y + alpha), None  # α·eˣ = y + α for x ≤ 0


@kernel("output", F.selu, single_op=True)
def selu(y: Tensor, grad: Tensor) -> tuple[Tensor]:
    scale, alpha = F.SELU_SCALE, F.SELU_ALPHA
    return (grad * torch.where(y > 0, scale, y + scale * alpha),)  # λαeˣ = y + λα


@kernel("output", F.celu, ("alpha",), single_op=True)
def celu(y: Tensor, grad: Tensor, alpha: float) -> tuple[Tensor, None]:
    return grad * torch.where(y > 0, 1.0, y / alpha + 1.0), None  # e^{x/α} = y/α + 1


@kernel("output", F.softplus, ("beta", "threshold"))
def softplus(
    y: Tensor, grad: Tensor, beta: float, threshold: float | None
) -> tuple[Tensor, None, None]:
    # σ(βx) = 1 − e^{−βy}, since e^{βy} = 1 + e^{βx}; expm1 keeps the left tail exact.
    slope = -torch.expm1(-beta * y)
    if threshold is not None:
        slope = torch.where(beta * y > threshold, 1.0, slope)
    return grad * slope, None, None


@kernel("output", F.sigmoid, single_op=True)
def sigmoid(y: Tensor, grad: Tensor) -> tuple[Tensor]:
    return (grad * y * (1.0 - y),)


@kernel("output", F.tanh, single_op=True)
def tanh(y: Tensor, grad: Tensor) -> tuple[Tensor]:
    return (grad * ((1.0 - y) * (1.0 + y)),)


# The rest keep x.


# A per-channel weight needs a channel axis (torch says so, from the reference).
@kernel(
    "input",
    F.prelu,
    ("weight",),
    accepts=lambda x, w: x.dim() >= 2 or w.numel() == 1,
    per_channel=True,
)
def prelu(x: Tensor, grad: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    a = weight.reshape(1, -1, 1) if weight.numel() > 1 else weight  # x arrives as (N, C, rest)
    positive = x > 0
    return torch.where(positive, grad, grad * a), torch.where(positive, 0.0, grad * x)


@kernel("input", F.squared_relu)
def squared_relu(x: Tensor, grad: Tensor) -> tuple[Tensor]:
    return (grad * (2.0 * torch.relu(x)),)


def _hard_sigmoid_slope(x: Tensor) -> Tensor:
    # Strictly inside, as torch's hardsigmoid and hardswish backward; not where(…, 1/6, 0),
    # whose 1/6 is a float32 one.
    return ((x > -3) & (x < 3)).to(x.dtype) / 6.0


@kernel("input", F.hard_swish)
def hard_swish(x: Tensor, grad: Tensor) -> tuple[Tensor]:
    return (grad * (F.hard_sigmoid(x) + x * _hard_sigmoid_slope(x)),)


@kernel("input", F.hard_mish)
def hard_mish(x: Tensor, grad: Tensor) -> tuple[Tensor]:
    inside = (x >= -2) & (x <= 0)
    return (grad * (0.5 * (x + 2.0).clamp(0.0, 2.0) + torch.where(inside, 0.5 * x, 0.0)),)


@kernel("input", F.smelu, ("beta",))
def smelu(x: Tensor, grad: Tensor, beta: float) -> tuple[Tensor, None]:
    ramp = torch.where(x >= -beta, (x + beta) / (2.0 * beta), 0.0)
    return grad * torch.where(x >= beta, 1.0, ramp), None


@kernel("input", F.gelu)
def gelu(x: Tensor, grad: Tensor) -> tuple[Tensor]:
    # Φ(x) + x·φ(x); φ's argument clamped where it is 0 anyway, so x² never overflows.
    return (
        grad * (normal_cdf(x) + x * normal_pdf(x.clamp(-NORMAL_SATURATION, NORMAL_SATURATION))),
    )


@kernel("input", F.gelu_tanh)
def gelu_tanh(x: Tensor, grad: Tensor) -> tuple[Tensor]:
    # f = x·σ(2u), u = k(x + c·x³): f' = σ(2u) + x·σ(2u)σ(−2u)·2k(1 + 3c·x²)
    k, c, saturation = F.gated.GELU_TANH_K, F.gated.GELU_TANH_C, F.gated.GELU_TANH_SATURATION
    inner = x.clamp(-saturation, saturation)
    s, s_neg = _sigmoid_pair(2.0 * k * (inner + c * inner * inner * inner))
    du = 2.0 * k * (1.0 + 3.0 * c * inner * inner)
    return (grad * (s + x * (s * s_neg) * du),)


def _gated_derivative(x: Tensor, slope: float | Tensor) -> tuple[Tensor, Tensor]:
    """For f = x·σ(βx): f' = σ + βx·σ·σ(−βx), and the common factor σ·σ(−βx)."""
    s, s_neg = _sigmoid_pair(slope * x)
    both = s * s_neg
    return s + slope * (x * both), both  # x·both first: slope·x alone can overflow


@kernel("input", F.quick_gelu)
def quick_gelu(x: Tensor, grad: Tensor) -> tuple[Tensor]:
    return (grad * _gated_derivative(x, F.gated.QUICK_GELU_SLOPE)[0],)


@kernel("input", F.silu, single_op=True)
def silu(x: Tensor, grad: Tensor) -> tuple[Tensor]:
    return (grad * _gated_derivative(x, 1.0)[0],)


@kernel("input", F.swish, ("beta",))
def swish(x: Tensor, grad: Tensor, beta: float | Tensor) -> tuple[Tensor, Tensor]:
    slope, both = _gated_derivative(x, beta)
    return grad * slope, grad * (x * (x * both))  # ∂f/∂β = x²·σσ(−βx), x² kept from overflowing


@kernel("input", F.mish)
def mish(x: Tensor, grad: Tensor) -> tuple[Tensor]:
    # f = x·g, g = tanh(sp(x)) = n/(n + 2), n = e(e + 2), e = eˣ (x capped at 40, where g = 1):
    # f' = g + x·sech²(sp)·σ(x) = g + x·4e(1 + e)/(n + 2)², one exponential for all of it.
    e = torch.exp(x.clamp(max=F.gated.MISH_SATURATION))
    n = e * (e + 2.0)
    denominator = n + 2.0
    return (grad * (n / denominator + x * (4.0 * e * (1.0 + e) / denominator / denominator)),)


@kernel("input", F.golu, ("scale", "shift", "growth"))
def golu(x: Tensor, grad: Tensor, scale, shift, growth) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    # gate = exp(−b·e^t), t = −c·x clamped where e^t is still finite (the gate is exactly 0
    # beyond): f' = a·(gate + b·c·x·e^t·gate).
    t = (-growth * x).clamp(max=_common.log_max(x))
    e = torch.exp(t)
    gate = torch.exp(-shift * e)
    gate_e = e * gate  # ≤ e, which is finite: no overflow
    return (
        grad * (scale * (gate + shift * growth * x * gate_e)),
        grad * (x * gate),  # ∂f/∂a
        grad * (-scale * x * gate_e),  # ∂f/∂b
        grad * (scale * shift * x * (x * gate_e)),  # ∂f/∂c
    )


@kernel("input", F.sau, ("alpha", "sigma"))
def sau(x: Tensor, grad: Tensor, alpha, sigma: float) -> tuple[Tensor, Tensor, None]:
    # f' = α + (1 − α)·Φ(x/σ); ∂f/∂α = x − σh(x/σ) = −σh(−x/σ), the smoothed ReLU reflected.
    z = x / sigma
    return grad * (alpha + (1.0 - alpha) * normal_cdf(z)), grad * -smoothed_relu(-x, sigma), None


def _expanded(gate: Callable, gate_slope: Callable, centred: Callable, name: str) -> Backward:
    """f = x·(g + α·(2g − 1)): f' = g + α(2g − 1) + x·g'·(1 + 2α); ∂f/∂α = x·(2g − 1)."""

    def backward(x: Tensor, grad: Tensor, alpha) -> tuple[Tensor, Tensor]:
        h = centred(x)
        return grad * (gate(x) + alpha * h + x * gate_slope(x) * (1.0 + 2.0 * alpha)), grad * (
            x * h
        )

    backward.__name__ = backward.__qualname__ = name
    return backward


def _arctan_slope(x: Tensor) -> Tensor:
    return 1.0 / (math.pi * (1.0 + x * x))  # 1/∞ = 0 where x² overflows


def _normal_slope(x: Tensor) -> Tensor:
    return normal_pdf(x.clamp(-NORMAL_SATURATION, NORMAL_SATURATION))


def _logistic_slope(x: Tensor) -> Tensor:
    s, s_neg = _sigmoid_pair(x)
    return s * s_neg


def _erf_centred(x: Tensor) -> Tensor:
    return torch.erf(x.clamp(-NORMAL_SATURATION, NORMAL_SATURATION) * INV_SQRT_2)


_ARCTAN = (F.arctan_gate, _arctan_slope, lambda x: F.expanded.arctan_gate_and_centred(x)[1])
xatlu = kernel("input", F.xatlu, ("alpha",))(_expanded(*_ARCTAN, name="xatlu"))
xgelu = kernel("input", F.xgelu, ("alpha",))(
    _expanded(normal_cdf, _normal_slope, _erf_centred, name="xgelu")
)
xsilu = kernel("input", F.xsilu, ("alpha",))(
    _expanded(torch.sigmoid, _logistic_slope, lambda x: torch.tanh(0.5 * x), name="xsilu")
)


@kernel("input", F.atlu)
def atlu(x: Tensor, grad: Tensor) -> tuple[Tensor]:
    return (xatlu.backward(x, grad, 0.0)[0],)


@kernel("input", F.poly_relu, ("coefficients",))
def poly_relu(x: Tensor, grad: Tensor, coefficients: Tensor) -> tuple[Tensor, Tensor]:
    # f' = Σₖ k·cₖ·xᵏ⁻¹ by Horner; ∂L/∂cₖ = Σ grad·xᵏ, reduced here to the coefficients' shape.
    degree = coefficients.shape[0] - 1
    slope = torch.zeros_like(x)
    for k in range(degree, 0, -1):
        slope = slope * x + k * coefficients[k]
    powers, power = [], torch.ones_like(x)
    for _ in range(degree + 1):
        powers.append((grad * power).sum())
        power = power * x
    return grad * slope, torch.stack(powers).to(coefficients.dtype)
