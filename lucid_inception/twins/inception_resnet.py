"""Inception-ResNet-v1 and -v2 (Szegedy et al. 2016, Fig. 10-20),
in torch: the twin of ``lucid_inception.inception_resnet``.

Module and attribute names are those of upstream ``lucid.models.imgclf.inception_res``
(lucid-dl 2.9.0), so upstream state dicts keep their keys. Differences from upstream:
every residual block scales its branch sum (Fig. 20), the v2 stem runs ``branch2_right``,
the head keeps 0.8 (``Dropout(p=0.2)``), BatchNorm buffers are float32, and there is no
per-version configuration: each block is its own class with the paper's widths.
Shapes in comments are for a 299x299 input.
"""

from __future__ import annotations

import torch
from torch import nn

from lucid_inception import _checks
from lucid_inception.twins.inception_v4 import InceptionStem, ReductionA
from lucid_inception.twins.layers import ConvBNReLU2d, InceptionClassifier, ResidualBlock

__all__ = [
    "InceptionResNetV1",
    "InceptionResNetV2",
    "ResNetStem",
    "ResNetV1BlockA",
    "ResNetV1BlockB",
    "ResNetV1BlockC",
    "ResNetV1ReductionB",
    "ResNetV2BlockA",
    "ResNetV2BlockB",
    "ResNetV2BlockC",
    "ResNetV2ReductionB",
    "inception_resnet_v1",
    "inception_resnet_v2",
]


