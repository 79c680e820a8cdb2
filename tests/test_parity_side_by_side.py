"""parity's lock-step runs a Lucid and a torch forward side by side, one thread each: who
runs where, the CPU threads each framework gets and gets back, the comparisons on the
calling thread, sides reporting in different orders, interrupts, and the same report as
the in-turns runner (``parity._lockstep.run_in_turns``) that other pairs use."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import lucid
import lucid.nn as lnn
import numpy as np
import pytest
import threadpoolctl
import torch

import parity._lockstep
import parity._side_by_side
import parity.comparison
from lucid_inception.frameworks import LucidAdapter, TorchAdapter
from parity import compare, transfer
from parity._sides import Side
from tests.test_parity_compare import SMALL, fresh_pair
from tests.test_parity_compare import X as image

X = np.random.default_rng(0).standard_normal((2, 3, 8, 8))


def _blas_threads() -> int:
    return min(lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas")


class Recorder:
    """What each forward saw: its thread, torch's intra-op threads, numpy's BLAS threads."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, threading.Thread, int, int]] = []

    def note(self, framework: str) -> None:
        self.seen.append((framework, threading.current_thread(), torch.get_num_threads(), _blas_threads()))

    def threads(self, framework: str) -> set[threading.Thread]:
        return {thread for name, thread, _, _ in self.seen if name == framework}


def _branches(model, x, framework: str, concat):
    """Both frameworks' forward: ``first`` and ``second`` on ``x`` (``swapped``: second
    first), concatenated, then a ReLU; ``slow`` pauses before each module."""

    def pause() -> None:
        if model.slow:
            time.sleep(0.05)

    if model.recorder is not None:
        model.recorder.note(framework)
    outputs = {}
    for name in ("second", "first") if model.swapped else ("first", "second"):
        pause()
        outputs[name] = getattr(model, name)(x)
    pause()
    return model.relu(concat([outputs["first"], outputs["second"]]))


class LucidBranches(lnn.Module):
    """Two branches on one input, concatenated; ``swapped`` computes the second first;
    ``slow`` pauses before each module, so that torch reaches it first and waits there."""

    def __init__(self, recorder: Recorder | None = None, swapped: bool = False, slow: bool = False) -> None:
        super().__init__()
        self.first = lnn.Conv2d(3, 4, 3, padding=1)
        self.second = lnn.Conv2d(3, 4, 1)
        self.relu = lnn.ReLU()
        self.recorder, self.swapped, self.slow = recorder, swapped, slow

    def forward(self, x):
        return _branches(self, x, "lucid", lambda xs: lucid.concatenate(xs, axis=1))


class TorchBranches(torch.nn.Module):
    def __init__(self, recorder: Recorder | None = None, swapped: bool = False, slow: bool = False) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.second = torch.nn.Conv2d(3, 4, 1)
        self.relu = torch.nn.ReLU()
        self.recorder, self.swapped, self.slow = recorder, swapped, slow

    def forward(self, x):
        return _branches(self, x, "torch", lambda xs: torch.cat(xs, dim=1))


def twins(
    recorder: Recorder | None = None, *, torch_swapped: bool = False, slow: str = ""
) -> tuple[LucidBranches, TorchBranches]:
    """``slow``: the framework whose forward pauses before each module."""
    a = LucidBranches(recorder, slow=slow == "lucid")
    b = TorchBranches(recorder, torch_swapped, slow=slow == "torch")
    LucidAdapter.cast(a, "float64")
    b.double()
    transfer(a, b)
    return a, b


@pytest.fixture(autouse=True)
def leaves_the_process_as_found():
    """Every test here: Lucid's grad flag, torch's grad mode and both thread counts as they
    were (a leak would break later tests far from its cause)."""
    before = lucid.grad_enabled(), torch.is_grad_enabled(), torch.get_num_threads(), _blas_threads()
    yield
    assert (lucid.grad_enabled(), torch.is_grad_enabled(), torch.get_num_threads(), _blas_threads()) == before


