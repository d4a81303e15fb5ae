"""DeepReDuce's stages, plans and linearized models, against hand counts and brute force."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from relulab.budget import count_relus
from relulab.budget.deepreduce import linearized, plan, relu_stages
from relulab.errors import UserError


def mlp(widths=(4, 10, 20, 30, 40, 3)) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def test_each_relu_layer_is_a_stage_with_its_hand_count():
    stages = relu_stages(mlp(), (4,))
    assert [s.layers for s in stages] == [("1",), ("3",), ("5",), ("7",)]
    assert [s.total for s in stages] == [10, 20, 30, 40]


def test_stages_by_path_prefix_and_thinning_keeps_every_other_layer():
    net = nn.Sequential(mlp((4, 5, 6, 7, 8, 3)), nn.ReLU())
    stages = relu_stages(net, (4,), depth=1)
    assert [s.name for s in stages] == ["0", "1"]
    assert stages[0].layers == ("0.1", "0.3", "0.5", "0.7")
    assert stages[0].thinned() == (("0.1", "0.5"), 5 + 7)


@pytest.mark.parametrize("method", ["cull", "thin"])
@pytest.mark.parametrize("budget", [5, 10, 35, 59, 60, 99, 100])
def test_a_plan_is_within_budget_and_no_skipped_stage_would_fit(method, budget):
    stages = relu_stages(mlp(), (4,))
    order = [2, 0, 3, 1]
    chosen = plan(stages, order, budget, method)
    model = linearized(mlp(), chosen.keep, stages)
    assert count_relus(model, (4,)).total == chosen.relus <= budget  # traced, not trusted
    # brute force: every skipped stage (taken whole, or thinned) would break the budget
    kept = set(chosen.keep)
    for stage in stages:
        layers, relus = stage.thinned() if method == "thin" else (stage.layers, stage.total)
        if not kept & set(layers):
            assert chosen.relus + relus > budget


def test_linearized_layers_are_identities_and_keeping_all_changes_nothing():
    torch.manual_seed(0)
    net = mlp().eval()
    stages = relu_stages(net, (4,))
    x = torch.randn(8, 4)
    every = linearized(net, [p for s in stages for p in s.layers], stages)
    assert torch.equal(every(x), net(x))
    none = linearized(net, [], stages)
    assert all(isinstance(none[i], nn.Identity) for i in (1, 3, 5, 7))
    linear = none[8].weight @ none[6].weight @ none[4].weight @ none[2].weight @ none[0].weight
    assert torch.allclose(none(x), x @ linear.T + none(torch.zeros(1, 4)), atol=1e-5)


def test_a_relu_inside_another_modules_forward_is_refused_by_name():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x):
            return torch.relu(self.linear(x))

    with pytest.raises(UserError, match="call inside Block's forward"):
        relu_stages(nn.Sequential(Block(), nn.Linear(4, 2)), (4,))


def test_budgets_outside_the_count_are_refused_with_the_range():
    stages = relu_stages(mlp(), (4,))
    for budget in (0, 101):
        with pytest.raises(UserError, match="100"):
            plan(stages, [0, 1, 2, 3], budget, "cull")
