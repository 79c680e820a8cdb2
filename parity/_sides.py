"""What the two lock-step runners share: a side to run, what comes back from it, and the
guard that tells the harness's own errors from the model's.

``parity._lockstep`` runs the sides in turns on the calling thread (greenlets);
``parity._side_by_side`` runs them at the same time, one thread each. Either way a side's
hooks report events ``(module name, payload)``, paired across the sides by ``(name, call
index)``, and a pair is compared (``on_pair``) inside a hook, while both payloads are
valid: in turns by the side that completes it, side by side possibly by the other.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lucid_inception.frameworks import Adapter, module_that_raised

__all__ = [
    "LEAD_BYTES",
    "Event",
    "HookFailure",
    "OnPair",
    "Shape",
    "Side",
    "SideResult",
    "Stopped",
    "guarded",
    "has_room",
    "lead_for",
    "run_forward",
]

# How far (in bytes of kept copies) a side may run ahead of the other: outputs that fit are
# copied and compared later, bigger ones are compared in place, one by one, the faster side
# waiting. ``lead_for``: at least ``LEAD_BYTES``, and ``LEAD_INPUTS`` times the input, since
# activations grow with it: Inception's largest outputs (the stem's, 147 x 147 x 64) are
# 5.2 inputs (299 x 299 x 3), so 16 hold three. At batch 8 a 32 MB lead held none of them,
# and the Lucid forward waited at each: a compare of Inception-ResNet-v1 took 3.2-3.5 s
# with 32 MB, 2.9 s with 64 MB or 128 MB (137 MB is 16 inputs), 2.8 s with 256 MB (side by
# side, 4 alternating rounds, one run). At batch 1 the lead stays 32 MB.
LEAD_BYTES = 32 << 20
LEAD_INPUTS = 16


def lead_for(input_bytes: int) -> int:
    """The lead of a side whose forward takes an input of ``input_bytes``."""
    return max(LEAD_BYTES, LEAD_INPUTS * input_bytes)


# ``event(name, payload)`` is what a side's hooks call; it returns ``on_pair``'s result
# when it completes a pair, else None.
Event = Callable[[str, Any], Any]

# ``on_pair(name, call, seq_a, seq_b, payload_a, payload_b, live)``: ``live`` is the side
# whose hook it runs in. Its result is what side b's hook returns.
OnPair = Callable[[str, int, int, int, Any, Any, int], Any]


@dataclass
class Side:
    """One model's run: ``capture(event)`` returns a context manager whose hooks call
    ``event``; ``keep(payload)`` makes a payload outlive the hook (a copy of a view);
    ``grad`` keeps the autograd graph (a backward follows); ``lead_bytes`` bounds the
    copies this side may hold while ahead of the other."""

    adapter: Adapter
    model: object
    x: object
    grad: bool
    capture: Callable[[Event], contextlib.AbstractContextManager]
    keep: Callable[[Any], Any] = lambda payload: payload
    lead_bytes: int = LEAD_BYTES


@dataclass(frozen=True)
class Shape:
    """What is kept of an event that can no longer be paired: its shape."""

    shape: tuple


@dataclass
class SideResult:
    output: object = None
    error: Exception | None = None
    raised_in: str | None = None  # the innermost module entered and not returned
    emitted: int = 0  # events before the end (or the error)
    first_seen: dict[str, int] = field(default_factory=dict)  # name -> sequence number of first event
    calls: Counter = field(default_factory=Counter)  # name -> events

    def count(self, name: str) -> tuple[tuple[str, int], int]:
        """Note one more event of ``name``: its pairing key ``(name, call)`` and sequence number."""
        key, seq = (name, self.calls[name]), self.emitted
        self.calls[name] += 1
        self.emitted += 1
        self.first_seen.setdefault(name, seq)
        return key, seq


class Stopped(BaseException):
    """Raised in a side's hook to unwind it when the run is cancelled (BaseException, so
    that model code catching ``Exception`` cannot swallow it)."""


class HookFailure(BaseException):
    """An exception in the harness's own hook code: a bug to raise, not a model error."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


def has_room(ahead: int, size: int, lead: int) -> bool:
    """Whether a side holding ``ahead`` bytes of copies may keep one of ``size`` more. A
    side with no lead keeps none, of an empty output either: side b's hook may have to
    return side a's payload (teacher forcing), so it waits for it."""
    return lead > 0 and ahead + size <= lead


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap hook code so that its exceptions reach the caller of the runner instead of
    being reported as the model's."""

    def hook(*args: Any) -> Any:
        try:
            return fn(*args)
        except (Stopped, HookFailure):
            raise
        except Exception as error:
            raise HookFailure(error) from error

    return hook


def run_forward(side: Side, result: SideResult, hook: Event) -> None:
    """``side``'s forward under its hooks and grad mode. An exception of the model (or of
    installing its hooks) is recorded in ``result``, never raised; ``Stopped`` and
    ``HookFailure`` pass through."""
    try:
        with contextlib.nullcontext() if side.grad else side.adapter.no_grad(), side.capture(hook):
            try:
                result.output = side.model(side.x)
            except Exception as error:  # reported as a row, never raised
                result.error = error
                result.raised_in = module_that_raised(side.model, error)
    except Exception as error:  # installing or removing the hooks failed
        result.error, result.raised_in = error, ""