@pytest.fixture
def two_cores(monkeypatch):
    """As on this project's machines: each side gets one thread."""
    monkeypatch.setattr(parity._side_by_side, "usable_cores", lambda: 2)


@pytest.fixture
def in_turns(monkeypatch):
    """Every pair runs in turns on the calling thread."""
    monkeypatch.setattr(parity._lockstep, "side_by_side_threads", lambda _a, _b: None)


def _rows(report) -> list[tuple]:
    return [(row.module, row.kind, row.ok, row.shape_a, row.shape_b) for row in report.rows]


# ------------------------------------------------------------------ who runs where


def _comparing_threads(monkeypatch) -> list[threading.Thread]:
    """The thread of every output comparison a compare makes, in order, as it makes them."""
    comparing: list[threading.Thread] = []
    original = parity.comparison.max_errors

    def recorded(*args):
        comparing.append(threading.current_thread())
        return original(*args)

    monkeypatch.setattr(parity.comparison, "max_errors", recorded)
    return comparing


@pytest.mark.parametrize("order", ["lucid-torch", "torch-lucid"])
def test_lucid_runs_on_a_worker_thread_torch_on_the_calling_one_which_compares(
    order: str, two_cores, monkeypatch
) -> None:
    recorder = Recorder()
    a, b = twins(recorder, slow="lucid")  # torch waits for Lucid at every module
    pair = (a, b) if order == "lucid-torch" else (b, a)
    comparing = _comparing_threads(monkeypatch)
    torch_threads, blas_threads = torch.get_num_threads(), _blas_threads()
    report = compare(*pair, X, dtype="float64")
    assert report.ok, report.rows
    main = threading.main_thread()
    assert recorder.threads("torch") == {main}
    (worker,) = recorder.threads("lucid")
    assert worker is not main and not worker.is_alive()
    # Arriving where torch waits, the worker hands its output over as a copy: every
    # comparison runs on the calling thread (a model this small never uses up the lead).
    assert comparing and set(comparing) == {main}
    # Each framework had one thread while its forward ran, and has its own count back.
    assert {(name, torch_n if name == "torch" else blas_n) for name, _, torch_n, blas_n in recorder.seen} == {
        ("torch", 1),
        ("lucid", 1),
    }
    assert (torch.get_num_threads(), _blas_threads()) == (torch_threads, blas_threads)


def _left_pairs(monkeypatch) -> list[bool]:
    """Whether each ``_SideBySide._left`` call left its pair to the calling side."""
    results: list[bool] = []
    original = parity._side_by_side._SideBySide._left

    def recorded(self, *args):
        results.append(original(self, *args))
        return results[-1]

    monkeypatch.setattr(parity._side_by_side._SideBySide, "_left", recorded)
    return results


@pytest.mark.parametrize("order", ["lucid-torch", "torch-lucid"])
def test_torch_runs_ahead_and_compares_the_pairs_lucid_leaves_it(order: str, two_cores, monkeypatch) -> None:
    """Lucid slow: torch, side b, runs its whole forward ahead, keeping copies, and Lucid,
    arriving second at every module, leaves each pair to it: torch compares them after
    its forward has ended, all of them, as in turns. With torch as side a, Lucid (side b)
    may not leave pairs (its hook returns the outcome): torch keeps no copies ahead."""
    recorder = Recorder()
    a, b = twins(recorder, slow="lucid")
    pair = (a, b) if order == "lucid-torch" else (b, a)
    comparing = _comparing_threads(monkeypatch)
    left = _left_pairs(monkeypatch)
    side_by_side = compare(*pair, X, dtype="float64")
    assert comparing and set(comparing) == {threading.main_thread()}
    if order == "lucid-torch":
        assert left and all(left) and len(left) == len(comparing)
    else:
        assert not any(left)
    monkeypatch.setattr(parity._lockstep, "side_by_side_threads", lambda _a, _b: None)
    in_turns = compare(*pair, X, dtype="float64")
    assert side_by_side.ok and _rows(side_by_side) == _rows(in_turns)


