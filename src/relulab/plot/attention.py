"""Plots of the attention experiments: per-head heatmaps (layer x head) and paired losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from relulab.plot.figure import new_figure, save_png


def plot_head_heatmaps(
    rows: Mapping[str, Mapping[str, Sequence[Sequence[float | None]]]],
    path: str | Path,
    *,
    title: str = "",
    limits: Mapping[str, tuple[float, float]] | None = None,
) -> Path:
    """One heatmap (layer down, head across, each cell annotated) per panel: ``rows`` maps a
    quantity (e.g. "normalised entropy") to panels (e.g. one per model); each row of panels
    shares a colour scale, ``limits[quantity]`` or the panels' range. None is drawn blank."""
    columns = max(len(panels) for panels in rows.values())
    first = np.array(next(iter(next(iter(rows.values())).values())), dtype=float)
    layers, heads = first.shape
    figure, axes = new_figure(
        len(rows), columns, width=max(6.5, 1.2 + columns * (0.55 * heads + 1.4)),
        height=0.9 + len(rows) * max(2.4, 0.45 * layers + 1.1),  # room for the colour bar's label
    )  # fmt: skip
    for r, (quantity, panels) in enumerate(rows.items()):
        matrices = {name: np.array(m, dtype=float) for name, m in panels.items()}
        values = np.concatenate([m[np.isfinite(m)] for m in matrices.values()] + [np.zeros(0)])
        low, high = (limits or {}).get(quantity) or (
            (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        )
        image = None
        for c in range(columns):
            axis = axes[r][c]
            if c >= len(matrices):
                axis.set_visible(False)
                continue
            name, matrix = list(matrices.items())[c]
            image = axis.imshow(matrix, vmin=low, vmax=high, cmap="cividis", aspect="auto")
            for (layer, head), value in np.ndenumerate(matrix):
                if np.isfinite(value):
                    dark = (value - low) / ((high - low) or 1) < 0.55
                    axis.text(head, layer, f"{value:.2f}", ha="center", va="center",
                              fontsize=7, color="white" if dark else "black")  # fmt: skip
            axis.set_xticks(range(heads))
            axis.set_yticks(range(layers))
            axis.set_xlabel("head")
            axis.set_ylabel("layer")
            axis.set_title(name, fontsize=9)
        if image is not None:
            figure.colorbar(image, ax=list(axes[r][: len(matrices)]), label=quantity, shrink=0.9)
    if title:
        figure.suptitle(title, fontsize=10)
    return save_png(figure, path)


def plot_paired_losses(
    losses: Mapping[str, Mapping[int, float]],
    path: str | Path,
    *,
    pairs: Mapping[tuple[str, str], str] | None = None,
    title: str = "",
) -> Path:
    """Validation loss of every cell (x) and seed: a dot per run and the cell's mean as a bar;
    for each compared pair of cells (``pairs`` maps it to a label, e.g. its p-value), a thin
    line joins the two runs of each seed (what the paired t-test compares). Diverged runs
    (NaN) are counted at the top."""
    figure, axes = new_figure(1, 1, width=max(6.5, 1.8 + 1.5 * len(losses)), height=4.2)
    axis = axes[0][0]
    cells = list(losses)
    finite = [v for by_seed in losses.values() for v in by_seed.values() if np.isfinite(v)]
    top = max(finite) if finite else 1.0
    for (first, second), label in (pairs or {}).items():
        x = [cells.index(first), cells.index(second)]
        for seed in sorted(set(losses[first]) & set(losses[second])):
            axis.plot(x, [losses[first][seed], losses[second][seed]], color="0.7",
                      linewidth=0.8, zorder=1)  # fmt: skip
        axis.annotate(label, (sum(x) / 2, top), xytext=(0, 14), textcoords="offset points",
                      ha="center", va="bottom", fontsize=8)  # fmt: skip
    for x, cell in enumerate(cells):
        values = np.array(list(losses[cell].values()), dtype=float)
        ok = values[np.isfinite(values)]
        axis.scatter(np.full(len(ok), x), ok, color=f"C{x}", s=18, zorder=2)
        if len(ok):
            axis.hlines(ok.mean(), x - 0.25, x + 0.25, color=f"C{x}", linewidth=2, zorder=3)
        if len(ok) < len(values):
            axis.annotate(f"{len(values) - len(ok)} diverged", (x, top), xytext=(0, 2),
                          textcoords="offset points", ha="center", va="bottom", fontsize=8,
                          color="C3")  # fmt: skip
    axis.set_xticks(range(len(cells)), cells, rotation=15)
    axis.set_xlim(-0.6, len(cells) - 0.4)
    axis.margins(y=0.15)
    axis.set_ylabel("validation loss (nats per character)")
    axis.grid(axis="y", alpha=0.3)
    if title:
        axis.set_title(title, fontsize=10)
    return save_png(figure, path)
