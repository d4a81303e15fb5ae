"""Speed and memory of the activations, measured side by side in one process.

For each activation and each implementation (relulab's fused kernel; relulab's reference
formula under autograd; torch's native module where torch has one; the timm pattern, i.e.
a save-input-only autograd Function with eager formulas, which is relulab's fused kernel with
compilation off) this times forward and forward+backward on one tensor, next to a clone of
that tensor (the memory-bandwidth yardstick) and torch's native ReLU. Rounds go round-robin
over every implementation (:func:`round_robin`), and ratios are taken within each round, so
that a machine's drift hits numerator and denominator alike; the figures are the median and
quartiles over rounds. Each reference is one of the rows, measured once per round: the row
``relu native`` forward+backward is the time every ``to_relu`` ratio divides by, so it reads
exactly 1.

:func:`training_step` does the same for whole training steps of an MLP and a small CNN:
step time and peak memory relative to relulab's ReLU (the row ``relu``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils import benchmark

from relulab.errors import UserError
from relulab.kernels import compilation, compiled_kernels_available
from relulab.memory import saved_bytes
from relulab.registry import activation_info, get_activation, registered, resolve_name

IMPLEMENTATIONS = ("fused", "reference", "native", "timm_pattern")

# A call shorter than this is timed in blocks of calls; torch's Timer.blocked_autorange, run
# for this long, picks how many (timer overhead at most 1e-4 of the block).
WARM_UP_SECONDS = 0.02
# Each yardstick is timed this many times per round, and the round uses their median: a
# slow yardstick sample would skew every ratio of its round.
YARDSTICK_SAMPLES = 3

Key = TypeVar("Key", bound=Hashable)


@dataclass
class Timing:
    """Seconds per call over rounds, and ratios to yardsticks taken within each round."""

    seconds: list[float] = field(default_factory=list)
    ratios: dict[str, list[float]] = field(default_factory=dict)

    def add(self, seconds: float, **yardsticks: float) -> None:
        self.seconds.append(seconds)
        for key, reference in yardsticks.items():
            self.ratios.setdefault(key, []).append(seconds / reference)

    def relative_to(self, key: str, other: Timing) -> None:
        """Add the ratios ``key`` of this call's seconds to ``other``'s of the same round."""
        if len(other.seconds) != len(self.seconds):
            raise ValueError(f"{len(self.seconds)} rounds against {len(other.seconds)}")
        self.ratios[key] = [mine / theirs for mine, theirs in zip(self.seconds, other.seconds)]

    def summary(self) -> dict[str, float]:
        """Median seconds; per yardstick the median ratio and its quartiles (…_q1, …_q3).

        Quartiles interpolate between the rounds' values (numpy's default), so they stay
        within the values: with few rounds, the exclusive method would reach beyond them.
        """
        out: dict[str, float] = {"seconds": statistics.median(self.seconds)}
        for key, values in self.ratios.items():
            if len(values) > 1:
                q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
            else:
                q1 = q3 = values[0]
            out.update({key: statistics.median(values), f"{key}_q1": q1, f"{key}_q3": q3})
        return out


def _module(name: str, implementation: str) -> nn.Module | None:
    if implementation == "native":  # torch's own module, where torch has one
        equivalent = activation_info(name).torch
        return equivalent.native() if equivalent is not None else None
    return get_activation(name, fused=implementation != "reference")


def _saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for backward of ``module(x)``, parameters excluded."""
    leaf = x.detach().requires_grad_()
    return saved_bytes(lambda: module(leaf), resident=module.parameters())


def _elementwise_names(names: list[str]) -> list[str]:
    """Canonical names, ReLU first (every ratio is taken against it)."""
    for name in names:
        if "(" in name:  # torch's native kernels are timed at their defaults, so ours are too
            raise UserError(
                f"timings use activations at their default arguments, not specs: {name!r}; "
                f"try {name.split('(')[0].strip()!r}"
            )
    names = [resolve_name(n) for n in names]
    for name in names:
        if not activation_info(name).elementwise:
            raise UserError(
                f"{name!r} is not elementwise; relulab speed times elementwise activations"
            )
    return ["relu", *(n for n in dict.fromkeys(names) if n != "relu")]


