"""The GPU parity table: each model compared across devices, layer by layer, in one run.

For a machine with an accelerator (the device tool's H200; see docs/gpu.md for the exact
call). Pairs, each in float32 and float64 for every model:

- ``lucid:cpu-torch:cuda``  the Lucid model on the CPU against its torch twin on CUDA;
- ``torch:cpu-torch:cuda``  the twin on the CPU against a copy of it on CUDA (what CUDA
                            itself changes, with no Lucid involved);
- ``lucid:gpu-torch:cuda``  Lucid's ``'gpu'`` device (MLX) against the twin on CUDA; float32
                            only: its float64 rows are listed as not run (MLX holds float64
                            as float32, the mlx-float32 convention).

Weights are seeded and BatchNorm statistics randomised on the Lucid model (the default
signal of ``python -m parity``), then transferred; float32 runs without TF32 (see
``TorchAdapter.precise``). A pair whose device is absent prints ``skipped`` and its
reason; a pair that raises prints ``error`` and the exception, and the table goes on.
Exit status: 0 when at least one pair ran and every pair that ran passed, 1 otherwise
(nothing ran included: a table of skips is no GPU result), 2 for bad arguments.

Usage: python bench/gpu_parity.py [--pair P ...] [--model NAME ...] [--size 299] [--batch 2]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from tabulate import tabulate

from parity._openblas import quiet_openblas_workers

quiet_openblas_workers()  # as ``python -m parity`` does, before numpy loads

import lucid_inception  # noqa: E402
from lucid_inception.frameworks import ADAPTERS  # noqa: E402
from parity.comparison import compare, unheld_dtype  # noqa: E402
from parity.signal import prepare_signal, seeded_input  # noqa: E402
from parity.weights import transfer  # noqa: E402

DEFAULT_PAIRS = ("lucid:cpu-torch:cuda", "torch:cpu-torch:cuda", "lucid:gpu-torch:cuda")
DTYPES = ("float32", "float64")
_ADAPTERS = {adapter.name: adapter for adapter in ADAPTERS}


def parse_pair(text: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """``"lucid:cpu-torch:cuda"`` -> ``(("lucid", "cpu"), ("torch", "cuda"))``."""
    sides = text.split("-")
    if len(sides) != 2 or not all(side.count(":") == 1 for side in sides):
        raise argparse.ArgumentTypeError(f"expected FRAMEWORK:DEVICE-FRAMEWORK:DEVICE, got {text!r}")
    parsed = tuple(tuple(side.split(":")) for side in sides)
    for framework, device in parsed:
        if framework not in _ADAPTERS:
            raise argparse.ArgumentTypeError(
                f"unknown framework {framework!r}; valid: {', '.join(_ADAPTERS)}"
            )
        if device not in _ADAPTERS[framework].devices:
            valid = ", ".join(_ADAPTERS[framework].devices)
            raise argparse.ArgumentTypeError(f"{framework} has no device {device!r}; valid: {valid}")
    return parsed


def skip_reason(pair: tuple[tuple[str, str], tuple[str, str]]) -> str | None:
    reasons = [
        f"{framework}={device}: {reason}"
        for framework, device in pair
        if (reason := _ADAPTERS[framework].device_unavailable(device))
    ]
    return "; ".join(reasons) or None


def build_pair(name: str, pair: tuple[tuple[str, str], tuple[str, str]], x) -> tuple[object, object]:
    """A seeded Lucid source; each side is the source itself (Lucid) or a twin loaded from it."""
    source = lucid_inception.build(name, "lucid")
    prepare_signal(source, x, seed=0)
    models = []
    for framework, _ in pair:
        if framework == "lucid" and not any(m is source for m in models):
            models.append(source)
            continue
        model = lucid_inception.build(name, framework)
        transfer(source, model)
        models.append(model)
    return models[0], models[1]


def run_one(name: str, pair, dtype: str, x) -> tuple[list[str], str | None]:
    """One table row, and why it was skipped or failed to run (``None`` when it ran)."""
    label = "-".join(f"{framework}:{device}" for framework, device in pair)
    unheld = [r for framework, device in pair if (r := unheld_dtype(framework, device, dtype))]
    if unheld:  # float64 on Lucid's 'gpu': MLX makes it float32, so it could never pass
        return [name, label, dtype, "skipped", "-", "-", "-", "-"], f"{label} {dtype}: {'; '.join(unheld)}"
    reason = skip_reason(pair)
    if reason:
        return [name, label, dtype, "skipped", "-", "-", "-", "-"], f"{label}: {reason}"
    start = time.perf_counter()
    try:
        a, b = build_pair(name, pair, x)
        report = compare(a, b, x, dtype=dtype, devices=(pair[0][1], pair[1][1]))
    except Exception as error:  # noqa: BLE001 (one pair's failure must not hide the others)
        traceback.print_exc(file=sys.stderr)
        note = f"{name} {label} {dtype}: {type(error).__name__}: {error}"
        return [name, label, dtype, "error", "-", "-", "-", f"{time.perf_counter() - start:.1f} s"], note
    logits = [r for r in report.rows if r.kind == "output" and r.module == ""]
    worst = report.worst(1)[0]
    return [
        name,
        label,
        dtype,
        "PASS" if report.ok else "FAIL",
        report.first_divergence or "-",
        f"{worst.max_rel / worst.tol:.3g}" if worst.tol else f"{worst.max_rel:.3g}",
        f"{logits[-1].max_rel:.3g}" if logits else "-",
        f"{time.perf_counter() - start:.1f} s",
    ], None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pair", action="append", type=parse_pair, help=f"repeatable (default: {', '.join(DEFAULT_PAIRS)})"
    )
    parser.add_argument("--model", action="append", choices=lucid_inception.MODEL_NAMES)
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="repeatable (default: both)")
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args(argv)
    if args.size < 75:
        parser.error(f"--size: the smallest input every model accepts is 75, got {args.size}")
    if args.batch < 1:
        parser.error(f"--batch: expected >= 1, got {args.batch}")
    pairs = args.pair or [parse_pair(p) for p in DEFAULT_PAIRS]
    x = seeded_input(args.batch, args.size, 0)
    rows, notes = [], []
    for name in args.model or lucid_inception.MODEL_NAMES:
        for pair in pairs:
            for dtype in args.dtype or DTYPES:
                row, note = run_one(name, pair, dtype, x)
                rows.append(row)
                if note and note not in notes:
                    notes.append(note)
                print(" | ".join(row), file=sys.stderr, flush=True)  # progress
    headers = [
        "model",
        "pair (a-b)",
        "dtype",
        "verdict",
        "first divergence",
        "worst rel/tol",
        "logits rel",
        "time",
    ]
    print(f"{args.batch}x3x{args.size}x{args.size}, seed 0")
    print(tabulate(rows, headers=headers, disable_numparse=True))
    for note in notes:
        print(f"not run: {note}")
    ran = [row for row in rows if row[3] != "skipped"]
    if not ran:  # a GPU table with no row in it is no result: say so, and fail
        print("nothing ran: no pair could run here (the reasons are above)")
        return 1
    return 0 if all(row[3] == "PASS" for row in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
