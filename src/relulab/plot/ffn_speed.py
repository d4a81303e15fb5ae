"""``relulab speed --ffn -o FILE``: each FFN path's speed-up over dense against sparsity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relulab.plot.figure import new_figure, save_png

_MARKERS = "osD^vP*X"


def _log_if_wide(axis: Any) -> None:
    """A log y axis where the values span more than 4× (equal factors look equal)."""
    from matplotlib import ticker

    low, high = axis.dataLim.intervaly
    if low > 0 and high / low > 4:
        axis.set_yscale("log")
        axis.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axis.yaxis.set_minor_formatter(ticker.NullFormatter())


def ffn_speed_figure(result: dict[str, Any], model: dict[str, Any] | None = None) -> Any:
    """One panel per FFN size: each sparse path's speed-up over dense (median of per-round
    ratios, whiskers the quartiles) against the sparsity, its memory-bandwidth bound dashed
    in the same colour, and a grey line at 1, dense. ``model``: :func:`ffn_speed`'s result
    at a model's measured sparsity, drawn as stars."""
    sizes = result["sizes"]
    figure, axes = new_figure(1, len(sizes), width=max(6.4, 5.2 * len(sizes)), height=4.8)
    extra = {} if model is None else {(s["d"], s["hidden"]): s for s in model["sizes"]}
    paths = [p for p in result["paths"] if p != "dense"]
    for axis, size in zip(axes[0], sizes, strict=True):
        for index, path in enumerate(paths):
            rows = sorted(
                (r for r in size["rows"] if r["path"] == path), key=lambda r: r["sparsity"]
            )
            if not rows:
                continue
            colour = f"C{index}"
            x = [100 * r["sparsity"] for r in rows]
            y = [r["speedup"] for r in rows]
            errors = [
                [r["speedup"] - r["speedup_q1"] for r in rows],
                [r["speedup_q3"] - r["speedup"] for r in rows],
            ]
            axis.errorbar(x, y, yerr=errors, color=colour, marker=_MARKERS[index % 8],
                          markersize=4, capsize=2, linewidth=1, label=path)  # fmt: skip
            # marker "_" too: a single sparsity still shows its bound
            axis.plot(x, [r["bound"] for r in rows], color=colour, linestyle="--", marker="_",
                      markersize=10, linewidth=0.8)  # fmt: skip
            for row in extra.get((size["d"], size["hidden"]), {}).get("rows", []):
                if row["path"] == path:
                    axis.plot(100 * row["sparsity"], row["bound"], marker="_", markersize=12,
                              color=colour, linestyle="none")  # fmt: skip
                    axis.plot(100 * row["sparsity"], row["speedup"], marker="*", markersize=11,
                              color=colour, markeredgecolor="black", linestyle="none")  # fmt: skip
        axis.axhline(1.0, color="0.5", linewidth=0.8, zorder=0, label="dense")
        _log_if_wide(axis)
        axis.set_title(f"FFN d={size['d']}, hidden={size['hidden']}, batch 1")
        axis.set_xlabel("FFN activation sparsity (%)")
        axis.set_ylabel("speed-up over dense (dense time ÷ path time)")
        axis.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    handles, _ = axes[0][0].get_legend_handles_labels()
    bound = {"linestyle": "--", "marker": "_", "linewidth": 0.8, "label": "its bound"}
    handles.append(Line2D([], [], color="0.3", **bound))
    if model is not None:
        star = {"marker": "*", "linestyle": "none", "markeredgecolor": "black"}
        handles.append(Line2D([], [], color="0.3", label="at the model's sparsity", **star))
    figure.legend(handles=handles, fontsize="small", loc="outside lower center", ncols=5)
    gated = "gated (reglu) " if result.get("gated") else ""
    figure.suptitle(
        f"{gated}FFN, one token, {result['threads']} thread(s): medians of "
        f"{result['rounds']} round-robin rounds\ndashed: each path's memory-bandwidth bound",
        fontsize="medium",
    )
    return figure


def plot_ffn_speed(
    result: dict[str, Any], path: str | Path, model: dict[str, Any] | None = None
) -> Path:
    """Write :func:`ffn_speed_figure` as a PNG; the path written."""
    return save_png(ffn_speed_figure(result, model), path)
