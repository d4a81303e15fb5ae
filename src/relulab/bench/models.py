"""The benchmark's small networks; each takes a factory that makes one activation module."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# Makes one activation module for a layer with the given number of features (channels).
ActivationFactory = Callable[[int], nn.Module]


class MLP(nn.Module):
    """inputs → [Linear → activation] × len(hidden) → Linear → logits."""

    def __init__(
        self, inputs: int, hidden: tuple[int, ...], classes: int, activation: ActivationFactory
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = inputs
        for size in hidden:
            layers += [nn.Linear(width, size), activation(size)]
            width = size
        layers.append(nn.Linear(width, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class DigitsCNN(nn.Module):
    """(N, 1, 8, 8) → two 3×3 convolutions (16, 32 channels) → 2×2 max-pool → linear."""

    def __init__(self, classes: int, activation: ActivationFactory):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), activation(16),
            nn.Conv2d(16, 32, 3, padding=1), activation(32),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Linear(32 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.reshape(-1, 1, 8, 8)).flatten(1))


class Conv1dNet(nn.Module):
    """(N, length) → three strided 1-D convolutions → linear: MNIST-1D's ConvBase (Greydanus
    2020), 25 channels by default as there; 5,210 parameters for length 40 and 10 classes."""

    def __init__(
        self, length: int, classes: int, activation: ActivationFactory, channels: int = 25
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1), activation(channels),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), activation(channels),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), activation(channels),
        )  # fmt: skip
        for conv in self.features[::2]:  # output length of each strided convolution
            length = (length + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
        self.head = nn.Linear(channels * length, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(1)).flatten(1))


def paired_init(model: nn.Module, seed: int) -> None:
    """Re-draw every Linear and Conv layer's weights from a generator seeded by ``seed`` alone.

    torch's default initialisation, but with a private generator walked in module order: the
    draws do not depend on which activation the model holds (an activation with random state,
    such as SmartMixed's logits, would otherwise shift every later layer), so models that
    differ only in their activation start from identical weights.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_uniform_(module.weight, a=5**0.5, generator=generator)
                if module.bias is not None:
                    fan_in = module.weight[0].numel()
                    bound = 1 / fan_in**0.5
                    nn.init.uniform_(module.bias, -bound, bound, generator=generator)