@contextlib.contextmanager
def _threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _warm_up(
    call: Callable[[], Any], threads: int, clock: Callable[[], float]
) -> Callable[[], float]:
    """Warm ``call`` up; return a function that times one block of calls (seconds per call).

    The first call compiles kernels and fills the allocator. torch's Timer then picks the
    block: hundreds of calls for a few thousand elements, whose single call is too short to
    time. A second call that takes ``WARM_UP_SECONDS`` or more is a block by itself (Timer's
    own rule would say so after one more call: a 16M-element tensor's).
    """
    call()
    block = timeit.Timer(call, timer=clock)  # as Timer's own: garbage collection off
    if block.timeit(1) >= WARM_UP_SECONDS:
        number = 1
    else:
        timer = benchmark.Timer("call()", globals={"call": call}, timer=clock, num_threads=threads)
        number = timer.blocked_autorange(min_run_time=WARM_UP_SECONDS).number_per_run
    # Rounds time the block without Timer.timeit's own warm-up of two calls per
    # measurement: measured on 16M elements, that made rounds 3.4-4.9x longer and did not
    # change the ratios beyond their run-to-run spread.
    return lambda: block.timeit(number) / number


def round_robin(
    calls: Mapping[Key, Callable[[], Any]],
    yardsticks: Mapping[str, Key],
    *,
    rounds: int,
    threads: int = 2,
    clock: Callable[[], float] = time.perf_counter,
    progress: Callable[[str], None] | None = None,
) -> dict[Key, Timing]:
    """Time every call once per round, in turn, against yardsticks timed in the same round.

    A yardstick is one of the calls, measured once per round: its own row and every ratio
    to it share that measurement, so its ratio to itself is exactly 1. Each call is warmed
    up first, once (see ``_warm_up``). A round times each yardstick ``YARDSTICK_SAMPLES``
    times (their median is the round's), then one block of each other call, and records
    every call's seconds and its ratio to each yardstick. A machine that slows down between
    rounds slows numerator and denominator alike.

    Args:
        calls: what to time, by key.
        yardsticks: the key of a call, by the name its ratios get (``to_relu``, say).
        rounds: timed rounds.
        threads: torch's intra-op threads while timing.
        clock: seconds, for tests; :func:`time.perf_counter` by default.
        progress: called with a line before each warm-up and each round.
    """
    unknown = [key for key in yardsticks.values() if key not in calls]
    if unknown:
        raise ValueError(f"yardsticks {unknown} are not among the calls")

    def label(key: Hashable) -> str:
        return " ".join(map(str, key)) if isinstance(key, tuple) else str(key)

    def warm_up(key: Hashable, call: Callable[[], Any]) -> Callable[[], float]:
        if progress:
            progress(f"warming up {label(key)}")
        return _warm_up(call, threads, clock)

    timings: dict[Key, Timing] = {key: Timing() for key in calls}
    with _threads(threads):
        timers = {key: warm_up(key, call) for key, call in calls.items()}
        for round_index in range(rounds):
            if progress:
                progress(f"round {round_index + 1}/{rounds}")
            measured = {
                key: statistics.median(timers[key]() for _ in range(YARDSTICK_SAMPLES))
                for key in dict.fromkeys(yardsticks.values())
            }
            for key, time_block in timers.items():
                if key not in measured:
                    measured[key] = time_block()
            references = {name: measured[key] for name, key in yardsticks.items()}
            for key in calls:
                timings[key].add(measured[key], **references)
    return timings


def _prefixed(progress: Callable[[str], None] | None, prefix: str) -> Callable[[str], None]:
    return lambda line: progress(prefix + line) if progress else None


