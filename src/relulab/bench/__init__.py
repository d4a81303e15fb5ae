"""relulab.bench: paired multi-seed comparisons of activations on small embedded tasks.

    from relulab.bench import BenchConfig, render, run_missing, start_run

    run, config, specs = start_run(BenchConfig(tasks=["spirals"]), Path("runs"))
    run_missing(run, specs, workers=2)
    rows = render(run)  # summary.csv, report.md, plots

The command line (``relulab bench``, ``relulab report``) wraps exactly these calls.
"""

from relulab.bench import charlm  # noqa: F401  (registers the charlm task)
from relulab.bench.report import render
from relulab.bench.runner import BenchConfig, plan, resume_run, run_missing, start_run
from relulab.bench.tasks import Task, TaskData, get_task, list_tasks, register_task
from relulab.bench.trainer import TrialSpec, run_trial

__all__ = [
    "BenchConfig",
    "Task",
    "TaskData",
    "TrialSpec",
    "get_task",
    "list_tasks",
    "plan",
    "register_task",
    "render",
    "resume_run",
    "run_missing",
    "run_trial",
    "start_run",
]
