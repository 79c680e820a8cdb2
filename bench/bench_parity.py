"""What a layer-by-layer comparison costs, and how faithful the pair is, from one run.

Per model, side by side:
- time: ``compare`` (float32, forward, every module's output captured and compared) over
  the time of the two bare forwards it replaces (Lucid's, then torch's, both ``no_grad``,
  eval mode); medians of ``--repeats`` alternating runs, at batch ``--batch`` and
  ``--mem-batch``. Target <= 1.3. A compare runs the Lucid and the torch forward side by
  side, one thread each with half the cores (``parity._side_by_side``); the bare forwards
  run one after the other with every core, as a user runs them. Measured as
  ``python -m parity`` runs it: this script,
  like the CLI, sets ``OPENBLAS_THREAD_TIMEOUT=4`` before numpy loads unless it is set
  (see ``parity/_openblas.py``); the last time column is a fresh process where numpy's
  OpenBLAS keeps its default (a library call from a program that loaded numpy first), for
  information. ``--breakdown`` times the parts in both. Every compare timed must pass: one
  that fails makes its time infinite (FAIL), and the run says where it first diverged.
- memory: peak resident memory of a ``compare`` at ``--mem-batch`` (8) over the peak of the
  bigger bare forward at that batch. Each is measured in a fresh subprocess that imports
  both frameworks and builds the model(s) it runs, as its peak resident set size (Linux:
  ``VmHWM``, see ``peak_rss_mb``; elsewhere ``ru_maxrss``). Peak RSS is the honest measure
  here: it sees every allocator (numpy, torch's c10 allocator, MLX, the interpreter);
  ``tracemalloc`` only sees allocations that report to Python's tracer (numpy's do,
  torch's and MLX's do not), so it would miss the torch side's activations entirely. RSS
  is a process-wide high-water mark, hence one fresh process per measurement; it also
  counts the imports and weights every process holds: printed are the imports alone and
  the imports plus both models (a compare must hold both; a bare forward holds one), so
  that the activation overhead can be read off; the ratio in brackets is over the
  imports-only baseline. Target <= 1.5.
- fidelity: in float64 every module's output within 1e-12 relative; in float32 the
  logits within 1e-5 (weights seeded, BatchNorm statistics randomised: the default signal).

PASS/FAIL per target; the exit status is 1 when any target fails. Not a test.

Usage: python bench/bench_parity.py [--model NAME ...] [--size 299] [--batch 1]
       [--mem-batch 8] [--repeats 3] [--breakdown]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from parity._openblas import quiet_openblas_workers

# As ``python -m parity`` does, before numpy loads; not in the child that times numpy's default.
if "--numpy-default" not in sys.argv:
    quiet_openblas_workers()

import numpy as np  # noqa: E402
from tabulate import tabulate  # noqa: E402

import lucid_inception  # noqa: E402
from lucid_inception.frameworks import adapter_for  # noqa: E402
from parity.comparison import compare  # noqa: E402
from parity.report import module_label  # noqa: E402
from parity.signal import prepare_signal, seeded_input  # noqa: E402
from parity.weights import transfer  # noqa: E402

TARGETS = {"time": 1.3, "memory": 1.5, "float64 layers": 1e-12, "float32 logits": 1e-5}
NUMPY_DEFAULT = "numpy default"  # the timing run in a process without OPENBLAS_THREAD_TIMEOUT


def _pair(name: str, x: np.ndarray, *, signal: bool = True) -> tuple[object, object]:
    source = lucid_inception.build(name, "lucid")
    twin = lucid_inception.build(name, "torch")
    if signal:
        prepare_signal(source, x, seed=0)
    transfer(source, twin)
    return source, twin


def _bare_forward(model: object, x: np.ndarray) -> float:
    adapter = adapter_for(model)
    adapter.set_training(model, False)
    tensor = adapter.tensor(x, device="cpu")
    start = time.perf_counter()
    with adapter.no_grad():
        model(tensor)
    return time.perf_counter() - start


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB.

    On Linux ``ru_maxrss`` survives ``exec``: a child forked from a 1.3 GB parent reports at
    least 1.3 GB whatever it does. ``VmHWM`` in ``/proc/self/status`` is the same high-water
    mark kept per address space, which ``exec`` replaces, so it is read there when present.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS


def time_pair(source: object, twin: object, x: np.ndarray, repeats: int) -> dict[str, object]:
    """Median seconds of Lucid's bare forward, torch's, and a compare, in alternating rounds
    after a warm-up of each. A compare that fails is no time to report: its ratio is
    infinite and ``failing`` names where it first diverged (else None)."""
    _bare_forward(source, x), _bare_forward(twin, x)
    reports = [compare(source, twin, x)]
    runs: dict[str, list[float]] = {"lucid_s": [], "torch_s": [], "compare_s": []}
    for _ in range(repeats):
        runs["lucid_s"].append(_bare_forward(source, x))
        runs["torch_s"].append(_bare_forward(twin, x))
        start = time.perf_counter()
        reports.append(compare(source, twin, x))
        runs["compare_s"].append(time.perf_counter() - start)
    medians: dict[str, object] = {key: statistics.median(values) for key, values in runs.items()}
    medians["ratio"] = medians["compare_s"] / (medians["lucid_s"] + medians["torch_s"])
    failing = next((report for report in reports if not report.ok), None)
    medians["failing"] = None if failing is None else module_label(failing.first_divergence)
    if failing is not None:
        medians["ratio"] = math.inf
    return medians


def child(kind: str, name: str, size: int, batch: int, repeats: int) -> None:
    """One measurement in this (fresh) process: peak memory of ``kind``, or ``time``; prints JSON."""
    x = seeded_input(batch, size, 0)
    if kind == "time":
        timed = time_pair(*_pair(name, x), x, repeats)
        print(json.dumps(timed | {"OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT")}))
        return
    # Values do not change memory: no BatchNorm calibration (its train-mode forward at a
    # bigger batch would set the high-water mark).
    if kind in ("compare", "pair"):
        source, twin = _pair(name, x, signal=False)
        if kind == "compare":
            compare(source, twin, x)
    elif kind in ("lucid", "torch"):
        model = lucid_inception.build(name, kind)
        _bare_forward(model, x)
    elif kind != "baseline":
        raise ValueError(f"unknown measurement {kind!r}")
    print(json.dumps({"kind": kind, "peak_mb": peak_rss_mb()}))


def _run_child(
    kind: str, name: str, size: int, batch: int, repeats: int = 1, env: dict | None = None, *flags: str
) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--model", name, "--size", str(size)]
    command += ["--batch", str(batch), "--repeats", str(repeats), *flags]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"measurement {kind} of {name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure(kind: str, name: str, size: int, batch: int) -> float:
    return float(_run_child(kind, name, size, batch)["peak_mb"])


def _time_with_numpy_default(name: str, size: int, batch: int, repeats: int) -> dict[str, float]:
    """``time_pair`` in a fresh process whose numpy OpenBLAS keeps its idle-thread timeout."""
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_THREAD_TIMEOUT"}
    return _run_child("time", name, size, batch, repeats, env, "--numpy-default")


@contextlib.contextmanager
def _timing(totals: dict[str, float]) -> Iterator[None]:
    """While active, add the seconds spent in each framework's convolution kernels (Lucid's
    are numpy ``tensordot`` calls, torch's ``F.conv2d``) and in the compare's own work
    (``max_errors``, the state check) to ``totals``, from whichever thread (a compare
    runs Lucid's forward on a thread of its own). For ``--breakdown`` only: the headline
    ratios are measured without these wrappers."""
    import torch.nn.modules.conv as torch_conv  # the module whose ``F`` torch's Conv2d calls

    compare_module = sys.modules["parity.comparison"]
    targets = [
        (np, "tensordot", "Lucid convolutions"),
        (torch_conv.F, "conv2d", "torch convolutions"),
        (compare_module, "max_errors", "comparing outputs"),
        (compare_module, "_state_rows", "state check"),
    ]
    originals = [getattr(owner, attr) for owner, attr, _ in targets]

    lock = threading.Lock()

    def timed(fn, label):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    totals[label] = totals.get(label, 0.0) + time.perf_counter() - start

        return wrapper

    for (owner, attr, label), original in zip(targets, originals, strict=True):
        setattr(owner, attr, timed(original, label))
    try:
        yield
    finally:
        for (owner, attr, _), original in zip(targets, originals, strict=True):
            setattr(owner, attr, original)


def breakdown(name: str, size: int, batch: int, repeats: int) -> list[list[str]]:
    """Seconds per part, bare forwards against a compare (medians of alternating runs).
    A Lucid/torch compare runs the two forwards side by side (``parity._side_by_side``):
    its parts overlap, so "everything else" (the total less the parts) is shown for the
    bare forwards only, which run one after the other."""
    x = seeded_input(batch, size, 0)
    source, twin = _pair(name, x, signal=False)
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "compare": []}
    compare(source, twin, x)  # warm-up
    for _ in range(repeats):
        for mode in runs:
            totals: dict[str, float] = {}
            with _timing(totals):
                start = time.perf_counter()
                if mode == "bare":
                    _bare_forward(source, x), _bare_forward(twin, x)
                else:
                    compare(source, twin, x)
                totals["total"] = time.perf_counter() - start
            runs[mode].append(totals)
    labels = ["Lucid convolutions", "torch convolutions", "comparing outputs", "state check"]
    table = []
    for label in [*labels, "everything else", "total"]:
        row = [name, label]
        for mode in runs:
            if label == "everything else":
                if mode == "compare":  # parts on two threads at once: they may sum past the total
                    row.append("-")
                    continue
                values = [r["total"] - sum(r.get(k, 0.0) for k in labels) for r in runs[mode]]
            else:
                values = [r.get(label, 0.0) for r in runs[mode]]
            row.append(f"{statistics.median(values):.3f}")
        table.append(row)
    return table


def bench_model(name: str, size: int, batch: int, mem_batch: int, repeats: int, say) -> dict:
    say(f"{name}: building and preparing the pair ({size}x{size})")
    x = seeded_input(batch, size, 0)
    source, twin = _pair(name, x)
    times = {}
    for b in sorted({batch, mem_batch}):
        say(f"{name}: timing at batch {b} (warm-up, then {repeats} alternating rounds)")
        times[b] = time_pair(source, twin, seeded_input(b, size, 0), repeats)
        if times[b]["failing"] is not None:
            say(f"{name}: the compare timed at batch {b} fails, first at {times[b]['failing']}")
    say(f"{name}: fidelity (float32 and float64 compares)")
    f32 = compare(source, twin, x, dtype="float32")
    f64 = compare(source, twin, x, dtype="float64")
    logits = [r.max_rel for r in f32.rows if r.kind == "output" and r.module == ""]
    layers64 = max(r.max_rel for r in f64.rows if r.kind == "output")
    # A failing row of any kind (state, a layer, an error, a module on one side only) fails
    # fidelity too, whatever the logits or the output rows that ran say.
    for label, report in (("float32", f32), ("float64", f64)):
        if not report.ok:
            say(f"{name}: the {label} compare fails, first at {report.first_divergence!r}")
    if not f32.ok or not logits:
        logits = [math.inf]
    if not f64.ok:
        layers64 = math.inf
    del source, twin
    say(f"{name}: timing at batch {batch} with numpy's default OpenBLAS (a fresh process)")
    times[NUMPY_DEFAULT] = _time_with_numpy_default(name, size, batch, repeats)
    failing = times[NUMPY_DEFAULT]["failing"]
    if failing is not None:
        say(f"{name}: the compare timed with numpy's default fails, first at {failing}")
    say(f"{name}: peak memory at batch {mem_batch} (5 fresh processes)")
    kinds = ("baseline", "pair", "lucid", "torch", "compare")
    peaks = {kind: _measure(kind, name, size, mem_batch) for kind in kinds}
    bigger = max(peaks["lucid"], peaks["torch"])
    over = (peaks["compare"] - peaks["baseline"]) / max(bigger - peaks["baseline"], 1e-9)
    return {
        "model": name,
        "times": times,
        "peaks": peaks,
        "memory": peaks["compare"] / bigger,
        "memory_over_baseline": over,
        "float64 layers": layers64,
        "float32 logits": logits[-1],
    }


def _time_cell(t: dict[str, float]) -> str:
    return f"{t['ratio']:.2f} ({t['compare_s']:.2f} / {t['lucid_s']:.2f} + {t['torch_s']:.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", action="append", choices=lucid_inception.MODEL_NAMES)
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--batch", type=int, default=1, help="batch of the timing and fidelity runs")
    parser.add_argument("--mem-batch", type=int, default=8, help="batch of the memory runs (default 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the parts (convolution kernels, comparing outputs, state check) in "
        "bare forwards and in a compare, per model",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--numpy-default", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size < 75:
        parser.error(f"--size: the smallest input every model accepts is 75, got {args.size}")
    for option in ("batch", "mem_batch", "repeats"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')}: expected at least 1, got {getattr(args, option)}")
    if args.child:
        child(args.child, args.model[0], args.size, args.batch, args.repeats)
        return 0

    start = time.perf_counter()

    def say(line: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {line}", file=sys.stderr, flush=True)

    results = [
        bench_model(m, args.size, args.batch, args.mem_batch, args.repeats, say)
        for m in args.model or lucid_inception.MODEL_NAMES
    ]
    timeout = os.environ["OPENBLAS_THREAD_TIMEOUT"]
    batches = sorted({args.batch, args.mem_batch})
    time_rows = [
        [r["model"], *(_time_cell(r["times"][b]) for b in batches), _time_cell(r["times"][NUMPY_DEFAULT])]
        for r in results
    ]
    time_headers = [
        "model",
        *(f"batch {b}" for b in batches),
        f"batch {args.batch}, {NUMPY_DEFAULT}",
    ]
    print(
        f"time: compare / bare forwards (compare s / lucid s + torch s), size {args.size}, median of "
        f"{args.repeats}; OPENBLAS_THREAD_TIMEOUT={timeout} as python -m parity runs, except the "
        "last column (numpy's default, for information)"
    )
    print(tabulate(time_rows, headers=time_headers, disable_numparse=True))
    print()
    rows = []
    for r in results:
        p = r["peaks"]
        rows.append(
            [
                r["model"],
                f"{p['compare']:.0f}",
                f"{max(p['lucid'], p['torch']):.0f} ({'lucid' if p['lucid'] >= p['torch'] else 'torch'})",
                f"{p['baseline']:.0f} / {p['pair']:.0f}",
                f"{r['memory']:.2f} ({r['memory_over_baseline']:.2f})",
                f"{r['float64 layers']:.2g}",
                f"{r['float32 logits']:.2g}",
            ]
        )
    headers = [
        "model",
        "compare MB",
        "bare MB",
        "imports / +both models MB",
        "mem ratio (over baseline)",
        "f64 worst layer",
        "f32 logits",
    ]
    print(f"memory at batch {args.mem_batch}; fidelity at batch {args.batch}")
    print(tabulate(rows, headers=headers, disable_numparse=True))
    print()
    if args.breakdown:
        say("breakdown: timing the parts (bare forwards against a compare)")
        parts = [
            row
            for m in args.model or lucid_inception.MODEL_NAMES
            for row in breakdown(m, args.size, args.batch, args.repeats)
        ]
        print(
            f"\nwhere the time goes (seconds, median of {args.repeats}; in a compare the two "
            "forwards run side by side, on two threads, so its parts overlap):"
        )
        print(tabulate(parts, headers=["model", "part", "bare forwards", "compare"], disable_numparse=True))
        print()
    measured = {f"time, batch {b}": ("time", [r["times"][b]["ratio"] for r in results]) for b in batches}
    for metric in ("memory", "float64 layers", "float32 logits"):
        measured[metric] = (metric, [r[metric] for r in results])
    verdicts = []
    for label, (metric, values) in measured.items():
        target, worst = TARGETS[metric], max(values)
        verdict = "PASS" if worst <= target else "FAIL"
        verdicts.append(verdict == "PASS")
        unit = "x" if metric in ("time", "memory") else " relative"
        print(f"{verdict}  {label:<15} worst {worst:.3g}{unit}, target <= {target:g}{unit}")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
