"""Polynomial stand-ins for ReLU (AutoReP) and DaPa, their closed-form least-squares fit."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from relulab.functional._common import upcast_low_precision


@upcast_low_precision
def poly_relu(x: Tensor, coefficients: Tensor) -> Tensor:
    """f(x) = Σₖ cₖ·xᵏ, coefficients ordered c₀, c₁, ..., c_d (Horner's rule)."""
    result = coefficients[-1].to(x.dtype).expand_as(x)
    for c in coefficients[:-1].flip(0):
        result = result * x + c
    return result


def _gaussian_moments(mean: Tensor, std: Tensor, count: int) -> list[Tensor]:
    """E[xⁿ] for x ~ N(mean, std²), n < count: mₙ = mean·mₙ₋₁ + (n−1)·std²·mₙ₋₂."""
    moments = [torch.ones_like(mean), mean]
    for n in range(2, count):
        moments.append(mean * moments[n - 1] + (n - 1) * std**2 * moments[n - 2])
    return moments[:count]


def _positive_part_moments(mean: Tensor, std: Tensor, count: int) -> list[Tensor]:
    """E[xⁿ·1(x > 0)] for x ~ N(mean, std²), n < count.

    Integrating by parts gives Tₙ = mean·Tₙ₋₁ + (n−1)·std²·Tₙ₋₂ for n ≥ 2 (the boundary term
    0ⁿ⁻¹·p(0) vanishes), with T₀ = Φ(mean/std) and T₁ = mean·T₀ + std·φ(mean/std).
    """
    z = mean / std
    cdf = 0.5 * torch.special.erfc(-z / math.sqrt(2.0))
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    moments = [cdf, mean * cdf + std * pdf]
    for n in range(2, count):
        moments.append(mean * moments[n - 1] + (n - 1) * std**2 * moments[n - 2])
    return moments[:count]


def dapa_coefficients(
    mean: float | Tensor = 0.0, std: float | Tensor = 1.0, degree: int = 2
) -> Tensor:
    """Least-squares polynomial fit of ReLU under x ~ N(mean, std²) (AutoReP's DaPa).

    Minimises E[(Σₖ cₖxᵏ − relu(x))²] exactly: the normal equations Σₖ E[x^{j+k}]·cₖ =
    E[xʲ·relu(x)] have Gaussian and half-Gaussian moments in closed form. For degree 2 this is
    AutoReP's formula; for mean 0, std 1 it is 0.1995 + 0.5x + 0.1995x².

    Args:
        mean, std: the pre-activation statistics; tensors give one fit per element
            (e.g. per channel).
        degree: the polynomial degree, ≥ 0.

    Returns:
        float64 tensor of shape (degree + 1, *mean.shape), coefficients c₀ ... c_d.
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
        raise ValueError(f"dapa_coefficients: degree must be an integer >= 0, got {degree!r}")
    mean_t = torch.as_tensor(mean, dtype=torch.float64)
    std_t = torch.as_tensor(std, dtype=torch.float64)
    mean_t, std_t = torch.broadcast_tensors(mean_t, std_t)
    if not bool((std_t > 0).all()):
        raise ValueError(f"dapa_coefficients: std must be > 0, got {std!r}")
    size = degree + 1
    moments = _gaussian_moments(mean_t, std_t, 2 * size - 1)
    positive = _positive_part_moments(mean_t, std_t, size + 1)
    gram = torch.stack(
        [torch.stack([moments[j + k] for k in range(size)], -1) for j in range(size)], -2
    )
    target = torch.stack([positive[j + 1] for j in range(size)], -1)
    solution = torch.linalg.solve(gram, target.unsqueeze(-1)).squeeze(-1)
    return solution.movedim(-1, 0)
