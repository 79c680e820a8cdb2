"""Corrected Inception-v4 / Inception-ResNet-v1 / -v2 for Lucid, with torch twins.

>>> import lucid_inception
>>> model = lucid_inception.inception_resnet_v2(scale=0.2)   # a lucid.nn.Module
>>> twin = lucid_inception.twins.inception_resnet_v2(scale=0.2)  # its torch twin
>>> lucid_inception.install()  # lucid.models.inception_resnet_v2 is now this one
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lucid_inception._install import install, installed, uninstall
from lucid_inception.checkpoint import load_checkpoint
from lucid_inception.inception_resnet import (
    InceptionResNetV1,
    InceptionResNetV2,
    inception_resnet_v1,
    inception_resnet_v2,
)
from lucid_inception.inception_v4 import InceptionV4, inception_v4

__all__ = [
    "MODEL_NAMES",
    "InceptionResNetV1",
    "InceptionResNetV2",
    "InceptionV4",
    "build",
    "inception_resnet_v1",
    "inception_resnet_v2",
    "inception_v4",
    "install",
    "installed",
    "load_checkpoint",
    "twins",
    "uninstall",
]

__version__ = "0.1.0"

MODEL_NAMES: tuple[str, ...] = ("inception_v4", "inception_resnet_v1", "inception_resnet_v2")


def build(name: str, framework: str = "lucid", **kwargs: object):
    """Build a model by name: ``framework="lucid"`` (default) or ``"torch"`` for its twin."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODEL_NAMES)}")
    if framework == "lucid":
        return globals()[name](**kwargs)
    if framework == "torch":
        return getattr(_twins(), name)(**kwargs)
    raise ValueError(f"unknown framework {framework!r}; valid: 'lucid', 'torch'")


def _twins() -> ModuleType:
    return importlib.import_module("lucid_inception.twins")


def __getattr__(name: str) -> ModuleType:
    # ``twins`` imports torch (2.3 s of a 2.5 s import): only when first used. Importing a
    # submodule binds it on the package, so later lookups do not come back here.
    if name == "twins":
        return _twins()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
