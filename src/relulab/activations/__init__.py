"""relulab.activations: one ``nn.Module`` per activation, each registered by name.

Importing this package fills the registry (see :mod:`relulab.registry`).
"""

from relulab.activations.adaptive import SmartMixed, VeLU
from relulab.activations.base import Activation
from relulab.activations.expanded import ATLU, SAU, XATLU, XGELU, XSiLU
from relulab.activations.exponential import CELU, ELU, SELU, Softplus
from relulab.activations.gated import (
    GELU,
    GELUTanh,
    GoLU,
    Mish,
    QuickGELU,
    Sigmoid,
    SiLU,
    Swish,
    Tanh,
)
from relulab.activations.polynomial import PolyReLU
from relulab.activations.rectifiers import (
    HardMish,
    HardSigmoid,
    HardSwish,
    HeLU,
    Identity,
    LeakyReLU,
    PReLU,
    ReLU,
    ReLU6,
    ShiftedReLU,
    SmeLU,
    SquaredReLU,
)

__all__ = [
    "ATLU",
    "CELU",
    "ELU",
    "GELU",
    "SAU",
    "SELU",
    "XATLU",
    "XGELU",
    "Activation",
    "GELUTanh",
    "GoLU",
    "HardMish",
    "HardSigmoid",
    "HardSwish",
    "HeLU",
    "Identity",
    "LeakyReLU",
    "Mish",
    "PReLU",
    "PolyReLU",
    "QuickGELU",
    "ReLU",
    "ReLU6",
    "ShiftedReLU",
    "SiLU",
    "Sigmoid",
    "SmartMixed",
    "SmeLU",
    "Softplus",
    "SquaredReLU",
    "Swish",
    "Tanh",
    "VeLU",
    "XSiLU",
]
