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
