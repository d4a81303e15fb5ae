"""``relulab overconfidence``: how certain a trained classifier becomes far from its data.

Ulmer & Cinà 2020 ("Know Your Limits"), after Hein et al. 2019: a ReLU network is affine along
each ray far enough out, so the softmax confidence of ``f(alpha * x)`` tends to 1 as ``alpha``
grows. The command measures it (:func:`relulab.geometry.overconfidence.confidence_along_rays`,
float64) for one or more trials of a bench run, along the test inputs (``alpha = 1`` is the
data itself) or along Gaussian directions of the data's per-feature scale, and prints, per
trial and ``alpha``, the median and quartiles of ``1 - p`` (``p`` the top softmax probability)
over the directions, as the plot draws them, and the fraction of directions that are certain
to float64 precision (``1 - p < 1e-12``). Trials compared in one call are of one task: the
rays' directions and the training data's radius are the task's.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any

import numpy as np

from relulab.cli.model_source import add_model_arguments, load_model_source
from relulab.cli.output import check_png_output, format_table, print_json
from relulab.errors import UserError

DEFAULT_ALPHAS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
DIRECTIONS = ("test", "noise")
# 1 - p below this is "certain": a thousand times float64's resolution just below 1 (1.1e-16)
CERTAIN = 1e-12


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "overconfidence",
        help="softmax confidence of trained models at alpha * x as alpha grows (far from data)",
        description=textwrap.fill(
            "The top softmax probability p of a trained classifier at alpha * x for "
            "growing alpha (Ulmer & Cinà 2020, 'Know Your Limits'): a ReLU network is affine along "
            "every ray far enough out, so p -> 1 there, however far from the training data. The "
            "directions x are the test inputs (alpha = 1 is the data) or Gaussian noise of the "
            "training data's per-feature scale. Prints, per trial and alpha, the median p and "
            "the median and quartiles of 1 - p over the directions (the plot's line and band) and "
            "the fraction certain to float64 precision (1 - p < 1e-12). Several trials of one "
            "run and one task are compared side by side.",
            width=88,
            break_on_hyphens=False,
        ),
        epilog="examples:\n"
        "  relulab bench --tasks digits --acts relu gelu tanh --seeds 1 --save-models --out runs\n"
        "  relulab overconfidence runs/<run> digits-relu-s0 digits-gelu-s0 digits-tanh-s0 "
        "-o far.png\n"
        "  relulab overconfidence runs/<run> digits-relu-s0 --directions noise --json\n"
        "  relulab overconfidence --checkpoint net.pt --factory nets.py:make_net --task digits",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument(
        "more_trials", nargs="*", metavar="TRIAL", help="more trials of the run, compared"
    )
    parser.add_argument(
        "--directions",
        choices=DIRECTIONS,
        default="test",
        help="the test inputs (default) or Gaussian noise of the data's per-feature scale",
    )
    parser.add_argument(
        "--count", type=int, help="how many directions (default: as many as test inputs)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    parser.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        metavar="A",
        help="the scales, > 0 (default: 1 2 5 10 ... 10000)",
    )
    parser.add_argument("-o", "--output", help="PNG of 1 - p against alpha (needs the plot extra)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(run=run)


def check_alphas(alphas: list[float] | None) -> np.ndarray:
    """The scales, sorted, or a :class:`UserError` naming a bad one."""
    if alphas is None:
        return np.array(DEFAULT_ALPHAS, dtype=float)
    for alpha in alphas:
        if not (np.isfinite(alpha) and alpha > 0):
            raise UserError(f"--alphas {alpha:g}: every alpha must be a finite number > 0")
    if len(set(alphas)) < len(alphas):
        raise UserError(f"--alphas {' '.join(f'{a:g}' for a in alphas)}: an alpha is repeated")
    return np.array(sorted(alphas), dtype=float)


def ray_directions(data: Any, kind: str = "test", count: int | None = None, seed: int = 0):
    """The directions ``x`` of the rays ``alpha * x``: the first ``count`` test inputs, or
    ``count`` draws of a zero-mean Gaussian with the training inputs' per-feature standard
    deviation (a feature constant over the training data stays 0), from ``seed``."""
    import torch

    x_test, x_train = data.x_test, data.x_train
    available = len(x_test) if kind == "test" else None
    count = len(x_test) if count is None else count
    if count < 1 or (available is not None and count > available):
        limit = f"1 to {available}" if available is not None else "a number >= 1"
        raise UserError(f"--count {count}: give {limit}")
    if kind == "test":
        return x_test[:count]
    if kind != "noise":
        raise UserError(f"unknown directions {kind!r} (choose from {', '.join(DIRECTIONS)})")
    scale = x_train.double().std(dim=0)
    noise = torch.randn(
        (count, *x_train.shape[1:]), generator=torch.Generator().manual_seed(seed),
        dtype=torch.float64,
    )  # fmt: skip
    return (noise * scale).to(x_train.dtype)


def data_alpha(data: Any, directions: Any) -> float:
    """The median over the directions of the ``alpha`` at which ``alpha * x`` is as far from
    the origin as the farthest training input: beyond it the rays leave the data's ball."""
    radius = float(data.x_train.double().flatten(1).norm(dim=1).max())
    norms = directions.double().flatten(1).norm(dim=1).numpy()
    return float(np.median(radius / norms[norms > 0])) if (norms > 0).any() else float("nan")


