"""relulab speed: its statistics against numpy, its round-robin against a fake clock whose
costs are known, its saved bytes against hand-computed sizes, and the command's output."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from relulab import speed
from relulab.cli import main
from relulab.cli import speed as speed_command
from relulab.kernels import compilation

# --- statistics ---------------------------------------------------------------------------


@pytest.mark.parametrize("rounds", [1, 2, 3, 5, 8, 11])
def test_summary_is_numpys_median_and_quartiles(rounds):
    generator = np.random.default_rng(rounds)
    seconds = generator.uniform(0.5, 2.0, rounds)
    yardstick = generator.uniform(0.5, 2.0, rounds)
    timing = speed.Timing()
    for s, y in zip(seconds, yardstick):
        timing.add(float(s), to_relu=float(y))
    summary = timing.summary()
    ratios = seconds / yardstick
    assert summary["seconds"] == pytest.approx(np.median(seconds), rel=1e-12)
    assert summary["to_relu"] == pytest.approx(np.median(ratios), rel=1e-12)
    # numpy's default (linear) quartiles: they never reach beyond the rounds' values
    q1, q3 = np.percentile(ratios, [25, 75])
    assert (summary["to_relu_q1"], summary["to_relu_q3"]) == pytest.approx((q1, q3), rel=1e-12)


def test_ratios_to_another_call_are_taken_round_by_round():
    mine, theirs = speed.Timing(), speed.Timing()
    for a, b in [(1.0, 2.0), (5.0, 3.0), (3.0, 9.0)]:
        mine.add(a)
        theirs.add(b)
    mine.relative_to("to_reference", theirs)
    # per round 0.5, 1.67, 0.33: median 0.5; the ratio of the medians would be 3 / 3 = 1
    assert mine.summary()["to_reference"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="3 rounds against 2"):
        mine.relative_to("to_other", speed.Timing([1.0, 2.0]))


# --- round robin, on a fake clock -----------------------------------------------------------


class FakeMachine:
    """A clock, and calls that advance it by a known cost times the round's drift."""

    def __init__(self, drift: list[float]):
        self.now = 0.0
        self.drift = drift
        self.round = -1  # warm-up
        self.calls: dict[tuple[str, int], int] = {}
        self.threads: set[int] = set()

    def clock(self) -> float:
        return self.now

    def call(self, name: str, cost: float):
        def run() -> None:
            factor = 1.0 if self.round < 0 else self.drift[self.round]
            self.now += cost * factor
            self.calls[(name, self.round)] = self.calls.get((name, self.round), 0) + 1
            self.threads.add(torch.get_num_threads())

        return run

    def progress(self, line: str) -> None:
        if line.startswith("round "):
            self.round += 1


def test_round_robin_ratios_come_out_exact_whatever_the_drift():
    drift = [1.0, 3.0, 0.5, 10.0, 2.0]  # the machine slows and speeds up between rounds
    machine = FakeMachine(drift)
    costs = {"big": 0.05, "small": 3e-7, "mid": 2e-3}
    calls = {name: machine.call(name, cost) for name, cost in costs.items()}
    yardsticks = {"to_ref": machine.call("ref", 1e-3)}
    threads = 1 if torch.get_num_threads() != 1 else 2
    timings = speed.round_robin(
        calls,
        yardsticks,
        rounds=len(drift),
        threads=threads,
        clock=machine.clock,
        progress=machine.progress,
    )
    for name, cost in costs.items():
        summary = timings[name].summary()
        assert timings[name].seconds == pytest.approx([cost * d for d in drift], rel=1e-9)
        ratio = cost / 1e-3  # the drift cancels within each round, so no spread is left
        for key in ("to_ref", "to_ref_q1", "to_ref_q3"):
            assert summary[key] == pytest.approx(ratio, rel=1e-9), (name, key)
    assert machine.threads == {threads}
    for r in range(len(drift)):
        # a 50 ms call is timed once per round (no per-round warm-up calls); a 300 ns one in
        # blocks long enough for the clock; the yardstick 3 times, for its median
        assert machine.calls[("big", r)] == 1
        assert machine.calls[("small", r)] >= 100
        assert machine.calls[("ref", r)] == speed.YARDSTICK_SAMPLES


