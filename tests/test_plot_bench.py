"""relulab.plot.bench: a benchmark run's figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pngs import marker_x, read_png
from relulab import plot
from relulab.bench.report import Trials

image = pytest.importorskip("matplotlib.image")


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
