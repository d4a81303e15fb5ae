"""relulab.plot.overconfidence: median 1 - p per label, its quartile band, the marks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pngs import read_png
from relulab.geometry.overconfidence import ConfidenceCurves
from relulab.plot.overconfidence import FLOOR, Panel, overconfidence_figure, plot_overconfidence

pytest.importorskip("matplotlib")

ALPHAS = np.array([1.0, 10.0, 100.0, 1000.0])


def curves(doubt: np.ndarray) -> ConfidenceCurves:
    return ConfidenceCurves(ALPHAS, 1.0 - doubt)


def test_lines_are_the_median_of_one_minus_p_and_bands_the_quartiles(tmp_path):
    rng = np.random.default_rng(0)
    # a "ReLU" whose doubt falls to exactly 0 (p == 1) and a "tanh" that levels off
    falling = 10.0 ** -(rng.uniform(1, 3, size=(41, 1)) * np.array([1, 3, 9, 40]))
    falling[falling < 1e-17] = 0.0
    level = rng.uniform(1e-3, 1e-2, size=(41, 4))
    panel = Panel("test inputs", {"relu": curves(falling), "tanh": curves(level)}, data_alpha=3.0)
    figure = overconfidence_figure(panel, colours={"relu": "#222222", "tanh": "#222222"})
    (axis,) = figure.axes
    labelled = [line for line in axis.get_lines() if line.get_label()[0] != "_"]
    lines = {line.get_label(): line for line in labelled}
    assert len(labelled) == 3 and {"relu", "tanh"} < set(lines)  # and the radius
    median = np.median(falling, axis=0)
    assert median[-1] == 0  # so it is drawn on the floor, not dropped from a log axis
    np.testing.assert_allclose(lines["relu"].get_ydata(), np.maximum(median, FLOOR))
    np.testing.assert_allclose(lines["tanh"].get_ydata(), np.median(level, axis=0))
    np.testing.assert_array_equal(lines["relu"].get_xdata(), ALPHAS)
    # the same colour twice: told apart by line style
    assert lines["relu"].get_linestyle() != lines["tanh"].get_linestyle()
    band = axis.collections[1].get_paths()[0].vertices  # tanh's interquartile band
    quartiles = np.quantile(level, [0.25, 0.75], axis=0)
    for j, alpha in enumerate(ALPHAS):
        heights = band[np.isclose(band[:, 0], alpha), 1]
        assert heights.min() == pytest.approx(quartiles[0, j])
        assert heights.max() == pytest.approx(quartiles[1, j])
    assert axis.get_xscale() == axis.get_yscale() == "log"
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert legend[:2] == ["relu", "tanh"] and "radius" in legend[2]
    assert axis.get_title() == "test inputs (radius at alpha = 3)"
    (radius,) = [line for line in axis.get_lines() if line.get_label() == legend[2]]
    assert list(radius.get_xdata()) == [3.0, 3.0]
    read_png(plot_overconfidence(panel, tmp_path / "far"), figure)


def test_panels_share_the_y_axis():
    doubt = np.full((5, 4), 0.1)
    panels = [Panel("test inputs", {"a": curves(doubt)}), Panel("noise", {"a": curves(doubt)})]
    figure = overconfidence_figure(panels, title="digits")
    assert [axis.get_title() for axis in figure.axes] == ["test inputs", "noise"]
    assert figure.axes[0].get_ylim() == figure.axes[1].get_ylim()


def display_points(line, per_segment: int = 200) -> np.ndarray:
    """Points along a line's drawn segments, in display pixels (log axes, and an axvline's
    axes-fraction y, included)."""
    xy = line.get_transform().transform(np.column_stack([line.get_xdata(), line.get_ydata()]))
    t = np.linspace(0, 1, per_segment)[:, None]
    return np.concatenate([a + t * (b - a) for a, b in itertools.pairwise(xy)])


def test_notes_are_clear_of_the_lines_and_every_shading_is_in_the_legend():
    # lines that cross 1e-12 on their way to the floor, and a radius line, at the left
    doubt = np.tile([1e-3, 1e-9, 1e-14, 0.0], (9, 1)) * np.linspace(0.5, 2, 9)[:, None]
    curves_by_label = {f"act{i}": curves(doubt * (1 + i)) for i in range(5)}
    panel = Panel("test inputs", curves_by_label, data_alpha=5.0)
    figure = overconfidence_figure(panel)
    (axis,) = figure.axes
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    (note,) = [text for text in axis.texts if text.get_text().startswith("certain")]
    box = note.get_window_extent(renderer)
    for line in axis.get_lines():
        if line.get_linestyle() == ":":  # the certain line the note labels
            continue
        points = display_points(line)
        inside = (
            (points[:, 0] >= box.x0) & (points[:, 0] <= box.x1)
            & (points[:, 1] >= box.y0) & (points[:, 1] <= box.y1)
        )  # fmt: skip
        assert not inside.any(), f"the certain note is crossed by {line.get_label()}"
    # p = 1 is named by the floor's own tick, not by a text the lines at the floor cover
    assert not [text for text in axis.texts if "p = 1" in text.get_text()]
    ticks = dict(zip(axis.get_yticks(), (t.get_text() for t in axis.get_yticklabels())))
    assert ticks[FLOOR] == "p = 1"
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert any("within the training data's radius" in label for label in legend)
    assert any("p = 1 in float64" in label for label in legend)
    # the bands are pale and under every median line
    medians = [line for line in axis.get_lines() if line.get_label() in curves_by_label]
    fills = axis.collections  # the interquartile bands (the shadings are patches)
    assert len(fills) == 5 and len(medians) == 5
    assert max(c.get_alpha() for c in fills) <= 0.08
    assert max(c.get_zorder() for c in fills) < min(line.get_zorder() for line in medians)