def test_a_slow_yardstick_sample_does_not_skew_its_round():
    machine = FakeMachine([1.0, 1.0, 1.0])

    def yardstick() -> None:  # the first of each round's samples is 50 times too slow
        count = machine.calls.get(("ref", machine.round), 0)
        machine.calls[("ref", machine.round)] = count + 1
        machine.now += 50e-3 if machine.round >= 0 and count == 0 else 1e-3

    timings = speed.round_robin(
        {"x": machine.call("x", 2e-3)},
        {"to_ref": yardstick},
        rounds=3,
        clock=machine.clock,
        progress=machine.progress,
    )
    assert timings["x"].ratios["to_ref"] == pytest.approx([2.0, 2.0, 2.0])


# --- saved bytes and the command's output -------------------------------------------------


def test_elementwise_saved_bytes_are_the_hand_computed_sizes():
    numel = 4096
    data = {}
    for dtype in (torch.float32, torch.bfloat16):
        result = speed.elementwise(
            ["leaky_relu", "golu", "mish"], numel=numel, dtype=dtype, threads=1, rounds=1
        )
        data[dtype] = {(r["activation"], r["implementation"]): r for r in result["rows"]}
    for dtype, rows in data.items():
        x_bytes = numel * dtype.itemsize
        expected = {
            ("relu", "fused"): numel,  # a 1-byte mask
            ("relu", "native"): x_bytes,  # torch keeps its output
            ("leaky_relu", "fused"): numel,
            ("leaky_relu", "timm_pattern"): numel,
            ("leaky_relu", "native"): x_bytes,  # torch keeps x
            ("golu", "fused"): x_bytes,
            ("golu", "timm_pattern"): x_bytes,
            ("mish", "fused"): x_bytes,
            ("mish", "native"): x_bytes,
        }
        for key, size in expected.items():
            assert rows[key]["saved_bytes"] == size, (dtype, key)
            assert rows[key]["saved_to_input"] == size / x_bytes, (dtype, key)


