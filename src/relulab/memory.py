"""What autograd keeps for backward, measured with ``saved_tensors_hooks``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


def saved_bytes(run: Callable[[], Any], resident: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the tensors autograd saves while ``run()`` builds its graph.

    Each saved tensor is counted once, by its own size, however many nodes save it. Tensors
    that live in the storage of a ``resident`` tensor (weights, a batch that exists anyway)
    are not counted. The graph ``run`` returns is dropped before this returns.
    """
    skip = {t.untyped_storage().data_ptr() for t in resident}
    seen: set[tuple[int, int]] = set()
    kept: list[torch.Tensor] = []  # alive until counted, so that no address is reused meanwhile

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.untyped_storage().data_ptr() not in skip:
            seen.add((tensor.data_ptr(), tensor.numel() * tensor.element_size()))
            kept.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = run()
    del output
    kept.clear()
    return sum(size for _, size in seen)
