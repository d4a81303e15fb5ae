"""Far from the data: how certain trained digit classifiers become at alpha * x.

python scripts/overconfidence_experiment.py   # about two minutes on 2 cores

Trains the bench's digits MLP (64-128-128-10) with each activation exactly as ``relulab bench
--suite full`` does (its schedule: 60 epochs of Adam at lr 1e-3, batch 64; seeds 0-2), then
measures with ``relulab overconfidence``'s own functions the top softmax probability p at
alpha * x for alpha from 1 to 1e4, along two sets of directions x: the 450 standardised test
inputs (alpha = 1 is the data) and 450 Gaussian draws with the training data's per-feature
scale (seed 0). Writes, under docs/results/geometry/:

- overconfidence.txt: the median over (direction, seed) of 1 - p per alpha, and the share of
  directions certain to float64 precision (1 - p < 1e-12) at alpha = 1e4;
- overconfidence.json: every trial's quantiles per alpha, with the config and seeds;
- overconfidence.png: median 1 - p against alpha with the interquartile band, both panels.
"""

from __future__ import annotations

import functools
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import relulab
from relulab.bench.runner import BenchConfig, plan
from relulab.bench.trainer import activation_for_width, run_trial
from relulab.cli.overconfidence import (
    CERTAIN,
    DEFAULT_ALPHAS,
    overconfidence_summary,
    ray_directions,
)
from relulab.geometry.overconfidence import ConfidenceCurves
from relulab.plot.colours import activation_colours
from relulab.plot.overconfidence import Panel, plot_overconfidence

ACTIVATIONS = ["relu", "leaky_relu", "gelu", "silu", "golu", "tanh", "sigmoid"]
SEEDS = 3
NOISE_SEED = 0
DIRECTIONS = {"test": "the test inputs", "noise": f"Gaussian noise (seed {NOISE_SEED})"}
TABLE_ALPHAS = (1, 2, 5, 10, 20, 100, 10000)  # the table's columns; the plot has every alpha
OUT = Path(__file__).resolve().parent.parent / "docs" / "results" / "geometry"


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None


def pooled(curves: list[ConfidenceCurves]) -> ConfidenceCurves:
    """The seeds' curves as one: every (direction, seed) pair is a row."""
    return ConfidenceCurves(curves[0].alphas, np.concatenate([c.confidence for c in curves]))


def doubt(value: float) -> str:
    return "0" if value == 0 else f"{value:.1e}"


def main() -> None:
    config = BenchConfig(
        tasks=["digits"], activations=ACTIVATIONS, suite="full", seeds=SEEDS
    ).resolved()
    alphas = np.array(DEFAULT_ALPHAS, dtype=float)
    trials: list[dict] = []
    curves: dict[str, dict[str, list[ConfidenceCurves]]] = {k: {} for k in DIRECTIONS}
    for spec in plan(config):
        print(f"training {spec.trial_id} ...", file=sys.stderr, flush=True)
        outcome = run_trial(spec)
        data = spec.task.data()
        model = spec.task.model(functools.partial(activation_for_width, spec.activation), data)
        model.load_state_dict(outcome.state)
        model.eval()
        for kind in DIRECTIONS:
            directions = ray_directions(data, kind, seed=NOISE_SEED)
            summary, trial_curves = overconfidence_summary(model, data, directions, alphas)
            curves[kind].setdefault(spec.activation, []).append(trial_curves)
            trials.append(
                {"trial": spec.trial_id, "activation": spec.activation, "seed": spec.seed,
                 "directions_kind": kind, **summary}
            )  # fmt: skip

    columns = [list(DEFAULT_ALPHAS).index(a) for a in TABLE_ALPHAS]
    accuracy = {
        a: np.mean([t["test_accuracy"] for t in trials if t["activation"] == a])
        for a in ACTIVATIONS
    }
    lines = []
    for kind, what in DIRECTIONS.items():
        lines += [
            f"directions: {what}; median over {SEEDS} seeds x {len(directions)} directions of "
            f"1 - p (p the top softmax probability) at alpha * x; 0: p == 1 in float64",
            f"{'activation':<11} {'test acc':>8}  "
            + "  ".join(f"{f'a={a:g}':<8}" for a in TABLE_ALPHAS)
            + f"  certain at a=1e4 (1 - p < {CERTAIN:g})",
        ]
        for activation in ACTIVATIONS:
            both = pooled(curves[kind][activation])
            median = np.median(1 - both.confidence, axis=0)
            certain = np.mean(1 - both.confidence[:, -1] < CERTAIN)
            lines.append(
                f"{activation:<11} {100 * accuracy[activation]:>7.2f}%  "
                + "  ".join(f"{doubt(median[j]):<8}" for j in columns)
                + f"  {100 * certain:.1f}%"
            )
        edge = np.median([t["data_alpha"] for t in trials if t["directions_kind"] == kind])
        lines += [f"(the rays leave the training data's ball at alpha ~ {edge:.2g})", ""]
    text = "\n".join(lines).rstrip() + "\n"
    print(text, end="")
    (OUT / "overconfidence.txt").write_text(text)

    record = {
        "schema": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "versions": {
            "relulab": relulab.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "config": {
            "task": "digits",
            "suite": config.suite,
            "epochs": plan(config)[0].epochs,
            "batch_size": plan(config)[0].batch_size,
            "learning_rate": plan(config)[0].learning_rate,
            "activations": ACTIVATIONS,
            "seeds": list(range(SEEDS)),
            "alphas": alphas.tolist(),
            "directions": DIRECTIONS,
            "noise_seed": NOISE_SEED,
            "certain_threshold": CERTAIN,
        },
        "trials": trials,
    }
    (OUT / "overconfidence.json").write_text(json.dumps(record, indent=1) + "\n")

    panels = [
        Panel(
            f"directions: {what}",
            {a: pooled(curves[kind][a]) for a in ACTIVATIONS},
            data_alpha=float(
                np.median([t["data_alpha"] for t in trials if t["directions_kind"] == kind])
            ),
        )
        for kind, what in DIRECTIONS.items()
    ]
    title = f"digits MLP trained as relulab bench --suite full does, seeds 0-{SEEDS - 1} pooled"
    path = plot_overconfidence(
        panels, OUT / "overconfidence.png", colours=activation_colours(ACTIVATIONS), title=title
    )
    print(f"wrote {OUT / 'overconfidence.txt'}, .json and {path.name}", file=sys.stderr)


if __name__ == "__main__":
    main()
