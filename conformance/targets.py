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
from pathlib import Path

__all__ = ["TARGETS", "build", "describe"]

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
