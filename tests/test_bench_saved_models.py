"""--save-models: a trial's saved weights rebuild the model that made its predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relulab.bench import rundir
from relulab.bench.runner import load_model
from relulab.bench.tasks import get_task
from relulab.cli import main
from relulab.errors import UserError

OPTIONS = ["--tasks", "spirals", "--acts", "relu", "gelu", "--seeds", "2", "--epochs", "2"]


def test_saved_weights_reproduce_the_trials_own_predictions(tmp_path):
    assert main(["bench", *OPTIONS, "--save-models", "--out", str(tmp_path), "--quiet"]) == 0
    (run,) = tmp_path.iterdir()
    for trial in ("spirals-relu-s0", "spirals-gelu-s1"):
        model = load_model(run, trial)
        saved = np.load(rundir.trial_directory(run, trial) / rundir.PREDICTIONS)
        data = get_task("spirals").data()
        with torch.no_grad():
            probabilities = torch.softmax(model(data.x_test), dim=1).numpy()
        np.testing.assert_allclose(probabilities, saved, rtol=1e-5, atol=1e-6)
    assert not list(run.glob("**/*.tmp*")) and not (run / ".lock").exists()


def test_without_save_models_no_weights_are_kept_and_loading_says_how(tmp_path, capsys):
    assert main(["bench", *OPTIONS, "--out", str(tmp_path), "--quiet"]) == 0
    (run,) = tmp_path.iterdir()
    assert not list(run.glob("trials/*/model.pt"))
    with pytest.raises(UserError, match="--save-models"):
        load_model(run, "spirals-relu-s0")
    with pytest.raises(UserError, match="no trial 'spirals-relu-s7'"):
        load_model(run, "spirals-relu-s7")
    assert main(["bench", "--resume", str(run), "--save-models", "--quiet"]) == 2
    assert "--save-models do not apply" in capsys.readouterr().err
