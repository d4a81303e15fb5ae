"""Every elementwise activation against its mpmath reference, in float64, to 1e-12."""

from __future__ import annotations

import pytest
import torch

from conftest import CASES, ELEMENTWISE, build, case_id, tails_and_core
from reference_formulas import REFERENCES, kinks, reference

GRID = tails_and_core()
# Results below the smallest normal float64 carry fewer digits (subnormals) or underflow.
TINY = 2.3e-308


def test_every_elementwise_activation_has_a_reference():
    assert set(ELEMENTWISE) <= set(REFERENCES)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_value_matches_mpmath(case):
    name, arguments = case
    x = torch.tensor(GRID, dtype=torch.float64)
    with torch.no_grad():
        got = build(name, arguments)(x).tolist()
    bad = [
        (xi, gi, ri)
        for xi, gi, ri in zip(GRID, got, (reference(name, arguments, xi) for xi in GRID))
        if not abs(gi - ri) <= 1e-12 * abs(ri) + TINY
    ]
    assert not bad, f"{len(bad)} of {len(GRID)} points off, e.g. (x, got, want) = {bad[:3]}"


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
@pytest.mark.parametrize("case", [c for c in CASES if c[0] != "helu"], ids=case_id)
def test_derivative_matches_mpmath(case, fused):
    """Autograd's derivative, to 1e-9 relative or to rounding at the scale of f's terms.

    A backward pass rounds at the scale of the terms it adds: 1 − σ(x) for sigmoid, g + x·g'
    for a gate g. Where the derivative is far smaller than those terms (σ'(30) ≈ 9e-14,
    atlu'(−1e4) ≈ 2e-13) that rounding, ~1e-16·(|f| + |f/x|), is the honest bound.
    """
    name, arguments = case
    points = [x for x in GRID if all(abs(x - k) > 1e-6 for k in kinks(name, arguments))]
    x = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    module = build(name, arguments)
    module.fused = fused  # the hand-derived backward, or autograd through the formula
    module(x).sum().backward()
    bad = []
    for xi, gi in zip(points, x.grad.tolist()):
        want, value = reference(name, arguments, xi, 1), reference(name, arguments, xi)
        term_scale = abs(value) + (abs(value / xi) if xi else 0.0)
        if not abs(gi - want) <= 1e-9 * abs(want) + 1e-15 * term_scale + TINY:
            bad.append((xi, gi, want))
    assert not bad, f"{len(bad)} of {len(points)} points off, e.g. (x, got, want) = {bad[:3]}"
