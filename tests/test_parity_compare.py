"""parity.compare (parity/comparison.py): faithful pairs agree layer by layer; planted
faults are named where they are; gradients (and Lucid 2.9.0's broadcast-gradient bug) and
train steps; models are left exactly as found; bad arguments fail clearly. 75 px inputs
unless marked slow."""

from __future__ import annotations

import functools
import importlib
import json
import math
import subprocess
import sys

import lucid
import lucid.nn as lnn
import numpy as np
import pytest
import torch

import lucid_inception
from conformance.findings import by_id
from lucid_inception.frameworks import LucidAdapter, TorchAdapter, adapter_for
from lucid_inception.upstream import upstream_is_released
from parity import TOLERANCES, DeviceUnavailable, Report, Row, compare, transfer
from parity.report import KINDS
from parity.signal import prepare_signal
from parity.tolerances import K_MAX, tolerance_for

from .conftest import image, randomize_batchnorm, released_upstream_only

SMALL = "inception_resnet_v1"  # the cheapest to run; faults are planted in it
X = image((2, 3, 75, 75), seed=0, dtype="float64")


def fresh_pair(name: str = SMALL, seed: int = 0) -> tuple[lnn.Module, torch.nn.Module]:
    """A Lucid model with seeded random BatchNorm statistics and its torch twin, transferred.

    Random rather than calibrated statistics: calibrated ones make an untrained network
    amplify rounding error ~1.5x per block (see parity.tolerances), which is a property of
    the random network, not of the frameworks."""
    a = lucid_inception.build(name, "lucid")
    randomize_batchnorm(a, seed)
    b = lucid_inception.build(name, "torch")
    transfer(a, b)
    return a, b


@functools.cache
def shared_pair(name: str) -> tuple[lnn.Module, torch.nn.Module]:
    """For tests that do not change the models (compare leaves them as found)."""
    return fresh_pair(name)


def first_failing(report: Report, kind: str) -> Row:
    return next(row for row in report.rows if row.kind == kind and not row.ok)


# ----------------------------------------------------------------------- faithful pairs


@pytest.mark.parametrize("name", lucid_inception.MODEL_NAMES)
def test_a_faithful_pair_agrees_at_every_layer(name: str) -> None:
    a, b = shared_pair(name)
    report = compare(a, b, X, dtype="float64")
    assert report.ok and report.first_divergence is None, report.worst(3)
    assert report.frameworks == ("lucid", "torch") and report.devices == ("cpu", "cpu")
    # A row for every module that holds tensors, and an output row for every module
    # that ran: all named modules except the never-called ones.
    outputs = {row.module for row in report.rows if row.kind == "output"}
    assert "" in outputs and "fc" in outputs
    assert "fc" in {row.module for row in report.rows if row.kind == "state"}
    worst = report.worst(1, "output")[0]
    assert 0 < worst.max_rel <= TOLERANCES["float64"].rel


def test_float32_and_either_order() -> None:
    a, b = shared_pair(SMALL)
    ab = compare(a, b, X.astype(np.float32))
    ba = compare(b, a, X)  # float64 input, compared in float32
    assert ab.ok and ba.ok and ab.dtype == "float32"
    assert ba.frameworks == ("torch", "lucid")
    # The measure is symmetric.
    assert [r.max_rel for r in ab.rows] == pytest.approx([r.max_rel for r in ba.rows], rel=1e-6, abs=1e-12)


def test_same_framework_pairs_are_exact() -> None:
    for model in shared_pair(SMALL):
        copy = lucid_inception.build(SMALL, adapter_for(model).name)
        transfer(model, copy)
        report = compare(model, copy, X, dtype="float64")
        assert report.ok and all(row.max_abs == 0 for row in report.rows)


# ----------------------------------------------------------------------- planted faults


def test_a_changed_weight_is_named_by_its_owner() -> None:
    a, b = fresh_pair()
    with torch.no_grad():  # one filter: a single tap could sit on an input channel ReLU zeroed
        b.conv[3].branch2[1].conv.weight[0] += 1e-3
    report = compare(a, b, X, dtype="float64")
    owner = "conv.3.branch2.1.conv"
    assert report.first_divergence == owner
    state = [row for row in report.rows if row.kind == "state" and not row.ok]
    assert [row.module for row in state] == [owner]
    assert "weight differs" in state[0].note and state[0].max_abs == pytest.approx(1e-3, rel=1e-3)
    # The forward still runs and diverges at the same module.
    assert first_failing(report, "output").module == owner


def test_a_container_returning_its_last_childs_tensor_reuses_that_row() -> None:
    a, b = shared_pair(SMALL)
    rows = {row.module: row for row in compare(a, b, X, dtype="float64").rows if row.kind == "output"}
    container, child = rows["stem.conv.0"], rows["stem.conv.0.relu"]
    assert container.note.startswith("the output of 'stem.conv.0.relu' again")
    assert (container.repeat_of, child.repeat_of) == ("stem.conv.0.relu", None)
    assert (container.max_abs, container.max_rel, container.ok) == (child.max_abs, child.max_rel, child.ok)
    assert child.max_abs > 0  # a real comparison, whose numbers were reused


