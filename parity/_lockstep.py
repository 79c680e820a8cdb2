"""Run two forwards in lock-step, pairing what their hooks capture as it comes.

Both sides run on the calling thread, each in its own greenlet (a call stack that can be
paused and resumed), one at a time. A side's hooks report events ``(module name,
payload)``, paired across the sides by ``(name, call index)``; the side that completes a
pair compares right there (``on_pair``). A side that is ahead keeps copies of its unpaired
payloads, up to ``lead_bytes``; at that point it pauses *inside its hook*, holding the live
payload, and the other side resumes: it compares against the live array, which cannot
change while its forward is paused, and no copy is made. So a large output (the stem's)
is never copied, while small ones (the last blocks') are copied and compared in batches.

Why one thread: with a thread per side (this module until 2026-11-30), torch's forward
ran ~50% slower on a thread of its own than on the main thread, and a thread hand-over
costs ~30 us against ~1 us for a greenlet switch; a batch-1 Inception-v4 compare took
1.81x the bare forwards with threads, 1.51x with greenlets (2 cores, one run). The two
sides share the thread's framework state, so the grad modes (torch's, per thread, and
Lucid's global grad flag) are saved at every switch and set back when a side resumes:
each side runs under its own, and a model that enters ``no_grad`` inside its forward
turns gradients off for itself only. Still shared: torch's autocast and inference mode,
which a model switching inside its forward switches for the other side too while it is
paused. One more shared resource a turn can cost: after each call numpy's OpenBLAS keeps its idle
workers spinning for up to 2^28 cycles, taking a core from torch when it runs next
(``OPENBLAS_THREAD_TIMEOUT=4`` in the environment before numpy loads stops it: the
``python -m parity`` entry points set it). Peak memory is about one forward's peak, plus
the other's paused live tensors, plus ``lead_bytes``.

``on_pair``'s result is what side b's hook returns, whether side b completed the pair or
was waiting for side a: the train step uses it to feed side b's BatchNorms side a's input
(side b then gets ``lead_bytes=0``: it always waits for side a).

A side that raises is stopped there (``module_that_raised`` reads which module from the
traceback); the other side then runs alone to its end.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import greenlet

from lucid_inception.frameworks import Adapter, module_that_raised

__all__ = ["LEAD_BYTES", "Event", "Shape", "Side", "SideResult", "guarded", "run_lockstep"]

# How far (in bytes of kept copies) a side may run ahead of the other: outputs at most this
# size are copied and compared in batches, bigger ones are compared in place, one by one.
LEAD_BYTES = 32 << 20

# ``event(name, payload)`` is what a side's hooks call; it returns ``on_pair``'s result
# when it completes a pair, else None.
Event = Callable[[str, Any], Any]


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


class _Stopped(BaseException):
    """Thrown into a paused side to unwind it when the run is cancelled (BaseException, so
    that model code catching ``Exception`` cannot swallow it)."""


class _HookFailure(BaseException):
    """An exception in the harness's own hook code: a bug to raise, not a model error."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap hook code so that its exceptions reach the caller of ``run_lockstep`` instead
    of being reported as the model's."""

    def hook(*args: Any) -> Any:
        try:
            return fn(*args)
        except (_Stopped, _HookFailure):
            raise
        except Exception as error:
            raise _HookFailure(error) from error

    return hook


def _grad_mode(side: Side) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if side.grad else side.adapter.no_grad()


