"""``relulab reduce``: test accuracy against ReLU count and against private-inference cost."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relulab.plot.figure import new_figure, save_png

MARKERS = "osD^vP*X"


def _by_method(rows: Sequence[dict]) -> dict[str, list[dict]]:
    """Rows per method; methods whose points are all the same (thin on one-layer stages gives
    cull's models) are one line, labelled ``cull = thin``, since one would hide the other."""
    methods: dict[str, list[dict]] = {}
    for row in rows:
        methods.setdefault(row["method"], []).append(row)
    merged: dict[str, list[dict]] = {}
    for method, points in methods.items():
        key = sorted((p["budget"], p["relus"], p["test_score"]) for p in points)
        same = next(
            (label for label, found in merged.items()
             if sorted((p["budget"], p["relus"], p["test_score"]) for p in found) == key),
            None,
        )  # fmt: skip
        if same is None:
            merged[method] = points
        else:  # relabelled where it stands, so the legend keeps the methods' order
            merged = {(f"{k} = {method}" if k == same else k): v for k, v in merged.items()}
    return merged


def pareto_figure(full: dict, rows: Sequence[dict], *, title: str = "") -> Any:
    """Two panels: test score (mean, with the spread over seeds as error bars) against the
    ReLU count, and against the estimated online latency of the nonlinear layers in a 2-party
    private inference (:func:`relulab.budget.reduce.nonlinear_cost`: CrypTen's costs measured
    here, with this machine's loopback round trip); one line per method (a method that gives
    the same models as another, e.g. thin on one-layer stages, shares its line and label),
    the full model as a star.

    ``full`` and each of ``rows`` (one per method and budget, with its ``method``):
    ``relus``, ``latency_s``, ``test_score``, ``test_score_std``.
    """
    full = {**full, "latency_ms": 1e3 * full["latency_s"]}
    rows = [{**row, "latency_ms": 1e3 * row["latency_s"]} for row in rows]
    figure, axes = new_figure(1, 2, width=11.0, height=4.4, sharey=True)
    for column, (key, label) in enumerate(
        [("relus", "ReLU evaluations per input"),
         ("latency_ms", "estimated private-inference latency of the nonlinear layers (ms)")]
    ):  # fmt: skip
        axis = axes[0][column]
        for index, (method, points) in enumerate(_by_method(rows).items()):
            points = sorted(points, key=lambda p: p[key])
            axis.errorbar(
                [p[key] for p in points], [100 * p["test_score"] for p in points],
                yerr=[100 * p["test_score_std"] for p in points],
                marker=MARKERS[index % len(MARKERS)], capsize=3, label=method,
            )  # fmt: skip
        axis.errorbar(
            [full[key]], [100 * full["test_score"]], yerr=[100 * full["test_score_std"]],
            marker="*", markersize=14, color="black", linestyle="none", label="full model",
        )  # fmt: skip
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy %")
    axes[0][1].legend(loc="lower right", fontsize=9)
    if title:
        figure.suptitle(title)
    return figure


def plot_pareto(full: dict, rows: Sequence[dict], path: str | Path, **options: Any) -> Path:
    """Write :func:`pareto_figure` as a PNG; returns the path written."""
    return save_png(pareto_figure(full, rows, **options), path)
