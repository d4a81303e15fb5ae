"""relulab.plot.regions: one filled polygon per region, the boundary's segments, the points."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pngs import read_png
from relulab.geometry import partition
from relulab.plot.regions import plot_regions, regions_figure

pytest.importorskip("matplotlib")


def test_every_region_is_one_polygon_and_every_boundary_segment_one_line(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 2))
    square = torch.tensor([[-2.0, -2.0], [2.0, -2.0], [2.0, 2.0], [-2.0, 2.0]])
    result = partition(model, square)
    points = np.random.default_rng(0).uniform(-2, 2, size=(40, 2))
    figure = regions_figure(result, points, labels=np.arange(40) % 2)
    (axis,) = figure.axes
    polygons, boundary = axis.collections[0], axis.collections[1]
    assert len(polygons.get_paths()) == result.count
    assert len(boundary.get_segments()) == len(result.boundary)
    np.testing.assert_allclose(boundary.get_segments()[0], result.boundary[0].numpy())
    assert axis.collections[2].get_offsets().shape == (40, 2)
    assert axis.get_xlim() == (-2.0, 2.0) and str(result.count) in axis.get_title()
    read_png(plot_regions(result, tmp_path / "regions"), figure)


def test_a_few_points_carry_their_notes_inside_the_axes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
    square = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    points = np.array([[-0.9, -0.9], [0.9, 0.9]])
    figure = regions_figure(
        partition(model, square), points, np.array([0, 1]), notes=["low left", "up right"]
    )
    texts = {t.get_text(): t for t in figure.axes[0].texts}
    assert set(texts) == {"low left", "up right"}
    # written towards the middle: right of the left point, left of the right one
    assert texts["low left"].get_horizontalalignment() == "left"
    assert texts["up right"].get_horizontalalignment() == "right"


def test_the_title_names_the_slice_and_counts_in_the_singular_without_a_missing_boundary():
    one = nn.Linear(2, 2).double()  # no activation: one region
    with torch.no_grad():
        one.weight.zero_()
        one.bias.copy_(torch.tensor([1.0, 0.0]))  # class 0 everywhere: no boundary
    square = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    title = regions_figure(partition(one, square), title="toy-s0").axes[0].get_title()
    assert title == "toy-s0: 1 linear region"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 2))
    result = partition(model, square)
    assert len(result.boundary) and result.count > 1
    title = regions_figure(result, title="toy-s1").axes[0].get_title()
    assert title == f"toy-s1: {result.count:,} linear regions; black: decision boundary"


def test_points_have_a_legend_entry_and_white_edges_and_the_figure_follows_the_domain():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
    wide = torch.tensor([[-4.0, -1.0], [4.0, -1.0], [4.0, 1.0], [-4.0, 1.0]])
    points = np.random.default_rng(0).uniform(-1, 1, size=(30, 2))
    figure = regions_figure(partition(model, wide), points, np.arange(30) % 3)
    axis = figure.axes[0]
    legend = axis.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["training examples, coloured by class"]
    dots = axis.collections[-1]
    np.testing.assert_allclose(dots.get_edgecolors(), [[1.0, 1.0, 1.0, 1.0]])
    width, height = figure.get_size_inches()
    assert height < 0.5 * width  # a 4:1 domain: no empty bands above and below
    figure.canvas.draw()
    box = axis.get_window_extent()
    assert box.height / figure.bbox.height > 0.5  # the axes fill most of the figure's height
