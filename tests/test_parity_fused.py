"""parity._fused, the one-pass comparison kernel: built wherever a C compiler is, and the
same three maxima as numpy, bit for bit, in every memory layout; NaN never lost; anything
it does not take handed back (None) to the numpy path. tests/test_parity_metrics.py runs
max_errors through both paths."""

from __future__ import annotations

import ctypes
import itertools
import shlex
import shutil
import sysconfig

import numpy as np
import pytest

from parity import _metrics

fused = _metrics._fused


def test_the_kernel_is_built_where_a_compiler_is() -> None:
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) here: the optional kernel cannot be built")
    assert fused is not None, (
        f"{compiler} is here but parity._fused did not build: reinstall with `pip install -e . -v` "
        "and read the compiler's error (comparisons fall back to numpy, ~10% slower compares)"
    )


needs_kernel = pytest.mark.skipif(fused is None, reason="parity._fused is not built here")


def numpy_maxima(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    if not a.size:
        return 0.0, 0.0, 0.0
    return float(np.abs(a - b).max()), float(np.abs(a).max()), float(np.abs(b).max())


def values(shape: tuple[int, ...], dtype: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(dtype)
    return a, (a + rng.standard_normal(shape)).astype(dtype)


def in_memory_order(x: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    """``x`` with its axes laid out in memory in ``order`` (slowest first), same shape."""
    return np.ascontiguousarray(x.transpose(order)).transpose(np.argsort(order))


@needs_kernel
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 67, 9, 11), (3, 1, 40, 33)])
def test_every_pair_of_memory_orders_gives_numpy_values(shape: tuple[int, ...], dtype: str) -> None:
    """Every order of four axes on each side: 576 pairs, lines, planes of tiles with
    remainders, merged axes. The values sit at different addresses in each layout, so a
    wrong stride reads another element and changes a maximum."""
    a, b = values(shape, dtype, seed=sum(shape))
    want = numpy_maxima(a, b)
    for order_a, order_b in itertools.product(itertools.permutations(range(4)), repeat=2):
        got = fused.max_errors(in_memory_order(a, order_a), in_memory_order(b, order_b))
        assert got == (*want, False), (order_a, order_b)


@needs_kernel
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("flip", [(0,), (1,), (2,), (3,), (1, 2), (0, 3)])
@pytest.mark.parametrize("side", [0, 1])
def test_planes_at_negative_strides_give_numpy_values(flip: tuple[int, ...], side: int, dtype: str) -> None:
    """NHWC against NCHW (a plane of squares with ragged edges) with axes reversed on one
    side: negative strides between the plane's rows, along them and outside it."""
    a, b = values((2, 37, 5, 7), dtype, seed=len(flip) + side)
    pair = [in_memory_order(a, (0, 2, 3, 1)), b]
    pair[side] = np.flip(pair[side], flip)
    assert fused.max_errors(*pair) == (*numpy_maxima(*pair), False)


VIEWS = {
    "reversed": lambda x: x[::-1, :, ::-1],
    "every other": lambda x: x[:, ::2],
    "a corner": lambda x: x[1:, 3:, :5],
    "broadcast row": lambda x: np.broadcast_to(x[:1], x.shape),
    "transposed corner": lambda x: x.transpose(2, 0, 1)[::3].transpose(1, 2, 0),
}


@needs_kernel
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("view_a", VIEWS)
@pytest.mark.parametrize("view_b", VIEWS)
def test_views_at_any_strides_give_numpy_values(view_a: str, view_b: str, dtype: str) -> None:
    a, b = values((6, 70, 9), dtype, seed=3)
    a, b = VIEWS[view_a](a), VIEWS[view_b](b)
    shape = tuple(min(n, m) for n, m in zip(a.shape, b.shape, strict=True))
    a, b = a[tuple(slice(n) for n in shape)], b[tuple(slice(n) for n in shape)]
    assert fused.max_errors(a, b) == (*numpy_maxima(a, b), False)


@needs_kernel
@pytest.mark.parametrize(
    "shape", [(), (1,), (0,), (3, 0, 2), (1, 1, 1, 1), (5,), (1 << 17,), (1, 1, 1, 70001)]
)
def test_odd_shapes(shape: tuple[int, ...]) -> None:
    a, b = values(shape, "float32", seed=9)
    assert fused.max_errors(a, b) == (*numpy_maxima(a, b), False)


