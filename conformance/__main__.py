"""``python -m conformance {check,ops,report}``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from conformance.checker import add_check_command

__all__ = ["main"]


def _add_optional(subparsers: argparse._SubParsersAction, name: str, module: str, adder: str) -> None:
    """Add a subcommand another module defines; while that module is missing, the
    subcommand reports why and exits 2."""
    try:
        getattr(importlib.import_module(module), adder)(subparsers)
    except ImportError as error:
        p = subparsers.add_parser(name, help=f"(not available: {error})", add_help=False)

        def unavailable(_args: argparse.Namespace, error: ImportError = error) -> int:
            print(f"not available: {error}", file=sys.stderr)
            return 2

        p.set_defaults(func=unavailable, takes_any_arguments=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conformance",
        description="Inception-v4 / Inception-ResNet models against the paper; Lucid's ops against torch.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_check_command(subparsers)
    _add_optional(subparsers, "ops", "conformance.ops", "add_ops_command")
    _add_optional(subparsers, "report", "conformance.reports", "add_report_command")
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
