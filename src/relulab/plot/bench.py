"""A benchmark run's figures (``relulab report``): scores, curves, reproducibility, cost."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from relulab.plot.figure import finite, new_figure, save_png


def _scores(axis, trials, rows, task, colors) -> None:
    metric, _ = trials.task_info(task)
    task_rows = sorted(
        (r for r in rows if r["task"] == task and finite(r["score_mean"])),
        key=lambda r: r["score_mean"],
    )
    for y, row in enumerate(task_rows):
        mean, low, high = (100 * row[k] for k in ("score_mean", "score_ci_low", "score_ci_high"))
        error = [[mean - low], [high - mean]] if math.isfinite(low) else None
        axis.errorbar(mean, y, xerr=error, fmt="o", color=colors[row["activation"]], capsize=3)
        results = trials.results[task][row["activation"]]
        seeds = [100 * r["test_score"] for r in results if r["status"] == "ok"]
        axis.plot(seeds, [y] * len(seeds), ".", color="0.6", zorder=0)
    axis.set_yticks(range(len(task_rows)), [r["activation"] for r in task_rows])
    axis.set_xlabel(f"test {metric} % (mean, 95% CI, seeds)")
    axis.grid(axis="x", alpha=0.3)


def _curves(axis, trials, rows, task, colors) -> None:
    from matplotlib import ticker

    metric, _ = trials.task_info(task)
    for activation, seeds in trials.curves[task].items():  # finished (ok) seeds only
        curve = np.mean([[epoch["test_score"] for epoch in seed] for seed in seeds], 0)
        epochs = range(1, len(curve) + 1)
        axis.plot(epochs, 100 * curve, linewidth=1.3, color=colors[activation])
    axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"test {metric} % (mean over seeds)")
    axis.grid(alpha=0.3)


def _prediction_difference(axis, trials, rows, task, colors) -> None:
    metric, _ = trials.task_info(task)
    for row in (r for r in rows if r["task"] == task and finite(r["pd_top1"])):
        point = (100 * row["pd_top1"], 100 * row["score_mean"])
        axis.plot(*point, "o", color=colors[row["activation"]])
    axis.set_xlabel("prediction difference, top-1 % (lower: more reproducible)")
    axis.set_ylabel(f"test {metric} %")
    axis.grid(alpha=0.3)


def _bars(key: str, scale: float, label: str):
    def draw(axis, trials, rows, task, colors) -> None:
        task_rows = [r for r in rows if r["task"] == task]
        task_rows.sort(key=lambda r: list(colors).index(r["activation"]))
        names = [r["activation"] for r in task_rows]
        values = [r[key] * scale if finite(r[key]) else 0.0 for r in task_rows]
        axis.barh(names, values, color=[colors[n] for n in names])
        axis.invert_yaxis()
        axis.set_xlabel(label)
        axis.grid(axis="x", alpha=0.3)

    return draw


# file name -> (panels per task, one row of panels each; whether the figure needs a legend
# of the activations' colours: panels that name activations on an axis do not)
BENCH_FIGURES = {
    "accuracy.png": ([_scores], False),
    "curves.png": ([_curves], True),
    "prediction_difference.png": ([_prediction_difference], True),
    "cost.png": (
        [
            _bars("seconds_per_epoch", 1000, "ms per training epoch (under the run's load)"),
            _bars("saved_bytes_per_step", 1 / 1024, "KiB saved for backward per step"),
        ],
        False,
    ),
}


def bench_figures(trials: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A benchmark run's figures by file name, one column of panels per task.

    ``trials`` is :class:`relulab.bench.report.Trials`; ``rows`` the summary rows.
    """
    tasks = list(trials.results)
    if not tasks:
        return {}
    # One colour per activation, the same in every figure (config order).
    activations = trials.config["config"]["activations"]
    colors = {a: f"C{i % 10}" for i, a in enumerate(activations)}
    present = [a for a in activations if any(a in trials.results[t] for t in tasks)]
    # Every panel labels its rows with the activations' names: room for spec strings such as
    # 'leaky_relu(negative_slope=0.2)', which would otherwise squeeze the panels.
    label_room = 0.07 * max(0, max(map(len, present), default=0) - 12)
    figures = {}
    for name, (panels, legend) in BENCH_FIGURES.items():
        figure, axes = new_figure(
            len(panels),
            len(tasks),
            width=(4.6 + label_room) * len(tasks) + (1.4 + label_room) * legend,
            height=3.8 * len(panels),
        )
        for row, draw in enumerate(panels):
            for column, task in enumerate(tasks):
                draw(axes[row][column], trials, rows, task, colors)
                axes[row][column].set_title(task)
        if legend:
            from matplotlib.lines import Line2D

            handles = [Line2D([], [], color=colors[a], marker="o", label=a) for a in present]
            figure.legend(handles=handles, loc="outside right upper", fontsize="small")
        figures[name] = figure
    return figures


def plot_bench(run: Path, trials: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Write :func:`bench_figures` into the run directory; returns their file names."""
    from relulab.bench import rundir

    return [
        save_png(figure, run / name, write=rundir.write_bytes_atomic).name
        for name, figure in bench_figures(trials, rows).items()
    ]
