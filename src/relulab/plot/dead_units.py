"""``relulab dead-units -o``: dead-unit fraction and sparsity per layer against the epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from relulab.plot.colours import activation_colours
from relulab.plot.figure import new_figure, save_png

# One line style per learning rate, in the order given: the colour already means the activation.
LINE_STYLES = ("-", "--", ":", "-.")
NO_DEAD = "\n(no flat region:\ndead units n/a)"
# One marker per activation, every len(MARKERS)-th epoch from a different start: lines that
# coincide (leaky_relu and gelu, both at 0% sparsity) still show each colour along them.
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _values(table: list[list[float | None]], column: int) -> np.ndarray:
    return np.array([np.nan if row[column] is None else row[column] for row in table], float)


def dead_units_figure(runs: Sequence[Mapping[str, Any]], *, title: str = "") -> Any:
    """Two rows of panels, one column per activation layer: the dead-unit fraction (top)
    and the sparsity (bottom), in %, against the epoch (0: before training).

    ``runs`` are the records of ``relulab dead-units --json`` (``activation``,
    ``learning_rate``, ``epochs``, ``layers``, ``dead_fraction``, ``sparsity``; None where a
    value is undefined). One line per run, coloured by activation
    (:func:`~relulab.plot.colours.activation_colours`), styled by learning rate, with the
    activation's marker on every few epochs, staggered, so lines that coincide (two
    activations at 0% sparsity) each stay in sight. The y axes start at 0. An
    activation with no flat region has no dead fraction: it draws no line in the top row,
    rather than a line at 0, and the legend says so.
    """
    from matplotlib import ticker
    from matplotlib.lines import Line2D

    layers = list(dict.fromkeys(layer for run in runs for layer in run["layers"]))
    colours = activation_colours(run["activation"] for run in runs)
    rates = list(dict.fromkeys(run["learning_rate"] for run in runs))
    styles = {rate: LINE_STYLES[i % len(LINE_STYLES)] for i, rate in enumerate(rates)}
    markers = {a: MARKERS[i % len(MARKERS)] for i, a in enumerate(colours)}
    offsets = {a: i % len(colours) for i, a in enumerate(colours)}
    figure, axes = new_figure(
        2, len(layers), width=2.0 + 3.2 * len(layers), height=5.6, sharex=True
    )
    undefined = set()  # activations with no dead fraction in any layer: no flat region
    for column, layer in enumerate(layers):
        for run in runs:
            if layer not in run["layers"]:
                continue
            index = run["layers"].index(layer)
            style = {
                "color": colours[run["activation"]],
                "linestyle": styles[run["learning_rate"]],
                "linewidth": 1.5,
                "marker": markers[run["activation"]],
                "markersize": 4,
                "markevery": (offsets[run["activation"]], len(colours)),
                # a line at 0 sits on the axis' bottom edge: drawn whole, not half cut off
                "clip_on": False,
            }
            dead = _values(run["dead_fraction"], index)
            if np.isnan(dead).all():
                undefined.add(run["activation"])
            else:
                axes[0][column].plot(run["epochs"], 100 * dead, **style)
            axes[1][column].plot(run["epochs"], 100 * _values(run["sparsity"], index), **style)
        axes[0][column].set_title(f"layer {layer}")
        axes[1][column].set_xlabel("epoch")
    for row, label in enumerate(("dead units %", "sparsity % (outputs = 0)")):
        axes[row][0].set_ylabel(label)
        for axis in axes[row]:
            # no room below 0: a fraction is never negative (the lines at 0 are not clipped)
            axis.set_ylim(bottom=0, top=max(axis.get_ylim()[1], 10))
            axis.grid(alpha=0.3)
            axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    handles = [
        Line2D(
            [],
            [],
            color=c,
            linewidth=2,
            marker=markers[a],
            markersize=4,
            label=a + NO_DEAD * (a in undefined),
        )
        for a, c in colours.items()
    ]
    if len(rates) > 1:
        handles += [
            Line2D([], [], color="0.3", linestyle=styles[r], label=f"lr {r:g}") for r in rates
        ]
    figure.legend(handles=handles, loc="outside right center", frameon=False)
    if title:
        figure.suptitle(title)
    return figure


def plot_dead_units(runs: Sequence[Mapping[str, Any]], path: str | Path, **options: Any) -> Path:
    """Write :func:`dead_units_figure` as a PNG; returns the path written."""
    return save_png(dead_units_figure(runs, **options), path)
