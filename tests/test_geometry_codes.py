"""Activation codes against numpy's pre-activations, and their statistics against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relulab.errors import UserError
from relulab.geometry.codes import activation_codes, code_statistics, matched_accuracy

pytest.importorskip("sklearn")


def numpy_layer(layer: nn.Linear, x: np.ndarray) -> np.ndarray:
    """``W x + b`` in float64 numpy."""
    w = layer.weight.detach().double().numpy()
    b = layer.bias.detach().double().numpy()
    return x @ w.T + b


def test_one_layer_relu_codes_are_the_signs_of_w_x_plus_b():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    x = torch.randn(300, 5)
    codes = activation_codes(net, x)
    expected = numpy_layer(net[0], x.double().numpy()) > 0
    assert codes.bits.dtype == torch.bool
    np.testing.assert_array_equal(codes.bits.numpy(), expected)
    assert codes.columns.tolist() == list(range(7))
    assert [s.units for s in codes.sites] == [7]


class Functional(nn.Module):
    """Two hidden layers whose activations are functional calls, not modules."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(6, 5), nn.Linear(5, 2)

    def forward(self, x):
        return self.c(torch.relu(self.b(F.relu(self.a(x)))))


def test_functional_relu_codes_concatenate_layers_in_execution_order():
    torch.manual_seed(1)
    net = Functional()
    x = torch.randn(200, 4)
    codes = activation_codes(net, x)
    first = numpy_layer(net.a, x.double().numpy())
    second = numpy_layer(net.b, np.maximum(first, 0))
    np.testing.assert_array_equal(codes.bits.numpy(), np.hstack([first > 0, second > 0]))
    assert len(codes.sites) == 2


def test_relu6_gives_two_thermometer_bits_per_unit():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU6(), nn.Linear(4, 1))
    with torch.no_grad():
        net[0].weight.mul_(10)  # so that some pre-activations pass 6
    x = torch.randn(300, 3)
    pre = numpy_layer(net[0], x.double().numpy())
    expected = np.stack([pre > 0, pre > 6], axis=-1).reshape(len(x), -1)  # unit-major
    assert (pre > 6).any() and ((pre > 0) & (pre <= 6)).any() and (pre <= 0).any()
    np.testing.assert_array_equal(activation_codes(net, x).bits.numpy(), expected)


def test_drop_constant_keeps_the_varying_columns_and_applies_them_to_test_data():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(2, 5), nn.ReLU(), nn.Linear(5, 1))
    with torch.no_grad():
        net[0].bias[1] = 100.0  # always on
        net[0].bias[3] = -100.0  # always off
    train, test = torch.randn(100, 2), torch.randn(30, 2)
    codes = activation_codes(net, train, drop_constant=True)
    assert codes.columns.tolist() == [0, 2, 4]
    expected = numpy_layer(net[0], test.double().numpy())[:, [0, 2, 4]] > 0
    tested = activation_codes(net, test, columns=codes.columns)
    np.testing.assert_array_equal(tested.bits.numpy(), expected)


def test_batches_do_not_change_the_codes():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(3, 8), nn.LeakyReLU(0.1), nn.Linear(8, 8), nn.ReLU())
    x = torch.randn(50, 3)
    whole = activation_codes(net, x).bits
    assert torch.equal(activation_codes(net, x, batch_size=7).bits, whole)


def test_bad_input_is_a_user_error():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    x = torch.randn(10, 2)
    with pytest.raises(UserError, match="not both"):
        activation_codes(net, x, drop_constant=True, columns=torch.tensor([0]))
    with pytest.raises(UserError, match=r"columns must lie in \[0, 3\)"):
        activation_codes(net, x, columns=torch.tensor([3]))
    with pytest.raises(UserError, match="no piecewise-linear activation"):
        activation_codes(nn.Linear(2, 1), x)
    with pytest.raises(UserError, match="sigmoid"):
        activation_codes(nn.Sequential(nn.Linear(2, 3), nn.Sigmoid()), x)
    codes = np.zeros((10, 3), bool)
    with pytest.raises(UserError, match=r"columns=train_codes\.columns"):
        code_statistics(codes, np.zeros(10), codes[:, :2], np.zeros(10))
    with pytest.raises(UserError, match="labels of shape"):
        code_statistics(codes, np.zeros(9), codes, np.zeros(10))


