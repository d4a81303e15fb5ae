"""relulab.plot.curves: activation curves and the PNG writing every figure shares."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from pngs import read_png
from relulab import plot
from relulab.optional import MissingDependencyError

image = pytest.importorskip("matplotlib.image")


def test_activation_curves_one_line_per_spec_per_panel(tmp_path):
    specs = ["relu", "gelu", "leaky_relu(0.2)"]
    grid = torch.linspace(-3, 3, 61, dtype=torch.float64)
    curves = [plot.activation_curve(spec, grid) for spec in specs]
    figure = plot.activations_figure(curves, derivative=True)
    assert type(figure.canvas).__name__ == "FigureCanvasAgg"
    (f, df) = figure.axes
    assert [line.get_label() for line in f.lines if not line.get_label().startswith("_")] == specs
    leaky = f.lines[2]
    assert leaky.get_ydata()[0] == pytest.approx(-0.6) and df.lines[2].get_ydata()[0] == 0.2
    path = plot.save_png(figure, tmp_path / "curves")
    assert path == tmp_path / "curves.png"
    read_png(path, figure)


def test_plot_activations_writes_one_panel_or_two(tmp_path):
    one = plot.plot_activations(["relu"], tmp_path / "one.png", points=11)
    two = plot.plot_activations(["relu"], tmp_path / "two.PNG", derivative=True, points=11)
    assert (one, two) == (tmp_path / "one.png", tmp_path / "two.PNG")
    assert image.imread(two).shape[1] == 2 * image.imread(one).shape[1]


def test_png_path_adds_the_suffix_only_when_missing(tmp_path):
    assert plot.png_path(tmp_path / "a") == tmp_path / "a.png"
    assert plot.png_path(tmp_path / "a.b") == tmp_path / "a.b.png"
    assert plot.png_path("a.PNG") == Path("a.PNG")


def test_drawing_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'relulab\[plot\]'"):
        plot.activations_figure([])


def test_a_zoo_draws_each_activation_in_its_own_colour_never_a_listed_ones():
    """Issue 10: in `relulab plot relu sau smartmixed leaky_relu 'leaky_relu(0.2)'` sau took
    leaky_relu's brown; 'leaky_relu(0.01)' is leaky_relu itself and took smelu's pink."""
    colors = pytest.importorskip("matplotlib.colors")
    from relulab.plot.colours import FIXED

    specs = ["relu", "sau", "smartmixed(num_features=1)", "leaky_relu", "leaky_relu(0.2)"]
    specs.append(f"leaky_relu({torch.nn.LeakyReLU().negative_slope})")  # torch's default
    grid = torch.linspace(-2, 2, 9, dtype=torch.float64)
    (axis,) = plot.activations_figure([plot.activation_curve(s, grid) for s in specs]).axes
    drawn = {line.get_label(): colors.to_hex(line.get_color()) for line in axis.lines[:6]}
    assert list(drawn) == specs
    legend = {
        t.get_text(): colors.to_hex(h.get_color())
        for t, h in zip(axis.get_legend().get_texts(), axis.get_legend().legend_handles)
    }
    assert legend == drawn
    assert drawn["relu"] == FIXED["relu"]
    assert drawn["leaky_relu"] == drawn[specs[-1]] == FIXED["leaky_relu"]
    others = [drawn[s] for s in ("sau", "smartmixed(num_features=1)", "leaky_relu(0.2)")]
    fixed = {colors.to_hex(c) for c in FIXED.values()}
    assert len(set(others)) == 3 and not set(others) & fixed


def test_a_trainable_activation_is_drawn_the_same_whatever_the_random_state():
    grid = torch.linspace(-3, 3, 13, dtype=torch.float64)
    torch.manual_seed(1)
    first = plot.activation_curve("smartmixed(num_features=1)", grid)
    torch.manual_seed(2)
    torch.randn(100)  # a different state, as another curve drawn before it leaves
    second = plot.activation_curve("smartmixed(num_features=1)", grid)
    assert first.y == second.y