def test_pairs_left_to_torch_are_compared_when_a_fault_is_among_them(two_cores, monkeypatch) -> None:
    """The first divergence and every row are the in-turns ones when torch is ahead."""
    a, b = twins(slow="lucid")
    inner = b.second.forward
    b.second.forward = lambda x: inner(x) + 1.0  # the same weights: the forward differs
    left = _left_pairs(monkeypatch)
    side_by_side = compare(a, b, X, dtype="float64")
    assert any(left)
    monkeypatch.setattr(parity._lockstep, "side_by_side_threads", lambda _a, _b: None)
    in_turns = compare(a, b, X, dtype="float64")
    assert not side_by_side.ok and side_by_side.first_divergence == in_turns.first_divergence == "second"
    assert _rows(side_by_side) == _rows(in_turns)


class LucidRepeating(lnn.Module):
    """A container whose output is its last child's tensor (a ``Repeat`` of that row);
    ``pause`` before the forward, so that torch runs ahead."""

    def __init__(self, pause: float) -> None:
        super().__init__()
        self.block = lnn.Sequential(lnn.Conv2d(3, 4, 3, padding=1), lnn.Conv2d(4, 4, 1))
        self.relu = lnn.ReLU()
        self.pause = pause

    def forward(self, x):
        time.sleep(self.pause)
        return self.relu(self.block(x))


class TorchRepeating(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 1))
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return self.relu(self.block(x))


def test_a_repeat_is_compared_after_the_pair_it_repeats(two_cores, monkeypatch) -> None:
    """Torch ahead, Lucid's lead used up by the pairs it left: the container's pair (a
    ``Repeat`` of its last child's) was compared before its child's, on either thread, and
    lost the row it reuses (its note and ``repeat_of``; found by review)."""
    a, b = LucidRepeating(pause=0.05), TorchRepeating()
    LucidAdapter.cast(a, "float64")
    b.double()
    transfer(a, b)
    monkeypatch.setattr(parity.comparison, "lead_for", lambda _input_bytes: 8192)  # two outputs

    def rows(report) -> list[tuple]:
        return [(r.module, r.kind, r.ok, r.repeat_of, r.note) for r in report.rows]

    side_by_side = [compare(a, b, X, dtype="float64") for _ in range(3)]
    monkeypatch.setattr(parity._lockstep, "side_by_side_threads", lambda _a, _b: None)
    in_turns = compare(a, b, X, dtype="float64")
    assert ("block", "output", True, "block.1", "the output of 'block.1' again") in rows(in_turns)
    for report in side_by_side:
        assert rows(report) == rows(in_turns)


# A Ctrl-C raised on the calling thread (a profile hook stands in for the signal handler)
# in ``target``: as ``Condition.__enter__`` returns from taking the lock, before the
# ``with`` body ("enter"), or as the function takes the lock back after a stretch without
# it, before the lock is taken ("reacquire").
_CTRL_C_AS_THE_LOCK_IS_TAKEN = """
import faulthandler, sys, threading
import parity._side_by_side, parity.comparison
from tests.test_parity_side_by_side import X, twins

parity._side_by_side.usable_cores = lambda: 2
target, moment = sys.argv[1:3]
fired = []

def at_the_moment(frame, event, arg):
    if moment == "enter":
        caller = frame.f_back
        return (event == "c_return" and frame.f_code.co_name == "__enter__"
                and caller is not None and caller.f_code.co_name == target
                and caller.f_code.co_filename == parity._side_by_side.__file__)
    if frame.f_code.co_name == "_reacquire":  # the helper ``target`` calls for it
        frame = frame.f_back
    return event == "c_call" and getattr(arg, "__name__", "") == "acquire" and frame.f_code.co_name == target

def profile(frame, event, arg):
    main = threading.current_thread() is threading.main_thread()
    if not fired and main and at_the_moment(frame, event, arg):
        fired.append(target)
        sys.setprofile(None)
        raise KeyboardInterrupt

faulthandler.dump_traceback_later(60, exit=True)  # a hang: its stacks, and a failure
a, b = twins(slow="lucid")
sys.setprofile(profile)
try:
    parity.comparison.compare(a, b, X, dtype="float64")
    print("returned", fired)
except KeyboardInterrupt:
    print("raised KeyboardInterrupt", fired)
"""


