"""Every figure relulab draws: activation curves (``relulab plot``), the speed ratios
(``relulab speed --plot``) and a benchmark run's figures (``relulab report``).

matplotlib is optional (``pip install 'relulab[plot]'``) and imported only when drawing. Each
figure is a :class:`matplotlib.figure.Figure` on the Agg canvas, made without pyplot: drawing
opens no window and leaves the backend of the program that imports relulab alone. The
``*_figure`` functions return the Figure; the ``plot_*`` functions write it as a PNG and
return the path they wrote.
"""

from relulab.plot.bench import bench_figures, plot_bench
from relulab.plot.curves import Curve, activation_curve, activations_figure, plot_activations
from relulab.plot.figure import DPI, png_path, save_png
from relulab.plot.speed import plot_speed, speed_figure, training_figure

__all__ = [
    "DPI",
    "Curve",
    "activation_curve",
    "activations_figure",
    "bench_figures",
    "plot_activations",
    "plot_bench",
    "plot_speed",
    "png_path",
    "save_png",
    "speed_figure",
    "training_figure",
]
