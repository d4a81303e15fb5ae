"""relulab.sites finds functional calls by reading source: every spelling of a callee, with
its arguments in registry terms and its file and line; what is not a call site is not one.

References: the line numbers come from inspect on this file, the specs from the registry's
documented names; nothing is compared with the finder's own output.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.functional import relu as plain_relu

import relulab
from relulab.sites import RunTimeValue, call_sites, find_call_sites


def _line(function, code: str) -> int:
    """The file's line number of the one line of ``function`` that ends with ``code``."""
    lines, first = inspect.getsourcelines(function)
    (index,) = [i for i, line in enumerate(lines) if line.rstrip().endswith(f" {code}")]
    return first + index


class Spellings(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()  # a module called as self.relu(x): a module site, not a call

    def forward(self, x):
        import torch.nn.functional as local_f

        a = F.relu(x)
        b = torch.relu(x)
        c = torch.nn.functional.relu(x)
        d = nn.functional.relu(x)
        e = plain_relu(x)
        f = local_f.relu(x)
        g = x.relu()
        x.relu_()
        h = F.relu_(x)
        i = self.relu(x)
        return a + b + c + d + e + f + g + h + i


def test_every_spelling_of_a_call_is_found_at_its_line():
    sites = call_sites(Spellings())
    forward = Spellings.forward
    found = [(s.location.code, s.location.lineno, s.activation, s.inplace) for s in sites]
    expected = [
        ("F.relu(x)", False),
        ("torch.relu(x)", False),
        ("torch.nn.functional.relu(x)", False),
        ("nn.functional.relu(x)", False),
        ("plain_relu(x)", False),
        ("local_f.relu(x)", False),
        ("x.relu()", False),
        ("x.relu_()", True),
        ("F.relu_(x)", True),
    ]
    assert found == [(code, _line(forward, code), "relu", inplace) for code, inplace in expected]
    assert all(s.path == "" and s.location.method == "forward" for s in sites)
    assert all(s.location.filename == __file__ for s in sites)


class Shadowed(nn.Module):
    def forward(self, x, F=None):  # a parameter named like the module
        torch = F
        y = x.tanh(1) if False else x  # a tensor method given arguments is another method
        return F.relu(y), torch.relu(y)


def test_names_bound_in_the_method_are_not_resolved():
    assert call_sites(Shadowed()) == []


class Arguments(nn.Module):
    def __init__(self):
        super().__init__()
        self.slope, self.mode = 0.3, "tanh"

    def forward(self, x):
        a = F.leaky_relu(x, 0.2)
        b = F.leaky_relu(x, negative_slope=-0.5)
        c = F.elu(x)
        d = F.gelu(x, approximate="tanh")
        e = F.softplus(x, 2.0, threshold=10.0)
        f = F.leaky_relu(x, self.slope)
        g = F.gelu(x, approximate=self.mode)
        return a, b, c, d, e, f, g


def test_literal_arguments_map_to_the_activations_parameters():
    sites = call_sites(Arguments())
    specs = [(s.spec, bool(s.obstacle)) for s in sites]
    assert specs == [
        ("leaky_relu(negative_slope=0.2)", False),
        ("leaky_relu(negative_slope=-0.5)", False),
        ("elu(alpha=1.0)", False),  # a default is listed as a module site lists it
        ("gelu_tanh", False),
        ("softplus(beta=2.0, threshold=10.0)", False),
        ("leaky_relu(negative_slope=self.slope)", True),
        ("gelu", True),  # approximate computed at run time: either activation
        ("gelu_tanh", True),
    ]
    assert sites[5].arguments["negative_slope"] == RunTimeValue("self.slope")
    assert sites[5].obstacle == "its negative_slope (self.slope) is computed at run time"
    assert "approximate (self.mode)" in sites[6].obstacle


def test_sites_on_one_line_are_numbered_in_source_order():
    class TwoOnALine(nn.Module):
        def forward(self, x):
            return F.relu(x) + torch.tanh(F.relu(-x))

    sites = call_sites(TwoOnALine())
    assert [(s.location.code, s.location.ordinal) for s in sites] == [
        ("F.relu(x)", 1),
        ("torch.tanh(F.relu(-x))", 2),
        ("F.relu(-x)", 3),
    ]


def test_activation_modules_and_skipped_modules_are_not_read():
    class Calls(nn.Module):
        def forward(self, x):
            return F.relu(x)

    inner = Calls()
    model = nn.Sequential(relulab.GELU(), nn.ReLU(), inner, Calls())
    assert [s.path for s in call_sites(model)] == ["2", "3"]
    assert [s.path for s in call_sites(model, skip={id(inner)})] == ["3"]


def test_an_fx_graph_modules_code_is_read_but_marked_as_not_replaceable():
    class Net(nn.Module):
        def forward(self, x):
            return F.leaky_relu(x, 0.2)

    (site,) = call_sites(torch.fx.symbolic_trace(Net()))
    assert site.spec == "leaky_relu(negative_slope=0.2)"
    assert "GraphModule" in site.obstacle


def test_unreadable_methods_are_listed_with_the_activations_they_name():
    namespace = {"nn": nn, "F": F, "torch": torch}
    source = "class Hidden(nn.Module):\n    def forward(self, x):\n        return F.gelu(x)\n"
    exec(source, namespace)
    search = find_call_sites(nn.Sequential(namespace["Hidden"]()))
    assert search.sites == []
    (unread,) = search.unexamined
    assert (unread.where, unread.cls.__name__) == ("0.forward", "Hidden")
    assert set(unread.candidates) == {"gelu", "gelu_tanh"}


def test_an_activation_module_made_and_applied_on_the_spot_is_a_call_site():
    class Inline(nn.Module):
        def forward(self, x):
            return nn.LeakyReLU(0.2)(x) + nn.GELU(approximate="tanh")(x) + nn.Linear(2, 2)(x)

    sites = call_sites(Inline())
    assert [(s.location.code, s.spec) for s in sites] == [
        ("nn.LeakyReLU(0.2)(x)", "leaky_relu(negative_slope=0.2)"),
        ('nn.GELU(approximate="tanh")(x)', "gelu_tanh"),
    ]


def _no_wraps(function):
    def wrapper(*args, **kwargs):  # hides function: no functools.wraps
        return function(*args, **kwargs)

    return wrapper


class Hiding(nn.Module):
    first = lambda self, x: F.relu(x)  # noqa: E731 (a lambda as a method)

    @_no_wraps
    def second(self, x):
        return F.gelu(x)

    def _third(self, x):
        return torch.tanh(x)

    third = torch.no_grad()(_third)  # a wrapper made without decorator syntax

    def forward(self, x):
        return self.first(x) + self.second(x) + self.third(x)


def test_methods_whose_code_is_hidden_are_listed_not_misread():
    search = find_call_sites(Hiding())
    reasons = {u.method: (u.reason, u.candidates) for u in search.unexamined}
    assert reasons["first"] == ("Hiding.first is a lambda", ("relu",))
    assert reasons["second"][0].startswith("Hiding.second is wrapped by _no_wraps.<locals>.wrapper")
    assert reasons["second"][1] == ("gelu", "gelu_tanh")
    (third,) = search.sites  # readable, but a rewrite would drop the no_grad around it
    assert (third.location.method, third.activation) == ("third", "tanh")
    assert third.obstacle == "Hiding.third is decorated"


def _act(t):
    return torch.sigmoid(t) * F.relu(t)


class CallsItsFunction(nn.Module):
    def forward(self, x):
        return _act(x) - _act(-x)


def test_calls_in_a_users_function_are_sites_of_the_calling_module():
    (sigmoid, relu) = call_sites(nn.Sequential(nn.Identity(), CallsItsFunction()))
    assert (sigmoid.path, sigmoid.activation, relu.activation) == ("1", "sigmoid", "relu")
    assert (relu.location.function, relu.location.method) == (_act, "_act")
    assert relu.location.lineno == _line(_act, "F.relu(t)")
    forward = _line(CallsItsFunction.forward, "_act(-x)")
    (first,) = relu.location.via  # the first call that reaches it...
    assert (first.method, first.span[0], first.callee) == ("forward", forward, _act)
    assert len(relu.location.route) == 2  # ...and every call that does
    assert (
        relu.where
        == f"1.forward, test_sites.py:{forward} → _act, test_sites.py:{relu.location.lineno}"
    )
