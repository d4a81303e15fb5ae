"""relulab.kernels: fused, memory-lean forward and backward for every elementwise activation.

The activation modules use these by default; see :mod:`relulab.kernels.engine` for how a
call is served and :mod:`relulab.kernels.definitions` for what each kernel computes.
"""

from relulab.kernels.definitions import KernelDef
from relulab.kernels.engine import (
    COMPILE_MIN_NUMEL,
    FusedActivation,
    compilation,
    compiled_kernels_available,
    fused,
)

__all__ = [
    "COMPILE_MIN_NUMEL",
    "FusedActivation",
    "KernelDef",
    "compilation",
    "compiled_kernels_available",
    "fused",
]
