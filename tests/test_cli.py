"""The command line: each subcommand's output and exit codes, bad input included."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

import relulab
from relulab.cli import main
from relulab.cli import plot as plot_command
from relulab.cli import show as show_command


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_shows_every_activation(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    names = [
        line.split()[0]
        for line in out.splitlines()[2:]
        if line.strip() and not line.startswith(" ")
    ]
    assert names[: len(relulab.list_activations())] == relulab.list_activations()
    assert f"{len(relulab.list_activations())} activation(s)" in out


def test_list_filters_by_pattern(capsys):
    code, out, _ = run(capsys, "list", "x*")
    rows = [line.split()[0] for line in out.splitlines()[2:5]]
    assert code == 0 and rows == ["xatlu", "xgelu", "xsilu"] and "3 activation(s)" in out


def test_list_json(capsys):
    code, out, _ = run(capsys, "list", "--json")
    data = json.loads(out)
    assert code == 0 and [d["name"] for d in data] == relulab.list_activations()
    golu = next(d for d in data if d["name"] == "golu")
    assert golu["parameters"] == {"scale": 1.0, "shift": 1.0, "growth": 1.0, "trainable": False}
    assert golu["properties"]["smooth"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "zzz*"], "relulab list: error: no activation matches 'zzz*'"),
        (["list", "zzz*", "--json"], "relulab list: error: no activation matches 'zzz*'"),
        (
            ["list", "mihs"],
            "relulab list: error: no activation matches 'mihs'; did you mean 'mish'?",
        ),
    ],
)
def test_list_without_matches_is_a_user_error(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err.strip() == message


def test_show_prints_formula_paper_properties_and_values(capsys):
    code, out, _ = run(capsys, "show", "golu")
    assert code == 0
    assert "scale·x·exp(−shift·exp(−growth·x))" in out and "arXiv:2502.03654" in out
    assert "smooth=yes" in out and "monotonic=no" in out
    row = next(line.split() for line in out.splitlines() if line.startswith("1 "))
    assert float(row[1]) == pytest.approx(math.exp(-math.exp(-1.0)), rel=1e-5)  # GoLU(1)
    d_golu = math.exp(-math.exp(-1.0)) * (1 + math.exp(-1.0))  # gate·(1 + x·e^{−x}) at 1
    assert float(row[2]) == pytest.approx(d_golu, rel=1e-5)


def test_show_accepts_specs(capsys):
    code, out, _ = run(capsys, "show", "leaky_relu(0.2)")
    row = next(line.split() for line in out.splitlines() if line.startswith("-1 "))
    assert (
        code == 0 and float(row[1]) == pytest.approx(-0.2) and float(row[2]) == pytest.approx(0.2)
    )


def test_show_json(capsys):
    code, out, _ = run(capsys, "show", "smelu(beta=1.0)", "--json")
    data = json.loads(out)
    assert code == 0 and data["arguments"] == {"beta": 1.0}
    at_zero = next(s for s in data["samples"] if s["x"] == 0.0)
    assert at_zero["f"] == pytest.approx(0.25) and at_zero["df"] == pytest.approx(0.5)  # (x+β)²/4β


def test_show_explains_required_arguments(capsys):
    code, out, _ = run(capsys, "show", "smartmixed")
    assert code == 0 and "needs num_features" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "mihs"], "relulab show: error: unknown activation 'mihs'; did you mean 'mish'?"),
        (["show", "elu(alpha=__import__('os'))"], "is not a literal"),
        (["plot", "relu", "rleu"], "did you mean 'relu'"),
        (["plot", "relu", "--range", "2", "1"], "x range must be finite and increasing"),
        (["lsit"], "relulab: error: unknown command 'lsit'; did you mean 'list'?"),
        (["speed", "--model", "cnnn"], "unknown --model value 'cnnn'; did you mean 'cnn'?"),
        (["list", "--bogus"], "unrecognized arguments: --bogus"),
        (
            ["plot", "relu", "-o", "/nonexistent-dir/x.png"],
            "relulab plot: error: cannot write /nonexistent-dir/x.png: No such file or directory",
        ),
        (["plot", "relu", "-o", ""], "relulab plot: error: -o/--output must name a file, got ''"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(capsys, argv, message):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors exit from parse_args
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_plot_writes_a_png_with_one_panel_or_two(capsys, tmp_path):
    single, double = tmp_path / "one.png", tmp_path / "two.png"
    assert run(capsys, "plot", "relu", "gelu", "-o", str(single))[0] == 0
    code, out, _ = run(
        capsys, "plot", "relu", "helu", "golu(shift=0.5)", "--derivative", "-o", str(double)
    )
    assert code == 0 and "with derivatives" in out
    for path in (single, double):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(single.read_bytes()[16:20], "big")
    assert int.from_bytes(double.read_bytes()[16:20], "big") == 2 * width


def _raise(error: BaseException):
    def failing(*args, **kwargs):
        raise error

    return failing


@pytest.mark.parametrize(
    "error",
    [
        ZeroDivisionError("division by zero"),
        ValueError("a plain ValueError is a bug, not bad input"),
        KeyError("relu"),
        FileNotFoundError(2, "No such file or directory", "/site-packages/relulab/table.json"),
        BrokenPipeError(32, "Broken pipe"),  # not stdout's: a worker's pipe, say
    ],
    ids=type,
)
def test_a_bug_prints_its_traceback_and_exits_1(capsys, monkeypatch, error):
    monkeypatch.setattr(show_command, "run", _raise(error))
    code, _, err = run(capsys, "show", "relu")
    assert code == 1
    assert err.startswith("Traceback (most recent call last):")
    assert f"{type(error).__name__}: {error}" in err
    assert "relulab show: error:" not in err and "internal error (a bug in relulab" in err


def test_an_os_error_about_another_file_than_the_output_is_a_bug(capsys, monkeypatch, tmp_path):
    """Only the user's own -o path becomes a one-line error; a font cache, say, does not."""
    font = FileNotFoundError(2, "No such file or directory", "/usr/share/fonts/DejaVuSans.ttf")
    monkeypatch.setattr(plot_command, "plot_activations", _raise(font))
    code, _, err = run(capsys, "plot", "relu", "-o", str(tmp_path / "x.png"))
    assert code == 1 and "Traceback" in err and "DejaVuSans.ttf" in err


