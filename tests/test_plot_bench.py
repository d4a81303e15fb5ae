"""relulab.plot.bench: a benchmark run's figures."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from pngs import marker_x, read_png
from relulab import plot
from relulab.bench import report
from relulab.bench.report import Trials

colors = pytest.importorskip("matplotlib.colors")

LEAKY = "leaky_relu(negative_slope=0.2)"
# Mean test accuracy of each activation, the same on every task and in every run, whatever the
# order of --acts. As in the spirals: relu and golu tie exactly (the report's table
# keeps them in --acts order), silu and mish tie too and have the very same predictions (one
# point in a scatter of prediction difference against accuracy), gelu and xsilu are a hair
# above relu and golu.
MEANS = {"relu": 0.89, "gelu": 0.8925, "silu": 0.875, "mish": 0.875, "golu": 0.89,
         "xsilu": 0.89125, LEAKY: 0.86}  # fmt: skip
SEED_OFFSETS = (-0.01, 0.0, 0.015)
COST = {a: index + 1 for index, a in enumerate(MEANS)}  # ms/epoch ×10, KiB saved


def scores(activation: str, offsets=SEED_OFFSETS) -> list[float]:
    return [MEANS[activation] + offset for offset in offsets]


def probabilities(activation: str, seed: int) -> np.ndarray:
    """A seed's test predictions (60 examples, 3 classes); silu's are mish's."""
    key = "mish" if activation == "silu" else activation
    rng = np.random.default_rng([ord(c) for c in key] + [seed])
    return rng.dirichlet(np.ones(3), size=60).astype(np.float32)


def bench_run(
    activations, tasks=("spirals", "mnist1d"), epochs=4, offsets=SEED_OFFSETS
) -> tuple[Trials, list]:
    """The trials of a run of ``activations`` (in that --acts order) and its summary rows."""
    results, curves, predictions = {}, {}, {}
    for task in tasks:
        results[task], curves[task], predictions[task] = {}, {}, {}
        for activation in activations:
            seeds = list(enumerate(scores(activation, offsets)))
            results[task][activation] = [
                {"status": "ok", "seed": seed, "test_score": score, "metric": "accuracy",
                 "test_loss": 0.3, "ece": 0.05, "layers": [],
                 "timing": {"mean_seconds_per_epoch": 0.01 * COST[activation]},
                 "saved_bytes_per_step": 1024.0 * COST[activation]}
                for seed, score in seeds
            ]  # fmt: skip
            curves[task][activation] = [
                [{"test_score": score * (epoch + 1) / epochs} for epoch in range(epochs)]
                for _, score in seeds
            ]
            predictions[task][activation] = [probabilities(activation, s) for s, _ in seeds]
    config = {"config": {"activations": list(activations), "baseline": "relu"}}
    trials = Trials(config, results, curves, predictions)
    return trials, report.summarize(trials)


ACTS = ["relu", "gelu", "silu", "mish", "golu", "xsilu", LEAKY]


def table_order(activations) -> list[str]:
    """The report table's order, from the raw scores: best mean first, ties in --acts order."""
    return sorted(activations, key=lambda a: -float(np.mean(scores(a))))


def row_names(axis) -> list[str]:
    """The y tick labels from the top of the panel down, ' (baseline)' taken off."""
    ticks = sorted(zip(axis.get_yticks(), axis.get_yticklabels()), key=lambda t: t[0])
    if axis.yaxis_inverted():
        names = [label.get_text() for _, label in ticks]
    else:
        names = [label.get_text() for _, label in reversed(ticks)]
    return [n.removesuffix(" (baseline)") for n in names]


def at_row(axis, y: float) -> str:
    """The activation named at height ``y``."""
    (label,) = [
        t.get_text() for loc, t in zip(axis.get_yticks(), axis.get_yticklabels()) if loc == y
    ]
    return label.removesuffix(" (baseline)")


def hex_colour(colour) -> str:
    return colors.to_hex(colour)


