"""``python -m conformance {check,ops,report}``: exit 0 when everything conforms, 1 when an
item, an op case or a proof fails, 2 for bad usage."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from conformance.checker import add_check_command
from conformance.ops import add_ops_command
from conformance.reports import add_report_command
from conformance.usage import UsageError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conformance",
        description=(
            "Hold Inception-v4 / Inception-ResNet implementations against the paper (check), "
            "Lucid's ops against torch (ops), and write upstream reports with proven patches (report)."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_check_command(subparsers)
    add_ops_command(subparsers)
    add_report_command(subparsers)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
