"""Differential conformance of every Lucid op the Inception models use, against torch.

``python -m conformance ops``: a table (or ``--json``) of every case at every dtype; exit 1
when a case does not behave as declared."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict

import torch

from conformance.ops.known import KNOWN, lucid_version
from conformance.ops.records import DTYPES, LUCID_DEVICES, TOLERANCE, TORCH_DEVICES, Check, OpResult
from conformance.ops.runner import run_cases, select_cases
from conformance.usage import UsageError
from lucid_inception.frameworks import TorchAdapter


def _fmt_checks(checks: Iterable[Check]) -> str:
    parts = []
    for c in checks:
        mark = "" if c.ok else " !"
        if not c.dtype_ok:
            mark += " !dtype"
        parts.append(f"{c.quantity.removeprefix('grad:')} {c.max_rel:.1e}{mark}")
    return "\n".join(parts)


def _table(results: Sequence[OpResult]) -> str:
    from tabulate import tabulate

    rows = []
    for r in results:
        fwd = [c for c in r.checks if not c.quantity.startswith("grad:")]
        grads = [c for c in r.checks if c.quantity.startswith("grad:")]
        verdict = r.verdict if not r.expected else f"{r.verdict} ({', '.join(r.expected)})"
        if r.verdict == "error":
            verdict += f"\n{r.message}"
        rows.append([r.case, r.dtype, _fmt_checks(fwd), _fmt_checks(grads), verdict])
    headers = ["case", "dtype", "forward max rel err", "grad max rel err", "verdict"]
    return tabulate(rows, headers=headers, tablefmt="simple_grid")


def _refuse_bad_usage(args: argparse.Namespace) -> None:
    """Before any case runs: a ``--case`` pattern that matches nothing, a torch device
    this machine lacks."""
    try:
        select_cases(args.case)
    except ValueError as exc:
        raise UsageError(f"--case: {exc}") from None
    missing = TorchAdapter.device_unavailable(args.torch_device)
    if missing is not None:
        raise UsageError(f"--torch-device {args.torch_device} cannot run here: {missing}")


def _ops_main(args: argparse.Namespace) -> int:
    _refuse_bad_usage(args)
    results = run_cases(
        tuple(args.dtype or DTYPES),
        args.lucid_device,
        torch_device=args.torch_device,
        pattern=args.case,
    )
    bad = [r for r in results if not r.ok]
    if args.json:
        payload = {
            "lucid_version": lucid_version(),
            "torch_version": torch.__version__,
            "tolerance": TOLERANCE,
            "known": {k: asdict(v) for k, v in KNOWN.items()},
            "results": [r.to_dict() for r in results],
        }
        print(json.dumps(payload, indent=2, allow_nan=False))
    else:
        print(f"lucid-dl {lucid_version()} ({args.lucid_device}) vs torch "
              f"{torch.__version__} ({args.torch_device}); relative tolerance "
              + ", ".join(f"{k} {v:.2e}" for k, v in TOLERANCE.items()))  # fmt: skip
        print(_table(results))
        print("'!' = out of tolerance. Known deviations in force:")
        shown = sorted({i for r in results for i in r.expected})
        for i in shown:
            k = KNOWN[i]
            print(f"  {k.id} ({k.kind}, lucid {k.lucid}): {k.summary}. {k.evidence}.")
        counts: dict[str, int] = {}
        for r in results:
            counts[r.verdict] = counts.get(r.verdict, 0) + 1
        print(", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
        for r in bad:
            print(f"{r.verdict.upper()}: {r.case} [{r.dtype}]: {r.message}", file=sys.stderr)
    return 1 if bad else 0


def add_ops_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``ops`` subcommand; its ``func`` default returns the exit code."""
    p = subparsers.add_parser(
        "ops",
        help="differential tests of the Lucid ops the models use, against torch",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "--dtype",
        action="append",
        choices=DTYPES,
        help="dtype to run (repeatable; default: all)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--case", metavar="PATTERN", help="glob on case names, e.g. 'conv2d_*'")
    p.add_argument("--lucid-device", choices=LUCID_DEVICES, default="cpu")
    p.add_argument("--torch-device", choices=TORCH_DEVICES, default="cpu")
    p.set_defaults(func=_ops_main)
    return p
