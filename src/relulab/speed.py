"""Speed and memory of the activations, measured side by side in one process.

For each activation and each implementation (relulab's fused kernel; relulab's reference
formula under autograd; torch's native module where torch has one; the timm pattern, i.e.
a save-input-only autograd Function with eager formulas, which is relulab's fused kernel with
compilation off) this times forward and forward+backward on one tensor, next to a clone of
that tensor (the memory-bandwidth yardstick) and native ReLU. Rounds go round-robin over
every implementation, and ratios are taken within each round, so that a machine's drift
hits numerator and denominator alike; the figures are the median and quartiles over rounds.

:func:`training_step` does the same for whole training steps of an MLP and a small CNN:
step time and peak memory relative to ReLU.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from relulab.errors import UserError
from relulab.kernels import compilation, compiled_kernels_available
from relulab.memory import saved_bytes
from relulab.registry import activation_info, get_activation, resolve_name

IMPLEMENTATIONS = ("fused", "reference", "native", "timm_pattern")


@dataclass
class Timing:
    """Seconds per call over rounds, and ratios to yardsticks taken within each round."""

    seconds: list[float] = field(default_factory=list)
    ratios: dict[str, list[float]] = field(default_factory=dict)

    def add(self, seconds: float, **yardsticks: float) -> None:
        self.seconds.append(seconds)
        for key, reference in yardsticks.items():
            self.ratios.setdefault(key, []).append(seconds / reference)

    def summary(self) -> dict[str, float]:
        """Median seconds; per yardstick the median ratio and its quartiles (…_q1, …_q3)."""
        out: dict[str, float] = {"seconds": statistics.median(self.seconds)}
        for key, values in self.ratios.items():
            q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
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
                f"relulab speed takes names at default arguments, not specs: {name!r}; "
                f"try {name.split('(')[0].strip()!r}"
            )
    names = [resolve_name(n) for n in names]
    for name in names:
        if not activation_info(name).elementwise:
            raise UserError(
                f"{name!r} is not elementwise; relulab speed times elementwise activations"
            )
    return ["relu", *(n for n in dict.fromkeys(names) if n != "relu")]


def _time(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@contextlib.contextmanager
def _threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def elementwise(
    names: list[str],
    *,
    numel: int = 1 << 24,
    dtype: torch.dtype = torch.float32,
    threads: int = 2,
    rounds: int = 7,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Forward and forward+backward of each activation's implementations, side by side."""
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

    calls = {
        key: (forward(m, key[1] == "fused"), forward_backward(m, key[1] == "fused"))
        for key, m in variants.items()
    }
    results: dict[tuple[str, str], dict[str, Timing]] = {
        key: {"forward": Timing(), "forward_backward": Timing()} for key in variants
    }
    clone = lambda: x.clone()  # noqa: E731
    with _threads(threads):
        for key, (fwd, fwd_bwd) in calls.items():  # warm-up: compiles, allocator, caches
            if progress:
                progress(f"warming up {key[0]} ({key[1]})")
            fwd(), fwd_bwd()
        for round_index in range(rounds):
            if progress:
                progress(f"round {round_index + 1}/{rounds}")
            clone_seconds = statistics.median(_time(clone) for _ in range(3))
            relu_seconds = _time(calls[("relu", "native")][1])
            for key, (fwd, fwd_bwd) in calls.items():
                for kind, call in (("forward", fwd), ("forward_backward", fwd_bwd)):
                    results[key][kind].add(
                        _time(call), to_clone=clone_seconds, to_relu=relu_seconds
                    )
    input_bytes = x.numel() * x.element_size()
    rows = []
    for (name, implementation), module in variants.items():
        saved = _saved_bytes(module, x)
        rows.append(
            {
                "activation": name,
                "implementation": implementation,
                "forward": results[(name, implementation)]["forward"].summary(),
                "forward_backward": results[(name, implementation)]["forward_backward"].summary(),
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
        "rows": rows,
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


def peak_memory(step: Callable[[], Any]) -> int:
    """The most bytes that ``step`` holds at once beyond what existed before it.

    From the profiler's memory record: each op's own allocations net of its own frees
    (``self_cpu_memory_usage``, so nested ops are not counted twice) and the frees that
    happen between ops (``[memory]`` events), replayed in time order.
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as profiler:
        step()
    changes = sorted(
        (
            e.time_range.start,
            e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage,
        )
        for e in profiler.events()
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
    """Step time (forward, backward, Adam) and peak memory of each activation, relative to ReLU."""
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
            timings = {name: Timing() for name in steps}
            for round_index in range(rounds):
                if progress:
                    progress(f"{model_name}: round {round_index + 1}/{rounds}")
                relu_seconds = _time(steps["relu"])
                for name, step in steps.items():
                    timings[name].add(_time(step), to_relu=relu_seconds)
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
    return {"threads": threads, "rounds": rounds, "rows": rows}
