"""The benchmark's figures: accuracy with 95% CIs, learning curves, accuracy against
prediction difference, and time and memory per activation. One panel per task."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from relulab.bench import rundir
from relulab.plot import pyplot


def _save(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    rundir.write_bytes_atomic(path, buffer.getvalue())


def _colors(trials) -> dict[str, str]:
    """One colour per activation, the same in every figure (config order)."""
    return {a: f"C{i % 10}" for i, a in enumerate(trials.config["config"]["activations"])}


def _panels(plt, count: int, rows: int = 1):
    figure, axes = plt.subplots(rows, count, figsize=(4.6 * count, 3.8 * rows), squeeze=False)
    return figure, axes


def _accuracy(plt, trials, rows) -> Any:
    tasks = list(trials.results)
    figure, axes = _panels(plt, len(tasks))
    for axis, task in zip(axes[0], tasks):
        task_rows = sorted((r for r in rows if r["task"] == task), key=lambda r: r["accuracy_mean"])
        for y, row in enumerate(task_rows):
            mean, low, high = (
                100 * row[k] for k in ("accuracy_mean", "accuracy_ci_low", "accuracy_ci_high")
            )
            if math.isfinite(low):
                axis.errorbar(
                    mean, y, xerr=[[mean - low], [high - mean]], fmt="o", color="C0", capsize=3
                )
            else:
                axis.plot(mean, y, "o", color="C0")
            seeds = [
                100 * r["test_accuracy"]
                for r in trials.results[task][row["activation"]]
                if r["status"] == "ok"
            ]
            axis.plot(seeds, [y] * len(seeds), ".", color="0.6", zorder=0)
        axis.set_yticks(range(len(task_rows)), [r["activation"] for r in task_rows])
        axis.set_title(task)
        axis.set_xlabel("test accuracy % (mean, 95% CI, seeds)")
        axis.grid(axis="x", alpha=0.3)
    return figure


def _curves(plt, trials, rows) -> Any:
    tasks = list(trials.results)
    figure, axes = _panels(plt, len(tasks))
    for axis, task in zip(axes[0], tasks):
        for activation, seeds in trials.curves[task].items():
            length = min((len(c) for c in seeds if c), default=0)
            if not length:
                continue
            accuracy = np.mean(
                [[e["test_accuracy"] for e in c[:length]] for c in seeds if len(c) >= length], 0
            )
            axis.plot(range(1, length + 1), 100 * accuracy, label=activation, linewidth=1.3)
        axis.set_title(task)
        axis.set_xlabel("epoch")
        axis.set_ylabel("test accuracy % (mean over seeds)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize="x-small")
    return figure


def _prediction_difference(plt, trials, rows) -> Any:
    tasks = list(trials.results)
    figure, axes = _panels(plt, len(tasks))
    for axis, task in zip(axes[0], tasks):
        colors = _colors(trials)
        for row in (r for r in rows if r["task"] == task and math.isfinite(r["pd_top1"])):
            axis.plot(
                100 * row["pd_top1"],
                100 * row["accuracy_mean"],
                "o",
                color=colors.get(row["activation"]),
            )
            point = (100 * row["pd_top1"], 100 * row["accuracy_mean"])
            axis.annotate(
                row["activation"], point, xytext=(3, 3), textcoords="offset points", fontsize=7
            )
        axis.set_title(task)
        axis.set_xlabel("prediction difference, top-1 % (lower: more reproducible)")
        axis.set_ylabel("test accuracy %")
        axis.grid(alpha=0.3)
    return figure


def _cost(plt, trials, rows) -> Any:
    tasks = list(trials.results)
    figure, axes = _panels(plt, len(tasks), rows=2)
    for column, task in enumerate(tasks):
        order = trials.config["config"]["activations"]
        task_rows = sorted(
            (r for r in rows if r["task"] == task), key=lambda r: order.index(r["activation"])
        )
        names = [r["activation"] for r in task_rows]
        for row_index, (key, scale, label) in enumerate(
            [
                ("seconds_per_epoch", 1000, "ms per training epoch (under the run's load)"),
                ("saved_bytes_per_step", 1 / 1024, "KiB saved for backward per step"),
            ]
        ):
            axis = axes[row_index][column]
            axis.barh(
                names,
                [r[key] * scale for r in task_rows],
                color=[_colors(trials)[n] for n in names],
            )
            axis.invert_yaxis()
            axis.set_xlabel(label)
            axis.set_title(task)
            axis.grid(axis="x", alpha=0.3)
    return figure


FIGURES = {
    "accuracy.png": _accuracy,
    "curves.png": _curves,
    "prediction_difference.png": _prediction_difference,
    "cost.png": _cost,
}


def draw_all(run: Path, trials, rows: list[dict[str, Any]]) -> list[str]:
    """Draw every figure into the run directory; returns their file names."""
    if not trials.results:
        return []
    plt = pyplot()
    written = []
    for name, draw in FIGURES.items():
        figure = draw(plt, trials, rows)
        figure.tight_layout()
        _save(figure, run / name)
        plt.close(figure)
        written.append(name)
    return written
