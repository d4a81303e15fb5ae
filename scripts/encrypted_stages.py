"""Measured encrypted inference of a bench task's ReLU model with each subset of its ReLU
stages kept (every model DeepReDuce's cull can give), against the estimate that relulab
reduce's latency panel uses (relulab.budget.reduce.nonlinear_cost).

Needs the pi extra and CrypTen (README). The costs do not depend on the weights, so the
models are at their initial weights. Writes a JSON record (atomically) and prints a table:

    python scripts/encrypted_stages.py --task mnist1d -o docs/results/budget/encrypted.json
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
from pathlib import Path

from torch import nn

from relulab.bench import rundir
from relulab.bench.models import paired_init
from relulab.bench.tasks import get_task
from relulab.bench.trainer import activation_for_width
from relulab.budget.deepreduce import linearized, relu_stages
from relulab.budget.private import encrypted_cost
from relulab.budget.reduce import traced_cost
from relulab.cli.output import format_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    task = get_task(args.task)
    data = task.data()
    model = task.model(functools.partial(activation_for_width, "relu"), data)
    paired_init(model, 0)
    input_shape = tuple(data.x_train.shape[1:])
    stages = relu_stages(model, input_shape)
    rows = []
    for size in range(len(stages), -1, -1):
        for kept in itertools.combinations(stages, size):
            layers = [layer for stage in kept for layer in stage.layers]
            variant: nn.Module = linearized(model, layers, stages)
            relus, estimate = traced_cost(variant, input_shape)
            print(f"measuring {[s.name for s in kept]} ({relus} ReLUs)", file=sys.stderr)
            measured = encrypted_cost(variant, (1, *input_shape), repeats=args.repeats)
            rows.append(
                {
                    "kept_stages": [s.name for s in kept],
                    "relus": relus,
                    "estimated_latency_s": estimate["latency_s"],
                    "estimated_bytes": estimate["bytes"],
                    "estimated_rounds": estimate["rounds"],
                    "measured_latency_s": measured["latency_s"],
                    "measured_bytes": measured["bytes"],
                    "measured_rounds": measured["rounds"],
                    "measured_relus": measured["relus"],
                    "max_abs_error": measured["max_abs_error"],
                }
            )
    headers = ["kept stages", "ReLUs", "est. ms", "measured ms", "est. kB", "measured kB",
               "est. rounds", "measured rounds"]  # fmt: skip
    print(
        format_table(
            headers,
            [
                [" ".join(r["kept_stages"]) or "(none)", r["relus"],
                 f"{1e3 * r['estimated_latency_s']:.1f}", f"{1e3 * r['measured_latency_s']:.1f}",
                 f"{r['estimated_bytes'] / 1e3:.1f}", f"{r['measured_bytes'] / 1e3:.1f}",
                 r["estimated_rounds"], r["measured_rounds"]]
                for r in rows
            ],
        )
    )  # fmt: skip
    if args.output:
        record = {"task": task.name, "input_shape": input_shape, "rows": rows}
        rundir.write_json_atomic(args.output, {**record, **rundir.environment()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
