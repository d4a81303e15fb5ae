"""The encrypted (2-party MPC) cost of a model: measured with CrypTen, or estimated.

:func:`encrypted_cost` runs the model's private inference with CrypTen (``pip install``: see
the README's ``pi`` extra) and reports its latency, communication and rounds;
:func:`cost_model` estimates the same from the number of ReLUs and multiplications, with
per-operation costs measured here with CrypTen 0.4.1 (below) and their sources.

What is measured: CrypTen's semi-honest 2-party protocol (arithmetic secret sharing over the
64-bit integers, 16 fractional bits) with its default trusted-first-party (TFP) provider. The
server's model is encrypted once (not timed); each timed inference shares the client's input,
runs the encrypted forward pass and reveals the logits. The two parties are two forked
processes on this machine, one torch thread each, talking over ``torch.distributed``'s gloo
backend on the loopback interface: CrypTen counts communication only in that mode (its
in-process, threaded communicator logs nothing, and a single party sends nothing). Because
TFP draws the Beaver triples from seeds the parties share, the figures are the *online* phase
only; a real offline phase (oblivious transfer or homomorphic encryption) would add to both.
Loopback hides network cost: over a network add ``bytes / bandwidth + rounds * round_trip``,
which :func:`cost_model` does when given those.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import math
import multiprocessing
import os
import queue
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import nn

from relulab.errors import UserError
from relulab.optional import MissingDependencyError

# torch 2.9 moved the TorchScript ONNX exporter's registry; CrypTen 0.4.1 imports it by its
# old name (crypten/nn/onnx_converter.py) and fails with "No module named
# 'torch.onnx._internal.registration'".
_OLD_REGISTRATION = "torch.onnx._internal.registration"
_NEW_REGISTRATION = "torch.onnx._internal.torchscript_exporter.registration"

_PARTY_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class OperationCost:
    """The online cost of one operation in CrypTen's 2-party protocol.

    ``bytes`` is the traffic between the two parties (both directions) per element;
    ``rounds`` the communication rounds per *layer* of such operations, however many elements
    it has (CrypTen evaluates a layer's elements in one batch); ``seconds`` the compute per
    element on one core, network excluded.
    """

    bytes: float
    rounds: int
    seconds: float
    source: str


# Measured with encrypted_cost's setup (CrypTen 0.4.1, torch 2.13 CPU, TFP provider, two
# processes on one AMD EPYC core each, gloo on loopback), from
# crypten.comm.get().get_communication_stats() around single operations on 10^2..4*10^5
# elements: bytes were exactly linear in the element count and rounds constant. Seconds are
# the slope of the median time between 10^5 and 4*10^5 elements (2-core machine shared with
# other jobs: +-50%); each round also cost about 3 ms on loopback (round_trip_s=3e-3).
# A ReLU is x * (x > 0): the comparison converts the share to binary (a 64-bit adder in
# log2(64) = 6 rounds of AND gates) and back, then one Beaver multiplication: 29 opened ring
# elements of 8 bytes (464 B) in 9 rounds. CrypTen's own benchmark (README, "Benchmarks"):
# ReLU on a 100x100 tensor takes 3.8 us in plaintext and 2.53 ms encrypted (0.25 us per
# element, on a multi-core machine with its round overhead included).
RELU = OperationCost(
    bytes=464.0,
    rounds=9,
    seconds=3.5e-6,
    source="measured here with CrypTen 0.4.1 (464 B, 9 rounds, 3.5 us/element on one core); "
    "CrypTen README benchmark: relu on 100x100 2.53 ms encrypted vs 3.8 us plaintext",
)
# A product of two secret values (Beaver triple): each party opens both masked operands, one
# 8-byte ring element each, to the other: 2 x 2 x 8 = 32 B per product in 1 round; the
# fixed-point truncation after it is local in 2-party CrypTen.
MULTIPLICATION = OperationCost(
    bytes=32.0,
    rounds=1,
    seconds=0.2e-6,
    source="measured here with CrypTen 0.4.1 (32 B, 1 round, 0.2 us per elementwise product)",
)
# A linear layer with an encrypted weight is one Beaver matrix product: it opens every input
# element and every weight element once (16 B each), however many multiply-adds it does; its
# compute is the plaintext layer's, a few times over.
LINEAR_OPERAND = OperationCost(
    bytes=16.0,
    rounds=1,
    seconds=0.0,
    source="measured here with CrypTen 0.4.1 (secret x secret matmul/conv: 16 B per operand "
    "element, 1 round)",
)
# Revealing the result: each party sends its share of every output element to the other.
REVEAL = OperationCost(
    bytes=16.0,
    rounds=1,
    seconds=0.0,
    source="measured here with CrypTen 0.4.1 (get_plain_text: 16 B per element, 1 round)",
)
# CrypTen's 2x2 max-pool (log-reduction max with its one-hot argmax): 5920 B per output, i.e.
# per each of its 3 comparisons 1973 B (~4 ReLUs), and 46 rounds per pooling layer. Other
# window sizes take other round counts; not measured.
MAXPOOL_COMPARISON = OperationCost(
    bytes=5920.0 / 3,
    rounds=46,
    seconds=12.8e-6,
    source="measured here with CrypTen 0.4.1 (2x2 max_pool2d: 5920 B per output, 46 rounds, "
    "38 us per output on one core)",
)


def cost_model(
    relus: int,
    multiplications: int = 0,
    *,
    linear_operands: int = 0,
    maxpool_comparisons: int = 0,
    relu_layers: int = 1,
    multiplication_layers: int = 1,
    maxpool_layers: int = 1,
    outputs: int = 0,
    bandwidth_bytes_per_s: float | None = None,
    round_trip_s: float | None = None,
    relu: OperationCost = RELU,
    multiplication: OperationCost = MULTIPLICATION,
    linear_operand: OperationCost = LINEAR_OPERAND,
    maxpool_comparison: OperationCost = MAXPOOL_COMPARISON,
    reveal: OperationCost = REVEAL,
) -> dict[str, Any]:
    r"""Estimated online cost of a private inference from its operation counts.

    .. math::
        \text{bytes} = 464\,R + 32\,M + 16\,L + 1973\,C + 16\,O,\qquad
        \text{rounds} = 9\,\ell_R + \ell_M + 46\,\ell_C + [O > 0],\qquad
        t = t_R R + t_M M + t_C C + \text{bytes}/B + \text{rounds}\cdot\text{RTT}

    with the per-operation costs of :data:`RELU`, :data:`MULTIPLICATION`,
    :data:`LINEAR_OPERAND`, :data:`MAXPOOL_COMPARISON` and :data:`REVEAL` (CrypTen's 2-party
    protocol, online phase). Rounds grow with the number of *layers*, not elements, because a
    layer is evaluated in one batch.

    Args:
        relus: ReLU evaluations per input (:math:`R`).
        multiplications: elementwise products of two secret values (:math:`M`), e.g. the
            degree-2 polynomials that replace ReLUs; products with public values are free.
        linear_operands: for linear layers with encrypted weights, the input elements plus
            weight elements of each (:math:`L`); linear layers cost no rounds of their own
            beyond ``multiplication_layers``.
        maxpool_comparisons: max-pool comparisons (:math:`C`), window size - 1 per output.
        relu_layers: layers of ReLUs (:math:`\ell_R`).
        multiplication_layers: layers of secret products, linear layers included
            (:math:`\ell_M`).
        maxpool_layers: 2x2 max-pool layers (:math:`\ell_C`).
        outputs: output elements revealed to the client (:math:`O`, 16 B each, 1 round);
            sharing the client's input costs nothing with CrypTen's TFP provider.
        bandwidth_bytes_per_s: network bandwidth :math:`B`; ``None`` leaves network time out.
        round_trip_s: network round-trip time; ``None`` leaves it out (3e-3 reproduces the
            per-round overhead measured on loopback here).

    Returns:
        ``bytes``, ``rounds``, ``latency_s`` and the ``sources`` of the per-operation costs.

    Example::

        >>> cost = cost_model(1000, relu_layers=1)
        >>> cost["bytes"], cost["rounds"]
        (464000.0, 9)
    """
    counts = {
        "relus": relus,
        "multiplications": multiplications,
        "linear_operands": linear_operands,
        "maxpool_comparisons": maxpool_comparisons,
        "relu_layers": relu_layers,
        "multiplication_layers": multiplication_layers,
        "maxpool_layers": maxpool_layers,
        "outputs": outputs,
    }
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"{name} must be an integer >= 0, got {value!r}")
    for name, value in (
        ("bandwidth_bytes_per_s", bandwidth_bytes_per_s),
        ("round_trip_s", round_trip_s),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(f"{name} must be a positive number or None, got {value!r}")

    total_bytes = relus * relu.bytes + multiplications * multiplication.bytes
    total_bytes += linear_operands * linear_operand.bytes
    total_bytes += maxpool_comparisons * maxpool_comparison.bytes + outputs * reveal.bytes
    rounds = relu.rounds * relu_layers * (relus > 0)
    rounds += (
        multiplication.rounds * multiplication_layers * (multiplications + linear_operands > 0)
    )
    rounds += maxpool_comparison.rounds * maxpool_layers * (maxpool_comparisons > 0)
    rounds += reveal.rounds * (outputs > 0)
    latency = relus * relu.seconds + multiplications * multiplication.seconds
    latency += maxpool_comparisons * maxpool_comparison.seconds
    if bandwidth_bytes_per_s is not None:
        latency += total_bytes / bandwidth_bytes_per_s
    if round_trip_s is not None:
        latency += rounds * round_trip_s
    return {
        "bytes": total_bytes,
        "rounds": rounds,
        "latency_s": latency,
        "sources": {
            "relu": relu.source,
            "multiplication": multiplication.source,
            "linear_operand": linear_operand.source,
            "maxpool_comparison": maxpool_comparison.source,
            "reveal": reveal.source,
        },
    }


def import_crypten() -> ModuleType:
    """``import crypten``, made to work with torch >= 2.9; a one-line error when missing.

    CrypTen 0.4.1 imports ``torch.onnx._internal.registration``, which torch 2.9 moved under
    ``torch.onnx._internal.torchscript_exporter``: the old name is aliased in
    ``sys.modules`` for the duration of the import only. CrypTen's ONNX export is also made
    to ask for the TorchScript exporter (``dynamo=False``), which its converter was written
    for; torch >= 2.9 defaults to the dynamo exporter, which needs ``onnxscript``.
    """
    if "crypten" in sys.modules:
        _patch_onnx_export()
        return sys.modules["crypten"]
    if importlib.util.find_spec("crypten") is None:
        raise MissingDependencyError(
            "encrypted inference needs crypten: pip install 'relulab[pi]' && "
            "pip install --no-deps crypten==0.4.1"
        )
    aliased = False
    if importlib.util.find_spec("torch.onnx._internal") is not None:
        try:
            importlib.import_module(_OLD_REGISTRATION)
        except ImportError:
            sys.modules[_OLD_REGISTRATION] = importlib.import_module(_NEW_REGISTRATION)
            aliased = True
    try:
        crypten = importlib.import_module("crypten")
    finally:
        if aliased:  # crypten keeps its own reference; nobody else should see the old name
            del sys.modules[_OLD_REGISTRATION]
    _patch_onnx_export()
    return crypten


def _patch_onnx_export() -> None:
    converter = importlib.import_module("crypten.nn.onnx_converter")
    if getattr(converter._export_pytorch_model, "_relulab", False):
        return
    legacy = (
        {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    )

    def export(f, pytorch_model, dummy_input):
        # CrypTen's own arguments (crypten/nn/onnx_converter.py) plus the exporter choice; the
        # legacy exporter's deprecation notices are addressed to CrypTen, not to our user.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "You are using the legacy", DeprecationWarning)
            warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
            torch.onnx.export(
                pytorch_model,
                dummy_input,
                f,
                do_constant_folding=False,
                export_params=True,
                input_names=["input"],
                operator_export_type=torch.onnx.OperatorExportTypes.ONNX,
                output_names=["output"],
                opset_version=converter._OPSET_VERSION,
                **legacy,
            )
        return f

    export._relulab = True
    converter._export_pytorch_model = export


@contextmanager
def _counting_operations(crypten: ModuleType, private_model: Any) -> Iterator[dict[str, int]]:
    """Count the ReLU evaluations and max-pool comparisons that ``private_model`` runs, on
    CrypTen's own graph (so functional ``relu`` calls in the PyTorch model are included)."""
    counts = {"relus": 0, "maxpool_comparisons": 0}
    modules = crypten.nn.module

    def counting(module, key, per_output):
        # the class's method: CrypTen's __getattribute__ routes "forward" to the instance's
        forward = type(module).forward.__get__(module)

        def counted(*args, **kwargs):
            out = forward(*args, **kwargs)
            counts[key] += out.numel() * per_output
            return out

        return counted

    for module in private_model.modules():
        if isinstance(module, modules.ReLU):
            module.forward = counting(module, "relus", 1)
        elif isinstance(module, modules.MaxPool2d):
            size = module.kernel_size
            window = size * size if isinstance(size, int) else math.prod(size)
            # CrypTen's log-reduction max: window - 1 pairwise comparisons per output
            module.forward = counting(module, "maxpool_comparisons", window - 1)
    try:
        yield counts
    finally:
        for module in private_model.modules():
            module.__dict__.pop("forward", None)


def _party(
    rank: int,
    rendezvous: str,
    private_model: Any,
    x: torch.Tensor,
    repeats: int,
    results: Any,
) -> None:
    try:
        os.environ.update(
            WORLD_SIZE="2",
            RANK=str(rank),
            RENDEZVOUS=f"file://{rendezvous}",
            DISTRIBUTED_BACKEND="gloo",
        )
        torch.set_num_threads(1)  # one core per party: two parties share this machine fairly
        crypten = sys.modules["crypten"]
        crypten.init()
        crypten.cfg.communicator.verbose = True  # CrypTen counts bytes only when verbose
        communicator = crypten.comm.get()
        private_model.encrypt(src=0)  # the server owns the model
        private_model.eval()
        with _counting_operations(crypten, private_model) as counts, crypten.no_grad():
            private_model(crypten.cryptensor(x, src=1))  # warm-up, untimed
        runs = []
        for _ in range(repeats):
            torch.distributed.barrier()
            communicator.reset_communication_stats()
            start = time.perf_counter()
            with crypten.no_grad():
                logits = private_model(crypten.cryptensor(x, src=1)).get_plain_text()
            seconds = time.perf_counter() - start
            stats = communicator.get_communication_stats()
            runs.append((seconds, stats["bytes"], stats["rounds"]))
        crypten.uninit()
        results.put((rank, runs, logits, counts))
    except BaseException:
        results.put((rank, traceback.format_exc(), None, None))
        raise


def _collect(parties: list[Any], results: Any) -> dict[int, list[Any]]:
    """Each party's report; the traceback of the first party that failed as a RuntimeError."""
    reports: dict[int, list[Any]] = {}
    deadline = time.monotonic() + _PARTY_TIMEOUT_S
    while len(reports) < len(parties):
        try:
            rank, *report = results.get(timeout=1.0)
        except queue.Empty:
            dead = [
                rank
                for rank, party in enumerate(parties)
                if rank not in reports and party.exitcode not in (None, 0)
            ]
            if dead:
                raise RuntimeError(
                    f"CrypTen party {dead[0]} died with exit code {parties[dead[0]].exitcode}"
                ) from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"CrypTen parties took over {_PARTY_TIMEOUT_S:.0f} s") from None
            continue
        if isinstance(report[0], str):
            raise RuntimeError(f"CrypTen party {rank} failed:\n{report[0]}")
        reports[rank] = report
    return reports


