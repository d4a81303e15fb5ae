"""Dead units over training: each epoch's dead fraction and sparsity against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from relulab.errors import UserError
from relulab.geometry.dead_units import dead_unit_history


def test_each_epochs_dead_fraction_and_sparsity_match_the_pre_activations():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU())
    x = torch.randn(200, 3)

    def push_biases_down(epoch):  # a "training" whose effect numpy can follow exactly
        with torch.no_grad():
            model[0].bias -= 0.75

    history = dead_unit_history(model, x, push_biases_down, epochs=4)
    assert history.epochs == [0, 1, 2, 3, 4] and history.layers == ["1", "3"]
    weight, bias0 = model[0].weight.detach().numpy(), model[0].bias.detach().numpy()
    for epoch in history.epochs:
        bias = bias0 + 0.75 * (4 - epoch)  # the bias as it was after ``epoch`` epochs
        pre = x.numpy() @ weight.T + bias
        dead = float((pre.max(axis=0) <= 0).mean())  # relu' = 0 at and below 0, as torch
        assert history.dead[epoch, 0] == pytest.approx(dead)
        assert history.sparsity[epoch, 0] == pytest.approx(float((pre <= 0).mean()))
    assert np.diff(history.dead[:, 0]).min() >= 0 and history.dead[-1, 0] > history.dead[0, 0]
    assert all(math.isnan(v) for v in history.dead[:, 1])  # GELU: no unit can die
    assert history.to_dict()["dead_fraction"][0][1] is None


def test_a_model_without_activation_modules_is_refused():
    with pytest.raises(UserError, match="no activation modules"):
        dead_unit_history(nn.Linear(2, 2), torch.randn(4, 2), lambda epoch: None, epochs=1)


def test_a_history_ends_at_the_epoch_whose_training_returns_false():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    history = dead_unit_history(model, torch.randn(10, 3), lambda epoch: epoch < 3, epochs=5)
    assert history.epochs == [0, 1, 2] and history.dead.shape == (3, 1)


def test_measuring_leaves_the_global_random_stream_to_training():
    class Noisy(nn.ReLU):  # an activation that draws, as SmartMixed does
        def forward(self, x):
            return super().forward(x + 0 * torch.rand(()))

    model = nn.Sequential(nn.Linear(3, 4), Noisy())
    draws = []
    torch.manual_seed(0)
    dead_unit_history(model, torch.randn(10, 3), lambda e: draws.append(torch.rand(())), 2)
    torch.manual_seed(0)
    torch.randn(10, 3)
    assert draws == [torch.rand(()), torch.rand(())]


@pytest.mark.parametrize("task, activation", [("digits", "relu"), ("spirals", "smartmixed")])
def test_track_trial_trains_the_bench_trials_weights_bit_for_bit(task, activation):
    # SmartMixed draws from torch's generator in its forward pass: the same weights need the
    # same draws as run_trial's, and none more for the measuring
    from relulab.bench.tasks import get_task
    from relulab.bench.trainer import TrialSpec, run_trial
    from relulab.geometry.dead_units import track_trial

    task = get_task(task)
    spec = TrialSpec(task, activation, 1, 2, task.batch_size, 10 * task.learning_rate)
    bench = run_trial(spec)
    tracked = track_trial(spec)
    state = tracked.model.state_dict()
    assert state.keys() == bench.state.keys()
    assert all(torch.equal(state[key], bench.state[key]) for key in state)
    assert tracked.scores[1:] == [epoch["test_score"] for epoch in bench.epochs]
    assert tracked.diverged_at is None and tracked.history.epochs == [0, 1, 2]
