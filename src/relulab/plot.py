"""Every figure relulab draws: activation curves (``relulab plot``), the speed ratios
(``relulab speed --plot``) and a benchmark run's figures (``relulab report``).

matplotlib is optional (``pip install 'relulab[plot]'``) and imported only when drawing. Each
figure is a :class:`matplotlib.figure.Figure` on the Agg canvas, made without pyplot: drawing
opens no window and leaves the backend of the program that imports relulab alone. The
``*_figure`` functions return the Figure; the ``plot_*`` functions write it as a PNG and
return the path they wrote.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from relulab.errors import UserError
from relulab.optional import require
from relulab.registry import get_activation

DPI = 110


def _new_figure(
    rows: int, columns: int, *, width: float, height: float, **grid: Any
) -> tuple[Any, Any]:
    """A Figure on the Agg canvas with a ``rows`` × ``columns`` grid of axes (2-d array).

    ``grid`` goes to :meth:`~matplotlib.figure.Figure.subplots` (``sharey``, say).
    """
    require("matplotlib", extra="plot", purpose="plotting")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Constrained layout keeps tick labels, titles and a legend outside the axes from
    # overlapping, whatever the number of panels and activations.
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, columns, squeeze=False, **grid)


def png_path(path: str | Path) -> Path:
    """``path``, with ``.png`` added unless it ends so (the name of the file really written)."""
    path = Path(path)
    return path if path.suffix.lower() == ".png" else path.with_name(path.name + ".png")


def save_png(
    figure: Any,
    path: str | Path,
    *,
    write: Callable[[Path, bytes], Any] = Path.write_bytes,
) -> Path:
    """Render ``figure`` as a PNG and ``write(path, data)`` it; returns the path written."""
    path = png_path(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    write(path, buffer.getvalue())
    return path


def _ratio_axis(axis: Any, label: str) -> None:
    """The x axis of ratios (1 marked): log, ticked at 1, 2, 5 × 10ⁿ, where the ratios span
    more than 4×; linear otherwise, where a log axis would have one tick or none."""
    from matplotlib import ticker

    axis.axvline(1.0, color="0.5", linewidth=0.8, zorder=0)
    low, high = axis.dataLim.intervalx
    if low > 0 and high / low > 4:
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
    axis.margins(x=0.08)  # no marker half outside the frame
    axis.set_xlabel(label)
    axis.grid(axis="x", alpha=0.3)
    axis.grid(axis="y", alpha=0.12)  # guides each row's markers to its name


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# --- activation curves --------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """An activation sampled on a grid: x, f(x) and f'(x) (by autograd)."""

    label: str
    x: list[float]
    y: list[float]
    dy: list[float]


def activation_curve(spec: str, x: torch.Tensor) -> Curve:
    """Sample ``spec`` at the points ``x`` (float64, eval mode).

    Each point goes in as its own one-feature sample, so activations that look across
    features (VeLU, SmartMixed) see a vector of length one. The derivative is what autograd
    returns: for HeLU, its hysteresis gradient rather than ReLU's.
    """
    module = get_activation(spec).double().eval()
    points = x.detach().to(torch.float64).reshape(-1, 1).requires_grad_()
    try:
        y = module(points)
        (dy,) = torch.autograd.grad(y.sum(), points, allow_unused=True)
    except (RuntimeError, IndexError) as error:  # e.g. prelu(num_parameters=3) on one feature
        reason = str(error).strip().splitlines()[0]
        raise UserError(f"cannot sample {spec!r} one feature at a time: {reason}") from None
    dy = torch.zeros_like(points) if dy is None else dy
    return Curve(
        spec,
        points.detach().flatten().tolist(),
        y.detach().flatten().tolist(),
        dy.flatten().tolist(),
    )


def activations_figure(curves: list[Curve], *, derivative: bool = False) -> Any:
    """f(x) of each curve in one panel and, with ``derivative``, f'(x) in a second beside it."""
    columns = 2 if derivative else 1
    figure, axes = _new_figure(1, columns, width=6.4 * columns, height=4.8)
    panels = [("f(x)", "y")] + ([("f'(x) (autograd)", "dy")] if derivative else [])
    for axis, (title, field) in zip(axes[0], panels):
        for curve in curves:
            axis.plot(curve.x, getattr(curve, field), label=curve.label, linewidth=1.6)
        axis.axhline(0, color="0.8", linewidth=0.8, zorder=0)
        axis.axvline(0, color="0.8", linewidth=0.8, zorder=0)
        axis.set_title(title)
        axis.set_xlabel("x")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    return figure


def plot_activations(
    specs: list[str],
    path: str | Path,
    *,
    derivative: bool = False,
    x_range: tuple[float, float] = (-5.0, 5.0),
    points: int = 1001,
) -> Path:
    """Draw the activations (and, with ``derivative``, their first derivatives beside them).

    Returns the path of the PNG written.
    """
    low, high = x_range
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise UserError(f"x range must be finite and increasing, got {low} .. {high}")
    grid = torch.linspace(low, high, points, dtype=torch.float64)
    curves = [activation_curve(spec, grid) for spec in specs]
    return save_png(activations_figure(curves, derivative=derivative), path)


# --- relulab speed ------------------------------------------------------------------------

_IMPLEMENTATION_MARKERS = {"fused": "o", "reference": "s", "native": "D", "timm_pattern": "^"}


