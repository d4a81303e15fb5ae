"""README: the zoo table equals the registry's, and the quick start is the two commands."""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
sys.path.insert(0, str(README.parent / "scripts"))  # README tooling lives there, not in relulab

from run_excerpts import replace_spans  # noqa: E402
from zoo_table import replace_table  # noqa: E402


def test_readme_zoo_table_is_generated_from_the_registry():
    text = README.read_text(encoding="utf-8")
    assert replace_table(text) == text, "run: python scripts/update_readme.py"


def test_readme_figures_are_those_of_the_committed_runs_they_name():
    text = README.read_text(encoding="utf-8")
    assert "<!-- run:" in text  # the spans exist, so this test checks something
    assert replace_spans(text) == text, "run: python scripts/update_readme.py"


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    text = README.read_text(encoding="utf-8")
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick_start, re.S)
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert commands[0] == 'pip install torch==2.13.0 -e ".[bench]" && relulab bench'
    assert commands[1] == 'pip install torch==2.13.0 -e ".[test]" && pytest'
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci
