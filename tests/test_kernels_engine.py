"""The fused engine behaves as torch does where torch has an opinion: an in-place change of a
parameter before backward raises, a user's error is the user's (not a compiler failure),
an empty batch is an empty result, and a torch without a private attribute the engine reads
still gets correct values (from the reference formulas), with one warning."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import relulab
from relulab.kernels import engine

# (spec, a trainable parameter): one per kind of kernel that takes tensor parameters.
TRAINABLE = [
    ("prelu(num_parameters=3)", "weight"),
    ("prelu", "weight"),
    ("golu(trainable=True)", "shift"),
    ("xsilu(alpha=0.3)", "alpha"),
    ("swish(trainable=True)", "beta"),
    ("sau", "alpha"),
    ("poly_relu(degree=3)", "coefficients"),
]


@pytest.mark.parametrize("spec, parameter", TRAINABLE, ids=[s for s, _ in TRAINABLE])
def test_changing_a_parameter_in_place_before_backward_raises_as_in_torch(spec, parameter):
    x = torch.randn(4, 3, 5, requires_grad=True)
    theirs = nn.PReLU(3)  # torch's version counter catches it...
    y = theirs(x)
    with torch.no_grad():
        theirs.weight.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    module = relulab.get_activation(spec)  # ...and so must the fused Function's
    y = module(x)
    assert "Fused" in type(y.grad_fn).__name__
    with torch.no_grad():
        getattr(module, parameter).add_(0.5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_an_unchanged_parameter_gets_torchs_gradient():
    """The other side of the same bookkeeping: saved parameters come back in their places."""
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    upstream = torch.randn_like(x)
    ours = relulab.get_activation("prelu(num_parameters=3, init=0.1)").double()
    theirs = nn.PReLU(3, init=0.1).double()
    grads = []
    for module in (ours, theirs):
        leaf = x.clone().requires_grad_()
        module(leaf).backward(upstream)
        grads.append((leaf.grad, module.weight.grad))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14)


def _wrong_channels() -> torch.Tensor:
    """4 channels for a 3-channel PReLU, on enough elements to be compiled."""
    return torch.randn(engine.COMPILE_MIN_NUMEL // (4 * 16), 4, 16)


def _torchs_error(x: torch.Tensor) -> str:
    with pytest.raises(RuntimeError) as caught:
        nn.PReLU(3)(x)
    return str(caught.value)


@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
def test_a_users_error_is_raised_and_is_no_compiler_failure(monkeypatch, grad):
    """A compiler that fails on every call: a call that fails eagerly too is the user's
    error, raised as such, and compilation stays on; a call that runs eagerly is a
    compiler failure (warned, recorded)."""

    def compiler(function):
        def call(*args):
            raise RuntimeError("the compiler tripped over this call")

        return call

    monkeypatch.setattr(engine, "_compiled", compiler)
    monkeypatch.setattr(engine, "failures", {})
    module = relulab.get_activation("prelu(num_parameters=3)")
    x = _wrong_channels().requires_grad_(grad)
    with engine.compilation(True), warnings.catch_warnings():
        warnings.simplefilter("error")  # no "could not compile" warning either
        with pytest.raises(RuntimeError) as caught:
            module(x)
    assert str(caught.value) == _torchs_error(x)
    assert engine.failures == {}
    assert engine.compiled_kernels_available()
    right = torch.randn(x.shape[0], 3, 32, requires_grad=grad)  # as many elements, or more
    with engine.compilation(True), pytest.warns(RuntimeWarning, match="could not compile prelu"):
        y = module(right)
    torch.testing.assert_close(y, nn.PReLU(3)(right))
    assert "prelu" in engine.failures


def test_a_wrong_channel_count_leaves_real_compilation_on(monkeypatch):
    monkeypatch.setattr(engine, "failures", {})
    x = _wrong_channels()
    with engine.compilation(True), pytest.raises(RuntimeError) as caught:
        relulab.get_activation("prelu(num_parameters=3)")(x)
    assert str(caught.value) == _torchs_error(x)
    assert engine.failures == {}
    assert engine.compiled_kernels_available()


@pytest.mark.slow
def test_after_a_users_error_the_kernel_still_compiles(monkeypatch):
    monkeypatch.setattr(engine, "failures", {})
    module = relulab.get_activation("prelu(num_parameters=3, init=0.1)")
    x = torch.randn(engine.COMPILE_MIN_NUMEL // 32, 3, 32)
    upstream = torch.randn_like(x)
    with engine.compilation(True):
        with pytest.raises(RuntimeError):
            module(_wrong_channels())
        leaf = x.clone().requires_grad_()
        y = module(leaf)
        y.backward(upstream)
    assert engine.failures == {}
    theirs = nn.PReLU(3, init=0.1)
    want = x.clone().requires_grad_()
    theirs(want).backward(upstream)
    torch.testing.assert_close(y, theirs(x))
    torch.testing.assert_close(leaf.grad, want.grad)
    torch.testing.assert_close(module.weight.grad, theirs.weight.grad, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 5), (0, 3, 2, 2)], ids=str)
def test_per_channel_prelu_on_an_empty_batch_is_empty_as_in_torch(shape):
    ours = relulab.get_activation("prelu(num_parameters=3, init=0.1)")
    theirs = nn.PReLU(3, init=0.1)
    results = []
    for module in (ours, theirs):
        x = torch.randn(shape, requires_grad=True)
        y = module(x)
        y.sum().backward()
        with torch.no_grad():
            inference = module(x)
        results.append((y, x.grad, module.weight.grad, inference))
    for got, want in zip(*results):
        assert got.shape == want.shape
    assert torch.equal(results[0][2], torch.zeros(3))  # no element, no gradient


# The private torch attributes the engine reads, with the object that holds each.
PRIVATE = [
    (torch.autograd.forward_ad, "_current_level"),
    (torch._C._functorch, "is_functorch_wrapped_tensor"),
]


@pytest.mark.parametrize("owner, name", PRIVATE, ids=[n for _, n in PRIVATE])
def test_a_torch_without_a_private_attribute_gets_the_reference_and_one_warning(
    monkeypatch, owner, name
):
    monkeypatch.delattr(owner, name)
    monkeypatch.setattr(engine, "_missing_private_api", None, raising=False)
    x = torch.linspace(-5, 5, 11, dtype=torch.float64, requires_grad=True)
    with pytest.warns(RuntimeWarning, match=name):
        y = relulab.GoLU()(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process, not per call or activation
        relu = relulab.ReLU()(x)
        y.sum().backward()
    assert "Fused" not in type(y.grad_fn).__name__  # the reference formula served it
    # GoLU(x) = x·exp(−exp(−x)), f' = exp(−exp(−x))·(1 + x·exp(−x)), in float64.
    values = [v * math.exp(-math.exp(-v)) for v in x.tolist()]
    slopes = [math.exp(-math.exp(-v)) * (1 + v * math.exp(-v)) for v in x.tolist()]
    torch.testing.assert_close(y.tolist(), values, rtol=1e-14, atol=1e-300)
    torch.testing.assert_close(x.grad.tolist(), slopes, rtol=1e-12, atol=1e-300)
    assert torch.equal(relu, torch.relu(x))