def test_the_worst_rows_leave_out_repeats() -> None:
    """A planted fault in a container's last child fails the child and every container
    repeating it; the worst rows name the child once and then other places."""
    a, b = fresh_pair()
    relu = b.stem.conv[0].relu
    relu.forward = lambda x: torch.relu(x) * 1.01
    report = compare(a, b, X, dtype="float64")
    failing = [row for row in report.rows if not row.ok and row.kind == "output"]
    assert [row.module for row in failing[:2]] == ["stem.conv.0.relu", "stem.conv.0"]
    assert failing[1].repeat_of == "stem.conv.0.relu"
    worst = report.worst(len(report.rows))
    assert all(row.repeat_of is None for row in worst) and "stem.conv.0.relu" in [r.module for r in worst]
    assert "stem.conv.0" not in [row.module for row in worst]


def test_a_tensor_changed_in_place_after_its_child_returned_is_compared_again() -> None:
    """torch bumps a tensor's version on every in-place op: the container's output is the
    child's tensor, but no longer its values."""
    a, b = fresh_pair()
    block = b.stem.conv[0]
    inner = block.forward

    def scaled(x: torch.Tensor) -> torch.Tensor:
        y = inner(x)
        return y.mul_(1.001)

    block.forward = scaled
    report = compare(a, b, X, dtype="float64")
    assert report.first_divergence == "stem.conv.0"
    assert "again" not in first_failing(report, "output").note


def test_the_root_output_is_compared_in_full_even_when_it_repeats() -> None:
    """Lucid has no version counter: a value written in place into the logits after ``fc``
    returned is invisible to the repeat check, so the root never reuses a row."""
    a, b = fresh_pair()
    inner = type(a).forward

    def written_into(x: lucid.Tensor) -> lucid.Tensor:
        logits = inner(a, x)
        logits[0, 3] = logits[0, 3] * 1.01  # Lucid's __setitem__ writes into logits.data
        return logits

    a.forward = written_into
    report = compare(a, b, X, dtype="float64")
    assert report.first_divergence == ""
    assert all(row.ok for row in report.rows if row.module != "")


def test_a_copy_on_one_side_of_a_repeated_tensor_is_compared_in_full() -> None:
    a, b = fresh_pair()
    block = b.stem.conv[0]
    inner = block.forward
    block.forward = lambda x: inner(x).clone()  # same values, another tensor: side a repeats, b does not
    report = compare(a, b, X, dtype="float64")
    assert report.ok
    row = next(row for row in report.rows if row.module == "stem.conv.0" and row.kind == "output")
    assert "again" not in row.note and row.max_abs > 0


def test_a_changed_running_var_is_named_by_its_batchnorm() -> None:
    a, b = fresh_pair()
    with torch.no_grad():
        b.conv[5].branch3[2].bn.running_var[7] *= 1.5
    report = compare(a, b, X, dtype="float64")
    assert report.first_divergence == "conv.5.branch3.2.bn"
    assert "running_var differs" in first_failing(report, "state").note


def test_the_state_check_counts_nan_equal_to_nan_and_nothing_else() -> None:
    """Plain equality is tried first; NaN (never equal to itself) must then still match."""
    a, b = fresh_pair()
    a.fc.bias.data[3] = np.nan
    with torch.no_grad():
        b.fc.bias[3] = float("nan")
    rows = {row.module: row for row in compare(a, b, X, dtype="float64").rows if row.kind == "state"}
    assert rows["fc"].ok, rows["fc"].note
    with torch.no_grad():
        b.fc.bias[3] = 0.0
    rows = {row.module: row for row in compare(a, b, X, dtype="float64").rows if row.kind == "state"}
    assert not rows["fc"].ok and "bias differs" in rows["fc"].note


def test_a_changed_batchnorm_eps_is_found_by_the_forward() -> None:
    a, b = fresh_pair()
    b.conv[2].branch3[1].bn.eps = 1e-3  # not a tensor: the state rows cannot see it
    report = compare(a, b, X, dtype="float64")
    assert all(row.ok for row in report.rows if row.kind == "state")
    assert report.first_divergence == "conv.2.branch3.1.bn"


