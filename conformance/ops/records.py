"""What a differential op case is and what running it gives: the dtypes, devices and
tolerances every case shares, ``OpCase`` (one named case), ``Check`` (one compared quantity)
and ``OpResult`` (one case at one dtype, with its verdict)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

DTYPES: tuple[str, ...] = ("float32", "float64")
LUCID_DEVICES: tuple[str, ...] = ("cpu", "gpu")
TORCH_DEVICES: tuple[str, ...] = ("cpu", "cuda")

# Error budget, one entry per dtype, never per case. Every case is sized so that no output
# element is a reduction of more than K_MAX = 256 terms (largest: the conv weight gradient,
# 2 x 9 x 9 = 162 terms; the adaptive pool, 64; BatchNorm statistics, 50). Recursive
# summation of K terms errs by at most K * u relative to the sum of |terms| (u = unit
# roundoff = eps / 2), and both sides round, so the budget is 2 * K_MAX * u = K_MAX * eps,
# applied to max|error| / max|reference| over the whole tensor. That is 3.1e-5 in float32
# and 5.7e-14 in float64. The bugs this kit exists to catch are orders of magnitude larger
# (wrong broadcast gradients: O(1); count_include_pad: O(0.1); n/(n-1) with n = 50 on the
# running variance: 5e-3), and the measured errors of correct ops sit about 75x below the
# budget in both dtypes (docs/framework-ops.md).
K_MAX = 256
TOLERANCE: dict[str, float] = {
    dt: K_MAX * float(np.finfo(dt).eps) for dt in DTYPES
}  # float32: 3.05e-05, float64: 5.68e-14

# Statistical checks (dropout) use a bound derived from the binomial standard deviation: a
# deviation beyond Z_SIGMA standard deviations has probability < 6e-7 for a correct op.
Z_SIGMA = 5.0

_VERDICTS_OK = ("pass", "known-bug", "convention")


@dataclass(frozen=True)
class Stat:
    """A reference for a statistic, with a bound derived from its sampling distribution; or
    for an array of statistics (one per block of a tensor), each held to the same bound."""

    value: float | np.ndarray
    bound: float  # absolute, for every element
    basis: str


Quantities = dict[str, "np.ndarray | Stat"]
Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class OpCase:
    """One named differential case.

    ``make(rng, dtype)`` returns the seeded arrays both sides use (inputs, parameters and the
    upstream gradient). ``lucid(data, device)`` and ``torch(data, device)`` return the named
    quantities to compare: ``out`` (and other forward quantities), ``grad:<name>`` for every
    input and parameter. ``expect`` maps a ``KNOWN`` id to the quantities that deviation
    puts out of tolerance; it is in force where the ``Known`` record applies.
    """

    name: str
    op: str
    summary: str
    make: Callable[[np.random.Generator, str], Arrays]
    lucid: Callable[[Arrays, str], Quantities]
    torch: Callable[[Arrays, str], Quantities]
    expect: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The arrays of ``make`` whose axis 0 is the batch: the runner keeps their first sample
    # for the batch-1 twin of a case that declares a deviation which vanishes at batch 1.
    batch_keys: tuple[str, ...] = ("x", "upstream")

    @property
    def seed(self) -> int:
        """Stable per-case seed (crc32 of the name, unlike hash() stable across runs)."""
        return zlib.crc32(self.name.encode())


@dataclass(frozen=True)
class Check:
    """The comparison of one quantity."""

    quantity: str
    max_abs: float
    max_rel: float
    tol: float
    tol_kind: str  # "rel": max_rel <= tol; "abs": max_abs <= tol (statistics)
    ok: bool
    dtype_ok: bool = True  # Lucid's dtype is the requested one
    note: str = ""
    lucid_dtype: str = ""  # Lucid's dtype ("" for a statistic, which has none)


@dataclass(frozen=True)
class OpResult:
    """The outcome of one case at one dtype."""

    case: str
    op: str
    dtype: str
    lucid_device: str
    torch_device: str
    lucid_version: str
    checks: tuple[Check, ...]
    expected: tuple[str, ...]  # KNOWN ids in force
    expected_verdict: str
    verdict: str
    message: str

    @property
    def failing(self) -> tuple[str, ...]:
        """Quantities out of tolerance (or of the wrong dtype)."""
        return tuple(c.quantity for c in self.checks if not (c.ok and c.dtype_ok))

    @property
    def ok(self) -> bool:
        """True for pass, known-bug and convention: the run agrees with its declaration."""
        return self.verdict in _VERDICTS_OK

    def check(self, quantity: str) -> Check:
        """The check of one quantity; KeyError lists the valid names."""
        for c in self.checks:
            if c.quantity == quantity:
                return c
        names = ", ".join(c.quantity for c in self.checks)
        raise KeyError(f"{self.case} has no quantity {quantity!r}; it has: {names}")

    def to_dict(self) -> dict:
        """Plain JSON-ready form (infinite errors, from shape mismatches, as "inf")."""
        d = asdict(self)
        for c in d["checks"]:
            for k in ("max_abs", "max_rel"):
                if not math.isfinite(c[k]):
                    c[k] = str(c[k])
        d["failing"] = list(self.failing)
        return d
