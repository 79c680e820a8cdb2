"""Run two forwards in lock-step, pairing what their hooks capture as it comes.

``run_lockstep`` runs a Lucid and a torch forward side by side, one thread each
(``parity._side_by_side``), where it can; other pairs (one framework on both sides,
Lucid's ``'gpu'``, torch's ``'cuda'``, one core) run in turns on the calling thread
(``run_in_turns``, here).

In turns: each side runs in its own greenlet (a call stack that can be paused and
resumed), one at a time. A side's hooks report events ``(module name, payload)``, paired
across the sides by ``(name, call index)``; the side that completes a pair compares right
there (``on_pair``; side by side, it may hand the pair to the other side instead). A side
that is ahead keeps copies of its unpaired payloads, up to
``lead_bytes``; at that point it pauses *inside its hook*, holding the live payload, and
the other side resumes: it compares against the live array, which cannot change while its
forward is paused, and no copy is made. So a large output (the stem's) is never copied,
while small ones (the last blocks') are copied and compared in batches.

Why greenlets and not a thread per side here: sides of one framework share its
process-wide state (Lucid's global grad flag), and a thread hand-over costs ~30 us
against ~1 us for a greenlet switch. The two sides share the thread's framework state,
so the grad modes (torch's, per thread, and Lucid's global grad flag) are saved at every
switch and set back when a side resumes: each side runs under its own, and a model that
enters ``no_grad`` inside its forward turns gradients off for itself only. Still shared:
torch's autocast and inference mode, which a model switching inside its forward switches
for the other side too while it is paused. One more shared resource a turn can cost:
after each call numpy's OpenBLAS keeps its idle workers spinning for up to 2^28 cycles,
taking a core from torch when it runs next (``OPENBLAS_THREAD_TIMEOUT=4`` in the
environment before numpy loads stops it: the ``python -m parity`` entry points set it).
Peak memory is about one forward's peak, plus the other's paused live tensors, plus
``lead_bytes``.

``on_pair``'s result is what side b's hook returns, whether side b completed the pair or
was waiting for side a: the train step uses it to feed side b's BatchNorms side a's input
(side b then gets ``lead_bytes=0``: it always waits for side a).

A side that raises is stopped there (``module_that_raised`` reads which module from the
traceback); the other side then runs alone to its end.
"""

from __future__ import annotations

from typing import Any

import greenlet

from parity._side_by_side import run_side_by_side, side_by_side_threads
from parity._sides import (
    HookFailure,
    OnPair,
    Shape,
    Side,
    SideResult,
    Stopped,
    guarded,
    has_room,
    lead_for,
    run_forward,
)

__all__ = ["Shape", "Side", "SideResult", "lead_for", "run_lockstep"]


def run_lockstep(
    side_a: Side, side_b: Side, on_pair: OnPair
) -> tuple[SideResult, SideResult, list[tuple[str, int, int, Any]], list[tuple[str, int, int, Any]]]:
    """Run both sides: side by side on two threads where they can (``parity._side_by_side``),
    else in turns on this thread. ``on_pair(name, call, seq_a, seq_b, payload_a,
    payload_b, live)`` is called for every key both sides reported, inside the hook of side
    ``live``, whose payload is the live one (the other's may be a kept copy). Returns the
    two results and each side's unmatched events ``(name, call, seq, kept payload or
    Shape)``."""
    threads = side_by_side_threads(side_a, side_b)
    if threads is not None:
        return run_side_by_side(side_a, side_b, on_pair, threads)
    return run_in_turns(side_a, side_b, on_pair)


def run_in_turns(
    side_a: Side, side_b: Side, on_pair: OnPair
) -> tuple[SideResult, SideResult, list[tuple[str, int, int, Any]], list[tuple[str, int, int, Any]]]:
    """``run_lockstep`` on the calling thread, one side at a time (see the module's doc)."""
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
                runner.throw(Stopped)
            else:
                runner.switch()
        finally:
            for adapter, mode in zip(frameworks, own, strict=True):
                if adapter.grad_enabled() != mode:  # reading is cheaper than setting
                    adapter.set_grad_enabled(mode)

    ahead = [0, 0]  # bytes of kept copies each side holds
    waiting: list[tuple[str, int] | None] = [None, None]  # the key a paused side waits at
    delivered: dict[tuple[str, int], Any] = {}  # on_pair results for side b's waiting hook

    def other_done(i: int) -> bool:
        return runners[1 - i].dead

    def hand_over(i: int) -> None:
        if not other_done(i):
            resume(runners[1 - i])

    def pair(i: int, key: tuple[str, int], seq: int, payload: Any) -> Any:
        other_seq, other_payload, other_bytes = pending[1 - i].pop(key)
        ahead[1 - i] -= other_bytes
        if waiting[1 - i] == key:  # its live payload: that side no longer waits for a pair
            waiting[1 - i] = None
        seqs = (seq, other_seq) if i == 0 else (other_seq, seq)
        payloads = (payload, other_payload) if i == 0 else (other_payload, payload)
        return on_pair(*key, *seqs, *payloads, i)

    def event(i: int, name: str, payload: Any) -> Any:
        key, seq = results[i].count(name)
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
        # Past its lead, side a still keeps a copy and goes on while side b waits in a hook
        # (for a key side a has yet to reach: the sides diverge): side b must be paired
        # there, since its hook may return side a's payload (teacher forcing).
        if has_room(ahead[i], size, sides[i].lead_bytes) or (i == 0 and waiting[1] is not None):
            pending[i][key] = (seq, sides[i].keep(payload), size)
            ahead[i] += size
            return None
        pending[i][key] = (seq, payload, 0)
        waiting[i] = key
        try:
            hand_over(i)
        finally:
            waiting[i] = None
        if key in pending[i]:
            pending[i][key] = (seq, sides[i].keep(payload), size)
            ahead[i] += size
            return None
        return delivered.pop(key, None) if i == 1 else None

    def work(i: int) -> None:
        for adapter, mode in zip(frameworks, home, strict=True):  # not the modes of whoever started it
            adapter.set_grad_enabled(mode)
        try:
            run_forward(sides[i], results[i], guarded(lambda name, payload: event(i, name, payload)))
        except Stopped:
            pass
        except HookFailure as failure:
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
