"""Differential conformance of every Lucid op the Inception models use, against torch.

Each case is a named record (ONNX backend-test style): how to make seeded data, how to run it
in Lucid and in torch, and which known deviations it is expected to show on which Lucid
version. The runner runs forward and backward on both sides with the same data and the same
random upstream gradient, compares every output, every input gradient and every parameter
gradient, and gives a verdict. Known bugs and conventions are explicit expectations
(``KNOWN``): a case that fails exactly as declared is ``known-bug`` / ``convention``, a case
that fails otherwise is ``fail``, and a case declared to fail that passes is
``unexpected-pass``. Nothing is skipped.

The parts: ``records`` (what a case and a result are; dtypes, devices, tolerances),
``known`` (the declared deviations and the version specs they apply to), ``sides`` (one
case on one framework), ``cases`` (``CASES``), ``runner`` (running and judging) and ``cli``
(``python -m conformance ops``).
"""

from conformance.ops.cases import CASES
from conformance.ops.cli import add_ops_command
from conformance.ops.known import KNOWN, Known, lucid_version
from conformance.ops.records import (
    DTYPES,
    LUCID_DEVICES,
    TOLERANCE,
    TORCH_DEVICES,
    Check,
    OpCase,
    OpResult,
    Stat,
)
from conformance.ops.runner import run_case, run_cases, select_cases

__all__ = [
    "CASES",
    "DTYPES",
    "KNOWN",
    "LUCID_DEVICES",
    "TOLERANCE",
    "TORCH_DEVICES",
    "Check",
    "Known",
    "OpCase",
    "OpResult",
    "Stat",
    "add_ops_command",
    "lucid_version",
    "run_case",
    "run_cases",
    "select_cases",
]
