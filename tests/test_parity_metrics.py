"""parity._metrics.max_errors: exact against a plain numpy reference in every layout the two
frameworks hand over, NaN and inf handled, and no temporary the size of the inputs. Every
test runs twice: through the C kernel (parity._fused) and through the numpy path used where
the kernel is not built."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from parity import _metrics
from parity._metrics import _BLOCK, max_errors


@pytest.fixture(autouse=True, params=["fused", "numpy"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "numpy":
        monkeypatch.setattr(_metrics, "_fused", None)
    elif _metrics._fused is None:  # tests/test_parity_fused.py fails when a compiler was there
        pytest.skip("parity._fused is not built here")
    return request.param


def reference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a, b = a.astype(np.float64), b.astype(np.float64)
    max_abs = float(np.abs(a - b).max()) if a.size else 0.0
    scale = max(float(np.abs(a).max()), float(np.abs(b).max())) if a.size else 0.0
    return max_abs, (max_abs / scale if scale else 0.0)


def nhwc_as_nchw(x: np.ndarray) -> np.ndarray:
    """``x``'s values in NHWC memory, seen as NCHW: the layout of Lucid's conv outputs."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def pair(shape: tuple[int, ...], seed: int, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(dtype)
    return a, (a + rng.standard_normal(shape) * 1e-3).astype(dtype)


LAYOUTS = {
    "both C order": lambda a, b: (a, b),
    "NHWC vs NCHW": lambda a, b: (nhwc_as_nchw(a), b),
    "NCHW vs NHWC": lambda a, b: (a, nhwc_as_nchw(b)),
    "both NHWC": lambda a, b: (nhwc_as_nchw(a), nhwc_as_nchw(b)),
    "reversed and sliced views": lambda a, b: (a[:, ::-1], b[:, ::-1]),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 64, 37, 37), (1, 384, 35, 35), (3, 5, 1, 1), (1, 1536, 8, 8)])
def test_every_layout_gives_the_reference_values(layout: str, shape: tuple[int, ...]) -> None:
    a, b = LAYOUTS[layout](*pair(shape, seed=sum(shape)))
    assert a.shape == b.shape == shape
    max_abs, max_rel, note = max_errors(a, b)
    want_abs, want_rel = reference(a, b)
    assert (max_abs, note) == (pytest.approx(want_abs, rel=0, abs=0), "")
    assert max_rel == pytest.approx(want_rel, rel=1e-12)


@pytest.mark.parametrize("shape", [(), (0,), (3 * _BLOCK + 5,), (1000,), (2, 0, 3)])
def test_odd_shapes(shape: tuple[int, ...]) -> None:
    a, b = pair(shape, seed=1, dtype="float64")
    max_abs, max_rel, _ = max_errors(a, b)
    assert (max_abs, max_rel) == pytest.approx(reference(a, b), rel=1e-12)


