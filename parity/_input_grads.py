"""Every module call's share of its input's gradient, for a compare with ``backward=True``.

Parameter gradients locate a wrong backward only in a module that has parameters; a wrong
backward in a pool, a ReLU or a block's own code (a concat, a residual sum) shows first in
the parameter gradients of whatever ran before it. So each module call's first argument
goes through an identity node of its own (``Adapter.add_input_grad_hook``), whose gradient
is exactly what that call sends back to its input. In backward order, the first call whose
input gradient differs is where the backward goes wrong: every call after it in the
forward sent back the same gradients on both sides, so its output gradient agreed. (A
block's own code between its children, a concat or a residual sum, has no row: a wrong
backward there shows at the child whose output it reads, inside the block.) A call whose
gradient cannot be measured is reported as not compared, with the adapter's reason: torch
runs no hook on a node changed in place, and a Lucid with LUC-012 gets no node on a leaf.

Side a's backward runs first and keeps a copy of each gradient; side b's compares each on
arrival (a view, no copy) and frees side a's. Peak memory: one side's gradients, about the
size of one forward's activations, while side a's graph is being freed. A framework whose
hooks may see a gradient in parts (``grad_hooks_see_parts``: lucid-dl 2.9.0 and 2.16.0 as
released, upstream bug LUC-012) has its parts summed, and handed on when its backward has
finished: such a Lucid side b holds all its gradients too.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np

from lucid_inception.frameworks import Adapter

__all__ = ["InputGrads"]

Key = tuple[str, int]  # (module name, call index)


class InputGrads:
    """One side's module-input gradients. ``position()`` is how many module outputs the
    side's forward has reported so far (its lock-step sequence number), read as a call
    enters: a key that orders the gradient among the side's output events. ``receive``
    is set before the backward: what to do with each ``(key, gradient view)``."""

    def __init__(self, adapter: Adapter, model: object, position: Callable[[], int]) -> None:
        self.adapter, self.model, self.position = adapter, model, position
        self.see_parts = adapter.grad_hooks_see_parts()
        self.calls: Counter = Counter()
        self.entered: dict[Key, int] = {}  # key -> position when the call entered
        self.receive: Callable[[Key, np.ndarray], None] | None = None
        self.parts: dict[Key, np.ndarray] = {}  # summed parts, until ``finish``
        self.order: dict[Key, int] = {}  # key -> how many calls entered before it
        # Calls whose gradient the adapter cannot measure, and why (said during the forward).
        self.unmeasured: dict[Key, str] = {}
        self.arrived: set[Key] = set()  # calls any gradient came for (a backward that raises stops early)
        # The first exception of ``receive`` (the harness's own code): raised by ``finish``,
        # never left to the framework's backward, which would report it as the model's.
        self.failure: Exception | None = None

    def _enter(self, name: str) -> Callable[[np.ndarray], None]:
        key = (name, self.calls[name])
        self.calls[name] += 1
        self.entered[key] = self.position()
        self.order[key] = len(self.order)

        def gradient(grad: np.ndarray | None, why: str = "") -> None:
            if grad is None:  # said during the forward: no gradient will come
                self.unmeasured[key] = why
                return
            self.arrived.add(key)
            if self.receive is None or self.failure is not None:
                return
            try:
                if not self.see_parts:
                    self.receive(key, grad)
                elif key in self.parts:
                    self.parts[key] += grad
                else:
                    self.parts[key] = np.array(grad, copy=True)
            except Exception as error:
                self.failure = error

        return gradient

    def first_missing(self) -> str | None:
        """The module of the first call, in backward order, that no input gradient came for
        (where a backward that raised stopped: the calls after it never ran), or None."""
        missing = [key for key in self.entered if key not in self.arrived and key not in self.unmeasured]
        if not missing:
            return None
        return min(missing, key=lambda key: (-self.entered[key], -self.order[key]))[0]

    def finish(self) -> None:
        """After the backward: hand on the gradients that came in parts, then stop receiving;
        raise what ``receive`` raised, if anything did."""
        receive, self.receive = self.receive, None
        while self.parts and self.failure is None:
            key, grad = self.parts.popitem()
            if receive is not None:
                receive(key, grad)
        self.parts.clear()
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """While active, every module but the root (its input gradient is the model's,
        compared on its own) routes its input through an identity node."""
        removers = []
        try:
            for name, module in self.adapter.named_modules(self.model):
                if name:
                    removers.append(
                        self.adapter.add_input_grad_hook(module, lambda name=name: self._enter(name))
                    )
            yield
        finally:
            for remove in reversed(removers):
                remove()
