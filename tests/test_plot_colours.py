"""relulab.plot.colours: one colour per activation, whatever else a figure shows."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import zlib

import pytest
import torch

import relulab
from relulab.plot.colours import FIXED, PALETTE, activation_colours, canonical_spec

colors = pytest.importorskip("matplotlib.colors")

# Specs the fixed table does not hold: each gets a colour by the hash of its canonical spec.
UNFIXED = [name for name in relulab.list_activations() if name not in FIXED]
UNFIXED += ["leaky_relu(negative_slope=0.2)", "elu(alpha=2.0)", "golu(scale=1.5)"]


def test_fixed_colours_are_distinct_registered_names_and_colours():
    assert len(set(FIXED.values())) == len(FIXED)
    for name, colour in FIXED.items():
        assert relulab.activation_info(name).name == name  # canonical, not an alias
        colors.to_rgb(colour)  # a colour matplotlib can draw
    assert FIXED["relu"] != FIXED["gelu"] != FIXED["silu"]


def test_a_fixed_activation_keeps_its_colour_whatever_else_is_drawn():
    for name, colour in FIXED.items():
        assert activation_colours([name])[name] == colour
        assert activation_colours([*UNFIXED, name])[name] == colour


def test_an_unfixed_spec_alone_takes_the_colour_of_its_crc32():
    for spec in UNFIXED:
        index = zlib.crc32(spec.encode("utf-8")) % len(PALETTE)
        assert activation_colours([spec]) == {spec: PALETTE[index]}


def test_spellings_of_one_spec_share_its_colour():
    assert canonical_spec("Leaky-ReLU(0.2)") == "leaky_relu(negative_slope=0.2)"
    assert canonical_spec("not an activation ") == "not an activation"
    spellings = ["Leaky-ReLU(0.2)", "leaky_relu(negative_slope=0.2)", "leaky_relu(0.2)"]
    assert len(set(activation_colours(spellings).values())) == 1
    assert activation_colours(["ReLU", "gelu"])["ReLU"] == FIXED["relu"]


def test_colours_are_distinct_in_a_figure_and_do_not_depend_on_the_order():
    rng = random.Random(0)
    everything = list(FIXED) + UNFIXED
    for size in (2, 5, 8, len(PALETTE)):
        for _ in range(30):
            specs = rng.sample(everything, size)
            colours = activation_colours(specs)
            assert len(set(colours.values())) == size, specs
            assert activation_colours(rng.sample(specs, size)) == colours
    # more specs than colours: each still gets one, and colours repeat only then
    assert len(activation_colours(everything)) == len(everything)


def test_a_hash_collision_is_resolved_the_same_way_in_either_order():
    index = {spec: zlib.crc32(spec.encode()) % len(PALETTE) for spec in UNFIXED}
    colliding = next((a, b) for a, b in itertools.combinations(UNFIXED, 2) if index[a] == index[b])
    first, second = activation_colours(colliding), activation_colours(colliding[::-1])
    assert first == second and len(set(first.values())) == 2
    # the first in sorted order keeps its own colour, the other moves to the next free one
    a, b = sorted(colliding)
    assert first[a] == PALETTE[index[a]] and first[b] == PALETTE[(index[b] + 1) % len(PALETTE)]


def test_colours_are_the_same_in_another_process():
    """Python's hash() of a string changes with PYTHONHASHSEED; the colours must not."""
    code = (
        "import json, sys; from relulab.plot.colours import activation_colours; "
        "print(json.dumps(activation_colours(json.loads(sys.argv[1]))))"
    )
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", code, json.dumps(UNFIXED[:6])],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1] == activation_colours(UNFIXED[:6])


def cielab(colour) -> tuple[float, float, float]:
    """CIE L*a*b* (D65) of a matplotlib colour, from the sRGB and CIE 1976 definitions."""
    rgb = [
        c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in colors.to_rgb(colour)
    ]
    matrix = [(0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505)]
    white = (0.95047, 1.0, 1.08883)
    x, y, z = (sum(m * c for m, c in zip(row, rgb)) / w for row, w in zip(matrix, white))
    f = [t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29 for t in (x, y, z)]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def delta_e(a, b) -> float:
    return sum((p - q) ** 2 for p, q in zip(cielab(a), cielab(b))) ** 0.5


# the greys the figures draw seeds, baselines and notes in (relulab.plot.bench, .figure)
GREYS = ["0.4", "0.45", "0.5", "0.65", "0.8"]


def test_the_palette_is_apart_from_every_fixed_colour_and_grey():
    """Issue 10: 'sau' took leaky_relu's brown, 'smartmixed' silu's orange: the palette for
    unlisted specs was the fixed table itself."""
    assert len(set(PALETTE)) == len(PALETTE) >= 6
    for colour in PALETTE:
        for other in [*FIXED.values(), *GREYS, "white"]:
            assert delta_e(colour, other) >= 25, (colour, other)
    for a, b in itertools.combinations(PALETTE, 2):
        assert delta_e(a, b) >= 25, (a, b)


def test_unlisted_specs_never_take_a_fixed_colour_in_any_figure():
    # the specs of the zoo and bench, and every other unlisted one, with all fixed
    specs = ["sau", "smartmixed", "smartmixed(num_features=1)", "leaky_relu(0.2)", *UNFIXED]
    fixed = {colors.to_hex(c) for c in FIXED.values()}
    for spec in specs:
        assert colors.to_hex(activation_colours([spec, *FIXED])[spec]) not in fixed, spec
    colours = activation_colours(["relu", "sau", "smartmixed", "leaky_relu", "leaky_relu(0.2)"])
    assert colours["relu"] == FIXED["relu"] and colours["leaky_relu"] == FIXED["leaky_relu"]
    others = [colours[s] for s in ("sau", "smartmixed", "leaky_relu(0.2)")]
    assert len(set(others)) == 3 and not set(others) & fixed


def test_a_spec_at_the_default_arguments_is_the_activation_itself():
    """'leaky_relu(0.01)' took smelu's pink: the defaults, written out, made another spec."""
    # torch's own default slope, not relulab's record of it
    slope = torch.nn.LeakyReLU().negative_slope
    same = [f"leaky_relu({slope})", f"Leaky-ReLU(negative_slope={slope})", "leaky_relu"]
    assert {canonical_spec(s) for s in same} == {"leaky_relu"}
    assert set(activation_colours(same).values()) == {FIXED["leaky_relu"]}
    assert activation_colours(["elu(1.0)", "elu(1)"]) == {
        "elu(1.0)": FIXED["elu"],
        "elu(1)": FIXED["elu"],
    }
    # only the arguments at their defaults go, and the order they were typed in does not count
    assert canonical_spec("golu(shift=2.0, scale=1.0)") == "golu(shift=2.0)"
    assert canonical_spec("golu(growth=3.0, scale=2.0)") == canonical_spec(
        "golu(scale=2.0, growth=3.0)"
    )
    assert canonical_spec("golu(trainable=1)") == "golu(trainable=1)"  # 1 is no bool


def test_a_variant_of_a_listed_activation_is_told_apart_from_it():
    colours = activation_colours(["leaky_relu", "leaky_relu(0.2)", "elu", "elu(alpha=2.0)"])
    assert len(set(colours.values())) == 4
    assert colours["leaky_relu(0.2)"] in PALETTE and colours["elu(alpha=2.0)"] in PALETTE
