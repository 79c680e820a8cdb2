"""The models a check can be pointed at: the port, its torch twins, upstream Lucid.

``upstream`` is whatever ``lucid`` is importable (site-packages, or a patched copy put
first on ``PYTHONPATH``): lucid-dl 2.9.0 defines the models in ``lucid/models/imgclf/``,
2.16.0 in ``lucid/models/vision/`` with other class names. They are built by
``lucid_inception.upstream.build_upstream`` (upstream's plain factory, so no
``registry.json`` is written), which works whatever the layout and while
``lucid_inception.install()`` is active.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from pathlib import Path

__all__ = ["TARGETS", "build", "describe", "from_factory"]

TARGETS: tuple[str, ...] = ("port", "twin", "upstream")


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid: {', '.join(TARGETS)}")


def _lucid_root() -> Path:
    return Path(importlib.import_module("lucid").__file__).resolve().parent


def _lucid_version(root: Path) -> str:
    """The lucid-dl version of the ``lucid`` package at ``root``: its installed
    distribution, or the ``PKG-INFO`` of the unpacked sdist it sits in."""
    for dist in importlib.metadata.distributions(path=[str(root.parent)]):
        if dist.metadata["Name"] in ("lucid-dl", "lucid_dl"):
            return dist.version
    pkg_info = root.parent / "PKG-INFO"
    if pkg_info.is_file():
        for line in pkg_info.read_text(errors="replace").splitlines():
            if line.startswith("Version:"):
                return line.partition(":")[2].strip()
    return "version unknown"


def describe(target: str) -> str:
    """One line naming what ``target`` builds (for upstream: which ``lucid``, from where)."""
    _check_target(target)
    if target == "upstream":
        root = _lucid_root()
        return f"upstream lucid-dl {_lucid_version(root)} at {root}"
    import lucid_inception

    framework = "Lucid" if target == "port" else "torch"
    return f"{target}: lucid_inception {lucid_inception.__version__} ({framework})"


def build(target: str, name: str) -> object:
    """A freshly built model (1000 classes, default arguments) of ``target``."""
    _check_target(target)
    import lucid_inception

    if name not in lucid_inception.MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(lucid_inception.MODEL_NAMES)}")
    if target == "upstream":
        from lucid_inception.upstream import build_upstream

        return build_upstream(name)
    return lucid_inception.build(name, "lucid" if target == "port" else "torch")


def from_factory(spec: str) -> tuple[object, str]:
    """The model ``MODULE:CALLABLE`` builds (``CALLABLE()``, a dotted name allowed), and a
    line naming it; every way this can go wrong is a ``UsageError`` saying which."""
    from conformance.usage import UsageError
    from lucid_inception.frameworks import adapter_for

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"--factory {spec!r}: expected MODULE:CALLABLE, e.g. mynets:inception_v4")
    if os.getcwd() not in sys.path:  # as ``python -m`` does, whatever started this command
        sys.path.insert(0, os.getcwd())
    try:
        factory: object = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 (any import failure is the user's module)
        raise UsageError(
            f"--factory {spec}: importing {module_name} raised {type(error).__name__}: {error}"
        ) from error
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise UsageError(f"--factory {spec}: {module_name} has no {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise UsageError(f"--factory {spec}: {attr} is a {type(factory).__name__}, not callable")
    try:
        model = factory()
    except Exception as error:  # noqa: BLE001 (the user's factory)
        raise UsageError(f"--factory {spec}: calling it raised {type(error).__name__}: {error}") from error
    try:
        framework = adapter_for(model).name
    except TypeError as error:
        raise UsageError(
            f"--factory {spec}: returned {type(model).__name__}, not a Lucid or torch module"
        ) from error
    return model, f"{spec}: your model ({framework}, {type(model).__name__})"
