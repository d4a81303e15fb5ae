"""Unsupported calls are named by the call and the module that made it, and by the model's
own file and line only when the model's own code made the call."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import relulab
from relulab.errors import UserError
from relulab.geometry import partition

SQUARE = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


class OwnGelu(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x)  # the line the message must point to


def message(layer: nn.Module) -> str:
    with pytest.raises(UserError) as info:
        partition(nn.Sequential(nn.Linear(2, 4), layer, nn.Linear(4, 2)), SQUARE)
    return str(info.value)


def test_a_torch_or_relulab_module_is_named_without_a_file():
    for layer, call in [(nn.GELU(), "torch.gelu"), (relulab.get_activation("gelu"), "erfc")]:
        text = message(layer)
        assert call in text and "in 1 (GELU) is not piecewise linear" in text, text
        assert ".py:" not in text  # neither torch's nor relulab's files, nor the caller's


def test_the_models_own_code_is_named_by_file_and_line():
    line = OwnGelu.forward.__code__.co_firstlineno + 1
    assert f"in 1 (OwnGelu) (test_geometry_affine.py:{line})" in message(OwnGelu())


def test_the_top_level_module_is_called_model():
    with pytest.raises(UserError, match=r"in model \(GELU\)"):
        partition(nn.GELU(), SQUARE)
