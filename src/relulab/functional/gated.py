"""Self-gated activations f(x) = x·g(x): GELU, SiLU/Swish, Mish, GoLU, and the plain gates."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from relulab.functional import _common
from relulab.functional._common import (
    normal_cdf,
    saturating_sigmoid,
    upcast_low_precision,
)

GELU_TANH_K = math.sqrt(2.0 / math.pi)
GELU_TANH_C = 0.044715
# Beyond |x| = 25 the tanh-GELU gate is exactly 0 or 1 in float64 (its logistic argument is
# below −745 or above +37), so clamping there changes no value and keeps x³ from overflowing.
GELU_TANH_SATURATION = 25.0
QUICK_GELU_SLOPE = 1.702
MISH_SATURATION = 40.0


@upcast_low_precision
def sigmoid(x: Tensor) -> Tensor:
    """f(x) = 1/(1 + e^{−x})."""
    return torch.sigmoid(x)


@upcast_low_precision
def tanh(x: Tensor) -> Tensor:
    """f(x) = tanh(x)."""
    return torch.tanh(x)


@upcast_low_precision
def gelu(x: Tensor) -> Tensor:
    """f(x) = x·Φ(x), with Φ from erfc so that the left tail keeps its digits."""
    return x * normal_cdf(x)


@upcast_low_precision
def gelu_tanh(x: Tensor) -> Tensor:
    """f(x) = x/2·(1 + tanh(√(2/π)(x + 0.044715x³))), computed as x·σ(2u)."""
    # 1 + tanh(u) = 2σ(2u) has no cancellation for u ≪ 0.
    inner = x.clamp(-GELU_TANH_SATURATION, GELU_TANH_SATURATION)
    u = GELU_TANH_K * (inner + GELU_TANH_C * inner * inner * inner)
    return x * saturating_sigmoid(2.0 * u)


@upcast_low_precision
def quick_gelu(x: Tensor) -> Tensor:
    """f(x) = x·σ(1.702x), GELU's sigmoid approximation."""
    return x * saturating_sigmoid(QUICK_GELU_SLOPE * x)


@upcast_low_precision
def silu(x: Tensor) -> Tensor:
    """f(x) = x·σ(x)."""
    return F.silu(x)


@upcast_low_precision
def swish(x: Tensor, beta: float | Tensor = 1.0) -> Tensor:
    """f(x) = x·σ(βx)."""
    return x * saturating_sigmoid(beta * x)


def mish_gate(x: Tensor) -> Tensor:
    """tanh(softplus(x)) = n/(n + 2) with n = eˣ·(eˣ + 2): one exponential, no cancellation.

    (1 + eˣ)² = n + 1, and tanh(log(1 + eˣ)) = ((1 + eˣ)² − 1)/((1 + eˣ)² + 1). The argument is
    clamped at 40, where the gate is exactly 1 already, so e^{2x} cannot overflow.
    """
    e = torch.exp(x.clamp(max=MISH_SATURATION))
    n = e * (e + 2.0)
    return n / (n + 2.0)


@upcast_low_precision
def mish(x: Tensor) -> Tensor:
    """f(x) = x·tanh(softplus(x)).

    Not ``F.mish``: its double backward is NaN for large x (≥ 100 in float32). The gate needs
    one exponential (see :func:`mish_gate`) where the textbook form needs three.
    """
    return x * mish_gate(x)


@upcast_low_precision
def golu(
    x: Tensor,
    scale: float | Tensor = 1.0,
    shift: float | Tensor = 1.0,
    growth: float | Tensor = 1.0,
) -> Tensor:
    """f(x) = scale·x·exp(−shift·exp(−growth·x)), the Gompertz-gated linear unit."""
    # Far left exp(−growth·x) overflows and the gate is exactly 0; clamping its exponent where
    # exp stays finite keeps the value and turns the backward's 0·inf into 0·finite.
    exponent = (-growth * x).clamp(max=_common.log_max(x))  # via the module: an fx leaf
    gate = torch.exp(-shift * torch.exp(exponent))
    return scale * (x * gate)