class ResNetStem(nn.Module):
    """Fig. 14, the Inception-ResNet-v1 stem: 3 x 299 x 299 -> 256 x 35 x 35."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            ConvBNReLU2d(in_channels, 32, kernel_size=3, stride=2),  # 32 x 149 x 149
            ConvBNReLU2d(32, 32, kernel_size=3),  # 32 x 147 x 147
            ConvBNReLU2d(32, 64, kernel_size=3, padding=1),  # 64 x 147 x 147
            nn.MaxPool2d(kernel_size=3, stride=2),  # 64 x 73 x 73
            ConvBNReLU2d(64, 80, kernel_size=1),  # 80 x 73 x 73
            ConvBNReLU2d(80, 192, kernel_size=3),  # 192 x 71 x 71
            ConvBNReLU2d(192, 256, kernel_size=3, stride=2),  # 256 x 35 x 35
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ResNetV1BlockA(ResidualBlock):
    """Fig. 10, 35 x 35: concat 32 + 32 + 32 = 96, linear 1x1 back to 256."""

    def __init__(self, in_channels: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch1 = ConvBNReLU2d(in_channels, 32, kernel_size=1)
        self.branch2 = nn.Sequential(
            ConvBNReLU2d(in_channels, 32, kernel_size=1),
            ConvBNReLU2d(32, 32, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            ConvBNReLU2d(in_channels, 32, kernel_size=1),
            ConvBNReLU2d(32, 32, kernel_size=3, padding=1),
            ConvBNReLU2d(32, 32, kernel_size=3, padding=1),
        )
        self.conv_linear = nn.Conv2d(32 + 32 + 32, in_channels, kernel_size=1)
        self.relu = nn.ReLU()

    def mixed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)


class ResNetV2BlockA(ResidualBlock):
    """Fig. 16, 35 x 35: concat 32 + 32 + 64 = 128, linear 1x1 back to 384."""

    def __init__(self, in_channels: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch1 = ConvBNReLU2d(in_channels, 32, kernel_size=1)
        self.branch2 = nn.Sequential(
            ConvBNReLU2d(in_channels, 32, kernel_size=1),
            ConvBNReLU2d(32, 32, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            ConvBNReLU2d(in_channels, 32, kernel_size=1),
            ConvBNReLU2d(32, 48, kernel_size=3, padding=1),
            ConvBNReLU2d(48, 64, kernel_size=3, padding=1),
        )
        self.conv_linear = nn.Conv2d(32 + 32 + 64, in_channels, kernel_size=1)
        self.relu = nn.ReLU()

    def mixed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)


class ResNetV1BlockB(ResidualBlock):
    """Fig. 11, 17 x 17: concat 128 + 128 = 256, linear 1x1 back to 896."""

    def __init__(self, in_channels: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch1 = ConvBNReLU2d(in_channels, 128, kernel_size=1)
        self.branch2 = nn.Sequential(
            ConvBNReLU2d(in_channels, 128, kernel_size=1),
            ConvBNReLU2d(128, 128, kernel_size=(1, 7), padding=(0, 3)),
            ConvBNReLU2d(128, 128, kernel_size=(7, 1), padding=(3, 0)),
        )
        self.conv_linear = nn.Conv2d(128 + 128, in_channels, kernel_size=1)
        self.relu = nn.ReLU()

    def mixed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x)], dim=1)


class ResNetV2BlockB(ResidualBlock):
    """Fig. 17, 17 x 17: concat 192 + 192 = 384, linear 1x1 back to 1152.

    Fig. 17 labels the linear conv 1154; Reduction-A gives 384 + 384 + 384 = 1152 and the
    residual add needs the input width, so it is 1152.
    """

    def __init__(self, in_channels: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch1 = ConvBNReLU2d(in_channels, 192, kernel_size=1)
        self.branch2 = nn.Sequential(
            ConvBNReLU2d(in_channels, 128, kernel_size=1),
            ConvBNReLU2d(128, 160, kernel_size=(1, 7), padding=(0, 3)),
            ConvBNReLU2d(160, 192, kernel_size=(7, 1), padding=(3, 0)),
        )
        self.conv_linear = nn.Conv2d(192 + 192, in_channels, kernel_size=1)
        self.relu = nn.ReLU()

    def mixed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x)], dim=1)


class ResNetV1BlockC(ResidualBlock):
    """Fig. 13, 8 x 8: concat 192 + 192 = 384, linear 1x1 back to 1792."""

    def __init__(self, in_channels: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch1 = ConvBNReLU2d(in_channels, 192, kernel_size=1)
        self.branch2 = nn.Sequential(
            ConvBNReLU2d(in_channels, 192, kernel_size=1),
            ConvBNReLU2d(192, 192, kernel_size=(1, 3), padding=(0, 1)),
            ConvBNReLU2d(192, 192, kernel_size=(3, 1), padding=(1, 0)),
        )
        self.conv_linear = nn.Conv2d(192 + 192, in_channels, kernel_size=1)
        self.relu = nn.ReLU()

    def mixed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x)], dim=1)


class ResNetV2BlockC(ResidualBlock):
    """Fig. 19, 8 x 8: concat 192 + 256 = 448, linear 1x1 back to the input width.

    Fig. 19 labels the linear conv 2048; Reduction-B gives 2144 and the residual add needs
    the input width, so the width comes from the caller (2144), never from a constant.
    """

    def __init__(self, in_channels: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch1 = ConvBNReLU2d(in_channels, 192, kernel_size=1)
        self.branch2 = nn.Sequential(
            ConvBNReLU2d(in_channels, 192, kernel_size=1),
            ConvBNReLU2d(192, 224, kernel_size=(1, 3), padding=(0, 1)),
            ConvBNReLU2d(224, 256, kernel_size=(3, 1), padding=(1, 0)),
        )
        self.conv_linear = nn.Conv2d(192 + 256, in_channels, kernel_size=1)
        self.relu = nn.ReLU()

    def mixed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x)], dim=1)


class _ResNetReductionB(nn.Module):
    """Fig. 12 / 18, 17 x 17 -> 8 x 8: maxpool ; 1x1 256 -> 3x3/2 384 ; 1x1 256 -> 3x3/2 b3 ;
    1x1 256 -> 3x3 b4_mid -> 3x3/2 b4_out."""

    def __init__(self, in_channels: int, b3: int, b4_mid: int, b4_out: int) -> None:
        super().__init__()
        self.out_channels = in_channels + 384 + b3 + b4_out
        self.branch1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.branch2 = nn.Sequential(
            ConvBNReLU2d(in_channels, 256, kernel_size=1),
            ConvBNReLU2d(256, 384, kernel_size=3, stride=2),
        )
        self.branch3 = nn.Sequential(
            ConvBNReLU2d(in_channels, 256, kernel_size=1),
            ConvBNReLU2d(256, b3, kernel_size=3, stride=2),
        )
        self.branch4 = nn.Sequential(
            ConvBNReLU2d(in_channels, 256, kernel_size=1),
            ConvBNReLU2d(256, b4_mid, kernel_size=3, padding=1),
            ConvBNReLU2d(b4_mid, b4_out, kernel_size=3, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class ResNetV1ReductionB(_ResNetReductionB):
    """Fig. 12: 896 -> 896 + 384 + 256 + 256 = 1792."""

    def __init__(self, in_channels: int) -> None:
        super().__init__(in_channels, b3=256, b4_mid=256, b4_out=256)


class ResNetV2ReductionB(_ResNetReductionB):
    """Fig. 18: 1152 -> 1152 + 384 + 288 + 320 = 2144."""

    def __init__(self, in_channels: int) -> None:
        super().__init__(in_channels, b3=288, b4_mid=288, b4_out=320)


class InceptionResNetV1(InceptionClassifier):
    """Fig. 15 with the v1 blocks: stem (Fig. 14), 5 x A, Reduction-A, 10 x B,
    Reduction-B, 5 x C, head on 1792."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.2,
        scale: float | tuple[float, float, float] = 0.2,
    ) -> None:
        super().__init__(num_classes, in_channels, dropout)
        scale_a, scale_b, scale_c = _checks.resolve_scales(scale)
        self.stem = ResNetStem(self.in_channels)  # 256 x 35 x 35
        # Table 1, Inception-ResNet-v1: k, l, m, n = 192, 192, 256, 384; 256 + 384 + 256 = 896
        reduction_a = ReductionA(256, k=192, l=192, m=256, n=384)  # 896 x 17 x 17
        reduction_b = ResNetV1ReductionB(reduction_a.out_channels)  # 1792 x 8 x 8
        self.conv = nn.Sequential(
            *[ResNetV1BlockA(256, scale_a) for _ in range(5)],
            reduction_a,
            *[ResNetV1BlockB(reduction_a.out_channels, scale_b) for _ in range(10)],
            reduction_b,
            *[ResNetV1BlockC(reduction_b.out_channels, scale_c) for _ in range(5)],
        )
        self.build_head(reduction_b.out_channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.stem(x))


