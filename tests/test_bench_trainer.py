"""One trial: repeatable, paired across activations, measured correctly, never crashing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import relulab
from relulab.bench import trainer
from relulab.bench.models import MLP, paired_init
from relulab.bench.tasks import Spirals, get_task
from relulab.bench.trainer import (
    TrialSpec,
    activation_for_width,
    activation_statistics,
    run_trial,
    saved_bytes_per_step,
)


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


def test_an_epoch_hook_that_draws_random_numbers_changes_nothing():
    seen = []

    def hook(epoch: int, model: nn.Module) -> None:
        seen.append((epoch, model.training))
        torch.rand(1000)  # a careless measurement; SmartMixed samples in training
        model(torch.randn(4, 2))

    plain, hooked = run_trial(spec("smartmixed")), run_trial(spec("smartmixed"), on_epoch=hook)
    assert seen == [(0, False), (1, False), (2, False), (3, False)]
    assert np.array_equal(plain.probabilities, hooked.probabilities)


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


# The derivative that training uses, and where the output is exactly 0, written out by hand
# (float64 numpy) for the oracle below: name -> (module, derivative(x) != 0, output(x) == 0).
HAND = {
    "relu": (lambda: relulab.get_activation("relu"), lambda x: x > 0, lambda x: x <= 0),
    # HeLU: ReLU forward; its backward passes the gradient wherever x > -alpha (alpha = 0.05)
    "helu": (lambda: relulab.get_activation("helu"), lambda x: x > -0.05, lambda x: x <= 0),
    "hard_sigmoid": (
        lambda: relulab.get_activation("hard_sigmoid"),
        lambda x: np.abs(x) < 3,
        lambda x: x <= -3,
    ),
    "smelu(beta=2)": (  # flat below -beta; (x + beta)²/4beta between; x above
        lambda: relulab.get_activation("smelu", beta=2.0),
        lambda x: x > -2,
        lambda x: x <= -2,
    ),
    "leaky_relu(0)": (
        lambda: relulab.get_activation("leaky_relu", negative_slope=0.0),
        lambda x: x > 0,
        lambda x: x <= 0,
    ),
    "torch ReLU6": (lambda: nn.ReLU6(), lambda x: (x > 0) & (x < 6), lambda x: x <= 0),
}


def _hand_built_layer() -> tuple[nn.Module, torch.Tensor, np.ndarray]:
    """A Linear(1, 8) whose pre-activations on x = linspace(-1, 1, 11) are known: -5
    everywhere; -0.03 everywhere (just below 0, within HeLU's alpha); -2.5..-0.5; -1..1;
    4, 2, 7 and 8 everywhere (beyond or within the flat ends of ReLU6 and hard sigmoid)."""
    layer = nn.Linear(1, 8)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0], [0.0], [1.0], [1.0], [0.0], [0.0], [0.0], [0.0]]))
        layer.bias.copy_(torch.tensor([-5.0, -0.03, -1.5, 0.0, 4.0, 2.0, 7.0, 8.0]))
    x = torch.linspace(-1, 1, 11).unsqueeze(1)
    pre = x.double().numpy() @ layer.weight.double().detach().numpy().T
    return layer, x, pre + layer.bias.double().detach().numpy()


@pytest.mark.parametrize("name", list(HAND))
def test_dead_units_are_those_whose_derivative_is_zero_on_every_example(name):
    """A brute-force oracle: the hand-written derivative at every (example, unit) from the
    pre-activations computed in float64."""
    make, alive, zero = HAND[name]
    layer, x, pre = _hand_built_layer()
    (record,) = activation_statistics(nn.Sequential(layer, make()), x)
    dead = ~alive(pre).any(axis=0)
    assert record["dead_fraction"] == pytest.approx(dead.mean(), abs=1e-15)
    assert record["sparsity"] == pytest.approx(zero(pre).mean(), abs=1e-15)


def test_a_relu_dead_unit_is_alive_under_helus_hysteresis():
    """The unit at -0.03 never has a positive pre-activation (dead by a sign test) but HeLU's
    backward still passes its gradient: 2 of 8 dead under HeLU, 3 of 8 under ReLU."""
    layer, x, _ = _hand_built_layer()
    (helu,) = activation_statistics(nn.Sequential(layer, relulab.get_activation("helu")), x)
    (relu,) = activation_statistics(nn.Sequential(layer, relulab.get_activation("relu")), x)
    assert helu["dead_fraction"] == 2 / 8 and relu["dead_fraction"] == 3 / 8


@pytest.mark.parametrize(
    "make",
    [
        lambda: relulab.get_activation("leaky_relu", negative_slope=0.2),
        lambda: nn.GELU(),
        lambda: nn.Tanh(),
        lambda: nn.SiLU(),
    ],
    ids=["leaky_relu(0.2)", "torch GELU", "torch Tanh", "torch SiLU"],
)
def test_activations_without_a_zero_derivative_region_have_no_dead_fraction(make):
    """None (n/a), not 0.0, even where the pre-activations are far out (-5, 8): no unit
    of such an activation can die by a zero derivative. These are all decided numerically."""
    layer, x, _ = _hand_built_layer()
    (record,) = activation_statistics(nn.Sequential(layer, make()), x)
    assert record["dead_fraction"] is None


def test_a_module_shared_by_two_layers_is_counted_once_per_call():
    """One in-place ReLU object applied after two Linear layers: one record per call, each
    equal to a brute-force count on that layer's own pre-activations."""
    shared = nn.ReLU(inplace=True)
    first, second = nn.Linear(2, 4), nn.Linear(4, 4)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]))
        first.bias.copy_(torch.tensor([0.0, 0.0, -1.0, 1.0]))
        second.weight.copy_(torch.eye(4))
        second.bias.copy_(torch.tensor([-100.0, -100.0, 0.5, 0.0]))
    model = nn.Sequential(first, shared, second, shared)
    x = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [-2.0, -2.0], [0.5, 0.25]])

    pre_1 = x.double() @ first.weight.double().T + first.bias.double()
    out_1 = pre_1.clamp(min=0)
    pre_2 = out_1 @ second.weight.double().T + second.bias.double()
    expected = [
        {
            "layer": f"1#{k}",
            "dead_fraction": float((~(pre > 0).any(0)).double().mean()),
            "sparsity": float((pre.clamp(min=0) == 0).double().mean()),
        }
        for k, pre in ((1, pre_1), (2, pre_2))
    ]
    assert expected[0]["dead_fraction"] != expected[1]["dead_fraction"]  # the test can tell
    assert activation_statistics(model, x) == expected