def test_accuracy_rows_in_the_report_table_order_with_the_baseline_marked():
    acts = ["golu", "silu", "relu", "mish", "gelu", "xsilu", LEAKY]  # ties now golu, relu
    for order in (ACTS, acts):
        trials, rows = bench_run(order)
        figure = plot.bench_figures(trials, rows)["accuracy.png"]
        for axis, task in zip(figure.axes, trials.results):
            expected = table_order(order)
            table = [
                cells[1] for cells in report.task_table([r for r in rows if r["task"] == task])
            ]
            assert row_names(axis) == expected == table
            # each activation's mean (in %) is at its row, its seeds beside it
            for container in axis.containers:
                (y,) = container.lines[0].get_ydata()
                activation = at_row(axis, y)
                assert marker_x(container) == pytest.approx([100 * np.mean(scores(activation))])
                assert y == expected.index(activation)
            labels = [t.get_text() for t in axis.get_yticklabels()]
            assert "relu (baseline)" in labels and labels.count("relu (baseline)") == 1
            dashed = [line for line in axis.lines if line.get_linestyle() == "--"]
            (line,) = dashed
            assert list(line.get_xdata()) == pytest.approx([100 * np.mean(scores("relu"))] * 2)


def test_accuracy_intervals_are_the_tables_clipped_to_0_100():
    """Issue 10: two seeds far apart give a t-interval past 0 and 100 %; the table clips it,
    the plot drew it raw (an axis from -54 to 200 %)."""
    offsets = (-0.4, 0.1)  # e.g. relu's seeds score 49 % and 99 %
    trials, rows = bench_run(ACTS, offsets=offsets)
    figure = plot.bench_figures(trials, rows)["accuracy.png"]
    t = 12.706204736174707  # Student's t, 97.5 % quantile, 1 degree of freedom
    for axis, task in zip(figure.axes, trials.results):
        task_rows = [r for r in rows if r["task"] == task]
        shown = {}  # activation -> the table's CI, parsed back from its text
        for cells in report.task_table(task_rows):
            low, high = cells[3].strip("[]").split(", ")
            shown[cells[1]] = (float(low), float(high))
        assert len(axis.containers) == len(ACTS)
        for container in axis.containers:
            activation = at_row(axis, container.lines[0].get_ydata()[0])
            ((x0, _), (x1, _)) = container.lines[2][0].get_segments()[0]
            assert (x0, x1) == pytest.approx(shown[activation], abs=0.005)
            # from the seeds themselves: the raw interval passes both ends
            seeds = np.array(scores(activation, offsets))
            half = t * seeds.std(ddof=1) / np.sqrt(len(seeds))
            assert seeds.mean() - half < 0 and seeds.mean() + half > 1
            assert (x0, x1) == (0.0, 100.0)
        low, high = axis.get_xlim()
        assert -3 <= low <= 0 and 100 <= high <= 103


def brute_force_pair_differences(activation: str) -> list[float]:
    """Top-1 disagreement (%) of every pair of seeds, an example at a time."""
    seeds = [probabilities(activation, s) for s in range(len(SEED_OFFSETS))]
    out = []
    for a, b in itertools.combinations(seeds, 2):
        differ = sum(int(np.argmax(a[i]) != np.argmax(b[i])) for i in range(len(a)))
        out.append(100.0 * differ / len(a))
    return out


def test_prediction_difference_gives_each_activation_a_row_of_its_own():
    trials, rows = bench_run(ACTS)
    figure = plot.bench_figures(trials, rows)["prediction_difference.png"]
    assert not figure.legends  # rows are named on the axis, not by a colour key
    for axis in figure.axes:
        expected = table_order(ACTS)
        assert row_names(axis) == expected  # the rows of accuracy.png
        means = [line for line in axis.lines if line.get_marker() == "o"]
        assert len(means) == len(ACTS)
        positions = set()
        for line in means:
            (x,), (y,) = line.get_xdata(), line.get_ydata()
            activation = at_row(axis, y)
            assert x == pytest.approx(np.mean(brute_force_pair_differences(activation)))
            positions.add((x, y))
        # silu and mish have the same predictions: one value, two rows, both dots in sight
        assert len(positions) == len(ACTS)
        pairs = [line for line in axis.lines if line.get_marker() == "."]
        for line in pairs:
            activation = at_row(axis, line.get_ydata()[0])
            assert sorted(line.get_xdata()) == pytest.approx(
                sorted(brute_force_pair_differences(activation))
            )
        (baseline,) = [line for line in axis.lines if line.get_linestyle() == "--"]
        relu = np.mean(brute_force_pair_differences("relu"))
        assert list(baseline.get_xdata()) == pytest.approx([relu] * 2)


