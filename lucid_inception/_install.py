"""Put the corrected factories into ``lucid.models`` and take them out again.

(Named ``_install`` so that the function ``lucid_inception.install`` does not shadow it.)

``install()`` rebinds the names ``inception_v4``, ``inception_resnet_v1`` and
``inception_resnet_v2`` in every ``lucid.models`` module that exposes upstream's
factory (``lucid.models``, ``lucid.models.imgclf`` and the defining modules), so that
``lucid.models.inception_resnet_v2(scale=0.2)`` builds the corrected model.
``uninstall()`` puts upstream's exact objects back. Both are idempotent, and nothing is
written to disk: the corrected factories do not go through upstream's
``register_model``, which writes ``registry.json`` into site-packages. What that wrapper
does for a caller they do too (``_drop_in``): take ``weights=`` and name the model.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from types import ModuleType

import lucid.models  # noqa: F401  (imports every lucid.models submodule)

from lucid_inception.inception_resnet import inception_resnet_v1, inception_resnet_v2
from lucid_inception.inception_v4 import inception_v4

__all__ = ["install", "installed", "uninstall", "upstream_object"]


def _drop_in(factory: Callable[..., lucid.nn.Module]) -> Callable[..., lucid.nn.Module]:
    """``factory`` as upstream's ``lucid.register_model`` presents one: it accepts
    ``weights=`` (only ``None``: no weights exist for the corrected networks) and sets
    ``model._alt_name``, which Lucid's repr, ``summarize`` and ``lucid.weights.apply``
    read. ``__wrapped__`` is the plain factory."""
    name = factory.__name__

    @functools.wraps(factory)
    def build(*args: object, weights: object = None, **kwargs: object) -> lucid.nn.Module:
        if weights is not None:
            # A RuntimeError, as upstream's wrapper raises when weights fail to apply.
            raise RuntimeError(
                f"there are no pretrained weights for the corrected {name} (got weights={weights!r}); "
                f"build it with weights=None and train it, or call lucid_inception.uninstall() "
                f"for upstream's factories"
            )
        model = factory(*args, **kwargs)
        model._alt_name = name
        return model

    return build


FACTORIES: dict[str, Callable[..., lucid.nn.Module]] = {
    factory.__name__: _drop_in(factory)
    for factory in (inception_v4, inception_resnet_v1, inception_resnet_v2)
}

# (module, name) -> upstream's object, recorded by the first install.
_saved: dict[tuple[str, str], object] = {}


def _lucid_model_modules() -> list[ModuleType]:
    return [
        module
        for name, module in sorted(sys.modules.items())
        if isinstance(module, ModuleType) and (name == "lucid.models" or name.startswith("lucid.models."))
    ]


def install() -> None:
    """Make ``lucid.models.<name>`` build the corrected networks: in every ``lucid.models``
    module that binds the name, or, if any binding fails, in none (those made are undone)."""
    made: list[tuple[ModuleType, str, object, bool]] = []  # (module, name, upstream's, first save)
    try:
        for module in _lucid_model_modules():
            for name, factory in FACTORIES.items():
                current = module.__dict__.get(name)
                if current is None or current is factory:
                    continue
                key = (module.__name__, name)
                made.append((module, name, current, key not in _saved))
                _saved.setdefault(key, current)
                setattr(module, name, factory)
    except BaseException:
        for module, name, current, first in reversed(made):
            with contextlib.suppress(Exception):  # the binding that failed may fail again
                setattr(module, name, current)
            if first:
                _saved.pop((module.__name__, name), None)
        raise


def uninstall() -> None:
    """Restore upstream's factories exactly as they were."""
    for (module_name, name), original in list(_saved.items()):
        module = sys.modules.get(module_name)
        if module is not None:
            setattr(module, name, original)
        del _saved[(module_name, name)]


def upstream_object(name: str) -> Callable:
    """Upstream's ``lucid.models.<name>``, whether or not ``install()`` is active."""
    return _saved.get(("lucid.models", name), getattr(lucid.models, name))


def installed() -> bool:
    """Whether ``lucid.models`` currently builds the corrected networks, and so does every
    ``lucid.models`` module that binds one of the names (the defining modules too)."""
    return all(getattr(lucid.models, name) is factory for name, factory in FACTORIES.items()) and all(
        module.__dict__.get(name) in (None, factory)
        for module in _lucid_model_modules()
        for name, factory in FACTORIES.items()
    )