def test_dead_channels_pool_every_example_and_position():
    """Conv1d channels (dim 1): a channel that is positive at a single (example, position)
    of the input is alive; one that is never positive is dead."""
    conv = nn.Conv1d(1, 3, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0]], [[-1.0]], [[0.0]]]))
        conv.bias.copy_(torch.tensor([0.0, -10.0, 0.0]))
    x = -torch.ones(2, 1, 5)
    x[1, 0, 3] = 2.0  # the only positive pre-activation of channel 0
    (record,) = activation_statistics(nn.Sequential(conv, nn.ReLU()), x)
    pre = conv.weight.detach().reshape(1, 3, 1) * x + conv.bias.detach().reshape(1, 3, 1)
    dead = ~(pre > 0).any(dim=2).any(dim=0)
    assert dead.tolist() == [False, True, True]
    assert record["dead_fraction"] == pytest.approx(float(dead.double().mean()))


# Whether the derivative is exactly 0 on some interval, at default parameters (by hand).
FLAT = {"relu", "relu6", "shifted_relu", "squared_relu", "hard_sigmoid", "hard_swish",
        "hard_mish", "smelu", "helu"}  # fmt: skip


@pytest.mark.parametrize("name", [n for n in relulab.list_activations() if n != "smartmixed"])
def test_the_numerical_flat_region_check_agrees_with_the_maths(name, monkeypatch):
    """has_flat_region's float64 grid, forced for every registered activation at its
    defaults, against the hand-made list. SmartMixed is left out: its answer depends on
    which candidate each unit picked (tested below)."""
    monkeypatch.setattr(trainer, "_registry_default", lambda module: None)
    assert trainer.has_flat_region(activation_for_width(name, 4), 4, 2) == (name in FLAT)