def test_swapped_branches_are_named_at_the_block() -> None:
    a, b = fresh_pair("inception_v4")
    block = b.conv[1]  # an InceptionA: its four 96-channel branches can swap unnoticed by shape

    def swapped(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([block.branch2(x), block.branch1(x), block.branch3(x), block.branch4(x)], dim=1)

    block.forward = swapped
    report = compare(a, b, X, dtype="float64")
    # Every branch agrees; the concatenation is where the outputs first differ.
    assert report.first_divergence == "conv.1"
    assert all(row.ok for row in report.rows if row.kind == "output" and row.module.startswith("conv.1."))


def test_a_module_that_runs_on_one_side_only() -> None:
    a, b = fresh_pair("inception_v4")
    stem = b.conv[0]

    def upstream_stem(x: torch.Tensor) -> torch.Tensor:  # lucid-dl 2.9.0's bug: left twice
        x = stem.conv(x)
        x = torch.cat([stem.branch1_pool(x), stem.branch1_conv(x)], dim=1)
        x = torch.cat([stem.branch2_left(x), stem.branch2_left(x)], dim=1)
        return torch.cat([stem.branch3_pool(x), stem.branch3_conv(x)], dim=1)

    stem.forward = upstream_stem
    report = compare(a, b, X, dtype="float64")
    assert report.first_divergence in {"conv.0.branch2_right.0.conv", "conv.0.branch2_left.0.conv"}
    only_a = [r for r in report.rows if "side a (lucid) only" in r.note]
    # branch2_left ran on both sides, twice on b: its second call is the extra one
    extra_b = [r for r in report.rows if "on side b (torch) has no counterpart on side a" in r.note]
    assert {r.module for r in only_a} >= {"conv.0.branch2_right", "conv.0.branch2_right.3.bn"}
    assert {r.module for r in extra_b} >= {"conv.0.branch2_left", "conv.0.branch2_left.1.relu"}
    assert all(r.shape_b is None and not r.ok for r in only_a)
    assert all(r.note.startswith("call 2 ran") and "side a 1 call(s), side b 2" in r.note for r in extra_b)
    assert not any("side b (torch) only" in r.note for r in report.rows)


@pytest.mark.parametrize("side", [0, 1])
def test_an_exception_is_a_row_at_the_module_that_raised(side: int) -> None:
    pair = fresh_pair()

    def broken(x: object) -> object:
        raise RuntimeError("planted")

    relu = pair[side].conv[4].branch3[1].relu
    relu.forward = broken  # an instance attribute on either framework
    report = compare(*pair, X, dtype="float64")
    error = first_failing(report, "error")
    assert report.first_divergence == error.module == "conv.4.branch3.1.relu"
    assert "RuntimeError: planted" in error.note and f"side {'ab'[side]} (" in error.note
    # Everything before it was compared and agrees; the rest of the other side is not reported.
    assert all(row.ok for row in report.rows if row.kind == "output")
    assert not any("only" in row.note for row in report.rows)
    assert relu.forward is broken  # Lucid's pre-hook wrapper put the patched forward back


@pytest.mark.parametrize("lead", [None, 0])
def test_a_bug_in_the_harness_is_raised_not_reported(lead: int | None, monkeypatch) -> None:
    """Raised from whichever side compares; with no lead the other side is paused in the
    middle of its forward, and must be unwound too."""
    a, b = shared_pair(SMALL)
    before = _hook_count(a), _hook_count(b)
    comparison = importlib.import_module("parity.comparison")
    if lead is not None:
        monkeypatch.setattr(comparison, "lead_for", lambda _input_bytes: lead)
    calls = []

    def bug(*_args: object) -> None:
        calls.append(1)
        if len(calls) == 20:  # deep in the model
            raise ZeroDivisionError("harness bug")
        return 0.0, 0.0, ""

    monkeypatch.setattr(comparison, "max_errors", bug)
    with pytest.raises(ZeroDivisionError, match="harness bug"):
        compare(a, b, X)
    assert (_hook_count(a), _hook_count(b)) == before
    assert all("forward" not in vars(m) for _, m in LucidAdapter.named_modules(a))


@pytest.mark.parametrize("enabled", [True, False])
def test_the_garbage_collector_is_off_while_comparing_and_put_back(enabled: bool, monkeypatch) -> None:
    import gc

    a, b = shared_pair(SMALL)
    comparison = importlib.import_module("parity.comparison")
    seen = []

    def spy(*args: object) -> tuple:
        seen.append(gc.isenabled())
        return max_errors(*args)

    max_errors = comparison.max_errors
    monkeypatch.setattr(comparison, "max_errors", spy)
    (gc.enable if enabled else gc.disable)()
    try:
        assert compare(a, b, X).ok
        assert gc.isenabled() == enabled
    finally:
        gc.enable()
    assert seen and not any(seen)


def test_an_exception_after_a_divergence_is_located_at_the_divergence() -> None:
    a, b = fresh_pair()
    b.stem.conv[1].bn.eps = 1e-2

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("planted")

    b.conv[6].forward = broken
    report = compare(a, b, X, dtype="float64")
    assert report.first_divergence == "stem.conv.1.bn"
    error = first_failing(report, "error")
    assert error.module == "stem.conv.1.bn" and "in module 'conv.6'" in error.note


def test_an_input_the_models_reject_is_a_row_not_a_crash() -> None:
    a, b = shared_pair(SMALL)
    report = compare(a, b, image((1, 3, 74, 74)))  # 74 px collapses in Reduction-B
    errors = [row for row in report.rows if row.kind == "error"]
    assert len(errors) == 2 and not report.ok
    assert all("ValueError" in row.note for row in errors)


# ----------------------------------------------------------------------------- backward


def _fixed_match_grad_shape(original):
    """Lucid's ``_match_grad_shape`` with a correct broadcast reduction (sum over the axes
    that were broadcast), for these tests only; other cases go to ``original``."""

    def match(data, grad, device="cpu"):
        if data.shape == grad.shape:
            return grad
        try:
            broadcast = np.broadcast_shapes(tuple(data.shape), tuple(grad.shape))
        except ValueError:
            broadcast = None
        if broadcast != tuple(grad.shape):  # not a broadcast: upstream's other cases
            return original(data, grad, device)
        leading = grad.ndim - data.ndim
        if leading:
            grad = grad.sum(axis=tuple(range(leading)))
        axes = tuple(i for i, (d, g) in enumerate(zip(data.shape, grad.shape, strict=True)) if d == 1 != g)
        return grad.sum(axis=axes, keepdims=True) if axes else grad

    return match


def _lucid_broadcast_bug() -> bool:
    """``x + b`` with b of shape (3,) under a non-uniform upstream gradient."""
    b = lucid.Tensor(np.zeros(3), requires_grad=True)
    y = lucid.Tensor(np.ones((2, 3))) + b
    y.grad = np.arange(1.0, 7.0).reshape(2, 3)
    y.backward()
    return not np.allclose(b.grad, [5.0, 7.0, 9.0])


@pytest.fixture
def fixed_lucid(monkeypatch):
    """A Lucid with correct broadcast gradients: 2.9.0 with the fix monkeypatched in for
    the test; a kit-patched newer Lucid as it is (2.16.0 fixed them upstream)."""
    if upstream_is_released():
        monkeypatch.setattr(lucid, "_match_grad_shape", _fixed_match_grad_shape(lucid._match_grad_shape))
    assert not _lucid_broadcast_bug()


@released_upstream_only
def test_backward_shows_lucid_290s_broadcast_gradients() -> None:
    assert _lucid_broadcast_bug()
    a, b = shared_pair(SMALL)
    report = compare(a, b, X, dtype="float64", backward=True)
    assert not report.ok
    assert all(row.ok for row in report.rows if row.kind == "output")
    failing = {(row.module, row.note) for row in report.failures}
    assert ("stem.conv.0.conv", "bias") in failing
    assert ("stem.conv.0.bn", "weight") in failing
    assert ("fc", "bias") in failing
    # Backward order: the logits' bias is where the gradients first go wrong.
    assert report.first_divergence == "fc"
    assert report.worst(1, "param_grad")[0].max_rel > 0.1


def test_backward_agrees_on_a_fixed_lucid(fixed_lucid) -> None:
    # float64 only: in float32 a rounding difference now and then flips a ReLU (the
    # frameworks' threaded kernels do not even round the same from run to run), and the
    # gradient behind it jumps by O(1) (parity.tolerances, "Float32 gradients").
    dtype = "float64"
    a, b = shared_pair(SMALL)
    report = compare(a, b, X, dtype=dtype, backward=True, grad_seed=3)
    assert report.ok, report.worst(3)
    grads = [row for row in report.rows if row.kind == "param_grad"]
    assert len(grads) == len(TorchAdapter.parameter_names(b))
    assert {row.kind for row in report.rows} >= {"input_grad", "param_grad", "output", "state"}
    assert 0 < report.worst(1, "param_grad")[0].max_rel <= TOLERANCES[dtype].grad


def test_backward_names_a_planted_gradient_fault(fixed_lucid) -> None:
    a, b = fresh_pair()
    layer = b.conv[7].branch2[1].conv  # the forward is untouched, the gradient scaled
    layer.weight.register_hook(lambda g: g * 1.001)
    report = compare(a, b, X, dtype="float64", backward=True)
    assert [(row.module, row.note) for row in report.failures] == [("conv.7.branch2.1.conv", "weight")]


def _tied(framework: str) -> object:
    """conv -> mean -> fc1 -> fc2, with fc2's weight the very tensor of fc1's."""
    nn = lnn if framework == "lucid" else torch.nn

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc1, self.fc2 = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 4), nn.Linear(4, 4)
            self.fc2.weight = self.fc1.weight

        def forward(self, x):
            pooled = self.conv(x).mean(axis=(2, 3)) if framework == "lucid" else self.conv(x).mean(dim=(2, 3))
            return self.fc2(self.fc1(pooled))

    return Tied()


