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

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the module that defines it, imported on first use: ``import parity`` loads
# neither numpy nor torch nor Lucid. The pytest plugin is imported by every pytest session
# of an environment that has this package (1.5 s and torch's memory, for nothing, without
# ``--parity``), and ``python -m parity`` must set OpenBLAS's idle-thread timeout before
# numpy loads (see ``parity/_openblas.py``).
_EXPORTS = {
    "DTYPES": "parity.tolerances",
    "DeviceUnavailable": "parity.comparison",
    "KINDS": "parity.report",
    "Report": "parity.report",
    "Row": "parity.report",
    "StateMismatchError": "lucid_inception.frameworks",
    "TOLERANCES": "parity.tolerances",
    "Tolerance": "parity.tolerances",
    "compare": "parity.comparison",
    "convert_checkpoint": "parity.weights",
    "load_checkpoint_file": "parity.weights",
    "save_checkpoint": "parity.weights",
    "tolerance_for": "parity.tolerances",
    "transfer": "parity.weights",
}
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


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'parity' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from lucid_inception.frameworks import StateMismatchError
    from parity.comparison import DeviceUnavailable, compare
    from parity.report import KINDS, Report, Row
    from parity.tolerances import DTYPES, TOLERANCES, Tolerance, tolerance_for
    from parity.weights import convert_checkpoint, load_checkpoint_file, save_checkpoint, transfer
