"""Lucid building blocks shared by the three networks.

``ConvBNReLU2d`` is Lucid's own fused block (conv with bias, BatchNorm eps 1e-5 and
momentum 0.1, ReLU; attribute names ``conv``, ``bn``, ``relu``) with one change: its
BatchNorm buffers are float32. Lucid 2.x creates them as float64, which silently turns
every activation after the first BatchNorm into float64 (about 1.8x slower).
"""

from __future__ import annotations

import lucid
import lucid.nn as nn
import mlx.core as mx
import numpy as np
from lucid.nn.modules.norm import _BatchNorm

from lucid_inception import _checks
from lucid_inception.frameworks.lucid_adapter import LucidAdapter, numpy_dtype

__all__ = ["ConvBNReLU2d", "InceptionClassifier", "ResidualBlock"]


def _as_model_dtype(x: lucid.Tensor, dtype: str) -> lucid.Tensor:
    """``x``'s values as a new tensor of ``dtype`` (a name, e.g. ``"float32"``); ``x`` is left
    as it is. Lucid has no differentiable cast (``Tensor.astype`` rewrites the tensor in
    place), so an input whose gradient is wanted must come in the model's dtype."""
    if x.requires_grad and lucid.grad_enabled():
        raise TypeError(
            f"expected an input of the model's dtype {dtype}, got {LucidAdapter.dtype_name(x)} "
            f"with requires_grad: casting it would cut its gradient; create it as {dtype}"
        )
    data = x.data.astype(getattr(mx, dtype)) if x.is_gpu() else x.data.astype(dtype)
    return lucid.Tensor(data, device=x.device)


class ConvBNReLU2d(nn.ConvBNReLU2d):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for buffer in self.bn.buffers():
            buffer.astype(np.float32)  # in place; also updates Lucid's separate Tensor.dtype


class ResidualBlock(nn.Module):
    """Shared forward of Fig. 10-13 and 16-19 with the scaling of Fig. 20.

    ``y = ReLU(x + scale * conv_linear(concat(branches(x))))``; subclasses define
    ``branches()``, ``conv_linear`` (a plain 1x1 conv back to the input width) and ``relu``.
    """

    scale: float

    def branches(self) -> list[nn.Module]:
        raise NotImplementedError

    def forward(self, x: lucid.Tensor) -> lucid.Tensor:
        mixed = lucid.concatenate([branch(x) for branch in self.branches()], axis=1)
        return self.relu(x + self.scale * self.conv_linear(mixed))

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class InceptionClassifier(nn.Module):
    """Input checks and the head shared by all three networks (Fig. 9 and 15).

    Head: global average pool -> Dropout(p=dropout) -> Linear(width, num_classes); the
    paper keeps 0.8, i.e. Lucid ``Dropout(p=0.2)``. Subclasses build their trunk first and
    then call ``build_head`` so that the module order (and so the state-dict key order)
    is upstream's: trunk, avgpool, dropout, fc.
    """

    def __init__(self, num_classes: int, in_channels: int, dropout: float) -> None:
        super().__init__()
        self.num_classes = _checks.check_num_classes(num_classes)
        self.in_channels = _checks.check_in_channels(in_channels)
        self.drop_rate = _checks.check_dropout(dropout)

    def build_head(self, width: int) -> None:
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=self.drop_rate)
        self.fc = nn.Linear(width, self.num_classes)

    def features(self, x: lucid.Tensor) -> lucid.Tensor:
        raise NotImplementedError

    def forward(self, x: lucid.Tensor) -> lucid.Tensor:
        """Logits of ``x``, (N, in_channels, H, W). A floating input of another dtype than the
        model's (Lucid's factories make float64) is cast to the model's dtype, so the output
        is the model's dtype; not one that requires grad (Lucid has no differentiable cast).
        A non-floating input is a TypeError."""
        if not isinstance(x, lucid.Tensor):
            raise TypeError(f"expected a lucid.Tensor input, got {type(x).__name__}")
        _checks.check_input_shape(x.shape, self.in_channels)
        _checks.check_train_batch(x.shape, self._batchnorm_training)
        dtype, model_dtype = LucidAdapter.dtype_name(x), self.dtype_name()
        if dtype != model_dtype:  # Lucid's factories make float64: compute in the model's dtype
            _checks.check_floating_input(dtype, "float" in dtype, model_dtype)
            x = _as_model_dtype(x, model_dtype)
        x = self.features(x)  # N x width x 8 x 8 at 299
        x = self.avgpool(x)  # N x width x 1 x 1
        x = x.reshape(x.shape[0], -1)  # N x width
        x = self.dropout(x)
        return self.fc(x)  # N x num_classes

    def _batchnorm_training(self) -> bool:
        """Whether a BatchNorm normalises with batch statistics: Lucid's ``batch_norm`` does so
        in train mode or when it has no running statistics."""
        return any(
            m.training or m.running_mean is None or m.running_var is None
            for m in self.modules()
            if isinstance(m, _BatchNorm)
        )

    def dtype_name(self) -> str:
        """The model's dtype, e.g. ``"float32"``, read from its first parameter (the one the
        input meets; every tensor of a model shares it unless cast one by one)."""
        return numpy_dtype(next(self.parameters()).data).name

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> None:
        """Strict, checked, atomic load: see ``lucid_inception.checkpoint``."""
        if not strict:
            raise ValueError(
                "lucid_inception models load strictly; to load part of a checkpoint, "
                "filter the dict yourself and build the rest"
            )
        from lucid_inception.checkpoint import load_checkpoint

        load_checkpoint(self, state_dict)
