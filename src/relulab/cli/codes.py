"""``relulab codes``: does a trained model behave as a hash encoder of its data?

Computes the activation code of every training and test example (one bit per hidden unit and
breakpoint, the columns constant over the training data dropped, see
:func:`relulab.geometry.activation_codes`) and prints the statistics of Lei et al., "Neural
networks behave as hash encoders" (:func:`relulab.geometry.codes.code_statistics`): how many
training examples share a linear region (determinism) and how well the codes alone classify
the test data (categorization), beside the network's own test accuracy.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from typing import Any

from relulab.cli.model_source import add_model_arguments, load_model_source
from relulab.cli.output import print_json
from relulab.errors import UserError

MAX_SEED = 2**32 - 1  # scikit-learn's random_state takes 0 .. 2**32 - 1


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "codes",
        help="activation codes of a trained model: distinct regions, accuracy of the codes alone",
        description=textwrap.fill(
            "The binary activation pattern (code) of a trained piecewise-linear model on "
            "every training and test example, constant columns dropped: how many training examples "
            "have a linear region of their own (redundancy ratio 0: every one), and the test "
            "accuracy of k-NN (Hamming), logistic regression and K-means (clusters matched to "
            "classes by the Hungarian method) fitted on the training codes alone, beside the "
            "network's own. The model comes from a run made with relulab bench --save-models, or "
            "is your own.",
            width=88,
        ),
        epilog="examples:\n"
        "  relulab bench --tasks digits --acts relu --seeds 1 --save-models --out runs\n"
        "  relulab codes runs/<run> digits-relu-s0\n"
        "  relulab codes runs/<run> digits-relu-s0 --json\n"
        "  relulab codes --checkpoint net.pt --factory nets.py:make_net --task digits",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--k", type=int, default=9, help="neighbours of the k-NN classifier (default: 9)"
    )
    parser.add_argument(
        "--seed", type=int, default=9, help=f"K-means' random state, 0 to {MAX_SEED} (default: 9)"
    )
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    parser.set_defaults(run=run)


def codes_summary(model: Any, data: Any, *, k: int = 9, seed: int = 9) -> dict[str, Any]:
    """The statistics that ``relulab codes`` prints, for ``model`` on ``data`` (a
    :class:`relulab.bench.tasks.TaskData`), as a JSON-ready dict."""
    import torch

    from relulab.geometry.codes import activation_codes, code_statistics

    if not 1 <= k <= len(data.x_train):
        raise UserError(f"--k {k}: give 1 to {len(data.x_train)} (the training examples)")
    start = time.perf_counter()
    _progress(f"activation codes of {len(data.x_train):,} training examples ...")
    train = activation_codes(model, data.x_train, drop_constant=True)
    # The full code's width, counted on one example rather than read from the sites' units,
    # which count an activation module that works on a flattened tensor as one unit.
    full = activation_codes(model, data.x_train[:1]).bits.shape[1]
    if train.bits.shape[1] == 0:
        raise UserError(
            f"all {full} bits of the code are the same on every training example, so the codes "
            "tell nothing apart (a model with every unit dead or always on?)"
        )
    _progress(f"activation codes of {len(data.x_test):,} test examples ...")
    test = activation_codes(model, data.x_test, columns=train.columns)
    _progress("k-NN, logistic regression and K-means on the codes ...")
    stats = code_statistics(train, data.y_train, test, data.y_test, k=k, seed=seed)
    with torch.no_grad():
        predicted = model(data.x_test).argmax(1)
    return {
        "train_examples": stats.examples,
        "test_examples": len(data.x_test),
        "bits": train.bits.shape[1],
        "code_bits": full,
        "distinct": stats.distinct,
        "distinct_fraction": stats.distinct / stats.examples,
        "redundancy_ratio": stats.redundancy_ratio,
        "net_accuracy": (predicted == data.y_test).double().mean().item(),
        "knn_accuracy": stats.knn_accuracy,
        "logistic_accuracy": stats.logistic_accuracy,
        "kmeans_accuracy": stats.kmeans_accuracy,
        "kmeans_test_accuracy": stats.kmeans_test_accuracy,
        "k": k,
        "seed": seed,
        "seconds": time.perf_counter() - start,
    }


def run(args: argparse.Namespace) -> int:
    from relulab.optional import require

    require("sklearn", extra="bench", purpose="relulab codes", package="scikit-learn")
    if not 0 <= args.seed <= MAX_SEED:  # before the model loads, not after the codes
        raise UserError(f"--seed {args.seed}: give 0 to {MAX_SEED}")
    source = load_model_source(args)
    s = codes_summary(source.model, source.data, k=args.k, seed=args.seed)
    if args.json:
        print_json({"trial": source.name, **s})
        return 0
    rows = [
        ("code bits", f"{s['bits']:,} of {s['code_bits']:,} "
         f"({s['code_bits'] - s['bits']:,} constant on the training data, dropped)"),
        ("distinct training codes", f"{s['distinct']:,} / {s['train_examples']:,}"),
        ("redundancy ratio", f"{s['redundancy_ratio']:.4f}  (0: every example its own region)"),
        ("test accuracy: network", _percent(s["net_accuracy"])),
        (f"  k-NN on codes (k={s['k']}, Hamming)", _percent(s["knn_accuracy"])),
        ("  logistic regression on codes", _percent(s["logistic_accuracy"])),
        ("  K-means on codes (matched)", _percent(s["kmeans_test_accuracy"])
         + f"  (train {_percent(s['kmeans_accuracy'])})"),
    ]  # fmt: skip
    label = max(len(name) for name, _ in rows)
    print(
        f"{source.name}: activation codes of {s['train_examples']:,} training and "
        f"{s['test_examples']:,} test examples ({s['seconds']:.1f} s)"
    )
    for name, value in rows:
        print(f"  {name.ljust(label)}  {value}")
    return 0


def _percent(fraction: float) -> str:
    # no padding: the value column starts where the rows above start theirs
    return f"{100 * fraction:.1f}%"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
