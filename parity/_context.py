"""What every phase of a compare shares: the context its rows go into (``Context``), the
phases' order (``PHASES``), and the rows every lock-step phase writes the same way: a
capture on one side only, an exception, a module called more than once."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Any

from lucid_inception.frameworks import Adapter
from parity._input_grads import InputGrads
from parity._lockstep import SideResult
from parity.report import Row
from parity.tolerances import Tolerance

__all__ = ["PHASES", "Context", "error_rows", "module_events", "number_calls", "owner_of", "unmatched_rows"]


PHASES = {"state": 0, "forward": 1, "train": 2, "backward": 3}


@dataclasses.dataclass
class Context:
    """One compare: the two models, what they are compared in, and the rows so far."""

    adapters: tuple[Adapter, Adapter]
    models: tuple[object, object]
    tol: Tolerance
    dtype: str
    devices: tuple[str, str]
    lead_bytes: int  # how far a side may run ahead in a lock-step (``parity._sides.lead_for``)
    # (sort key, row, call index or None): the key orders rows in execution order.
    rows: list[tuple[tuple, Row, int | None]] = dataclasses.field(default_factory=list)
    # With a backward: each side's module-input gradients (``parity._input_grads``).
    input_grads: tuple[InputGrads, InputGrads] | None = None

    def add(self, key: tuple, row: Row, call: int | None = None) -> None:
        self.rows.append((key, row, call))

    def sorted_rows(self) -> list[tuple[tuple, Row, int | None]]:
        return sorted(self.rows, key=lambda entry: entry[0])

    def side(self, i: int) -> str:
        return f"{'ab'[i]} ({self.adapters[i].name})"


def owner_of(key: str) -> str:
    """The module that holds a parameter or buffer: ``"conv.0.bn.weight"`` -> ``"conv.0.bn"``."""
    return key.rpartition(".")[0]


def module_events(leftovers: list[tuple[Any, int, int, Any]], kind: str) -> list[tuple[str, int, int, Any]]:
    """The unmatched ``(kind, module)`` events of one kind, named by their module."""
    return [(name[1], call, seq, kept) for name, call, seq, kept in leftovers if name[0] == kind]


def unmatched_rows(
    ctx: Context,
    results: tuple[SideResult, SideResult],
    leftovers: tuple[list, list],
    phase: int,
    kind: str,
    verb: str,
) -> None:
    """A capture on one side only fails, unless the other side raised (it stopped early)."""
    for i in (0, 1):
        if results[1 - i].error is not None:
            continue
        for name, call, seq, payload in leftovers[i]:
            counts = (results[0].calls[name], results[1].calls[name])
            shape = getattr(payload, "shape", None)
            shapes = (tuple(shape), None) if i == 0 else (None, tuple(shape))
            other = "ab"[1 - i]
            if counts[1 - i]:  # it ran on both sides, more often on this one
                what = f"call {call + 1} {verb} on side {ctx.side(i)} has no counterpart on side {other}"
            else:
                what = f"{verb} on side {ctx.side(i)} only"
            note = f"{what}: side a {counts[0]} call(s), side b {counts[1]}"
            ctx.add(
                (phase, seq, seq),
                Row(name, kind, *shapes, math.inf, math.inf, ctx.tol.for_kind(kind), False, note),
            )


def error_rows(ctx: Context, results: tuple[SideResult, SideResult], phase: int, what: str) -> None:
    """An exception is located where the compared rows of this phase (outputs, or local
    inputs) first fail, or, if none did, at the module that raised."""
    failing = [
        (key, row)
        for key, row, _ in ctx.sorted_rows()
        if key[0] == phase and not row.ok and row.kind != "error"
    ]
    for i, res in enumerate(results):
        if res.error is None:
            continue
        other = results[1 - i]
        skipped = other.emitted - res.emitted
        note = (
            f"side {ctx.side(i)} raised in the {what} in module {res.raised_in!r}: "
            f"{type(res.error).__name__}: {res.error}"
        )
        if skipped > 0 and other.error is None:
            note += f" ({skipped} capture(s) of the other side not compared)"
        if failing:
            (key, first) = failing[0]
            module, key = first.module, (*key[:2], key[2] + 0.5)
            note += f"; the comparisons first fail at {module!r}"
        else:
            module, key = res.raised_in, (phase, res.emitted, res.emitted)
        ctx.add(key, Row(module, "error", None, None, math.inf, math.inf, ctx.tol.rel, False, note))


def number_calls(ctx: Context, phase: int, kind: str, results: tuple[SideResult, SideResult]) -> None:
    """Say "call i of n" on the rows of modules that ran more than once."""
    total: Counter = Counter()
    for res in results:
        for name, n in res.calls.items():
            total[name] = max(total[name], n)
    for i, (key, row, call) in enumerate(ctx.rows):
        if key[0] == phase and row.kind == kind and call is not None and total[row.module] > 1:
            note = "; ".join(filter(None, [f"call {call + 1} of {total[row.module]}", row.note]))
            ctx.rows[i] = (key, dataclasses.replace(row, note=note), call)
