"""Torch twins of ``lucid_inception.layers``: the same names and the same function.

Where torch itself differs, so do the twins: in train mode BatchNorm's running_var tracks
the unbiased batch variance (Lucid's the biased one; the outputs agree), and ``num_batches_tracked``
is a buffer Lucid lacks (``TorchAdapter`` leaves it out of the state).

Lucid's ``nn.ConvBNReLU2d`` is conv (with bias) -> BatchNorm2d (eps 1e-5, momentum 0.1)
-> ReLU with attributes ``conv``, ``bn``, ``relu``; this twin keeps those names so the
state-dict keys match.
"""

from __future__ import annotations

import torch
from torch import nn

from lucid_inception import _checks

__all__ = ["ConvBNReLU2d", "InceptionClassifier", "ResidualBlock"]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")  # "float32", as numpy names it


# The input dtypes autocast casts for a convolution (not float64).
_AUTOCAST_INPUTS = (torch.float16, torch.bfloat16, torch.float32)


def _autocasting(x: torch.Tensor) -> bool:
    """Whether autocast is on for ``x``'s device type; asking about a type autocast does not
    know (e.g. ``meta``) is a RuntimeError, hence the availability test first."""
    device_type = x.device.type
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


class ConvBNReLU2d(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=True)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class ResidualBlock(nn.Module):
    """``y = ReLU(x + scale * conv_linear(mixed(x)))`` (Fig. 10-13, 16-20); ``mixed(x)``,
    each subclass's, is the concat of its branches, written out branch by branch (Lucid's
    blocks list them in ``branches()``): ``torch.jit.script`` compiles no loop over
    modules of different types. ``scale`` has no class-level annotation for the same reason
    (TorchScript infers the attribute's type from its value)."""

    def mixed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.scale * self.conv_linear(self.mixed(x)))

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class InceptionClassifier(nn.Module):
    """Input checks and the head: global average pool -> Dropout(p) -> Linear."""

    def __init__(self, num_classes: int, in_channels: int, dropout: float) -> None:
        super().__init__()
        self.num_classes = _checks.check_num_classes(num_classes)
        self.in_channels = _checks.check_in_channels(in_channels)
        self.drop_rate = _checks.check_dropout(dropout)

    def build_head(self, width: int) -> None:
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=self.drop_rate)
        self.fc = nn.Linear(width, self.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The input checks are Python: a scripted model (torch.jit.script) leaves them out
        # and gets torch's own errors, as torchvision's models do.
        if not torch.jit.is_scripting():
            self._check_eager_input(x)
        x = self.features(x)  # N x width x 8 x 8 at 299
        x = self.avgpool(x)  # N x width x 1 x 1
        x = x.reshape(x.shape[0], -1)  # N x width
        x = self.dropout(x)
        return self.fc(x)  # N x num_classes

    @torch.jit.unused
    def _check_eager_input(self, x: torch.Tensor) -> None:
        # A symbolic trace (torch.fx, which torchvision's feature extraction uses) runs the
        # forward on a Proxy: no shape or dtype to check, and the graph holds no checks.
        if not isinstance(x, torch.fx.Proxy):
            self._check_input(x)

    def _check_input(self, x: object) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor input, got {type(x).__name__}")
        _checks.check_input_shape(x.shape, self.in_channels)
        _checks.check_train_batch(x.shape, self._batchnorm_training)
        dtype, floating, model_dtype = _dtype_name(x.dtype), x.dtype.is_floating_point, self.dtype_name()
        if _autocasting(x) and x.dtype in _AUTOCAST_INPUTS:
            # torch's rule under autocast: the first conv casts a float16, bfloat16 or float32
            # input to the autocast dtype (float64 it leaves alone: torch would then fail
            # deep inside that conv, so it gets the plain rule below)
            _checks.check_floating_input(dtype, floating, model_dtype)
        else:
            _checks.check_input_dtype(dtype, floating, model_dtype)

    def _batchnorm_training(self) -> bool:
        """Whether a BatchNorm normalises with batch statistics (train mode, or no running ones)."""
        return any(
            m.training or m.running_mean is None
            for m in self.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        )

    def dtype_name(self) -> str:
        """The model's dtype, e.g. ``"float32"``, read from its first parameter."""
        return _dtype_name(next(self.parameters()).dtype)
