"""Activations whose response depends on more than one element: VeLU and SmartMixed."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from relulab.errors import UserError
from relulab.functional._common import upcast_low_precision
from relulab.functional.exponential import elu, selu
from relulab.functional.gated import sigmoid, tanh
from relulab.functional.rectifiers import leaky_relu, relu

_VELU_STATISTIC_CAP = 1e18
SMARTMIXED_CANDIDATES = ("relu", "sigmoid", "tanh", "leaky_relu", "elu", "selu")
_SMARTMIXED_FUNCTIONS = (relu, sigmoid, tanh, leaky_relu, elu, selu)


@upcast_low_precision
def velu(
    x: Tensor,
    scale: float | Tensor = 1.0,
    alpha: float = 0.1,
    beta1: float = 0.1,
    beta2: float = 0.1,
    gamma: float = 0.1,
    mu: float = 0.9,
    eps: float = 1e-6,
    dim: int = 1,
) -> Tensor:
    """f(x) = λ·x·σ(α·(arctan(β₁x) + arcsin(clip(β₂x, −1, 1))))·(1 + γ·tanh(μ·r)).

    r = 1/√(mean(x², dim) + ε) is computed per sample over the feature axis ``dim``, as in
    the authors' code; λ is ``scale``.
    """
    u = beta2 * x
    inside = u.abs() < 1.0
    # Outside (−1, 1) the clipped arcsin is the constant ±π/2; asin itself only ever sees
    # inside points (0 elsewhere), so its infinite slope at ±1 never enters a backward pass.
    arcsin = torch.where(
        inside, torch.asin(torch.where(inside, u, 0.0)), (math.pi / 2) * torch.sign(u.detach())
    )
    mix = torch.atan(beta1 * x) + arcsin
    # Clamping at 1e18 keeps x² finite; where it acts, r < 1e-18 and the scale is 1 exactly.
    magnitude = x.clamp(-_VELU_STATISTIC_CAP, _VELU_STATISTIC_CAP)
    inverse_rms = torch.rsqrt(magnitude.square().mean(dim, keepdim=True) + eps)
    adaptive = 1.0 + gamma * torch.tanh(mu * inverse_rms)
    return scale * (x * torch.sigmoid(alpha * mix) * adaptive)


def velu_w2_penalty(y: Tensor) -> Tensor:
    """VeLU's regulariser: squared W₂ between N(mean(y), std(y)²) and N(0, 1)."""
    return y.mean().square() + (y.std(correction=0) - 1.0).square()


def _along_dim1(weights: Tensor, ndim: int) -> Tensor:
    """Shape (features, k) → (1, features, 1, ..., 1, k) to broadcast against (N, C, ...)."""
    return weights.reshape(1, weights.shape[0], *([1] * (ndim - 2)), weights.shape[1])


def smartmixed(x: Tensor, weights: Tensor, clamp: float | None = 10.0) -> Tensor:
    """f(x)_c = clip(Σₖ w_{c,k}·clip(actₖ(x_c))) over the six SMARTMIXED_CANDIDATES.

    ``weights`` has shape (num_features, 6); features run along dim 1 of x. ``clamp`` is the
    ±bound of both clips (None: no clipping).
    """
    if x.dim() < 2 or weights.shape != (x.shape[1], len(SMARTMIXED_CANDIDATES)):
        raise UserError(
            f"smartmixed: expected x of shape (N, {weights.shape[0]}, ...) and weights of "
            f"shape (features, {len(SMARTMIXED_CANDIDATES)}), got {tuple(x.shape)} and "
            f"{tuple(weights.shape)}"
        )
    outputs = torch.stack([fn(x) for fn in _SMARTMIXED_FUNCTIONS], dim=-1)
    if clamp is not None:
        outputs = outputs.clamp(-clamp, clamp)
    mixed = (outputs * _along_dim1(weights.to(outputs.dtype), x.dim())).sum(-1)
    return mixed.clamp(-clamp, clamp) if clamp is not None else mixed


def smartmixed_select(x: Tensor, choice: Tensor) -> Tensor:
    """Phase 2 of SmartMixed: feature c gets candidate ``choice[c]``, unclipped.

    Computes each candidate only on its own features, as the authors' vectorised phase 2.
    """
    count = len(_SMARTMIXED_FUNCTIONS)
    if x.dim() < 2 or x.shape[1] != len(choice) or bool(((choice < 0) | (choice >= count)).any()):
        raise UserError(
            f"smartmixed_select: expected x of shape (N, {len(choice)}, ...) and choices in "
            f"0..{count - 1}, got x of shape {tuple(x.shape)}"
        )
    out = torch.empty_like(x)
    for k, fn in enumerate(_SMARTMIXED_FUNCTIONS):
        index = (choice == k).nonzero().flatten()
        if index.numel():
            out = out.index_copy(1, index, fn(x.index_select(1, index)))
    return out


def gumbel_one_hot(logits: Tensor, tau: float) -> Tensor:
    """Hard Gumbel-softmax sample over the last axis with the straight-through gradient."""
    return F.gumbel_softmax(logits, tau=tau, hard=True, dim=-1)