def test_the_worst_element_anywhere_is_found() -> None:
    """A single differing element, in every block position of a strided pair."""
    base = np.random.default_rng(2).standard_normal((1, 96, 35, 35)).astype(np.float32)
    for flat in (0, 1, _BLOCK - 1, _BLOCK, base.size // 2, base.size - 1):
        b = base.copy()
        b.flat[flat] += 0.5
        assert max_errors(nhwc_as_nchw(base), b)[0] == pytest.approx(0.5, rel=1e-6), flat


def test_negative_zeros_are_zero_apart() -> None:
    zeros = np.zeros(5, dtype=np.float32)
    assert str(max_errors(-zeros, zeros)) == "(0.0, 0.0, '')"


def test_symmetric_and_mixed_dtypes_say_so() -> None:
    a, b = pair((2, 8, 5, 5), seed=3)
    assert max_errors(a, b)[:2] == max_errors(b, a)[:2]
    _, _, note = max_errors(a, b.astype(np.float64))
    assert note == "dtypes differ: float32 vs float64"


def test_nan_and_inf() -> None:
    a, b = pair((1, 4, 6, 6), seed=4, dtype="float64")
    a[0, 1, 2, 3] = b[0, 1, 2, 3] = np.nan
    a[0, 2, 0, 0] = b[0, 2, 0, 0] = np.inf
    max_abs, _, note = max_errors(a, b)
    assert math.isfinite(max_abs) and "equal non-finite values left out (2 vs 2" in note
    b[0, 2, 0, 0] = -np.inf
    assert max_errors(a, b)[:2] == (math.inf, math.inf)
    big = np.full((3,), 3e38, dtype=np.float32)
    assert max_errors(big, -big)[2] == "the difference overflows"


@pytest.mark.parametrize(
    ("shape", "where"),
    [((2, 3 * _BLOCK), 0), ((2, 3 * _BLOCK), _BLOCK + 7), ((2, 3 * _BLOCK), -1), ((3, 7), 0), ((3, 7), -1)],
)
@pytest.mark.parametrize("side", [0, 1])
def test_a_nan_on_one_side_is_never_lost(shape: tuple[int, ...], where: int, side: int) -> None:
    """Wherever it is (past the first block too, or in an array of one block) and whichever
    side holds it."""
    arrays = list(pair(shape, seed=6))
    arrays[side].flat[where] = np.nan
    max_abs, max_rel, note = max_errors(*arrays)
    assert (max_abs, max_rel) == (math.inf, math.inf) and "non-finite values differ" in note


def test_no_temporary_grows_with_the_input() -> None:
    """64 MiB a side in mismatched layouts (flattening one side would copy all of it)."""
    a, b = pair((1, 256, 256, 256), seed=5)
    a = nhwc_as_nchw(a)
    tracemalloc.start()
    try:
        max_errors(a, b)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * _BLOCK * a.itemsize, f"peak {peak / 2**20:.1f} MiB"


def test_a_nan_batch_statistic_fails_its_row() -> None:
    """BatchNorm rows take the worse of mean and variance: a NaN in either must fail."""
    from parity._metrics import batch_stats
    from parity._train_step import stats_row

    x = np.random.default_rng(7).standard_normal((4, 3, 5, 5))
    clean = batch_stats(x)
    for field in ("mean", "var"):
        broken = batch_stats(x)
        getattr(broken, field)[1] = np.nan
        row = stats_row("bn", clean, broken, tol=1e-6)
        assert not row.ok and math.isnan(row.max_rel), field
    assert stats_row("bn", clean, batch_stats(x), tol=1e-6).ok


def test_nothing_finite_to_compare_fails() -> None:
    """Equal NaN/inf positions are left out; when that leaves nothing, nothing was compared."""
    a = np.full((1, 4, 2, 2), np.nan)
    max_abs, max_rel, note = max_errors(a, a.copy())
    assert (max_abs, max_rel) == (math.inf, math.inf) and "nothing finite to compare" in note
    b = np.full((3,), np.inf)
    assert max_errors(b, b.copy())[:2] == (math.inf, math.inf)
    a[0, 0, 0, 0] = b[0] = 1.0  # one finite value each: compared as before
    assert max_errors(a, a.copy())[:2] == (0.0, 0.0)


@pytest.mark.parametrize("dtype", ["bool", "int64", "uint8"])
def test_non_float_outputs_are_compared_for_equality(dtype: str) -> None:
    a = np.array([[0, 1], [1, 0]]).astype(dtype)
    max_abs, max_rel, note = max_errors(a, a.copy())
    assert (max_abs, max_rel) == (0.0, 0.0) and f"{dtype} values: compared for equality" in note
    b = a.copy()
    b[0, 0] = 1
    assert max_errors(a, b)[:2] == (math.inf, math.inf)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1 + 1j, 2], [1 + 1j, 2 + 1j], (1.0, 1 / math.sqrt(5))),  # the imaginary part differs
        ([1 + 1j, 2], [1 - 1j, 2], (2.0, 1.0)),  # the sign of the imaginary part
        ([1 + 1j, 2], [1 + 1j, 2], (0.0, 0.0)),
        ([3 + 4j, 0], [0, 0], (5.0, 1.0)),  # a modulus, not a real part
    ],
)
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_outputs_are_measured_by_moduli(a: list, b: list, expected: tuple, dtype: str) -> None:
    max_abs, max_rel, note = max_errors(np.array(a, dtype), np.array(b, dtype))
    assert (max_abs, max_rel) == pytest.approx(expected, rel=1e-6) and note == ""


def test_complex_non_finite_values_follow_the_float_rules() -> None:
    a = np.array([1 + 1j, complex(np.nan, 0), 2])
    assert max_errors(a, a.copy())[:2] == (0.0, 0.0)  # the same NaN: left out
    b = a.copy()
    b[1] = 1.0
    assert max_errors(a, b)[:2] == (math.inf, math.inf)


def test_batch_statistics_of_a_huge_finite_input_fail_or_pass_without_overflow() -> None:
    """Variances are held to max|x|^2, which overflows a float above ~1.3e154: such a
    finite input (compare accepts it) raised OverflowError from the row."""
    from parity._metrics import batch_stats
    from parity._train_step import stats_row

    # max|x| = 1.5e154, so max|x|^2 overflows; the spread is small, so the variance does not.
    x = 1.5e154 + 1e150 * np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    assert stats_row("bn", batch_stats(x), batch_stats(x), tol=1e-6).ok
    y = x.copy()
    y[0, 0] += 1e152  # channel 0's batch mean (over 2 samples) moves by 5e151
    row = stats_row("bn", batch_stats(x), batch_stats(y), tol=1e-6)
    assert not row.ok and row.max_rel == pytest.approx(5e151 / np.abs(y).max(), rel=1e-6)


def test_the_tolerance_of_a_long_reduction_grows_as_its_random_walk() -> None:
    from parity.tolerances import K_MAX, TOLERANCES

    for tol in TOLERANCES.values():
        assert tol.reduced(1) == tol.reduced(K_MAX) == tol.rel  # never below one layer's
        assert tol.reduced(4 * K_MAX) == pytest.approx(2 * tol.rel)
