"""parity at its edges, on tiny Lucid/torch twins (a conv, a BatchNorm, a pool, a linear
head): models left exactly as found when compare casts, strict transfers into tied or
overlapping destinations, errors in a backward, outputs of another dtype, non-finite or
non-float outputs."""

from __future__ import annotations

import lucid.nn as lnn
import numpy as np
import pytest
import torch

from lucid_inception.frameworks import LucidAdapter
from parity import compare, transfer

X = np.random.default_rng(0).standard_normal((2, 3, 8, 8))


class LucidNet(lnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = lnn.Conv2d(3, 4, 3, padding=1)
        self.bn = lnn.BatchNorm2d(4)
        self.relu = lnn.ReLU()
        self.pool = lnn.AdaptiveAvgPool2d(1)
        self.fc = lnn.Linear(4, 5)

    def forward(self, x):
        y = self.relu(self.bn(self.conv(x)))
        return self.fc(self.pool(y).reshape(x.shape[0], -1))


class TorchNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        y = self.relu(self.bn(self.conv(x)))
        return self.fc(self.pool(y).reshape(x.shape[0], -1))


def twins(dtype: str = "float32") -> tuple[LucidNet, TorchNet]:
    a, b = LucidNet(), TorchNet()
    LucidAdapter.cast(a, dtype)
    b.to(getattr(torch, dtype))
    transfer(a, b)
    return a, b


def torch_pair(dtype: str) -> tuple[TorchNet, TorchNet]:
    a, b = TorchNet().to(getattr(torch, dtype)), TorchNet().to(getattr(torch, dtype))
    b.load_state_dict(a.state_dict())
    return a, b


def _with_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    model(torch.from_numpy(X).to(model.fc.weight.dtype)).sum().backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


# ------------------------------------------------------------- left exactly as found


@pytest.mark.parametrize(
    ("home", "compared", "backward"),
    [("float64", "float32", False), ("float32", "float64", False), ("float32", "float64", True)],
)
def test_a_cast_leaves_gradients_as_found(home: str, compared: str, backward: bool) -> None:
    """torch's ``Module.to`` casts every ``.grad`` as well: a float64 model compared in
    float32 kept float32-rounded gradients, a float32 one float64 gradients."""
    a, b = torch_pair(home)
    grads = _with_grads(a), _with_grads(b)
    report = compare(a, b, X, dtype=compared, backward=backward)
    assert report.ok, report.worst(3)
    for model, before in zip((a, b), grads, strict=True):
        for key, param in model.named_parameters():
            assert param.dtype == getattr(torch, home) and param.grad.dtype == before[key].dtype, key
            assert torch.equal(param.grad, before[key]), key