@needs_kernel
def test_signed_zeros_are_equal() -> None:
    a = np.zeros(37, dtype=np.float32)
    assert fused.max_errors(a, -a) == (0.0, 0.0, 0.0, False)


@needs_kernel
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("order_a", [(0, 1, 2, 3), (0, 2, 3, 1)])
@pytest.mark.parametrize("side", [0, 1])
def test_a_nan_anywhere_on_either_side_is_reported(order_a: tuple[int, ...], side: int, dtype: str) -> None:
    """In a vector's lanes, in a line's scalar tail, in a tile's remainder, first and last."""
    base = values((1, 37, 7, 35), dtype, seed=4)
    for flat in (0, 1, 3, 5, 36, 37, 300, 1000, base[0].size - 1):
        arrays = [in_memory_order(x.copy(), order_a if k == 0 else (0, 1, 2, 3)) for k, x in enumerate(base)]
        arrays[side][np.unravel_index(flat, arrays[side].shape)] = np.nan
        assert fused.max_errors(*arrays)[3] is True, flat


@needs_kernel
def test_infinities() -> None:
    a = np.ones(20, dtype=np.float64)
    b = a.copy()
    a[13] = b[13] = np.inf  # inf - inf is NaN: the caller sorts non-finite values out
    assert fused.max_errors(a, b)[3] is True
    b[13] = 1.0  # inf - 1: an infinite difference, not a NaN
    assert fused.max_errors(a, b) == (np.inf, np.inf, 1.0, False)
    big = np.full(9, 3e38, dtype=np.float32)  # finite values whose difference overflows
    assert fused.max_errors(big, -big) == (np.inf, float(big[0]), float(big[0]), False)


@needs_kernel
@pytest.mark.parametrize(
    ("a", "b"),
    [
        (np.ones(4, np.float16), np.ones(4, np.float16)),
        (np.ones(4, ">f4"), np.ones(4, ">f4")),
        (np.ones(4, np.float32), np.ones(4, np.float64)),
        (np.ones(4, np.float32), np.ones(5, np.float32)),
        (np.ones((2, 2), np.float32), np.ones(4, np.float32)),
        (np.ones(4, np.int32), np.ones(4, np.int32)),
        (np.ones(4, np.complex64), np.ones(4, np.complex64)),
    ],
    ids=["float16", "big-endian", "two dtypes", "two lengths", "two ranks", "int32", "complex64"],
)
def test_what_it_does_not_take_goes_back_to_numpy(a: np.ndarray, b: np.ndarray) -> None:
    assert fused.max_errors(a, b) is None


def misaligned(values: list[float], dtype: str) -> np.ndarray:
    raw = np.zeros(len(values) * np.dtype(dtype).itemsize + 1, dtype=np.uint8)
    out = np.frombuffer(raw.data, dtype=dtype, count=len(values), offset=1)
    assert not out.flags.aligned
    return out


@needs_kernel
def test_buffers_it_cannot_read_safely_go_back_to_numpy() -> None:
    """ctypes exports C order with no strides (read, they crashed the kernel); a misaligned
    buffer would be read through misaligned pointers."""
    c_floats = (ctypes.c_float * 4)(1, 2, 3, 4)
    assert fused.max_errors(c_floats, c_floats) is None
    assert fused.max_errors(misaligned([1.0, 2.0], "float64"), np.ones(2)) is None
    assert fused.max_errors(np.ones(2), misaligned([1.0, 2.0], "float64")) is None
    assert fused.max_errors(memoryview(c_floats), memoryview(c_floats)) == (0.0, 4.0, 4.0, False)


@needs_kernel
def test_bad_calls_raise() -> None:
    with pytest.raises(TypeError, match="two arrays"):
        fused.max_errors(np.ones(2))
    with pytest.raises(TypeError):
        fused.max_errors(np.ones(2), "not an array")


def test_float16_takes_the_numpy_path_with_the_same_answer() -> None:
    a, b = values((3, 70), "float16", seed=5)
    want = numpy_maxima(a, b)
    assert _metrics.max_errors(a, b) == (want[0], want[0] / max(want[1:]), "")
