"""Do ReLU MLPs behave as hash encoders at our scale? A small phase table on sklearn's digits.

Lei et al. ("Neural networks behave as hash encoders") claim that almost every training example
gets a linear region of its own (redundancy ratio near 0) and that the activation codes alone
classify test data well (k-NN, logistic regression, K-means). This trains one ReLU MLP per
width on the bench's digits split (1347 train / 450 test, standardised) with Adam (lr 1e-3,
batch 64), and after 0, 1, 5 and 20 epochs prints the redundancy ratio of the training codes
and the accuracies on codes (constant training columns dropped), beside the network's own test
accuracy. Seeded, CPU, about a minute.

Run from the repository root::

    python scripts/codes_experiment.py
    python scripts/codes_experiment.py --widths 16 64 --depth 2 --epochs 1 5 20 50
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from relulab.bench.models import MLP
from relulab.bench.tasks import get_task
from relulab.geometry.codes import activation_codes, code_statistics


def train_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt, seed: int) -> None:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    model.train()
    for start in range(0, len(x), 64):
        batch = order[start : start + 64]
        opt.zero_grad()
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--depth", type=int, default=1, help="hidden layers (the paper's MNIST: 1)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = get_task("digits").load()
    print(
        f"digits: {len(data.x_train)} train / {len(data.x_test)} test, depth {args.depth}, "
        f"seed {args.seed}; accuracies in %, k-NN k=9 Hamming, K-means matched (train / test)"
    )
    header = (
        f"{'width':>5} {'epochs':>6} {'bits':>5} {'distinct':>8} {'redund.':>7} "
        f"{'net':>5} {'kNN':>5} {'logist':>6} {'K-means tr/te':>13}"
    )
    print(header)
    print("-" * len(header))
    started = time.perf_counter()
    for width in args.widths:
        torch.manual_seed(args.seed)
        model = MLP(64, (width,) * args.depth, data.classes, lambda _: nn.ReLU()).eval()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        done = 0
        for epochs in [0, *sorted(args.epochs)]:
            for epoch in range(done, epochs):
                train_epoch(model, data.x_train, data.y_train, opt, args.seed * 1000 + epoch)
            done = epochs
            with torch.no_grad():
                net = (model(data.x_test).argmax(1) == data.y_test).double().mean().item()
            train = activation_codes(model, data.x_train, drop_constant=True)
            test = activation_codes(model, data.x_test, columns=train.columns)
            stats = code_statistics(train, data.y_train, test, data.y_test)
            print(
                f"{width:>5} {epochs:>6} {train.bits.shape[1]:>5} {stats.distinct:>8} "
                f"{stats.redundancy_ratio:>7.4f} {100 * net:>5.1f} "
                f"{100 * stats.knn_accuracy:>5.1f} {100 * stats.logistic_accuracy:>6.1f} "
                f"{100 * stats.kmeans_accuracy:>6.1f}/{100 * stats.kmeans_test_accuracy:<6.1f}",
                flush=True,
            )
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