@pytest.mark.parametrize(
    ("where", "moment"),
    [
        ("event", "enter"),
        ("_compare_left_in_pairing", "enter"),
        ("_keep", "reacquire"),
        ("_compare_left", "reacquire"),
    ],
)
def test_a_ctrl_c_as_the_calling_thread_takes_the_lock_stops_both(where: str, moment: str, tmp_path) -> None:
    """As the lock is taken, the interrupt left it held with no ``__exit__`` to come
    (CPython bpo-29988): the worker waited for it forever, and so did the calling thread
    joining the worker. As it is taken back, the interrupt left it not held, and the
    ``with`` around released it: a RuntimeError instead of the Ctrl-C. Both found by
    review. Run in a process of its own: the fault may be a hang."""
    script = tmp_path / "ctrl_c.py"
    script.write_text(_CTRL_C_AS_THE_LOCK_IS_TAKEN)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(script), where, moment],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert done.stdout.strip() == f"raised KeyboardInterrupt ['{where}']", done.stdout + done.stderr[-3000:]


def test_where_lucid_waits_torch_hands_the_comparisons_over(two_cores, monkeypatch) -> None:
    """``local=True`` with torch as side a: side b (Lucid) waits at every module for side
    a's input (no lead); torch, slow here, arrives second and hands each pair to the
    idle worker, which compares it and runs its module on side a's input."""
    recorder = Recorder()
    a, b = twins(recorder, slow="torch")
    comparing = _comparing_threads(monkeypatch)
    report = compare(b, a, X, dtype="float64", local=True)
    assert report.ok, report.rows
    assert {row.kind for row in report.rows} >= {"input", "output"}
    (worker,) = recorder.threads("lucid")
    assert comparing and set(comparing) == {worker}


def test_one_framework_on_both_sides_runs_in_turns_on_the_calling_thread(two_cores) -> None:
    recorder = Recorder()
    a, b = TorchBranches(recorder).double(), TorchBranches(recorder).double()
    b.load_state_dict(a.state_dict())
    assert compare(a, b, X, dtype="float64").ok
    assert recorder.threads("torch") == {threading.main_thread()}


def test_one_core_runs_in_turns(monkeypatch) -> None:
    monkeypatch.setattr(parity._side_by_side, "usable_cores", lambda: 1)
    recorder = Recorder()
    assert compare(*twins(recorder), X, dtype="float64").ok
    assert recorder.threads("lucid") == recorder.threads("torch") == {threading.main_thread()}


def test_threads_split_the_cores_and_lucid_gpu_stays_in_turns(monkeypatch) -> None:
    a, b = twins()
    sides = [
        Side(adapter, model, None, False, capture=None)
        for adapter, model in ((LucidAdapter, a), (TorchAdapter, b))
    ]
    monkeypatch.setattr(parity._side_by_side, "usable_cores", lambda: 3)
    assert parity._side_by_side.side_by_side_threads(*sides) == (2, 1)  # torch, calling, has the even half
    assert parity._side_by_side.side_by_side_threads(*sides[::-1]) == (1, 2)
    with monkeypatch.context() as patched:
        patched.setattr(LucidAdapter, "device", staticmethod(lambda _model: "gpu"))
        assert parity._side_by_side.side_by_side_threads(*sides) is None  # MLX is not run from a worker
    monkeypatch.setattr(TorchAdapter, "device", staticmethod(lambda _model: "cuda"))
    assert parity._side_by_side.side_by_side_threads(*sides) is None  # Lucid keeps every core


