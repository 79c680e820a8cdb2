"""Inception-v4 (Szegedy et al. 2016, Fig. 3-9),
in torch: the twin of ``lucid_inception.inception_v4``.

Module and attribute names are those of upstream ``lucid.models.imgclf.inception``
(lucid-dl 2.9.0), so upstream state dicts keep their keys. Differences from upstream:
the stem runs ``branch2_right`` (Fig. 3), the B block's long branch starts with a 1x1 to
192 channels (Fig. 5), the head keeps 0.8 (``Dropout(p=0.2)``), BatchNorm buffers are
float32. Shapes in comments are for a 299x299 input.
"""

from __future__ import annotations

import torch
from torch import nn

from lucid_inception.twins.layers import ConvBNReLU2d, InceptionClassifier

__all__ = [
    "InceptionA",
    "InceptionB",
    "InceptionC",
    "InceptionStem",
    "InceptionV4",
    "ReductionA",
    "ReductionB",
    "inception_v4",
]


class InceptionStem(nn.Module):
    """Fig. 3: 3 x 299 x 299 -> 384 x 35 x 35 (also the stem of Inception-ResNet-v2)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            ConvBNReLU2d(in_channels, 32, kernel_size=3, stride=2),  # 32 x 149 x 149
            ConvBNReLU2d(32, 32, kernel_size=3),  # 32 x 147 x 147
            ConvBNReLU2d(32, 64, kernel_size=3, padding=1),  # 64 x 147 x 147
        )
        self.branch1_pool = nn.MaxPool2d(kernel_size=3, stride=2)  # 64 x 73 x 73
        self.branch1_conv = ConvBNReLU2d(64, 96, kernel_size=3, stride=2)  # 96 x 73 x 73
        # 64 + 96 = 160
        self.branch2_left = nn.Sequential(
            ConvBNReLU2d(160, 64, kernel_size=1),
            ConvBNReLU2d(64, 96, kernel_size=3),  # 96 x 71 x 71
        )
        self.branch2_right = nn.Sequential(
            ConvBNReLU2d(160, 64, kernel_size=1),
            ConvBNReLU2d(64, 64, kernel_size=(7, 1), padding=(3, 0)),
            ConvBNReLU2d(64, 64, kernel_size=(1, 7), padding=(0, 3)),
            ConvBNReLU2d(64, 96, kernel_size=3),  # 96 x 71 x 71
        )
        # 96 + 96 = 192. Fig. 3 draws this conv without a stride; 71 -> 35 needs stride 2.
        self.branch3_conv = ConvBNReLU2d(192, 192, kernel_size=3, stride=2)  # 192 x 35 x 35
        self.branch3_pool = nn.MaxPool2d(kernel_size=3, stride=2)  # 192 x 35 x 35

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = torch.cat([self.branch1_pool(x), self.branch1_conv(x)], dim=1)  # 160
        x = torch.cat([self.branch2_left(x), self.branch2_right(x)], dim=1)  # 192
        # Pool before conv, as upstream: Fig. 3 draws the conv on the left, but the order
        # is only a permutation of the next layer's input channels, and upstream
        # checkpoints depend on it.
        return torch.cat([self.branch3_pool(x), self.branch3_conv(x)], dim=1)  # 384


class InceptionA(nn.Module):
    """Fig. 4, 35 x 35 grid: 384 -> 96 + 96 + 96 + 96 = 384."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(
            nn.AvgPool2d(kernel_size=3, stride=1, padding=1, count_include_pad=True),
            ConvBNReLU2d(in_channels, 96, kernel_size=1),
        )
        self.branch2 = ConvBNReLU2d(in_channels, 96, kernel_size=1)
        self.branch3 = nn.Sequential(
            ConvBNReLU2d(in_channels, 64, kernel_size=1),
            ConvBNReLU2d(64, 96, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            ConvBNReLU2d(in_channels, 64, kernel_size=1),
            ConvBNReLU2d(64, 96, kernel_size=3, padding=1),
            ConvBNReLU2d(96, 96, kernel_size=3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class ReductionA(nn.Module):
    """Fig. 7, 35 x 35 -> 17 x 17: in -> in + n + m, with (k, l, m, n) from Table 1."""

    def __init__(self, in_channels: int, k: int, l: int, m: int, n: int) -> None:  # noqa: E741
        super().__init__()
        self.out_channels = in_channels + n + m
        self.branch1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.branch2 = ConvBNReLU2d(in_channels, n, kernel_size=3, stride=2)
        self.branch3 = nn.Sequential(
            ConvBNReLU2d(in_channels, k, kernel_size=1),
            ConvBNReLU2d(k, l, kernel_size=3, padding=1),
            ConvBNReLU2d(l, m, kernel_size=3, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)


class InceptionB(nn.Module):
    """Fig. 5, 17 x 17 grid: 1024 -> 128 + 384 + 256 + 256 = 1024."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(
            nn.AvgPool2d(kernel_size=3, stride=1, padding=1, count_include_pad=True),
            ConvBNReLU2d(in_channels, 128, kernel_size=1),
        )
        self.branch2 = ConvBNReLU2d(in_channels, 384, kernel_size=1)
        self.branch3 = nn.Sequential(
            ConvBNReLU2d(in_channels, 192, kernel_size=1),
            ConvBNReLU2d(192, 224, kernel_size=(1, 7), padding=(0, 3)),
            ConvBNReLU2d(224, 256, kernel_size=(7, 1), padding=(3, 0)),
        )
        # Fig. 5 starts the long branch with a 1x1 to 192 (upstream: 64).
        self.branch4 = nn.Sequential(
            ConvBNReLU2d(in_channels, 192, kernel_size=1),
            ConvBNReLU2d(192, 192, kernel_size=(1, 7), padding=(0, 3)),
            ConvBNReLU2d(192, 224, kernel_size=(7, 1), padding=(3, 0)),
            ConvBNReLU2d(224, 224, kernel_size=(1, 7), padding=(0, 3)),
            ConvBNReLU2d(224, 256, kernel_size=(7, 1), padding=(3, 0)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class ReductionB(nn.Module):
    """Fig. 8, 17 x 17 -> 8 x 8: 1024 -> 1024 + 192 + 320 = 1536."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.out_channels = in_channels + 192 + 320
        self.branch1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.branch2 = nn.Sequential(
            ConvBNReLU2d(in_channels, 192, kernel_size=1),
            ConvBNReLU2d(192, 192, kernel_size=3, stride=2),
        )
        self.branch3 = nn.Sequential(
            ConvBNReLU2d(in_channels, 256, kernel_size=1),
            ConvBNReLU2d(256, 256, kernel_size=(1, 7), padding=(0, 3)),
            ConvBNReLU2d(256, 320, kernel_size=(7, 1), padding=(3, 0)),
            ConvBNReLU2d(320, 320, kernel_size=3, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)


class InceptionC(nn.Module):
    """Fig. 6, 8 x 8 grid: 1536 -> 256 + 256 + (256 + 256) + (256 + 256) = 1536."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(
            nn.AvgPool2d(kernel_size=3, stride=1, padding=1, count_include_pad=True),
            ConvBNReLU2d(in_channels, 256, kernel_size=1),
        )
        self.branch2 = ConvBNReLU2d(in_channels, 256, kernel_size=1)
        self.branch3 = ConvBNReLU2d(in_channels, 384, kernel_size=1)
        self.branch3_left = ConvBNReLU2d(384, 256, kernel_size=(1, 3), padding=(0, 1))
        self.branch3_right = ConvBNReLU2d(384, 256, kernel_size=(3, 1), padding=(1, 0))
        self.branch4 = nn.Sequential(
            ConvBNReLU2d(in_channels, 384, kernel_size=1),
            ConvBNReLU2d(384, 448, kernel_size=(1, 3), padding=(0, 1)),
            ConvBNReLU2d(448, 512, kernel_size=(3, 1), padding=(1, 0)),
        )
        self.branch4_left = ConvBNReLU2d(512, 256, kernel_size=(3, 1), padding=(1, 0))
        self.branch4_right = ConvBNReLU2d(512, 256, kernel_size=(1, 3), padding=(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.branch1(x)
        x2 = self.branch2(x)
        x3 = self.branch3(x)
        x3l = self.branch3_left(x3)
        x3r = self.branch3_right(x3)
        x4 = self.branch4(x)
        x4l = self.branch4_left(x4)
        x4r = self.branch4_right(x4)
        return torch.cat([x1, x2, x3l, x3r, x4l, x4r], dim=1)


class InceptionV4(InceptionClassifier):
    """Fig. 9: stem, 4 x A, Reduction-A, 7 x B, Reduction-B, 3 x C, head on 1536."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.2) -> None:
        super().__init__(num_classes, in_channels, dropout)
        # Table 1, Inception-v4: k, l, m, n = 192, 224, 256, 384; 384 + 384 + 256 = 1024
        reduction_a = ReductionA(384, k=192, l=224, m=256, n=384)  # 1024 x 17 x 17
        reduction_b = ReductionB(reduction_a.out_channels)  # 1536 x 8 x 8
        self.conv = nn.Sequential(
            InceptionStem(self.in_channels),  # 384 x 35 x 35
            *[InceptionA(384) for _ in range(4)],
            reduction_a,
            *[InceptionB(reduction_a.out_channels) for _ in range(7)],
            reduction_b,
            *[InceptionC(reduction_b.out_channels) for _ in range(3)],
        )
        self.build_head(reduction_b.out_channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def inception_v4(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.2) -> InceptionV4:
    """Corrected Inception-v4: 42,711,400 parameters at 1000 classes."""
    return InceptionV4(num_classes=num_classes, in_channels=in_channels, dropout=dropout)
