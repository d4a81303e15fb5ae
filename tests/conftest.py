"""Shared test cases: which activations, with which arguments, on which inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests import reference_formulas directly

import relulab

torch.set_num_threads(1)

ELEMENTWISE = [n for n in relulab.list_activations() if relulab.activation_info(n).elementwise]

# Non-default arguments worth checking: other slopes, scales, tiny and large σ, α ≠ 0.
NON_DEFAULT = [
    ("leaky_relu", {"negative_slope": 0.2}),
    ("prelu", {"init": 0.1}),
    ("elu", {"alpha": 2.0}),
    ("celu", {"alpha": 0.5}),
    ("softplus", {"beta": 2.0, "threshold": 10.0}),
    ("softplus", {"threshold": None}),
    ("swish", {"beta": 0.5}),
    ("swish", {"beta": 2.0, "trainable": True}),
    ("golu", {"scale": 1.5, "shift": 0.5, "growth": 2.0}),
    ("golu", {"shift": 0.0}),
    ("sau", {"alpha": 0.0}),
    ("sau", {"alpha": 0.15, "sigma": 5e-5}),
    ("sau", {"alpha": 0.3, "sigma": 3.0}),
    ("xatlu", {"alpha": 0.2}),
    ("xgelu", {"alpha": -0.1}),
    ("xsilu", {"alpha": 0.5}),
    ("smelu", {"beta": 0.5}),
    ("shifted_relu", {"shift": -0.5}),
    ("helu", {"alpha": 0.1}),
    ("poly_relu", {"degree": 3, "coefficients": (0.1, 0.5, 0.2, -0.01)}),
]

CASES = [(name, {}) for name in ELEMENTWISE] + NON_DEFAULT


def case_id(case: tuple[str, dict]) -> str:
    name, arguments = case
    return relulab.registry.format_spec(name, arguments)


def build(name: str, arguments: dict, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """The module with its parameters created in float64 (float32 would round α = 0.15)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return relulab.get_activation(name, **arguments).to(dtype)
    finally:
        torch.set_default_dtype(default)


def tails_and_core() -> list[float]:
    """x = 0, tiny, moderate and huge magnitudes up to 1e4, both signs."""
    magnitudes = [1e-300, 1e-12, 1e-6, 1e-3, 0.1, 0.5, 1.0, 1.5, 2.5, 3.0, 4.0, 5.0, 6.5, 8.0]
    magnitudes += [10.0, 15.0, 20.0, 25.0, 30.0, 37.0, 50.0, 100.0, 700.0, 1e3, 1e4]
    core = [i / 8 for i in range(-48, 49)]
    return sorted({0.0, *core, *magnitudes, *(-m for m in magnitudes)})


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state."""
    torch.manual_seed(0)
