"""What every relulab figure shares: a Figure on the Agg canvas, PNG writing, a ratio axis."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relulab.optional import require

DPI = 110


def new_figure(
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


def ratio_axis(axis: Any, label: str) -> None:
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


def elements_label(count: float) -> str:
    """1024 -> "1K", 16777216 -> "16M": sizes of tensors in binary units (an axis's tick
    positions come as floats)."""
    if count >= 1 << 20:
        return f"{count / (1 << 20):g}M"
    return f"{count / 1024:g}K" if count >= 1024 else str(count)


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
