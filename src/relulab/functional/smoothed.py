"""SAU: Leaky-ReLU convolved with a Gaussian, in closed form."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from relulab.functional._common import INV_SQRT_2, normal_cdf, normal_pdf, upcast_low_precision

_SQRT_HALF_PI = math.sqrt(math.pi / 2.0)

# |x/σ| ≥ 40 puts Φ at exactly 0 or 1 and φ at exactly 0 in float64; clamping there keeps
# x/σ finite for tiny σ without changing any value.
_SAU_SATURATION = 40.0


@torch.fx.wrap  # a leaf for fx: the dtype decides the formula
def smoothed_relu(x: Tensor, sigma: float = 1.0) -> Tensor:
    """E[relu(x + σZ)] = x·Φ(x/σ) + σ·φ(x/σ) for Z ~ N(0, 1), exact in both tails.

    For x < 0 the two terms cancel, to σφ(z)/z² for z = x/σ ≪ 0, which multiplies their
    rounding by up to z², the function's own condition number there. In float32 that stays
    within the dtype's accuracy (|z| < 14 before φ underflows), but in float64 the rounding
    of exp(−z²/2)'s argument would cost 1e-10, so float64 uses σ·φ(z)·(1 − t·R(t)), t = −z,
    with Mills' ratio R(t) = √(π/2)·erfcx(t/√2) instead (erfcx is exact, and slow: scalar).
    """
    z = (x / sigma).clamp(-_SAU_SATURATION, _SAU_SATURATION)
    right = x * normal_cdf(z) + sigma * normal_pdf(z)
    if x.dtype != torch.float64:
        return right
    t = (-z).clamp(min=0.0)
    mills_ratio = _SQRT_HALF_PI * torch.special.erfcx(t * INV_SQRT_2)
    left = sigma * normal_pdf(z) * (1.0 - t * mills_ratio)
    return torch.where(z < 0, left, right)


@upcast_low_precision
def sau(x: Tensor, alpha: float | Tensor = 0.15, sigma: float = 1.0) -> Tensor:
    """f(x) = αx + (1 − α)·(x·Φ(x/σ) + σ·φ(x/σ)).

    Equal to (1+α)/2·x + (1−α)/2·x·erf(x/(σ√2)) + (1−α)·σ/√(2π)·exp(−x²/(2σ²)), the closed
    erf form; the smoothed ReLU term is computed by :func:`smoothed_relu`, which keeps α = 0
    exact in the left tail.
    """
    return alpha * x + (1.0 - alpha) * smoothed_relu(x, sigma)
