"""The benchmark's figures, one panel per task: scores with 95% CIs, learning curves, score
against prediction difference, and time and memory per activation."""

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


def _scores(axis, trials, rows, task, colors) -> None:
    metric, _ = trials.task_info(task)
    task_rows = sorted(
        (r for r in rows if r["task"] == task and math.isfinite(r["score_mean"])),
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
    metric, _ = trials.task_info(task)
    for activation, seeds in trials.curves[task].items():  # finished (ok) seeds only
        curve = np.mean([[epoch["test_score"] for epoch in seed] for seed in seeds], 0)
        axis.plot(
            range(1, len(curve) + 1),
            100 * curve,
            label=activation,
            linewidth=1.3,
            color=colors[activation],
        )
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"test {metric} % (mean over seeds)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="x-small")


def _prediction_difference(axis, trials, rows, task, colors) -> None:
    metric, _ = trials.task_info(task)
    for row in (r for r in rows if r["task"] == task and math.isfinite(r["pd_top1"])):
        point = (100 * row["pd_top1"], 100 * row["score_mean"])
        axis.plot(*point, "o", color=colors[row["activation"]])
        axis.annotate(
            row["activation"], point, xytext=(3, 3), textcoords="offset points", fontsize=7
        )
    axis.set_xlabel("prediction difference, top-1 % (lower: more reproducible)")
    axis.set_ylabel(f"test {metric} %")
    axis.grid(alpha=0.3)


def _bars(key: str, scale: float, label: str):
    def draw(axis, trials, rows, task, colors) -> None:
        task_rows = [r for r in rows if r["task"] == task]
        task_rows.sort(key=lambda r: list(colors).index(r["activation"]))
        names = [r["activation"] for r in task_rows]
        values = [r[key] * scale if math.isfinite(r[key]) else 0.0 for r in task_rows]
        axis.barh(names, values, color=[colors[n] for n in names])
        axis.invert_yaxis()
        axis.set_xlabel(label)
        axis.grid(axis="x", alpha=0.3)

    return draw


# file name -> panels per task (one row of panels each)
FIGURES = {
    "accuracy.png": [_scores],
    "curves.png": [_curves],
    "prediction_difference.png": [_prediction_difference],
    "cost.png": [
        _bars("seconds_per_epoch", 1000, "ms per training epoch (under the run's load)"),
        _bars("saved_bytes_per_step", 1 / 1024, "KiB saved for backward per step"),
    ],
}


def draw_all(run: Path, trials, rows: list[dict[str, Any]]) -> list[str]:
    """Draw every figure into the run directory; returns their file names."""
    if not trials.results:
        return []
    plt = pyplot()
    tasks = list(trials.results)
    # One colour per activation, the same in every figure (config order).
    colors = {a: f"C{i % 10}" for i, a in enumerate(trials.config["config"]["activations"])}
    written = []
    for name, panels in FIGURES.items():
        figure, axes = plt.subplots(
            len(panels), len(tasks), figsize=(4.6 * len(tasks), 3.8 * len(panels)), squeeze=False
        )
        for row, draw in enumerate(panels):
            for column, task in enumerate(tasks):
                draw(axes[row][column], trials, rows, task, colors)
                axes[row][column].set_title(task)
        figure.tight_layout()
        _save(figure, run / name)
        plt.close(figure)
        written.append(name)
    return written
