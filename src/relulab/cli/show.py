"""``relulab show NAME``: formula, paper, parameters, properties and sample values."""

from __future__ import annotations

import argparse

import torch

from relulab.cli.output import format_table, print_json
from relulab.plot import activation_curve
from relulab.registry import REQUIRED, activation_info, format_spec, parse_spec

SAMPLE_POINTS = (-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "show",
        help="show one activation: formula, paper, properties, values",
        description="Show an activation's formula, source, parameters, properties and values.",
        epilog="examples:\n  relulab show golu\n  relulab show 'leaky_relu(negative_slope=0.2)'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", help="an activation name, alias or spec string")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def _format_parameters(values: dict) -> str:
    return ", ".join(
        f"{k}=<required>" if v is REQUIRED else f"{k}={v!r}" for k, v in values.items()
    )


def run(args: argparse.Namespace) -> int:
    name, arguments = parse_spec(args.name)
    info = activation_info(name)
    missing = [k for k, v in info.parameters.items() if v is REQUIRED and k not in arguments]
    if missing:
        samples: list | str = (
            f"needs {', '.join(missing)} (e.g. relulab show '{name}({missing[0]}=1)')"
        )
    else:
        curve = activation_curve(args.name, torch.tensor(SAMPLE_POINTS))
        samples = list(zip(curve.x, curve.y, curve.dy))
    # The spec's own arguments over the registry's defaults: what the values below use.
    values = {**info.parameters, **arguments}
    if args.json:
        data = info.to_dict()
        data["defaults"] = data["parameters"]
        data["parameters"] = {**data["parameters"], **arguments}
        data["arguments"] = arguments
        data["samples"] = samples if isinstance(samples, str) else [
            {"x": x, "f": y, "df": dy} for x, y, dy in samples
        ]  # fmt: skip
        print_json(data)
        return 0
    parameters = _format_parameters(values)
    flags = ", ".join(
        f"{k}={'yes' if v else 'no'}" for k, v in info.properties().items() if k != "trainable"
    )
    lines = [
        format_spec(info.name, arguments)
        + (f"  (aliases: {', '.join(info.aliases)})" if info.aliases else ""),
        f"  formula     {info.formula}",
        f"  paper       {info.paper}",
        f"  parameters  {parameters or 'none'}",
    ]
    if arguments:
        lines.append(f"  defaults    {_format_parameters(info.parameters)}")
    lines += [
        f"  properties  {flags}",
        f"  trains      {', '.join(info.trainable) or 'nothing'}",
        f"  torch       {info.torch_equivalent or '-'}",
        f"  timm        {info.timm_equivalent or '-'}",
    ]
    if info.notes:
        lines.append(f"  notes       {info.notes}")
    print("\n".join(lines) + "\n")
    if isinstance(samples, str):
        print(f"values: {samples}")
    else:
        print(f"values of {format_spec(info.name, arguments)} (derivative by autograd):")
        rows = [[f"{x:g}", f"{y:.6g}", f"{dy:.6g}"] for x, y, dy in samples]
        print(format_table(["x", "f(x)", "f'(x)"], rows))
    return 0
