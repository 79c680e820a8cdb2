"""The memory format of each side's input (parity.comparison._input_formats): a torch side
on the CPU facing Lucid gets the channels-last order Lucid's convolutions leave their
outputs in, so every pair of outputs is compared in one memory order; a torch model that
raises on it is compared again on a contiguous input."""

from __future__ import annotations

import lucid
import lucid.nn as lnn
import numpy as np
import pytest
import torch

import parity.comparison
from lucid_inception.frameworks import LucidAdapter, TorchAdapter
from lucid_inception.frameworks import lucid_adapter as lucid_adapter_module
from parity import compare, transfer

from .conftest import image
from .test_parity_compare import fresh_pair
from .test_parity_edges import X, torch_pair, twins


def _torch_formats(model: torch.nn.Module) -> list[str]:
    """Spy: the memory format of every input ``model``'s root gets, in order."""
    seen: list[str] = []

    def record(_module: torch.nn.Module, args: tuple) -> None:
        x = args[0]
        seen.append("channels_last" if x.is_contiguous(memory_format=torch.channels_last) else "contiguous")

    model.register_forward_pre_hook(record)
    return seen


def test_a_torch_side_facing_lucid_gets_the_order_of_lucids_convolutions() -> None:
    assert LucidAdapter.conv_memory_format("cpu") == "channels_last"  # lucid-dl 2.9.0 and 2.16.0
    for order in ("ab", "ba"):
        a, b = twins()
        seen = _torch_formats(b)
        models = (a, b) if order == "ab" else (b, a)
        report = compare(*models, X, backward=True, train_step=True)
        # Lucid 2.9.0's gradients are wrong (the broadcast bug); its outputs are not.
        assert all(row.ok for row in report.rows if row.kind in ("output", "bn_batch_stats"))
        assert not [row for row in report.rows if row.kind == "error"]
        assert seen == ["channels_last"] * 2  # the forward with its backward, the train step


def test_a_torch_side_keeps_a_contiguous_input_where_lucid_does_not_reorder(monkeypatch) -> None:
    monkeypatch.setattr(LucidAdapter, "conv_memory_format", staticmethod(lambda device: "contiguous"))
    a, b = twins()
    seen = _torch_formats(b)
    assert compare(a, b, X).ok
    assert seen == ["contiguous"]


def test_two_torch_models_keep_a_contiguous_input() -> None:
    a, b = torch_pair("float32")
    seen_a, seen_b = _torch_formats(a), _torch_formats(b)
    assert compare(a, b, X).ok
    assert seen_a == seen_b == ["contiguous"]


def test_every_output_pair_of_a_faithful_pair_shares_one_memory_order(monkeypatch) -> None:
    """What the format is for: no pair is read in two orders (before it, 525 of the 529
    output pairs of Inception-ResNet-v1 were)."""
    strides: list[tuple[tuple, tuple]] = []
    measure = parity.comparison.max_errors

    def order(array: np.ndarray) -> tuple:  # an axis of size 1 has no place in memory
        return tuple(stride for stride, n in zip(array.strides, array.shape, strict=True) if n > 1)

    def spy(a: np.ndarray, b: np.ndarray):
        strides.append((order(a), order(b)))
        return measure(a, b)

    monkeypatch.setattr(parity.comparison, "max_errors", spy)
    a, b = fresh_pair()
    x = image((1, 3, 75, 75), seed=0, dtype="float32")
    assert compare(a, b, x).ok
    assert compare(b, a, x).ok
    assert len(strides) > 400
    assert [pair for pair in strides if pair[0] != pair[1]] == []


class LucidFlatten(lnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = lnn.Conv2d(3, 4, 3, padding=1)
        self.fc = lnn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.reshape(y.shape[0], -1))


class TorchView(torch.nn.Module):
    """Flattens with ``view``, which a channels-last feature map cannot take."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)
        self.fail = fail

    def forward(self, x):
        y = self.conv(x)
        if self.fail:
            raise RuntimeError("planted")
        return self.fc(y.view(y.shape[0], -1))


def _flatten_twins(fail: bool = False) -> tuple[LucidFlatten, TorchView]:
    a, b = LucidFlatten(), TorchView(fail)
    LucidAdapter.cast(a, "float32")
    transfer(a, b)
    return a, b


def test_a_torch_model_that_cannot_take_channels_last_is_compared_on_a_contiguous_input() -> None:
    a, b = _flatten_twins()
    with pytest.raises(RuntimeError, match="view"):  # the failure the second run is for
        b(TorchAdapter.tensor(X.astype(np.float32), memory_format="channels_last"))
    seen = _torch_formats(b)
    report = compare(a, b, X, backward=True, train_step=True)
    assert not [row for row in report.rows if row.kind == "error"]
    assert all(row.ok for row in report.rows if row.kind == "output")
    # The first compare stops at the forward that raised; the second runs in full.
    assert seen == ["channels_last", "contiguous", "contiguous"]
    assert compare(b, a, X).ok


def test_a_model_that_raises_on_any_input_still_fails_where_it_raised() -> None:
    a, b = _flatten_twins(fail=True)
    seen = _torch_formats(b)
    report = compare(a, b, X)
    assert not report.ok
    errors = [row for row in report.rows if row.kind == "error"]
    assert len(errors) == 1 and "planted" in errors[0].note
    assert seen == ["channels_last", "contiguous"]


def test_a_lucid_model_that_raises_is_not_compared_twice() -> None:
    a, b = twins()

    def broken(x):
        raise RuntimeError("planted")

    a.fc.forward = broken
    seen = _torch_formats(b)
    assert not compare(a, b, X).ok
    assert seen == ["channels_last"]


def test_the_probe_reads_the_layout_of_a_real_convolution(monkeypatch) -> None:
    conv = lnn.Conv2d(3, 5, 3)
    out = conv(lucid.Tensor(np.ones((2, 3, 9, 7), np.float32))).data
    real = "channels_last" if out.strides[1] < out.strides[3] else "contiguous"
    monkeypatch.setattr(lucid_adapter_module, "_CONV_MEMORY_FORMATS", {})
    assert LucidAdapter.conv_memory_format("cpu") == real


def test_a_probe_that_cannot_run_means_contiguous(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no convolutions here")

    monkeypatch.setattr(lucid.nn.functional, "conv2d", broken)
    monkeypatch.setattr(lucid_adapter_module, "_CONV_MEMORY_FORMATS", {})
    assert LucidAdapter.conv_memory_format("cpu") == "contiguous"


def test_memory_formats_the_adapters_cannot_make_are_refused() -> None:
    x = np.zeros((1, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="no memory format 'channels_first'"):
        TorchAdapter.tensor(x, memory_format="channels_first")
    with pytest.raises(ValueError, match="needs 4 dimensions"):
        TorchAdapter.tensor(np.zeros((2, 3), np.float32), memory_format="channels_last")
    with pytest.raises(ValueError, match="Lucid tensors have no memory format 'channels_last'"):
        LucidAdapter.tensor(x, memory_format="channels_last")
    t = TorchAdapter.tensor(x, memory_format="channels_last", requires_grad=True)
    assert t.is_contiguous(memory_format=torch.channels_last) and t.is_leaf and t.requires_grad
    np.testing.assert_array_equal(t.detach().numpy(), x)
