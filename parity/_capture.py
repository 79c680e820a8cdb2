"""What one side of a compare reports to the lock-step: every module's output (and, compared
locally, every module's input) as an event, and an output that is, unchanged, the tensor of
the side's previous output as a ``Repeat`` of it, so that its row is reused."""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

from lucid_inception.frameworks import StructuredOutput, TensorState, capture_inputs, capture_outputs

__all__ = ["ForwardCapture", "Repeat", "event_module"]


@dataclasses.dataclass(frozen=True)
class Repeat:
    """An output that is, unchanged, the tensor of the same side's previous output event
    ``of`` (a container returning its last child's output: a quarter of Inception's
    outputs). When both sides repeat the same event, its row is reused instead of
    comparing the same two arrays again (except at the root). ``array``: the values (a
    view valid while the tensor is, or a kept copy).

    The limit of this shortcut: "unchanged" means the same tensor object and, in torch,
    the same ``_version``. A container that writes into its last child's output after the
    child returned, in a way no version counter sees, is not caught at the container: in
    torch a write through ``.data`` (``y.data.mul_(2)``) or through a numpy view of the
    tensor; in Lucid, which keeps no version counter, any in-place write (``t[i] = v``,
    ``t.data[...] = v``). The changed values are compared at the next module that reads
    them, so the fault is reported there (at the latest at the root, whose output is always
    compared in full from its live values), one module late. Torch's ordinary in-place ops
    (``y.mul_(2)``, also on ``y.detach()``) bump the version and are caught where they
    happen. Comparing repeats in full would cost about a quarter more comparison bytes."""

    of: tuple[Any, int]
    array: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def nbytes(self) -> int:
        return self.array.nbytes


def event_module(name: Any) -> str:
    return name[1] if isinstance(name, tuple) else name


class ForwardCapture:
    """One side's hooks for ``parity.comparison._forward``: outputs (and, ``local``, inputs) as lock-step
    events, an output that repeats the previous one's tensor as a ``Repeat``."""

    def __init__(self, model: object, local: bool) -> None:
        self.model, self.local = model, local
        self.calls: Counter = Counter()
        self.emitted = 0  # output events so far (the lock-step's sequence number of the next)
        self.last: tuple[TensorState, tuple[Any, int], np.ndarray] | None = None
        self.last_kept: tuple[np.ndarray, np.ndarray] | None = None  # (view, its copy)

    def keep(self, payload: Any) -> Any:
        """A payload that outlives its hook: a copy (a view is valid only inside the hook);
        a repeat of the payload kept last shares that copy."""
        if isinstance(payload, Repeat):
            kept = self.last_kept
            if kept is not None and kept[0] is payload.array:
                return Repeat(payload.of, kept[1])
            return Repeat(payload.of, np.array(payload.array, copy=True))
        if isinstance(payload, StructuredOutput):  # never repeated: no identity to follow
            return payload.copy()
        self.last_kept = (payload, np.array(payload, copy=True))
        return self.last_kept[1]

    @contextlib.contextmanager
    def capture(self, event: Any) -> Iterator[None]:
        def output(module: str, view: np.ndarray | StructuredOutput, state: TensorState | None) -> Any:
            name = ("output", module) if self.local else module
            key = (name, self.calls[name])
            self.calls[name] += 1
            self.emitted += 1
            if state is None:  # a tuple, a dict, None: compared in full, and no tensor to repeat
                self.last = self.last_kept = None
                return event(name, view)
            last = self.last
            # The root's output is always compared in full, from its live values: an
            # in-place change nothing else saw (Lucid keeps no version counter) ends there.
            if module != "" and last is not None and state.same_as(last[0]):
                self.last = (state, key, last[2])  # the first view of the tensor, for ``keep``
                return event(name, Repeat(last[1], last[2]))
            self.last = (state, key, view)
            self.last_kept = None  # a copy of an earlier tensor: no later repeat needs it
            return event(name, view)

        with contextlib.ExitStack() as stack:
            if self.local:
                stack.enter_context(
                    capture_inputs(self.model, lambda name, array: event(("input", name), array))
                )
            stack.enter_context(
                capture_outputs(self.model, output, copy=False, identity=True, structured=True)
            )
            yield
        self.last = self.last_kept = None  # the tensor and copy they hold
