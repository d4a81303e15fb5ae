"""relulab.plot.dead_units: one line per run and layer, in %, none for an activation that
cannot die; the activation's colour, the rate's line style; a real PNG."""

from __future__ import annotations

import numpy as np
import pytest

from pngs import read_png
from relulab.plot.colours import FIXED
from relulab.plot.dead_units import dead_units_figure, plot_dead_units

pytest.importorskip("matplotlib")


def record(activation, rate, dead, sparsity):
    return {
        "activation": activation,
        "learning_rate": rate,
        "epochs": [0, 1, 2],
        "layers": ["net.1", "net.3"],
        "dead_fraction": dead,
        "sparsity": sparsity,
    }


RUNS = [
    record("relu", 1e-3, [[0.0, 0.1], [0.0, 0.2], [0.05, 0.25]], [[0.5, 0.4]] * 3),
    record("relu", 1e-2, [[0.0, 0.1], [0.1, 0.3], [0.2, 0.5]], [[0.5, 0.6]] * 3),
    record("gelu", 1e-3, [[None, None]] * 3, [[0.0, 0.0], [0.0, 0.01], [0.0, 0.02]]),
]


def test_each_run_is_a_line_per_layer_and_gelu_has_no_dead_line(tmp_path):
    figure = dead_units_figure(RUNS, title="digits")
    dead_1, dead_3, sparsity_1, sparsity_3 = figure.axes[:4]
    assert [len(axis.lines) for axis in (dead_1, dead_3)] == [2, 2]  # relu at two rates only
    assert [len(axis.lines) for axis in (sparsity_1, sparsity_3)] == [3, 3]
    np.testing.assert_allclose(dead_3.lines[1].get_ydata(), [10, 30, 50])
    np.testing.assert_allclose(sparsity_3.lines[2].get_ydata(), [0, 1, 2])
    assert list(dead_3.lines[1].get_xdata()) == [0, 1, 2]
    assert dead_1.lines[0].get_color() == FIXED["relu"] == dead_1.lines[1].get_color()
    assert sparsity_1.lines[2].get_color() == FIXED["gelu"]
    assert dead_1.lines[0].get_linestyle() != dead_1.lines[1].get_linestyle()
    assert dead_1.get_title() == "layer net.1" and dead_1.get_ylabel() == "dead units %"
    (legend,) = figure.legends
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels[0] == "relu" and labels[1].startswith("gelu") and "n/a" in labels[1]
    assert labels[2:] == ["lr 0.001", "lr 0.01"]
    read_png(plot_dead_units(RUNS, tmp_path / "dead"), figure)


def test_fractions_start_at_0_and_coinciding_lines_each_show_their_colour():
    # leaky_relu and gelu: no dead fraction, sparsity 0 throughout; their lines coincide
    flat = [[None, None]] * 3
    runs = [RUNS[0], record("leaky_relu", 1e-3, flat, [[0.0, 0.0]] * 3), RUNS[2]]
    figure = dead_units_figure(runs)
    for axis in figure.axes[:4]:
        assert axis.get_ylim()[0] == 0  # a fraction is never negative
    sparsity_1 = figure.axes[2]
    leaky, gelu = sparsity_1.lines[1], sparsity_1.lines[2]
    np.testing.assert_array_equal(leaky.get_ydata(), gelu.get_ydata())  # the same line
    for line in (leaky, gelu):
        assert line.get_marker() not in ("None", "", " ", None)
        assert not line.get_clip_on()  # the line at 0 is drawn whole on the axis' edge

    def shown(line):  # the epochs where the line's marker is drawn
        every = line.get_markevery()
        return set(range(len(line.get_xdata()))[every[0] :: every[1]])

    # each colour has an epoch where only its own marker is drawn
    assert shown(leaky) - shown(gelu) and shown(gelu) - shown(leaky)
    (legend,) = figure.legends
    keys = {
        text.get_text().split("\n")[0]: line
        for text, line in zip(legend.get_texts(), legend.get_lines())
    }
    assert keys["leaky_relu"].get_marker() == leaky.get_marker() != gelu.get_marker()
