"""Property tests: the registry's claims (monotonic, bounded below, piecewise linear, C¹,
flat region, trainable) checked numerically, and mathematical identities checked with hypothesis."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import relulab

from conftest import ELEMENTWISE, build
from reference_formulas import kinks

# Functions that are x for large x and vanish for very negative x (test's own list).
RELU_LIKE = [
    "relu", "gelu", "gelu_tanh", "quick_gelu", "silu", "swish", "mish", "softplus",
    "hard_swish", "hard_mish", "smelu", "golu", "helu", "xgelu", "xsilu",
]  # fmt: skip

DENSE = torch.linspace(-12, 12, 24001, dtype=torch.float64)
_LOG = torch.logspace(-3, 8, 400, dtype=torch.float64)
WIDE = torch.cat([-_LOG, DENSE, _LOG]).sort().values

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


def _f(name: str, **arguments):
    module = build(name, arguments)
    return lambda x: module(torch.as_tensor(x, dtype=torch.float64)).detach()


def _derivative(name: str, x: torch.Tensor, order: int = 1, **arguments) -> torch.Tensor:
    module = build(name, arguments)
    x = x.clone().requires_grad_()
    y = module(x)
    for _ in range(order):
        if not y.requires_grad:  # the previous derivative is piecewise constant
            return torch.zeros_like(y)
        (y,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    return y.detach()


@settings(max_examples=60, deadline=None)
@given(big=st.floats(40, 1e6))
@pytest.mark.parametrize("name", RELU_LIKE)
def test_relu_like_is_x_on_the_right_and_zero_on_the_left(name, big):
    f = _f(name)
    assert math.isclose(f(big).item(), big, rel_tol=1e-12)
    assert abs(f(-big).item()) <= 1e-12 * big


@settings(max_examples=60, deadline=None)
@given(a=finite, b=finite)
@pytest.mark.parametrize("name", [n for n in ELEMENTWISE if relulab.activation_info(n).monotonic])
def test_monotonic_ones_are_monotonic(name, a, b):
    low, high = _f(name)(torch.tensor([min(a, b), max(a, b)], dtype=torch.float64)).tolist()
    assert low <= high + 1e-15 * (abs(low) + abs(high))


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_declared_monotonicity_is_true(name):
    y = _f(name)(WIDE)
    steps_down = (y[1:] < y[:-1] - 1e-12 * y[:-1].abs()).sum().item()
    claimed = relulab.activation_info(name).monotonic
    assert (steps_down == 0) == claimed, f"monotonic={claimed} but {steps_down} steps down"


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_declared_lower_bound_is_true(name):
    y = _f(name)(torch.cat([WIDE, torch.tensor([-1e12, -1e200], dtype=torch.float64)]))
    # Every bounded activation of the zoo stays above −2 (SELU's −1.758 is the lowest).
    claimed = relulab.activation_info(name).bounded_below
    assert (y.min().item() > -2) == claimed, f"bounded_below={claimed}, min {y.min().item()}"


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_declared_piecewise_linearity_is_true(name):
    x = DENSE[::7]
    x = x[[all(abs(v - k) > 1e-3 for k in kinks(name, {})) for v in x.tolist()]]
    curvature = _derivative(name, x, order=2).abs().max().item()
    claimed = relulab.activation_info(name).piecewise_linear
    assert (curvature < 1e-12) == claimed, f"piecewise_linear={claimed}, |f''| up to {curvature}"


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_declared_smoothness_is_true(name):
    """C¹: the derivative's jump across each candidate kink vanishes (only there can it jump)."""
    candidates = [*kinks(name, {}), 0.0, 1.0]
    h = 1e-7
    jumps = [
        abs(a - b)
        for k in candidates
        for a, b in [_derivative(name, torch.tensor([k - h, k + h], dtype=torch.float64)).tolist()]
    ]
    claimed = relulab.activation_info(name).smooth
    assert (max(jumps) < 1e-4) == claimed, f"smooth={claimed}, derivative jumps {max(jumps)}"


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_declared_flat_region_is_true(name):
    """f' is exactly 0 on an interval (dead units are possible) where the registry says so.
    On [−6, 6] in float64 no smooth tail has underflowed yet (GoLU's gate is 1e-175 at −6)."""
    x = DENSE[(DENSE >= -6) & (DENSE <= 6)]
    zero = (_derivative(name, x) == 0).to(torch.int64)
    longest, run = 0, 0
    for z in zero.tolist():
        run = run + 1 if z else 0
        longest = max(longest, run)
    claimed = relulab.activation_info(name).flat_region
    assert (longest >= 10) == claimed, f"flat_region={claimed}, {longest} zeros in a row"


@pytest.mark.parametrize("name", relulab.list_activations())
def test_declared_trainable_parameters_are_the_default_ones(name):
    arguments = {"num_features": 3} if name == "smartmixed" else {}
    module = relulab.get_activation(name, **arguments)
    trained = tuple(n for n, p in module.named_parameters() if p.requires_grad)
    assert trained == relulab.activation_info(name).trainable


@settings(max_examples=100, deadline=None)
@given(beta=st.floats(0.01, 100), side=st.sampled_from([-1.0, 1.0]))
def test_smelu_is_c1_at_plus_minus_beta(beta, side):
    knot = side * beta
    h = beta * 1e-7
    x = torch.tensor([knot - h, knot, knot + h], dtype=torch.float64)
    values = _f("smelu", beta=beta)(x).tolist()
    slopes = _derivative("smelu", x, beta=beta).tolist()
    assert abs(values[0] - values[2]) <= 4 * h  # continuous (slope ≤ 1 on either side)
    assert abs(slopes[0] - slopes[2]) <= 1e-6  # and so is its derivative: 0 or 1 at both knots
    assert math.isclose(slopes[1], 0.0 if side < 0 else 1.0, abs_tol=1e-12)


@settings(max_examples=100, deadline=None)
@given(x=finite)
def test_identities_between_activations(x):
    def value(spec: str) -> float:
        return relulab.get_activation(spec).double()(torch.tensor([x], dtype=torch.float64)).item()

    def same(a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=4e-16, abs_tol=1e-300)

    # different code paths for the same function: x·σ(βx) and xSiLU's gate vs torch's silu
    assert same(value("swish(beta=1.0)"), value("silu"))
    assert same(value("xsilu"), value("silu"))
    # softplus(x) − softplus(−x) = x
    sp, sp_neg = value("softplus(threshold=None)"), _f("softplus", threshold=None)(-x).item()
    assert math.isclose(sp - sp_neg, x, rel_tol=1e-12, abs_tol=1e-12)
    # relu ≤ smelu ≤ relu + β/4, and relu ≤ softplus ≤ relu + log 2
    assert max(x, 0) <= value("smelu") <= max(x, 0) + 0.5 + 1e-12
    assert max(x, 0) <= sp <= max(x, 0) + math.log(2) + 1e-12


@settings(max_examples=100, deadline=None)
@given(x=finite, alpha=st.floats(0, 0.9))
def test_sau_tends_to_leaky_relu_as_sigma_vanishes(x, alpha):
    sau = relulab.get_activation("sau", alpha=alpha, sigma=1e-9).double()
    with torch.no_grad():
        sau.alpha.fill_(alpha)
        got = sau(torch.tensor([x], dtype=torch.float64)).item()
    # |SAU − LeakyReLU| ≤ (1 − α)·σ·φ(0) everywhere
    assert abs(got - (x if x >= 0 else alpha * x)) <= 1e-9
