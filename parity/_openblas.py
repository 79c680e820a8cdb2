"""numpy's OpenBLAS and the lock-step: idle workers that sleep at once instead of spinning.

Used by every entry point that runs compares (``python -m parity``, ``pytest --parity``,
the benches) before numpy loads.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

OPENBLAS_THREAD_TIMEOUT = "4"


def quiet_openblas_workers(environ: MutableMapping[str, str] = os.environ) -> None:
    """Let numpy's OpenBLAS put its idle workers to sleep at once, unless the user chose.

    After each call OpenBLAS keeps its workers spinning for up to 2^28 cycles (the
    default, ``OPENBLAS_THREAD_TIMEOUT=28``); a compare in turns (``parity._lockstep``)
    alternates Lucid (numpy, OpenBLAS) and torch module by module, so the spinners take a
    core from torch all along: on this project's 2-core machine a batch-1 Inception-v4
    compare in turns took 1.80x the bare forwards with the default and 1.30x with 4
    (``bench/bench_parity.py``, one run; with the default even a bare torch forward right
    after a Lucid one runs slower). Side by side (``parity._side_by_side``, the default for
    a Lucid/torch pair on 2 cores or more) numpy's BLAS has its own share of the cores, one
    thread on 2 cores, and the timeout no longer matters there (the bench's last column).
    OpenBLAS reads the variable once, when numpy loads: it must be set before that, which
    is why ``import parity`` loads no numpy.
    """
    environ.setdefault("OPENBLAS_THREAD_TIMEOUT", OPENBLAS_THREAD_TIMEOUT)
