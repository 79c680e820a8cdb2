"""Bad usage of a ``python -m conformance`` command that argparse cannot see (an unknown
``--case`` pattern, a device this machine lacks, an ``--out`` folder that is not a
report's): the command raises ``UsageError`` before any slow work, and ``__main__`` prints
its one-line message on stderr and exits 2, as argparse does for its own errors."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """The command was called wrongly; the message says how, in one line."""
