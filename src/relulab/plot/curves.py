"""``relulab plot``: activations and their derivatives, sampled on a grid."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from relulab.errors import UserError
from relulab.plot.colours import activation_colours
from relulab.plot.figure import new_figure, save_png
from relulab.registry import get_activation


@dataclass(frozen=True)
class Curve:
    """An activation sampled on a grid: x, f(x) and f'(x) (by autograd)."""

    label: str
    x: list[float]
    y: list[float]
    dy: list[float]


def activation_curve(spec: str, x: torch.Tensor) -> Curve:
    """Sample ``spec`` at the points ``x`` (float64, eval mode).

    Each point goes in as its own one-feature sample, so activations that look across
    features (VeLU, SmartMixed) see a vector of length one. The derivative is what autograd
    returns: for HeLU, its hysteresis gradient rather than ReLU's.
    """
    # Trainable activations start from random parameters (SmartMixed's mixture, say): the
    # same seed every time, so a plot shows the same curve whatever else it shows.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = get_activation(spec).double().eval()
    points = x.detach().to(torch.float64).reshape(-1, 1).requires_grad_()
    try:
        y = module(points)
        (dy,) = torch.autograd.grad(y.sum(), points, allow_unused=True)
    except (RuntimeError, IndexError) as error:  # e.g. prelu(num_parameters=3) on one feature
        reason = str(error).strip().splitlines()[0]
        raise UserError(f"cannot sample {spec!r} one feature at a time: {reason}") from None
    dy = torch.zeros_like(points) if dy is None else dy
    return Curve(
        spec,
        points.detach().flatten().tolist(),
        y.detach().flatten().tolist(),
        dy.flatten().tolist(),
    )


def activations_figure(curves: list[Curve], *, derivative: bool = False) -> Any:
    """f(x) of each curve in one panel and, with ``derivative``, f'(x) in a second beside it."""
    columns = 2 if derivative else 1
    figure, axes = new_figure(1, columns, width=6.4 * columns, height=4.8)
    panels = [("f(x)", "y")] + ([("f'(x) (autograd)", "dy")] if derivative else [])
    colours = activation_colours(curve.label for curve in curves)  # as in the bench's figures
    for axis, (title, field) in zip(axes[0], panels):
        for curve in curves:
            axis.plot(
                curve.x,
                getattr(curve, field),
                label=curve.label,
                linewidth=1.6,
                color=colours[curve.label],
            )
        axis.axhline(0, color="0.8", linewidth=0.8, zorder=0)
        axis.axvline(0, color="0.8", linewidth=0.8, zorder=0)
        axis.set_title(title)
        axis.set_xlabel("x")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    return figure


def plot_activations(
    specs: list[str],
    path: str | Path,
    *,
    derivative: bool = False,
    x_range: tuple[float, float] = (-5.0, 5.0),
    points: int = 1001,
) -> Path:
    """Draw the activations (and, with ``derivative``, their first derivatives beside them).

    Returns the path of the PNG written.
    """
    low, high = x_range
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise UserError(f"x range must be finite and increasing, got {low} .. {high}")
    grid = torch.linspace(low, high, points, dtype=torch.float64)
    curves = [activation_curve(spec, grid) for spec in specs]
    return save_png(activations_figure(curves, derivative=derivative), path)
