"""Independent references: every elementwise activation as an mpmath formula.

Written from the papers' (or torch's) textbook definitions, deliberately not from relulab's
stable rewrites: 1 + erf instead of erfc, 1 + tanh instead of 2σ(2u), arctan(x) + π/2 instead of
atan2. At 400 significant digits the textbook forms' cancellations still leave far more than
float64's 16 digits wherever the result is a normal float64 number.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import mpmath as mp

DIGITS = 400

SELU_ALPHA = mp.mpf("1.6732632423543772848170429916717")
SELU_SCALE = mp.mpf("1.0507009873554804934193349852946")


def _sigmoid(x):
    return 1 / (1 + mp.exp(-x))


def _relu(x):
    return x if x > 0 else mp.mpf(0)


def _clip(x, low, high):
    return min(max(x, mp.mpf(low)), mp.mpf(high))


def _softplus(x, beta=1.0, threshold=20.0):
    beta = mp.mpf(beta)
    if threshold is not None and beta * x > threshold:
        return x
    return mp.log(1 + mp.exp(beta * x)) / beta


def _smelu(x, beta=2.0):
    beta = mp.mpf(beta)
    if x <= -beta:
        return mp.mpf(0)
    if x >= beta:
        return x
    return (x + beta) ** 2 / (4 * beta)


def _sau(x, alpha=0.15, sigma=1.0):
    # The closed erf form of shared/reference/activations.md, term by term.
    alpha, sigma = mp.mpf(alpha), mp.mpf(sigma)
    return (
        (1 + alpha) / 2 * x
        + (1 - alpha) / 2 * x * mp.erf(x / (sigma * mp.sqrt(2)))
        + (1 - alpha) * sigma / mp.sqrt(2 * mp.pi) * mp.exp(-(x**2) / (2 * sigma**2))
    )


def _golu(x, scale=1.0, shift=1.0, growth=1.0, trainable=False):
    inner = mp.mpf(shift) * mp.exp(-mp.mpf(growth) * x)
    if inner > 1e5:
        # exp(−1e5) < 1e−43000: far below float64's range for any |x| < 1e300, and mpmath
        # takes minutes to evaluate exp(−exp(1e4)) at this precision.
        return mp.mpf(0)
    return mp.mpf(scale) * x * mp.exp(-inner)


def _poly(x, coefficients):
    return sum(mp.mpf(c) * x**k for k, c in enumerate(coefficients))


# AutoReP's closed-form DaPa coefficients for N(0, 1): w0 = w2 = 1/(2√(2π)), w1 = 1/2.
_DAPA_STANDARD = (1 / (2 * mp.sqrt(2 * mp.pi)), mp.mpf(1) / 2, 1 / (2 * mp.sqrt(2 * mp.pi)))

REFERENCES: dict[str, Callable] = {
    "identity": lambda x: x,
    "relu": _relu,
    "relu6": lambda x: _clip(x, 0, 6),
    "leaky_relu": lambda x, negative_slope=0.01: x if x >= 0 else mp.mpf(negative_slope) * x,
    "prelu": lambda x, num_parameters=1, init=0.25: x if x >= 0 else mp.mpf(init) * x,
    "elu": lambda x, alpha=1.0: x if x > 0 else mp.mpf(alpha) * (mp.exp(x) - 1),
    "selu": lambda x: SELU_SCALE * (x if x > 0 else SELU_ALPHA * (mp.exp(x) - 1)),
    "celu": lambda x, alpha=1.0: (
        max(mp.mpf(0), x) + min(mp.mpf(0), alpha * (mp.exp(x / alpha) - 1))
    ),
    "gelu": lambda x: x / 2 * (1 + mp.erf(x / mp.sqrt(2))),
    "gelu_tanh": lambda x: (
        x / 2 * (1 + mp.tanh(mp.sqrt(2 / mp.pi) * (x + mp.mpf(0.044715) * x**3)))
    ),
    "quick_gelu": lambda x: x * _sigmoid(mp.mpf(1.702) * x),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x, beta=1.0, trainable=False: x * _sigmoid(mp.mpf(beta) * x),
    "mish": lambda x: x * mp.tanh(mp.log(1 + mp.exp(x))),
    "softplus": _softplus,
    "hard_sigmoid": lambda x: _clip(x + 3, 0, 6) / 6,
    "hard_swish": lambda x: x * _clip(x + 3, 0, 6) / 6,
    "hard_mish": lambda x: x / 2 * _clip(x + 2, 0, 2),
    "squared_relu": lambda x: _relu(x) ** 2,
    "shifted_relu": lambda x, shift=1.0: _relu(x - shift),
    "smelu": _smelu,
    "golu": _golu,
    "sau": _sau,
    "xatlu": lambda x, alpha=0.0: x * ((1 + 2 * alpha) * (mp.atan(x) + mp.pi / 2) / mp.pi - alpha),
    "atlu": lambda x: x * (mp.atan(x) + mp.pi / 2) / mp.pi,
    # The authors' code form: erf(x/√2)·(0.5 + α) + 0.5.
    "xgelu": lambda x, alpha=0.0: (
        x * (mp.erf(x / mp.sqrt(2)) * (mp.mpf(0.5) + alpha) + mp.mpf(0.5))
    ),
    "xsilu": lambda x, alpha=0.0: x * (_sigmoid(x) * (1 + 2 * alpha) - alpha),
    "helu": lambda x, alpha=0.05: _relu(x),
    "sigmoid": _sigmoid,
    "tanh": mp.tanh,
    "poly_relu": lambda x, degree=2, coefficients=None: _poly(
        x, _DAPA_STANDARD if coefficients is None else coefficients
    ),
}

# Points where a function or its first derivative is not smooth, by activation.
KINKS: dict[str, Callable[..., tuple[float, ...]]] = {
    "relu": lambda: (0.0,),
    "relu6": lambda: (0.0, 6.0),
    "leaky_relu": lambda negative_slope=0.01: (0.0,),
    "prelu": lambda num_parameters=1, init=0.25: (0.0,),
    "elu": lambda alpha=1.0: (0.0,),
    "selu": lambda: (0.0,),
    "celu": lambda alpha=1.0: (0.0,),
    "softplus": lambda beta=1.0, threshold=20.0: () if threshold is None else (threshold / beta,),
    "hard_sigmoid": lambda: (-3.0, 3.0),
    "hard_swish": lambda: (-3.0, 3.0),
    "hard_mish": lambda: (-2.0, 0.0),
    "squared_relu": lambda: (0.0,),
    "shifted_relu": lambda shift=1.0: (shift,),
    "smelu": lambda beta=2.0: (-beta, beta),
    # HeLU's backward (its "derivative") steps at −α, its forward at 0.
    "helu": lambda alpha=0.05: (0.0, -alpha),
}


def kinks(name: str, arguments: dict) -> tuple[float, ...]:
    return KINKS[name](**arguments) if name in KINKS else ()


@functools.cache
def _evaluate(name: str, frozen_arguments: tuple, x: float, derivative: int) -> float:
    formula = REFERENCES[name]
    arguments = dict(frozen_arguments)
    with mp.workdps(DIGITS):
        if derivative:
            value = mp.diff(lambda t: formula(t, **arguments), mp.mpf(x), derivative)
        else:
            value = formula(mp.mpf(x), **arguments)
        # Rounding to float64 here, not via an intermediate, keeps one rounding.
        return float(value) if abs(value) < mp.mpf(2) ** 1024 else math.copysign(math.inf, value)


def reference(name: str, arguments: dict, x: float, derivative: int = 0) -> float:
    """f(x) (or its ``derivative``-th derivative) rounded once to float64."""
    frozen = tuple(
        sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in arguments.items())
    )
    return _evaluate(name, frozen, float(x), derivative)
