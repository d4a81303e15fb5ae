"""Expanded gating ranges (Huang 2024): x·((1 + 2α)·g(x) − α) for arctan, Φ and σ gates.

Computed as x·(g + α·(2g − 1)), the same number, with 2g − 1 in closed form (2·arctan(x)/π,
erf(x/√2), tanh(x/2)): no cancellation, and no overflow of 1 + 2α for huge α.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from relulab.functional._common import (
    INV_SQRT_2,
    NORMAL_SATURATION,
    normal_cdf,
    upcast_low_precision,
)


def arctan_gate_and_centred(x: Tensor) -> tuple[Tensor, Tensor]:
    """g(x) = (arctan(x) + π/2)/π and h = 2g − 1 = 2·arctan(x)/π, from one arctan.

    arctan(x) + π/2 cancels for x ≪ 0; there arctan(−1/x) is the same number, so
    a = arctan(x) for x ≥ −1 and a = arctan(−1/x) for x < −1 give g = 1/2 + a/π (≥ 1/4) and
    g = a/π, both to full relative precision (h near 0⁻ only to absolute precision, as
    2g − 1). Only x < −1 takes −1/x, so autograd's 1/x² stays ≤ 1 (at x = −1e-300 it would
    be ∞, times arctan'(1e300) = 0).
    """
    far_left = x < -1.0
    a = torch.atan(torch.where(far_left, -1.0 / torch.where(far_left, x, -1.0), x))
    gate = torch.where(far_left, a / math.pi, 0.5 + a / math.pi)
    return gate, 2.0 * gate - 1.0


def arctan_gate(x: Tensor) -> Tensor:
    """g(x) = (arctan(x) + π/2)/π, exact for x ≪ 0 too (see arctan_gate_and_centred)."""
    return arctan_gate_and_centred(x)[0]


def _expanded(x: Tensor, gate: Tensor, centred: Tensor, alpha: float | Tensor) -> Tensor:
    """x·(g + α·(2g − 1)), ``centred`` being 2g − 1."""
    return x * (gate + alpha * centred)


@upcast_low_precision
def xatlu(x: Tensor, alpha: float | Tensor = 0.0) -> Tensor:
    """f(x) = x·((1 + 2α)·(arctan(x) + π/2)/π − α)."""
    return _expanded(x, *arctan_gate_and_centred(x), alpha)


@upcast_low_precision
def atlu(x: Tensor) -> Tensor:
    """f(x) = x·(arctan(x) + π/2)/π (xATLU with α fixed at 0)."""
    return x * arctan_gate(x)


@upcast_low_precision
def xgelu(x: Tensor, alpha: float | Tensor = 0.0) -> Tensor:
    """f(x) = x·((1 + 2α)·Φ(x) − α)."""
    saturated = x.clamp(-NORMAL_SATURATION, NORMAL_SATURATION)  # erf is ±1 exactly beyond
    return _expanded(x, normal_cdf(x), torch.erf(saturated * INV_SQRT_2), alpha)


@upcast_low_precision
def xsilu(x: Tensor, alpha: float | Tensor = 0.0) -> Tensor:
    """f(x) = x·((1 + 2α)·σ(x) − α)."""
    return _expanded(x, torch.sigmoid(x), torch.tanh(0.5 * x), alpha)
