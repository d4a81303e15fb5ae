"""Seeded GPT experiments on the attention: (LayerNorm | none) x (ReLU | GELU), as "ReLU's
Revival" (Jha & Reagen 2024), and softmax vs ReLA attention (Zhang, Titov & Sennrich 2021).

Every cell of an experiment is a change of the same base GPT (:data:`EXPERIMENTS`), trained
once per seed on the character corpus with the same windows for the same seed, so that cells
are paired by seed and compared with the bench's paired t-test (Holm-adjusted over the
experiment's comparisons). A run is a directory per cell and seed holding ``train_in``'s
checkpoint and metrics and a ``result.json`` (validation loss, :class:`AttentionStats`, or the
step where the loss diverged), so an interrupted experiment resumes where it stopped.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from relulab.bench import rundir
from relulab.bench.stats import holm, paired_t_test, summary
from relulab.errors import TrainingDiverged, UserError
from relulab.registry import did_you_mean
from relulab.transformers.attention_stats import attention_statistics
from relulab.transformers.corpus import load_corpus
from relulab.transformers.train import load_checkpoint, train_in, validation_windows

# experiment -> cell -> the GPTConfig fields it changes
EXPERIMENTS: dict[str, dict[str, dict[str, str]]] = {
    "norm-activation": {
        f"{norm}-{activation}": {"norm": norm, "activation": activation}
        for norm in ("layernorm", "none")
        for activation in ("relu", "gelu")
    },
    "attention": {kind: {"attention": kind} for kind in ("softmax", "rela")},
}
# experiment -> (treatment, baseline) pairs tested
COMPARISONS: dict[str, list[tuple[str, str]]] = {
    "norm-activation": [("none-relu", "none-gelu"), ("layernorm-relu", "layernorm-gelu")],
    "attention": [("rela", "softmax")],
}
# A head whose mean normalised entropy is above this attends almost uniformly: the "entropic
# overload" the paper sees in early layers of LayerNorm-free GELU models. Our threshold.
NEAR_UNIFORM = 0.9
# Entropies from float32 weights agree to about 1e-7; differences below this are rounding.
ENTROPY_RESOLUTION = 1e-6


def experiment_cells(name: str) -> dict[str, dict[str, str]]:
    """The cells of experiment ``name``; a one-line UserError naming the nearest one."""
    if name not in EXPERIMENTS:
        hint = did_you_mean(name, list(EXPERIMENTS)) or f" (choices: {', '.join(EXPERIMENTS)})"
        raise UserError(f"unknown experiment {name!r}{hint}")
    return EXPERIMENTS[name]


def run_cell(
    directory: Path, settings: dict[str, Any], windows: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Train (or resume) one cell and seed in ``directory``; its result, also written to
    ``result.json``. A diverged run is a result too (``diverged``: the error's message)."""
    done = directory / "result.json"
    if done.is_file():
        return rundir.read_json(done)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        model, history = train_in(directory, settings, progress)
    except TrainingDiverged as error:
        result: dict[str, Any] = {"diverged": str(error), "val_loss": math.nan}
    else:
        x, _ = validation_windows(load_corpus().val, model.config.block_size, windows)
        stats = attention_statistics(model, x)
        result = {
            "diverged": None,
            "val_loss": history[-1]["val_loss"],
            "train_seconds": sum(h["seconds"] for h in history),
            "stats": stats.to_dict(),
        }
    rundir.write_json_atomic(done, result)
    return result


def run_experiment(
    run: Path,
    name: str,
    seeds: list[int],
    base: dict[str, Any],
    train: dict[str, Any],
    *,
    threads: int = 2,
    windows: int = 256,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, dict[int, dict[str, Any]]]:
    """Every cell of experiment ``name`` for every seed, in ``run/cells/CELL-seedS``:
    results by cell, then seed. ``base`` holds the GPTConfig fields all cells share, ``train``
    the TrainConfig fields (the seed is each run's)."""
    results: dict[str, dict[int, dict[str, Any]]] = {}
    cells = experiment_cells(name)
    total, count = len(cells) * len(seeds), 0
    for cell, change in cells.items():
        results[cell] = {}
        for seed in seeds:
            count += 1
            settings = {
                "model": {**base, **change},
                "train": {**train, "seed": seed},
                "threads": threads,
            }

            def report(line: str, where: str = f"[{count}/{total}] {cell} seed {seed}") -> None:
                progress(f"{where}: {line}")

            results[cell][seed] = run_cell(
                run / "cells" / f"{cell}-seed{seed}", settings, windows, report
            )
    return results