def test_a_tied_parameter_has_a_gradient_row_under_each_name(fixed_lucid) -> None:
    """torch's ``named_parameters()`` lists a shared parameter once, Lucid's every name:
    the second name looked like a parameter of side a only."""
    a, b = _tied("lucid"), _tied("torch")
    LucidAdapter.cast(a, "float64"), b.double()
    transfer(a, b)
    report = compare(a, b, X, dtype="float64", backward=True)
    assert report.ok, report.worst(3)
    names = {f"{row.module}.{row.note}" for row in report.rows if row.kind == "param_grad"}
    assert {"fc1.weight", "fc2.weight"} <= names
    assert LucidAdapter.count_parameters(a) == TorchAdapter.count_parameters(b) == 3 * 4 * 9 + 4 + 16 + 4 + 4


def test_every_module_call_has_an_input_gradient_row(fixed_lucid) -> None:
    a, b = shared_pair(SMALL)
    report = compare(a, b, X, dtype="float64", backward=True)
    inputs = [row for row in report.rows if row.kind == "input_grad"]
    assert report.ok and all(row.ok for row in inputs), report.worst(3)
    calls = {row.module for row in report.rows if row.kind == "output"}
    assert {row.module for row in inputs} == calls  # the root's is the model input's
    # Backward order: the head first, then each module after every module that entered after it.
    order = [(row.module, row.kind) for row in report.rows if row.kind in ("input_grad", "param_grad")]
    assert order[:4] == [
        ("fc", "param_grad"),
        ("fc", "param_grad"),
        ("fc", "input_grad"),
        ("dropout", "input_grad"),
    ]
    assert order.index(("conv.0.branch1.conv", "input_grad")) < order.index(("conv.0", "input_grad"))


def _plant_wrong_pool_backward(twin: torch.nn.Module) -> None:
    """``conv.5.branch1`` (a max-pool) sends 0.1% too much gradient to its input."""
    pool = twin.conv[5].branch1
    forward = pool.forward

    def wrong_backward(x):
        x = x.view_as(x)
        x.register_hook(lambda grad: grad * 1.001)
        return forward(x)

    pool.forward = wrong_backward


def test_a_wrong_backward_without_parameters_is_found_where_it_is(fixed_lucid) -> None:
    """A pool whose backward is wrong shows first at the pool (without the module input
    gradients it showed at the nearest parameter gradient below it, ``conv.4.conv_linear``)."""
    a, b = fresh_pair()
    _plant_wrong_pool_backward(b)
    report = compare(a, b, X, dtype="float64", backward=True)
    assert report.first_divergence == "conv.5.branch1" and report.failures[0].kind == "input_grad"
    assert all(row.ok for row in report.rows if row.kind == "output")


