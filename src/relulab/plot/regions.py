"""``relulab regions``: a slice's exact linear regions, its decision boundary and the data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from relulab.plot.figure import new_figure, save_png


def regions_figure(
    partition: Any,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    title: str = "",
    notes: list[str] | None = None,
) -> Any:
    """The polygons of :class:`relulab.geometry.Partition`, each filled in a colour of its own
    (a fixed shuffle of a qualitative map, so neighbours rarely share one), the decision
    boundary in black and, if given, the data points in slice coordinates coloured by label,
    each with its note written beside it (e.g. its label and the model's prediction).
    """
    from matplotlib import colormaps
    from matplotlib.collections import LineCollection, PolyCollection

    figure, axes = new_figure(1, 1, width=6.4, height=6.0)
    axis = axes[0][0]
    vertices = partition.vertices.numpy()
    counts = partition.counts.numpy()
    polygons = [vertices[i, : counts[i]] for i in range(len(counts))]
    palette = colormaps["tab20"](np.arange(20) / 19)
    # Region i's colour: a fixed pseudo-random pick, so that regions listed next to each other
    # (often neighbours) differ; the same partition always gets the same colours.
    order = np.random.default_rng(0).integers(0, 20, size=len(polygons))
    axis.add_collection(
        PolyCollection(
            polygons, facecolors=palette[order], edgecolors="white", linewidths=0.2, alpha=0.9
        )
    )
    segments = partition.boundary.numpy()
    if len(segments):
        axis.add_collection(LineCollection(segments, colors="black", linewidths=1.4))
    if points is not None:
        few = len(points) <= 10  # e.g. the three examples a plane goes through: make them stand out
        axis.scatter(
            points[:, 0], points[:, 1], c=labels, cmap="viridis", s=70 if few else 16,
            edgecolors="white" if few else "black", linewidths=1.5 if few else 0.6, zorder=3,
        )  # fmt: skip
        middle = partition.domain.numpy().mean(axis=0)
        for (x, y), note in zip(points, notes or []):
            right, top = x > middle[0], y > middle[1]  # write towards the middle, not off the axes
            axis.annotate(
                note, (x, y), xytext=(-8 if right else 8, -8 if top else 8),
                textcoords="offset points", ha="right" if right else "left",
                va="top" if top else "bottom", fontsize=10, zorder=4,
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.85},
            )  # fmt: skip
    domain = partition.domain.numpy()
    axis.set_xlim(domain[:, 0].min(), domain[:, 0].max())
    axis.set_ylim(domain[:, 1].min(), domain[:, 1].max())
    axis.set_aspect("equal")
    axis.set_title(title or f"{partition.count:,} linear regions; black: decision boundary")
    axis.set_xlabel("s" if partition.plane is not None else "x₁")
    axis.set_ylabel("t" if partition.plane is not None else "x₂")
    return figure


def plot_regions(partition: Any, path: str | Path, **options: Any) -> Path:
    """Write :func:`regions_figure` as a PNG; returns the path written."""
    return save_png(regions_figure(partition, **options), path)
