"""Binding the spec to a built model: which module path holds each block repeat, branch
and op."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from conformance import spec as S
from conformance.checker.results import all_branches
from conformance.introspect import INERT_KINDS, ModelView


def join_path(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def op_path(view: ModelView, branch_path: str, index: int) -> str | None:
    """Op ``index`` of a branch: the branch module itself when it is one op, else its
    ``index``-th child (an Identity among them is no op)."""
    if branch_path not in view.modules:
        return None
    if view.op_kind(branch_path) == "sequential":
        children = [c for c in view.children[branch_path] if view.op_kind(c) not in INERT_KINDS]
        return children[index] if index < len(children) else None
    return branch_path if index == 0 else None


def branch_path(view: ModelView, block_path: str, block: S.Block, name: str) -> str:
    """Where branch ``name`` of ``block`` is: ``<block>.<name>`` (Lucid's names), or the
    block's module itself where that is the whole block: a block of one branch (Fig. 14's
    stem, a chain) written as a Sequential of its ops."""
    path = join_path(block_path, name)
    if path in view.modules or not block_path or len(all_branches(block)) != 1:
        return path
    return block_path if view.op_kind(block_path) == "sequential" else path


@dataclass
class Binding:
    blocks: dict[str, list[str]]  # spec block -> module path of each repeat found
    trunk: list[str]
    groups: list[tuple[str, list[str]]]  # consecutive trunk modules of one class


def _holds_ops(view: ModelView, path: str) -> bool:
    """A Sequential of paper ops only (convs, pools): a block written as a chain."""
    children = view.children[path]
    return bool(children) and all(view.op_kind(child) in S.OP_KINDS for child in children)


def _trunk_modules(view: ModelView, path: str, *, open_chains: bool = True) -> list[str]:
    """The blocks under ``path`` in order: containers (a Sequential, a ModuleList, nested
    or not) opened, except, with ``open_chains=False``, a Sequential of ops only (a block
    written as a chain); inert modules (a Flatten before the head's fc, an Identity) left out."""
    found: list[str] = []
    for child in view.children[path]:
        kind = view.op_kind(child)
        if kind == "sequential" and (open_chains or not _holds_ops(view, child)):
            found.extend(_trunk_modules(view, child, open_chains=open_chains))
        elif kind not in INERT_KINDS:
            found.append(child)
    return found


def _groups(view: ModelView, trunk: list[str]) -> list[tuple[str, list[str]]]:
    """Consecutive trunk modules of one class."""
    groups: list[tuple[str, list[str]]] = []
    for path in trunk:
        cls = view.class_name(path)
        if groups and groups[-1][0] == cls:
            groups[-1][1].append(path)
        else:
            groups.append((cls, [path]))
    return groups


def _trunk_blocks(
    view: ModelView, candidates: list[str], head: set[str], ran: Mapping[str, int] | None
) -> list[str]:
    """The trunk's candidates less the head's modules and, once the run is known, single
    layers that never ran (a spare module: no block, and layout/modules-accounted names it;
    a block that never ran is a container and stays, for its -runs items)."""
    return [
        path
        for path in candidates
        if path not in head and not (ran is not None and not view.children[path] and path not in ran)
    ]


def _in_run_order(trunk: list[str], ran: Mapping[str, int] | None) -> list[str]:
    """``trunk`` with the modules that ran in the order they ran (``ran``: module -> first
    call's completion index), each in one of their registered slots; a module that never
    ran keeps its own slot (it has no place in the run order, and its -runs items must
    still find it)."""
    if not ran:
        return trunk
    slots = [i for i, path in enumerate(trunk) if path in ran]
    ordered = list(trunk)
    for slot, path in zip(slots, sorted((trunk[i] for i in slots), key=lambda p: ran[p]), strict=True):
        ordered[slot] = path
    return ordered


def bind_spec(view: ModelView, net: S.Network, ran: Mapping[str, int] | None = None) -> Binding:
    """Bind the spec's blocks to the trunk's modules: in the order they ran when ``ran``
    (module -> first call's completion index) is given (a model may register its stem
    after its blocks), else in the order they are registered."""
    head = {b.name for b in net.head.stages[0].branches}
    trunk = _in_run_order(_trunk_blocks(view, _trunk_modules(view, ""), head, ran), ran)
    groups = _groups(view, trunk)
    if len(groups) != len(net.blocks):
        # A block written as a Sequential of its ops (Inception-ResNet-v1's stem, a chain:
        # Fig. 14) was opened into single ops; kept whole, it may be what binds.
        closed = _trunk_blocks(view, _trunk_modules(view, "", open_chains=False), head, ran)
        closed = _in_run_order(closed, ran)
        closed_groups = _groups(view, closed)
        if len(closed_groups) == len(net.blocks):
            trunk, groups = closed, closed_groups
    blocks: dict[str, list[str]] = {}
    if len(groups) == len(net.blocks):  # one class per block type: bind by group
        blocks = {b.name: paths for b, (_, paths) in zip(net.blocks, groups, strict=True)}
    else:  # bind by position; the layout item reports the mismatch
        start = 0
        for b in net.blocks:
            blocks[b.name] = trunk[start : start + b.repeats]
            start += b.repeats
    blocks["head"] = [""]
    return Binding(blocks, trunk, groups)


def kept_paths(view: ModelView, binding: Binding, net: S.Network) -> set[str]:
    keep: set[str] = set()
    for block in (*net.blocks, net.head):
        for path in binding.blocks[block.name]:
            keep.add(path)
            for branch in all_branches(block):
                bpath = branch_path(view, path, block, branch.name)
                keep.add(bpath)
                for i in range(len(branch.ops)):
                    op = op_path(view, bpath, i)
                    if op:
                        keep.add(op)
                        if view.op_kind(op) == "conv":  # its conv, BN and ReLU: the data flow inside
                            keep.update(view.children[op])
    return keep
