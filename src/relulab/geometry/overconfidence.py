"""Far from the data (Ulmer & Cinà 2020, "Know Your Limits"): the softmax confidence of a
classifier at ``alpha * x`` as ``alpha`` grows.

A ReLU network is piecewise affine with finitely many regions, so along any ray ``alpha * x``
it is eventually affine, ``f(alpha x) = alpha A x + b``, and the softmax of that tends to a
one-hot vector wherever ``A x`` has a unique largest entry: the network becomes certain far
from anything it was trained on. Smooth activations that are asymptotically linear (GELU,
SiLU, GoLU) share this; bounded ones (tanh, sigmoid) saturate instead, and the logits, hence
the confidence, tend to a finite limit. :func:`confidence_along_rays` measures it for any
model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from relulab.errors import UserError


@dataclass(frozen=True)
class ConfidenceCurves:
    """``confidence[i, j]``: the top softmax probability at ``alphas[j] * x[i]``."""

    alphas: np.ndarray
    confidence: np.ndarray

    def median(self) -> np.ndarray:
        return np.median(self.confidence, axis=0)

    def to_dict(self) -> dict:
        return {
            "alphas": self.alphas.tolist(),
            "median_confidence": self.median().tolist(),
            "confidence": self.confidence.tolist(),
        }


def confidence_along_rays(
    model: nn.Module, x: torch.Tensor, alphas: np.ndarray | list[float] | None = None
) -> ConfidenceCurves:
    """The top softmax probability of ``model`` (logits out) at ``alpha * x`` for every row
    of ``x`` and every ``alpha`` (default: 1, 10, ..., 10^4), in float64 and eval mode."""
    alphas = np.asarray(alphas if alphas is not None else np.logspace(0, 4, 9), dtype=float)
    if alphas.ndim != 1 or not len(alphas) or not np.all(np.isfinite(alphas)):
        raise UserError(f"alphas must be a non-empty list of finite numbers, got {alphas!r}")
    if x.dim() < 2 or not len(x):
        raise UserError(f"x must be a batch of inputs (N x ...), got shape {tuple(x.shape)}")
    # float64 (on a copy: the user's model keeps its dtype and mode): at alpha = 1e4 the
    # logits' gaps decide, and float32 would round them
    model64 = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        rows = [
            torch.softmax(model64(alpha * x.double()), dim=1).amax(dim=1)
            for alpha in alphas.tolist()
        ]
    return ConfidenceCurves(alphas, torch.stack(rows, dim=1).numpy())
