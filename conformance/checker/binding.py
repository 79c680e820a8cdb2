"""Binding the spec to a built model: which module path holds each block repeat, branch
and op."""

from __future__ import annotations

from dataclasses import dataclass

from conformance import spec as S
from conformance.checker.results import all_branches
from conformance.introspect import ModelView


def join_path(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def op_path(view: ModelView, branch_path: str, index: int) -> str | None:
    """Op ``index`` of a branch: the branch module itself when it is one op, else its
    ``index``-th child."""
    if branch_path not in view.modules:
        return None
    if view.op_kind(branch_path) == "sequential":
        children = view.children[branch_path]
        return children[index] if index < len(children) else None
    return branch_path if index == 0 else None


@dataclass
class Binding:
    blocks: dict[str, list[str]]  # spec block -> module path of each repeat found
    trunk: list[str]
    groups: list[tuple[str, list[str]]]  # consecutive trunk modules of one class


def _trunk_modules(view: ModelView, path: str) -> list[str]:
    """The blocks under ``path`` in order: containers (a Sequential, a ModuleList, nested
    or not) opened, reshapes (a Flatten before the head's fc) left out."""
    found: list[str] = []
    for child in view.children[path]:
        kind = view.op_kind(child)
        if kind == "sequential":
            found.extend(_trunk_modules(view, child))
        elif kind != "reshape":
            found.append(child)
    return found


def bind_spec(view: ModelView, net: S.Network) -> Binding:
    head = {b.name for b in net.head.stages[0].branches}
    trunk = [path for path in _trunk_modules(view, "") if path not in head]
    groups: list[tuple[str, list[str]]] = []
    for path in trunk:
        cls = view.class_name(path)
        if groups and groups[-1][0] == cls:
            groups[-1][1].append(path)
        else:
            groups.append((cls, [path]))
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
                bpath = join_path(path, branch.name)
                keep.add(bpath)
                for i in range(len(branch.ops)):
                    op = op_path(view, bpath, i)
                    if op:
                        keep.add(op)
                        if view.op_kind(op) == "conv":  # its conv, BN and ReLU: the data flow inside
                            keep.update(view.children[op])
    return keep