def _dots(axis: Any, labels: list[str], series: dict[str, dict[str, tuple]]) -> None:
    """One row per label, one marker per series, each with its quartiles as error bars.

    ``series`` maps a series name to {label: (median, q1, q3)}; rows missing from a series
    are left out of it. Series sit side by side within a row, so their bars do not overlap.
    """
    spread = 0.6 / max(len(series), 1)
    for index, (name, values) in enumerate(series.items()):
        offset = (index - (len(series) - 1) / 2) * spread
        rows = [(i, values[label]) for i, label in enumerate(labels) if label in values]
        medians = np.array([m for _, (m, _, _) in rows])
        errors = np.array([[m - q1 for _, (m, q1, _) in rows], [q3 - m for _, (m, _, q3) in rows]])
        axis.errorbar(
            medians,
            [i + offset for i, _ in rows],
            xerr=errors,
            fmt=_IMPLEMENTATION_MARKERS.get(name, "o"),
            markersize=4,
            capsize=2,
            linewidth=1,
            label=name,
            color=f"C{index}",
        )
    axis.set_yticks(range(len(labels)), labels)
    axis.set_ylim(len(labels) - 0.5, -0.5)  # the first label on top


def _quartiles(summary: dict[str, float], key: str) -> tuple[float, float, float]:
    return summary[key], summary[f"{key}_q1"], summary[f"{key}_q3"]


def speed_figure(result: dict[str, Any], *, target: float | None = None) -> Any:
    """``relulab speed``'s forward+backward time of each implementation ÷ native ReLU's.

    One row per activation, one marker per implementation (median and quartiles over
    rounds), on a log axis where the ratios span more than 4×; ``target`` draws a dashed
    line.
    """
    rows = result["rows"]
    names = list(dict.fromkeys(r["activation"] for r in rows))
    series: dict[str, dict[str, tuple]] = {}
    for row in rows:
        series.setdefault(row["implementation"], {})[row["activation"]] = _quartiles(
            row["forward_backward"], "to_relu"
        )
    figure, axes = _new_figure(1, 1, width=7.5, height=1.6 + 0.32 * len(names))
    axis = axes[0][0]
    _dots(axis, names, series)
    if target is not None:
        axis.axvline(target, color="k", linestyle="--", linewidth=0.8, label=f"target {target}")
    _ratio_axis(axis, "forward+backward time ÷ native ReLU's (median, quartiles)")
    axis.set_title(
        f"{result['numel']:,} {result['dtype']} elements, {result['threads']} thread(s), "
        f"{result['rounds']} rounds",
        fontsize="medium",
    )
    figure.legend(loc="outside upper center", ncols=5, fontsize="small")
    return figure


def training_figure(result: dict[str, Any], *, target: float | None = None) -> Any:
    """``relulab speed --model``: per model, step time and peak memory ÷ relulab ReLU's.

    One column of panels per model and measure, sharing the activations' rows; ``target``
    draws a dashed line on the peak-memory panels.
    """
    models = list(dict.fromkeys(r["model"] for r in result["rows"]))
    names = list(dict.fromkeys(r["activation"] for r in result["rows"]))
    figure, axes = _new_figure(
        1, 2 * len(models), width=1.6 + 3.2 * len(models) * 2, height=1.6 + 0.3 * len(names),
        sharey=True,
    )  # fmt: skip
    for index, model in enumerate(models):
        time_axis, memory_axis = axes[0][2 * index], axes[0][2 * index + 1]
        rows = {r["activation"]: r for r in result["rows"] if r["model"] == model}
        step = {n: _quartiles(r, "step_to_relu") for n, r in rows.items()}
        _dots(time_axis, names, {"step time": step})
        _ratio_axis(time_axis, "step time ÷ ReLU's\n(median, quartiles)")
        time_axis.set_title(f"{model}: step time", fontsize="medium")
        peak = {n: (r["peak_to_relu"],) * 3 for n, r in rows.items()}
        _dots(memory_axis, names, {"peak memory": peak})
        memory_label = "peak memory ÷ ReLU's"
        if target is not None:
            memory_axis.axvline(target, color="k", linestyle="--", linewidth=0.8)
            memory_label += f"\n(dashed: target {target})"
        _ratio_axis(memory_axis, memory_label)
        memory_axis.set_title(f"{model}: peak memory", fontsize="medium")
    figure.suptitle(f"training steps, {result['threads']} thread(s)", fontsize="medium")
    return figure


def plot_speed(result: dict[str, Any], path: str | Path, *, target: float | None = None) -> Path:
    """Write :func:`speed_figure` or, for a ``--model`` result, :func:`training_figure`."""
    draw = training_figure if "model" in result["rows"][0] else speed_figure
    return save_png(draw(result, target=target), path)


# --- benchmark runs -----------------------------------------------------------------------


def _scores(axis, trials, rows, task, colors) -> None:
    metric, _ = trials.task_info(task)
    task_rows = sorted(
        (r for r in rows if r["task"] == task and _finite(r["score_mean"])),
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
    for row in (r for r in rows if r["task"] == task and _finite(r["pd_top1"])):
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
        values = [r[key] * scale if _finite(r[key]) else 0.0 for r in task_rows]
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
        figure, axes = _new_figure(
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
