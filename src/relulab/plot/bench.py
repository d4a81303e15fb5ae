"""A benchmark run's figures (``relulab report``): scores, curves, reproducibility, cost."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from relulab.bench.report import score_ci_shown, task_title
from relulab.plot.colours import activation_colours
from relulab.plot.figure import finite, new_figure, save_png

BASELINE_LINE = {"color": "0.45", "linestyle": "--", "linewidth": 0.9, "zorder": 0}
SEED_DOTS = {"color": "0.65", "markersize": 4, "zorder": 0}
PERCENT_MARGIN = 2.0  # room beyond 0 and 100 % on a score axis
CURVE_MARKER = "o"  # on a one-epoch curve, which a line alone would not show


def _table_rows(rows: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """The task's rows in the order of the report's table: by the rank summarize gave them
    (ties keep the run's activation order there), then the unranked, which have no score."""
    task_rows = [r for r in rows if r["task"] == task]
    return sorted(task_rows, key=lambda r: math.inf if r["rank"] is None else r["rank"])


def _name(activation: str, baseline: str) -> str:
    return f"{activation} (baseline)" if activation == baseline else activation


def _name_rows(axis, task_rows: list[dict[str, Any]]) -> None:
    """One row per activation, named on the y axis, the table's first row on top."""
    if task_rows:
        axis.set_yticks(
            range(len(task_rows)), [_name(r["activation"], r["baseline"]) for r in task_rows]
        )
        axis.set_ylim(len(task_rows) - 0.5, -0.5)
    axis.grid(axis="x", alpha=0.3)


def _mark_baseline(axis, task_rows: list[dict[str, Any]], key: str) -> None:
    """A dashed line across every row at the baseline's value (in %), where it has one."""
    for row in task_rows:
        if row["activation"] == row["baseline"] and finite(row[key]):
            axis.axvline(100 * row[key], **BASELINE_LINE)


def _scores(axis, trials, rows, task, colours) -> None:
    metric, _ = trials.task_info(task)
    task_rows = [r for r in _table_rows(rows, task) if finite(r["score_mean"])]
    for y, row in enumerate(task_rows):
        mean = 100 * row["score_mean"]
        low, high = (100 * bound for bound in score_ci_shown(row))
        error = [[mean - low], [high - mean]] if math.isfinite(low) else None
        axis.errorbar(mean, y, xerr=error, fmt="o", color=colours[row["activation"]], capsize=3)
        results = trials.results[task][row["activation"]]
        seeds = [100 * r["test_score"] for r in results if r["status"] == "ok"]
        axis.plot(seeds, [y] * len(seeds), ".", **SEED_DOTS)
    _mark_baseline(axis, task_rows, "score_mean")
    _name_rows(axis, task_rows)
    # everything drawn lies in [0, 100] %; the margin only keeps a dot at 100 in full sight
    left, right = axis.get_xlim()
    axis.set_xlim(max(left, -PERCENT_MARGIN), min(right, 100 + PERCENT_MARGIN))
    axis.set_xlabel(f"test {metric} %\nmean, 95% CI; grey: each seed; dashed: baseline")


def _epochs(seeds: list[list[dict[str, Any]]]) -> int:
    """How many points an activation's curve has: the epochs of its finished seeds."""
    return len(seeds[0]) if seeds else 0


def _curves(axis, trials, rows, task, colours) -> None:
    from matplotlib import ticker

    metric, _ = trials.task_info(task)
    for activation, seeds in trials.curves[task].items():  # finished (ok) seeds only
        curve = np.mean([[epoch["test_score"] for epoch in seed] for seed in seeds], 0)
        epochs = range(1, len(curve) + 1)
        marker = CURVE_MARKER if _epochs(seeds) == 1 else None
        axis.plot(epochs, 100 * curve, linewidth=1.3, marker=marker, color=colours[activation])
    # epochs are whole: no tick at 2.5, and one tick even for a one-epoch run
    axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, min_n_ticks=1))
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"test {metric} % (mean over seeds)")
    axis.grid(alpha=0.3)


