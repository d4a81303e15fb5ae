"""The fused kernels: equal to the reference formulas (values and hand-derived gradients),
lean in what they save, with an eager fallback; compiled kernels checked in slow tests."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import relulab
from relulab import kernels
from relulab.kernels import engine
from relulab.memory import saved_bytes

import reference_formulas
from conftest import build
from reference_formulas import kinks

FUSED = [info.name for info in relulab.registry.registered() if info.kernel is not None]
ELEMENTWISE = [n for n in relulab.list_activations() if relulab.activation_info(n).elementwise]
# Trainable variants, so that the parameters' gradients are checked too.
WITH_PARAMETERS = [
    ("swish", {"beta": 1.3, "trainable": True}),
    ("golu", {"scale": 1.2, "shift": 0.7, "growth": 1.5, "trainable": True}),
    ("sau", {}),
    ("xatlu", {"alpha": 0.2}),
    ("xgelu", {"alpha": -0.1}),
    ("xsilu", {"alpha": 0.3}),
    ("prelu", {"num_parameters": 3, "init": 0.1}),
    ("poly_relu", {"degree": 3, "coefficients": (0.1, 0.5, 0.2, -0.01)}),
]


def test_every_elementwise_activation_but_identity_has_a_kernel():
    assert set(FUSED) == set(ELEMENTWISE) - {"identity"}


def _pair(name: str, arguments: dict, dtype=torch.float64):
    fused = build(name, arguments, dtype)
    reference = build(name, arguments, dtype)
    reference.load_state_dict(fused.state_dict())
    reference.fused = False
    return fused, reference


def _points(name: str, arguments: dict, dtype: torch.dtype) -> torch.Tensor:
    top = torch.finfo(dtype).max
    grid = [-1e4, -100.0, -30.0, -7.5, -2.9, -1.1, -0.4, 0.3, 0.9, 2.2, 3.7, 8.0, 40.0, 100.0, 1e4]
    grid = [v for v in grid if all(abs(v - k) > 1e-2 for k in kinks(name, arguments))]
    return torch.tensor([*grid, top / 2, -top / 2], dtype=dtype)


@pytest.mark.parametrize(
    "case", [(n, {}) for n in FUSED] + WITH_PARAMETERS, ids=lambda c: c[0] + ("*" if c[1] else "")
)
def test_fused_backward_equals_autograd_of_the_reference_in_float64(case):
    name, arguments = case
    fused, reference = _pair(name, arguments)
    x = _points(name, arguments, torch.float64)
    if name == "prelu":  # three channels: x of shape (N, 3), moderate values only
        x = x[x.abs() <= 1e4][:12].reshape(-1, 3)
    upstream = torch.linspace(-2, 3, x.numel(), dtype=torch.float64).reshape(x.shape)
    results = []
    parameters = [p for p in fused.parameters() if p.requires_grad]
    for module in (fused, reference):
        leaf = x.clone().requires_grad_()
        y = module(leaf)
        results.append((y.detach(), torch.autograd.grad(y, [leaf], upstream)))
    (y_fused, g_fused), (y_reference, g_reference) = results
    torch.testing.assert_close(y_fused, y_reference, rtol=4e-16, atol=1e-300)  # one ulp at most
    # Autograd of the reference rounds at the scale of the terms it adds (see test_values).
    scale = (y_reference.abs() + (y_reference / x).nan_to_num(0.0).abs()) * upstream.abs()
    got, want = g_fused[0], g_reference[0].clone()
    # At |x| near the maximum it multiplies upstream·x = inf by 0 and gives NaN, where the
    # fused backward, forming f'(x) before the upstream factor, can do better: there the
    # true gradient is upstream·f'(x), f' from mpmath.
    unknown = want.isnan()
    want[unknown] = torch.tensor(
        [
            g * reference_formulas.reference(name, arguments, v, 1)
            for v, g in zip(x[unknown].tolist(), upstream[unknown].tolist())
        ],
        dtype=torch.float64,
    )
    scale[unknown] = 0.0
    close = (got - want).abs() <= 1e-9 * want.abs() + 1e-15 * scale + 1e-300
    close |= got == want  # equal infinities
    assert close.all(), (x[~close], got[~close], want[~close])
    moderate = x.abs() <= 1e4  # parameter gradients are sums: at ±max they overflow, truly
    if parameters:
        results = []
        for module in (fused, reference):
            y = module(x[moderate] if name != "prelu" else x)
            results.append(
                torch.autograd.grad(
                    y,
                    [p for p in module.parameters() if p.requires_grad],
                    upstream[moderate] if name != "prelu" else upstream,
                )
            )
        for got, want in zip(*results):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", FUSED)
def test_fused_matches_the_reference_in_low_precision(name, dtype):
    fused, reference = _pair(name, {}, dtype)
    x = _points(name, {}, torch.float32).clamp(-60000, 60000).to(dtype)
    upstream = torch.ones_like(x)
    outputs = []
    for module in (fused, reference):
        leaf = x.clone().requires_grad_()
        y = module(leaf)
        y.backward(upstream)
        outputs.append((y.detach(), leaf.grad))
    (y_fused, g_fused), (y_reference, g_reference) = outputs
    torch.testing.assert_close(y_fused, y_reference)  # the dtype's own tolerance
    # Both compute in float32 and round once; their derivative formulas differ in rounding.
    tolerance = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(g_fused.float(), g_reference.float(), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("name", FUSED)
def test_inference_runs_the_forward_alone(name):
    """Without gradients there is no Function node and no mask; the values are the same."""
    fused, reference = _pair(name, {}, torch.float32)
    x = torch.randn(4, 8, 3)
    with torch.no_grad():
        y = fused(x)
    assert y.grad_fn is None
    torch.testing.assert_close(y, reference(x).detach())
    if any(p.requires_grad for p in fused.parameters()):  # a trainable parameter still learns
        fused(x).sum().backward()
        assert all(p.grad is not None for p in fused.parameters() if p.requires_grad)


def test_per_channel_prelu_without_a_channel_axis_is_torchs_error():
    fused = relulab.get_activation("prelu(num_parameters=3)")
    reference = relulab.get_activation("prelu(num_parameters=3)", fused=False)
    errors = []
    for module in (fused, reference):
        with pytest.raises(RuntimeError) as caught:
            module(torch.randn(3, requires_grad=True))
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    x = torch.randn(2, 3, 4, requires_grad=True)  # with a channel axis the kernel serves
    assert "Fused" in type(fused(x).grad_fn).__name__


def test_elu_with_negative_alpha_keeps_x():
    """With α < 0 both branches are positive, so y cannot tell them apart: the gradient must
    come from x (the reference), and match the float64 formula."""
    x = torch.tensor([-3.0, -0.5, 0.25, 2.0], dtype=torch.float64, requires_grad=True)
    y = relulab.get_activation("elu(alpha=-0.5)")(x)
    assert "Fused" not in type(y.grad_fn).__name__
    (grad,) = torch.autograd.grad(y.sum(), x)
    expected = [-0.5 * math.exp(-3.0), -0.5 * math.exp(-0.5), 1.0, 1.0]
    torch.testing.assert_close(grad, torch.tensor(expected, dtype=torch.float64))


def _saved_bytes(module: torch.nn.Module, x: torch.Tensor) -> int:
    # The counting itself is checked against hand-computed sizes in tests/test_memory.py.
    x.requires_grad_()
    return saved_bytes(lambda: module(x), resident=module.parameters())


@pytest.mark.parametrize("name", FUSED)
def test_saved_bytes_are_at_most_the_input_and_a_quarter_for_the_relu_family(name):
    x = torch.randn(64, 256)
    module = relulab.get_activation(name)
    saved = _saved_bytes(module, x)
    input_bytes = x.numel() * x.element_size()
    assert saved <= input_bytes
    if relulab.activation_info(name).kernel.saves == "mask":
        assert saved <= input_bytes // 4
    reference = relulab.get_activation(name, fused=False)
    assert saved <= _saved_bytes(reference, torch.randn(64, 256))  # never more than before


def test_identity_saves_nothing():
    assert _saved_bytes(relulab.Identity(), torch.randn(8, 8)) == 0


def test_fused_false_runs_the_reference_under_autograd():
    x = torch.randn(5, requires_grad=True)
    assert (
        relulab.get_activation("golu", fused=False)(x).grad_fn.name() != "FusedActivationBackward"
    )
    assert relulab.get_activation("golu")(x).grad_fn.name() == "FusedActivationBackward"


def test_a_compiler_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken(function):
        def call(*args):
            raise RuntimeError("no C++ compiler here")

        return call

    monkeypatch.setattr(engine, "_compiled", broken)
    monkeypatch.setattr(engine, "failures", {})
    x = torch.randn(engine.COMPILE_MIN_NUMEL, requires_grad=True)
    module = relulab.GoLU()
    with (
        engine.compilation(True),
        pytest.warns(RuntimeWarning, match="could not compile golu"),
    ):
        y = module(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process, not per kernel or call
        module(x).sum().backward()
        relulab.Mish()(x)
    torch.testing.assert_close(y, relulab.get_activation("golu", fused=False)(x))
    assert {"golu", "golu_backward", "mish"} <= set(engine.failures)
    assert not kernels.compiled_kernels_available()


def test_small_tensors_and_disabled_compilation_never_compile(monkeypatch):
    calls = []
    monkeypatch.setattr(engine, "_compiled", lambda function: calls.append(function) or function)
    relulab.GoLU()(torch.randn(100))
    with engine.compilation(False):
        relulab.GoLU()(torch.randn(engine.COMPILE_MIN_NUMEL))
    assert calls == []


@pytest.mark.slow
@pytest.mark.parametrize("name", FUSED)
def test_compiled_kernels_match_the_eager_kernels(name):
    x = (torch.randn(engine.COMPILE_MIN_NUMEL) * 6).requires_grad_()
    upstream = torch.randn_like(x)
    results = []
    for compiled in (True, False):
        module = relulab.get_activation(name, **({"num_parameters": 1} if name == "prelu" else {}))
        leaf = x.detach().clone().requires_grad_()
        with engine.compilation(compiled):
            y = module(leaf)
            y.backward(upstream)
        results.append((y.detach(), leaf.grad))
    assert not engine.failures, engine.failures
    torch.testing.assert_close(results[0][0], results[1][0], rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=2e-5, atol=1e-5)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device: the GPU path (torch.compile, Triton) is checked on GPU machines only",
)
@pytest.mark.parametrize("name", FUSED)
def test_cuda_kernels_match_the_cpu_reference(name):
    x = (torch.randn(engine.COMPILE_MIN_NUMEL, dtype=torch.float64) * 6).float()
    upstream = torch.randn_like(x)
    results = []
    for device in ("cuda", "cpu"):
        module = relulab.get_activation(name, fused=device == "cuda").to(device)
        leaf = x.to(device).requires_grad_()
        with engine.compilation(True):
            y = module(leaf)
            y.backward(upstream.to(device))
        results.append((y.detach().cpu(), leaf.grad.cpu()))
    assert not engine.failures, engine.failures
    torch.testing.assert_close(results[0][0], results[1][0], rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=2e-5, atol=1e-5)