def encrypted_cost(
    model: nn.Module, input_shape: Sequence[int], repeats: int = 3
) -> dict[str, Any]:
    """Measure the private inference of ``model`` with CrypTen's 2-party protocol.

    See the module docstring for what is measured. The model is converted with
    ``crypten.nn.from_pytorch`` (through ONNX, so its layers must be ones CrypTen supports),
    encrypted by party 0; party 1 supplies a random input of ``input_shape`` (batch
    dimension included), which is shared, run and revealed ``repeats`` times after one
    warm-up.

    Args:
        model: a PyTorch model; it is copied, not changed.
        input_shape: the shape of one input batch, e.g. ``(1, 40)``.
        repeats: timed inferences; latency is their median.

    Returns:
        ``latency_s`` (median seconds per inference, the slower party), ``latencies_s``,
        ``bytes`` (traffic between the parties per inference, both directions), ``rounds``
        (communication calls per inference and party), ``relus`` and
        ``maxpool_comparisons`` (counted on CrypTen's graph), ``max_abs_error`` of the
        revealed logits (``output``) against the plaintext model's for the same input
        (``torch.randn(input_shape)`` from a generator seeded with 0), and the setup (``parties``,
        ``provider``, ``communicator``, versions).

    Raises:
        MissingDependencyError: CrypTen is not installed.
        UserError: a bad ``input_shape`` or ``repeats``, or a model CrypTen cannot convert.
    """
    if (
        isinstance(input_shape, (str, bytes))
        or not isinstance(input_shape, Sequence)
        or not input_shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)
    ):
        raise UserError(
            f"input_shape must be a non-empty sequence of positive ints, got {input_shape!r}"
        )
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise UserError(f"repeats must be an integer >= 1, got {repeats!r}")
    crypten = import_crypten()
    if crypten.is_initialized():
        # the forked parties would inherit this process's communicator and skip their own
        raise RuntimeError("CrypTen is initialised in this process; call crypten.uninit() first")

    model = copy.deepcopy(model).eval()
    x = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    try:
        private_model = crypten.nn.from_pytorch(model, x)
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0]
        raise UserError(
            f"CrypTen cannot convert {type(model).__name__}: {type(error).__name__}: {first}"
        ) from error

    context = multiprocessing.get_context("fork")  # the parties inherit the converted model
    results = context.Queue()
    with tempfile.TemporaryDirectory(prefix="relulab-crypten-") as directory:
        rendezvous = os.path.join(directory, "rendezvous")  # gloo's file store, removed with it
        parties = [
            context.Process(
                target=_party,
                args=(rank, rendezvous, private_model, x, repeats, results),
                daemon=True,
            )
            for rank in range(2)
        ]
        for party in parties:
            party.start()
        try:
            reports = _collect(parties, results)
        finally:
            for party in parties:
                party.join(timeout=5)
                if party.is_alive():  # its peer failed and it waits for a message
                    party.kill()
                    party.join()

    runs = list(zip(reports[0][0], reports[1][0]))
    latencies = [max(first[0], second[0]) for first, second in runs]
    # each party logs what it sends and receives: the traffic is half the sum (CrypTen's note)
    traffic = [(first[1] + second[1]) / 2 for first, second in runs]
    _, logits, counts = reports[0]
    return {
        "latency_s": statistics.median(latencies),
        "latencies_s": latencies,
        "bytes": statistics.median(traffic),
        "rounds": statistics.median(first[2] for first, _ in runs),
        **counts,
        "max_abs_error": (logits - expected).abs().max().item(),
        "output": logits.tolist(),
        "parties": 2,
        "provider": str(crypten.cfg.mpc.provider),
        "communicator": "two forked processes, gloo over loopback, 1 torch thread each",
        "input_shape": list(input_shape),
        "repeats": repeats,
        "crypten": crypten.__version__,
        "torch": torch.__version__,
    }