def run_lockstep(
    side_a: Side,
    side_b: Side,
    on_pair: Callable[[str, int, int, int, Any, Any, int], Any],
) -> tuple[SideResult, SideResult, list[tuple[str, int, int, Any]], list[tuple[str, int, int, Any]]]:
    """Run both sides. ``on_pair(name, call, seq_a, seq_b, payload_a, payload_b, live)``
    is called for every key both sides reported, inside the hook of side ``live`` (the
    one that arrived second, whose payload is the live one). Returns the two results and each
    side's unmatched events ``(name, call, seq, kept payload or Shape)``."""
    sides = (side_a, side_b)
    results = (SideResult(), SideResult())
    pending: tuple[dict, dict] = ({}, {})
    failures: list[BaseException] = []
    runners: list[greenlet.greenlet] = []

    # The grad modes of the frameworks involved (one each, the same framework once) are
    # the thread's, not a side's: a side paused inside its model's ``no_grad`` would leave
    # it on for the other. So whoever switches away notes the modes it runs under and sets
    # them again when it is resumed (``resume``); a side starts under the caller's modes.
    frameworks = tuple(dict.fromkeys(side.adapter for side in sides))
    home = tuple(adapter.grad_enabled() for adapter in frameworks)

    def resume(runner: greenlet.greenlet, stop: bool = False) -> None:
        """Run ``runner`` (or unwind it, ``stop``) until it pauses or ends, then put back
        the grad modes the caller was running under."""
        own = tuple(adapter.grad_enabled() for adapter in frameworks)
        try:
            if stop:
                runner.throw(_Stopped)
            else:
                runner.switch()
        finally:
            for adapter, mode in zip(frameworks, own, strict=True):
                if adapter.grad_enabled() != mode:  # reading is cheaper than setting
                    adapter.set_grad_enabled(mode)

    ahead = [0, 0]  # bytes of kept copies each side holds
    delivered: dict[tuple[str, int], Any] = {}  # on_pair results for side b's waiting hook

    def other_done(i: int) -> bool:
        return runners[1 - i].dead

    def hand_over(i: int) -> None:
        if not other_done(i):
            resume(runners[1 - i])

    def pair(i: int, key: tuple[str, int], seq: int, payload: Any) -> Any:
        other_seq, other_payload, other_bytes = pending[1 - i].pop(key)
        ahead[1 - i] -= other_bytes
        seqs = (seq, other_seq) if i == 0 else (other_seq, seq)
        payloads = (payload, other_payload) if i == 0 else (other_payload, payload)
        return on_pair(*key, *seqs, *payloads, i)

    def event(i: int, name: str, payload: Any) -> Any:
        res = results[i]
        key, seq = (name, res.calls[name]), res.emitted
        res.calls[name] += 1
        res.emitted += 1
        res.first_seen.setdefault(name, seq)
        if key in pending[1 - i]:
            outcome = pair(i, key, seq, payload)
            if i == 0:
                if outcome is not None:  # for side b, waiting in this key's hook
                    delivered[key] = outcome
                return None
            return outcome
        if other_done(i):  # nobody will pair it: keep the shape only
            pending[i][key] = (seq, Shape(tuple(payload.shape)), 0)
            return None
        size = int(getattr(payload, "nbytes", 0))
        if ahead[i] + size <= sides[i].lead_bytes:
            pending[i][key] = (seq, sides[i].keep(payload), size)
            ahead[i] += size
            return None
        pending[i][key] = (seq, payload, 0)
        hand_over(i)
        if key in pending[i]:
            pending[i][key] = (seq, sides[i].keep(payload), size)
            ahead[i] += size
            return None
        return delivered.pop(key, None) if i == 1 else None

    def work(i: int) -> None:
        side, res = sides[i], results[i]
        for adapter, mode in zip(frameworks, home, strict=True):  # not the modes of whoever started it
            adapter.set_grad_enabled(mode)
        try:
            try:
                hook = guarded(lambda name, payload: event(i, name, payload))
                with _grad_mode(side), side.capture(hook):
                    try:
                        res.output = side.model(side.x)
                    except Exception as error:  # reported as a row, never raised
                        res.error = error
                        res.raised_in = module_that_raised(side.model, error)
            except Exception as error:  # installing or removing the hooks failed
                res.error, res.raised_in = error, ""
        except _Stopped:
            pass
        except _HookFailure as failure:
            failures.append(failure.error)
        # Returning resumes the caller (the runners' parent).

    # Side a starts; a side that finishes returns here and the other resumes where it
    # paused (or starts), then runs alone to its end.
    runners += [greenlet.greenlet(lambda i=i: work(i)) for i in (0, 1)]
    try:
        while not failures and not all(runner.dead for runner in runners):
            resume(next(runner for runner in runners if not runner.dead))
    finally:  # a harness bug or Ctrl-C: unwind a paused side through its hooks' exits
        for runner in runners:
            if runner:  # started and not finished
                resume(runner, stop=True)
    if failures:
        raise failures[0]
    leftovers = tuple(
        sorted(((name, call, seq, kept) for (name, call), (seq, kept, _) in p.items()), key=lambda t: t[2])
        for p in pending
    )
    return results[0], results[1], leftovers[0], leftovers[1]
