"""relulab.functional: every activation of the zoo as a pure function of a tensor.

The modules in :mod:`relulab.activations` call these; the maths exists once.
"""

from relulab.functional.adaptive import (
    SMARTMIXED_CANDIDATES,
    gumbel_one_hot,
    smartmixed,
    smartmixed_select,
    velu,
    velu_w2_penalty,
)
from relulab.functional.expanded import arctan_gate, atlu, xatlu, xgelu, xsilu
from relulab.functional.exponential import SELU_ALPHA, SELU_SCALE, celu, elu, selu, softplus
from relulab.functional.gated import (
    gelu,
    gelu_tanh,
    golu,
    mish,
    quick_gelu,
    sigmoid,
    silu,
    swish,
    tanh,
)
from relulab.functional.polynomial import dapa_coefficients, poly_relu
from relulab.functional.rectifiers import (
    hard_mish,
    hard_sigmoid,
    hard_swish,
    helu,
    identity,
    leaky_relu,
    prelu,
    relu,
    relu6,
    shifted_relu,
    smelu,
    squared_relu,
)
from relulab.functional.smoothed import sau

__all__ = [
    "SELU_ALPHA",
    "SELU_SCALE",
    "SMARTMIXED_CANDIDATES",
    "arctan_gate",
    "atlu",
    "celu",
    "dapa_coefficients",
    "elu",
    "gelu",
    "gelu_tanh",
    "golu",
    "gumbel_one_hot",
    "hard_mish",
    "hard_sigmoid",
    "hard_swish",
    "helu",
    "identity",
    "leaky_relu",
    "mish",
    "poly_relu",
    "prelu",
    "quick_gelu",
    "relu",
    "relu6",
    "sau",
    "selu",
    "shifted_relu",
    "sigmoid",
    "silu",
    "smartmixed",
    "smartmixed_select",
    "smelu",
    "softplus",
    "squared_relu",
    "swish",
    "tanh",
    "velu",
    "velu_w2_penalty",
    "xatlu",
    "xgelu",
    "xsilu",
]