def separable(rng: np.random.Generator, labels: list[int], per_class: int):
    """Codes where class i sets block i of 10 bits, plus one random flipped bit elsewhere."""
    y = np.repeat(labels, per_class)
    codes = np.zeros((len(y), 10 * len(labels)), bool)
    for row, label in enumerate(y):
        block = labels.index(label)
        codes[row, 10 * block : 10 * block + 10] = True
        codes[row, rng.integers(codes.shape[1])] ^= True
    order = rng.permutation(len(y))
    return codes[order], y[order]


def test_perfectly_separable_codes_are_classified_and_clustered_exactly():
    rng = np.random.default_rng(5)
    train, y_train = separable(rng, [3, 7, 9], 40)
    test, y_test = separable(rng, [3, 7, 9], 15)
    stats = code_statistics(train, y_train, test, y_test)
    assert stats.kmeans_accuracy == 1.0
    assert stats.kmeans_test_accuracy == 1.0
    assert stats.knn_accuracy == 1.0
    assert stats.logistic_accuracy == 1.0


def test_redundancy_ratio_of_hand_made_codes():
    train = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1], [1, 1, 0], [1, 0, 0]], bool)
    y = np.array([0, 0, 0, 1, 1])
    stats = code_statistics(torch.tensor(train), torch.tensor(y), train, y, k=1)
    assert (stats.examples, stats.distinct) == (5, 3)
    assert stats.redundancy_ratio == pytest.approx(2 / 5)  # (N - distinct) / N


def test_matched_accuracy_equals_the_best_permutation():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 4, 60)
    clusters = rng.integers(0, 4, 60)
    best = max(
        np.mean(np.array(perm)[clusters] == labels) for perm in itertools.permutations(range(4))
    )
    accuracy, matching = matched_accuracy(labels, clusters)
    assert accuracy == pytest.approx(best)
    assert sorted(matching) == [0, 1, 2, 3] and sorted(matching.values()) == [0, 1, 2, 3]


def test_knn_equals_brute_force_hamming_knn():
    """k = 9 by brute force. sklearn breaks a tie in the vote to the smallest label (checked
    below by hand) but a tie in distance at the 9th neighbour arbitrarily, so test points with
    such a tie are left out."""
    rng = np.random.default_rng(7)
    train = rng.random((150, 40)) < 0.5
    y_train = rng.integers(0, 3, 150)
    test = rng.random((300, 40)) < 0.5
    distances = (test[:, None, :] != train[None, :, :]).sum(-1)
    order = np.argsort(distances, axis=1, kind="stable")
    ranked = np.take_along_axis(distances, order, axis=1)
    unique = ranked[:, 8] < ranked[:, 9]
    votes = np.stack([np.bincount(y_train[row[:9]], minlength=3) for row in order])
    expected = votes.argmax(1)  # the smallest label among the most voted
    assert unique.sum() >= 50
    assert ((votes == votes.max(1, keepdims=True)).sum(1) > 1)[unique].any()  # vote ties met
    test, y_test = test[unique], expected[unique]
    stats = code_statistics(train, y_train, test, y_test)
    assert stats.knn_accuracy == 1.0

    # the vote tie rule: 3 votes each for 2, 1 and 0 (all 9 are neighbours) -> 0
    tie = (np.arange(9)[:, None] >> np.arange(4)) % 2 == 1
    stats = code_statistics(tie, np.repeat([2, 1, 0], 3), tie[:1], np.array([0]))
    assert stats.knn_accuracy == 1.0