def test_prediction_difference_says_na_where_there_is_no_pair_of_seeds():
    trials, rows = bench_run(["relu", "gelu"], tasks=("digits",))
    trials.predictions["digits"]["gelu"] = trials.predictions["digits"]["gelu"][:1]
    rows = report.summarize(trials)
    (axis,) = plot.bench_figures(trials, rows)["prediction_difference.png"].axes
    assert row_names(axis) == ["gelu", "relu"]
    assert [t.get_text() for t in axis.texts] == ["n/a: fewer than 2 finished seeds"]
    assert axis.texts[0].get_position()[1] == 0  # gelu's row


def window_texts(figure) -> list:
    """Every piece of text the figure shows, drawn by the Agg renderer."""
    figure.canvas.draw()
    texts = list(figure.texts)
    for axis in figure.axes:
        texts += [axis.title, axis.xaxis.label, axis.yaxis.label, *axis.texts]
        (x0, x1), (y0, y1) = sorted(axis.get_xlim()), sorted(axis.get_ylim())
        texts += [t for t in axis.get_xticklabels() if x0 <= t.get_position()[0] <= x1]
        texts += [t for t in axis.get_yticklabels() if y0 <= t.get_position()[1] <= y1]
    for legend in figure.legends:
        texts += legend.get_texts()
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize("acts", [ACTS, ["relu", "gelu"]], ids=["seven", "two"])
def test_no_text_overlaps_another_or_leaves_the_figure(acts):
    trials, rows = bench_run(acts, tasks=("spirals", "digits", "mnist1d"))
    for name, figure in plot.bench_figures(trials, rows).items():
        renderer = figure.canvas.get_renderer()
        frame = figure.bbox
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in window_texts(figure)]
        assert len(boxes) > 10
        for text, box in boxes:
            assert frame.x0 - 0.5 <= box.x0 and box.x1 <= frame.x1 + 0.5, (name, text)
            assert frame.y0 - 0.5 <= box.y0 and box.y1 <= frame.y1 + 0.5, (name, text)
        for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
            both = box_a.intersection(box_a, box_b)
            assert both is None or min(both.width, both.height) < 1, (name, a, b)


@pytest.mark.parametrize("epochs", [1, 2, 4, 10, 13, 60])
def test_curves_ticks_are_whole_epochs_and_the_legend_covers_no_curve(epochs):
    trials, rows = bench_run(ACTS, epochs=epochs)
    figure = plot.bench_figures(trials, rows)["curves.png"]
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    (legend,) = figure.legends
    for axis in figure.axes:
        low, high = axis.get_xlim()
        ticks = [t for t in axis.get_xticks() if low <= t <= high]
        assert ticks and all(t == int(t) for t in ticks), ticks
        assert (
            legend.get_window_extent(renderer).intersection(
                legend.get_window_extent(renderer), axis.get_window_extent(renderer)
            )
            is None
        )
        for line in axis.lines:
            assert list(line.get_xdata()) == list(range(1, epochs + 1))
            # a one-epoch curve is one point: it needs a marker to show at all
            assert (line.get_marker() not in ("None", None, "")) == (epochs == 1)


@pytest.mark.parametrize("epochs", [1, 2, 4])
def test_curves_legend_keys_look_like_the_curves(epochs):
    """Issue 10: every key showed a dot although only one-epoch curves have one."""
    trials, rows = bench_run(ACTS, epochs=epochs)
    figure = plot.bench_figures(trials, rows)["curves.png"]
    (legend,) = figure.legends
    assert len(legend.legend_handles) == len(ACTS)
    for handle in legend.legend_handles:
        has_marker = handle.get_marker() not in ("None", None, "")
        assert has_marker == (epochs == 1)
        assert handle.get_linestyle() == "-"
    # one task of one epoch, the other of four: a key has a dot as its one-point curve does
    trials, rows = bench_run(ACTS, epochs=4)
    for activation in ACTS:
        trials.curves["mnist1d"][activation] = [s[:1] for s in trials.curves["mnist1d"][activation]]
    (legend,) = plot.bench_figures(trials, rows)["curves.png"].legends
    assert {h.get_marker() for h in legend.legend_handles} == {"o"}