def test_the_parts_probe_agrees_with_the_luc_012_reproducer() -> None:
    """``LucidAdapter.grad_hooks_see_parts`` probes the installed Lucid; the conformance
    kit's reproducer of the bug behind it (a script of its own) must say the same."""
    script = by_id("LUC-012-backward-lists-tensor-twice").reproducer
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode in (0, 1), run.stdout + run.stderr
    assert LucidAdapter.grad_hooks_see_parts() == (run.returncode == 1), run.stdout


@pytest.mark.skipif(
    not LucidAdapter.grad_hooks_see_parts(),
    reason="this Lucid runs each tensor's backward once (LUC-012 patched): no parts to sum",
)
def test_lucid_gradient_parts_are_summed_before_comparing(fixed_lucid, monkeypatch) -> None:
    """Lucid as released runs a residual block input's backward twice, each time with a
    part of its gradient; compared part by part, a faithful pair fails at every residual
    block."""
    a, b = shared_pair(SMALL)
    assert compare(a, b, X, dtype="float64", backward=True).ok
    monkeypatch.setattr(LucidAdapter, "grad_hooks_see_parts", staticmethod(lambda: False))
    report = compare(a, b, X, dtype="float64", backward=True)
    assert {row.module for row in report.failures} >= {"conv.0", "conv.21"}
    assert {row.kind for row in report.failures} == {"input_grad"}


# --------------------------------------------------------------------------- train step


def test_train_step_agrees_with_the_variance_conventions_corrected() -> None:
    a, b = shared_pair(SMALL)
    report = compare(a, b, X, dtype="float64", train_step=True)
    assert report.ok, report.worst(3)
    running = [row for row in report.rows if row.kind == "bn_running_update"]
    stats = [row for row in report.rows if row.kind == "bn_batch_stats"]
    assert len(running) == len(stats) == sum(k.endswith("running_var") for k in TorchAdapter.state(b))
    assert all("side b (torch) keeps an unbiased running_var" in row.note for row in running)


def test_train_step_needs_the_correction(monkeypatch) -> None:
    a, b = shared_pair(SMALL)
    monkeypatch.setattr(TorchAdapter, "running_var_unbiased", False)  # pretend torch were biased
    report = compare(a, b, X, dtype="float64", train_step=True)
    failing = [row for row in report.failures if row.kind == "bn_running_update"]
    # At 75 px the last blocks see a 1x1 grid: n = 2, where n/(n-1) doubles the variance.
    assert failing and all(row.kind == "bn_running_update" for row in report.failures)


def test_train_step_names_a_changed_momentum() -> None:
    a, b = fresh_pair()
    b.conv[9].branch1.bn.momentum = 0.2
    report = compare(a, b, X, dtype="float64", train_step=True)
    assert [(row.module, row.kind) for row in report.failures] == [
        ("conv.9.branch1.bn", "config"),
        ("conv.9.branch1.bn", "bn_running_update"),
    ]
    assert report.failures[0].note == "momentum 0.1 vs 0.2"


# ---------------------------------------------------------------------- left as found


def _everything(model) -> tuple:
    adapter = adapter_for(model)
    state = adapter.snapshot(model)  # torch's num_batches_tracked included
    modes = adapter.training_modes(model)
    grads = adapter.parameter_grads(model)
    hooks = [name for name, m in adapter.named_modules(model) if "forward" in vars(m)]
    return state, modes, grads, adapter.device(model), hooks


def _assert_same(before: tuple, after: tuple) -> None:
    (state0, modes0, grads0, dev0, hooks0), (state1, modes1, grads1, dev1, hooks1) = before, after
    assert list(state0) == list(state1)
    for key in state0:
        assert state0[key].dtype == state1[key].dtype, key
        assert state0[key].tobytes() == state1[key].tobytes(), key
    assert modes0 == modes1 and dev0 == dev1 and hooks0 == hooks1
    assert grads0.keys() == grads1.keys()
    for key, g in grads0.items():
        assert (g is None and grads1[key] is None) or np.array_equal(g, grads1[key]), key


def test_models_are_left_exactly_as_found(fixed_lucid) -> None:
    a, b = fresh_pair()
    # Mixed dtypes with float64-only values (as in upstream models' BatchNorm buffers), mixed
    # modes, an existing gradient: all must come back bit for bit.
    rng = np.random.default_rng(1)
    buffers = LucidAdapter.snapshot(a, LucidAdapter.buffer_names(a))
    wider = {k: v + rng.uniform(0, 1e-9, v.shape) for k, v in buffers.items()}  # float64
    for model in (a, b):
        adapter_for(model).restore(model, wider)
        model.train()
    a.conv[3].eval()
    b.conv[3].eval()
    a.fc.weight.grad = np.ones(a.fc.weight.shape, dtype=np.float32)
    b.fc.weight.grad = torch.ones_like(b.fc.weight)
    before = _everything(a), _everything(b)
    # Cast up (gradients in float64: see test_backward_agrees_on_a_fixed_lucid) and down.
    for options in ({"dtype": "float64", "backward": True, "train_step": True}, {"train_step": True}):
        report = compare(a, b, X, **options)
        assert report.ok, report.worst(3)
        _assert_same(before[0], _everything(a))
        _assert_same(before[1], _everything(b))
    assert LucidAdapter.dtypes(a)["stem.conv.0.bn.running_var"] == np.float64


