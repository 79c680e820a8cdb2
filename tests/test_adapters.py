"""Adapter shortcuts that must answer exactly what the framework would."""

from __future__ import annotations

import lucid
import lucid.nn as lnn
import mlx.core as mx
import numpy as np
import pytest
import torch

import lucid_inception
from lucid_inception.frameworks import LucidAdapter, TorchAdapter, adapter_for, module_that_raised


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


# ----- Lucid's 'gpu' device: Tensor.data is an MLX array there (MLX's CPU build runs it)


@pytest.fixture(scope="module")
def gpu_model() -> lnn.Module:
    model = lucid_inception.build("inception_resnet_v1", num_classes=10)
    model.to("gpu")
    return model


def test_lucid_gpu_model_reports_numpy_dtypes(gpu_model: lnn.Module) -> None:
    assert set(LucidAdapter.dtypes(gpu_model).values()) == {np.dtype("float32")}
    assert {dtype for _, dtype in LucidAdapter.layout(gpu_model).values()} == {np.dtype("float32")}


def test_lucid_gpu_model_loads_a_cpu_state_dict() -> None:
    """``model.load_state_dict(lucid.load(path))`` after ``model.to("gpu")`` (README)."""
    source = lucid_inception.build("inception_resnet_v1", num_classes=10)
    state = source.state_dict()
    state["fc.bias"] = np.arange(10, dtype=np.float64)  # cast to the model's float32
    model = lucid_inception.build("inception_resnet_v1", num_classes=10)
    model.to("gpu")
    model.load_state_dict(state)
    loaded = LucidAdapter.state(model)
    assert list(loaded) == list(state) and model.device == "gpu"
    assert all(np.array_equal(loaded[k], state[k]) for k in state)
    assert loaded["fc.bias"].dtype == np.float32 and isinstance(model.fc.bias.data, mx.array)


def test_lucid_gpu_model_casts_and_hooks_inputs() -> None:
    model = lucid_inception.build("inception_resnet_v1", num_classes=10)
    model.to("gpu")
    LucidAdapter.cast(model, "float16")
    assert set(LucidAdapter.dtypes(model).values()) == {np.dtype("float16")}
    relu = model.stem.conv[0].relu
    seen: list[np.dtype] = []

    def zeros(array: np.ndarray) -> np.ndarray:
        seen.append(array.dtype)
        return np.zeros_like(array, dtype=np.float64)  # run on the module's own dtype

    remove = LucidAdapter.add_input_hook(relu, zeros)
    try:
        out = relu(lucid.Tensor(np.ones((1, 2), np.float16), device="gpu"))
    finally:
        remove()
    assert seen == [np.dtype("float16")] and LucidAdapter.to_numpy(out).dtype == np.float16
    LucidAdapter.set_parameter_grads(model, {"fc.bias": np.ones(10, np.float16)})  # put back as given
    assert LucidAdapter.grad(model.fc.bias).dtype == np.float16


@pytest.mark.parametrize("method", ["layout", "dtypes", "load_state"])
def test_torch_tensors_without_a_numpy_dtype_are_a_clear_type_error(method: str) -> None:
    twin = torch.nn.Sequential(torch.nn.Linear(2, 3)).to(torch.bfloat16)
    args = ({"0.weight": np.zeros((3, 2), np.float32), "0.bias": np.zeros(3, np.float32)},)
    call = getattr(TorchAdapter, method)
    with pytest.raises(TypeError, match=r"0.weight is bfloat16, which numpy has no dtype for; .*float32"):
        call(twin, *args) if method == "load_state" else call(twin)
