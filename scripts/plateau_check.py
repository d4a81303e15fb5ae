"""Is the full suite's schedule at its plateau? Train each task with it and with a ``--factor``
times longer one (same lr, batch and schedule shape), from the same seeds, and print the mean
test scores side by side. The schedule is at its plateau when the two agree within 0.5 points.

Run from the repository root (sequential, one thread per trial)::

    python scripts/plateau_check.py                                  # spirals, digits, digits_cnn
    python scripts/plateau_check.py --tasks mnist1d --seeds 3        # slow: 400 epochs per seed
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from relulab.bench.tasks import get_task
from relulab.bench.trainer import TrialSpec, run_trial


def mean_scores(task_name: str, activation: str, epochs: int, seeds: int) -> list[float]:
    """Test scores (percent) of ``seeds`` trials trained for ``epochs`` epochs."""
    task = get_task(task_name)
    scores = []
    for seed in range(seeds):
        spec = TrialSpec(task, activation, seed, epochs, task.batch_size, task.learning_rate)
        outcome = run_trial(spec)
        if outcome.result["status"] != "ok":
            raise RuntimeError(f"{spec.trial_id} with {epochs} epochs diverged")
        scores.append(100 * outcome.result["test_score"])
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["spirals", "digits", "digits_cnn"])
    parser.add_argument("--acts", nargs="+", default=["relu", "gelu"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--factor", type=int, default=3)
    parser.add_argument("--suite", default="full")
    arguments = parser.parse_args()

    longer = f"×{arguments.factor}"
    print(f"| task | activation | schedule | mean % | {longer} mean % | Δ ({longer} − 1×) | s |")
    print("|---|---|---|---|---|---|---|")
    for task_name in arguments.tasks:
        task = get_task(task_name)
        epochs = task.epochs[arguments.suite]
        schedule = task.schedule(epochs, task.batch_size, task.learning_rate)
        for activation in arguments.acts:
            start = time.perf_counter()
            short = mean_scores(task_name, activation, epochs, arguments.seeds)
            long = mean_scores(task_name, activation, arguments.factor * epochs, arguments.seeds)
            seconds = time.perf_counter() - start
            delta = np.mean(long) - np.mean(short)
            print(
                f"| {task_name} | {activation} | {schedule} | {np.mean(short):.2f} "
                f"| {np.mean(long):.2f} | {delta:+.2f} | {seconds:.0f} |",
                flush=True,
            )
            per_seed = f"{np.round(short, 1).tolist()} vs {np.round(long, 1).tolist()}"
            print(f"<!-- per seed: {per_seed} -->")


if __name__ == "__main__":
    main()
