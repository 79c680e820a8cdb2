"""Argument and input validation shared by the Lucid models and their torch twins.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind,
wrong value) with what was expected, what came and what is valid.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from numbers import Integral, Real

__all__ = [
    "MIN_INPUT_SIZE",
    "check_dropout",
    "check_in_channels",
    "check_input_dtype",
    "check_input_shape",
    "check_num_classes",
    "resolve_scales",
]

# 74x74 collapses to zero size in Reduction-B; 75 is the smallest input all three accept
# (299 -> 35 -> 17 -> 8 shrinks 75 -> 7 -> 3 -> 1).
MIN_INPUT_SIZE = 75


def _check_int(name: str, value: object, minimum: int) -> int:
    """Any integer (numpy's too, e.g. ``labels.max() + 1``; numpy's bool is no Integral),
    stored as a plain int."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_num_classes(num_classes: object) -> int:
    return _check_int("num_classes", num_classes, 1)


def check_in_channels(in_channels: object) -> int:
    return _check_int("in_channels", in_channels, 1)


def _check_real(name: str, value: object, valid: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number in {valid}, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range: a value out of range, not a type
        number = math.inf if value > 0 else -math.inf
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number in {valid}, got {_short(value)}")
    return number


def _short(value: object) -> str:
    """``value`` for a message: a huge int by its size (its digits are no help, and past
    4300 of them ``str()`` refuses)."""
    if isinstance(value, Integral) and not -(10**40) < value < 10**40:
        return f"an int of {int(value).bit_length()} bits"
    return str(value)


def check_dropout(dropout: object) -> float:
    """Drop probability of the head (Lucid and torch ``Dropout(p)``); the paper keeps 0.8."""
    p = _check_real("dropout", dropout, "[0, 1)")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout is the drop probability and must lie in [0, 1), got {p}")
    return p


def _check_scale(name: str, value: object) -> float:
    scale = _check_real(name, value, "(0, 1]")
    if not 0.0 < scale <= 1.0:
        raise ValueError(
            f"{name} must lie in (0, 1] (the paper recommends 0.1-0.3, Section 3.3), got {scale}"
        )
    return scale


def resolve_scales(scale: object) -> tuple[float, float, float]:
    """Residual scales for the A, B and C blocks from one float or an (A, B, C) triple."""
    # Text and bytes-like objects are sequences (memoryview is registered as one) but no
    # triple of scales: bytearray(b"abc") would read as (97, 98, 99).
    if isinstance(scale, (str, bytes, bytearray, memoryview)) or not isinstance(scale, (Real, Sequence)):
        raise TypeError(
            f"scale must be a float in (0, 1] or a sequence of three such floats for the "
            f"A, B and C blocks, got {type(scale).__name__} {scale!r}"
        )
    if isinstance(scale, Sequence):
        if len(scale) != 3:
            raise ValueError(
                f"scale as a sequence must hold three floats (A, B, C blocks), got {len(scale)}: {scale!r}"
            )
        a, b, c = (_check_scale(f"scale[{i}]", s) for i, s in enumerate(scale))
        return (a, b, c)
    one = _check_scale("scale", scale)
    return (one, one, one)


def check_input_shape(shape: Sequence[int], in_channels: int) -> None:
    """An image batch the models accept: (N, in_channels, H, W), N >= 1, H and W >= 75."""
    shape = tuple(shape)
    expected = f"(N, {in_channels}, H, W) with N >= 1 and H, W >= {MIN_INPUT_SIZE}"
    if len(shape) != 4:
        raise ValueError(f"expected a 4-D input {expected}, got a {len(shape)}-D input of shape {shape}")
    n, c, h, w = shape
    if c != in_channels:
        raise ValueError(f"expected {in_channels} input channels, input shape {expected}, got {shape}")
    if n < 1:
        raise ValueError(f"expected a non-empty batch, input shape {expected}, got {shape}")
    if h < MIN_INPUT_SIZE or w < MIN_INPUT_SIZE:
        raise ValueError(
            f"input is {h}x{w}, smaller than the {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} minimum "
            f"(Reduction-B would shrink it to nothing); expected {expected}"
        )


def check_input_dtype(dtype: str, floating: bool, model_dtype: str) -> None:
    """The input's dtype (a name, e.g. ``"float32"``) must be the model's: Lucid would
    silently promote the whole forward (to float64, for a float64 or an integer input) and
    torch fail deep inside the first conv."""
    if not floating:
        raise TypeError(f"expected a floating-point {model_dtype} input (the model's dtype), got {dtype}")
    if dtype != model_dtype:
        raise TypeError(
            f"expected an input of the model's dtype {model_dtype}, got {dtype}: cast the input "
            f"(or the model) first"
        )
