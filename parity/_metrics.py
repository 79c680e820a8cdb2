"""Error measures: how far apart two arrays are, and BatchNorm batch statistics."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

try:  # the one-pass kernel (parity/_fused.c); an optional build, see pyproject.toml
    from parity import _fused
except ImportError:  # not compiled here: the numpy path below gives the same numbers
    _fused = None

__all__ = ["BatchStats", "batch_stats", "bn_output_errors", "largest", "max_errors", "relative"]


def relative(max_abs: float, scale: float) -> float:
    """``max_abs / scale``, guarded: two all-zero arrays are 0 apart, not NaN."""
    if scale > 0:
        return max_abs / scale
    return 0.0 if max_abs == 0 else math.inf


def largest(x: float, y: float) -> float:
    """``max(x, y)``, except that a NaN wins (Python's ``max`` keeps whichever comes first)."""
    return math.nan if math.isnan(x) or math.isnan(y) else max(x, y)


def _max_magnitude(x: np.ndarray) -> float:
    # max and min instead of abs(x).max(): no temporary the size of x; NaN propagates.
    # The ufuncs' own reductions: ``x.max()`` adds a Python call (~1 us, ~2,000 per compare).
    if not x.size:
        return 0.0
    # A NaN anywhere makes both reductions NaN, and ``max`` keeps its first argument; + 0.0
    # makes an all -0.0 input's -0.0 a 0.0, as |x| is (and parity._fused says).
    return max(float(np.maximum.reduce(x, axis=None)), -float(np.minimum.reduce(x, axis=None))) + 0.0


# Elements per block: 256 KiB of float32, so that a block's subtraction and its reductions
# work in cache rather than memory (measured 0.27 s/GiB against 0.37 s/GiB unblocked; two
# threads gained nothing in a comparison, where the arrays come from memory).
_BLOCK = 1 << 16


def _blocks(a: np.ndarray, b: np.ndarray, block: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Matching sub-arrays of ``a`` and ``b`` of at most ``block`` elements, walking ``a``
    in its memory order.

    The two sides rarely share a layout: Lucid's convolutions hand back NHWC memory seen
    as NCHW, torch's are NCHW. Flattening one to the other's order copies the whole array
    through the cache the slow way (a third of a comparison's time on Inception-v4);
    cutting both into blocks of ``a``'s slowest axes keeps each block's strided reads in
    cache, and no temporary grows with the input.
    """
    order = sorted(range(a.ndim), key=lambda axis: -abs(a.strides[axis]))  # slowest axis first
    a, b = a.transpose(order), b.transpose(order)
    inner, split = 1, a.ndim  # axes after ``split`` make up less than a block
    for axis in range(a.ndim - 1, -1, -1):
        if inner * a.shape[axis] > block:
            split = axis
            break
        inner *= a.shape[axis]
    if split == a.ndim:  # the whole array fits in a block
        yield a, b
        return
    step = max(1, block // inner)
    for index in np.ndindex(*a.shape[:split]):
        for start in range(0, a.shape[split], step):
            key = (*index, slice(start, start + step))
            yield a[key], b[key]


def max_errors(a: np.ndarray, b: np.ndarray) -> tuple[float, float, str]:
    """``(max |a - b|, that over max(max|a|, max|b|), note)`` of two equal-shape arrays,
    without temporaries the size of the inputs (they may be read-only views, in any
    layout).

    Positions where either side is NaN or infinite must hold the same value on both sides
    (then they are left out, and the note says so) or the result is infinite; so is it when
    nothing finite is left to compare. Non-float arrays (bool, int) are equal or infinitely
    apart; complex ones by the modulus of the difference. Different dtypes are measured in the
    wider one, and the note starts with
    "dtypes differ" (the callers fail such a row: see ``parity.comparison``).
    """
    note = ""
    if a.dtype.kind not in "fc" or b.dtype.kind not in "fc":  # one attribute read a call: no cost
        return _equality_errors(a, b)
    if a.dtype != b.dtype:
        note = f"dtypes differ: {a.dtype} vs {b.dtype}"
        common = np.result_type(a.dtype, b.dtype)
        a, b = a.astype(common), b.astype(common)
    if a.dtype.kind == "c":  # both, after the cast
        return _complex_errors(a, b, note)
    maxima = None if _fused is None else _fused.max_errors(a, b)  # None: an input it does not take
    if maxima is not None:
        max_abs, max_a, max_b, nan = maxima
        scale = max(max_a, max_b)
        if nan:  # a NaN, or inf - inf, somewhere: the maxima mean nothing
            return _non_finite_errors(a, b, note)
    else:
        max_abs, scale = _numpy_maxima(a, b)
    if not (math.isfinite(max_abs) and math.isfinite(scale)):  # NaN or inf somewhere
        return _non_finite_errors(a, b, note)
    return max_abs, relative(max_abs, scale), note


def _numpy_maxima(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(max |a - b|, max(max|a|, max|b|))`` in numpy: where ``parity._fused`` is not
    built, and for what it hands back (float16, non-native byte order, misaligned
    buffers). NaN propagates to the results."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf and overflow: handled below
        if a.size <= _BLOCK:  # a small output (many branches at batch 1): no blocking to set up
            scale = largest(_max_magnitude(a), _max_magnitude(b))
            max_abs = _max_magnitude(np.subtract(a, b))
        else:
            # Side a's scale block by block, while the subtraction has left its (contiguous)
            # block in cache; side b's in one whole-array pass in its own memory order,
            # faster than reducing its strided blocks. Bit for bit the same maximum as two
            # whole-array passes, ~10% less time on Inception-v4's large outputs (one run).
            scratch = np.empty(_BLOCK, dtype=a.dtype)
            max_abs, scale = 0.0, _max_magnitude(b)
            for block_a, block_b in _blocks(a, b, _BLOCK):
                out = scratch[: block_a.size].reshape(block_a.shape)
                max_abs = largest(max_abs, _max_magnitude(np.subtract(block_a, block_b, out=out)))
                scale = largest(scale, _max_magnitude(block_a))
    return max_abs, scale


def _complex_errors(a: np.ndarray, b: np.ndarray, note: str) -> tuple[float, float, str]:
    """Complex outputs (rare here): moduli, not the real parts the float path's max and min
    would keep. Whole arrays at once, with temporaries: no speed to win."""
    with np.errstate(over="ignore", invalid="ignore"):
        max_abs = float(np.abs(a - b).max(initial=0.0))
        scale = largest(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
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
    if bad_a.all():  # NaN == NaN everywhere is no evidence that the two sides agree
        return math.inf, math.inf, "; ".join(filter(None, [note, f"nothing finite to compare ({count})"]))
    max_abs, max_rel, _ = max_errors(a[~bad_a], b[~bad_b])
    return max_abs, max_rel, "; ".join(filter(None, [note, f"equal non-finite values left out ({count})"]))


def _equality_errors(a: np.ndarray, b: np.ndarray) -> tuple[float, float, str]:
    """bool or integer outputs (a mask, an index): no rounding, so equal or not at all."""
    dtypes = f"{a.dtype}" if a.dtype == b.dtype else f"{a.dtype} vs {b.dtype}"
    note = f"{dtypes} values: compared for equality"
    if a.dtype != b.dtype:
        note = f"dtypes differ: {a.dtype} vs {b.dtype}; {note}"
    if np.array_equal(a, b, equal_nan=a.dtype.kind in "fc" and b.dtype.kind in "fc"):
        return 0.0, 0.0, note
    return math.inf, math.inf, note


@dataclass(frozen=True)
class BatchStats:
    """What a train-mode BatchNorm computes from its input: per-channel mean and biased
    variance in float64, the count ``n`` they average over, and the input's scale."""

    mean: np.ndarray
    var: np.ndarray
    n: int
    scale: float  # max |x|
    shape: tuple[int, ...]
    channel_scale: np.ndarray  # max |x| per channel


def batch_stats(x: np.ndarray) -> BatchStats:
    """Statistics over every axis but the channel axis 1 (N x C x ...)."""
    axes = (0, *range(2, x.ndim))
    return BatchStats(
        mean=np.mean(x, axis=axes, dtype=np.float64),
        var=np.var(x, axis=axes, dtype=np.float64),
        n=x.size // x.shape[1],
        scale=_max_magnitude(x),
        shape=tuple(x.shape),
        channel_scale=np.abs(x).max(axis=axes, initial=0.0).astype(np.float64),
    )


def bn_output_errors(
    ya: np.ndarray, yb: np.ndarray, stats: BatchStats, weight: np.ndarray, bias: np.ndarray, eps: float
) -> tuple[float, float]:
    """``(max |ya - yb|, the worst channel's max |ya - yb| over its scale)`` of two
    train-mode BatchNorm outputs computed from one input, which ``stats`` describes.

    A channel's scale is what its output would reach without the mean subtracted,
    ``|w| max|x| / sqrt(var + eps) + |b|``. Rounding ``x - mean`` errs relative to
    ``max|x|``, so a channel whose spread is small against its values (a batch of 2 on a
    1x1 map) magnifies it in the output by ``max|x| / sqrt(var + eps)``: against its own
    output, a faithful Inception-ResNet-v1 pair at 75 px measured 5x the float32 tolerance
    there. A NaN or inf anywhere makes the result NaN or inf (the row fails)."""
    axes = (0, *range(2, ya.ndim))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        diff = np.abs(ya.astype(np.float64) - yb.astype(np.float64)).max(axis=axes, initial=0.0)
        scale = np.abs(weight) * stats.channel_scale / np.sqrt(stats.var + eps) + np.abs(bias)
        rel = np.where(scale > 0, diff / scale, np.where(diff == 0, 0.0, np.inf))
    worst_abs = np.maximum.reduce(diff, axis=None, initial=0.0)  # NaN propagates
    worst_rel = np.maximum.reduce(rel, axis=None, initial=0.0)
    return float(worst_abs), float(worst_rel)
