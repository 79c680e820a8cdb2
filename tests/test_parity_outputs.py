"""parity.compare on what user models return and keep: outputs that are not one tensor (a
tuple, a dict, None), activations numpy has no dtype for, and buffers a forward updates."""

from __future__ import annotations

import copy
import dataclasses

import lucid
import lucid.nn as lnn
import numpy as np
import pytest
import torch

from parity import compare
from parity.report import Report

X = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)


class TorchSplit(torch.nn.Module):
    """A conv whose output is handed on as two halves (a tuple), the second scaled."""

    def __init__(self, factor: float = 1.0) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        return y[:, :2], y[:, 2:] * self.factor


class TorchNet(torch.nn.Module):
    def __init__(self, factor: float = 1.0) -> None:
        super().__init__()
        self.split, self.head = TorchSplit(factor), torch.nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.split(x)
        return self.head(a), b  # the second half leaves the model untouched by any module


class LucidSplit(lnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = lnn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: lucid.Tensor) -> tuple[lucid.Tensor, lucid.Tensor]:
        y = self.conv(x)
        return y[:, :2], y[:, 2:]


class LucidNet(lnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.split, self.head = LucidSplit(), lnn.Conv2d(2, 2, 1)

    def forward(self, x: lucid.Tensor) -> tuple[lucid.Tensor, lucid.Tensor]:
        a, b = self.split(x)
        return self.head(a), b


def _pair(factor: float) -> tuple[TorchNet, TorchNet]:
    a = TorchNet()
    b = TorchNet(factor)
    b.load_state_dict(a.state_dict())
    return a, b


def _failing(report: Report) -> list[tuple[str, str]]:
    return [(row.module, row.note) for row in report.failures]


def test_a_tuple_output_is_compared_array_by_array() -> None:
    """A fault in the part of a tuple no module reads again was never compared (no row
    for a tuple output): the pair passed."""
    report = compare(*_pair(1.0), X)
    assert report.ok, _failing(report)
    split = next(row for row in report.rows if row.module == "split" and row.kind == "output")
    assert split.shape_a == ((2, 2, 8, 8), (2, 2, 8, 8)) and split.max_rel == 0
    report = compare(*_pair(1.01), X)
    assert report.first_divergence == "split"
    assert _failing(report) == [
        ("split", "a sequence of 2; fails at [1]"),
        ("", "a sequence of 2; fails at [1]"),
    ]


def test_a_tuple_output_across_frameworks() -> None:
    from parity import transfer

    source, twin = LucidNet(), TorchNet()
    transfer(source, twin)
    assert compare(source, twin, X).ok
    twin.split.factor = 2.0
    assert compare(source, twin, X).first_divergence == "split"


@dataclasses.dataclass
class Out:
    logits: object
    info: object = None


class _Opaque:
    """An object whose repr differs between two faithful runs (it holds its address)."""


class _TorchRecordHead(torch.nn.Module):
    def __init__(self, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.conv, self.dtype = torch.nn.Conv2d(3, 2, 1), dtype

    def forward(self, x: torch.Tensor) -> Out:
        y = self.conv(x)
        return Out(y if self.dtype is None else y.to(self.dtype), _Opaque())


class _TorchRecord(torch.nn.Module):
    def __init__(self, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.head = _TorchRecordHead(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x).logits.float()


class _LucidRecordHead(lnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = lnn.Conv2d(3, 2, 1)

    def forward(self, x: lucid.Tensor) -> Out:
        return Out(self.conv(x), _Opaque())


class _LucidRecord(lnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = _LucidRecordHead()

    def forward(self, x: lucid.Tensor) -> lucid.Tensor:
        return self.head(x).logits


def test_a_dataclass_output_is_compared_by_its_fields_and_other_objects_by_type() -> None:
    """Any object was compared by its repr: a dataclass of tensors printed differently by the
    two frameworks (and judged on printed digits), an object's repr held its address."""
    from parity import transfer

    source, twin = _LucidRecord(), _TorchRecord()
    transfer(source, twin)
    assert compare(source, twin, X).ok
    a = _TorchRecord()
    b = _TorchRecord(torch.float64)
    b.load_state_dict(a.state_dict())
    report = compare(a, b, X)
    # The values agree; the dtype changed inside the record is named where it is.
    assert _failing(report) == [
        ("head", "a Out of logits, info; fails at .logits; dtypes differ: float32 vs float64")
    ]


class _Dict(torch.nn.Module):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.key: x * 2}


class _Head(torch.nn.Module):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.out = _Dict(key)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return next(iter(self.out(x).values()))


def test_outputs_of_another_layout_fail_where_they_are_made() -> None:
    report = compare(_Head("logits"), _Head("scores"), X)
    assert _failing(report) == [
        (
            "out",
            "outputs differ in layout: a dict of 'logits' ((2, 3, 8, 8),) "
            "vs a dict of 'scores' ((2, 3, 8, 8),)",
        )
    ]


class _Logger(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> None:
        return None


class _Net(torch.nn.Module):
    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls, self.logger = calls, _Logger()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.calls):
            self.logger(x)
        return x + 1


def test_a_module_returning_none_is_counted() -> None:
    assert compare(_Net(1), _Net(1), X).ok
    report = compare(_Net(2), _Net(1), X)
    assert report.first_divergence == "logger"
    assert "call 2 ran on side a (torch) has no counterpart on side b" in _failing(report)[0][1]


class _Bf16(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = self.conv(x)  # bfloat16: numpy has no dtype for it
        return y.float()


def test_bfloat16_activations_are_compared_not_blamed_on_the_model() -> None:
    """The harness's own numpy view of a bfloat16 output raised, reported as the model's error."""
    a = _Bf16()
    b = copy.deepcopy(a)
    report = compare(a, b, X)
    assert report.ok, _failing(report)
    assert next(r for r in report.rows if r.module == "conv" and r.kind == "output").max_rel == 0
    with torch.no_grad():
        b.conv.bias += 0.5
    assert compare(a, b, X).first_divergence == "conv"


class _Counting(torch.nn.Module):
    """Buffers a forward updates: a persistent counter and a non-persistent running average."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("average", torch.zeros(2), persistent=False)
        self.register_buffer("fixed", torch.arange(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        self.calls += 1
        self.average.mul_(0.9).add_(0.1 * y.mean((0, 2, 3)).detach())
        return y


@pytest.mark.parametrize("options", [{}, {"train_step": True}, {"dtype": "float64"}])
def test_buffers_a_forward_updates_are_put_back(options: dict) -> None:
    a = _Counting()
    b = copy.deepcopy(a)
    kept = [b.fixed.data_ptr(), b.fixed]
    assert compare(a, b, X, **options).ok
    for model in (a, b):
        assert model.calls.item() == 0 and torch.equal(model.average, torch.zeros(2))
    if "dtype" not in options:  # an unchanged buffer keeps its storage (a user's view of it)
        assert b.fixed.data_ptr() == kept[0] and b.fixed is kept[1]


def test_a_channels_last_weight_stays_channels_last_after_a_cast() -> None:
    a = torch.nn.Sequential(torch.nn.Conv2d(3, 27, 3)).to(memory_format=torch.channels_last)
    b = copy.deepcopy(a)
    strides = a[0].weight.stride()
    assert compare(a, b, X, dtype="float64").ok
    assert a[0].weight.dtype == torch.float32 and a[0].weight.stride() == strides
    assert a[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_structured_shapes_render_and_survive_json() -> None:
    from parity.tables import _show_shape

    assert _show_shape(((2, 4), (2, 2))) == "(2x4, 2x2)"
    assert _show_shape((2, 3, 8, 8)) == "2x3x8x8" and _show_shape(()) == "()" and _show_shape(None) == "-"
    report = compare(*_pair(1.01), X)
    again = Report.from_dict(report.to_dict())
    assert [r.shape_a for r in again.rows] == [r.shape_a for r in report.rows]


class _DropsItsCache(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.register_buffer("cache", torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cache = None  # a registered buffer set to None: gone from named_buffers
        return self.conv(x)


def test_a_buffer_the_forward_drops_does_not_stop_the_rest_being_put_back() -> None:
    """restore raised KeyError for the missing buffer before writing anything, and the
    steps after it in ``parity._borrow.borrow`` never ran: both models stayed float64 and in eval."""
    a, b = _DropsItsCache().train(), _DropsItsCache().train()
    b.load_state_dict(a.state_dict())
    assert compare(a, b, X, dtype="float64").ok
    for model in (a, b):
        assert model.conv.weight.dtype == torch.float32 and model.training and model.conv.training


class _Bf16Table(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.register_buffer("table", torch.arange(4.0).bfloat16(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.table[1].float()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_bfloat16_non_persistent_buffer_is_kept_and_put_back(dtype: str) -> None:
    """Snapshotting it raised numpy's TypeError, naming no key."""
    a = _Bf16Table()
    b = copy.deepcopy(a)
    assert compare(a, b, X, dtype=dtype).ok
    assert a.table.dtype == torch.bfloat16 and torch.equal(a.table.float(), torch.arange(4.0))


class _EvalUpdatingBN(torch.nn.BatchNorm2d):
    """Normalises with its running statistics in eval, as it should, but also moves them
    (a bug: the next eval forward gives other outputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if not self.training:
            with torch.no_grad():
                self.running_mean.mul_(0.5).add_(0.5 * x.mean((0, 2, 3)))
        return y


def _bn_net(bn: type[torch.nn.BatchNorm2d]) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), bn(4), torch.nn.ReLU())


def test_a_buffer_the_eval_forward_changes_on_one_side_only_fails_at_its_owner() -> None:
    """Its outputs agree (it normalised with the old statistics) and the models are put
    back afterwards: nothing showed it."""
    a, b = _bn_net(torch.nn.BatchNorm2d), _bn_net(_EvalUpdatingBN)
    b.load_state_dict(a.state_dict())
    report = compare(a, b, X)
    assert report.first_divergence == "1"
    assert _failing(report) == [("1", "running_mean changed by the eval forward on side b (torch) only")]
    assert torch.equal(b[1].running_mean, torch.zeros(4))  # and put back
    # The same change on both sides is no divergence (a counter both keep).
    b2 = _bn_net(_EvalUpdatingBN)
    b2.load_state_dict(a.state_dict())
    report = compare(b2, b, X)
    assert report.ok, _failing(report)
