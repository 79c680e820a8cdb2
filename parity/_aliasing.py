"""Destination tensors that share memory: what makes a key-by-key copy ill defined.

A transfer writes key after key. Two keys on one tensor (tied weights) each get their
value, and the second write silently replaces the first; a tensor whose elements overlap
(``expand``) cannot hold independent values at all, and torch refuses the write halfway
through a transfer. Both are found before anything is written, from the tensor objects
(the same object under two names, on any device) and their read-only host views (shared
or overlapping memory). Views are only given for a destination written in place (torch):
Lucid's load replaces each tensor's array, so its shared or overlapping memory cannot
corrupt a transfer, and only ties by object matter there. A model off the host gives no
views either (they would be copies): there too only ties by object are seen.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.lib.array_utils import byte_bounds

__all__ = ["aliasing_problems"]


def _overlaps_itself(view: np.ndarray) -> bool:
    """Two indices of ``view`` address the same bytes."""
    dims = sorted(
        (abs(stride), size) for stride, size in zip(view.strides, view.shape, strict=True) if size > 1
    )
    if any(stride == 0 for stride, _ in dims):
        return True  # torch's own test: a broadcast (expanded) dimension
    # Each dimension stepping over the whole span of the faster ones: no overlap (every
    # contiguous, transposed or sliced tensor). Anything else is rare: count the offsets.
    span = view.itemsize
    for stride, size in dims:
        if stride < span:
            break
        span = stride * size
    else:
        return False
    offsets = np.zeros((), dtype=np.int64)
    for stride, size in zip(view.strides, view.shape, strict=True):
        offsets = np.add.outer(offsets, np.arange(size, dtype=np.int64) * stride)
    return bool((np.diff(np.sort(offsets, axis=None)) < view.itemsize).any())


def _sharing_pairs(views: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """Pairs of keys whose views share memory: a sweep over their byte ranges (sorted by
    start), confirmed exactly by ``np.shares_memory``."""
    spans = sorted((*byte_bounds(v), key) for key, v in views.items() if v.size)
    pairs, open_spans = [], []  # (end, key) of the ranges still open at the sweep's position
    for start, end, key in spans:
        open_spans = [(e, k) for e, k in open_spans if e > start]
        pairs += [(k, key) for _, k in open_spans if np.shares_memory(views[k], views[key])]
        open_spans.append((end, key))
    return pairs


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


def _same_place(views: list[np.ndarray]) -> bool:
    """Every view is the very same memory: start, shape and strides."""
    first = views[0]
    return all(
        v.__array_interface__["data"][0] == first.__array_interface__["data"][0]
        and v.shape == first.shape
        and v.strides == first.strides
        for v in views[1:]
    )


def _equal_values(values: list[object]) -> bool:
    first = values[0]
    return all(
        isinstance(v, np.ndarray)
        and isinstance(first, np.ndarray)
        and np.array_equal(v, first, equal_nan=True)
        for v in values[1:]
    )


def aliasing_problems(
    live: Mapping[str, object], views: Mapping[str, np.ndarray], source: Mapping[str, object]
) -> list[str]:
    """One problem line per destination key whose memory overlaps itself, and per group
    of keys sharing memory, unless the group is tied (the very same tensor) and the
    source gives its keys equal values: then every write stores the same numbers, and
    copying them key by key is well defined."""
    keys = list(live)
    problems = [
        f"{key}: its elements overlap in memory on the destination (an expanded tensor?): "
        "it cannot hold the source's independent values"
        for key, view in views.items()
        if view.size > 1 and _overlaps_itself(view)
    ]
    by_object: dict[int, str] = {}
    pairs = []
    for key, tensor in live.items():
        first = by_object.setdefault(id(tensor), key)
        if first != key:
            pairs.append((first, key))
    pairs += _sharing_pairs(views)
    for group in _groups(keys, pairs):
        names = ", ".join(group)
        one_tensor = len({id(live[key]) for key in group}) == 1
        same_place = all(key in views for key in group) and _same_place([views[key] for key in group])
        tied = one_tensor or same_place
        if not tied:
            problems.append(
                f"{names}: overlap in memory on the destination (partly): a transfer cannot write both"
            )
        elif not all(key in source for key in group) or not _equal_values([source[key] for key in group]):
            what = "one tensor" if one_tensor else "share memory"
            problems.append(
                f"{names}: {what} on the destination (tied weights), different values in the "
                "source: a transfer cannot give each its own"
            )
    return problems
