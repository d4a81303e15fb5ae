"""Plots of the GPT lab: loss curves, relufication's sparsity, sparse-FFN speed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from relulab.plot.figure import new_figure, save_png


def training_figure(
    histories: Mapping[str, Sequence[dict]],
    *,
    title: str = "",
    marks: Mapping[str, float] | None = None,
) -> Any:
    """Validation loss (solid) and training loss (dashed, mean over each interval) against
    the step, one colour per history; ``marks`` draws labelled vertical lines (e.g. where a
    model was relufied)."""
    figure, axes = new_figure(1, 1, width=7.5, height=4.4)
    axis = axes[0][0]
    for index, (label, history) in enumerate(histories.items()):
        colour = f"C{index}"
        steps = [h["step"] for h in history]
        axis.plot(steps, [h["val_loss"] for h in history], color=colour, marker="o",
                  markersize=3, label=f"{label}: validation")  # fmt: skip
        axis.plot(steps, [h["train_loss"] for h in history], color=colour, linestyle="--",
                  alpha=0.6, label=f"{label}: training (mean over each interval)")  # fmt: skip
    for text, step in (marks or {}).items():
        axis.axvline(step, color="grey", linestyle=":")
        axis.annotate(text, (step, 1), xycoords=("data", "axes fraction"), rotation=90,
                      va="top", ha="right", fontsize=8, color="grey")  # fmt: skip
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps, not fractions
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("cross entropy (nats per character)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    if title:
        axis.set_title(title)
    return figure


def plot_training(histories: Mapping[str, Sequence[dict]], path: str | Path, **options) -> Path:
    """Write :func:`training_figure` as a PNG; returns the path written."""
    return save_png(training_figure(histories, **options), path)


def relufy_figure(result: dict, *, title: str = "") -> Any:
    """Three panels of :func:`relulab.transformers.relufication.relufication`'s result:
    validation loss during fine-tuning (relufied vs the unchanged control, the loss before
    relufication as a line), FFN sparsity per layer, and aggregated sparsity (neurons never
    active over W consecutive tokens) against W."""
    figure, axes = new_figure(1, 3, width=15.0, height=4.4)
    loss, layers, aggregated = axes[0]
    history = result["history"]
    steps = [0] + [h["step"] for h in history]
    loss.plot(steps, [result["relufied"]["val_loss"]] + [h["val_loss"] for h in history],
              marker="o", color="C3", label="relufied, fine-tuned")  # fmt: skip
    if "control_history" in result:
        control = result["control_history"]
        label = "control: not relufied, same fine-tuning"
        loss.plot([0] + [h["step"] for h in control],
                  [result["before"]["val_loss"]] + [h["val_loss"] for h in control],
                  marker="s", color="C0", label=label)  # fmt: skip
    loss.axhline(result["before"]["val_loss"], color="grey", linestyle=":",
                 label="before relufication")  # fmt: skip
    loss.set_xlabel("fine-tuning step")
    loss.set_ylabel("validation loss (nats per character)")
    loss.legend(fontsize=8)
    loss.set_title("loss: recovery after relufication", fontsize=10)
    names = [row["name"] for row in result["after"]["sparsity"]["layers"]]
    x = range(len(names))
    width = 0.4
    for offset, (key, label, colour) in enumerate(
        [("relufied", "right after relufication", "C1"), ("after", "after fine-tuning", "C3")]
    ):
        values = [100 * row["sparsity"] for row in result[key]["sparsity"]["layers"]]
        layers.bar([i + (offset - 0.5) * width for i in x], values, width, label=label,
                   color=colour)  # fmt: skip
    layers.set_xticks(list(x), [n.replace(".ffn", "") for n in names], fontsize=8)
    layers.set_ylabel("FFN activations that are exactly 0 (%)")
    layers.set_ylim(0, 100)
    layers.legend(fontsize=8)
    layers.set_title("activation sparsity per layer (validation text)", fontsize=10)
    for key, label, colour in (("relufied", "right after", "C1"), ("after", "fine-tuned", "C3")):
        # sorted by W: read back from JSON, whose keys are sorted as strings ("32" < "8")
        window = sorted((int(w), v) for w, v in result[key]["sparsity"]["aggregated"].items())
        aggregated.plot([w for w, _ in window], [100 * v for _, v in window],
                        marker="o", color=colour, label=label)  # fmt: skip
    aggregated.set_xscale("log", base=2)
    aggregated.set_xlabel("window of consecutive tokens W")
    aggregated.set_ylabel("FFN neurons never active in the window (%)")
    aggregated.set_ylim(0, 100)
    aggregated.legend(fontsize=8)
    aggregated.set_title("aggregated sparsity (mean over layers)", fontsize=10)
    for axis in axes[0]:
        axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    return figure


def plot_relufy(result: dict, path: str | Path, **options) -> Path:
    """Write :func:`relufy_figure` as a PNG; returns the path written."""
    return save_png(relufy_figure(result, **options), path)
