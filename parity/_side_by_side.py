"""Run two forwards side by side, one thread each, pairing what their hooks capture as it comes.

The pairing is ``parity._lockstep``'s: a side's hooks report events ``(module name,
payload)``, paired by ``(name, call index)``; a pair is compared by ``on_pair`` inside a
hook, while both payloads are valid. A side that is ahead keeps copies of its unpaired
payloads up to its ``lead_bytes``; past that it waits *inside its hook*, holding the live
payload. The difference: here both forwards compute at the same time, and the
comparisons overlap the forwards. On this project's 2-core machine a batch-1
Inception-v4 forward takes 0.38 s in Lucid and 0.15 s in torch with 2 threads each
(0.53 s one after the other), 0.44 s and 0.25 s with 1 thread each, and 0.42 s side by
side with 1 thread each (one run). So each side gets half the cores
(``side_by_side_threads``; 1 + 1 threads measured best: a compare of Inception-ResNet-v1
at batch 1 took 1.29x the bare forwards with 1 + 1, 1.45x with torch 1 + numpy's BLAS 2,
1.79x with 2 + 1, 1.60x in turns, one run; at batch 8 1.24x, 1.18x, -, 1.39x: numpy's
BLAS gains from a second thread on larger products, not enough to change the split), and
``on_pair`` calls, which record rows, run one at a time.

Who compares: the calling side (torch), so that the slower forward (Lucid's, nearly
always) spends no time on it. Torch runs ahead within its lead, keeping copies; Lucid,
arriving second, keeps a copy of its own payload and leaves the pair to torch
(``_SideBySide._left``), which compares the pairs left at its next event, while it waits,
and after its forward has ended, until Lucid's has. A side that arrives where the other
waits (idle, holding its live payload: its lead is used up) keeps a copy of its own
payload, within its lead, and hands the pair over: the idle side compares while this one
goes on (``_handed_off``). Otherwise the side that arrives second compares. Leaving pairs
needs a worker whose hook returns nothing, side a's: side b's returns ``on_pair``'s
outcome (its input, when teacher forced), so with torch as side a the calling side keeps
no copies ahead (its lead is 0), waits for Lucid, and Lucid hands it the comparisons.
Before pairs were left, torch compared as now but waited for Lucid at every module.
Leaving them made a batch-8 compare of Inception-ResNet-v1 3.07 s instead of 3.27 s (5
alternating rounds, one run), and changed nothing at batch 1, where torch's comparisons
keep it as busy as Lucid's forward: it ends 20-40 ms after Lucid either way.

Who may run side by side: two different frameworks, so that each framework's
process-wide state (Lucid's global grad flag, numpy's BLAS threads, torch's intra-op
threads) is one side's alone; a side whose framework keeps its modes per thread (torch:
grad mode, autocast, inference mode) runs on the calling thread, under the caller's
modes, and the other side on a worker thread. Both must be on the CPU (Lucid's ``'gpu'``,
MLX, is not run from a worker thread, and a model on torch's ``'cuda'`` needs no half of
the cores), and one core gains nothing: other pairs run in turns (``parity._lockstep``).
The thread limits are process-wide (``parity._lockstep`` runs one lock-step at a time),
and a model that sets torch's thread count in its forward has it put back afterwards.

Two waiting sides would wait forever (the sides report in different orders: a model
fault): side a keeps a copy and goes on, past its lead, whichever came first, and side b
keeps waiting, since its hook may return side a's payload (teacher forcing); the in-turns
runner breaks the tie the same way. A side that raises is stopped
there; the other runs alone to its end. A harness error or an interrupt on either thread
stops the other at its next hook, and is raised on the calling thread once both have
ended. Peak memory: both forwards' live tensors at about the same depth (as in turns,
where the paused side holds its own), plus each side's copies.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from parity._equality import usable_cores
from parity._sides import (
    HookFailure,
    OnPair,
    Shape,
    Side,
    SideResult,
    Stopped,
    guarded,
    has_room,
    run_forward,
)

__all__ = ["WORKER_NAME", "run_side_by_side", "side_by_side_threads"]

WORKER_NAME = "parity-side-by-side"  # the worker thread's name


def side_by_side_threads(side_a: Side, side_b: Side) -> tuple[int, int] | None:
    """CPU threads for side a's and side b's framework when the two can run side by side
    (half the cores each, the odd one to the side not on the calling thread), else None."""
    if side_a.adapter is side_b.adapter:
        return None
    if any(side.adapter.device(side.model) != "cpu" for side in (side_a, side_b)):
        return None
    cores = usable_cores()
    if cores < 2:
        return None
    calling = _calling_side(side_a, side_b)
    threads = [cores - cores // 2, cores - cores // 2]
    threads[calling] = cores // 2
    return threads[0], threads[1]


def _calling_side(side_a: Side, side_b: Side) -> int:
    """The side that runs on the calling thread: one whose modes are per thread (torch's),
    else side a."""
    return 1 if side_b.adapter.modes_per_thread and not side_a.adapter.modes_per_thread else 0


@dataclass
class _Entry:
    """An event waiting for its pair: a kept copy, a ``Shape``, or the live payload of a
    side that waits in its hook (``live``)."""

    seq: int
    payload: Any
    nbytes: int = 0  # counted against its side's lead
    live: bool = False


@dataclass(frozen=True)
class _Paired:
    """The answer to a waiting side: its payload was compared; ``outcome`` is ``on_pair``'s."""

    outcome: Any


# The other answers to a waiting side: keep a copy and go on (the other side must wait),
# and: the other side's event came as a copy, compare it yourself (``_handed_off``).
_COPY = "copy"
_ARRIVED = "arrived"


def run_side_by_side(
    side_a: Side, side_b: Side, on_pair: OnPair, threads: tuple[int, int]
) -> tuple[SideResult, SideResult, list[tuple[str, int, int, Any]], list[tuple[str, int, int, Any]]]:
    """``parity._lockstep.run_lockstep`` with one thread per side, each framework limited to
    ``threads`` CPU threads (side a's, side b's) while it runs."""
    run = _SideBySide((side_a, side_b), on_pair)
    with contextlib.ExitStack() as limits:
        for side, count in zip(run.sides, threads, strict=True):
            limits.enter_context(side.adapter.limit_cpu_threads(count))
        run.run()
    leftovers = tuple(
        sorted(
            ((name, call, entry.seq, entry.payload) for (name, call), entry in p.items()), key=lambda t: t[2]
        )
        for p in run.pending
    )
    return run.results[0], run.results[1], leftovers[0], leftovers[1]


class _SideBySide:
    """One run: the state both threads share, guarded by ``cond``."""

    def __init__(self, sides: tuple[Side, Side], on_pair: OnPair) -> None:
        self.sides, self.on_pair = sides, on_pair
        self.calling = _calling_side(*sides)
        self.leads = [side.lead_bytes for side in sides]
        # A worker on side a leaves the pairs it completes to the calling side (its hook
        # returns nothing, see ``_left``), which may then run ahead. A worker on side b
        # compares them itself (its hook returns ``on_pair``'s outcome: its input, when
        # teacher forced), so there the calling side keeps no copies ahead, and waits.
        self.leaves = self.calling == 1
        if not self.leaves:
            self.leads[self.calling] = 0
        # Pairs the worker left: (key, side a's entry, side b's entry), both kept copies,
        # counted in their sides' ``ahead`` until the calling side has compared them.
        self.left: collections.deque[tuple[tuple[str, int], _Entry, _Entry]] = collections.deque()
        self.results = (SideResult(), SideResult())
        # Guards everything below but ``results``. On an ``RLock`` (the default), which
        # knows its owner: see ``run``.
        self.cond = threading.Condition(threading.RLock())
        self.pending: tuple[dict, dict] = ({}, {})  # key -> _Entry
        self.ahead = [0, 0]  # bytes of kept copies each side holds
        self.done = [False, False]
        self.waiting: list[tuple[str, int] | None] = [None, None]  # the key a side waits at
        self.answers: list[Any] = [None, None]  # a _Paired, _COPY or _ARRIVED for a waiting side
        self.failures: list[BaseException] = []
        self.pairing = threading.Lock()  # ``on_pair`` records rows: one call at a time

    # ----------------------------------------------------------------- running

    def run(self) -> None:
        """Both forwards: the worker side on a thread of its own, the calling side here.
        Raises the first harness error or interrupt of either, once both have ended."""
        worker_side = 1 - self.calling
        adapter = self.sides[worker_side].adapter
        mode = adapter.grad_enabled()  # the caller's, read on its thread

        def worker_main() -> None:
            adapter.set_grad_enabled(mode)
            self.work(worker_side)

        worker = threading.Thread(target=worker_main, name=WORKER_NAME, daemon=True)
        try:
            worker.start()  # in the ``try``: a Ctrl-C may come as soon as it runs
            self.work(self.calling)
        except BaseException as error:  # Ctrl-C on this thread: stop the worker too
            self.fail(error)
        finally:
            # A Ctrl-C between ``with self.cond`` taking the lock and entering its body
            # (``Condition.__enter__`` is Python code) leaves the lock held by this thread,
            # with no ``__exit__`` to come (CPython bpo-29988): the worker would wait for it
            # forever. No ``with self.cond`` of this thread is active here: let go of it.
            while self.cond._is_owned():
                self.cond.release()
            while worker.is_alive():  # it stops at its next hook once ``failures`` is set
                try:
                    worker.join()
                except BaseException as error:  # a second Ctrl-C: keep waiting, it is stopping
                    self.fail(error)
        if self.failures:
            raise self.failures[0]

    def work(self, i: int) -> None:
        try:
            run_forward(
                self.sides[i], self.results[i], guarded(lambda name, payload: self.event(i, name, payload))
            )
        except Stopped:
            pass
        except HookFailure as failure:
            self.fail(failure.error)
        except BaseException as error:  # an interrupt inside the model: stop both, raise it
            self.fail(error)
        finally:
            with self.cond:
                self.done[i] = True
                self.cond.notify_all()
        if i == self.calling:
            self._compare_left_until_the_worker_ends()

    def _compare_left_until_the_worker_ends(self) -> None:
        """On the calling thread, its forward ended: compare the pairs the worker leaves
        until the worker has ended too."""
        try:
            with self.cond:
                while True:
                    self._compare_left()
                    if self.failures or (self.done[1 - self.calling] and not self.left):
                        return
                    if not self.left:  # one left while comparing: its notify has gone
                        self.cond.wait()
        except BaseException as error:  # a harness error or Ctrl-C: stop the worker, raise it
            self.fail(error)

    def fail(self, error: BaseException) -> None:
        with self.cond:
            self.failures.append(error)
            self.cond.notify_all()

    # ----------------------------------------------------------------- events

    def event(self, i: int, name: str, payload: Any) -> Any:
        """Side ``i``'s hook: pair the event, keep it, or wait with it."""
        key, seq = self.results[i].count(name)  # only this side's thread touches its result
        o = 1 - i
        with self.cond:
            if i == self.calling:
                self._compare_left()
            if self.failures:
                raise Stopped
            other = self.pending[o].get(key)
            if other is not None and other.live and self._handed_off(i, key, seq, payload):
                return None
            if other is not None and i != self.calling and self._left(i, key, seq, payload, other):
                return None
            other = self._take(o, key)
            if other is None:
                if self.done[o]:  # nobody will pair it: keep the shape only
                    self.pending[i][key] = _Entry(seq, Shape(tuple(payload.shape)))
                    return None
                outcome = self._unpaired(i, key, seq, payload)
                if outcome is not _ARRIVED:
                    return outcome
                other = self._take(o, key)
        return self._pair(i, key, seq, payload, other)

    def _pair(self, i: int, key: tuple[str, int], seq: int, payload: Any, other: _Entry) -> Any:
        seqs = (seq, other.seq) if i == 0 else (other.seq, seq)
        payloads = (payload, other.payload) if i == 0 else (other.payload, payload)
        with self.pairing:
            self._compare_left_in_pairing()  # the earlier pairs first: a Repeat names one
            outcome = self.on_pair(*key, *seqs, *payloads, i)
        if other.live:  # the other side waits in its hook until its payload is compared
            with self.cond:
                self.answers[1 - i] = _Paired(outcome)
                self.cond.notify_all()
        return outcome if i == 1 else None

    def _take(self, o: int, key: tuple[str, int]) -> _Entry | None:
        """Called with ``cond`` held: side ``o``'s entry for ``key``, removed; a side
        waiting on it is no longer waiting (it must not be asked to copy)."""
        entry = self.pending[o].pop(key, None)
        if entry is not None:
            self.ahead[o] -= entry.nbytes
            if entry.live:
                self.waiting[o] = None
        return entry

    def _keep(self, i: int, payload: Any) -> Any:
        """Called with ``cond`` held: side ``i``'s copy of ``payload``, made without it
        (copying takes time; the other side goes on meanwhile)."""
        self.cond.release()
        try:
            return self.sides[i].keep(payload)
        finally:
            self._reacquire()

    def _reacquire(self) -> None:
        """Take ``cond`` back after a stretch without it. A Ctrl-C on the calling thread
        may come while it waits for the lock: take the lock all the same, then raise the
        interrupt, so that the ``with self.cond`` around releases a lock it holds (raising
        at once made that release a RuntimeError, which hid the Ctrl-C; found by review).
        A lock taken twice this way is let go by ``run``."""
        interrupt: BaseException | None = None
        while True:
            try:
                self.cond.acquire()
            except BaseException as error:
                interrupt = interrupt or error
                continue
            break
        if interrupt is not None:
            raise interrupt

    def _handed_off(self, i: int, key: tuple[str, int], seq: int, payload: Any) -> bool:
        """Called with ``cond`` held, the other side waiting live at ``key``: if side ``i``
        may hold a copy of ``payload`` (its ``lead_bytes``), keep one and let the waiting
        side, which is idle, compare while this one goes on. True when handed over."""
        size = int(getattr(payload, "nbytes", 0))
        if not has_room(self.ahead[i], size, self.sides[i].lead_bytes):
            return False
        kept = self._keep(i, payload)  # the other side waits meanwhile: nothing else changes
        self._hand_over(i, key, seq, kept, size)
        return True

    def _left(self, i: int, key: tuple[str, int], seq: int, payload: Any, other: _Entry) -> bool:
        """Called with ``cond`` held, on the worker, the calling side having kept a copy for
        ``key`` (it is ahead): if the worker may leave pairs and hold a copy of ``payload``
        (its lead), keep one and leave the pair to the calling side, which compares it at
        its next event, while it waits, or once its forward has ended: the slower forward
        compares only once its lead is used up (then it compares the pairs left before
        the one it pairs, see ``_compare_left_in_pairing``). True when left."""
        size = int(getattr(payload, "nbytes", 0))
        if not self.leaves or other.live or isinstance(other.payload, Shape):
            return False
        if not has_room(self.ahead[i], size, self.leads[i]):
            return False
        del self.pending[1 - i][key]  # nobody else may take it while the copy is made
        kept = self._keep(i, payload)
        self.ahead[i] += size
        self.left.append((key, _Entry(seq, kept, size), other))  # the worker is side a
        self.cond.notify_all()
        return True

    def _compare_left(self) -> None:
        """Called with ``cond`` held, on the calling thread: compare the pairs the worker
        left (``cond`` released meanwhile)."""
        if not self.left:
            return
        self.cond.release()
        try:
            with self.pairing:
                self._compare_left_in_pairing()
        finally:
            self._reacquire()

    def _compare_left_in_pairing(self) -> None:
        """Called with ``pairing`` held (``cond`` not), on either thread: compare the pairs
        the worker left, oldest first. Every pair is compared under ``pairing`` after
        these, so none is compared before a pair it follows: an output that repeats an
        earlier one (``parity._capture.Repeat``) reuses that pair's row, if compared."""
        while True:
            with self.cond:
                if not self.left or self.failures:
                    return
                key, a, b = self.left.popleft()
            try:
                self.on_pair(*key, a.seq, b.seq, a.payload, b.payload, self.calling)
            finally:
                with self.cond:
                    self.ahead[0] -= a.nbytes
                    self.ahead[1] -= b.nbytes

    def _hand_over(self, i: int, key: tuple[str, int], seq: int, kept: Any, size: int) -> None:
        """Called with ``cond`` held: post side ``i``'s copy for ``key`` and wake the other
        side, which waits live there, to pair it."""
        self.pending[i][key] = _Entry(seq, kept, size)
        self.ahead[i] += size
        self.answers[1 - i] = _ARRIVED
        self.waiting[1 - i] = None
        self.cond.notify_all()

    def _unpaired(self, i: int, key: tuple[str, int], seq: int, payload: Any) -> Any:
        """Called with ``cond`` held: no pair for ``key`` yet. Returns the hook's result, or
        ``_ARRIVED`` when the other side's event came meanwhile (for the caller to pair)."""
        o = 1 - i
        size = int(getattr(payload, "nbytes", 0))
        if has_room(self.ahead[i], size, self.leads[i]):
            kept = self._keep(i, payload)
            came = self.pending[o].get(key)  # while copying
            if came is not None and came.live:  # the copy is made: hand it over
                self._hand_over(i, key, seq, kept, size)
                return None
            if came is not None:  # compare with the live payload
                return _ARRIVED
            if self.done[o]:
                self.pending[i][key] = _Entry(seq, Shape(tuple(payload.shape)))
            else:
                self.pending[i][key] = _Entry(seq, kept, size)
                self.ahead[i] += size
            return None
        if i == 0 and self.waiting[o] is not None:
            # Both would wait (the sides diverge): side a keeps a copy and goes on, past
            # its lead, and side b keeps waiting, since its hook may return side a's
            # payload (teacher forcing). As in turns.
            kept = self._keep(i, payload)  # side b waits meanwhile: nothing else changes
            self.pending[i][key] = _Entry(seq, kept, size)
            self.ahead[i] += size
            return None
        # Wait here, live, until the other side compares against this payload or hands
        # its own over.
        self.pending[i][key] = _Entry(seq, payload, live=True)
        self.waiting[i] = key
        if self.waiting[o] is not None:  # side b would wait too: side a copies and goes on
            self.answers[o] = _COPY
            self.cond.notify_all()
        try:
            while self.answers[i] is None and not self.done[o] and not self.failures:
                if i == self.calling and self.left:  # compare what the worker left meanwhile
                    self._compare_left()
                    continue
                self.cond.wait()
        except BaseException:  # a harness error comparing what was left: the payload goes
            self.pending[i].pop(key, None)
            self.waiting[i] = None
            raise
        answer, self.answers[i] = self.answers[i], None
        self.waiting[i] = None
        if isinstance(answer, _Paired):
            return answer.outcome if i == 1 else None
        if self.failures:
            raise Stopped
        del self.pending[i][key]
        if answer is _ARRIVED:
            return _ARRIVED
        if self.done[o]:  # nobody will pair it: keep the shape only
            self.pending[i][key] = _Entry(seq, Shape(tuple(payload.shape)))
        else:  # _COPY: the two would wait for each other forever
            self.pending[i][key] = _Entry(seq, self.sides[i].keep(payload), size)
            self.ahead[i] += size
        return None
