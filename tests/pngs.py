"""Helpers of the plot tests: read back a PNG and check it is the figure, not a blank canvas."""

from __future__ import annotations

import numpy as np
import pytest

from relulab import plot


def read_png(path, figure) -> np.ndarray:
    """The PNG's pixels, after checking its size is the figure's at ``plot.DPI``."""
    image = pytest.importorskip("matplotlib.image")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(path)
    width, height = figure.get_size_inches() * plot.DPI
    assert abs(pixels.shape[0] - height) < 1 and abs(pixels.shape[1] - width) < 1
    assert pixels[..., :3].std() > 0.05  # not a blank canvas
    return pixels


def marker_x(container) -> list[float]:
    """The x positions of an errorbar's markers."""
    return list(container.lines[0].get_xdata())