def summarize(name: str, results: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, Any]:
    """Per cell: validation loss (mean, CI), perplexity, divergences, NaN weights and the
    heads' mean entropy, zero weights and switched-off rows (means over the seeds that
    finished); and the experiment's paired comparisons of the validation loss (Holm-adjusted)
    and of the early layers' normalised entropy (first half of the layers; unadjusted)."""
    cells: dict[str, Any] = {}
    for cell, by_seed in results.items():
        finished = [r for r in by_seed.values() if not r["diverged"]]
        losses = [r["val_loss"] for r in by_seed.values()]
        heads = {
            key: _mean_matrix([r["stats"][key] for r in finished])
            for key in ("entropy", "normalized_entropy", "zero_fraction", "off_fraction")
        }
        loss = summary(losses)
        cells[cell] = {
            "val_loss": loss,
            "perplexity": _exp(loss["mean"]) if finished else math.nan,
            "seeds": sorted(by_seed),
            "diverged": sum(bool(r["diverged"]) for r in by_seed.values()),
            "nan_weights": int(
                sum(np.nansum(np.array(r["stats"]["nan_count"], dtype=float)) for r in finished)
            ),
            "heads": heads,
            "near_uniform_heads": _share(heads["normalized_entropy"], NEAR_UNIFORM),
            "train_seconds": summary([r["train_seconds"] for r in finished])["mean"],
        }
        for key in ("entropy", "normalized_entropy", "zero_fraction", "off_fraction"):
            cells[cell][f"mean_{key}"] = _nanmean(heads[key])
    comparisons = {}
    for treatment, baseline in COMPARISONS[name]:
        seeds = sorted(set(results[treatment]) & set(results[baseline]))
        difference, p = paired_t_test(
            [results[treatment][s]["val_loss"] for s in seeds],
            [results[baseline][s]["val_loss"] for s in seeds],
        )
        comparisons[f"{treatment} vs {baseline}"] = {
            "treatment": treatment,
            "baseline": baseline,
            "val_loss_difference": difference,
            # perplexity ratio of the geometric means: exp of the mean paired difference
            "perplexity_change": _exp(difference) - 1 if math.isfinite(difference) else None,
            "p_value": p,
            "pairs": len(seeds),
        }
        # "entropic overload" sits in the early layers: their mean normalised entropy per
        # run, paired the same way (a diverged run has none and drops out of the pairs)
        early = [(_early_entropy(results[treatment][s]), _early_entropy(results[baseline][s]))
                 for s in seeds]  # fmt: skip
        entropy_difference, entropy_p = paired_t_test(*zip(*early)) if early else (math.nan,) * 2
        if all(abs(t - b) < ENTROPY_RESOLUTION for t, b in early):
            entropy_p = math.nan  # both uniform, say: the differences are rounding
        comparisons[f"{treatment} vs {baseline}"].update(
            early_entropy_difference=entropy_difference, early_entropy_p_value=entropy_p
        )
    adjusted = holm({key: c["p_value"] for key, c in comparisons.items()})
    for key, comparison in comparisons.items():
        comparison["p_holm"] = adjusted[key]
    return {
        "experiment": name,
        "near_uniform": NEAR_UNIFORM,
        "cells": cells,
        "comparisons": comparisons,
    }


def _exp(x: float) -> float:
    # a run that blew up without a NaN (losses of 1e4 nats) has an infinite perplexity
    return math.inf if x > 700 else math.exp(x)


def _early_entropy(result: Mapping[str, Any]) -> float:
    """Mean normalised entropy over the heads of the first half of the layers (at least one)."""
    if result["diverged"]:
        return math.nan
    matrix = result["stats"]["normalized_entropy"]
    values = _measured(matrix[: max(1, len(matrix) // 2)])
    return float(np.mean(values)) if values else math.nan


def _mean_matrix(matrices: list[list[list[float | None]]]) -> list[list[float | None]]:
    if not matrices:
        return []
    stacked = np.array(matrices, dtype=np.float64)  # None -> nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a head off in every seed: NaN
        mean = np.nanmean(stacked, axis=0)
    return [[None if math.isnan(v) else float(v) for v in row] for row in mean]


def _measured(matrix: list[list[float | None]]) -> list[float]:
    """A (layer, head) matrix's values, without the heads that were never measured (None)."""
    return [v for row in matrix for v in row if v is not None]


def _nanmean(matrix: list[list[float | None]]) -> float | None:
    values = _measured(matrix)
    return float(np.mean(values)) if values else None


def _share(matrix: list[list[float | None]], threshold: float) -> float | None:
    values = _measured(matrix)
    return sum(v > threshold for v in values) / len(values) if values else None


@torch.no_grad()
def time_cells(
    run: Path, cells: list[str], seed: int, batch: int = 32, rounds: int = 6
) -> dict[str, Any]:
    """Forward and training-step time of each cell's trained model (seed ``seed``), measured
    side by side: the cells take turns within each round, and the median over rounds is kept.
    The load average is recorded: the figures mean something only on an idle machine."""
    models = {}
    for cell in cells:
        model, _ = load_checkpoint(run / "cells" / f"{cell}-seed{seed}" / "checkpoint.pt")
        models[cell] = model
    block = next(iter(models.values())).config.block_size
    x, y = validation_windows(load_corpus().val, block, batch)
    times: dict[str, dict[str, list[float]]] = {c: {"forward": [], "train_step": []} for c in cells}
    for _ in range(1 + rounds):  # the first round warms up
        for cell, model in models.items():
            model.eval()
            start = time.perf_counter()
            model(x)
            times[cell]["forward"].append(time.perf_counter() - start)
            model.train()
            with torch.enable_grad():
                start = time.perf_counter()
                _, loss = model(x, y)
                loss.backward()
                times[cell]["train_step"].append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
    return {
        "batch": batch,
        "block_size": block,
        "rounds": rounds,
        "warmup_rounds": 1,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "median_seconds": {
            cell: {kind: float(np.median(values[1:])) for kind, values in kinds.items()}
            for cell, kinds in times.items()
        },
    }
