"""``python -m conformance check``: the command and its report."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from conformance import spec as S
from conformance.checker.model import (
    DEFAULT_LAST_GRID,
    DEFAULT_SIZE,
    MIN_SIZE,
    check_model,
    traced_size_problem,
)
from conformance.checker.results import ModelReport
from conformance.usage import UsageError


def add_check_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``check`` subcommand; its ``func`` default returns the exit code."""
    from conformance.targets import TARGETS

    p = subparsers.add_parser(
        "check",
        help="hold built models against the paper spec",
        description=(
            "Hold the port, its torch twins, upstream Lucid or your own model (--factory) against the "
            "paper, item by item."
        ),
    )
    p.add_argument("--target", choices=TARGETS, help="what to check (default: port)")
    p.add_argument(
        "--factory",
        metavar="MODULE:CALLABLE",
        help=(
            "check your own model instead of a target: import MODULE (the current directory is "
            "searched first), call CALLABLE() with no arguments for a built model, Lucid or torch, and "
            "hold it against the one --model given, e.g. --factory mynets:inception_v4 --model inception_v4"
        ),
    )
    p.add_argument(
        "--model", action="append", choices=S.MODEL_NAMES, help="model to check (repeatable; default: all)"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print a JSON list of {"id", "status", "expected", "found", "evidence"}',
    )
    p.add_argument("--failures", action="store_true", help="list only failing items in the tables")
    p.add_argument(
        "--size",
        type=int,
        default=DEFAULT_SIZE,
        help=(
            f"input side of the traced forward (default {DEFAULT_SIZE}: the smallest at which every "
            f"model's last blocks run on a {DEFAULT_LAST_GRID}x{DEFAULT_LAST_GRID} grid or larger, so a "
            "flipped or transposed array "
            f"there shows; at {MIN_SIZE}, the smallest accepted, they run on 1x1 and such a fault "
            "does not; 299 is the paper's)"
        ),
    )
    p.set_defaults(func=_check_main)
    return p


def _check_main(args: argparse.Namespace) -> int:
    from conformance import targets

    size_problem = traced_size_problem(args.size)
    if size_problem:
        raise UsageError(f"--size: {size_problem}")
    if args.factory is not None:
        if args.target is not None:
            raise UsageError("--factory checks your model instead of a --target: give one of them")
        if len(args.model or ()) != 1:
            raise UsageError(
                "--factory: name the paper's network to hold the model against, once (--model NAME)"
            )
        name = args.model[0]
        model, title = targets.from_factory(args.factory)
        reports = [check_model(model, name, target=args.factory, size=args.size)]
    else:
        target = args.target or "port"
        title = targets.describe(target)
        reports = [
            check_model(targets.build(target, name), name, target=target, size=args.size)
            for name in args.model or S.MODEL_NAMES
        ]
    if args.json:
        print(json.dumps([r.to_json() for report in reports for r in report.results], indent=1))
    else:
        print(render(reports, title, failures_only=args.failures, size=args.size))
    return 1 if any(report.failures for report in reports) else 0


def render(
    reports: Sequence[ModelReport], title: str, *, failures_only: bool = False, size: int = DEFAULT_SIZE
) -> str:
    """Human output: a table per model, the evidence of each failure, a summary line."""
    from tabulate import tabulate

    lines = [f"{title}; traced at 1x3x{size}x{size}", ""]
    for report in reports:
        shown = report.failures if failures_only else report.results
        rows = [
            (
                r.id.removeprefix(f"{report.model}/"),
                "FAIL" if r.status == "fail" else "pass",
                r.expected,
                r.found,
            )
            for r in shown
        ]
        lines.append(f"{report.model}: {report.parameters:,} parameters (spec {report.spec_parameters:,})")
        if rows:
            headers = ("item", "status", "expected", "found")
            lines.append(tabulate(rows, headers=headers, maxcolwidths=[None, None, 48, 64]))
        for r in report.failures:
            lines += [f"  FAIL {r.id}", f"    expected: {r.expected}", f"    found:    {r.found}"]
            lines.append(f"    evidence: {r.evidence}")
        passed = len(report.results) - len(report.failures)
        lines += [
            f"{report.model}: {len(report.results)} items, {passed} pass, {len(report.failures)} fail",
            "",
        ]
    total = sum(len(r.results) for r in reports)
    failed = sum(len(r.failures) for r in reports)
    lines.append(f"{title}: {len(reports)} model(s), {total} items, {failed} failing")
    return "\n".join(lines)