def test_speed_json_has_a_row_per_implementation_and_ratios_within_rounds(capsys):
    argv = ["speed", "golu", "mish", "--numel", "4096", "--rounds", "3", "--threads", "1"]
    code = main([*argv, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["numel"] == 4096 and data["dtype"] == "float32"
    assert data["rounds"] == 3 and data["threads"] == 1
    rows = {(r["activation"], r["implementation"]): r for r in data["rows"]}
    # ReLU comes first as the yardstick; torch has mish natively, not golu.
    assert data["rows"][0]["activation"] == "relu"
    assert {i for a, i in rows if a == "golu"} == {"fused", "reference", "timm_pattern"}
    assert {i for a, i in rows if a == "mish"} == {"fused", "reference", "native", "timm_pattern"}
    fused = rows[("mish", "fused")]["forward_backward"]
    assert {"to_clone", "to_relu", "to_reference", "to_native"} <= set(fused)
    assert "to_native" not in rows[("golu", "fused")]["forward_backward"]
    assert "to_reference" not in rows[("golu", "reference")]["forward_backward"]


def test_targets_table_takes_its_ratios_within_rounds():
    def summary(seconds, **ratios):
        out = {"seconds": seconds}
        for key, value in ratios.items():
            out.update({key: value, f"{key}_q1": value, f"{key}_q3": value})
        return out

    rows = [
        {
            "activation": "mish",
            "implementation": "fused",
            # median seconds say 1/2 and 1/1; the rounds said 1/4 and 1/2
            "forward_backward": summary(1.0, to_relu=1.1, to_reference=0.25, to_native=0.5),
            "saved_to_input": 1.0,
        },
        {"activation": "mish", "implementation": "reference",
         "forward_backward": summary(2.0), "saved_to_input": 6.0},
        {"activation": "mish", "implementation": "native",
         "forward_backward": summary(1.0), "saved_to_input": 1.0},
    ]  # fmt: skip
    line = next(x for x in speed_command._targets(rows).splitlines() if x.startswith("mish"))
    assert line.split() == ["mish", "1.10", "ok", "4.0x", "ok", "0.50", "1.000"]


def test_speed_table_and_plot(capsys, tmp_path):
    argv = ["speed", "relu", "gelu", "--numel", "2048", "--rounds", "2", "--threads", "1"]
    code = main([*argv, "--plot", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert code == 0 and "fwd+bwd ×native ReLU" in out and "faster than eager" in out
    assert f"plot: {tmp_path / 's.png'}" in out
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_problems_are_found_before_the_run(capsys, monkeypatch, tmp_path):
    def no_run(*args, **kwargs):
        raise AssertionError("timed before checking --plot")

    monkeypatch.setattr(speed, "elementwise", no_run)
    missing = tmp_path / "no-such-dir" / "s.png"
    assert main(["speed", "golu", "--plot", str(missing)]) == 2
    assert f"cannot write {missing}: no directory" in capsys.readouterr().err
    assert main(["speed", "golu", "--plot", ""]) == 2
    assert "--plot must name a file, got ''" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["speed", "golu", "--plot", str(tmp_path / "s.png")]) == 2
    assert "pip install 'relulab[plot]'" in capsys.readouterr().err


def test_peak_memory_sees_what_a_step_allocates():
    def step():
        a = torch.empty(1 << 20, dtype=torch.uint8)  # 1 MiB
        b = torch.empty(2 << 20, dtype=torch.uint8)  # then 2 MiB more: 3 MiB at once
        del a, b
        torch.empty(1 << 20, dtype=torch.uint8)

    peak = speed.peak_memory(step)
    assert 3 << 20 <= peak < (3 << 20) + (64 << 10)


def test_training_step_json_and_plot(capsys, tmp_path):
    plot = tmp_path / "steps.png"
    with compilation(False):  # the MLP's tensors would compile kernels: seconds, not a test
        argv = ["speed", "golu", "--model", "mlp", "--rounds", "1", "--threads", "1"]
        code = main([*argv, "--json", "--plot", str(plot)])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["plot"] == str(plot)  # --plot was ignored with --model
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {r["activation"]: r for r in data["rows"]}
    assert set(rows) == {"relu", "relu (torch)", "golu"}
    # GoLU keeps x (512 × 1024 floats: 2 MiB) where relulab's ReLU keeps a 1-byte mask
    # (0.5 MiB): at the peak, 1 to 4 of the MLP's 4 activation layers hold theirs.
    extra = rows["golu"]["peak_bytes"] - rows["relu"]["peak_bytes"]
    per_layer = 512 * 1024 * (4 - 1)
    assert per_layer <= extra <= 4 * per_layer
    assert rows["golu"]["peak_to_relu"] == pytest.approx(1 + extra / rows["relu"]["peak_bytes"])
    assert rows["golu"]["step_seconds"] > 0


def test_speed_rejects_bad_input(capsys):
    assert main(["speed", "velu", "--numel", "64"]) == 2
    assert "'velu' is not elementwise" in capsys.readouterr().err
    assert main(["speed", "golu", "--numel", "0"]) == 2
    assert "--numel must be at least 1" in capsys.readouterr().err
    assert main(["speed", "leaky_relu(0.2)", "--numel", "64"]) == 2
    assert "not specs: 'leaky_relu(0.2)'; try 'leaky_relu'" in capsys.readouterr().err
    assert main(["speed", "mihs", "--numel", "64"]) == 2
    assert "did you mean 'mish'?" in capsys.readouterr().err
