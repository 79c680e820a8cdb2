"""Error measures: how far apart two arrays are, and BatchNorm batch statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["BatchStats", "batch_stats", "max_errors", "relative"]


def relative(max_abs: float, scale: float) -> float:
    """``max_abs / scale``, guarded: two all-zero arrays are 0 apart, not NaN."""
    if scale > 0:
        return max_abs / scale
    return 0.0 if max_abs == 0 else math.inf


def _max_magnitude(x: np.ndarray) -> float:
    # max and min instead of abs(x).max(): no temporary the size of x; NaN propagates.
    return float(max(x.max(), -x.min())) if x.size else 0.0


# Elements per block: 256 KiB of float32, so that the three reductions of a block read it
# from cache rather than memory (measured 0.27 s/GiB against 0.37 s/GiB unblocked; two
# threads gained nothing in a comparison, where the arrays come from memory).
_BLOCK = 1 << 16


def max_errors(a: np.ndarray, b: np.ndarray) -> tuple[float, float, str]:
    """``(max |a - b|, that over max(max|a|, max|b|), note)`` of two equal-shape arrays,
    without temporaries the size of the inputs (they may be read-only views).

    Positions where either side is NaN or infinite must hold the same value on both sides
    (then they are left out, and the note says so) or the result is infinite.
    """
    note = ""
    if a.dtype != b.dtype:
        note = f"dtypes differ: {a.dtype} vs {b.dtype}"
        common = np.result_type(a.dtype, b.dtype)
        a, b = a.astype(common), b.astype(common)
    flat_a, flat_b = np.ravel(a), np.ravel(b)  # views when contiguous
    scratch = np.empty(min(_BLOCK, flat_a.size), dtype=flat_a.dtype)
    max_abs = scale = 0.0
    for start in range(0, flat_a.size, _BLOCK):
        block_a, block_b = flat_a[start : start + _BLOCK], flat_b[start : start + _BLOCK]
        diff = np.subtract(block_a, block_b, out=scratch[: block_a.size])
        max_abs = max(max_abs, _max_magnitude(diff))
        scale = max(scale, _max_magnitude(block_a), _max_magnitude(block_b))
    if not (math.isfinite(max_abs) and math.isfinite(scale)):  # NaN or inf somewhere
        return _non_finite_errors(a, b, note)
    return max_abs, relative(max_abs, scale), note


def _non_finite_errors(a: np.ndarray, b: np.ndarray, note: str) -> tuple[float, float, str]:
    bad_a, bad_b = ~np.isfinite(a), ~np.isfinite(b)
    if not (bad_a.any() or bad_b.any()):  # finite values whose difference overflows
        return math.inf, math.inf, "; ".join(filter(None, [note, "the difference overflows"]))
    same = np.array_equal(bad_a, bad_b) and np.array_equal(a[bad_a], b[bad_b], equal_nan=True)
    count = f"{int(bad_a.sum())} vs {int(bad_b.sum())} NaN/inf values"
    if not same:
        return math.inf, math.inf, "; ".join(filter(None, [note, f"non-finite values differ ({count})"]))
    max_abs, max_rel, _ = max_errors(a[~bad_a], b[~bad_b])
    return max_abs, max_rel, "; ".join(filter(None, [note, f"equal non-finite values left out ({count})"]))


@dataclass(frozen=True)
class BatchStats:
    """What a train-mode BatchNorm computes from its input: per-channel mean and biased
    variance in float64, the count ``n`` they average over, and the input's scale."""

    mean: np.ndarray
    var: np.ndarray
    n: int
    scale: float  # max |x|
    shape: tuple[int, ...]


def batch_stats(x: np.ndarray) -> BatchStats:
    """Statistics over every axis but the channel axis 1 (N x C x ...)."""
    axes = (0, *range(2, x.ndim))
    return BatchStats(
        mean=np.mean(x, axis=axes, dtype=np.float64),
        var=np.var(x, axis=axes, dtype=np.float64),
        n=x.size // x.shape[1],
        scale=_max_magnitude(x),
        shape=tuple(x.shape),
    )