def colours_by_activation(figures) -> dict[str, dict[str, str]]:
    """figure name -> activation -> the colour it is drawn in (one colour per activation)."""
    found: dict[str, dict[str, set]] = {}

    def add(name, activation, colour):
        found.setdefault(name, {}).setdefault(activation, set()).add(hex_colour(colour))

    for axis in figures["accuracy.png"].axes:
        for container in axis.containers:
            line = container.lines[0]
            add("accuracy.png", at_row(axis, line.get_ydata()[0]), line.get_color())
    for axis in figures["prediction_difference.png"].axes:
        for line in axis.lines:
            if line.get_marker() == "o":
                add(
                    "prediction_difference.png", at_row(axis, line.get_ydata()[0]), line.get_color()
                )
    for axis in figures["cost.png"].axes:
        for patch in axis.patches:
            y = patch.get_y() + patch.get_height() / 2
            add("cost.png", at_row(axis, round(y)), patch.get_facecolor())
    (legend,) = figures["curves.png"].legends
    for text, handle in zip(legend.get_texts(), legend.legend_handles):
        add("curves.png", text.get_text().removesuffix(" (baseline)"), handle.get_color())
    legend_colours = {c for cs in found["curves.png"].values() for c in cs}
    for axis in figures["curves.png"].axes:
        assert {hex_colour(line.get_color()) for line in axis.lines} <= legend_colours
    for name, by_activation in found.items():
        assert all(len(c) == 1 for c in by_activation.values()), name
    return {name: {a: c.pop() for a, c in by_a.items()} for name, by_a in found.items()}


def test_each_activation_has_one_colour_in_every_figure_and_every_run():
    shuffled = ACTS[:]
    random.Random(1).shuffle(shuffled)
    runs = [ACTS, list(reversed(ACTS)), shuffled, ["xsilu", "relu", "gelu"]]
    seen: dict[str, set] = {}
    for acts in runs:
        trials, rows = bench_run(acts)
        found = colours_by_activation(plot.bench_figures(trials, rows))
        for name, by_activation in found.items():
            assert set(by_activation) == set(acts), name
            # no two activations share a colour in a figure
            assert len(set(by_activation.values())) == len(acts), name
            for activation, colour in by_activation.items():
                seen.setdefault(activation, set()).add(colour)
    assert all(len(c) == 1 for c in seen.values()), seen
    # relulab plot draws each activation in the same colour as the bench
    curves = [plot.activation_curve(a, torch.linspace(-1, 1, 5)) for a in ["gelu", "relu"]]
    (axis,) = plot.activations_figure(curves).axes
    assert [hex_colour(line.get_color()) for line in axis.lines[:2]] == [
        *seen["gelu"],
        *seen["relu"],
    ]


def test_bench_figures_draw_every_task_and_activation():
    trials, rows = bench_run(ACTS[:3], epochs=4)
    del trials.results["mnist1d"]["silu"], trials.curves["mnist1d"]["silu"]
    rows = [r for r in rows if not (r["task"] == "mnist1d" and r["activation"] == "silu")]
    figures = plot.bench_figures(trials, rows)
    assert list(figures) == ["accuracy.png", "curves.png", "prediction_difference.png", "cost.png"]
    accuracy = figures["accuracy.png"].axes
    assert [axis.get_title() for axis in accuracy] == ["spirals", "mnist1d"]
    assert row_names(accuracy[1]) == ["gelu", "relu"]
    curves = figures["curves.png"]
    assert [len(axis.lines) for axis in curves.axes] == [3, 2]
    relu = 100 * np.mean(scores("relu"))
    assert list(curves.axes[0].lines[0].get_ydata()) == pytest.approx(
        [relu / 4, relu / 2, 3 * relu / 4, relu]
    )
    (legend,) = curves.legends
    assert [t.get_text() for t in legend.get_texts()] == ["relu (baseline)", "gelu", "silu"]
    cost = figures["cost.png"].axes
    assert len(cost) == 4  # rows in the table's order: gelu, relu, silu
    assert [p.get_width() for p in cost[0].patches] == pytest.approx([20, 10, 30])
    assert [p.get_width() for p in cost[3].patches] == pytest.approx([2, 1])  # KiB


def test_plot_bench_writes_each_figure_into_the_run(tmp_path):
    trials, rows = bench_run(ACTS[:3])
    figures = plot.bench_figures(trials, rows)
    written = plot.plot_bench(tmp_path, trials, rows)
    assert written == list(figures)
    for name in written:
        read_png(tmp_path / name, figures[name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written)  # no temporary left
    assert plot.bench_figures(Trials({}, {}, {}, {}), []) == {}
