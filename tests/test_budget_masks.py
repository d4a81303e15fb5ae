"""Learned linearization masks (SNL, AutoReP) and training them to a ReLU budget."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate
from torch import nn

from relulab.bench.models import MLP
from relulab.bench.tasks import TaskData, get_task
from relulab.budget.mask_training import keep_largest, train_to_budget
from relulab.budget.masks import HysteresisGate, LinearizationMask, insert_masks
from relulab.errors import UserError


def test_linearization_mask_is_relu_at_one_identity_at_zero_and_the_blend_between():
    x = torch.randn(5, 3, 4, dtype=torch.float64) * 3
    mask = LinearizationMask((3, 4)).double()
    assert torch.equal(mask(x), torch.clamp(x, min=0))  # a starts at 1
    with torch.no_grad():
        mask.alpha.fill_(0.0)
    assert torch.equal(mask(x), x)
    a = torch.rand(3, 4, dtype=torch.float64)
    with torch.no_grad():
        mask.alpha.copy_(a)
    expected = a.numpy() * np.maximum(x.numpy(), 0) + (1 - a.numpy()) * x.numpy()
    np.testing.assert_allclose(mask(x).detach().numpy(), expected, rtol=0, atol=1e-12)


def test_binarized_mask_selects_exactly_relu_or_identity():
    x = torch.tensor([[-1e30, -2.5, 3.0, float("inf")]])
    mask = LinearizationMask((4,))
    with torch.no_grad():
        mask.alpha.copy_(torch.tensor([0.5, 0.011, 0.01, -0.3]))
    mask.binarize()  # SNL: a > 1e-2 -> 1, else 0
    assert mask.alpha.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert not mask.alpha.requires_grad
    # a = 0 -> x itself (even inf); a = 1 -> relu
    assert mask(x).tolist() == [[0.0, 0.0, 3.0, float("inf")]]


def test_relu_count_per_element_and_per_channel():
    element = LinearizationMask((2, 3))
    with torch.no_grad():
        element.alpha.copy_(torch.tensor([[1.0, 0.01, 0.0101], [-0.5, 0.3, 0.0]]))
    assert element.relu_count() == 3  # 1.0, 0.0101, 0.3; 0.01 itself is not > 1e-2
    channel = LinearizationMask((3, 2, 5), per="channel")
    assert channel.alpha.shape == (3, 1, 1)
    with torch.no_grad():
        channel.alpha.copy_(torch.tensor([0.9, 0.001, 0.2]).reshape(3, 1, 1))
    assert channel.relu_count() == 2 * 10
    gate = HysteresisGate((3, 2, 5), per="channel")
    gate.m.copy_(torch.tensor([True, False, False]).reshape(3, 1, 1))
    assert gate.relu_count() == 10


# (m before, a, threshold) -> m after, written from AutoReP's rule: on stays on while
# a > -t; off turns on only when a > t.
HYSTERESIS_TABLE = [
    (True, 0.5, 1e-3, True),
    (True, 0.0, 1e-3, True),
    (True, -0.0005, 1e-3, True),
    (True, -0.001, 1e-3, False),  # a = -t is not > -t
    (True, -0.002, 1e-3, False),
    (False, -0.5, 1e-3, False),
    (False, 0.0, 1e-3, False),
    (False, 0.0005, 1e-3, False),
    (False, 0.001, 1e-3, False),  # a = t is not > t
    (False, 0.002, 1e-3, True),
    (True, -0.002, 3e-3, True),
    (False, 0.002, 3e-3, False),
]


def test_hysteresis_rule_table():
    gate = HysteresisGate((len(HYSTERESIS_TABLE),)).double()
    with torch.no_grad():
        gate.a.copy_(torch.tensor([a for _, a, _, _ in HYSTERESIS_TABLE], dtype=torch.float64))
    for threshold in (1e-3, 3e-3):
        rows = [i for i, row in enumerate(HYSTERESIS_TABLE) if row[2] == threshold]
        gate.threshold = threshold
        gate.m.copy_(torch.tensor([m for m, *_ in HYSTERESIS_TABLE]))
        gate.train()
        gate(torch.zeros(1, len(HYSTERESIS_TABLE), dtype=torch.float64))
        assert [bool(gate.m[i]) for i in rows] == [HYSTERESIS_TABLE[i][3] for i in rows]
    gate.eval()  # not updated in eval mode
    before = gate.m.clone()
    with torch.no_grad():
        gate.a.fill_(-1.0)
    gate(torch.zeros(1, len(HYSTERESIS_TABLE), dtype=torch.float64))
    assert torch.equal(gate.m, before)


@pytest.mark.parametrize("per", ["element", "channel"])
def test_ste_gradient_is_softplus_a_times_upstream_times_relu_minus_polynomial(per):
    torch.manual_seed(0)
    gate = HysteresisGate((3, 4), per=per).double()
    a = (torch.rand(gate.entry_shape, dtype=torch.float64) - 0.5) * 4
    a = torch.where(a.abs() < 0.1, torch.full_like(a, 0.7), a)  # clear of the thresholds
    with torch.no_grad():
        gate.a.copy_(a)
        gate.coefficients.copy_(torch.randn_like(gate.coefficients))
    gate.m.copy_(a > 0)
    x = torch.randn(6, 3, 4, dtype=torch.float64) * 2
    upstream = torch.randn(6, 3, 4, dtype=torch.float64)
    gate.train()
    (gate(x) * upstream).sum().backward()

    c = gate.coefficients.detach().numpy()  # (3, 3, 1): degree, channel, broadcast
    x, upstream, a = x.numpy(), upstream.numpy(), a.numpy()
    polynomial = c[0] + c[1] * x + c[2] * x * x
    per_element = (upstream * (np.maximum(x, 0) - polynomial)).sum(0)  # (3, 4)
    softplus = np.log1p(np.exp(a))
    expected = softplus * (per_element if per == "element" else per_element.sum(1, keepdims=True))
    np.testing.assert_allclose(gate.a.grad.numpy(), expected, rtol=1e-12, atol=1e-12)


def _least_squares_relu_fit(mean: float, std: float) -> np.ndarray:
    """argmin_c E[(c0 + c1 x + c2 x² − relu(x))²] under N(mean, std²), by quadrature."""

    def density(x: float) -> float:
        return math.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))

    def expect(f):
        lo, hi = mean - 12 * std, mean + 12 * std
        points = [0.0] if lo < 0 < hi else None
        return integrate.quad(lambda x: f(x) * density(x), lo, hi, points=points, limit=200)[0]

    gram = np.array([[expect(lambda x, k=i + j: x**k) for j in range(3)] for i in range(3)])
    target = np.array([expect(lambda x, k=i: x**k * max(x, 0.0)) for i in range(3)])
    return np.linalg.solve(gram, target)


def test_dapa_initialised_polynomial_is_the_least_squares_fit_under_a_gaussian():
    rng = np.random.default_rng(0)
    means, stds = [0.0, 1.5, -0.7], [1.0, 0.4, 2.5]
    x = np.stack([rng.normal(m, s, size=(64, 5)) for m, s in zip(means, stds)], 1)  # (64, 3, 5)
    exact = HysteresisGate((3, 5), per="channel", init_scale=(1.0, 1.0, 1.0)).double()
    autorep = HysteresisGate((3, 5), per="channel").double()
    for gate in (exact, autorep):
        gate.calibrate(torch.as_tensor(x))
    for channel in range(3):
        values = x[:, channel]
        fit = _least_squares_relu_fit(values.mean(), values.std())  # population std
        got = exact.coefficients[:, channel].flatten().detach().numpy()
        np.testing.assert_allclose(got, fit, rtol=1e-6, atol=1e-9)
        scaled = autorep.coefficients[:, channel].flatten().detach().numpy()
        np.testing.assert_allclose(scaled, fit * [0.2, 1.0, 0.1], rtol=1e-6, atol=1e-9)


def test_keep_largest_ranks_by_score_breaks_ties_by_order_and_fits_channels_greedily():
    first, second = LinearizationMask((4,)), LinearizationMask((4,))
    with torch.no_grad():
        first.alpha.copy_(torch.tensor([0.5, 0.9, 0.5, 0.1]))
        second.alpha.copy_(torch.tensor([0.5, 0.2, 1.0, 0.5]))
    kept = keep_largest([first, second], 4)
    # 1.0, 0.9, then the first two of the four 0.5s in order: first[0], first[2]
    assert kept[0].tolist() == [True, True, True, False]
    assert kept[1].tolist() == [False, False, True, False]
    small = LinearizationMask((2, 2), per="channel")  # channels of 2 ReLUs
    large = LinearizationMask((2, 3), per="channel")  # channels of 3
    with torch.no_grad():
        small.alpha.copy_(torch.tensor([0.3, 0.1]).reshape(2, 1))
        large.alpha.copy_(torch.tensor([0.9, 0.2]).reshape(2, 1))
    kept = keep_largest([small, large], 7)  # 0.9 (3), 0.3 (2), 0.2 (3) does not fit, 0.1 (2)
    assert kept[0].flatten().tolist() == [True, True]
    assert kept[1].flatten().tolist() == [True, False]


class _Mixed(nn.Module):
    """ReLUs as a module, an F.relu call and a tensor method."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 3, 3)
        self.act = nn.ReLU()
        self.fc1 = nn.Linear(3 * 6, 5)
        self.fc2 = nn.Linear(5, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        h = self.act(self.conv(x)).flatten(1)
        h = F.relu(self.fc1(h))
        return self.out(self.fc2(h).relu())


@pytest.mark.parametrize("kind", ["snl", "autorep"])
def test_insert_masks_finds_modules_and_calls_and_keeps_the_function(kind):
    torch.manual_seed(0)
    model = _Mixed()
    x = torch.randn(7, 1, 8)
    reference = copy.deepcopy(model)(x)
    masks = insert_masks(model, x, kind, per="channel")
    assert [m.shape for m in masks] == [(3, 6), (5,), (4,)]
    assert [m.relu_count() for m in masks] == [18, 5, 4]
    model.eval()  # every ReLU still on: the same function
    torch.testing.assert_close(model(x), reference, rtol=0, atol=0)


def test_insert_masks_refuses_a_relu_used_twice_and_a_model_without_relus():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(2, 3), relu, nn.Linear(3, 3), relu)
    with pytest.raises(UserError, match="'1' is applied 2 times"):
        insert_masks(model, torch.randn(2, 2))
    with pytest.raises(UserError, match="no ReLU"):
        insert_masks(nn.Sequential(nn.Linear(2, 3), nn.Tanh()), torch.randn(2, 2))


