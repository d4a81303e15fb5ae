"""relulab.plot: every figure draws what it is given and writes a PNG of the expected size."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from relulab import plot
from relulab.bench.report import Trials
from relulab.optional import MissingDependencyError

image = pytest.importorskip("matplotlib.image")


def read_png(path, figure) -> np.ndarray:
    """The PNG's pixels, after checking its size is the figure's at ``plot.DPI``."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(path)
    width, height = figure.get_size_inches() * plot.DPI
    assert abs(pixels.shape[0] - height) < 1 and abs(pixels.shape[1] - width) < 1
    assert pixels[..., :3].std() > 0.05  # not a blank canvas
    return pixels


def marker_x(container) -> list[float]:
    """The x positions of an errorbar's markers."""
    return list(container.lines[0].get_xdata())


# --- activation curves --------------------------------------------------------------------


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
    assert plot.png_path("a.PNG") == plot.Path("a.PNG")


def test_drawing_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'relulab\[plot\]'"):
        plot.activations_figure([])


# --- relulab speed ------------------------------------------------------------------------


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
    read_png(plot.plot_speed(TRAINING, tmp_path / "training", target=1.05), figure)


# --- benchmark runs -----------------------------------------------------------------------


def bench_run() -> tuple[Trials, list[dict]]:
    """Two tasks, three activations (one of them not run on the second task), 3 seeds."""
    activations = ["relu", "gelu", "mish"]
    results, curves, rows = {}, {}, []
    for task, offset in (("spirals", 0.0), ("digits", 0.05)):
        results[task], curves[task] = {}, {}
        for index, activation in enumerate(activations):
            if task == "digits" and activation == "mish":
                continue
            scores = [0.80 + offset + 0.02 * index + 0.01 * seed for seed in range(3)]
            results[task][activation] = [
                {"status": "ok", "test_score": s, "metric": "accuracy"} for s in scores
            ]
            curves[task][activation] = [
                [{"test_score": s * (epoch + 1) / 4} for epoch in range(4)] for s in scores
            ]
            mean = float(np.mean(scores))
            rows.append({
                "task": task, "activation": activation, "score_mean": mean,
                "score_ci_low": mean - 0.01, "score_ci_high": mean + 0.01,
                "pd_top1": 0.1 + 0.01 * index if activation != "relu" else math.nan,
                "seconds_per_epoch": 0.01 * (index + 1),
                "saved_bytes_per_step": 1024.0 * (index + 1),
            })  # fmt: skip
    config = {"config": {"activations": activations}}
    return Trials(config, results, curves, predictions={}), rows


def test_bench_figures_draw_every_task_and_activation():
    trials, rows = bench_run()
    figures = plot.bench_figures(trials, rows)
    assert list(figures) == ["accuracy.png", "curves.png", "prediction_difference.png", "cost.png"]
    accuracy = figures["accuracy.png"].axes
    assert [axis.get_title() for axis in accuracy] == ["spirals", "digits"]
    # the means, in percent, sorted; each row also has its 3 seeds
    spirals_means = [marker_x(c)[0] for c in accuracy[0].containers]
    assert spirals_means == pytest.approx([81.0, 83.0, 85.0])
    assert [t.get_text() for t in accuracy[1].get_yticklabels()] == ["relu", "gelu"]
    curves = figures["curves.png"]
    assert [len(axis.lines) for axis in curves.axes] == [3, 2]
    assert list(curves.axes[0].lines[0].get_ydata()) == pytest.approx([20.25, 40.5, 60.75, 81])
    (legend,) = curves.legends
    assert [t.get_text() for t in legend.get_texts()] == ["relu", "gelu", "mish"]
    # relu's prediction difference is NaN: no point for it
    assert [len(axis.lines) for axis in figures["prediction_difference.png"].axes] == [2, 1]
    cost = figures["cost.png"].axes
    assert len(cost) == 4 and [p.get_width() for p in cost[0].patches] == pytest.approx(
        [10, 20, 30]
    )
    assert [p.get_width() for p in cost[3].patches] == pytest.approx([1, 2])  # KiB


def test_plot_bench_writes_each_figure_into_the_run(tmp_path):
    trials, rows = bench_run()
    figures = plot.bench_figures(trials, rows)
    written = plot.plot_bench(tmp_path, trials, rows)
    assert written == list(figures)
    for name in written:
        read_png(tmp_path / name, figures[name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written)  # no temporary left
    assert plot.bench_figures(Trials({}, {}, {}, {}), []) == {}