# ----------------------------------------------------------------------- local mode


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_local_compares_a_chaotic_network_one_step_at_a_time(dtype: str) -> None:
    """Calibrated BatchNorm statistics give untrained Inception-v4 unit gain, and any rounding
    then grows ~1.5x per block: as given, a faithful pair ends far over the per-layer budget.
    Locally every row measures one step and the same pair passes with room to spare."""
    a = lucid_inception.build("inception_v4", "lucid")
    x = image((1, 3, 75, 75), seed=5)
    prepare_signal(a, x, seed=0, signal="calibrated")
    b = lucid_inception.build("inception_v4", "torch")
    transfer(a, b)
    as_given = compare(a, b, x, dtype=dtype)
    assert not as_given.ok and as_given.worst(1, "output")[0].max_rel > 10 * tolerance_for(dtype).rel
    local = compare(a, b, x, dtype=dtype, local=True)
    assert local.ok and local.local, local.worst(3)
    assert local.worst(1, "output")[0].max_rel < 0.5 * tolerance_for(dtype).rel
    # Every module that ran has an output row and an input row (side b's own input).
    outputs = {r.module for r in as_given.rows if r.kind == "output"}
    assert {r.module for r in local.rows if r.kind == "output"} == outputs
    assert {r.module for r in local.rows if r.kind == "input"} == outputs


def test_local_sees_a_fault_between_modules_at_the_next_input() -> None:
    """A residual sum without its scale is code between modules: its result is the input of
    the block's ReLU, compared before side a's replaces it."""
    a, b = fresh_pair("inception_resnet_v2")
    b.conv[8].scale = 1.0
    report = compare(a, b, X, dtype="float64", local=True)
    assert report.first_divergence == "conv.8.relu"
    assert first_failing(report, "input").module == "conv.8.relu"
    # Every module before the fault, and every later step on its own, agrees.
    failing = {r.module for r in report.failures}
    assert failing <= {"conv.8", "conv.8.relu"}, failing


def test_local_locates_an_exception_at_a_failing_input_row() -> None:
    a, b = fresh_pair("inception_resnet_v2")
    b.conv[8].scale = 1.0

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("planted")

    b.conv[9].forward = broken
    report = compare(a, b, X, dtype="float64", local=True)
    assert report.first_divergence == "conv.8.relu"
    error = first_failing(report, "error")
    assert error.module == "conv.8.relu" and "in module 'conv.9'" in error.note


def _hook_count(model) -> int:
    if isinstance(model, torch.nn.Module):
        return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
    return sum(len(m._forward_hooks) + ("forward" in vars(m)) for _, m in LucidAdapter.named_modules(model))


def test_a_failure_while_hooking_is_a_row_and_leaves_no_hook_behind(monkeypatch) -> None:
    """Local mode installs input hooks, then output hooks: if the second fails, the first
    must come off again."""
    a, b = shared_pair(SMALL)
    before = _hook_count(a), _hook_count(b)

    def refuse(*_args, **_kwargs):
        raise RuntimeError("no output hooks today")

    monkeypatch.setattr(importlib.import_module("parity._capture"), "capture_outputs", refuse)
    report = compare(a, b, X, local=True)
    errors = [row for row in report.rows if row.kind == "error"]
    assert len(errors) == 2 and all("no output hooks today" in row.note for row in errors)
    assert (_hook_count(a), _hook_count(b)) == before


@pytest.mark.parametrize("side", [0, 1])
def test_ctrl_c_in_either_forward_unwinds_both_and_leaves_them_as_found(side: int, monkeypatch) -> None:
    """The sides take turns on the calling thread: Ctrl-C while one runs must also unwind
    the other, paused inside a hook in the middle of its forward (no lead: the sides take
    turns at every module, so the other side is always paused mid-forward)."""
    monkeypatch.setattr(importlib.import_module("parity.comparison"), "lead_for", lambda _input_bytes: 0)
    a, b = fresh_pair()
    before = _everything(a), _everything(b), _hook_count(a), _hook_count(b)
    grad_modes = torch.is_grad_enabled(), lucid.grad_enabled()
    calls = []

    def interrupted(x: object) -> object:
        calls.append(x)
        raise KeyboardInterrupt

    (a, b)[side].conv[8].forward = interrupted  # deep in the model: the other side is mid-forward
    with pytest.raises(KeyboardInterrupt) as caught:
        compare(a, b, X, dtype="float64")
    assert len(calls) == 1
    del (a, b)[side].conv[8].forward
    assert (_hook_count(a), _hook_count(b)) == before[2:], "a paused side was left hooked"
    del caught  # its traceback holds the runners' frames
    after = _everything(a), _everything(b), _hook_count(a), _hook_count(b)
    assert before[2:] == after[2:]
    _assert_same(before[0], after[0])
    _assert_same(before[1], after[1])
    assert (torch.is_grad_enabled(), lucid.grad_enabled()) == grad_modes


def test_local_leaves_the_models_as_found_and_refuses_a_backward() -> None:
    a, b = shared_pair(SMALL)
    before = _everything(a), _everything(b)
    assert compare(a, b, X, local=True, train_step=True).ok
    _assert_same(before[0], _everything(a))
    _assert_same(before[1], _everything(b))
    with pytest.raises(ValueError, match="local=True cuts side b's graph"):
        compare(a, b, X, local=True, backward=True)


# ---------------------------------------------------------------------- bad arguments


