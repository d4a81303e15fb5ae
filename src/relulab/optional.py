"""Optional dependencies: imported where needed, with a one-line error naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, *, extra: str, purpose: str, package: str | None = None) -> ModuleType:
    """``import module``, or MissingDependencyError "<purpose> needs <package>: pip install ..."."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{purpose} needs {package or module.split('.')[0]}: pip install 'relulab[{extra}]'"
        ) from None