def test_a_framework_never_gets_more_threads_than_it_had(two_cores, monkeypatch) -> None:
    monkeypatch.setattr(parity._side_by_side, "usable_cores", lambda: 64)
    before = torch.get_num_threads()
    recorder = Recorder()
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        assert compare(*twins(recorder), X, dtype="float64").ok
        assert _blas_threads() == 1
    assert {(name, n if name == "torch" else m) for name, _, n, m in recorder.seen} == {
        ("torch", before),
        ("lucid", 1),
    }
    assert torch.get_num_threads() == before


# ------------------------------------------------------------------ the same report


@pytest.mark.parametrize("lead", [None, 0])
def test_sides_reporting_in_different_orders_neither_wait_forever_nor_differ(
    lead, two_cores, monkeypatch
) -> None:
    """With no lead each side waits at every module: Lucid waits at ``first`` for torch,
    which waits at ``second`` for Lucid; one must copy and go on, as in turns."""
    if lead is not None:
        monkeypatch.setattr(parity.comparison, "lead_for", lambda _input_bytes: lead)
    a, b = twins(torch_swapped=True)
    reports = {}

    def run(key: str) -> None:
        reports[key] = compare(a, b, X, dtype="float64")

    worker = threading.Thread(target=run, args=("side by side",), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the two sides wait for each other forever"
    monkeypatch.setattr(parity._lockstep, "side_by_side_threads", lambda _a, _b: None)
    run("in turns")
    assert _rows(reports["side by side"]) == _rows(reports["in turns"])
    assert reports["side by side"].ok


@pytest.mark.parametrize("local", [False, True])
def test_a_fault_gives_the_same_rows_side_by_side_as_in_turns(local: bool, two_cores, monkeypatch) -> None:
    """Every phase that runs in lock-step (forward, local or as given, and the train
    step's teacher forcing), and the backward after it, on Inception-ResNet-v1 with a
    BatchNorm's eps changed."""
    a, b = fresh_pair(SMALL)
    b.conv[5].branch3[2].bn.eps *= 100
    options = {"dtype": "float64", "backward": not local, "train_step": True, "local": local}
    side_by_side = compare(a, b, image, **options)
    monkeypatch.setattr(parity._lockstep, "side_by_side_threads", lambda _a, _b: None)
    # In turns with one thread per framework too, as side by side here: the same
    # summation order. With every core, a failing row's error (the fault carried through
    # train-mode BatchNorms, each dividing by a batch spread: 75 px, batch 2, block C's
    # maps are 1x1) once moved 1.1e-6 relative (conv.21.branch2.0.bn's batch statistics).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            in_turns = compare(a, b, image, **options)
    finally:
        torch.set_num_threads(threads)
    assert not side_by_side.ok and side_by_side.first_divergence == in_turns.first_divergence
    assert _rows(side_by_side) == _rows(in_turns)
    for x, y in zip(side_by_side.rows, in_turns.rows, strict=True):
        assert x.max_abs == pytest.approx(y.max_abs, rel=1e-6, abs=1e-12), x.module


class LucidChain(lnn.Module):
    """Runs ``steps``, its modules by name, one after the other."""

    def __init__(self, steps: list[str]) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu = lnn.Conv2d(3, 4, 3, padding=1), lnn.BatchNorm2d(4), lnn.ReLU()
        self.conv2, self.bn2 = lnn.Conv2d(4, 4, 1), lnn.BatchNorm2d(4)
        self.steps = steps

    def forward(self, x):
        for step in self.steps:
            x = getattr(self, step)(x)
        return x


class TorchChain(torch.nn.Module):
    def __init__(self, steps: list[str]) -> None:
        super().__init__()
        self.conv1, self.bn1 = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)
        self.relu = torch.nn.ReLU()
        self.conv2, self.bn2 = torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4)
        self.steps = steps

    def forward(self, x):
        for step in self.steps:
            x = getattr(self, step)(x)
        return x