class InceptionResNetV2(InceptionClassifier):
    """Fig. 15 with the v2 blocks: stem (Fig. 3), 5 x A, Reduction-A, 10 x B,
    Reduction-B, 5 x C, head on 2144."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.2,
        scale: float | tuple[float, float, float] = 0.2,
    ) -> None:
        super().__init__(num_classes, in_channels, dropout)
        scale_a, scale_b, scale_c = _checks.resolve_scales(scale)
        self.stem = InceptionStem(self.in_channels)  # 384 x 35 x 35
        # Table 1, Inception-ResNet-v2: k, l, m, n = 256, 256, 384, 384; 384 + 384 + 384 = 1152
        reduction_a = ReductionA(384, k=256, l=256, m=384, n=384)  # 1152 x 17 x 17
        reduction_b = ResNetV2ReductionB(reduction_a.out_channels)  # 2144 x 8 x 8
        self.conv = nn.Sequential(
            *[ResNetV2BlockA(384, scale_a) for _ in range(5)],
            reduction_a,
            *[ResNetV2BlockB(reduction_a.out_channels, scale_b) for _ in range(10)],
            reduction_b,
            *[ResNetV2BlockC(reduction_b.out_channels, scale_c) for _ in range(5)],
        )
        self.build_head(reduction_b.out_channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.stem(x))


def inception_resnet_v1(
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float = 0.2,
    scale: float | tuple[float, float, float] = 0.2,
) -> InceptionResNetV1:
    """Corrected Inception-ResNet-v1: 22,769,848 parameters at 1000 classes."""
    return InceptionResNetV1(num_classes=num_classes, in_channels=in_channels, dropout=dropout, scale=scale)


def inception_resnet_v2(
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float = 0.2,
    scale: float | tuple[float, float, float] = 0.2,
) -> InceptionResNetV2:
    """Corrected Inception-ResNet-v2: 32,450,360 parameters at 1000 classes."""
    return InceptionResNetV2(num_classes=num_classes, in_channels=in_channels, dropout=dropout, scale=scale)
