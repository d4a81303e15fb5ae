"""Curves of ``relulab prefer``: margin, filtered fraction, vowel share and the language
model's validation loss during tuning."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from relulab.plot.figure import new_figure, save_png

# panel -> (y label, title, ((metric key, line style, label), ...))
PANELS = (
    ("mean margin (nats per character)", "margin, chosen minus rejected",
     (("heldout_margin", "-", "held-out pairs"), ("train_margin", "--", "training pairs"))),
    ("pairs with margin >= gamma", "filtered fraction (ignored by RePO)",
     (("heldout_filtered", "-", "held-out pairs"), ("train_filtered", "--", "training pairs"))),
    ("vowels among letters", "vowel share of fresh samples (held-out prompts)",
     (("vowel_share", "-", "samples"),)),
    ("nats per character", "validation loss of the text (drift: no reference model)",
     (("val_loss", "-", "validation text"),)),
)  # fmt: skip


def preference_figure(
    histories: Mapping[str, Sequence[dict]], *, gamma: float, title: str = ""
) -> Any:
    """Four panels against the tuning step, one colour per loss: the mean margin and the
    filtered fraction (held-out pairs solid, training pairs dashed; ``gamma`` as a grey line),
    the vowel share of fresh samples and the validation loss on the text (how far the model
    drifts from the language it was trained on)."""
    figure, axes = new_figure(2, 2, width=12.0, height=8.0)
    from matplotlib.ticker import MaxNLocator  # after new_figure: it says when it is missing

    for axis, (ylabel, name, lines) in zip(axes.flat, PANELS):
        for index, (loss, history) in enumerate(histories.items()):
            steps = [h["step"] for h in history]
            for key, style, label in lines:
                # different markers: where the losses agree (margins far below gamma, where
                # SimPO's pair weights are ~1 like RePO's) one line would hide the other
                axis.plot(steps, [h[key] for h in history], color=f"C{index}", linestyle=style,
                          marker="os^v"[index % 4], markersize=4 + 2 * (index == 0),
                          fillstyle="none" if index == 0 else "full",
                          label=f"{loss}: {label}")  # fmt: skip
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps, not fractions
        axis.set_xlabel("tuning step")
        axis.set_ylabel(ylabel)
        axis.set_title(name, fontsize=10)
        axis.grid(alpha=0.3)
    margin, filtered, *_ = axes.flat
    margin.axhline(gamma, color="grey", linestyle=":", label=f"gamma = {gamma:g}")
    filtered.set_ylim(-0.02, 1.02)
    for axis in axes.flat:
        axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    return figure


def plot_preference(
    histories: Mapping[str, Sequence[dict]],
    path: str | Path,
    *,
    write: Callable[[Path, bytes], Any] = Path.write_bytes,
    **options: Any,
) -> Path:
    """Write :func:`preference_figure` as a PNG with ``write(path, data)``; returns the path
    written."""
    return save_png(preference_figure(histories, **options), path, write=write)