def overconfidence_summary(
    model: Any, data: Any, directions: Any, alphas: np.ndarray
) -> tuple[dict[str, Any], Any]:
    """What ``relulab overconfidence`` prints for ``model`` along ``directions``, as a
    JSON-ready dict, and the :class:`~relulab.geometry.overconfidence.ConfidenceCurves`."""
    import torch

    from relulab.geometry.overconfidence import confidence_along_rays

    curves = confidence_along_rays(model, directions, alphas)
    with torch.no_grad():
        predicted = model(data.x_test).argmax(dim=1)
    quantiles = np.quantile(curves.confidence, [0.25, 0.5, 0.75], axis=0)
    # 1 - p's own quartiles, not 1 minus p's: a p near 1 loses 1 - p's digits when subtracted
    doubt = np.quantile(1 - curves.confidence, [0.25, 0.5, 0.75], axis=0)
    certain = (1 - curves.confidence < CERTAIN).mean(axis=0)
    summary = {
        "test_accuracy": float((predicted == data.y_test).double().mean()),
        "directions": len(directions),
        "data_alpha": data_alpha(data, directions),
        "alphas": curves.alphas.tolist(),
        "p25_confidence": quantiles[0].tolist(),
        "median_confidence": quantiles[1].tolist(),
        "p75_confidence": quantiles[2].tolist(),
        "doubt_quartiles": doubt.T.tolist(),  # per alpha: 25th, 50th, 75th pct of 1 - p
        "certain_fraction": certain.tolist(),
        "certain_at_largest_alpha": float(certain[-1]),
    }
    return summary, curves


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _sources(args: argparse.Namespace) -> list[tuple[Any, str | None]]:
    """Each model source the command line names, with its activation where it is known."""
    trials = [args.trial, *args.more_trials] if args.trial else list(args.more_trials)
    for trial in trials:
        if trials.count(trial) > 1:
            raise UserError(f"trial {trial!r} is given twice")
    if not args.run_dir or not trials:
        return [(load_model_source(args), None)]
    from relulab.bench.runner import trial_spec

    # One task per call: the directions and the radius at which the rays leave the training
    # data are the task's, so curves of two tasks share no alpha axis and no radius line.
    tasks: dict[str, list[str]] = {}
    for trial in trials:
        tasks.setdefault(trial_spec(args.run_dir, trial).task.name, []).append(trial)
    if len(tasks) > 1:
        named = "; ".join(f"{task}: {' '.join(names)}" for task, names in tasks.items())
        raise UserError(f"trials of {len(tasks)} tasks ({named}): compare one task per call")
    sources = []
    for trial in trials:
        _progress(f"loading {trial} ...")
        one = argparse.Namespace(**{**vars(args), "trial": trial})
        sources.append((load_model_source(one), trial_spec(args.run_dir, trial).activation))
    return sources


def _doubt(doubt: float) -> str:
    return "0" if doubt == 0 else f"{doubt:.1e}"  # 0: p rounds to 1 in float64


def _table(summary: dict[str, Any]) -> str:
    """Per alpha: the median p, and the median and quartiles of 1 - p over the directions, the
    line and band of the plot (the quartiles rather than a tail: one summary in both)."""
    rows = [
        [f"{alpha:g}", f"{median:.4f}", *(_doubt(d) for d in doubt), f"{100 * certain:.1f}%"]
        for alpha, median, doubt, certain in zip(
            summary["alphas"], summary["median_confidence"], summary["doubt_quartiles"],
            summary["certain_fraction"],
        )
    ]  # fmt: skip
    headers = ["alpha", "median p", "1 - p: 25th pct", "median", "75th pct", "certain"]
    return format_table(headers, rows)


def run(args: argparse.Namespace) -> int:
    alphas = check_alphas(args.alphas)
    if args.output:
        check_png_output(args.output)
    results, curves, activations = [], {}, {}
    for source, activation in _sources(args):
        directions = ray_directions(source.data, args.directions, args.count, args.seed)
        _progress(
            f"{source.name}: confidence along {len(directions):,} rays at {len(alphas)} alphas ..."
        )
        summary, curves[source.name] = overconfidence_summary(
            source.model, source.data, directions, alphas
        )
        results.append({"trial": source.name, "activation": activation, **summary})
        if activation is not None:
            activations[source.name] = activation
    output: dict[str, Any] = {
        "directions": args.directions,
        "seed": args.seed if args.directions == "noise" else None,
        "certain_threshold": CERTAIN,
        "trials": results,
    }
    if args.output:
        from relulab.plot.colours import activation_colours
        from relulab.plot.overconfidence import Panel, plot_overconfidence

        colours = activation_colours(activations.values())
        what = "test inputs" if args.directions == "test" else f"Gaussian noise, seed {args.seed}"
        panel = Panel(
            f"directions: {what}",
            curves,
            data_alpha=float(np.median([r["data_alpha"] for r in results])),
        )
        output["plot"] = str(
            plot_overconfidence(
                panel,
                args.output,
                colours={trial: colours[a] for trial, a in activations.items()},
                certain=CERTAIN,
            )
        )
    if args.json:
        print_json(output)
        return 0
    for result in results:
        what = "test inputs" if args.directions == "test" else "Gaussian noise directions"
        print(
            f"{result['trial']}: test accuracy {100 * result['test_accuracy']:.1f}%; "
            f"top softmax probability p at alpha * x over {result['directions']:,} {what}"
        )
        print(_table(result))
        print(
            f"certain (1 - p < {CERTAIN:g}) at alpha = {result['alphas'][-1]:g}: "
            f"{100 * result['certain_at_largest_alpha']:.1f}% of the directions; the rays leave "
            f"the training data's ball at alpha ~ {result['data_alpha']:.2g}\n"
        )
    if args.output:
        print(f"plot: {output['plot']}")
    return 0
