"""Strict state-dict validation, the same for every framework.

A state is a mapping from dotted names to arrays. Loading one into a model is strict:
equal key sets, exact shapes (no reshape: a (1, 7) kernel never fits a (7, 1) slot) and,
unless casting is asked for, equal dtypes. Every problem is collected before anything is
written, so a failed load names every offending key and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["COUNTER_SUFFIX", "StateMismatchError", "UnreadableTensor", "check_state", "same_bits"]

# torch's BatchNorm batch counters (``bn.num_batches_tracked``): no Lucid model has them,
# so transfers, snapshots of state and converted files leave them aside.
COUNTER_SUFFIX = "num_batches_tracked"

# Optional hint for a problem key, e.g. "this is upstream's 64-channel B branch".
KeyHint = Callable[[str, tuple[int, ...], tuple[int, ...]], str | None]


@dataclass(frozen=True)
class UnreadableTensor:
    """A file's tensor that no numpy array can hold (a bfloat16 one, one on torch's meta
    device), kept as why, so that the file's check lists it with the others."""

    why: str


class StateMismatchError(ValueError, KeyError):
    """A state does not fit a model; ``problems`` lists one line per offending key.

    Also a ``KeyError``: upstream Lucid's ``load_state_dict`` raises one for missing or
    unexpected keys, and code written for it catches that."""

    def __init__(self, what: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{what}: {len(problems)} problem(s), nothing was changed:\n{lines}")

    def __str__(self) -> str:
        return str(self.args[0])  # KeyError's own would print the repr: quotes and "\n"


def check_state(
    expected: Mapping[str, tuple[tuple[int, ...], np.dtype]],
    given: Mapping[str, object],
    *,
    what: str,
    check_dtype: bool,
    hint: KeyHint | None = None,
) -> None:
    """Raise ``StateMismatchError`` unless ``given`` fits ``expected`` (name -> (shape, dtype))."""
    if not isinstance(given, Mapping):
        raise TypeError(f"{what}: expected a mapping of names to arrays, got {type(given).__name__}")
    problems: list[str] = []
    for key in expected:
        if key not in given:
            shape, dtype = expected[key]
            problems.append(f"{key}: missing (the model has {dtype} {shape})")
    for key in given:
        if key not in expected:
            problems.append(f"{key}: unexpected (the model has no such tensor)")
    for key, (shape, dtype) in expected.items():
        if key not in given:
            continue
        value = given[key]
        if not isinstance(value, np.ndarray):
            problems.append(f"{key}: expected a numpy array, got {type(value).__name__}")
            continue
        if tuple(value.shape) != tuple(shape):
            line = f"{key}: shape {tuple(value.shape)}, the model has {tuple(shape)}"
            extra = hint(key, tuple(value.shape), tuple(shape)) if hint else None
            problems.append(f"{line} ({extra})" if extra else line)
        elif not np.issubdtype(value.dtype, np.floating):
            problems.append(f"{key}: dtype {value.dtype}, expected a floating-point array")
        elif check_dtype and value.dtype != dtype:
            problems.append(f"{key}: dtype {value.dtype}, the model has {dtype} (cast one side first)")
    if problems:
        raise StateMismatchError(what, problems)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """The same dtype, shape and bytes (so -0.0 is not 0.0, and each NaN keeps its payload)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
