"""Argument and input validation shared by the Lucid models and their torch twins.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind,
wrong value) with what was expected, what came and what is valid.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from numbers import Integral, Real

__all__ = [
    "MIN_INPUT_SIZE",
    "MIN_TRAIN_SIZE_AT_BATCH_1",
    "check_dropout",
    "check_in_channels",
    "check_floating_input",
    "check_input_dtype",
    "check_input_shape",
    "check_num_classes",
    "check_train_batch",
    "last_stage_size",
    "resolve_scales",
]

# The layers that change the maps' size, as (kernel, stride) of an unpadded conv or pool;
# all three networks share them (padded convs keep the size, and every branch of a block
# shrinks alike):
#   stem (Fig. 3 and 14): 3x3/2, 3x3, [3x3 padded], 3x3/2 (pool | conv), [1x1], 3x3, 3x3/2
#   Reduction-A (Fig. 7): 3x3/2; Reduction-B (Fig. 8, 12, 18): 3x3/2
# At 299: 149, 147, 73, 71, 35, 17, 8.
_SHRINKING_LAYERS = ((3, 2), (3, 1), (3, 2), (3, 1), (3, 2), (3, 2), (3, 2))


def last_stage_size(size: int) -> int:
    """The side of the last stage's maps (the C blocks', the smallest any BatchNorm sees)
    for an input side ``size``: 8 at 299; below 1 the input is too small."""
    for kernel, stride in _SHRINKING_LAYERS:
        size = (size - kernel) // stride + 1
    return size


def _smallest_input(last_stage: int) -> int:
    size = 1
    while last_stage_size(size) < last_stage:
        size += 1
    return size


# 75 (75 -> 37 -> 35 -> 17 -> 15 -> 7 -> 3 -> 1); 74 collapses to nothing in Reduction-B.
MIN_INPUT_SIZE = _smallest_input(1)
# 107 (-> 53 -> 51 -> 25 -> 23 -> 11 -> 5 -> 2): from here a side of the last stage is 2.
# In train mode a batch of one image smaller on both sides gives the C blocks' BatchNorms
# one value per channel (1 x 1 x 1 x C): torch raises, Lucid normalises it to beta; so
# ``check_train_batch`` raises on both, whatever the mode of the model itself.
MIN_TRAIN_SIZE_AT_BATCH_1 = _smallest_input(2)


def _check_int(name: str, value: object, minimum: int) -> int:
    """Any integer (numpy's too, e.g. ``labels.max() + 1``; numpy's bool is no Integral),
    stored as a plain int."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {_short(value)}")
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
    except OverflowError:  # an int beyond float's range: finite, but out of range (no type error)
        raise ValueError(f"{name} must be a number in {valid}, got {_short(value)}") from None
    if not math.isfinite(number):  # inf or nan
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
                # no repr of the values: a huge int among them would make repr() itself raise
                f"scale as a sequence must hold three floats (A, B, C blocks), got a "
                f"{type(scale).__name__} of {len(scale)}"
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


def check_floating_input(dtype: str, floating: bool, model_dtype: str) -> None:
    """The input's dtype (a name, e.g. ``"int64"``) must be a floating one."""
    if not floating:
        raise TypeError(f"expected a floating-point {model_dtype} input (the model's dtype), got {dtype}")


def check_input_dtype(dtype: str, floating: bool, model_dtype: str) -> None:
    """torch's rule outside autocast: the input's dtype (a name, e.g. ``"float32"``) must be the
    model's, else torch fails deep inside the first conv. (The Lucid models instead cast a floating input
    of another dtype to their own: see ``InceptionClassifier.forward``.)"""
    check_floating_input(dtype, floating, model_dtype)
    if dtype != model_dtype:
        raise TypeError(
            f"expected an input of the model's dtype {model_dtype}, got {dtype}: cast the input "
            f"(or the model) first"
        )


def check_train_batch(shape: Sequence[int], batchnorm_training: Callable[[], bool]) -> None:
    """Every BatchNorm that normalises with the batch's statistics needs more than one value
    per channel: batch size times the last stage's map size (after ``check_input_shape``).
    What counts is the BatchNorms' mode, not the model's: frozen BatchNorms (in eval in a
    training model) use running statistics, so fine-tuning with them takes any batch, while
    BatchNorms put back in train in an eval model (test-time adaptation) do not.
    ``batchnorm_training()`` (a walk over the BatchNorms) runs only when the cheap size
    test already fails, so the common case costs nothing."""
    n, _, h, w = shape
    if n * last_stage_size(h) * last_stage_size(w) == 1 and batchnorm_training():
        raise ValueError(
            f"a BatchNorm in train mode (normalising with batch statistics) given a batch of one "
            f"{h}x{w} image sees one value per channel in the last stage (its maps are 1x1), so "
            f"it cannot normalise; use a batch of 2 or more, an input with a side >= "
            f"{MIN_TRAIN_SIZE_AT_BATCH_1}, or every BatchNorm in eval"
        )
