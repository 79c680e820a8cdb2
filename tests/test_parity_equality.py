"""parity._equality: the state check's equality, pair by pair, split over two threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import parity._equality
from parity import compare
from parity._equality import all_equal, equal

from .test_parity_compare import X, fresh_pair


def _pairs() -> tuple[list[tuple[np.ndarray, np.ndarray]], list[bool]]:
    """Pairs of every kind the state check meets, and whether each is equal."""
    rng = np.random.default_rng(0)
    big = rng.standard_normal((64, 64, 3, 3))
    changed = big.copy()
    changed[5, 7, 1, 2] += 1e-12
    nan_a, nan_b = big.copy(), big.copy()
    nan_a[0, 0, 0, 0] = nan_b[0, 0, 0, 0] = np.nan
    nan_vs_number = big.copy()
    nan_vs_number[0, 0, 0, 0] = np.nan
    signed_zero = np.zeros(4)
    pairs = [
        (big, big.copy()),
        (big, changed),
        (nan_a, nan_b),  # NaN where the other has NaN: equal
        (nan_vs_number, big),
        (signed_zero, -signed_zero),  # equal values, other bits
        (np.arange(6), np.arange(6)),  # an integer buffer (a counter)
        (np.arange(6), np.arange(6)[::-1]),
        (np.zeros((0, 3)), np.zeros((0, 3))),
        (big.astype(np.float32), big.astype(np.float32)),
        (big.T, np.ascontiguousarray(big.T)),  # another memory order, same values
    ]
    return pairs, [True, False, True, False, True, True, False, True, True, True]


@pytest.fixture
def two_threads(monkeypatch):
    """Split whatever the bytes and the machine: the helper thread always runs."""
    monkeypatch.setattr(parity._equality, "usable_cores", lambda: 2)
    monkeypatch.setattr(parity._equality, "_SPLIT_BYTES", 0)


def _threads_used(monkeypatch) -> set[str]:
    used: set[str] = set()
    inner = parity._equality.equal

    def recorded(a: np.ndarray, b: np.ndarray) -> bool:
        used.add(threading.current_thread().name)
        return inner(a, b)

    monkeypatch.setattr(parity._equality, "equal", recorded)
    return used


def test_equal_counts_nan_equal_to_nan_and_nothing_else() -> None:
    pairs, expected = _pairs()
    assert [equal(a, b) for a, b in pairs] == expected


def test_two_threads_give_each_pair_its_own_answer_in_order(two_threads, monkeypatch) -> None:
    pairs, expected = _pairs()
    used = _threads_used(monkeypatch)
    for shift in range(len(pairs)):  # every pair in every position, so in either half
        rotated = pairs[shift:] + pairs[:shift]
        assert all_equal(rotated) == expected[shift:] + expected[:shift]
    assert threading.current_thread().name in used
    assert any(name.startswith("parity-state-check") for name in used), used


def test_one_core_or_few_bytes_stay_on_the_calling_thread(monkeypatch) -> None:
    pairs, expected = _pairs()
    used = _threads_used(monkeypatch)
    monkeypatch.setattr(parity._equality, "usable_cores", lambda: 1)
    assert all_equal(pairs) == expected
    monkeypatch.setattr(parity._equality, "usable_cores", lambda: 2)
    monkeypatch.setattr(parity._equality, "_SPLIT_BYTES", sum(a.nbytes + b.nbytes for a, b in pairs) + 1)
    assert all_equal(pairs) == expected
    assert used == {threading.current_thread().name}


def test_an_error_in_either_half_is_raised_once_both_halves_have_ended(two_threads, monkeypatch) -> None:
    pairs, _ = _pairs()
    ended = threading.Event()
    inner = parity._equality.equal

    def failing_on_the_helper(a: np.ndarray, b: np.ndarray) -> bool:
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("planted")
        result = inner(a, b)
        ended.set()
        return result

    monkeypatch.setattr(parity._equality, "equal", failing_on_the_helper)
    with pytest.raises(ValueError, match="planted"):
        all_equal(pairs)
    assert ended.is_set()  # the calling thread's half ran
    assert not [t for t in threading.enumerate() if t.name.startswith("parity-state-check")]


@pytest.mark.parametrize("cores", [1, 2])
def test_a_compare_names_a_changed_weight_on_one_thread_and_on_two(cores: int, monkeypatch) -> None:
    monkeypatch.setattr(parity._equality, "usable_cores", lambda: cores)
    monkeypatch.setattr(parity._equality, "_SPLIT_BYTES", 0)
    a, b = fresh_pair()
    with torch.no_grad():
        b.conv[3].branch2[1].conv.weight[4, 2, 0, 0] += 1e-3
    report = compare(a, b, X, dtype="float64")
    failing = [row for row in report.rows if row.kind == "state" and not row.ok]
    assert [row.module for row in failing] == ["conv.3.branch2.1.conv"]
    assert "weight differs" in failing[0].note
    assert report.first_divergence == "conv.3.branch2.1.conv"
