"""``python -m parity``: the corrected Lucid models against their torch twins, layer by layer.

The subcommands (``check`` is the default) are documented in ``HELP`` below, which is what
``--help`` prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from tabulate import tabulate

from parity._argtypes import int_at_least
from parity._files import write_atomically
from parity.tables import render_overall, render_result, render_selftest, worst_table

__all__ = ["EXIT_ERROR", "EXIT_FAIL", "EXIT_OK", "EXIT_USAGE", "build_parser", "main", "parse_devices"]

EXIT_OK = 0  # every compared pair agreed (skipped devices are not failures without --require-devices)
EXIT_FAIL = 1  # a divergence, a liveness failure, an uncaught self-test fault, upstream differs
EXIT_USAGE = 2  # bad options or unusable input (argparse uses 2 as well)
EXIT_ERROR = 3  # the harness itself raised
EXIT_INTERRUPTED = 130  # Ctrl-C: the shell's convention (128 + SIGINT)

MODELS = ("inception_v4", "inception_resnet_v1", "inception_resnet_v2")
DTYPES = ("float32", "float64")
FRAMEWORKS = ("lucid", "torch")

DESCRIPTION = """\
Parity of the corrected Lucid Inception models with their torch twins.

For each model: build the Lucid model and its torch twin, seed the weights (Lucid's
Kaiming-uniform init), give every BatchNorm seeded non-trivial statistics and affine
parameters (--signal), transfer Lucid -> torch strictly (equal keys, shapes, dtypes), then
run both on the same seeded input and compare, in execution order:
  state       every parameter and buffer (must be equal), and after the forward every
              buffer it changed (a change on one side only, or to other values, fails)
  config      every layer's settings: kernel, stride, padding, eps, momentum, dropout
              rate, ... (must be equal; each where its layer first runs: an eval-mode
              output never shows a dropout rate or a BatchNorm momentum)
  output      every module's output, call by call
  input_grad, param_grad                    with --backward (float64, batch 2, seeded gradient):
              every parameter's gradient and every module call's input gradient, in
              backward order (the first failing row is where the backward goes wrong)
  bn_batch_stats, bn_train_output, bn_running_update
              with --train-step: each BatchNorm's batch statistics, its train-mode
              output (side b's BatchNorms run on side a's input) and its running update
Each row passes when max|a - b| / max(|a|, |b|) <= the dtype's tolerance (one table per
dtype, derived from a float64 rounding-error budget: parity/tolerances.py). Finally a
liveness check knocks out each block of the twin and demands that the logits move by at
least 100 x tolerance: a block that does not is named, since a fault there would be
invisible.

Reading the output: one table per model and dtype. "verdict" is PASS/FAIL; "first
divergence" is the first module, in execution order, out of tolerance (where to look);
"worst" lists the rows furthest over, or closest to, their tolerance (error/tol > 1
fails). With --backward a gradient summary follows. A final table summarises all runs.
Devices that are absent print "skipped: <reason>" and do not fail the run, unless
--require-devices is given; a run that compared nothing says so instead of PASS."""

EPILOG = """\
subcommands:
  check (default)   the comparison above; `python -m parity --model inception_v4 --size 75`
  selftest          plant known faults in torch twins and demand each is caught where it
                    was planted (`python -m parity selftest --help`)
  upstream          upstream lucid-dl against the port on shared weights, naming where
                    they differ (`python -m parity upstream --help`)
  convert SRC DST   convert a checkpoint between .lcd (Lucid) and .pt/.pth (torch)

exit codes:
  0  every compared pair agreed / every planted fault was caught and localised /
     upstream agrees / the checkpoint was written
  1  parity failed: a divergence or liveness failure, an uncaught or misplaced fault,
     upstream differs from the port
  2  usage error or unusable input (bad option, unknown device, bad checkpoint,
     --json/--plot path that cannot be written, --plot without matplotlib), found
     before comparing; or an input too large for this machine's memory
  3  the harness itself raised (a bug: please report it with the traceback)
  130  interrupted (Ctrl-C); a --json or --plot file is written whole or not at all

