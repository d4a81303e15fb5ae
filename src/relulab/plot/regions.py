"""``relulab regions``: a slice's exact linear regions, its decision boundary and the data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from relulab.plot.figure import new_figure, save_png


def _title(partition: Any, name: str) -> str:
    """``"<name>: 5,826 linear regions; black: decision boundary"``, in the singular for one
    region and without the boundary where there is none."""
    count = partition.count
    text = f"{count:,} linear region" + ("" if count == 1 else "s")
    if len(partition.boundary):
        text += "; black: decision boundary"
    return f"{name}: {text}" if name else text


def regions_figure(
    partition: Any,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    title: str = "",
    notes: list[str] | None = None,
    points_label: str = "training examples, coloured by class",
) -> Any:
    """The polygons of :class:`relulab.geometry.Partition`, each filled in a colour of its own
    (a fixed shuffle of a qualitative map, so neighbours rarely share one), the decision
    boundary in black and, if given, the data points in slice coordinates coloured by label
    (white-edged, so they stand out on any region's colour), each with its note written
    beside it (e.g. its label and the model's prediction). ``title`` names the slice (e.g.
    the trial) before its region count; ``points_label`` is the points' legend entry. The
    figure's shape follows the domain's aspect ratio.
    """
    from matplotlib import colormaps
    from matplotlib.collections import LineCollection, PolyCollection

    domain = partition.domain.numpy()
    low, high = domain.min(axis=0), domain.max(axis=0)
    # Equal axes: the figure follows the domain's shape (within 1:5 .. 5:1), else a tall
    # or wide domain leaves empty bands around a square-ish frame.
    aspect = float(np.clip((high[1] - low[1]) / max(high[0] - low[0], 1e-300), 1 / 5, 5))
    width = 6.4 if aspect <= 1 else max(3.6, 5.6 / aspect + 0.8)
    figure, axes = new_figure(1, 1, width=width, height=(width - 0.8) * aspect + 1.2)
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
            edgecolors="white", linewidths=1.5 if few else 0.5, zorder=3, label=points_label,
        )  # fmt: skip
        axis.legend(loc="best", fontsize=8, framealpha=0.85)
        middle = domain.mean(axis=0)
        for (x, y), note in zip(points, notes or []):
            right, top = x > middle[0], y > middle[1]  # write towards the middle, not off the axes
            axis.annotate(
                note, (x, y), xytext=(-8 if right else 8, -8 if top else 8),
                textcoords="offset points", ha="right" if right else "left",
                va="top" if top else "bottom", fontsize=10, zorder=4,
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.85},
            )  # fmt: skip
    axis.set_xlim(low[0], high[0])
    axis.set_ylim(low[1], high[1])
    axis.set_aspect("equal")
    axis.set_title(_title(partition, title))
    axis.set_xlabel("s" if partition.plane is not None else "x₁")
    axis.set_ylabel("t" if partition.plane is not None else "x₂")
    return figure


def plot_regions(partition: Any, path: str | Path, **options: Any) -> Path:
    """Write :func:`regions_figure` as a PNG; returns the path written."""
    return save_png(regions_figure(partition, **options), path)