def test_bad_inputs_say_what_was_expected() -> None:
    a, b = shared_pair(SMALL)
    with pytest.raises(TypeError, match=r"numpy float array of shape \(N, C, H, W\), got list"):
        compare(a, b, X.tolist())
    with pytest.raises(TypeError, match="floating-point.*got dtype int64"):
        compare(a, b, np.zeros((1, 3, 75, 75), dtype=np.int64))
    with pytest.raises(ValueError, match=r"4 dimensions \(N, C, H, W\), got shape \(3, 75, 75\)"):
        compare(a, b, X[0])
    with pytest.raises(ValueError, match="NaN"):
        compare(a, b, np.full((1, 3, 75, 75), np.nan))
    with pytest.raises(ValueError, match="unsupported dtype 'float16'; valid: float32, float64"):
        compare(a, b, X, dtype="float16")
    with pytest.raises(ValueError, match="same one twice"):
        compare(a, a, X)
    with pytest.raises(TypeError, match="grad_seed"):
        compare(a, b, X, grad_seed=1.5)
    for flag in ("backward", "train_step", "local"):  # "no" is truthy: it would run one
        with pytest.raises(TypeError, match=f"{flag}: expected True or False, got 'no'"):
            compare(a, b, X, **{flag: "no"})


def test_different_module_trees_list_the_first_differing_names() -> None:
    a = shared_pair(SMALL)[0]
    other = shared_pair("inception_resnet_v2")[1]
    pattern = (
        r"module trees differ .*only in a: 'stem.conv.3', .* \(\+8 more\); only in b: 'stem.branch1_pool'"
    )
    with pytest.raises(ValueError, match=pattern):
        compare(a, other, X)


def test_devices_are_checked() -> None:
    a, b = shared_pair(SMALL)
    with pytest.raises(TypeError, match="pair of device names"):
        compare(a, b, X, devices=("cpu",))
    with pytest.raises(ValueError, match="torch has no device 'gpu'; valid: cpu, cuda"):
        compare(a, b, X, devices=("cpu", "gpu"))
    for devices, adapter in ((("gpu", "cpu"), LucidAdapter), (("cpu", "cuda"), TorchAdapter)):
        reason = adapter.device_unavailable(devices[0] if adapter is LucidAdapter else devices[1])
        if reason is None:
            continue  # that device exists here: the gpu tests run it
        with pytest.raises(DeviceUnavailable) as caught:
            compare(a, b, X, devices=devices)
        assert isinstance(caught.value, RuntimeError) and caught.value.reason == reason


def test_float64_on_lucid_gpu_is_refused_before_anything(monkeypatch) -> None:
    """Lucid's 'gpu' (MLX) makes float64 float32 (docs/framework-ops.md, mlx-float32): such
    a compare could never pass. Refused by the device's name, whether or not it exists
    here, and before any cast or forward."""
    a, b = shared_pair(SMALL)

    def touched(*_args, **_kwargs):
        raise AssertionError("cast or ran before refusing")

    for adapter in (LucidAdapter, TorchAdapter):
        monkeypatch.setattr(adapter, "cast", touched)
        monkeypatch.setattr(adapter, "device_unavailable", touched)
    message = r"lucid device 'gpu' cannot compare in float64: .* \(the mlx-float32 convention"
    for pair, devices in (((a, b), ("gpu", "cpu")), ((b, a), ("cuda", "gpu"))):
        with pytest.raises(ValueError, match=message):
            compare(*pair, X, dtype="float64", devices=devices)


@pytest.mark.gpu
@pytest.mark.parametrize("devices", [("cpu", "cuda"), ("gpu", "cpu"), ("gpu", "cuda")])
def test_on_accelerators(devices: tuple[str, str]) -> None:
    for adapter, device in zip((LucidAdapter, TorchAdapter), devices, strict=True):
        reason = adapter.device_unavailable(device)
        if reason is not None:
            pytest.skip(reason)
    a, b = fresh_pair()
    before = _everything(a), _everything(b)
    report = compare(a, b, X, dtype="float32", devices=devices, train_step=True)
    assert report.ok and report.devices == devices, report.worst(3)
    if devices[0] == "gpu":  # MLX holds float64 as float32: refused (the mlx-float32 convention)
        with pytest.raises(ValueError, match="mlx-float32"):
            compare(a, b, X, dtype="float64", devices=devices)
    else:
        assert compare(a, b, X, dtype="float64", devices=devices).ok
    _assert_same(before[0], _everything(a))
    _assert_same(before[1], _everything(b))


# ------------------------------------------------------------------ tolerances, report


def test_the_tolerance_budget_fits_the_models_and_the_targets() -> None:
    fan_ins = [
        math.prod(shape[1:])
        for name in lucid_inception.MODEL_NAMES
        for shape, _ in TorchAdapter.layout(shared_pair(name)[1]).values()
        if len(shape) >= 2
    ]
    assert max(fan_ins) == K_MAX  # the longest dot product the budget assumes
    f32, f64 = TOLERANCES["float32"], TOLERANCES["float64"]
    assert f64.rel <= 1e-12 and f32.rel <= 1e-5  # the project's fidelity targets
    assert f32.rel / f64.rel == pytest.approx(2.0**29)  # the same budget, another u
    assert f32.grad > f32.bn > f32.rel > f32.state == 0
    assert tolerance_for(np.float64) is f64
    with pytest.raises(ValueError, match="valid: float32, float64"):
        tolerance_for("int8")
    with pytest.raises(ValueError, match="unknown row kind"):
        f32.for_kind("logits")