@pytest.mark.parametrize(
    ("torch_steps", "options", "fed_kind"),
    [
        (["conv1", "bn1", "relu", "conv2", "bn2"], {"local": True}, "output"),  # a ReLU on torch's side only
        (["conv1", "bn1", "bn1", "conv2", "bn2"], {"train_step": True}, "bn_train_output"),  # bn1 twice
    ],
)
def test_diverging_sides_keep_side_b_fed_as_in_turns(
    torch_steps, options, fed_kind: str, two_cores, monkeypatch
) -> None:
    """Teacher forcing with torch as side a: where the sides diverge both would wait, and
    side b (Lucid) must keep waiting for side a's input (side a copies and goes on), or its
    later modules run on their own inputs and fail, depending on which thread came first.
    In turns, side a with no lead broke the tie the other way too."""
    a = TorchChain(torch_steps).double()
    b = LucidChain(["conv1", "bn1", "conv2", "bn2"])
    LucidAdapter.cast(b, "float64")
    transfer(b, a)
    reports = [compare(a, b, X, dtype="float64", **options) for _ in range(5)]
    monkeypatch.setattr(parity._lockstep, "side_by_side_threads", lambda _a, _b: None)
    in_turns = compare(a, b, X, dtype="float64", **options)
    # Side a too waits at every module.
    monkeypatch.setattr(parity.comparison, "lead_for", lambda _input_bytes: 0)
    in_turns_no_lead = compare(a, b, X, dtype="float64", **options)
    assert not in_turns.ok  # the divergence itself
    for report in [*reports, in_turns_no_lead]:
        assert _rows(report) == _rows(in_turns)
    fed = [row for row in in_turns.rows if row.module == "bn2" and row.kind == fed_kind]
    assert fed and all(row.ok for row in fed)  # on side a's input, the last layer agrees


def test_compares_from_two_threads_take_turns_and_leave_everything_as_found(two_cores, monkeypatch) -> None:
    """The thread limits and Lucid's grad flag are process-wide: two compares at once used
    to leave numpy's BLAS at one thread (overlapping saves and restores) and Lucid's
    gradients off (one run's ``no_grad`` read as the other's caller's mode). Now the
    second waits for the first."""
    counts, grad_modes = (torch.get_num_threads(), _blas_threads()), lucid.grad_enabled()
    running, overlapped = [0], []
    original = parity._lockstep.run_lockstep

    def counted(*args):
        running[0] += 1
        overlapped.append(running[0] > 1)
        try:
            return original(*args)
        finally:
            running[0] -= 1

    monkeypatch.setattr(parity.comparison, "run_lockstep", counted)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(3):
                assert compare(*twins(slow="lucid"), X, dtype="float64").ok
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(overlapped) == 6 and not any(overlapped)
    assert (torch.get_num_threads(), _blas_threads(), lucid.grad_enabled()) == (*counts, grad_modes)


class LucidComparing(LucidBranches):
    """A forward that calls compare: inside another compare's run, a RuntimeError."""

    def forward(self, x):
        compare(*twins(), X, dtype="float64")
        return super().forward(x)


@pytest.mark.parametrize("runner", ["side by side", "in turns"])
def test_a_compare_inside_a_compared_forward_is_an_error_row_not_a_hang(
    runner: str, two_cores, monkeypatch
) -> None:
    if runner == "in turns":
        monkeypatch.setattr(parity._lockstep, "side_by_side_threads", lambda _a, _b: None)
    a, b = LucidComparing(), TorchBranches()
    LucidAdapter.cast(a, "float64")
    b.double()
    transfer(a, b)
    report = compare(a, b, X, dtype="float64")
    errors = [row for row in report.rows if row.kind == "error"]
    assert errors and "inside the forward of a model another compare is running" in errors[0].note
    assert compare(*twins(), X, dtype="float64").ok  # and the lock was let go


