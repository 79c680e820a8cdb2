"""Torch twins of the corrected models: same factories, arguments, module tree and keys."""

from __future__ import annotations

from lucid_inception.twins.inception_resnet import (
    InceptionResNetV1,
    InceptionResNetV2,
    inception_resnet_v1,
    inception_resnet_v2,
)
from lucid_inception.twins.inception_v4 import InceptionV4, inception_v4

__all__ = [
    "InceptionResNetV1",
    "InceptionResNetV2",
    "InceptionV4",
    "inception_resnet_v1",
    "inception_resnet_v2",
    "inception_v4",
]