def test_an_unwritable_output_file_is_one_line(capsys, tmp_path):
    (tmp_path / "zoo.png").mkdir()  # the file the plot would be written to is a directory
    code, _, err = run(capsys, "plot", "relu", "-o", str(tmp_path / "zoo"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"relulab plot: error: cannot write {tmp_path / 'zoo.png'}: ")


def test_plot_without_matplotlib_names_the_extra(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = run(capsys, "plot", "relu", "-o", str(tmp_path / "x.png"))
    assert code == 2 and "pip install 'relulab[plot]'" in err


def test_no_command_prints_help(capsys):
    code, out, _ = run(capsys)
    assert code == 2 and "list" in out and "plot" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith(
        f"relulab {relulab.__version__}"
    )


def test_console_script_and_module_entry_points():
    """As a user runs it: a real process, no traceback, exit 2 on bad input."""
    bad = subprocess.run(["relulab", "show", "mihs"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert (
        bad.stderr.strip() == "relulab show: error: unknown activation 'mihs'; did you mean 'mish'?"
    )
    version = subprocess.run(
        [sys.executable, "-m", "relulab", "--version"], capture_output=True, text=True, check=False
    )
    assert version.returncode == 0 and version.stdout.startswith("relulab ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["show", "prelu(num_parameters=3)"],
            "cannot sample 'prelu(num_parameters=3)' one feature at a time",
        ),
        (
            ["show", "velu(dim=2)"],
            "velu: expected input of shape (N, C, ...) with features along dim=2",
        ),
        (["plot", "relu", "--range", "0", "inf"], "x range must be finite and increasing"),
    ],
)
def test_valid_specs_that_cannot_be_sampled_fail_in_one_line(capsys, argv, message):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_reader_that_closes_the_pipe_early_ends_the_command_quietly():
    """`relulab list | head -1`: exit status 141 (SIGPIPE's), and nothing on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before relulab writes, so its first write fails
    try:
        result = subprocess.run(
            ["relulab", "list", "--json"], stdout=write_end, stderr=subprocess.PIPE, check=False
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == b""


def test_plot_names_the_file_it_really_wrote(capsys, tmp_path):
    code, out, _ = run(capsys, "plot", "relu", "-o", str(tmp_path / "zoo"))
    assert code == 0 and (tmp_path / "zoo.png").is_file() and str(tmp_path / "zoo.png") in out
