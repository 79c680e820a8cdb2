"""Upstream lucid-dl's own Inception models, built the way upstream builds them.

Upstream's factories go through ``lucid.register_model``, which writes ``registry.json``
into site-packages on the first build of each name (read-only installs fail, parallel
builds corrupt it). Both 2.9.0 and 2.16.0 wrap the factory with ``functools.wraps``, so
the undecorated factory is ``factory.__wrapped__``: calling it builds exactly upstream's
model (float64 BatchNorm buffers and all) and writes nothing. This works whatever the
upstream layout (``lucid.models.imgclf`` in 2.9.0, ``lucid.models.vision`` in 2.16.0) and
while ``lucid_inception.install()`` is active.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata

import lucid
import lucid.models
import lucid.nn as lnn

from lucid_inception._install import upstream_object
from lucid_inception.frameworks.lucid_adapter import quiet_uninitialised_casts

__all__ = ["build_upstream", "upstream_factory", "upstream_is_released", "upstream_version"]

# The one lucid-dl 2.x that imports on Python 3.12/3.13 as released. Newer 2.x releases
# import there only once the conformance kit has patched them (tox leg lucid216), and the
# kit then applies all of its patches, so they no longer carry the model bugs.
RELEASED_VERSION = "2.9.0"

NAMES = ("inception_v4", "inception_resnet_v1", "inception_resnet_v2")


def upstream_factory(name: str) -> Callable[..., lnn.Module]:
    """Upstream's undecorated factory for ``name``."""
    if name not in NAMES:
        raise ValueError(f"unknown upstream model {name!r}; valid: {', '.join(NAMES)}")
    factory = upstream_object(name)
    return getattr(factory, "__wrapped__", factory)


def build_upstream(name: str, num_classes: int = 1000, **kwargs: object) -> lnn.Module:
    """Upstream's model for ``name``, without touching ``registry.json`` and without the
    init's harmless cast warning (see ``quiet_uninitialised_casts``)."""
    factory = upstream_factory(name)
    with quiet_uninitialised_casts():
        return factory(num_classes, **kwargs)


def upstream_version() -> str:
    """The version of the ``lucid`` being imported (its own ``__version__`` when it has
    one, e.g. a patched source tree; else the installed distribution's)."""
    own = getattr(lucid, "__version__", None)
    return str(own) if own else metadata.version("lucid-dl")


def upstream_is_released() -> bool:
    """Whether the imported ``lucid`` is lucid-dl 2.9.0 as released (with its bugs),
    rather than a newer release that the kit patched."""
    return upstream_version() == RELEASED_VERSION
