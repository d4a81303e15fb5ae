"""The command line: each subcommand's output and exit codes, bad input included."""

from __future__ import annotations

import io
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
        (["list", "--bogus"], "relulab list: error: unrecognized arguments: --bogus"),
        (["--bogus"], "relulab: error: unrecognized arguments: --bogus"),
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


def main_into_closed_pipe(monkeypatch, argv: list[str], *, buffered: bool) -> tuple[int, str]:
    """``relulab ARGV | head -1`` where head has already gone: run the command with stdout on a
    pipe whose reading end is closed; (exit status, stderr). The flush at the end stands for
    the interpreter's own at exit, which must not fail either."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    raw = open(write_end, "wb", buffering=0)  # noqa: SIM115 (closed below)
    stdout = io.TextIOWrapper(io.BufferedWriter(raw) if buffered else raw, write_through=True)
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    try:
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
        stdout.flush()
    finally:
        monkeypatch.undo()
        raw.close()
    return code, stderr.getvalue()


LONG_OUTPUTS = [
    ["list"],
    ["list", "--json"],
    ["show", "golu"],
    ["show", "golu", "--json"],
    ["--help"],
    ["--version"],
    [],  # no command: the help
    ["bench", "--help"],
    ["speed", "--help"],
    ["speed", "relu", "--numel", "1024", "--rounds", "1", "--json"],
]


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("argv", LONG_OUTPUTS, ids=" ".join)
def test_every_command_ends_quietly_when_its_reader_has_gone(monkeypatch, argv, buffered):
    """`relulab ... | head -1`: exit status 141 (SIGPIPE's) and nothing on stderr. Python
    buffers a pipe unless PYTHONUNBUFFERED is set, so help text used to fail only at exit."""
    code, err = main_into_closed_pipe(monkeypatch, argv, buffered=buffered)
    # argparse itself ignores a failed write of --help or --version, and then exits 0.
    argparse_wrote_it = not buffered and ("--help" in argv or "--version" in argv)
    assert err == "" and code == (0 if argparse_wrote_it else 141)


@pytest.mark.parametrize("argv", [["list", "--json"], ["bench", "--help"]], ids=" ".join)
def test_a_reader_that_closes_the_pipe_early_ends_the_command_quietly(argv):
    """As a user runs it, with Python's default buffering (PYTHONUNBUFFERED unset)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before relulab writes, so its first write fails
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    try:
        result = subprocess.run(
            ["relulab", *argv], stdout=write_end, stderr=subprocess.PIPE, env=environment,
            check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.stderr == b"" and result.returncode == 141


def test_hints_name_the_command_not_the_python_function(capsys):
    code, _, err = run(capsys, "show", "zzzqqq")
    assert code == 2
    assert (
        err.strip()
        == "relulab show: error: unknown activation 'zzzqqq' ('relulab list' lists them all)"
    )


def test_plot_names_the_file_it_really_wrote(capsys, tmp_path):
    code, out, _ = run(capsys, "plot", "relu", "-o", str(tmp_path / "zoo"))
    assert code == 0 and (tmp_path / "zoo.png").is_file() and str(tmp_path / "zoo.png") in out


TINY_BENCH = ["bench", "--acts", "relu", "--seeds", "1", "--epochs", "1"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--tasks", "spirals", "--data", "t.csv", "--target", "label"],
            "--data t.csv is for the csv task, which --tasks spirals leaves out; add csv to "
            "--tasks, or drop --data",
        ),
        (
            ["--tasks", "spirals", "digits", "--data", "t.npz", "--target", "y"],
            "--data t.npz is for the npz task, which --tasks spirals digits leaves out; add npz "
            "to --tasks, or drop --data",
        ),
        (
            ["--tasks", "spirals", "--target", "label"],
            "--target label is for the csv task, which --tasks spirals leaves out; add csv to "
            "--tasks, or drop --target",
        ),
        (
            ["--target", "label"],
            "--target label names a column of your table; give the table with --data FILE",
        ),
    ],
    ids=["csv-file", "npz-file", "target", "target-without-data"],
)
def test_data_and_target_are_refused_where_no_task_reads_them(
    capsys, tmp_path, monkeypatch, options, message
):
    """They used to be recorded in config.json while the built-in tasks trained without them."""
    monkeypatch.chdir(tmp_path)
    for name in ("t.csv", "t.npz"):
        (tmp_path / name).write_text("a,label\n1,0\n2,1\n3,0\n4,1\n")
    code, _, err = run(capsys, *TINY_BENCH, *options, "--out", "runs")
    assert code == 2 and err.strip() == f"relulab bench: error: {message}"
    assert not (tmp_path / "runs").exists()


def test_bench_help_states_the_baseline_rule_and_the_table_task(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "95% CIs" in text and "%%" not in text
    assert "(default: relu if compared, else the first of --acts)" in text
    assert "the only task unless --tasks names others too, and then it must name csv" in text


def test_a_resume_of_a_running_run_says_only_that_it_is_running(capsys, tmp_path):
    """Refused before anything else is printed: no "run ...: N trials" line first."""
    from relulab.bench import rundir

    assert main([*TINY_BENCH, "--tasks", "spirals", "--out", str(tmp_path), "--quiet"]) == 0
    run_dir = next(tmp_path.glob("*-bench"))
    capsys.readouterr()
    with rundir.exclusive(run_dir):
        code, out, err = run(capsys, "bench", "--resume", str(run_dir))
    assert code == 2 and out == ""
    assert err == f"relulab bench: error: {run_dir} is being run by another process\n"


def test_library_warnings_reach_stderr_with_the_commands_prefix(capsys, monkeypatch):
    import logging

    from relulab.cli import bench as bench_cli

    def warn_and_stop(args):
        logging.getLogger("relulab.bench.runner").warning("warning: a small table")
        return 0

    monkeypatch.setattr(bench_cli, "run", warn_and_stop)
    parser_run = main(["bench", "--quiet"])
    captured = capsys.readouterr()
    assert parser_run == 0
    assert captured.err == "relulab bench: warning: a small table\n"
