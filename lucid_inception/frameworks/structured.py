"""A module output that is not one tensor: a tuple, list or dict of tensors (nested), a
number, ``None``. Such outputs are compared too (a detection head's tuple, a dict of
logits and features), by their layout and their tensors one by one."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["StructuredOutput", "flatten_output"]


@dataclass(frozen=True)
class StructuredOutput:
    """``layout``: the output with each tensor or number replaced by ``"array"`` (tuples and
    lists alike are sequences: two faithful models may return either; a dataclass is its
    fields), ``None``, bools and strings by their ``repr``, any other object by its type;
    two outputs that differ there differ in kind, not in values.
    ``paths[i]`` names where ``arrays[i]`` sits (``[0]``, ``['logits']``); an array is a
    view valid while the hook runs, or a kept copy."""

    layout: object
    paths: tuple[str, ...]
    arrays: tuple[np.ndarray, ...]

    @property
    def shape(self) -> tuple[tuple[int, ...], ...]:
        """The shapes of its arrays, in order (what a row shows)."""
        return tuple(tuple(a.shape) for a in self.arrays)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    def copy(self) -> StructuredOutput:
        return StructuredOutput(self.layout, self.paths, tuple(np.array(a, copy=True) for a in self.arrays))

    def describe(self) -> str:
        """The layout in a line: ``a sequence of 2``, ``a dict of 'logits', 'features'``, ``a Out
        of logits, info`` (a dataclass), or the value's repr or type."""
        layout = self.layout
        if isinstance(layout, tuple) and layout and layout[0] == "sequence":
            return f"a sequence of {len(layout[1])}"
        if isinstance(layout, tuple) and layout:  # a dict, or a dataclass by its type's name
            return f"a {layout[0]} of {', '.join(key for key, _ in layout[1])}"
        return f"{layout}" if layout != "array" else "a number"


def flatten_output(
    output: object, is_tensor: Callable[[object], bool], to_array: Callable[[object], np.ndarray]
) -> StructuredOutput:
    """``output`` as a ``StructuredOutput``; ``to_array`` turns one of the framework's
    tensors (``is_tensor``) into a numpy array."""
    paths: list[str] = []
    arrays: list[np.ndarray] = []

    def walk(value: object, path: str) -> object:
        if is_tensor(value):
            paths.append(path)
            arrays.append(to_array(value))
            return "array"
        if isinstance(value, (numbers.Number, np.generic)) and not isinstance(value, bool):
            paths.append(path)
            arrays.append(np.asarray(value))
            return "array"
        if isinstance(value, (tuple, list)):
            return ("sequence", tuple(walk(v, f"{path}[{i}]") for i, v in enumerate(value)))
        if isinstance(value, Mapping):
            return ("dict", tuple((repr(k), walk(v, f"{path}[{k!r}]")) for k, v in value.items()))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):  # an output record
            fields = [(field.name, getattr(value, field.name)) for field in dataclasses.fields(value)]
            return (type(value).__name__, tuple((name, walk(v, f"{path}.{name}")) for name, v in fields))
        if value is None or isinstance(value, (bool, str)):
            return repr(value)[:80]  # compared as they print
        # Any other object: its type only (its repr may hold an address, or tensors that
        # each framework prints its own way).
        return f"<{type(value).__name__}>"

    layout = walk(output, "")
    return StructuredOutput(layout, tuple(paths), tuple(arrays))
