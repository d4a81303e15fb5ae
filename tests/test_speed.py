"""relulab speed: its statistics against numpy, its round-robin against a fake clock whose
costs are known, its saved bytes against hand-computed sizes, and the command's output."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from relulab import plot, speed
from relulab.cli import main
from relulab.cli import speed as speed_command
from relulab.cli.output import check_png_output
from relulab.errors import UserError
from relulab.kernels import compilation
from relulab.plot.figure import png_path

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
    costs = {"big": 0.05, "small": 3e-7, "mid": 2e-3, "ref": 1e-3}
    calls = {name: machine.call(name, cost) for name, cost in costs.items()}
    threads = 1 if torch.get_num_threads() != 1 else 2
    timings = speed.round_robin(
        calls,
        {"to_ref": "ref"},
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
        {"x": machine.call("x", 2e-3), "ref": yardstick},
        {"to_ref": "ref"},
        rounds=3,
        clock=machine.clock,
        progress=machine.progress,
    )
    assert timings["x"].ratios["to_ref"] == pytest.approx([2.0, 2.0, 2.0])


def test_the_reference_row_is_the_yardsticks_own_measurement():
    """Issue 10.3: the yardstick's row reads exactly 1, from the samples its ratios use."""
    machine = FakeMachine([1.0, 1.0, 1.0, 1.0])
    samples = iter([1.0, 3.0, 2.0] * 4 + [9.0] * 10)  # ms; a 4th call per round would be 9

    def noisy() -> None:
        machine.now += next(samples) * 1e-3 if machine.round >= 0 else 0.05

    timings = speed.round_robin(
        {"x": machine.call("x", 4e-3), "ref": noisy},
        {"to_ref": "ref"},
        rounds=4,
        clock=machine.clock,
        progress=machine.progress,
    )
    # the row is the median of the round's 3 samples, 2 ms, not another call of 1 to 9 ms
    assert timings["ref"].seconds == pytest.approx([2e-3] * 4)
    assert timings["ref"].ratios["to_ref"] == [1.0] * 4  # exactly: the same float
    assert timings["x"].ratios["to_ref"] == pytest.approx([2.0] * 4)
    with pytest.raises(ValueError, match="not among the calls"):
        speed.round_robin({"x": noisy}, {"to_ref": "ref"}, rounds=1)


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
    assert set(data["references"]) == {"to_clone", "to_relu", "to_reference", "to_native"}
    assert data["clone_seconds"] > 0
    # Issue 10.3: the row relu native is the to_relu yardstick's own measurement, so it
    # reads 1 exactly in every round (a separate measurement of torch.relu read 0.76-1.04)
    relu = rows[("relu", "native")]["forward_backward"]
    assert (relu["to_relu"], relu["to_relu_q1"], relu["to_relu_q3"]) == (1.0, 1.0, 1.0)
    assert fused["to_relu"] * relu["seconds"] == pytest.approx(fused["seconds"], rel=1.0)
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


def _row(text: str, *cells: str) -> list[str]:
    """The table line that starts with ``cells``, split at runs of 2+ spaces."""
    import re

    for line in text.splitlines():
        fields = re.split(r"\s{2,}", line.strip())
        if fields[: len(cells)] == list(cells):
            return fields
    raise AssertionError(f"no row {cells} in:\n{text}")


