"""relulab show: a spec's own arguments are what the header, parameters and values show."""

from __future__ import annotations

import json
import math

from relulab.cli import main


def show(capsys, *argv: str) -> str:
    assert main(["show", *argv]) == 0
    return capsys.readouterr().out


def test_show_lists_the_specs_arguments_not_the_defaults(capsys):
    out = show(capsys, "leaky_relu(0.2)")
    assert out.splitlines()[0].startswith("leaky_relu(negative_slope=0.2)")
    assert "  parameters  negative_slope=0.2\n" in out
    assert "  defaults    negative_slope=0.01\n" in out
    assert "values of leaky_relu(negative_slope=0.2)" in out


def test_show_header_and_parameters_of_a_keyword_spec(capsys):
    out = show(capsys, "golu(scale=2)")
    assert out.splitlines()[0] == "golu(scale=2)"
    assert "  parameters  scale=2, shift=1.0, growth=1.0, trainable=False\n" in out


def test_show_without_arguments_has_no_defaults_line(capsys):
    out = show(capsys, "golu")
    assert out.splitlines()[0] == "golu" and "defaults" not in out


def test_show_json_parameters_are_the_specs_and_values_use_them(capsys):
    data = json.loads(show(capsys, "golu(scale=2)", "--json"))
    assert data["parameters"]["scale"] == 2 and data["defaults"]["scale"] == 1.0
    at_three = next(s for s in data["samples"] if s["x"] == 3.0)
    # GoLU(x) = scale·x·exp(−shift·exp(−growth·x)), written out independently
    assert math.isclose(at_three["f"], 2 * 3 * math.exp(-math.exp(-3)), rel_tol=1e-12)
