"""Adapter shortcuts that must answer exactly what the framework would."""

from __future__ import annotations

import lucid
import lucid.nn as lnn
import pytest
import torch

import lucid_inception
from lucid_inception.frameworks import LucidAdapter, adapter_for, module_that_raised


def _same_as_state_dict(model: lnn.Module) -> None:
    fast, lucids = LucidAdapter.tensors(model), model.state_dict(keep_vars=True)
    assert list(fast) == list(lucids)
    assert all(fast[key] is lucids[key] for key in fast)


@pytest.mark.parametrize("name", lucid_inception.MODEL_NAMES)
def test_lucid_tensors_is_state_dict_keep_vars(name: str) -> None:
    _same_as_state_dict(lucid_inception.build(name, "lucid"))


class _Leaf(lnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = lnn.Parameter(lucid.zeros((2,)))
        self.register_buffer("count", lucid.zeros((1,)))


class _Passing(lnn.Module):
    """Drops the keys 'weight' and 'inner' wherever Lucid's walk meets them: Lucid compares
    full keys, so only unprefixed (root) keys can match. (Set on the instance: in 2.9.0
    ``Module.__init__`` shadows what ``@nn.set_state_dict_pass_attr`` puts on the class.)"""

    def __init__(self) -> None:
        super().__init__()
        self.inner = _Leaf()
        self._state_dict_pass_attr = {"weight", "inner"}


class _Root(lnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = lnn.Parameter(lucid.zeros((3,)))
        self.bias = lnn.Parameter(lucid.zeros((3,)))
        self.first = _Leaf()
        self.passing = _Passing()
        self.last = _Leaf()


def test_lucid_tensors_drops_what_state_dict_drops() -> None:
    root = _Root()
    _same_as_state_dict(root)
    assert "weight" not in LucidAdapter.tensors(root)  # dropped by a child's pass list
    assert "passing.inner.weight" in LucidAdapter.tensors(root)


def test_lucid_tensors_defers_to_an_overridden_state_dict() -> None:
    class Custom(_Leaf):
        def state_dict(self, destination=None, prefix="", keep_vars=False):  # noqa: ANN001
            out = super().state_dict(destination, prefix, keep_vars)
            out.pop(prefix + "count")
            return out

    root = _Root()
    root.last = Custom()
    _same_as_state_dict(root)
    assert "last.count" not in LucidAdapter.tensors(root)


@pytest.mark.parametrize("framework", ["lucid", "torch"])
def test_module_that_raised_is_the_innermost_module_on_the_traceback(framework: str) -> None:
    model = lucid_inception.build("inception_v4", framework)
    adapter = adapter_for(model)
    adapter.set_training(model, False)

    def broken(x: object) -> object:
        raise RuntimeError("planted")

    model.conv[4].branch3[1].relu.forward = broken
    x = adapter.tensor(torch.zeros((1, 3, 75, 75)).numpy(), device="cpu")
    with adapter.no_grad(), pytest.raises(RuntimeError) as caught:
        model(x)
    assert module_that_raised(model, caught.value) == "conv.4.branch3.1.relu"


def test_module_that_raised_ignores_a_child_whose_error_was_caught() -> None:
    class Guarded(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.child = torch.nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            try:
                self.child(None)  # raises inside the child; caught here
            except TypeError:
                pass
            raise ValueError("after the child returned")

    outer = torch.nn.Sequential(Guarded())
    with pytest.raises(ValueError) as caught:
        outer(torch.zeros(1))
    assert module_that_raised(outer, caught.value) == "0"
    # An error raised outside every module names the root.
    assert module_that_raised(outer, ValueError("no traceback")) == ""
