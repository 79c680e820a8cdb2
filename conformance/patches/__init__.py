"""Patch generators: each takes an upstream source root (the folder holding ``lucid/``) and
returns the new text of every file it changes, computed by anchored edits of upstream's
own source; ``render`` turns that into a ``patch -p1`` diff."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from ._edits import AnchorError, unified_diff
from .framework import (
    REGISTRY_OPT_IN,
    backward_lists_each_tensor_once,
    batchnorm_float32_buffers,
    broadcast_gradients,
    checked_load_state_dict,
    flops_counted_once,
    fusion_keeps_wanted_gradients,
    gradient_stored_as_a_copy,
    numeric_pickles_by_name,
    registry_opt_in,
    tensor_dtype_from_data,
)
from .models import dead_2048_block_c, head_dropout, residual_scaling, stem_branch2_right, v4_block_b_branch4
from .py312 import future_annotations

__all__ = [
    "REGISTRY_OPT_IN",
    "AnchorError",
    "Generator",
    "backward_lists_each_tensor_once",
    "batchnorm_float32_buffers",
    "broadcast_gradients",
    "checked_load_state_dict",
    "dead_2048_block_c",
    "flops_counted_once",
    "fusion_keeps_wanted_gradients",
    "future_annotations",
    "gradient_stored_as_a_copy",
    "head_dropout",
    "numeric_pickles_by_name",
    "registry_opt_in",
    "render",
    "residual_scaling",
    "stem_branch2_right",
    "tensor_dtype_from_data",
    "v4_block_b_branch4",
    "write_version_patches",
]

Generator = Callable[[Path], dict[str, str]]


def render(generator: Generator, root: Path) -> str:
    """The unified diff that ``generator`` makes to the tree at ``root``."""
    changes = generator(Path(root))
    if not changes:
        raise AnchorError(f"{generator.__name__} changed nothing under {root}")
    return unified_diff(Path(root), changes)


class _Patchable(Protocol):
    id: str
    patch_generator: Generator

    def affects(self, version: str) -> bool: ...


def write_version_patches(
    findings: Iterable[_Patchable], version: str, root: Path, dest: Path
) -> dict[str, Path]:
    """Write ``<id>.patch`` into ``dest`` for each finding that affects ``version``, generated
    against the pristine tree ``root``; return the paths by finding id, in the given order."""
    dest.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for finding in findings:
        if finding.affects(version):
            path = dest / f"{finding.id}.patch"
            path.write_text(render(finding.patch_generator, root), encoding="utf-8")
            written[finding.id] = path
    return written
