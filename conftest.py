"""Doctest namespace: the examples in relulab's docstrings may use torch and nn directly."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace["torch"] = torch
    doctest_namespace["nn"] = torch.nn
