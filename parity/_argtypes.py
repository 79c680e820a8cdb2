"""Option types shared by ``python -m parity`` and the pytest plugin (argparse only: the
plugin imports this at every pytest start, so it must load nothing heavy)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["int_at_least"]


def int_at_least(minimum: int, expected: str) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum``; anything else is a usage error
    saying ``expected`` and what came."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse
