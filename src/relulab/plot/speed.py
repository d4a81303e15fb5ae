"""``relulab speed --plot``: time and memory ratios, one row per activation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from relulab.plot.figure import elements_label, new_figure, ratio_axis, save_png

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


def _line(label: str, **style: Any) -> Any:
    """A legend entry for a vertical line; by default the grey one :func:`ratio_axis` draws
    at 1, whose label says what 1 is."""
    from matplotlib.lines import Line2D

    return Line2D([], [], **{"color": "0.5", "linewidth": 0.8, **style}, label=label)


def speed_figure(result: dict[str, Any], *, target: float | None = None) -> Any:
    """``relulab speed``'s forward+backward time of each implementation ÷ torch.relu's.

    One row per activation, one marker per implementation at the median of the per-round
    ratios, its whiskers the quartiles. The ratio's reference is the row ``relu native``
    (torch.relu's forward+backward in the same round), whose marker sits at 1, where a
    labelled line is. A log axis where the ratios span more than 4×, so equal factors are
    equal distances; ``target`` draws a dashed line.
    """
    rows = result["rows"]
    names = list(dict.fromkeys(r["activation"] for r in rows))
    series: dict[str, dict[str, tuple]] = {}
    for row in rows:
        series.setdefault(row["implementation"], {})[row["activation"]] = _quartiles(
            row["forward_backward"], "to_relu"
        )
    figure, axes = new_figure(1, 1, width=7.5, height=1.9 + 0.32 * len(names))
    axis = axes[0][0]
    _dots(axis, names, series)
    if target is not None:
        axis.axvline(target, color="k", linestyle="--", linewidth=0.8, label=f"target {target}")
    ratio_axis(axis, "forward+backward time ÷ torch.relu's, same round (median, quartiles)")
    axis.set_title(
        f"{result['numel']:,} {result['dtype']} elements, {result['threads']} thread(s), "
        f"{result['rounds']} rounds",
        fontsize="medium",
    )
    handles = [
        _line("1 = torch.relu forward+backward (the row relu native)"),
        *axis.get_legend_handles_labels()[0],
    ]
    figure.legend(handles=handles, loc="outside upper center", ncols=3, fontsize="small")
    return figure


def training_figure(result: dict[str, Any], *, target: float | None = None) -> Any:
    """``relulab speed --model``: per model, step time and peak memory ÷ relulab relu's.

    One column of panels per model and measure, sharing the activations' rows. Step times
    are medians of per-round ratios, with quartiles; the reference is the row ``relu``
    (relulab's ReLU: its step in the same round, its peak memory), whose markers sit on a
    labelled line at 1. ``target`` draws a dashed line on the peak-memory panels.
    """
    models = list(dict.fromkeys(r["model"] for r in result["rows"]))
    names = list(dict.fromkeys(r["activation"] for r in result["rows"]))
    figure, axes = new_figure(
        1, 2 * len(models), width=1.6 + 3.2 * len(models) * 2, height=2.0 + 0.3 * len(names),
        sharey=True,
    )  # fmt: skip
    for index, model in enumerate(models):
        time_axis, memory_axis = axes[0][2 * index], axes[0][2 * index + 1]
        rows = {r["activation"]: r for r in result["rows"] if r["model"] == model}
        step = {n: _quartiles(r, "step_to_relu") for n, r in rows.items()}
        _dots(time_axis, names, {"step time": step})
        ratio_axis(time_axis, "step time ÷ relu's, same round\n(median, quartiles)")
        time_axis.set_title(f"{model}: step time", fontsize="medium")
        peak = {n: (r["peak_to_relu"],) * 3 for n, r in rows.items()}
        _dots(memory_axis, names, {"peak memory": peak})
        if target is not None:
            memory_axis.axvline(target, color="k", linestyle="--", linewidth=0.8)
        ratio_axis(memory_axis, "peak memory ÷ relu's")
        memory_axis.set_title(f"{model}: peak memory", fontsize="medium")
    handles = [_line("1 = the row relu (relulab's ReLU)")]
    if target is not None:
        handles.append(_line(f"peak memory target {target}", color="k", linestyle="--"))
    figure.suptitle(
        f"training steps, {result['threads']} thread(s), {result['rounds']} rounds",
        fontsize="medium",
    )
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small")
    return figure


def sweep_figure(result: dict[str, Any], *, target: float = 1.10) -> Any:
    """``relulab speed --sweep``: the default path's time ÷ torch's own module against the
    number of elements, one line per activation (whiskers: quartiles over rounds), forward
    and forward+backward side by side; 1 and ``target`` drawn as lines. Log-log axes."""
    figure, axes = new_figure(1, 2, width=13.0, height=5.6, sharey=True)
    import matplotlib  # after new_figure: it says when matplotlib is missing
    from matplotlib import ticker

    sizes = np.array(result["sizes"], dtype=float)
    styles = ("-", "--", ":", "-.")
    pairs = matplotlib.colormaps["tab20"].colors  # dark and light of 10 hues: darks first
    colours = pairs[0::2] + pairs[1::2]
    for axis, kind, title in zip(axes[0], ("forward_backward", "forward"),
                                 ("forward + backward", "forward")):  # fmt: skip
        for index, (name, kinds) in enumerate(result["native_ratios"].items()):
            median, q1, q3 = (np.array(v) for v in zip(*kinds[kind]))
            axis.errorbar(sizes, median, yerr=[median - q1, q3 - median], capsize=2,
                          color=colours[index % 20], linestyle=styles[index // 20 % 4],
                          marker="o", markersize=3, linewidth=1, label=name)  # fmt: skip
        axis.axhline(1.0, color="0.5", linewidth=0.8)
        axis.axhline(target, color="C3", linewidth=0.8, linestyle=":")
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: elements_label(v)))
        axis.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
        axis.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.yaxis.set_minor_formatter(ticker.NullFormatter())
        axis.set_xlabel(f"elements ({result['dtype']}, {result['threads']} threads)")
        axis.set_title(f"{title}: relulab's default path ÷ torch's module", fontsize=10)
        axis.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(f"time ratio (1: as fast as torch; dotted: the target {target:g})")
    axes[0][0].legend(fontsize=7, ncol=2, loc="upper right")
    rounds = result["rounds"]
    figure.suptitle(f"median over {rounds} round{'s' * (rounds != 1)}, whiskers the quartiles",
                    fontsize=9)  # fmt: skip
    return figure


def plot_speed(result: dict[str, Any], path: str | Path, *, target: float | None = None) -> Path:
    """Write :func:`speed_figure`, or :func:`training_figure` for a ``--model`` result, or
    :func:`sweep_figure` for a ``--sweep`` one."""
    if "native_ratios" in result:
        return save_png(
            sweep_figure(result, **({} if target is None else {"target": target})), path
        )
    draw = training_figure if "model" in result["rows"][0] else speed_figure
    return save_png(draw(result, target=target), path)
