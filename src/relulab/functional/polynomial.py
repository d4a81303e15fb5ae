"""Polynomial stand-ins for ReLU (AutoReP) and DaPa, their closed-form least-squares fit."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from relulab.errors import UserError
from relulab.functional._common import upcast_low_precision


@upcast_low_precision
def poly_relu(x: Tensor, coefficients: Tensor | Sequence[Tensor | float]) -> Tensor:
    """f(x) = Σₖ cₖ·xᵏ, coefficients ordered c₀, c₁, ..., c_d (Horner's rule).

    ``coefficients`` is a 1-D tensor or a sequence of scalars (the module passes a list, which
    torch.fx can trace where a tensor of unknown length could not be iterated).
    """
    if isinstance(coefficients, Tensor):
        coefficients = coefficients.unbind(0)
    result = torch.zeros_like(x) + coefficients[-1]
    for c in reversed(coefficients[:-1]):
        result = result * x + c
    return result


MAX_DEGREE = 16  # beyond this the Hermite-to-monomial conversion loses float64's digits


def _hermite_monomials(degree: int) -> list[list[float]]:
    """Monomial coefficients of the probabilists' Hermite polynomials He₀ ... He_degree.

    He₀ = 1, He₁ = z, Heₙ₊₁ = z·Heₙ − n·Heₙ₋₁.
    """
    table = [[1.0], [0.0, 1.0]]
    for n in range(1, degree):
        shifted = [0.0, *table[n]]
        lower = table[n - 1] + [0.0] * (len(shifted) - len(table[n - 1]))
        table.append([a - n * b for a, b in zip(shifted, lower)])
    return table[: degree + 1]


def dapa_coefficients(
    mean: float | Tensor = 0.0, std: float | Tensor = 1.0, degree: int = 2
) -> Tensor:
    """Least-squares polynomial fit of ReLU under x ~ N(mean, std²) (AutoReP's DaPa).

    Minimises E[(Σₖ cₖxᵏ − relu(x))²] exactly, in closed form. With z = (x − mean)/std and
    m = mean/std, relu(x) = std·relu(z + m), and its projection on the Hermite polynomials
    Heₖ (orthogonal under N(0, 1)) has coefficients E[relu(z + m)·Heₖ(z)]/k!, which Stein's
    identity turns into m·Φ(m) + φ(m), Φ(m), and Heₖ₋₂(−m)·φ(m) for k ≥ 2. Expanding in
    powers of x needs no linear solve, so any mean and any std > 0 work. For degree 2 this is
    AutoReP's formula; for mean 0, std 1 it is 0.1995 + 0.5x + 0.1995x².

    Args:
        mean, std: the pre-activation statistics; tensors give one fit per element
            (e.g. per channel).
        degree: the polynomial degree, 0 ... 16.

    Returns:
        float64 tensor of shape (degree + 1, *mean.shape), coefficients c₀ ... c_d.
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or not 0 <= degree <= MAX_DEGREE:
        raise UserError(
            f"dapa_coefficients: degree must be an integer in 0..{MAX_DEGREE}, got {degree!r}"
        )
    mean_t, std_t = torch.broadcast_tensors(
        torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)
    )
    if not bool(((std_t > 0) & torch.isfinite(std_t) & torch.isfinite(mean_t)).all()):
        raise UserError(
            f"dapa_coefficients: std must be finite and > 0, got std={std!r}, mean={mean!r}"
        )
    m = mean_t / std_t
    cdf = 0.5 * torch.special.erfc(-m / math.sqrt(2.0))
    pdf = torch.exp(-0.5 * m * m) / math.sqrt(2.0 * math.pi)
    hermite = _hermite_monomials(degree)
    # Hermite coefficients b_k of relu(z + m); then a_j, the monomial coefficients in z.
    b = [m * cdf + pdf, cdf][: degree + 1]
    for k in range(2, degree + 1):
        he_at_minus_m = sum(c * (-m) ** p for p, c in enumerate(hermite[k - 2]))
        b.append(he_at_minus_m * pdf / math.factorial(k))
    a = [sum(b[k] * hermite[k][j] for k in range(j, degree + 1)) for j in range(degree + 1)]
    # relu(x) ≈ std·Σ a_k·((x − mean)/std)ᵏ: c_j = std^{1−j}·Σ_{k≥j} a_k·C(k, j)·(−m)^{k−j}
    coefficients = [
        std_t ** (1 - j)
        * sum(a[k] * math.comb(k, j) * (-m) ** (k - j) for k in range(j, degree + 1))
        for j in range(degree + 1)
    ]
    return torch.stack(coefficients, 0)
