"""Parity harness: strict weight transfer and layer-by-layer comparison of two models,
Lucid or torch on either side.

>>> import lucid_inception, numpy as np
>>> from parity import compare, transfer
>>> a = lucid_inception.build("inception_v4")            # Lucid
>>> b = lucid_inception.build("inception_v4", "torch")   # its torch twin
>>> transfer(a, b)
>>> report = compare(a, b, np.random.default_rng(0).standard_normal((2, 3, 75, 75)), dtype="float64")
>>> report.ok, report.first_divergence
(True, None)
"""

from __future__ import annotations

from lucid_inception.frameworks import StateMismatchError
from parity.compare import DeviceUnavailable, compare
from parity.report import KINDS, Report, Row
from parity.tolerances import DTYPES, TOLERANCES, Tolerance, tolerance_for
from parity.transfer import convert_checkpoint, load_checkpoint_file, save_checkpoint, transfer

__all__ = [
    "DTYPES",
    "DeviceUnavailable",
    "KINDS",
    "Report",
    "Row",
    "StateMismatchError",
    "TOLERANCES",
    "Tolerance",
    "compare",
    "convert_checkpoint",
    "load_checkpoint_file",
    "save_checkpoint",
    "tolerance_for",
    "transfer",
]
