"""Do ReLU MLPs behave as hash encoders at our scale? A small phase chart on sklearn's digits.

Lei et al. ("Neural networks behave as hash encoders") claim that almost every training example
gets a linear region of its own (redundancy ratio near 0) and that the activation codes alone
classify test data well (k-NN, logistic regression, K-means). This trains one ReLU MLP per
width on the bench's digits split (1347 train / 450 test, standardised) with Adam (lr 1e-3,
batch 64), and after 0, 1, 5 and 20 epochs measures the redundancy ratio of the training codes
and the accuracies on codes (constant training columns dropped), beside the network's own test
accuracy. Seeded, CPU, under a minute.

It prints the table and writes it to OUT.txt, the rows with the config, seed and environment
to OUT.json, and the chart (:func:`relulab.plot.codes.plot_codes`) to OUT.png; OUT defaults to
docs/results/geometry/codes. Run from the repository root::

    python scripts/codes_experiment.py
    python scripts/codes_experiment.py --widths 16 64 --depth 2 --epochs 1 5 20 50 --out /tmp/c
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from relulab.bench.models import MLP
from relulab.bench.rundir import environment
from relulab.bench.tasks import TaskData, get_task
from relulab.geometry.codes import activation_codes, code_statistics

SCHEMA = 1
HEADER = (
    f"{'width':>5} {'epochs':>6} {'bits':>5} {'distinct':>8} {'redund.':>7} "
    f"{'net':>5} {'kNN':>5} {'logist':>6} {'K-means tr/te':>13}"
)


def train_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt, seed: int) -> None:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    model.train()
    for start in range(0, len(x), 64):
        batch = order[start : start + 64]
        opt.zero_grad()
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()
    model.eval()


def measure(model: nn.Module, data: TaskData) -> dict[str, Any]:
    """The code statistics of ``model`` and its own test accuracy, as a JSON-ready dict."""
    with torch.no_grad():
        net = (model(data.x_test).argmax(1) == data.y_test).double().mean().item()
    train = activation_codes(model, data.x_train, drop_constant=True)
    test = activation_codes(model, data.x_test, columns=train.columns)
    stats = code_statistics(train, data.y_train, test, data.y_test)
    return {"bits": train.bits.shape[1], "net_accuracy": net, **dataclasses.asdict(stats)}


def codes_grid(
    data: TaskData,
    widths: list[int],
    epochs: list[int],
    *,
    depth: int = 1,
    seed: int = 0,
    on_row: Callable[[dict[str, Any]], None] = lambda row: None,
) -> list[dict[str, Any]]:
    """One row per width and checkpoint: each width's net trained once, measured after each
    number of ``epochs`` (0 included), ``on_row`` called as each row is done."""
    rows = []
    for width in widths:
        torch.manual_seed(seed)
        model = MLP(data.x_train.shape[1], (width,) * depth, data.classes, lambda _: nn.ReLU())
        model.eval()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        done = 0
        for total in sorted({0, *epochs}):
            for epoch in range(done, total):
                train_epoch(model, data.x_train, data.y_train, opt, seed * 1000 + epoch)
            done = total
            rows.append({"width": width, "epochs": total, **measure(model, data)})
            on_row(rows[-1])
    return rows


def format_row(row: dict[str, Any]) -> str:
    percent = {k: 100 * v for k, v in row.items() if k.endswith("accuracy")}
    return (
        f"{row['width']:>5} {row['epochs']:>6} {row['bits']:>5} {row['distinct']:>8} "
        f"{row['redundancy_ratio']:>7.4f} {percent['net_accuracy']:>5.1f} "
        f"{percent['knn_accuracy']:>5.1f} {percent['logistic_accuracy']:>6.1f} "
        f"{percent['kmeans_accuracy']:>6.1f}/{percent['kmeans_test_accuracy']:<6.1f}"
    ).rstrip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--widths", type=int, nargs="+", default=[4, 8, 16, 32, 64, 128, 256, 512, 1024]
    )
    parser.add_argument("--depth", type=int, default=1, help="hidden layers (the paper's MNIST: 1)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default="docs/results/geometry/codes", help="OUT.txt, OUT.json and OUT.png"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = get_task("digits").load()
    lines = [
        f"digits: {len(data.x_train)} train / {len(data.x_test)} test, depth {args.depth}, "
        f"seed {args.seed}; accuracies in %, k-NN k=9 Hamming, K-means matched (train / test)",
        HEADER,
        "-" * len(HEADER),
    ]
    print("\n".join(lines), flush=True)

    def show(row: dict[str, Any]) -> None:
        lines.append(format_row(row))
        print(lines[-1], flush=True)

    started = time.perf_counter()
    rows = codes_grid(data, args.widths, args.epochs, depth=args.depth, seed=args.seed, on_row=show)
    seconds = time.perf_counter() - started
    print(f"({seconds:.0f} s)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    record = {
        "schema": SCHEMA,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "script": "scripts/codes_experiment.py",
        "config": {
            "task": "digits",
            "widths": args.widths,
            "depth": args.depth,
            "epochs": sorted({0, *args.epochs}),
            "optimizer": "Adam",
            "learning_rate": 1e-3,
            "batch_size": 64,
            "activation": "relu",
            "knn_k": 9,
            "kmeans_seed": 9,
            "logistic": "one-vs-one, liblinear",
        },
        "seed": args.seed,
        "seconds": seconds,
        "environment": environment(),
        "rows": rows,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    from relulab.plot.codes import plot_codes

    title = (
        f"Activation codes of {args.depth}-hidden-layer ReLU MLPs on digits "
        f"({len(data.x_train)} train / {len(data.x_test)} test, seed {args.seed})"
    )
    print(f"wrote {out}.txt, {out}.json, {plot_codes(rows, out.with_suffix('.png'), title=title)}")


if __name__ == "__main__":
    main()