class LucidDeep(lnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = lnn.Sequential(*[lnn.Conv2d(16, 16, 3, padding=1) for _ in range(40)])

    def forward(self, x):
        return self.layers(x)


class TorchDeep(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(*[torch.nn.Conv2d(16, 16, 3, padding=1) for _ in range(40)])

    def forward(self, x):
        return self.layers(x)


@pytest.mark.parametrize("runner", ["side by side", "in turns"])
@pytest.mark.parametrize("local", [False, True])
def test_the_copies_a_side_holds_stay_within_its_lead(
    runner: str, local: bool, two_cores, monkeypatch
) -> None:
    """40 outputs of 128 KiB, a lead of 1 MiB: neither side ever holds more copies than its
    lead (in turns, side a once kept a copy of every event after side b had waited once)."""
    lead = 1 << 20
    monkeypatch.setattr(parity.comparison, "lead_for", lambda _input_bytes: lead)
    held, peak, sizes = [0, 0], [0, 0], {}
    name = "run_side_by_side" if runner == "side by side" else "run_in_turns"
    original = getattr(parity._lockstep, name)

    def measured(side_a, side_b, on_pair, *rest):
        for i, side in enumerate((side_a, side_b)):

            def keep(payload, i=i, keep=side.keep):
                kept = keep(payload)
                array = getattr(kept, "array", kept)
                sizes[id(array)] = (i, array.nbytes)
                held[i] += array.nbytes
                peak[i] = max(peak[i], held[i])
                return kept

            side.keep = keep

        def paired(*args):
            for payload in args[4:6]:
                i, n = sizes.pop(id(getattr(payload, "array", payload)), (0, 0))
                held[i] -= n
            return on_pair(*args)

        return original(side_a, side_b, paired, *rest)

    monkeypatch.setattr(parity._lockstep, name, measured)
    a = LucidDeep()
    LucidAdapter.cast(a, "float64")
    b = TorchDeep().double()
    transfer(a, b)
    if runner == "in turns":  # one framework on both sides
        a = TorchDeep().double()
        a.load_state_dict(b.state_dict())
    x = np.random.default_rng(0).standard_normal((1, 16, 32, 32))  # 128 KiB in float64
    assert compare(a, b, x, dtype="float64", local=local).ok
    assert max(peak) > 0 and peak[0] <= lead and peak[1] <= lead, peak


# ------------------------------------------------------------------ interrupts and bugs


def test_ctrl_c_while_the_calling_thread_waits_stops_both(two_cores) -> None:
    """A real SIGINT reaches the calling thread (waiting for the worker, or in torch's
    forward): compare raises it, the worker stops at its next hook, nothing stays hooked
    and both frameworks have their threads back."""
    recorder = Recorder()
    a, b = twins(recorder)
    calls = []

    def interrupting(x):
        calls.append(threading.current_thread())
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        return LucidBranches.forward(a, x)

    a.forward = interrupting
    threads_before = threading.active_count()
    counts = torch.get_num_threads(), _blas_threads()
    with pytest.raises(KeyboardInterrupt):
        compare(a, b, X, dtype="float64")
    del a.forward
    assert calls and calls[0] is not threading.main_thread()
    assert threading.active_count() == threads_before
    assert (torch.get_num_threads(), _blas_threads()) == counts
    assert compare(a, b, X, dtype="float64").ok  # and the models still compare


def test_a_harness_bug_on_the_calling_thread_puts_the_threads_back(two_cores, monkeypatch) -> None:
    comparison = importlib.import_module("parity.comparison")

    def bug(*_args):
        raise ZeroDivisionError("harness bug")

    monkeypatch.setattr(comparison, "max_errors", bug)
    counts = torch.get_num_threads(), _blas_threads()
    threads_before = threading.active_count()
    with pytest.raises(ZeroDivisionError, match="harness bug"):
        compare(*twins(), X, dtype="float64")
    assert (torch.get_num_threads(), _blas_threads()) == counts
    assert threading.active_count() == threads_before
