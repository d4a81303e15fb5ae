"""relulab: ReLU and its relatives for PyTorch.

An exact activation zoo with a name registry, model surgery, and a command line.

    >>> import relulab
    >>> relulab.get_activation("golu")
    GoLU(scale=1.0, shift=1.0, growth=1.0, trainable=False)
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from relulab import activations, functional
from relulab.registry import (
    ActivationInfo,
    activation_info,
    get_activation,
    list_activations,
)
from relulab.surgery import replace_activations

try:
    __version__ = version("relulab")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ActivationInfo",
    "__version__",
    "activation_info",
    "functional",
    "get_activation",
    "list_activations",
    "replace_activations",
    *activations.__all__,
]


def __getattr__(name: str) -> Any:
    """``relulab.GoLU`` and friends: the module classes of :mod:`relulab.activations`."""
    if name in activations.__all__:
        return getattr(activations, name)
    raise AttributeError(f"module 'relulab' has no attribute {name!r}")
