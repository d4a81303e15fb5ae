"""DaPa's least-squares polynomial fit of ReLU, and PolyReLU."""

from __future__ import annotations

import math

import mpmath as mp
import pytest
import torch

import relulab
from relulab.functional import dapa_coefficients


def _autorep_degree2(u: float, v: float) -> list[float]:
    """AutoReP's closed form for degree 2 (shared/reference/activations.md, §10)."""
    g = math.exp(-(u**2) / (2 * v**2))
    w2 = g / (2 * math.sqrt(2 * math.pi) * v)
    w1 = 1 - 0.5 * math.erfc(u / (math.sqrt(2) * v)) - u * g / (math.sqrt(2 * math.pi) * v)
    w0 = (u**2 + v**2) * g / (2 * math.sqrt(2 * math.pi) * v)
    return [w0, w1, w2]


@pytest.mark.parametrize(
    ("mean", "std"), [(0.0, 1.0), (0.7, 0.3), (-1.5, 2.0), (3.0, 1.0), (0.0, 1e-3)]
)
def test_degree_two_matches_autoreps_closed_form(mean, std):
    got = dapa_coefficients(mean, std).tolist()
    assert got == pytest.approx(_autorep_degree2(mean, std), rel=1e-10, abs=1e-300)


def test_standard_normal_fit_is_the_hermite_projection():
    c0, c1, c2 = dapa_coefficients().tolist()
    assert c1 == pytest.approx(0.5, rel=1e-15)
    assert c0 == pytest.approx(1 / (2 * math.sqrt(2 * math.pi)), rel=1e-15) == c2


@pytest.mark.parametrize(
    ("mean", "std", "degree"), [(0.0, 1.0, 3), (0.4, 1.3, 4), (-0.5, 0.8, 1), (0.2, 1.0, 0)]
)
def test_any_degree_minimises_the_expected_squared_error(mean, std, degree):
    """Against normal equations whose moments mpmath integrates numerically."""
    with mp.workdps(30):
        density = lambda t: mp.npdf(t, mean, std)  # noqa: E731
        moment = lambda n: mp.quad(lambda t: t**n * density(t), [-mp.inf, 0, mp.inf])  # noqa: E731
        relu_moment = lambda n: mp.quad(lambda t: t ** (n + 1) * density(t), [0, mp.inf])  # noqa: E731
        gram = mp.matrix([[moment(j + k) for k in range(degree + 1)] for j in range(degree + 1)])
        target = mp.matrix([relu_moment(j) for j in range(degree + 1)])
        want = [float(c) for c in mp.lu_solve(gram, target)]
    assert dapa_coefficients(mean, std, degree).tolist() == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_per_channel_statistics_give_per_channel_fits():
    means, stds = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 0.5, 3.0])
    fits = dapa_coefficients(means, stds)
    assert fits.shape == (3, 3)
    for c in range(3):
        assert fits[:, c].tolist() == pytest.approx(
            _autorep_degree2(means[c].item(), stds[c].item()), rel=1e-10
        )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"std": 0.0}, "std must be finite and > 0"),
        ({"degree": -1}, "degree must be an integer in 0..16"),
        ({"degree": 17}, "in 0..16"),
    ],
)
def test_bad_fit_arguments_are_rejected(arguments, message):
    with pytest.raises(ValueError, match=message):
        dapa_coefficients(**arguments)


def test_poly_relu_starts_at_the_dapa_fit_of_its_degree():
    module = relulab.get_activation("poly_relu(degree=4)")
    assert module.coefficients.detach().double().tolist() == pytest.approx(
        dapa_coefficients(0, 1, 4).tolist(), rel=1e-6
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("poly_relu(degree=2, coefficients=(1.0, 2.0))", "needs 3 coefficients"),
        ("poly_relu(coefficients='abc')", "must be a sequence"),
    ],
)
def test_poly_relu_rejects_bad_coefficients(spec, message):
    with pytest.raises(ValueError, match=message):
        relulab.get_activation(spec)