def test_report_round_trips_through_json_and_ranks_the_worst() -> None:
    rows = [
        Row("x", "output", (1,), (1,), 1e-9, 1e-9, 1e-5, True),
        Row("y", "output", (1,), None, math.inf, math.inf, 1e-5, False, "ran on side a only"),
        Row("z", "param_grad", (2,), (2,), 1e-3, math.nan, 1e-5, False, "weight"),
        Row("w", "state", (2,), (2,), 0.0, 0.0, 0.0, True),
    ]
    report = Report(False, "y", rows, "float32", ("cpu", "cpu"), ("lucid", "torch"), "A", "B")
    text = json.dumps(report.to_dict(), allow_nan=False)
    back = Report.from_dict(json.loads(text))
    assert back.rows[0] == rows[0] and back.rows[1] == rows[1] and math.isnan(back.rows[2].max_rel)
    assert [r.module for r in report.worst(3)] in (["y", "z", "x"], ["z", "y", "x"])
    assert [r.module for r in report.worst(kind="output")] == ["y", "x"]
    assert [r.module for r in report.failures] == ["y", "z"]
    kinds = {
        "state",
        "config",
        "output",
        "input",
        "input_grad",
        "param_grad",
        "bn_batch_stats",
        "bn_train_output",
        "bn_running_update",
        "error",
    }
    assert set(KINDS) == kinds
    with pytest.raises(ValueError, match="unknown row kind"):
        report.worst(kind="grad")


# --------------------------------------------------------------------------- full size


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", lucid_inception.MODEL_NAMES)
def test_full_size(name: str, dtype: str) -> None:
    a, b = shared_pair(name)
    report = compare(a, b, image((2, 3, 299, 299), seed=1), dtype=dtype)
    assert report.ok, report.worst(3)
    logits = next(row for row in report.rows if row.module == "")
    assert logits.shape_a == (2, 1000) and logits.max_rel <= TOLERANCES[dtype].rel


def test_an_input_changed_in_place_is_not_compared_and_fails_nothing(fixed_lucid) -> None:
    """Torch runs no hook on a view changed in place (``ReLU(inplace=True)``): those calls
    say so instead of failing for a gradient that cannot come."""
    a, b = fresh_pair()
    relus = [m for m in b.modules() if isinstance(m, torch.nn.ReLU)]
    for relu in relus:
        relu.inplace = True
    report = compare(a, b, X[:1], dtype="float64", backward=True)
    assert report.ok, report.worst(3)
    skipped = [
        row for row in report.rows if row.kind == "input_grad" and "changed its input in place" in row.note
    ]
    assert len(skipped) == len(relus) and all(row.note.startswith("the gradient") for row in skipped)


def _through(framework: str, first: str, inplace: bool = False) -> object:
    """conv (or, ``first="square"``, a module computing x * x) -> identity -> ReLU -> mean -> fc."""
    nn = lnn if framework == "lucid" else torch.nn

    class Square(nn.Module):
        def forward(self, x):
            return x * x

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = Square() if first == "square" else nn.Conv2d(3, 3, 3, padding=1)
            self.idt = nn.Identity()
            self.relu = nn.ReLU(inplace=True) if inplace else nn.ReLU()
            self.fc = nn.Linear(3, 5)

        def forward(self, x):
            y = self.relu(self.idt(self.first(x)))
            return self.fc(y.mean(axis=(2, 3)) if framework == "lucid" else y.mean(dim=(2, 3)))

    return Net()


def _double_pair(first: str, inplace: bool = False) -> tuple[object, object]:
    a, b = _through("lucid", first), _through("torch", first, inplace)
    LucidAdapter.cast(a, "float64"), b.double()
    transfer(a, b)
    return a, b


def test_an_output_changed_in_place_after_its_module_returned_is_not_compared(fixed_lucid) -> None:
    """An Identity hands its input node on unchanged; a later ``ReLU(inplace=True)`` changes
    it, and torch runs no hook on it: its row says so instead of failing for a gradient
    that cannot come."""
    report = compare(*_double_pair("conv", inplace=True), X[:1], dtype="float64", backward=True)
    assert report.ok, report.worst(3)
    (idt,) = [row for row in report.rows if row.kind == "input_grad" and row.module == "idt"]
    assert idt.note.endswith(
        "not compared (side b: its module returned its input, which was then changed in place)"
    )


def test_a_module_reading_the_model_input_twice_keeps_a_working_backward(fixed_lucid) -> None:
    """``x * x`` on the model's input works on any Lucid (a leaf); behind the harness's
    identity node it raised where the backward lists a tensor once per consumer (LUC-012),
    and the model was blamed. There the call is not compared; elsewhere it is."""
    report = compare(*_double_pair("square"), X[:1], dtype="float64", backward=True)
    assert report.ok, report.worst(3)
    (square,) = [row for row in report.rows if row.kind == "input_grad" and row.module == "first"]
    if LucidAdapter.grad_hooks_see_parts():
        assert "not compared (side a: its input is a leaf" in square.note and "LUC-012" in square.note
    else:
        assert square.note == "the gradient this call sends to its input"


def test_a_lucid_side_b_blames_the_child_not_its_container(fixed_lucid) -> None:
    """Nested calls enter at one position; the inner one's row comes first, whichever side
    delivers its gradients last (a Lucid side b hands them on after its backward)."""
    a, b = fresh_pair()
    _plant_wrong_pool_backward(b)
    for first, second in ((a, b), (b, a)):
        report = compare(first, second, X[:1], dtype="float64", backward=True)
        assert report.first_divergence == "conv.5.branch1", (first is a, report.worst(3))