def test_speed_table_states_each_reference_and_the_plot(capsys, tmp_path):
    argv = ["speed", "relu", "gelu", "--numel", "2048", "--rounds", "2", "--threads", "1"]
    code = main([*argv, "--plot", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert code == 0 and "faster than eager" in out
    # Issue 10.3: what each ratio divides by, and the reference row reads exactly 1.00
    assert "÷ x.clone() of the same tensor (" in out
    assert "÷ torch.relu forward+backward, the row relu native (" in out
    header = _row(out, "activation", "implementation")
    assert header[2:5] == ["fwd ÷ clone", "fwd+bwd ÷ clone", "fwd+bwd ÷ relu native"]
    assert _row(out, "relu", "native")[4] == "1.00 (1.00–1.00)"
    assert "fwd+bwd ÷ relu native (≤ 1.15)" in _row(out, "fused kernel")
    assert out.rstrip().endswith(f"plot: {tmp_path / 's.png'}")
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def unwritable_dir(tmp_path):
    """A directory in which this process cannot create a file (as root: /sys, if sysfs)."""
    for candidate in (tmp_path / "read-only", Path("/sys")):
        if candidate.parent == tmp_path:
            candidate.mkdir()
            candidate.chmod(0o500)
        try:
            os.close(os.open(candidate / "probe.png", os.O_WRONLY | os.O_CREAT, 0o644))
            os.unlink(candidate / "probe.png")
        except OSError:
            yield candidate
            break
    else:
        pytest.skip("no directory this process cannot write in")
    (tmp_path / "read-only").chmod(0o700)


def test_plot_problems_are_found_before_the_run(capsys, monkeypatch, tmp_path, unwritable_dir):
    """Issue 10.2: a bad --plot costs no timing, and ends in one line naming the file."""

    def no_run(*args, **kwargs):
        raise AssertionError("timed before checking --plot")

    monkeypatch.setattr(speed, "elementwise", no_run)
    monkeypatch.setattr(speed, "training_step", no_run)
    (tmp_path / "a-dir.png").mkdir()
    (tmp_path / "a-file").write_text("")
    cases = {
        tmp_path / "no-such-dir" / "s.png": f"'{tmp_path / 'no-such-dir'}' does not exist",
        tmp_path / "a-file" / "s.png": f"'{tmp_path / 'a-file'}' is not a directory",
        tmp_path / "a-dir": "it is a directory; try",  # a-dir.png is what would be written
        unwritable_dir / "s.png": "Permission denied",
    }
    for model in ([], ["--model", "mlp"]):
        for path, problem in cases.items():
            assert main(["speed", "golu", *model, "--plot", str(path)]) == 2, path
            err = capsys.readouterr().err
            assert err.startswith(f"relulab speed: error: cannot write {png_path(path)}: ")
            assert problem in err and len(err.splitlines()) == 1, err
    assert main(["speed", "golu", "--plot", ""]) == 2
    assert "--plot must name a file, got ''" in capsys.readouterr().err
    assert not list(unwritable_dir.glob("s.png"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["speed", "golu", "--plot", str(tmp_path / "s.png")]) == 2
    assert "pip install 'relulab[plot]'" in capsys.readouterr().err


def test_checking_the_plot_path_leaves_no_file_and_changes_none(tmp_path):
    check_png_output(str(tmp_path / "new"))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old.png").write_bytes(b"old figure")
    check_png_output(str(tmp_path / "old.png"))
    assert (tmp_path / "old.png").read_bytes() == b"old figure"


@pytest.mark.parametrize("as_json", [False, True])
def test_the_tables_are_printed_before_a_plot_that_fails(capsys, monkeypatch, tmp_path, as_json):
    """Issue 10.2: the file goes between the check and the plot; the figures are kept."""
    target = tmp_path / "s.png"

    def gone(result, path, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", str(target))

    monkeypatch.setattr(plot, "plot_speed", gone)
    argv = ["speed", "relu", "--numel", "512", "--rounds", "1", "--threads", "1"]
    assert main([*argv, "--plot", str(target), *(["--json"] if as_json else [])]) == 2
    captured = capsys.readouterr()
    assert f"cannot write {target}: No such file or directory" in captured.err
    if as_json:
        data = json.loads(captured.out)
        assert data["rows"][0]["activation"] == "relu" and data["plot"] == str(target)
    else:
        assert _row(captured.out, "relu", "native")[4] == "1.00 (1.00–1.00)"
        assert "plot:" not in captured.out


def test_peak_memory_keeps_native_writes_to_stderr_out_and_python_lines_in(capfd):
    """Issue 10.2: torch's profiler writes its notes to descriptor 2 from C++; they go, only
    for the profiled step, while Python's stderr (relulab's progress lines) still shows."""

    def step():
        os.write(2, b"native note\n")  # as C++ writes, past sys.stderr
        print("python line", file=sys.stderr)
        torch.empty(1 << 10)

    def failing_step():
        os.write(2, b"native note\n")
        raise RuntimeError("boom")

    # sys.stderr as a terminal has it: a stream on descriptor 2 (capfd's own is not)
    with open(2, "w", closefd=False) as stream, pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stderr", stream)
        os.write(2, b"before\n")
        speed.peak_memory(step)
        os.write(2, b"after\n")
        with pytest.raises(RuntimeError, match="boom"):
            speed.peak_memory(failing_step)
        os.write(2, b"restored\n")
    err = capfd.readouterr().err
    assert err.split() == ["before", "python", "line", "after", "restored"], err


def test_model_table_states_its_reference_and_keeps_profiler_noise_out(capfd):
    """Issue 10.2 and 10.3, end to end: no profiler notes on stderr, progress lines on it;
    the row relu is the yardstick's own measurement and reads 1.00."""
    with compilation(False):
        argv = ["speed", "relu", "--model", "mlp", "--rounds", "1", "--threads", "1"]
        assert main(argv) == 0
    out, err = capfd.readouterr()
    assert "mlp: peak memory of relu (torch)" in err and "mlp: round 1/1" in err
    assert "profiler_start" not in err and "Memory block of unknown size" not in err, err
    assert "this row's step time ÷ the row relu's from the same round" in out
    assert _row(out, "model", "activation")[3:6] == [
        "step ÷ relu",
        "peak MiB",
        "peak ÷ relu (≤ 1.05)",
    ]
    assert _row(out, "mlp", "relu")[3] == "1.00 (1.00–1.00)"
    assert _row(out, "mlp", "relu")[5] == "1.000 ok"


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
    assert set(data["references"]) == {"step_to_relu", "peak_to_relu"}
    relu = rows["relu"]  # the yardstick's own measurement (issue 10.3)
    assert (relu["step_to_relu"], relu["step_to_relu_q1"], relu["step_to_relu_q3"]) == (1, 1, 1)
    # GoLU keeps x (512 × 1024 floats: 2 MiB) where relulab's ReLU keeps a 1-byte mask
    # (0.5 MiB): at the peak, 1 to 4 of the MLP's 4 activation layers hold theirs.
    # The peaks also hold small temporaries (a 4 KiB one seen in one run and not the other in
    # CI): a slack of 64 KiB, as test_peak_memory_sees_what_a_step_allocates allows.
    extra = rows["golu"]["peak_bytes"] - rows["relu"]["peak_bytes"]
    per_layer = 512 * 1024 * (4 - 1)
    slack = 64 << 10
    assert per_layer - slack <= extra <= 4 * per_layer + slack
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


def test_sweep_times_each_size_and_keeps_the_ratio_to_torch_of_each_activation():
    with compilation(False):
        result = speed.sweep(["relu"], sizes=(1024, 4096), rounds=1, threads=1)
    assert result["sizes"] == [1024, 4096] and [r["numel"] for r in result["runs"]] == [1024, 4096]
    assert set(result["native_ratios"]) == {"relu"}
    with pytest.raises(UserError, match="golu has no torch module to compare with; --sweep takes"):
        speed.sweep(["relu", "golu"], sizes=(1024,))  # refused before any timing
    for kind in ("forward", "forward_backward"):
        series = result["native_ratios"]["relu"][kind]
        assert len(series) == 2
        for (median, q1, q3), run in zip(series, result["runs"]):
            fused = next(r for r in run["rows"] if (r["activation"], r["implementation"])
                         == ("relu", "fused"))  # fmt: skip
            assert median == fused[kind]["to_native"] and q1 <= median <= q3


def test_speed_sweep_command_prints_tables_and_draws_the_plot(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(speed, "SWEEP_SIZES", (1024, 2048))
    plot_path = tmp_path / "sweep.png"
    with compilation(False):
        code = main(["speed", "relu", "silu", "--sweep", "--rounds", "1", "--threads", "1",
                     "-o", str(plot_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "forward + backward: relulab's default path ÷ torch's module" in out
    assert _row(out, "activation") == ["activation", "1K", "2K"]
    assert all(float(v) > 0 for v in _row(out, "silu")[1:]) and len(_row(out, "silu")) == 3
    from matplotlib.image import imread

    image = imread(plot_path)
    assert image.shape[0] > 300 and float(image[..., :3].std()) > 0.01


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["speed", "--sweep", "--numel", "4096"], "--sweep times every size itself; drop --numel"),
        (["speed", "--sweep", "--model", "mlp"], "drop --model"),
        (["speed", "--ffn", "--sweep"], "drop --sweep"),
    ],
)
def test_sweep_conflicts_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
