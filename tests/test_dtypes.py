"""float32, float16 and bfloat16: finite values and gradients from −1e4 to 1e4 and at the
dtype's extremes, close to the mpmath value within the dtype's rounding; NaN propagates."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import ELEMENTWISE, build
from reference_formulas import kinks, reference

LOW_PRECISION = [torch.float32, torch.float16, torch.bfloat16]
# float64 joins for its own extremes (±1.8e308); its accuracy is tested in test_values.
DTYPES = [*LOW_PRECISION, torch.float64]

# Every point is exact in all three dtypes, so the mpmath references are shared.
_MAGNITUDES = [2.0**-14, 2.0**-7, 7.0, 8.0, 10.0, 12.0, 16.0, 20.0, 24.0, 32.0, 48.0, 64.0]
_MAGNITUDES += [100.0, 512.0, 1024.0, 4096.0, 9984.0]
GRID = sorted({0.0, *(k / 8 for k in range(-48, 49)), *_MAGNITUDES, *(-m for m in _MAGNITUDES)})
# Rounding in float32 arithmetic before the final rounding (transcendental kernels are a few
# ulps); for 16-bit dtypes the maths runs in float32 and only the last rounding counts.
SLACK = {torch.float64: 8.0, torch.float32: 8.0, torch.float16: 2.0, torch.bfloat16: 2.0}


def _reference_arguments(name: str, arguments: dict, module: torch.nn.Module) -> dict:
    """The arguments as the module holds them in this dtype (trainable values get rounded)."""
    held = dict(arguments)
    for key, parameter in module.named_parameters():
        values = parameter.detach().double().flatten().tolist()
        if key == "weight":  # prelu
            held["init"] = values[0]
        elif key == "coefficients":  # poly_relu
            held["coefficients"] = tuple(values)
        else:
            held[key] = values[0]
    return held


def _points(dtype: torch.dtype) -> list[float]:
    top = torch.finfo(dtype).max
    return [*GRID, top, -top]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_values_and_gradients_finite_and_close(name, dtype):
    module = build(name, {}, dtype)
    arguments = _reference_arguments(name, {}, module)
    finfo = torch.finfo(dtype)
    points = _points(dtype)
    x = torch.tensor(points, dtype=dtype, requires_grad=True)
    y = module(x)
    y.sum().backward()
    assert y.dtype == dtype and x.grad.dtype == dtype
    slack = SLACK[dtype] * finfo.eps
    off_values, off_gradients = [], []
    for xi, yi, gi in zip(points, y.tolist(), x.grad.tolist()):
        value = reference(name, arguments, xi)
        if abs(value) <= finfo.max:  # where the true value overflows the dtype, inf is right
            slope = reference(name, arguments, xi, 1)
            tolerance = slack * (abs(value) + abs(xi * slope)) + finfo.tiny
            if not (math.isfinite(yi) and abs(yi - value) <= tolerance):
                off_values.append((xi, yi, value))
        if name == "helu" or any(abs(xi - k) < 1e-2 for k in kinks(name, arguments)):
            continue
        slope = reference(name, arguments, xi, 1)
        if abs(slope) <= finfo.max:
            curvature = reference(name, arguments, xi, 2)
            scale = abs(slope) + abs(xi * curvature) + abs(value) + (abs(value / xi) if xi else 0)
            if not (math.isfinite(gi) and abs(gi - slope) <= slack * scale + finfo.tiny):
                off_gradients.append((xi, gi, slope))
    assert not off_values, f"values off (x, got, want): {off_values[:4]}"
    assert not off_gradients, f"gradients off (x, got, want): {off_gradients[:4]}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_nan_propagates(name, dtype):
    x = torch.tensor([float("nan"), 1.0, float("nan")], dtype=dtype)
    with torch.no_grad():
        y = build(name, {}, dtype)(x)
    assert y[0].isnan() and y[2].isnan() and not y[1].isnan()