# The memory-bandwidth yardstick's key among elementwise's calls.
CLONE = ("clone",)
# What each ratio of :func:`elementwise` divides by; every time is from the same round.
ELEMENTWISE_REFERENCES = {
    "to_clone": "x.clone() of the same tensor (clone_seconds)",
    "to_relu": "torch.relu forward+backward (the row relu native)",
    "to_reference": "the same activation's reference formula under autograd",
    "to_native": "the same activation's torch module",
}


def elementwise(
    names: list[str],
    *,
    numel: int = 1 << 24,
    dtype: torch.dtype = torch.float32,
    threads: int = 2,
    rounds: int = 7,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Forward and forward+backward of each activation's implementations, side by side.

    Each row's ``forward`` and ``forward_backward`` summaries (see :meth:`Timing.summary`)
    hold the ratios to a clone (``to_clone``) and to native ReLU's forward+backward
    (``to_relu``) and, where they exist, to the same activation's reference and native
    implementations (``to_reference``, ``to_native``), all taken round by round; the
    result's ``references`` says so. The row ``relu native`` is ReLU's measurement itself:
    its ``forward_backward["to_relu"]`` is 1. ``clone_seconds`` is the clone's median time.
    """
    names = _elementwise_names(names)
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(numel, generator=generator) * 3).to(dtype)
    upstream = torch.randn(numel, generator=generator).to(dtype)
    variants: dict[tuple[str, str], nn.Module] = {}
    for name in names:
        for implementation in IMPLEMENTATIONS:
            module = _module(name, implementation)
            if module is not None:
                variants[(name, implementation)] = module.to(dtype)

    def forward(module: nn.Module, compiled: bool) -> Callable[[], Any]:
        def call() -> None:
            with compilation(compiled):
                module(x.detach().requires_grad_())

        return call

    def forward_backward(module: nn.Module, compiled: bool) -> Callable[[], Any]:
        def call() -> None:
            with compilation(compiled):
                module(x.detach().requires_grad_()).backward(upstream)

        return call

    calls: dict[tuple[str, ...], Callable[[], Any]] = {CLONE: lambda: x.clone()}
    for (name, implementation), module in variants.items():
        compiled = implementation == "fused"
        calls[(name, implementation, "forward")] = forward(module, compiled)
        calls[(name, implementation, "forward_backward")] = forward_backward(module, compiled)
    yardsticks = {"to_clone": CLONE, "to_relu": ("relu", "native", "forward_backward")}
    timings = round_robin(calls, yardsticks, rounds=rounds, threads=threads, progress=progress)
    # Against the same activation's eager formula and torch's kernel, also round by round.
    for name, implementation in variants:
        for kind in ("forward", "forward_backward"):
            for other in ("reference", "native"):
                if other != implementation and (name, other) in variants:
                    timings[(name, implementation, kind)].relative_to(
                        f"to_{other}", timings[(name, other, kind)]
                    )
    input_bytes = x.numel() * x.element_size()
    rows = []
    for (name, implementation), module in variants.items():
        saved = _saved_bytes(module, x)
        rows.append(
            {
                "activation": name,
                "implementation": implementation,
                "forward": timings[(name, implementation, "forward")].summary(),
                "forward_backward": timings[(name, implementation, "forward_backward")].summary(),
                "saved_bytes": saved,
                "saved_to_input": saved / input_bytes,
            }
        )
    return {
        "numel": numel,
        "dtype": str(dtype).replace("torch.", ""),
        "threads": threads,
        "rounds": rounds,
        "compiled_kernels": compiled_kernels_available(),
        "references": ELEMENTWISE_REFERENCES,
        "clone_seconds": timings[CLONE].summary()["seconds"],
        "rows": rows,
    }


def with_native_module() -> list[str]:
    """The fused activations that torch also has as a module (what ``--sweep`` compares)."""
    fused = [info.name for info in registered() if info.kernel is not None]
    return [name for name in _elementwise_names(fused) if _module(name, "native") is not None]


# Sizes of `relulab speed --sweep`: 1K to 16M elements, a factor 4 apart.
SWEEP_SIZES = tuple(1 << k for k in range(10, 25, 2))


def sweep(
    names: list[str],
    *,
    sizes: tuple[int, ...] = SWEEP_SIZES,
    dtype: torch.dtype = torch.float32,
    threads: int = 2,
    rounds: int = 7,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """:func:`elementwise` at each of ``sizes``, one size after another, and for each
    activation the default (fused) path's time ÷ torch's own module at each size:
    ``native_ratios[name][kind]`` is a list of (median, q1, q3) of the per-round ratios, one
    per size, for ``kind`` forward and forward_backward (in the order of ``names``). ``runs``
    keeps every size's result. Every name needs a torch module: a UserError names those
    without one (the default of ``relulab speed --sweep``: :func:`with_native_module`)."""
    missing = [name for name in _elementwise_names(names) if _module(name, "native") is None]
    if missing:
        raise UserError(
            f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no torch module "
            f"to compare with; --sweep takes {', '.join(with_native_module())}"
        )
    runs = []
    for index, numel in enumerate(sizes, 1):
        if progress is not None:  # one line per size: its warm-ups would be hundreds
            progress(f"{numel:,} elements ({index}/{len(sizes)})")
        runs.append(elementwise(names, numel=numel, dtype=dtype, threads=threads, rounds=rounds))
    ratios: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for run in runs:
        for row in run["rows"]:
            if row["implementation"] != "fused" or "to_native" not in row["forward"]:
                continue
            kinds = ratios.setdefault(row["activation"], {"forward": [], "forward_backward": []})
            for kind, series in kinds.items():
                summary = row[kind]
                series.append(
                    (summary["to_native"], summary["to_native_q1"], summary["to_native_q3"])
                )
    return {
        "sizes": list(sizes),
        "dtype": str(dtype).replace("torch.", ""),
        "threads": threads,
        "rounds": rounds,
        "compiled_kernels": compiled_kernels_available(),
        "native_ratios_entries": "per size: median, first and third quartile over rounds",
        "native_ratios": ratios,
        "runs": runs,
    }


# --- whole training steps -----------------------------------------------------------------


def _mlp(activation: Callable[[], nn.Module]) -> nn.Module:
    width = 1024
    layers: list[nn.Module] = [nn.Linear(256, width), activation()]
    for _ in range(3):
        layers += [nn.Linear(width, width), activation()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def _cnn(activation: Callable[[], nn.Module]) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), activation(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2), activation(),
        nn.Conv2d(64, 64, 3, padding=1), activation(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


MODELS = {
    "mlp": (_mlp, (512, 256)),  # batch 512, 256 inputs: 4 hidden layers of 1024
    "cnn": (_cnn, (64, 3, 32, 32)),  # batch 64 of 32×32 RGB
}


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send what C++ code writes to file descriptor 2 to /dev/null, for the block's length.

    torch's profiler writes its own notes there (``profiler_start``, ``Memory block of
    unknown size ...``), past ``sys.stderr``. Python's ``sys.stderr``, where it writes to
    descriptor 2, is pointed at the terminal meanwhile, so relulab's own lines still show.
    """
    with contextlib.ExitStack() as stack:
        terminal = os.dup(2)
        stack.callback(os.close, terminal)
        try:
            sys.stderr.flush()  # what Python wrote before goes out first
            writes_to_fd_2 = sys.stderr.fileno() == 2
        except (AttributeError, OSError, ValueError):  # None, or a stream without a descriptor
            writes_to_fd_2 = False
        if writes_to_fd_2:
            stream = open(  # noqa: SIM115 (closed by the stack)
                terminal, "w", buffering=1, encoding=sys.stderr.encoding, closefd=False
            )
            stack.enter_context(stream)
            stack.enter_context(contextlib.redirect_stderr(stream))
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        stack.callback(os.dup2, terminal, 2)  # first of the callbacks to run
        yield


def peak_memory(step: Callable[[], Any]) -> int:
    """The most bytes that ``step`` holds at once beyond what existed before it.

    From the profiler's memory record: each op's own allocations net of its own frees
    (``self_cpu_memory_usage``, so nested ops are not counted twice) and the frees that
    happen between ops (``[memory]`` events), replayed in time order. The profiler's own
    notes on descriptor 2 are silenced (see ``_native_stderr_silenced``).
    """
    # Garbage from before (a cycle holding tensors) freed by a collection during the step
    # would count as the step's own negative usage and understate its peak.
    gc.collect()
    activities = [torch.profiler.ProfilerActivity.CPU]
    with _native_stderr_silenced():
        with torch.profiler.profile(activities=activities, profile_memory=True) as profiler:
            step()
        events = profiler.events()
    changes = sorted(
        (
            e.time_range.start,
            e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage,
        )
        for e in events
    )
    current = peak = 0
    for _, change in changes:
        current += change
        peak = max(peak, current)
    return peak


def training_step(
    names: list[str],
    *,
    models: tuple[str, ...] = ("mlp", "cnn"),
    threads: int = 2,
    rounds: int = 5,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Step time (forward, backward, Adam) and peak memory of each activation, relative to ReLU.

    Each row's ``step_to_relu`` is its step time ÷ the row ``relu``'s (relulab's ReLU) in
    the same round, median and quartiles over rounds; the row ``relu`` is that measurement
    itself, so it reads exactly 1. ``peak_to_relu`` is its peak memory ÷ the row ``relu``'s.
    """
    names = _elementwise_names(names)
    rows = []
    with _threads(threads):
        for model_name in models:
            build, shape = MODELS[model_name]
            generator = torch.Generator().manual_seed(0)
            x = torch.randn(*shape, generator=generator)
            y = torch.randint(0, 10, (shape[0],), generator=generator)
            steps: dict[str, Callable[[], None]] = {}
            # torch's own ReLU too: it keeps y, which the next layer keeps anyway, where
            # relulab's keeps a 1-byte mask of its own.
            factories = {n: (lambda n=n: get_activation(n)) for n in names}
            factories["relu (torch)"] = nn.ReLU
            for name, factory in factories.items():
                torch.manual_seed(0)
                model = build(factory)
                optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

                def step(model=model, optimizer=optimizer, x=x, y=y) -> None:
                    optimizer.zero_grad(set_to_none=True)
                    nn.functional.cross_entropy(model(x), y).backward()
                    optimizer.step()

                step()  # creates Adam's state; compiles kernels
                steps[name] = step
            memory = {}
            for name, step in steps.items():
                if progress:
                    progress(f"{model_name}: peak memory of {name}")
                memory[name] = peak_memory(step)
            timings = round_robin(
                steps,
                {"to_relu": "relu"},  # the row relu is the yardstick's measurement
                rounds=rounds,
                threads=threads,
                progress=_prefixed(progress, f"{model_name}: "),
            )
            for name in steps:
                summary = timings[name].summary()
                rows.append(
                    {
                        "model": model_name,
                        "activation": name,
                        "step_seconds": summary["seconds"],
                        "step_to_relu": summary["to_relu"],
                        "step_to_relu_q1": summary["to_relu_q1"],
                        "step_to_relu_q3": summary["to_relu_q3"],
                        "peak_bytes": memory[name],
                        "peak_to_relu": memory[name] / memory["relu"],
                    }
                )
    references = {
        "step_to_relu": "the row relu's step time (relulab's ReLU), same round",
        "peak_to_relu": "the row relu's peak memory",
    }
    return {"threads": threads, "rounds": rounds, "references": references, "rows": rows}
