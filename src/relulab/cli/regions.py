"""``relulab regions``: the exact linear regions of a trained bench model on a 2-D slice."""

from __future__ import annotations

import argparse
import sys
import textwrap
import time

from relulab.cli.model_source import add_model_arguments, load_model_source
from relulab.cli.output import check_png_output, format_table, print_json
from relulab.errors import UserError

MAX_REGIONS = 1_000_000


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "regions",
        help="exact linear regions and decision boundary of a trained model on a 2-D slice",
        description=textwrap.fill(
            "Partition a 2-D slice of a trained piecewise-linear model into the exact convex "
            "polygons on which it is affine, with its decision boundary. A 2-D task (spirals) "
            "is sliced over its data's box, with its training points; any other over the plane "
            "through three test examples (--through). The model comes from a run made with "
            "relulab bench --save-models, or is your own.",
            width=88,
        ),
        epilog="examples:\n"
        "  relulab bench --tasks spirals --acts relu --seeds 1 --save-models --out runs\n"
        "  relulab regions runs/<run> spirals-relu-s0 -o regions.png\n"
        "  relulab regions runs/<run> digits-relu-s0 --through 0 1 2 --json\n"
        "  relulab regions --benchmark            # exact partition vs a 1024x1024 grid probe",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--through",
        type=int,
        nargs=3,
        metavar="I",
        help="three test examples (indices) the plane goes through (default: the first test "
        "example of each of the first three classes); on a 2-D task this slices the plane "
        "through the three points instead of the data's box",
    )
    parser.add_argument(
        "--max-regions",
        type=int,
        metavar="N",
        help=f"stop with an error past N regions, before memory runs out (default {MAX_REGIONS:,})",
    )
    parser.add_argument("-o", "--output", help="PNG of the regions (needs the plot extra)")
    parser.add_argument("--json", action="store_true", help="print the polygons as JSON")
    parser.add_argument(
        "--benchmark",
        action="store_true",
        help="time the exact partition against a grid probe (with --json: as JSON)",
    )
    parser.set_defaults(run=run)