def _pair_differences(predictions: list[np.ndarray]) -> list[float]:
    """The top-1 prediction difference of each pair of seeds, in percent."""
    from relulab.bench import stats

    pairs = itertools.combinations(predictions, 2)
    return [100 * stats.prediction_difference(pair)["top1"] for pair in pairs]


def _prediction_difference(axis, trials, rows, task, colours) -> None:
    from matplotlib.transforms import blended_transform_factory

    # The rows of accuracy.png, in its order: each activation has a row of its own, so no
    # label or dot can hide another however close their values, and the two figures read
    # side by side. Each pair of seeds is a grey dot: the spread the mean comes from (pairs
    # share seeds, so they are not independent samples and get no t-interval).
    task_rows = [r for r in _table_rows(rows, task) if finite(r["score_mean"])]
    at_left = blended_transform_factory(axis.transAxes, axis.transData)
    for y, row in enumerate(task_rows):
        if not finite(row["pd_top1"]):
            note = "n/a: fewer than 2 finished seeds"
            axis.text(0.02, y, note, transform=at_left, va="center", fontsize="small", color="0.4")
            continue
        pairs = _pair_differences(trials.predictions.get(task, {}).get(row["activation"], []))
        axis.plot(pairs, [y] * len(pairs), ".", **SEED_DOTS)
        axis.plot(100 * row["pd_top1"], y, "o", color=colours[row["activation"]])
    _mark_baseline(axis, task_rows, "pd_top1")
    _name_rows(axis, task_rows)
    axis.set_xlabel(
        "prediction difference, top-1 %\n"
        "mean over seed pairs (grey: each pair)\n"
        "lower: more reproducible; dashed: baseline"
    )


def _bars(key: str, scale: float, label: str):
    def draw(axis, trials, rows, task, colours) -> None:
        task_rows = _table_rows(rows, task)
        values = [r[key] * scale if finite(r[key]) else 0.0 for r in task_rows]
        axis.barh(
            range(len(task_rows)), values, color=[colours[r["activation"]] for r in task_rows]
        )
        _name_rows(axis, task_rows)
        axis.set_xlabel(label)

    return draw


# file name -> (panels per task, one row of panels each; whether the figure needs a legend
# of the activations' colours: panels that name activations on an axis do not)
BENCH_FIGURES = {
    "accuracy.png": ([_scores], False),
    "curves.png": ([_curves], True),
    "prediction_difference.png": ([_prediction_difference], False),
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

    ``trials`` is :class:`relulab.bench.report.Trials`; ``rows`` the summary rows
    (:func:`relulab.bench.report.summarize`). Rows of activations appear in the order of the
    report's table, and each activation has its colour of :func:`activation_colours` in every
    figure: the colours of all the run's activations, so a partial report colours as the
    final one does.
    """
    tasks = list(trials.results)
    if not tasks:
        return {}
    activations = trials.config["config"]["activations"]
    colours = activation_colours(activations)
    baseline = next((r["baseline"] for r in rows), None)
    present = [a for a in activations if any(a in trials.results[t] for t in tasks)]
    names = [_name(a, baseline) for a in present]
    # Every panel labels its rows with the activations' names: room for spec strings such as
    # 'leaky_relu(negative_slope=0.2)', which would otherwise squeeze the panels.
    label_room = 0.07 * max(0, max(map(len, names), default=0) - 12)
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
                draw(axes[row][column], trials, rows, task, colours)
                axes[row][column].set_title(task_title(trials.config, task))
        if legend:
            from matplotlib.lines import Line2D

            # each key as its curves are drawn: a marker only where one is a single point
            points = {
                a for t in tasks for a, seeds in trials.curves[t].items() if _epochs(seeds) == 1
            }
            handles = [
                Line2D(
                    [],
                    [],
                    color=colours[a],
                    marker=CURVE_MARKER if a in points else None,
                    label=label,
                )
                for a, label in zip(present, names)
            ]
            # outside the axes, where it covers no curve
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
