"""Exponential-tail rectifiers (ELU, SELU, CELU) and softplus."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from relulab.functional._common import stable_softplus, upcast_low_precision

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@upcast_low_precision
def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """f(x) = x for x > 0, α·(eˣ − 1) otherwise (torch computes eˣ − 1 with expm1)."""
    return F.elu(x, alpha)


@upcast_low_precision
def selu(x: Tensor) -> Tensor:
    """f(x) = λ·x for x > 0, λ·α·(eˣ − 1) otherwise, λ ≈ 1.0507, α ≈ 1.6733."""
    return F.selu(x)


@upcast_low_precision
def celu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """f(x) = max(0, x) + min(0, α·(e^{x/α} − 1))."""
    return F.celu(x, alpha)


@upcast_low_precision
def softplus(x: Tensor, beta: float = 1.0, threshold: float | None = 20.0) -> Tensor:
    """f(x) = log(1 + e^{βx})/β, and x where βx > threshold (torch's definition).

    ``threshold=None`` gives the exact softplus everywhere. Below the threshold the value
    is exact in both tails (torch's ``log1p(exp(βx))`` overflows for βx above about 709 in
    float64), and its derivatives of every order are finite.
    """
    scaled = beta * x
    exact = stable_softplus(scaled) / beta
    return exact if threshold is None else torch.where(scaled > threshold, x, exact)
