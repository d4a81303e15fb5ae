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


def test_trial_ids_stay_distinct_for_specs_that_differ_only_in_punctuation():
    ids = {
        spec(a).trial_id
        for a in ("leaky_relu(negative_slope=0.2)", "leaky_relu(negative_slope=-0.2)", "relu")
    }
    assert len(ids) == 3 and "spirals-relu-s0" in ids


def test_run_trial_restores_the_callers_torch_settings():
    torch.set_num_threads(1)
    before = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.get_rng_state(),
    )
    run_trial(spec("relu", epochs=1, threads=2))
    after = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.get_rng_state(),
    )
    assert before[:2] == after[:2] and torch.equal(before[2], after[2])


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
def test_paired_init_gives_every_activation_the_same_weights(task_name):
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
        biases = [
            [m.bias for m in x.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
            for x in (models[0], other)
        ]
        assert all(torch.equal(a, b) for a, b in zip(*biases))


@dataclasses.dataclass(frozen=True)
class Watched(Spirals):
    """Spirals whose model records, on its first forward, its initial weights and biases,
    and the first input of every training batch."""

    def model(self, activation, data):
        model = MLP(2, (8,), data.classes, activation)
        model.initial, model.batches = None, []

        def record(module, inputs):
            if model.initial is None:  # the Linear layers' weights and biases
                linear = [m for m in module.modules() if isinstance(m, nn.Linear)]
                model.initial = [t.detach().clone() for m in linear for t in (m.weight, m.bias)]
            if module.training:
                model.batches.append(inputs[0][0].tolist())

        model.register_forward_pre_hook(record)
        WATCHED.append(model)
        return model


WATCHED: list[nn.Module] = []


def test_run_trial_pairs_initial_weights_and_data_order_across_activations():
    """relu draws no random numbers and smartmixed draws many (its init and its Gumbel noise);
    both must start from the weights and see the batches that the seed alone defines."""
    WATCHED.clear()
    task = Watched()
    for activation in ("relu", "smartmixed"):
        run_trial(TrialSpec(task, activation, 3, 2, 64, 1e-3))
    relu_model, mixed_model = WATCHED
    assert all(torch.equal(a, b) for a, b in zip(relu_model.initial, mixed_model.initial))
    expected = MLP(2, (8,), 3, lambda n: nn.ReLU())
    paired_init(expected, 3)
    assert all(torch.equal(a, b) for a, b in zip(relu_model.initial, expected.parameters()))
    assert len(relu_model.initial) == 4
    assert relu_model.batches == mixed_model.batches
    data = task.data()
    order = torch.cat(
        [
            torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(3))
            for _ in range(1)
        ]
    )
    first_batch = data.x_train[order[0]].tolist()
    assert relu_model.batches[1] == first_batch  # batches[0] is the saved-bytes probe


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
    assert np.isnan(outcome.result["test_score"])


def test_smartmixed_gets_its_width_from_the_layer():
    outcome = run_trial(spec("smartmixed", epochs=1))
    assert outcome.result["status"] == "ok"
