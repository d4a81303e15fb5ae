"""The encrypted-cost model's arithmetic, and CrypTen's measured cost where it is installed."""

import importlib.util
import os
import sys
import tempfile

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from relulab.bench.models import MLP, DigitsCNN
from relulab.budget import private
from relulab.errors import UserError
from relulab.optional import MissingDependencyError

# mnist1d-sized MLP 40-100-100-10: secret operands of its three linear layers (input elements
# plus weight elements), counted by hand.
MLP_OPERANDS = (40 + 40 * 100) + (100 + 100 * 100) + (100 + 100 * 10)


def test_cost_model_matches_the_crypten_measurement_of_an_mlp():
    # CrypTen 0.4.1 measured 336,800 B and 22 rounds for this MLP (batch 1, 10 logits)
    cost = private.cost_model(
        200, linear_operands=MLP_OPERANDS, relu_layers=2, multiplication_layers=3, outputs=10
    )
    assert cost["bytes"] == 336_800
    assert cost["rounds"] == 22


def test_cost_model_per_operation_arithmetic():
    # 3 products and 5 ReLUs in one layer each, 2 comparisons of a 2x2 pool: by hand
    cost = private.cost_model(5, 3, maxpool_comparisons=2)
    assert cost["bytes"] == pytest.approx(5 * 464 + 3 * 32 + 2 * 5920 / 3)
    assert cost["rounds"] == 9 + 1 + 46
    assert cost["latency_s"] == pytest.approx(5 * 3.5e-6 + 3 * 0.2e-6 + 2 * 12.8e-6)
    assert set(cost["sources"]) == {"relu", "multiplication", "linear_operand",
                                    "maxpool_comparison", "reveal"}  # fmt: skip


def test_cost_model_rounds_count_layers_not_elements():
    assert private.cost_model(10, relu_layers=3)["rounds"] == 27
    assert private.cost_model(10**6, relu_layers=3)["rounds"] == 27
    assert private.cost_model(0, relu_layers=3)["rounds"] == 0  # no ReLUs, no ReLU rounds


def test_cost_model_network_terms():
    no_network = private.cost_model(1000, 0, relu_layers=2)
    cost = private.cost_model(1000, 0, relu_layers=2, bandwidth_bytes_per_s=1e6, round_trip_s=0.01)
    assert cost["latency_s"] - no_network["latency_s"] == pytest.approx(464_000 / 1e6 + 18 * 0.01)


@pytest.mark.parametrize(
    "kwargs",
    [{"relus": -1}, {"relus": 1.5}, {"relus": True}, {"relus": 1, "relu_layers": -2},
     {"relus": 1, "outputs": -1}, {"relus": 1, "bandwidth_bytes_per_s": 0.0},
     {"relus": 1, "round_trip_s": float("nan")}],
)  # fmt: skip
def test_cost_model_rejects_bad_counts(kwargs):
    name = next(key for key in kwargs if key != "relus" or len(kwargs) == 1)
    with pytest.raises(UserError, match=name):
        private.cost_model(**kwargs)


@pytest.mark.parametrize(
    ("shape", "repeats", "name"),
    [((), 3, "input_shape"), ((1, 0), 3, "input_shape"), ("1,40", 3, "input_shape"),
     ((1, 40), 0, "repeats")],
)  # fmt: skip
def test_encrypted_cost_rejects_bad_arguments_before_importing_crypten(shape, repeats, name):
    with pytest.raises(UserError, match=name):
        private.encrypted_cost(nn.Linear(40, 2), shape, repeats)


def test_missing_crypten_names_the_install(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "crypten", raising=False)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "crypten" else find_spec(name)
    )
    with pytest.raises(MissingDependencyError, match=r"crypten.*pip install --no-deps"):
        private.encrypted_cost(nn.Linear(40, 2), (1, 40))


# The CrypTen path. Not pytest.importorskip("crypten"): on torch >= 2.9 a plain import fails
# (ImportError) and would be skipped as if CrypTen were absent; private.import_crypten is the
# import under test.
needs_crypten = pytest.mark.skipif(
    importlib.util.find_spec("crypten") is None, reason="CrypTen is not installed"
)


def _relus(keep):
    layers = iter(keep)
    return lambda width: nn.ReLU() if next(layers) else nn.Identity()


def _seed0_input(shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def _leftovers():
    return {name for name in os.listdir(tempfile.gettempdir()) if "relulab-crypten" in name}


@needs_crypten
def test_encrypted_mlp_output_bytes_and_rounds():
    torch.manual_seed(0)
    model = MLP(40, (100, 100), 10, _relus((1, 1)))
    before = _leftovers()
    cost = private.encrypted_cost(model, (1, 40), repeats=1)
    assert _leftovers() == before
    with torch.no_grad():
        expected = model(_seed0_input((1, 40)))
    torch.testing.assert_close(torch.tensor(cost["output"]), expected, atol=1e-3, rtol=0)
    assert cost["relus"] == 200
    # by hand: 464 B per ReLU, 16 B per linear operand element, 16 B per revealed logit
    assert cost["bytes"] == 464 * 200 + 16 * MLP_OPERANDS + 16 * 10
    assert cost["rounds"] == 2 * 9 + 3 + 1
    assert cost["latency_s"] > 0


@needs_crypten
def test_removing_a_relu_layer_saves_its_bytes_and_rounds():
    torch.manual_seed(0)
    full = private.encrypted_cost(MLP(40, (100, 100), 10, _relus((1, 1))), (1, 40), repeats=1)
    torch.manual_seed(0)
    half = private.encrypted_cost(MLP(40, (100, 100), 10, _relus((0, 1))), (1, 40), repeats=1)
    assert half["relus"] == 100
    assert full["bytes"] - half["bytes"] == 100 * 464
    assert full["rounds"] - half["rounds"] == 9


class _FunctionalReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 5)

    def forward(self, x):
        return F.relu(self.linear(x)) * 2


@needs_crypten
def test_functional_relu_is_counted_and_evaluated():
    torch.manual_seed(0)
    model = _FunctionalReLU()
    cost = private.encrypted_cost(model, (3, 6), repeats=1)
    assert cost["relus"] == 15
    with torch.no_grad():
        expected = model(_seed0_input((3, 6)))
    torch.testing.assert_close(torch.tensor(cost["output"]), expected, atol=1e-3, rtol=0)


@needs_crypten
def test_encrypted_digits_cnn():
    torch.manual_seed(0)
    model = DigitsCNN(10, _relus((1, 1)))
    cost = private.encrypted_cost(model, (1, 1, 8, 8), repeats=1)
    assert cost["relus"] == 16 * 8 * 8 + 32 * 8 * 8
    assert cost["maxpool_comparisons"] == 32 * 4 * 4 * 3
    with torch.no_grad():
        expected = model(_seed0_input((1, 1, 8, 8)))
    torch.testing.assert_close(torch.tensor(cost["output"]), expected, atol=1e-3, rtol=0)


class _Unsupported(nn.Module):
    def forward(self, x):
        return torch.linalg.qr(x).Q


@needs_crypten
def test_a_model_crypten_cannot_convert_is_named():
    with pytest.raises(UserError, match="CrypTen cannot convert _Unsupported"):
        private.encrypted_cost(_Unsupported(), (4, 4))
