"""relulab.plot.speed: the speed and training-step ratio figures."""

from __future__ import annotations

import pytest

from pngs import marker_x, read_png
from relulab import plot

image = pytest.importorskip("matplotlib.image")


def _legend(figure) -> list[str]:
    (legend,) = figure.legends
    return [text.get_text() for text in legend.get_texts()]


def summary(median: float, spread: float = 0.1) -> dict[str, float]:
    return {"to_relu": median, "to_relu_q1": median - spread, "to_relu_q3": median + spread}


SPEED = {
    "numel": 4096,
    "dtype": "float32",
    "threads": 2,
    "rounds": 5,
    "rows": [
        {"activation": a, "implementation": i, "forward_backward": summary(m)}
        for a, i, m in [
            ("relu", "fused", 1.1), ("relu", "reference", 1.0), ("relu", "native", 1.0),
            ("golu", "fused", 1.7), ("golu", "reference", 8.0),
            ("mish", "fused", 1.2), ("mish", "reference", 9.0), ("mish", "native", 2.4),
        ]
    ],
}  # fmt: skip


def test_speed_figure_one_row_per_activation_one_marker_per_implementation(tmp_path):
    figure = plot.speed_figure(SPEED, target=1.15)
    (axis,) = figure.axes
    assert [t.get_text() for t in axis.get_yticklabels()] == ["relu", "golu", "mish"]
    series = {c.get_label(): marker_x(c) for c in axis.containers}
    assert series == {
        "fused": [1.1, 1.7, 1.2],
        "reference": [1.0, 8.0, 9.0],
        "native": [1.0, 2.4],  # torch has no GoLU
    }
    assert axis.get_xscale() == "log"  # 1.0 to 9.0
    assert [line.get_xdata()[0] for line in axis.lines if line.get_linestyle() == "--"] == [1.15]
    # Issue 10.3: positions on the log axis, no bars from an arbitrary floor; the line at 1
    # says what 1 is, and so does the axis
    assert not axis.patches
    assert 1.0 in [line.get_xdata()[0] for line in axis.lines if line.get_linestyle() == "-"]
    assert _legend(figure)[0] == "1 = torch.relu forward+backward (the row relu native)"
    assert "÷ torch.relu's, same round" in axis.get_xlabel()
    read_png(plot.plot_speed(SPEED, tmp_path / "speed.png", target=1.15), figure)


def test_a_narrow_range_of_ratios_gets_a_linear_axis():
    rows = [r for r in SPEED["rows"] if r["forward_backward"]["to_relu"] < 2]
    figure = plot.speed_figure({**SPEED, "rows": rows})
    (axis,) = figure.axes
    assert axis.get_xscale() == "linear" and len(axis.get_xticks()) >= 4


TRAINING = {
    "threads": 1,
    "rounds": 3,
    "rows": [
        {"model": model, "activation": name, "step_to_relu": step, "step_to_relu_q1": step - 0.02,
         "step_to_relu_q3": step + 0.02, "peak_to_relu": peak}
        for model in ("mlp", "cnn")
        for name, step, peak in [
            ("relu", 1.0, 1.0), ("golu", 1.1, 1.33), ("relu (torch)", 0.9, 0.83)
        ]
    ],
}  # fmt: skip


def test_training_figure_a_step_and_a_peak_panel_per_model(tmp_path):
    figure = plot.training_figure(TRAINING, target=1.05)
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == ["mlp: step time", "mlp: peak memory", "cnn: step time", "cnn: peak memory"]
    step, peak = figure.axes[:2]
    assert marker_x(step.containers[0]) == [1.0, 1.1, 0.9]
    assert marker_x(peak.containers[0]) == [1.0, 1.33, 0.83]
    labels = [t.get_text() for t in step.get_yticklabels()]
    assert labels == ["relu", "golu", "relu (torch)"]
    assert not step.patches and not peak.patches
    assert _legend(figure) == ["1 = the row relu (relulab's ReLU)", "peak memory target 1.05"]
    assert "÷ relu's, same round" in step.get_xlabel()
    read_png(plot.plot_speed(TRAINING, tmp_path / "training", target=1.05), figure)
