"""Whether arrays are equal, NaN equal to NaN; many pairs split over two threads.

A compare checks every parameter and buffer of both models before any forward: ~180 MB
for Inception-ResNet-v1 in float32, 16 ms on one thread and 7 ms on two on this project's
2-core machine (numpy releases the GIL while it compares; one run, ``/tmp`` probe of the
state check alone). ``all_equal`` gives the calling thread one half of the bytes and a
helper thread the other, when there are two cores and enough bytes to pay for the thread.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["all_equal", "equal", "usable_cores"]

# Below this many bytes in all, one thread: starting a helper costs ~0.1 ms.
_SPLIT_BYTES = 4 << 20


def usable_cores() -> int:
    """The cores this process may run on (Linux: its affinity mask), at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal values of two equal-shape arrays, NaN equal to NaN. ``equal_nan=True`` costs
    numpy two ``isnan`` passes and a masked copy, so plain equality is tried first (half
    the time of the state check), without ``array_equal``'s checks (~3 us a pair)."""
    return bool((a == b).all()) or np.array_equal(a, b, equal_nan=True)


def all_equal(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[bool]:
    """``equal(a, b)`` for each pair, in order; on two threads when the cores and the bytes
    allow. An exception of either thread is raised here, after both halves have ended."""
    sizes = [a.nbytes + b.nbytes for a, b in pairs]
    if usable_cores() < 2 or sum(sizes) < _SPLIT_BYTES:
        return [equal(a, b) for a, b in pairs]
    # Largest first, each to the lighter half: the halves end within a tensor of each other.
    halves: tuple[list[int], list[int]] = ([], [])
    loads = [0, 0]
    for index in sorted(range(len(pairs)), key=lambda i: -sizes[i]):
        lighter = 0 if loads[0] <= loads[1] else 1
        halves[lighter].append(index)
        loads[lighter] += sizes[index]
    results: list[bool] = [False] * len(pairs)

    def compare_half(indices: list[int]) -> None:
        for index in indices:
            results[index] = equal(*pairs[index])

    # Leaving the ``with`` waits for the helper, also when this thread's half raises (or
    # a Ctrl-C comes): no thread is left reading arrays that the caller then changes.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parity-state-check") as helper:
        other = helper.submit(compare_half, halves[1])
        compare_half(halves[0])
        other.result()
    return results