def _benchmark(as_json: bool) -> int:
    from relulab.bench.rundir import environment
    from relulab.geometry import benchmark

    print("timing a 4x64 ReLU MLP on [-2, 2]^2 (float64) ...", file=sys.stderr, flush=True)
    result = benchmark(progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    if as_json:
        print_json({**result, "command": "relulab regions --benchmark --json", **environment()})
        return 0
    print(
        f"exact partition {result['partition_s']:.3f} s ({result['regions']:,} regions), "
        f"1024x1024 grid probe {result['probe_s']:.3f} s ({result['probe_patterns']:,} "
        f"patterns): grid probe ÷ exact partition = {result['ratio']:.1f}x\n"
        f"torch threads {result['torch_threads']}, 1-minute load average "
        f"{result['load_average_1min']:.2f} (under load the partition's many small tensor "
        "operations slow down most)"
    )
    rows = [
        [o["net"], f"{o['regions']:,}", f"{o['partition_s']:.3f}", f"{o['regions_per_s']:,.0f}"]
        for o in result["others"]
    ]
    print(format_table(["net", "regions", "seconds", "regions/s"], rows))
    return 0


def _refuse_with_benchmark(args: argparse.Namespace) -> None:
    given = [
        name
        for name, value in (
            ("RUN/TRIAL", args.run_dir or args.trial),
            ("--checkpoint", getattr(args, "checkpoint", None)),
            ("--factory", getattr(args, "factory", None)),
            ("--task", getattr(args, "task", None)),
            ("-o", args.output),
            ("--through", args.through),
            ("--max-regions", args.max_regions),
        )
        if value is not None
    ]
    if given:
        raise UserError(
            f"--benchmark times its own fixed nets and takes no {', '.join(given)}; "
            "drop them, or drop --benchmark"
        )


def run(args: argparse.Namespace) -> int:
    if args.benchmark:
        _refuse_with_benchmark(args)
        return _benchmark(args.json)
    import torch

    from relulab.geometry import Plane, partition
    from relulab.geometry.partition import RegionLimitError

    max_regions = MAX_REGIONS if args.max_regions is None else args.max_regions
    if max_regions < 1:
        raise UserError(f"--max-regions must be >= 1, got {max_regions}")
    if args.output:
        check_png_output(args.output)
    source = load_model_source(args)
    model, data = source.model.double(), source.data
    x, y = data.x_test.double(), data.y_test
    if x[0].numel() == 2 and args.through is None:
        low, high = x.amin(0), x.amax(0)
        margin = 0.1 * (high - low)
        (x0, y0), (x1, y1) = (low - margin).tolist(), (high + margin).tolist()
        domain = torch.tensor([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=torch.float64)
        # the points the model was fitted to (the "training points on the plane")
        points, labels, notes = data.x_train.double().numpy(), data.y_train.numpy(), None
        points_label = "training examples, coloured by class"
    else:
        indices = args.through or _three_classes(y)
        for index in indices:
            if not 0 <= index < len(x):
                raise UserError(f"--through {index}: the test set has examples 0..{len(x) - 1}")
        pairs = [(indices[a], indices[b]) for a, b in ((0, 1), (0, 2), (1, 2))]
        if any(torch.equal(x[i], x[j]) for i, j in pairs):
            raise UserError(
                f"--through {' '.join(map(str, indices))}: the examples must be three "
                "different points"
            )
        try:
            domain = Plane.through(*(x[i] for i in indices))
        except UserError as error:  # e.g. three collinear images
            reason = str(error).removeprefix("Plane.through: ")
            raise UserError(f"--through {' '.join(map(str, indices))}: {reason}") from None
        # the three examples in (s, t): their offsets along the plane's orthonormal directions
        offsets = (x[list(indices)] - domain.origin).flatten(1)
        points = torch.stack([offsets @ domain.d1.flatten(), offsets @ domain.d2.flatten()], 1)
        points, labels = points.numpy(), y[list(indices)].numpy()
        with torch.no_grad():
            predicted = model(x[list(indices)]).argmax(1).tolist()
        points_label = "the three test examples, coloured by class"
        notes = [
            f"test #{i}: {label}" + ("" if label == guess else f" (model: {guess})")
            for i, label, guess in zip(indices, labels.tolist(), predicted)
        ]
    print(f"partitioning {source.name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    shown = [start]

    def progress(line: str) -> None:  # at most once a second, after the first second
        now = time.perf_counter()
        if now - shown[0] >= 1.0:
            shown[0] = now
            print(f"  {line} ({now - start:.0f} s)", file=sys.stderr, flush=True)

    try:
        result = partition(model, domain, progress=progress, max_regions=max_regions)
    except RegionLimitError as error:
        raise UserError(
            f"{source.name}: more than --max-regions {error.limit:,} linear regions "
            f"({error.found:,}) by {error.where}; raise --max-regions if memory allows"
        ) from None
    except MemoryError as error:
        raise UserError(
            f"out of memory partitioning {source.name}; lower --max-regions (now {max_regions:,})"
        ) from error
    seconds = time.perf_counter() - start
    summary = {
        "trial": source.name,
        "regions": result.count,
        "boundary_segments": len(result.boundary),
        "seconds": seconds,
    }
    if args.output:
        from relulab.plot.regions import plot_regions

        summary["plot"] = str(
            plot_regions(
                result,
                args.output,
                points=points,
                labels=labels,
                notes=notes,
                title=source.name,
                points_label=points_label,
            )
        )
    if args.json:
        summary["polygons"] = [r.vertices.tolist() for r in result.regions]
        summary["boundary"] = result.boundary.tolist()
        print_json(summary)
    else:
        print(
            f"{source.name}: {result.count:,} linear regions, {len(result.boundary):,} decision-"
            f"boundary segments, in {seconds:.2f} s"
            + (f"\nplot: {summary['plot']}" if args.output else "")
        )
    return 0


def _three_classes(labels) -> list[int]:
    """The first test example of each of the first three classes that occur."""
    first: dict[int, int] = {}
    for index, label in enumerate(labels.tolist()):
        first.setdefault(label, index)
    if len(first) < 3:
        raise UserError("a plane needs three examples: give them with --through I J K")
    return list(first.values())[:3]
