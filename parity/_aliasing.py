"""Destination tensors that share memory: what makes a key-by-key copy ill defined.

A transfer writes key after key. Two keys on one tensor (tied weights) each get their
value, and the second write silently replaces the first; a tensor whose elements overlap
(``expand``) cannot hold independent values at all, and torch refuses the write halfway
through a transfer. Both are found before anything is written, from the tensor objects
(the same object under two names, on any device) and, for a destination written in place
(torch), its memory: read-only host views on the host (exact: shared bytes), torch's
metadata elsewhere, where a view would be a copy (conservative: overlapping byte ranges
count as shared, interleaved slices too). Lucid's load replaces each tensor's array, so
its shared or overlapping memory cannot corrupt a transfer: only ties by object matter.

The source is read through live views too: a source array in memory the destination is
about to write (the same modules in both models) must be copied first (``shared_with``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping

import numpy as np
from numpy.lib.array_utils import byte_bounds

__all__ = ["aliasing_problems", "shared_with"]

# A tensor's place in memory from its metadata (``TorchAdapter.memory_layout``): (memory
# space, address of its first element, element size, shape, strides in bytes, whether its
# elements overlap: True, False, or None where the framework cannot tell).
Layout = tuple[Hashable, int, int, tuple[int, ...], tuple[int, ...], bool | None]


def _overlaps_itself(view: np.ndarray) -> bool:
    """Two indices of ``view`` address the same bytes."""
    return _strides_overlap(view.strides, view.shape, view.itemsize)


def _strides_overlap(strides: tuple[int, ...], shape: tuple[int, ...], itemsize: int) -> bool:
    """Two indices of an array of this layout address the same bytes."""
    dims = sorted((abs(stride), size) for stride, size in zip(strides, shape, strict=True) if size > 1)
    if any(stride == 0 for stride, _ in dims):
        return True  # torch's own test: a broadcast (expanded) dimension
    # Each dimension stepping over the whole span of the faster ones: no overlap (every
    # contiguous, transposed or sliced tensor). Anything else is rare: count the offsets.
    span = itemsize
    for stride, size in dims:
        if stride < span:
            break
        span = stride * size
    else:
        return False
    offsets = np.zeros((), dtype=np.int64)
    for stride, size in zip(strides, shape, strict=True):
        offsets = np.add.outer(offsets, np.arange(size, dtype=np.int64) * stride)
    return bool((np.diff(np.sort(offsets, axis=None)) < itemsize).any())


def _sweep(spans: Iterable[tuple[int, int, Hashable]], confirm: Callable[[Hashable, Hashable], bool]) -> list:
    """Pairs of keys whose byte ranges ``[start, end)`` overlap and ``confirm`` agrees: a
    sweep over the ranges sorted by start (linear but for the overlaps)."""
    pairs, open_spans = [], []  # (end, key) of the ranges still open at the sweep's position
    for start, end, key in sorted(spans, key=lambda span: span[:2]):
        open_spans = [(e, k) for e, k in open_spans if e > start]
        pairs += [(k, key) for _, k in open_spans if confirm(k, key)]
        open_spans.append((end, key))
    return pairs


def _sharing_pairs(views: Mapping[Hashable, np.ndarray]) -> list[tuple[Hashable, Hashable]]:
    """Pairs of keys whose views share memory: byte ranges, confirmed exactly by
    ``np.shares_memory``."""
    spans = [(*byte_bounds(v), key) for key, v in views.items() if v.size]
    return _sweep(spans, lambda a, b: np.shares_memory(views[a], views[b]))


def _span(layout: Layout) -> tuple[int, int]:
    """The bytes ``[start, end)`` a non-empty tensor of this layout lies in."""
    _, address, itemsize, shape, strides, _ = layout
    reach = [(size - 1) * stride for stride, size in zip(strides, shape, strict=True)]
    return address + sum(min(r, 0) for r in reach), address + sum(max(r, 0) for r in reach) + itemsize


def _layout_pairs(layouts: Mapping[str, Layout]) -> list[tuple[str, str]]:
    """Pairs of keys whose byte ranges overlap, in one memory space: without the memory
    itself, interleaved slices (``x[::2]``, ``x[1::2]``) count as sharing."""
    spaces: dict[Hashable, list[tuple[int, int, str]]] = {}
    for key, layout in layouts.items():
        if all(layout[3]):  # not empty
            spaces.setdefault(layout[0], []).append((*_span(layout), key))
    return [pair for spans in spaces.values() for pair in _sweep(spans, lambda a, b: True)]  # conservative


def shared_with(views: Mapping[str, np.ndarray], others: Mapping[str, np.ndarray]) -> set[str]:
    """The keys of ``others`` whose arrays share memory with any of ``views``: one sweep
    over both, keys tagged by side (0: ``views``, 1: ``others``)."""
    tagged = {**{(0, k): v for k, v in views.items()}, **{(1, k): v for k, v in others.items()}}
    shared = set()
    for (side_a, key_a), (side_b, key_b) in _sharing_pairs(tagged):
        if side_a != side_b:  # a pair within one side is no source read after a write
            shared.add(key_a if side_a == 1 else key_b)
    return shared


def _groups(keys: list[str], pairs: list[tuple[str, str]]) -> list[list[str]]:
    """The connected groups of ``pairs``, each in ``keys``' order."""
    parent = {key: key for key in keys}

    def root(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for x, y in pairs:
        parent[root(x)] = root(y)
    members: dict[str, list[str]] = {}
    for key in keys:
        members.setdefault(root(key), []).append(key)
    return [group for group in members.values() if len(group) > 1]


def _places(views: Mapping[str, np.ndarray], layouts: Mapping[str, Layout]) -> dict[str, tuple]:
    """Key -> (space, start, shape, strides): equal places are the very same memory."""
    places = {k: (None, v.__array_interface__["data"][0], v.shape, v.strides) for k, v in views.items()}
    places.update(
        {k: (space, address, shape, strides) for k, (space, address, _, shape, strides, _) in layouts.items()}
    )
    return places


def _overlapping(views: Mapping[str, np.ndarray], layouts: Mapping[str, Layout]) -> list[str]:
    """The keys whose elements overlap one another (two indices, one place in memory)."""
    found = [key for key, view in views.items() if view.size > 1 and _overlaps_itself(view)]
    for key, (_, _, itemsize, shape, strides, verdict) in layouts.items():
        if verdict is None:  # the framework cannot tell (torch: any non-dense tensor): exact here
            verdict = math.prod(shape) > 1 and _strides_overlap(strides, shape, itemsize)
        if verdict:
            found.append(key)
    return found


def _equal_values(values: list[object]) -> bool:
    first = values[0]
    return all(
        isinstance(v, np.ndarray)
        and isinstance(first, np.ndarray)
        and np.array_equal(v, first, equal_nan=True)
        for v in values[1:]
    )


def aliasing_problems(
    live: Mapping[str, object],
    views: Mapping[str, np.ndarray],
    source: Mapping[str, object],
    layouts: Mapping[str, Layout] | None = None,
) -> list[str]:
    """One problem line per destination key whose memory overlaps itself, and per group
    of keys sharing memory, unless the group is tied (the very same tensor, or the very
    same memory: start, shape and strides) and the source gives its keys equal values:
    then every write stores the same numbers, and copying them key by key is well defined.
    Memory is seen through ``views`` (exact) or, where there are none, ``layouts``."""
    layouts = layouts or {}
    keys = list(live)
    problems = [
        f"{key}: its elements overlap in memory on the destination (an expanded tensor?): "
        "it cannot hold the source's independent values"
        for key in _overlapping(views, layouts)
    ]
    by_object: dict[int, str] = {}
    pairs = []
    for key, tensor in live.items():
        first = by_object.setdefault(id(tensor), key)
        if first != key:
            pairs.append((first, key))
    pairs += _sharing_pairs(views) + _layout_pairs(layouts)
    places = _places(views, layouts)
    for group in _groups(keys, pairs):
        names = ", ".join(group)
        one_tensor = len({id(live[key]) for key in group}) == 1
        same_place = all(key in places for key in group) and len({places[key] for key in group}) == 1
        tied = one_tensor or same_place
        if not tied:
            # From metadata alone, interleaved slices of one storage cannot be told apart.
            how = (
                ", or interleave: off the host only byte ranges are seen"
                if set(group) & layouts.keys()
                else ""
            )
            problems.append(
                f"{names}: overlap in memory on the destination (partly{how}): a transfer cannot write both"
            )
        elif not all(key in source for key in group) or not _equal_values([source[key] for key in group]):
            what = "one tensor" if one_tensor else "share memory"
            problems.append(
                f"{names}: {what} on the destination (tied weights), different values in the "
                "source: a transfer cannot give each its own"
            )
    return problems