@pytest.mark.parametrize("name", sorted(relulab.list_activations()))
def test_the_registry_flat_region_agrees_with_the_maths(name):
    """The registry's answer, which has_flat_region gives for default arguments."""
    info = relulab.activation_info(name)
    if name == "smartmixed":  # ReLU is one of its candidates
        assert info.flat_region
    else:
        assert info.flat_region == (name in FLAT)


def test_smartmixed_has_a_flat_region_exactly_when_a_unit_uses_relu(monkeypatch):
    monkeypatch.setattr(trainer, "_registry_default", lambda module: None)
    module = relulab.get_activation("smartmixed", num_features=3)
    candidates = list(relulab.functional.SMARTMIXED_CANDIDATES)
    with torch.no_grad():
        module.logits.zero_()
        module.logits[:, candidates.index("tanh")] = 1.0
        assert not trainer.has_flat_region(module, 3, 2)
        module.logits[1, candidates.index("relu")] = 2.0
        assert trainer.has_flat_region(module, 3, 2)


def test_a_diverging_trial_is_recorded_not_raised():
    outcome = run_trial(spec("relu", learning_rate=1e30, epochs=5))
    assert outcome.result["status"] == "diverged"
    assert np.isnan(outcome.result["test_score"])


def test_smartmixed_gets_its_width_from_the_layer():
    outcome = run_trial(spec("smartmixed", epochs=1))
    assert outcome.result["status"] == "ok"


def test_a_given_model_is_trained_from_its_own_weights():
    task = Spirals()
    first = run_trial(spec("relu", epochs=2))
    model = task.model(lambda width: nn.ReLU(), task.data())
    model.load_state_dict(first.state)
    again = run_trial(spec("relu", epochs=1), model=model)
    # trained in place, from the 2-epoch weights: not what 1 epoch from the init gives
    fresh = run_trial(spec("relu", epochs=1))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state.items())
    assert not np.array_equal(again.probabilities, fresh.probabilities)
    assert again.result["test_score"] >= fresh.result["test_score"] - 0.05


def test_distillation_loss_is_hintons_formula():
    generator = torch.Generator().manual_seed(0)
    logits, teacher = torch.randn(2, 5, 7, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 7, (5,), generator=generator)
    temperature, weight = 3.0, 0.7
    expected = 0.0
    for z, t, y in zip(logits.tolist(), teacher.tolist(), labels.tolist(), strict=True):
        soft_t = np.exp(np.array(t) / temperature) / np.exp(np.array(t) / temperature).sum()
        soft_s = np.exp(np.array(z) / temperature) / np.exp(np.array(z) / temperature).sum()
        kl = float(np.sum(soft_t * np.log(soft_t / soft_s)))
        ce = -np.log(np.exp(z[y]) / np.exp(z).sum())
        expected += ((1 - weight) * ce + weight * temperature**2 * kl) / 5
    found = trainer.distillation_loss(logits, teacher, labels, temperature, weight)
    assert float(found) == pytest.approx(expected, rel=1e-12)


def test_a_teacher_guides_fine_tuning_and_is_left_unchanged():
    spec = trainer.TrialSpec(get_task("spirals"), "relu", 0, 2, 64, 1e-2)
    data = get_task("spirals").data()
    full = get_task("spirals").model(lambda width: nn.ReLU(), data)
    paired_init(full, 0)
    trainer.run_trial(spec, model=full)
    before = {k: v.clone() for k, v in full.state_dict().items()}
    plain, taught = (get_task("spirals").model(lambda width: nn.ReLU(), data) for _ in range(2))
    paired_init(plain, 1)
    paired_init(taught, 1)
    trainer.run_trial(spec, model=plain)
    trainer.run_trial(spec, model=taught, teacher=full)
    assert all(torch.equal(before[k], v) for k, v in full.state_dict().items())
    assert not torch.equal(plain.state_dict()["net.0.weight"], taught.state_dict()["net.0.weight"])