examples:
  python -m parity --size 75                          all three models, float32, quick
  python -m parity --model inception_v4 --dtype float64 --backward --json v4.json
  python -m parity --devices lucid=cpu,torch=cuda --plot errors.png
  python -m parity selftest
  python -m parity convert model.lcd model.pt"""

SUBCOMMANDS = ("check", "selftest", "upstream", "convert")
SIGNALS = ("random", "calibrated")  # parity.signal.SIGNALS, without importing the harness for --help


def parse_devices(spec: str) -> tuple[str, str]:
    """``"lucid=cpu,torch=cuda"`` -> ``("cpu", "cuda")``; a framework left out runs on cpu."""
    chosen = {"lucid": "cpu", "torch": "cpu"}
    seen = set()
    for part in spec.split(","):
        framework, sep, device = (s.strip() for s in part.partition("="))
        if not sep or framework not in FRAMEWORKS or not device:
            raise argparse.ArgumentTypeError(
                f"bad device spec {spec!r}: expected FRAMEWORK=DEVICE[,FRAMEWORK=DEVICE] with "
                f"FRAMEWORK in {', '.join(FRAMEWORKS)}, e.g. lucid=cpu,torch=cuda"
            )
        if framework in seen:
            raise argparse.ArgumentTypeError(f"bad device spec {spec!r}: {framework} given twice")
        seen.add(framework)
        chosen[framework] = device
    valid = {"lucid": ("cpu", "gpu"), "torch": ("cpu", "cuda")}
    for framework, device in chosen.items():
        if device not in valid[framework]:
            raise argparse.ArgumentTypeError(
                f"bad device spec {spec!r}: {framework} has no device {device!r}; "
                f"valid: {', '.join(valid[framework])}"
            )
    return chosen["lucid"], chosen["torch"]


_positive = int_at_least(1, "a positive integer")
_seed = int_at_least(0, "a non-negative integer")  # numpy's generators refuse negative seeds


def _size(text: str) -> int:
    value = _positive(text)
    if value < 75:
        raise argparse.ArgumentTypeError(f"the smallest input every model accepts is 75, got {value}")
    return value


def _add_common(parser: argparse.ArgumentParser, size_default: int, batch_help: str | None = None) -> None:
    """The options every subcommand shares; ``batch_help`` for a batch whose default the
    subcommand decides (left ``None`` in ``args``), else the default is 1."""
    parser.add_argument(
        "--model",
        action="append",
        choices=MODELS,
        metavar="NAME",
        help=f"a model to check, repeatable (default: all three: {', '.join(MODELS)})",
    )
    parser.add_argument(
        "--size", type=_size, default=size_default, help=f"input height and width (default {size_default})"
    )
    parser.add_argument(
        "--batch",
        type=_positive,
        default=None if batch_help else 1,
        help=batch_help or "batch size (default 1)",
    )
    parser.add_argument(
        "--seed", type=_seed, default=0, help="seed of weights, BN statistics and input (default 0)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the full report as JSON to PATH")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m parity",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="{check,selftest,upstream,convert}")

    check = sub.add_parser(
        "check",
        prog="python -m parity [check]",
        help="compare Lucid models with their torch twins (the default)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # parity.signal.BATCH_ONE_GRADIENTS, without importing the harness for --help
    _add_common(
        check,
        299,
        "batch size (default 1; 2 with --backward: batch-1 gradients cannot show batch-reduction "
        "bugs, such as lucid-dl 2.9.0's broadcast gradients, which are right at batch 1; an "
        "explicit --batch 1 is honoured, with a warning)",
    )
    check.add_argument(
        "--dtype",
        action="append",
        choices=DTYPES,
        help="dtype to compare in, repeatable (default float32)",
    )
    check.add_argument(
        "--backward",
        action="store_true",
        help="also compare the input gradient and every parameter gradient, in float64 (added if "
        "not asked for): float32 gradients are dominated by ReLU/max-pool decision flips; at "
        "batch 2 unless --batch is given (see --batch)",
    )
    check.add_argument(
        "--train-step",
        action="store_true",
        help="also compare a train-mode forward's BatchNorm batch statistics, train-mode outputs "
        "and running-stat updates (needs >= 8 values per channel in the last map: --batch 8 at "
        "--size 75)",
    )
    check.add_argument(
        "--devices",
        action="append",
        type=parse_devices,
        metavar="SPEC",
        help="where each side runs, repeatable: FRAMEWORK=DEVICE pairs, e.g. lucid=cpu,torch=cuda "
        "(Lucid: cpu, gpu (MLX); torch: cpu, cuda; default lucid=cpu,torch=cpu). An absent "
        "device prints 'skipped: <reason>' and does not fail (see --require-devices)",
    )
    check.add_argument(
        "--require-devices",
        action="store_true",
        help="an absent device fails the run (exit 1) instead of being skipped: for a CI job on a "
        "machine that must have it, where a lost device would otherwise leave the job green "
        "having compared nothing",
    )
    check.add_argument(
        "--plot",
        type=Path,
        metavar="PATH",
        help="write a per-layer error-across-depth picture, in the format its suffix names "
        "(.png, .pdf, .svg, ...)",
    )
    check.add_argument("--top", type=_positive, default=5, help="worst rows listed per model (default 5)")
    check.add_argument("--no-liveness", action="store_true", help="skip the knock-out liveness check")
    check.add_argument(
        "--signal",
        choices=SIGNALS,
        default="random",
        help="BatchNorm statistics: 'random' (default: mean ~ N(0, 0.2), var ~ U(0.5, 2)) or "
        "'calibrated' (the same draws in units of each channel's measured scale: unit gain at "
        "every layer, like a trained network; see parity/signal.py). An untrained network with "
        "unit gain amplifies any rounding ~1.5x per block, so 'calibrated' implies --local",
    )
    check.add_argument(
        "--local",
        action="store_true",
        help="compare module by module on the same input: every torch module runs on the Lucid "
        "module's input, after that input is compared with the one torch computed itself. Rows "
        "then measure one step each, not the error carried from the layers before. Forward and "
        "train step only (no --backward)",
    )

    selftest = sub.add_parser(
        "selftest",
        help="plant known faults in torch twins; each must be caught where it was planted",
        description=(
            "Plant each fault of parity.selftest.FAULTS in a fresh copy of a clean torch twin "
            "(monkeypatching the instance) and compare it with its Lucid source. A fault passes "
            "only when the comparison fails AND its first divergence is the planted module or "
            "inside it. Each model's clean pair must pass first (the control). Exit 1 when any "
            "fault is missed or found elsewhere."
        ),
    )
    _add_common(selftest, 75)
    selftest.add_argument(
        "--local",
        action="store_true",
        help="compare module by module on the same input (as check --local); faults that need a "
        "backward run as given",
    )
    selftest.add_argument("--fault", action="append", metavar="ID", help="run only this fault, repeatable")
    selftest.add_argument("--list", action="store_true", help="list the faults and exit")

    upstream = sub.add_parser(
        "upstream",
        help="upstream lucid-dl against the port, on shared weights",
        description=(
            "Compare upstream lucid-dl's own models (its factories, without their registry.json "
            "write) with the corrected port on the port's weights: the whole model for the "
            "Inception-ResNets, the stem (conv.0) for Inception-v4, whose B blocks differ in shape "
            "upstream. Reports the first divergence and every module that runs a different number "
            "of times on the two sides. "
            "Exit 1 when upstream differs from the port (expected for lucid-dl 2.9.0)."
        ),
    )
    _add_common(upstream, 299)
    upstream.add_argument("--dtype", choices=DTYPES, default="float32", help="dtype (default float32)")

    convert = sub.add_parser(
        "convert",
        help="convert a checkpoint between .lcd (Lucid) and .pt/.pth (torch)",
        description=(
            "Convert a checkpoint file; the format is chosen by suffix: .lcd (Lucid), .pt/.pth "
            "(torch). Keys, shapes and dtypes are kept exactly, except torch's num_batches_tracked "
            "counters, which are left out and counted (Lucid has none; a torch model loading the "
            "result starts them at 0, which matters only to a BatchNorm with momentum=None); the "
            "destination is written atomically. .lcd files are pickles: convert trusted files only."
        ),
    )
    convert.add_argument("src", type=Path, help="checkpoint to read (.lcd, .pt or .pth)")
    convert.add_argument("dst", type=Path, help="checkpoint to write (.lcd, .pt or .pth)")
    return parser


# ----- output helpers


def _progress(quiet: bool) -> Callable[[str], None]:
    start = time.perf_counter()

    def say(line: str) -> None:
        if not quiet:
            print(f"[{time.perf_counter() - start:7.1f}s] {line}", file=sys.stderr, flush=True)

    return say


def _write_json(path: Path, payload: dict) -> None:
    text = json.dumps(payload, indent=1, allow_nan=False) + "\n"  # a bad value fails before the file
    write_atomically(path, lambda tmp: tmp.write_text(text))


def _output_problem(args: argparse.Namespace) -> str | None:
    """Why ``--json`` or ``--plot`` could not be written, found before the long run."""
    from parity._files import check_output_path

    try:
        if args.json is not None:
            if str(args.json) == "-":
                return "--json -: standard output is not supported (the tables go there); give a file path"
            check_output_path(args.json, "--json")
        if getattr(args, "plot", None) is not None:
            from parity.plot import PlotUnavailable, plot_format

            try:
                plot_format(args.plot)
            except PlotUnavailable as error:
                return f"--plot: {error}"
            except ValueError as error:
                return f"--plot {error}"
            check_output_path(args.plot, "--plot")
    except ValueError as error:
        return str(error)
    return None


# ----- commands


def _run_check(args: argparse.Namespace) -> int:
    from parity.signal import (
        BATCH_ONE_GRADIENTS,
        check_pair,
        compares_locally,
        default_batch,
        last_map_side,
        train_step_batch,
    )

    if args.batch is None:
        args.batch = default_batch(args.backward)
    elif args.backward and args.batch == 1:
        print(f"warning: --backward at --batch 1: {BATCH_ONE_GRADIENTS}", file=sys.stderr)
    if args.train_step and args.batch < train_step_batch(args.size):
        side = last_map_side(args.size)
        print(
            f"error: --train-step at --size {args.size} needs --batch >= {train_step_batch(args.size)}: "
            f"train-mode BatchNorm needs >= 8 values per channel and the last map is {side}x{side}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        local = compares_locally(args.signal, args.local, args.backward)
    except ValueError as error:
        print(f"error: --backward with --local or --signal calibrated: {error}", file=sys.stderr)
        return EXIT_USAGE
    if local and not args.local:
        print(
            "note: --signal calibrated compares locally (--local): with unit gain an untrained "
            "network amplifies any rounding ~1.5x per block (parity/tolerances.py)",
            file=sys.stderr,
        )
    args.local = local
    say = _progress(args.quiet)
    models = list(dict.fromkeys(args.model)) if args.model else list(MODELS)  # once each
    dtypes = list(dict.fromkeys(args.dtype or ["float32"]))
    if args.backward and "float64" not in dtypes:
        dtypes.append("float64")
        print(
            "note: gradients are compared in float64 only (float32 gradients are dominated by "
            "ReLU/max-pool decision flips, see parity/tolerances.py): adding a float64 run",
            file=sys.stderr,
        )
    devices = list(dict.fromkeys(args.devices or [("cpu", "cpu")]))
    runs = [(m, d, dev) for dev in devices for m in models for d in dtypes]
    results = []
    for i, (model, dtype, dev) in enumerate(runs, 1):
        prefix = f"[{i}/{len(runs)}] "
        result = check_pair(
            model,
            dtype=dtype,
            backward=args.backward and dtype == "float64",
            train_step=args.train_step,
            devices=dev,
            size=args.size,
            batch=args.batch,
            seed=args.seed,
            check_liveness=not args.no_liveness,
            signal=args.signal,
            local=args.local,
            progress=lambda line, prefix=prefix, dtype=dtype: say(f"{prefix}{line} [{dtype}]"),
        )
        if result.skipped:
            say(f"{prefix}{result.label}: skipped: {result.skipped}")
        else:
            say(f"{prefix}{result.label}: {'PASS' if result.ok else 'FAIL'} in {result.seconds:.1f}s")
        results.append(result)
        print(render_result(result, args.top), flush=True)
        print(flush=True)
    print(render_overall(results))
    skipped = sum(bool(r.skipped) for r in results)
    ok = all(r.ok for r in results) and not (args.require_devices and skipped)
    if args.json is not None:
        _write_json(
            args.json,
            {
                "command": "check",
                "ok": ok,
                "size": args.size,
                "batch": args.batch,
                "seed": args.seed,
                "backward": args.backward,
                "train_step": args.train_step,
                "local": args.local,
                "signal": args.signal,
                "require_devices": args.require_devices,
                "results": [r.to_dict() for r in results],
            },
        )
        say(f"wrote {args.json}")
    if args.plot is not None:
        from parity.plot import plot_reports

        shown = [(r.label, r.report) for r in results if not r.skipped]
        if shown:
            plot_reports(shown, args.plot)
            say(f"wrote {args.plot}")
        else:
            print(f"no plot written to {args.plot}: every run was skipped")
    compared = len(results) - skipped
    verdict = "FAIL" if not ok else ("PASS" if compared else "NOTHING COMPARED")
    why = " (--require-devices: an absent device fails the run)" if args.require_devices and skipped else ""
    print(f"\n{verdict}: {compared} compared, {skipped} skipped{why}")
    return EXIT_OK if ok else EXIT_FAIL


def _run_selftest(args: argparse.Namespace) -> int:
    from parity.selftest import FAULTS, run_selftest

    if args.list:
        rows = [[f.id, f.model, f.needs, f.where, f.what] for f in FAULTS]
        print(tabulate(rows, headers=["fault", "model", "needs", "planted in", "imitates"]))
        return EXIT_OK
    faults = list(FAULTS)
    if args.model:
        faults = [f for f in faults if f.model in args.model]
    if args.fault:
        known = {f.id for f in FAULTS}
        unknown = [f for f in args.fault if f not in known]
        if unknown:
            print(
                f"unknown fault(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}", file=sys.stderr
            )
            return EXIT_USAGE
        faults = [f for f in faults if f.id in args.fault]
    if not faults:
        print("no fault selected", file=sys.stderr)
        return EXIT_USAGE
    report = run_selftest(
        faults,
        size=args.size,
        batch=args.batch,
        seed=args.seed,
        local=args.local,
        progress=_progress(args.quiet),
    )
    print(render_selftest(report))
    if args.json is not None:
        _write_json(args.json, {"command": "selftest", **report.to_dict()})
    return EXIT_OK if report.ok else EXIT_FAIL


def _run_upstream(args: argparse.Namespace) -> int:
    from parity.upstream import compare_upstream

    say = _progress(args.quiet)
    results = []
    for name in dict.fromkeys(args.model or MODELS):  # once each
        say(f"upstream: {name} ({args.size}x{args.size}, {args.dtype})")
        result = compare_upstream(name, size=args.size, batch=args.batch, seed=args.seed, dtype=args.dtype)
        results.append(result)
        print(result.summary())
        if not result.report.ok:
            # Upstream's rows are named inside the compared scope: name them in the full model.
            worst = [dataclasses.replace(r, module=result.qualify(r.module)) for r in result.report.worst(3)]
            print(worst_table(worst))
        print()
    if args.json is not None:
        _write_json(args.json, {"command": "upstream", "results": [r.to_dict() for r in results]})
    agree = all(r.agrees for r in results)
    print(f"{'upstream agrees with the port' if agree else 'upstream differs from the port'}")
    return EXIT_OK if agree else EXIT_FAIL


def _run_convert(args: argparse.Namespace) -> int:
    from parity.weights import convert_checkpoint, load_checkpoint_file

    try:
        counters = convert_checkpoint(args.src, args.dst)
        count = len(load_checkpoint_file(args.dst))
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"convert: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {args.dst} ({count} tensors, from {args.src})")
    if counters:
        print(
            f"left out {len(counters)} num_batches_tracked counter(s) (torch's BatchNorm batch counts, "
            f"e.g. {counters[0]!r}): a torch model loading the result starts them at 0"
        )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m parity``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # ``check`` is the default subcommand: options alone (``--help`` included, whose page
    # lists the subcommands too) mean ``check OPTIONS``.
    if not argv or argv[0] not in SUBCOMMANDS:
        argv = ["check", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    runners = {
        "check": _run_check,
        "selftest": _run_selftest,
        "upstream": _run_upstream,
        "convert": _run_convert,
    }
    # Fail now, not after minutes of comparing: an unwritable --json or --plot, an
    # unsupported plot format, matplotlib missing.
    problem = _output_problem(args) if args.command != "convert" else None
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return runners[args.command](args)
    except KeyboardInterrupt:
        print("parity: interrupted (exit 130); output files are written whole or not at all", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError as error:
        print(f"parity: out of memory ({error}); try a smaller --size or --batch", file=sys.stderr)
        return EXIT_USAGE
    except Exception:
        traceback.print_exc()
        print("parity: the harness raised (exit 3); this is a bug", file=sys.stderr)
        return EXIT_ERROR
