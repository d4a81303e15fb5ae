"""One trial: repeatable, paired across activations, measured correctly, never crashing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import relulab
from relulab.bench.models import MLP, paired_init
from relulab.bench.tasks import Spirals, get_task
from relulab.bench.trainer import TrialSpec, activation_statistics, run_trial, saved_bytes_per_step


def spec(activation: str = "gelu", seed: int = 0, epochs: int = 3, **changes) -> TrialSpec:
    task = get_task("spirals")
    base = TrialSpec(task, activation, seed, epochs, task.batch_size, task.learning_rate)
    return dataclasses.replace(base, **changes)


def without_timing(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "timing"}


def test_a_trial_is_bit_identical_when_repeated():
    first, second = run_trial(spec("smartmixed")), run_trial(spec("smartmixed"))
    assert without_timing(first.result) == without_timing(second.result)
    assert np.array_equal(first.probabilities, second.probabilities)
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in first.epochs] == [
        {k: v for k, v in e.items() if k != "seconds"} for e in second.epochs
    ]


def test_seeds_differ():
    assert not np.array_equal(
        run_trial(spec(seed=0)).probabilities, run_trial(spec(seed=1)).probabilities
    )


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


@pytest.mark.parametrize("task_name", ["spirals", "digits", "digits_cnn", "mnist1d"])
def test_every_activation_starts_from_the_same_weights(task_name):
    task = get_task(task_name)
    data = task.data()
    models = []
    for activation in ("relu", "smartmixed", "prelu", "golu"):
        torch.manual_seed(123)  # activations with random state must not shift the layers' draws
        model = task.model(
            lambda n, a=activation: relulab.get_activation(
                a, **({"num_features": n} if a == "smartmixed" else {})
            ),
            data,
        )
        paired_init(model, seed=7)
        models.append(model)
    for other in models[1:]:
        assert all(torch.equal(a, b) for a, b in zip(_weights(models[0]), _weights(other)))


class Recorder(nn.Module):
    """Identity that records the first value of every batch it sees."""

    seen: list[float]

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        if self.training:
            self.seen.append(float(x[0, 0]))
        return x


@dataclasses.dataclass(frozen=True)
class RecordingSpirals(Spirals):
    """Spirals whose model is one linear layer after a recorder on the input."""

    activation: str = "relu"

    def model(self, activation, data):
        return nn.Sequential(Recorder(), MLP(2, (8,), data.classes, activation))


def test_the_data_order_depends_on_the_seed_only():
    orders = []
    for activation in ("relu", "mish"):
        task = RecordingSpirals()
        recorded = []
        original = task.model

        def model(act, data, original=original, recorded=recorded):
            built = original(act, data)
            recorded.append(built[0])
            return built

        object.__setattr__(task, "model", model)
        run_trial(TrialSpec(task, activation, 3, 2, 64, 1e-3))
        orders.append(recorded[0].seen)
    assert orders[0] == orders[1] and len(orders[0]) > 10


def test_the_split_is_fixed_and_stratified():
    first, second = get_task("digits").load(), get_task("digits").load()
    assert torch.equal(first.x_test, second.x_test) and torch.equal(first.y_test, second.y_test)
    counts = torch.bincount(first.y_test).tolist()
    assert len(first.y_test) + len(first.y_train) == 1797 and max(counts) - min(counts) <= 2


def test_mnist1d_is_the_published_split():
    data = get_task("mnist1d").data()
    assert (
        data.x_train.shape == (4000, 40) and data.x_test.shape == (1000, 40) and data.classes == 10
    )


def test_saved_bytes_count_what_autograd_keeps():
    """ReLU saves its output, which the next Linear saves too (counted once); LeakyReLU saves
    its input besides: exactly one extra (batch × width) float32 tensor per hidden layer."""
    x, y = torch.randn(64, 2), torch.randint(0, 3, (64,))
    relu = saved_bytes_per_step(MLP(2, (64, 64), 3, lambda n: nn.ReLU()), x, y)
    leaky = saved_bytes_per_step(MLP(2, (64, 64), 3, lambda n: nn.LeakyReLU()), x, y)
    assert leaky - relu == 2 * 64 * 64 * 4


def test_dead_units_and_sparsity_by_hand():
    layer = nn.Linear(2, 4)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]))
        layer.bias.copy_(torch.tensor([0.0, 0.0, -1.0, 100.0]))  # unit 2 never fires, unit 3 always
    model = nn.Sequential(layer, nn.ReLU())
    x = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [-2.0, -2.0]])
    (record,) = activation_statistics(model, x)
    assert record["layer"] == "1" and record["dead_fraction"] == 0.25
    # zeros: unit 0 on rows 2, 3; unit 1 on rows 1, 3; unit 2 on all three → 7 of 12
    assert record["sparsity"] == 7 / 12


def test_a_diverging_trial_is_recorded_not_raised():
    outcome = run_trial(spec("relu", learning_rate=1e30, epochs=5))
    assert outcome.result["status"] == "diverged"
    assert np.isnan(outcome.result["test_accuracy"])


def test_smartmixed_gets_its_width_from_the_layer():
    outcome = run_trial(spec("smartmixed", epochs=1))
    assert outcome.result["status"] == "ok"
