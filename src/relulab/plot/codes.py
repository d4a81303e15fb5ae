"""Activation codes across width and training: a phase chart of determinism and categorization.

The rows are those of ``scripts/codes_experiment.py`` (one per network width and number of
training epochs, with the statistics of :func:`relulab.geometry.codes.code_statistics`). The
figure is a row of small heatmaps, hidden width down and training epochs across, each cell
holding its value: the redundancy ratio of the training codes (0 when every training example
has a linear region of its own), the network's own test accuracy for reference, then the test
accuracies of k-NN, logistic regression and K-means on the codes alone, on one colour scale
so that a code classifier's cell can be set against the network's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from relulab.errors import UserError
from relulab.plot.figure import new_figure, save_png


def _ratio(value: float) -> str:
    # exactly 0 (every example alone) told apart from a ratio that rounds to 0.000
    return "0" if value == 0 else f"{value:.3f}"


def _percent(value: float) -> str:
    return f"{value:.0%}"


# (row key, panel title, colour map, cell text); accuracies share one scale
PANELS = (
    ("redundancy_ratio", "determinism: redundancy ratio\n(0: each training example alone)",
     "magma_r", _ratio),
    ("net_accuracy", "the network itself\n(test accuracy)", "viridis", _percent),
    ("knn_accuracy", "k-NN on codes\n(k=9, Hamming)", "viridis", _percent),
    ("logistic_accuracy", "logistic regression\non codes", "viridis", _percent),
    ("kmeans_test_accuracy", "K-means on codes\n(clusters matched)", "viridis", _percent),
)  # fmt: skip


def codes_figure(rows: Sequence[dict[str, Any]], *, title: str = "") -> Any:
    """The heatmaps described in the module's docstring, for ``rows`` of dicts holding
    ``width``, ``epochs`` and the keys of :data:`PANELS`; a width and epoch pair that no row
    has is left blank."""
    needed = {"width", "epochs", *(panel[0] for panel in PANELS)}
    if not rows:
        raise UserError("codes_figure: no rows to draw")
    missing = needed - set.intersection(*(set(row) for row in rows))
    if missing:
        raise UserError(f"codes_figure: rows lack {', '.join(sorted(missing))}")
    widths = sorted({row["width"] for row in rows})
    epochs = sorted({row["epochs"] for row in rows})
    figure, axes = new_figure(
        1, len(PANELS), width=2.6 * len(PANELS), height=1.6 + 0.42 * len(widths)
    )
    for column, (axis, (key, name, colours, text)) in enumerate(zip(axes[0], PANELS)):
        grid = np.full((len(widths), len(epochs)), np.nan)
        for row in rows:
            grid[widths.index(row["width"]), epochs.index(row["epochs"])] = row[key]
        image = axis.imshow(grid, cmap=colours, vmin=0.0, vmax=1.0, aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                red, green, blue, _ = image.cmap(image.norm(value))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                axis.text(j, i, text(value), ha="center", va="center",
                          fontsize="small", color="white" if dark else "black")  # fmt: skip
        axis.set_title(name, fontsize="medium")
        axis.set_xticks(range(len(epochs)), [str(e) for e in epochs])
        axis.set_yticks(range(len(widths)), [str(w) for w in widths])
        axis.set_xlabel("training epochs")
        if column == 0:
            axis.set_ylabel("hidden width")
    if title:
        figure.suptitle(title)
    return figure


def plot_codes(rows: Sequence[dict[str, Any]], path: str | Path, **options: Any) -> Path:
    """Write :func:`codes_figure` as a PNG; returns the path written."""
    return save_png(codes_figure(rows, **options), path)
