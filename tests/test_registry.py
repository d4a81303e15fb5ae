"""The registry: names, aliases, wildcards, did-you-mean, spec parsing, extra_repr round trips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import relulab
from relulab.registry import format_spec, parse_spec

# The issue's list, plus timm's names (quick_gelu, hard_mish, sigmoid, tanh) and identity.
REQUIRED = [
    "relu",
    "relu6",
    "leaky_relu",
    "prelu",
    "elu",
    "selu",
    "celu",
    "gelu",
    "gelu_tanh",
    "silu",
    "swish",
    "mish",
    "softplus",
    "hard_swish",
    "hard_sigmoid",
    "squared_relu",
    "shifted_relu",
    "smelu",
    "golu",
    "sau",
    "xatlu",
    "xgelu",
    "xsilu",
    "atlu",
    "helu",
    "velu",
    "smartmixed",
    "poly_relu",
]
TIMM_NAMES = [
    "silu",
    "swish",
    "mish",
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "celu",
    "selu",
    "gelu",
    "gelu_tanh",
    "quick_gelu",
    "sigmoid",
    "tanh",
    "hard_sigmoid",
    "hard_swish",
    "hard_mish",
    "prelu",
]


def test_the_zoo_has_every_required_activation_and_timms_names():
    names = set(relulab.list_activations())
    assert set(REQUIRED) <= names
    assert set(TIMM_NAMES) <= names


def test_defaults_are_those_of_the_issue():
    def defaults(name):
        return relulab.activation_info(name).parameters

    assert defaults("leaky_relu") == {"negative_slope": 0.01}
    assert defaults("prelu") == {"num_parameters": 1, "init": 0.25}
    assert defaults("elu") == defaults("celu") == {"alpha": 1.0}
    assert defaults("swish") == {"beta": 1.0, "trainable": False}
    assert defaults("softplus") == {"beta": 1.0, "threshold": 20.0}
    assert defaults("shifted_relu") == {"shift": 1.0}
    assert defaults("smelu") == {"beta": 2.0}
    assert defaults("golu") == {"scale": 1.0, "shift": 1.0, "growth": 1.0, "trainable": False}
    assert defaults("sau") == {"alpha": 0.15, "sigma": 1.0}
    assert defaults("xatlu") == defaults("xgelu") == defaults("xsilu") == {"alpha": 0.0}
    assert defaults("helu") == {"alpha": 0.05}
    assert defaults("poly_relu") == {"degree": 2, "coefficients": None}
    assert list(defaults("smartmixed")) == ["num_features", "tau", "clamp"]
    assert defaults("smartmixed")["tau"] == 0.5


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("hardswish", "hard_swish"),
        ("HardSwish", "hard_swish"),
        ("Hardsigmoid", "hard_sigmoid"),
        ("LeakyReLU", "leaky_relu"),
        ("leaky-relu", "leaky_relu"),
        ("GELU", "gelu"),
        ("gelu_new", "gelu_tanh"),
        ("relu2", "squared_relu"),
        ("SiLU", "silu"),
        ("smart_mixed", "smartmixed"),
        ("logistic", "sigmoid"),
    ],
)
def test_aliases_and_class_names_resolve(alias, name):
    assert relulab.activation_info(alias).name == name
    assert relulab.get_activation(alias).activation_name == name if name != "smartmixed" else True


def test_swish_and_silu_are_distinct_entries():
    assert relulab.activation_info("swish").parameters["beta"] == 1.0
    assert relulab.activation_info("silu").parameters == {}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("x*", ["xatlu", "xgelu", "xsilu"]),
        (
            "*relu*",
            ["leaky_relu", "poly_relu", "prelu", "relu", "relu6", "shifted_relu", "squared_relu"],
        ),
        ("gelu?tanh", ["gelu_tanh"]),
        ("hard*", ["hard_mish", "hard_sigmoid", "hard_swish"]),
        ("HARDSWISH", ["hard_swish"]),  # matched through its alias, case-insensitively
        ("nothing*", []),
    ],
)
def test_wildcards(pattern, expected):
    assert relulab.list_activations(pattern) == expected


def test_list_is_sorted_and_complete():
    names = relulab.list_activations()
    assert names == sorted(names) and relulab.list_activations("*") == names


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("mihs", "unknown activation 'mihs'; did you mean 'mish'?"),
        ("gleu", "unknown activation 'gleu'; did you mean 'golu' or 'gelu'?"),
        ("hardswsh", "unknown activation 'hardswsh'; did you mean 'hard_swish'?"),
        ("qqqqqq", "unknown activation 'qqqqqq' (relulab.list_activations() lists them all)"),
    ],
)
def test_unknown_names_get_one_line_with_the_closest_names(bad, message):
    with pytest.raises(ValueError) as error:
        relulab.get_activation(bad)
    assert str(error.value) == message
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("spec", "name", "arguments"),
    [
        ("relu", "relu", {}),
        ("  GELU  ", "gelu", {}),
        ("leaky_relu(negative_slope=0.2)", "leaky_relu", {"negative_slope": 0.2}),
        ("leaky_relu(0.2)", "leaky_relu", {"negative_slope": 0.2}),
        ("golu(1.5, shift=0.5)", "golu", {"scale": 1.5, "shift": 0.5}),
        (
            "poly_relu(degree=1, coefficients=(0.1, 0.5))",
            "poly_relu",
            {"degree": 1, "coefficients": (0.1, 0.5)},
        ),
        ("softplus(threshold=None)", "softplus", {"threshold": None}),
        ("swish(beta=-1e-3, trainable=True)", "swish", {"beta": -1e-3, "trainable": True}),
        ("Leaky-ReLU(0.3)", "leaky_relu", {"negative_slope": 0.3}),
    ],
)
def test_spec_strings_parse(spec, name, arguments):
    assert parse_spec(spec) == (name, arguments)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("leaky_relu(negative_slope=__import__('os').getcwd())", "is not a literal"),
        ("relu(x=[i for i in range(3)])", "is not a literal"),
        ("leaky_relu(negative_slope=2*0.1)", "is not a literal"),
        ("os.system('ls')", "cannot parse activation spec"),
        ("relu(); import os", "cannot parse activation spec"),
        ("relu(**{'a': 1})", "'**' arguments are not allowed"),
        (
            "leaky_relu(slope=0.2)",
            "unknown argument 'slope' for activation 'leaky_relu'; did you mean 'negative_slope'?",
        ),
        ("relu(1)", "takes at most 0 positional argument(s)"),
        ("elu(1.0, alpha=2.0)", "argument 'alpha' given twice"),
        ("elu(alpha='big')", "elu: alpha must be a finite number, got 'big'"),
        ("smelu(beta=-1)", "smelu: beta must be > 0.0, got -1"),
        ("golu(shift=-1.0)", "golu: shift must be >= 0.0, got -1.0"),
        ("smartmixed", "needs argument(s) num_features"),
        ("swish(trainable=1)", "swish: trainable must be True or False, got 1"),
    ],
)
def test_bad_specs_are_rejected_without_evaluation(spec, fragment):
    with pytest.raises(ValueError) as error:
        relulab.get_activation(spec)
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_overrides_replace_spec_arguments():
    module = relulab.get_activation("golu(shift=0.5, growth=2.0)", growth=3.0)
    assert module.config == {"scale": 1.0, "shift": 0.5, "growth": 3.0, "trainable": False}
    assert relulab.get_activation("smartmixed", num_features=3).num_features == 3
    with pytest.raises(ValueError, match="unknown argument 'bogus'"):
        relulab.get_activation("relu", bogus=1)


def test_modules_and_classes_pass_through():
    module = nn.ReLU()
    assert relulab.get_activation(module) is module
    assert isinstance(relulab.get_activation(nn.ELU, alpha=2.0), nn.ELU)
    with pytest.raises(ValueError, match="expected an activation name"):
        relulab.get_activation(3.0)


def _runs_fused_kernel(module: nn.Module) -> bool:
    x = torch.linspace(-2, 2, 5, requires_grad=True)
    return "Fused" in type(module(x).grad_fn).__name__


def test_fused_is_honoured_for_classes_and_instances():
    assert not _runs_fused_kernel(relulab.get_activation(relulab.GELU, fused=False))
    assert _runs_fused_kernel(relulab.get_activation(relulab.GELU))
    mine = relulab.GoLU(trainable=True)
    reference = relulab.get_activation(mine, fused=False)
    assert not _runs_fused_kernel(reference) and _runs_fused_kernel(mine)  # caller's is kept
    assert reference.shift is mine.shift  # the same parameters, not a copy of them
    assert relulab.get_activation(mine) is mine and relulab.get_activation(mine, fused=True) is mine
    assert relulab.get_activation(reference, fused=True) is not reference
    assert _runs_fused_kernel(relulab.get_activation(reference, fused=True))
    native = nn.ReLU()
    assert relulab.get_activation(native, fused=False) is native  # torch's has no fused path


def _round_trip_cases():
    for name in relulab.list_activations():
        yield name, {"num_features": 4} if name == "smartmixed" else {}
    yield "leaky_relu", {"negative_slope": 0.2}
    yield "softplus", {"beta": 2.0, "threshold": None}
    yield "golu", {"scale": 0.5, "trainable": True}
    yield "poly_relu", {"degree": 1, "coefficients": (0.25, 0.5)}
    yield "velu", {"dim": -1, "gamma": 0.3}


@pytest.mark.parametrize("case", list(_round_trip_cases()), ids=lambda c: format_spec(*c))
def test_extra_repr_round_trips(case):
    name, arguments = case
    module = relulab.get_activation(name, **arguments)
    rebuilt = relulab.get_activation(f"{name}({module.extra_repr()})")
    assert type(rebuilt) is type(module) and rebuilt.config == module.config
    assert repr(rebuilt) == repr(module) == f"{type(module).__name__}({module.extra_repr()})"
    if name != "smartmixed":  # SmartMixed's logits start with a random nudge
        assert all(
            torch.equal(a, b)
            for a, b in zip(module.state_dict().values(), rebuilt.state_dict().values())
        )


def test_info_carries_formula_paper_and_equivalents():
    info = relulab.activation_info("gelu")
    assert "Φ" in info.formula and "arXiv:1606.08415" in info.paper
    assert info.torch_equivalent == "torch.nn.GELU" and info.timm_equivalent == "gelu"
    assert info.smooth and not info.monotonic and info.bounded_below and not info.piecewise_linear
    assert relulab.activation_info("velu").notes  # its unconfirmed parts are stated
    assert set(info.to_dict()) >= {"name", "formula", "paper", "properties", "parameters"}


def test_every_module_docstring_has_formula_args_and_example():
    """The hand-written parts; Paper and Shape are added from the registry."""
    for name in relulab.list_activations():
        info = relulab.activation_info(name)
        doc = info.module.__doc__
        assert "Example::" in doc and ">>>" in doc, name
        assert ":math:" in doc or ".. math::" in doc, name
        for parameter in info.parameters:
            assert f"{parameter}:" in doc.split("Args:", 1)[-1], (name, parameter)


@pytest.mark.parametrize(
    "name", [n for n in relulab.list_activations() if n not in ("smartmixed", "velu")]
)
def test_the_registered_function_is_what_the_module_computes(name):
    info = relulab.activation_info(name)
    module = relulab.get_activation(name).double()
    x = torch.linspace(-8, 8, 33, dtype=torch.float64)
    arguments = {k: v for k, v in module.config.items() if k in info.function.__code__.co_varnames}
    arguments.update(dict(module.named_parameters()))
    if name == "prelu":
        arguments = {"weight": module.weight}
    with torch.no_grad():
        assert torch.equal(info.function(x, **arguments), module(x))


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("elu(alpha=" + "+" * 5000 + "1)", "characters long; the limit is 1000"),
        ("elu(alpha=" + "+" * 300 + "1)", "is not a literal"),
        ("elu(alpha=" + "(" * 200 + "1" + ")" * 200 + ")", "cannot parse activation spec"),
        ("softplus(beta=1, beta=2)", "argument 'beta' given twice"),
        ("prelu(100000000000000)", "can't allocate memory"),
    ],
)
def test_hostile_specs_get_a_one_line_value_error(spec, fragment):
    with pytest.raises(ValueError) as error:
        relulab.get_activation(spec)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_wildcard_ranges_keep_their_hyphen():
    assert relulab.list_activations("[f-h]*") == [
        "gelu",
        "gelu_tanh",
        "golu",
        "hard_mish",
        "hard_sigmoid",
        "hard_swish",
        "helu",
        "quick_gelu",  # through its alias gelu_sigmoid
    ]
    assert relulab.list_activations("leaky-relu") == ["leaky_relu"]


def test_bad_pattern_and_class_arguments_are_value_errors():
    with pytest.raises(ValueError, match="pattern must be a string"):
        relulab.list_activations(3)
    with pytest.raises(ValueError, match="unexpected keyword argument 'beta'"):
        relulab.get_activation(relulab.ELU, beta=1)


def test_suggestions_are_never_a_one_letter_name_inside_the_word():
    from relulab.registry import did_you_mean

    assert did_you_mean("species", ["a", "b", "c", "label"]) == ""
    assert did_you_mean("slope", ["negative_slope", "c"]) == "; did you mean 'negative_slope'?"