@pytest.fixture(scope="module")
def spirals() -> tuple[TaskData, nn.Module]:
    """The spirals task and its MLP (2-64-64-3, 128 ReLUs), briefly trained."""
    data = get_task("spirals").load()
    torch.manual_seed(0)
    model = MLP(2, (64, 64), data.classes, lambda n: nn.ReLU())
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        for index in torch.randperm(len(data.y_train), generator=generator).split(64):
            loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return data, model


def _relus_by_behaviour(mask: nn.Module) -> int:
    """Units whose output is 0 at both x = −1 and x = −2: a ReLU, not identity or P."""
    x = torch.tensor([-1.0, -2.0]).reshape(2, *([1] * len(mask.shape))).expand(2, *mask.shape)
    with torch.no_grad():
        return int((mask(x) == 0).all(0).sum())


@pytest.mark.parametrize("method", ["snl", "autorep"])
@pytest.mark.parametrize(
    "schedule",
    [
        {},  # the penalty phase gets there
        {"max_penalty_steps": 20},  # it stops short: the selection forces the budget
        {"check_every": 50, "penalty": "large"},  # it overshoots: the selection gives back
    ],
    ids=["reached", "stopped-short", "overshot"],
)
def test_each_method_reaches_its_budget_exactly(spirals, method, schedule):
    data, trained = spirals
    model = copy.deepcopy(trained)
    masks = insert_masks(model, data.x_train[:4], method)
    assert sum(m.relu_total for m in masks) == 128
    if schedule.get("penalty") == "large":  # 1e5 and 100 times the defaults
        schedule = {**schedule, "penalty": 1.0 if method == "snl" else 1000.0}
    outcome = train_to_budget(model, masks, data, 10, method, finetune_epochs=3, **schedule)
    if "max_penalty_steps" in schedule:
        assert outcome.penalty_count > 10 and not outcome.penalty_met_budget
    if "penalty" in schedule:
        assert outcome.penalty_count < 10
    assert outcome.relu_count == 10
    assert sum(_relus_by_behaviour(m) for m in masks) == 10
    # 3 classes, chance is 1/3; ReLUs chosen after only 20 steps are a near-arbitrary choice
    assert outcome.test_accuracy > (0.4 if "max_penalty_steps" in schedule else 0.6)
    model.train()  # frozen: training mode moves no mask
    model(data.x_train[:4])
    assert sum(_relus_by_behaviour(m) for m in masks) == 10


def test_train_to_budget_rejects_budgets_outside_the_count(spirals):
    data, trained = spirals
    model = copy.deepcopy(trained)
    masks = insert_masks(model, data.x_train[:4], "snl")
    for budget in (0, -3, 129, 2.5):
        with pytest.raises(UserError, match=r"1\.\.128"):
            train_to_budget(model, masks, data, budget)
    with pytest.raises(UserError, match="does not fit"):
        train_to_budget(model, masks, data, 10, "autorep")
