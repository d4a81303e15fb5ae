"""Far from the data: how certain trained digit classifiers become at alpha * x.

python scripts/overconfidence_experiment.py   # about a minute on 2 cores

Trains the bench's digits MLP (64-128-128-10, Adam lr 1e-3, 30 epochs, 3 seeds) with each
activation and prints, for growing alpha (x the standardised test inputs), the median over the
test set of 1 - the top softmax probability at alpha * x: how far from certain the model is.
(1e-300 stands for "exactly certain in float64".)
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from relulab import get_activation
from relulab.geometry.overconfidence import confidence_along_rays

ACTIVATIONS = ["relu", "leaky_relu", "gelu", "silu", "golu", "tanh", "sigmoid"]
ALPHAS = [1, 3, 10, 100, 1000, 10000]
SEEDS = 3


def train(activation: str, seed: int, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(64, 128), get_activation(activation),
        nn.Linear(128, 128), get_activation(activation), nn.Linear(128, 10),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(30):
        for batch in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def main() -> None:
    features, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.25, random_state=0, stratify=labels
    )
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    x_train = torch.tensor((x_train - mean) / std, dtype=torch.float32)
    x_test = torch.tensor((x_test - mean) / std, dtype=torch.float32)
    y_train = torch.tensor(y_train)
    print(
        "median over the test set of 1 - (top softmax probability) at alpha * x, geometric mean"
        " of 3 seeds (0 = certain)"
    )
    print(f"{'activation':<11} {'test acc':>8}  " + "  ".join(f"a={a:<6g}" for a in ALPHAS))
    for activation in ACTIVATIONS:
        medians, accuracies = [], []
        for seed in range(SEEDS):
            model = train(activation, seed, x_train, y_train)
            with torch.no_grad():
                accuracies.append(float((model(x_test).argmax(1).numpy() == y_test).mean()))
            curves = confidence_along_rays(model, x_test, ALPHAS)
            doubt = np.median(1 - curves.confidence, axis=0)
            medians.append(np.log10(np.maximum(doubt, 1e-300)))
        row = 10 ** np.mean(medians, axis=0)
        print(
            f"{activation:<11} {100 * np.mean(accuracies):>7.2f}%  "
            + "  ".join(f"{v:<8.1e}" for v in row)
        )


if __name__ == "__main__":
    main()
