"""``relulab overconfidence``: how far from certain classifiers are at ``alpha * x``.

The y axis is ``1 - p`` (p the top softmax probability) on a log scale rather than p itself:
the claim is that p tends to 1, and on a linear p axis 0.9999, 1 - 1e-15 and exactly 1 are
the same pixel, while on ``log(1 - p)`` a ReLU net's fall to certainty is a cliff and a bounded
activation's floor a plateau. ``1 - p`` is exact in float64 down to the spacing of doubles
below 1 (2⁻⁵³ ≈ 1.1e-16); a p that rounds to 1 has ``1 - p = 0``, drawn on a floor below that,
in a grey band, its y tick labelled "p = 1" and the band named in the legend.

Several activations that grow linearly fall to certainty together: their bands are light and
drawn under every median line, so overlapping bands stay pale and no band hides a line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relulab.plot.figure import new_figure, save_png

RESOLUTION = 2.0**-53  # the gap between 1 and the largest double below it
FLOOR = 1e-17  # where 1 - p = 0 (p rounded to 1) is drawn
LINESTYLES = ("-", "--", ":", "-.")
BAND_ALPHA = 0.07  # five overlapping bands stay pale grey, not a brown mass
BAND_ZORDER, LINE_ZORDER, NOTE_ZORDER = 1.5, 3, 4
FLOOR_LABEL = "1 − p = 0: p = 1 in float64"
INSIDE_LABEL = "alpha · x within the training data's radius"


@dataclass(frozen=True)
class Panel:
    """One axes: a title, ``{label: ConfidenceCurves}`` (one line each, with the
    interquartile band over the directions) and, if known, the ``alpha`` at which the rays
    leave the training data's ball (marked, and shaded up to it)."""

    title: str
    curves: Mapping[str, Any]
    data_alpha: float | None = None
    colours: Mapping[str, str] = field(default_factory=dict)


def doubt_quartiles(curves: Any) -> np.ndarray:
    """The 25th, 50th and 75th percentiles over the directions of ``1 - p`` at each alpha,
    ``[3, A]``, with 0 (p rounded to 1) put on :data:`FLOOR`."""
    doubt = np.quantile(1.0 - curves.confidence, [0.25, 0.5, 0.75], axis=0)
    return np.maximum(doubt, FLOOR)


def overconfidence_figure(
    panels: Panel | Sequence[Panel],
    *,
    colours: Mapping[str, str] | None = None,
    certain: float | None = 1e-12,
    title: str = "",
) -> Any:
    """Median ``1 - p`` against ``alpha`` (both log scale), one line per label with its
    interquartile band across the directions, in a panel per :class:`Panel` (shared y axis).
    ``colours`` (``{label: colour}``, or a panel's own) fixes a label's colour; any other
    label takes the next of matplotlib's cycle, and a colour given to several labels changes
    line style from one to the next. ``certain`` (if not None) is marked as a dotted line."""
    from matplotlib import rcParams

    panels = [panels] if isinstance(panels, Panel) else list(panels)
    figure, axes = new_figure(
        1, len(panels), width=2.0 + 5.4 * len(panels), height=4.8, sharey=True
    )
    cycle = iter(rcParams["axes.prop_cycle"].by_key()["color"] * 10)
    for panel, axis in zip(panels, axes[0]):
        chosen = {**(colours or {}), **panel.colours}
        used: dict[str, int] = {}
        for label, curves in panel.curves.items():
            colour = chosen.get(label) or next(cycle)
            style = LINESTYLES[used.get(colour, 0) % len(LINESTYLES)]
            used[colour] = used.get(colour, 0) + 1
            low, median, high = doubt_quartiles(curves)
            axis.fill_between(
                curves.alphas, low, high, color=colour, alpha=BAND_ALPHA, linewidth=0,
                zorder=BAND_ZORDER,
            )  # fmt: skip
            axis.plot(
                curves.alphas, median, color=colour, linestyle=style, marker="o", markersize=3,
                label=label, zorder=LINE_ZORDER,
            )  # fmt: skip
        axis.axhspan(FLOOR / 2, RESOLUTION, color="0.85", zorder=0, label=FLOOR_LABEL)
        if certain is not None:
            axis.axhline(certain, color="0.45", linestyle=":", linewidth=0.9, zorder=0)
            # at the right edge, where the lines have long reached their plateau or the floor,
            # on a white ground in case one still passes
            axis.text(
                0.98, certain, f"certain: 1 − p < {certain:g}", fontsize=8, color="0.35",
                transform=axis.get_yaxis_transform(), ha="right", va="bottom",
                zorder=NOTE_ZORDER,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
            )  # fmt: skip
        if panel.data_alpha is not None and np.isfinite(panel.data_alpha):
            first = min(float(curves.alphas[0]) for curves in panel.curves.values())
            axis.axvspan(
                min(first, panel.data_alpha), panel.data_alpha, color="0.5", alpha=0.1, zorder=0,
                label=INSIDE_LABEL,
            )  # fmt: skip
            axis.axvline(
                panel.data_alpha, color="0.3", linestyle="--", linewidth=0.9, zorder=0,
                label="the training data's radius:\nbeyond it, alpha · x is farther out\n"
                "than every training input",
            )  # fmt: skip
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_ylim(FLOOR / 2, 1.5)
        # the floor's tick names it: a label inside the band would sit under the lines there
        ticks = [10.0**e for e in range(0, -17, -2)]
        axis.set_yticks(
            [*ticks, FLOOR], [f"$10^{{{round(np.log10(t))}}}$" for t in ticks] + ["p = 1"]
        )
        axis.set_xlabel("alpha (the input is alpha · x)")
        radius = panel.data_alpha is not None and np.isfinite(panel.data_alpha)
        axis.set_title(
            panel.title + (f" (radius at alpha = {panel.data_alpha:.2g})" if radius else "")
        )
        axis.grid(alpha=0.25)
    # outside the axes: inside, it would hide the plateaus near the top or the cliffs below
    # one entry per label over all panels, and the shadings of any panel
    entries: dict[str, Any] = {}
    for axis in axes[0]:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    shading = [entries.pop(k) for k in (INSIDE_LABEL, FLOOR_LABEL) if k in entries]
    axes[0][-1].legend(
        [*entries.values(), *shading],
        [*entries, *(h.get_label() for h in shading)],
        fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0),
    )  # fmt: skip
    axes[0][0].set_ylabel("1 − p (p: top softmax probability); median, IQR band")
    if title:
        figure.suptitle(title)
    return figure


def plot_overconfidence(panels: Panel | Sequence[Panel], path: str | Path, **options: Any) -> Path:
    """Write :func:`overconfidence_figure` as a PNG; returns the path written."""
    return save_png(overconfidence_figure(panels, **options), path)
