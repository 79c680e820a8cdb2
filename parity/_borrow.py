"""Borrowing a model for a compare: cast, moved and in eval mode while it runs, everything
put back afterwards (``borrow``); what cannot be read at all (``unreadable_dtypes``,
``unreadable``); the garbage collector paused meanwhile (``collector_paused``)."""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Iterator

import numpy as np

from lucid_inception.frameworks import Adapter

__all__ = ["borrow", "collector_paused", "unreadable", "unreadable_dtypes"]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while comparing, as ``timeit`` does.

    A full collection scans every tracked object (~220,000 with torch and Lucid loaded:
    ~0.1 s), and what a compare allocates (rows, views, hooks) triggers one about every
    third compare: 4% of a batch-1 Inception-v4 compare on average, 14% when it lands.
    That garbage is freed by reference counting; any cycles are collected afterwards."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@functools.cache
def _numpy_has(dtype_name: str) -> bool:
    try:
        np.dtype(dtype_name)
    except TypeError:
        return False
    return True


def unreadable_dtypes(adapters: tuple[Adapter, Adapter], models: tuple[object, object]) -> list[str]:
    """One line per tensor, on either side, in a dtype numpy has none for (bfloat16): such
    a model cannot be read, snapshot or put back bit for bit."""
    return [
        f"{key}: dtype {name} on side {side} ({adapter.name}), which numpy cannot hold; "
        "cast the model to float32 or float64 first"
        for side, adapter, model in zip("ab", adapters, models, strict=True)
        for key, tensor in adapter.tensors(model).items()
        if not _numpy_has(name := adapter.dtype_name(tensor))
    ]


def unreadable(adapters: tuple[Adapter, Adapter], models: tuple[object, object]) -> list[str]:
    """One line per tensor, on either side, that holds no values (torch's meta device).
    Looked for only once reading one has failed: walking both models costs ~2 ms."""
    return [
        f"{key}: on side {side} ({adapter.name}), {why}"
        for side, adapter, model in zip("ab", adapters, models, strict=True)
        for key, why in adapter.unreadable(adapter.tensors(model)).items()
    ]


@contextlib.contextmanager
def borrow(
    model: object, adapter: Adapter, dtype: str, device: str, *, grads: bool
) -> Iterator[dict[str, np.ndarray]]:
    """Cast, move and switch ``model`` to eval for the comparison; put everything back.
    Yields the buffers' snapshot (as found)."""
    modes = adapter.training_modes(model)
    home = adapter.device(model)
    cast = [key for key, d in adapter.dtypes(model).items() if d != np.dtype(dtype)]
    # Only what may change is copied: tensors the cast rewrites, and every buffer (a train
    # step updates running statistics; any forward may update a counter or an average).
    # Parameters a forward writes to are not put back: no model here does.
    buffers = adapter.buffer_names(model)
    changing = set(cast) | set(buffers)
    saved = adapter.snapshot(model, changing) if changing else {}
    # A cast reaches the gradients too (torch's ``Module.to`` casts every ``.grad`` in
    # place), and a backward writes new ones: the ``.grad`` objects are taken off the model
    # first and the same objects put back (values, dtype, layout, identity).
    held_grads = adapter.take_grads(model) if grads or cast else None
    try:
        if cast:
            adapter.cast(model, dtype)
        if device != home:
            adapter.to_device(model, device)
        if any(modes):  # torch's recursive train() alone is ~5 ms on Inception-v4
            adapter.set_training(model, False)
        yield {key: saved[key] for key in buffers if key in saved}
    finally:
        # Each step runs even if one before it raises (the first error is raised after):
        # a model is never left cast, moved or in eval for want of one step.
        with contextlib.ExitStack() as steps:
            steps.callback(_put_back_modes, adapter, model, modes)
            if held_grads is not None:
                steps.callback(adapter.give_grads, model, held_grads)
            if saved:
                steps.callback(adapter.restore, model, saved)
            if device != home:
                steps.callback(adapter.to_device, model, home)


def _put_back_modes(adapter: Adapter, model: object, modes: list[bool]) -> None:
    if adapter.training_modes(model) != modes:  # reading them is cheaper than setting them
        adapter.restore_training_modes(model, modes)
