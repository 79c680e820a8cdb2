"""What a check reports: one ``ItemResult`` per item (an ``Item`` gathers it over every
repeat), a ``ModelReport`` per model, and the item ids, derived from the spec alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from conformance import spec as S

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
_SHOWN_PROBLEMS = 3

Status = Literal["pass", "fail"]


@dataclass(frozen=True)
class ItemResult:
    id: str
    status: Status
    expected: str
    found: str
    evidence: str

    def to_json(self) -> dict[str, str]:
        """The shape ``python -m conformance check --json`` prints (the patch prover reads it)."""
        return {
            "id": self.id,
            "status": self.status,
            "expected": self.expected,
            "found": self.found,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class ModelReport:
    model: str
    target: str
    results: tuple[ItemResult, ...]
    parameters: int
    spec_parameters: int

    @property
    def failures(self) -> tuple[ItemResult, ...]:
        return tuple(r for r in self.results if r.status == "fail")


def op_item(branch: S.Branch, index: int) -> str:
    """The item name of op ``index`` of ``branch`` (unique within a block)."""
    op = branch.ops[index]
    if op.item:
        return op.item
    suffix = f"-{op.out_channels}" if op.kind in ("conv", "linear-conv") else ""
    return f"{branch.name}-{ORDINALS[index]}-{op.kind}{suffix}"


def expected_item_ids(name: str) -> tuple[str, ...]:
    """Every item id a check of model ``name`` reports, derived from the spec alone, in
    report order."""
    if name not in S.SPECS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(S.SPECS)}")
    net = S.SPECS[name]
    layout = ("forward", "repeats", "stage-shapes", "hand-over", "modules-accounted", "conventions")
    ids = [f"{name}/layout/{item}" for item in layout]
    for block in (*net.blocks, net.head):
        ids += block_item_ids(name, block)
    if net.residual_scale is not None:
        ids.append(f"{name}/residual-scale")
    return tuple(ids)


def block_item_ids(name: str, block: S.Block) -> list[str]:
    """The item ids of one block type of model ``name``, in report order."""
    prefix = f"{name}/{block.name}"
    branches = all_branches(block)
    ids = [f"{prefix}/{b.name}-runs" for b in branches]
    ids += [f"{prefix}/{op_item(b, i)}" for b in branches for i in range(len(b.ops))]
    ids += [f"{prefix}/{stage.name}" for stage in block.stages if stage.is_concat]
    if block.residual:
        ids += [f"{prefix}/residual-formula", f"{prefix}/width-{block.in_channels}"]
    return ids


# ----- items: accumulate problems over repeats, then one result


def _paths(paths: Sequence[str]) -> str:
    paths = [p or "<root>" for p in dict.fromkeys(paths)]
    return ", ".join(paths) if len(paths) <= 2 else f"{paths[0]} .. {paths[-1]} ({len(paths)})"


@dataclass
class Item:
    """One item being checked over every repeat; ``fail(where, what)`` records a problem.
    Identical problems on several repeats are reported once, with where they occur."""

    id: str
    expected: str
    ref: str
    found: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)  # what -> where
    notes: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)

    def fail(self, where: str, what: str) -> None:
        self.problems.setdefault(what, []).append(where)

    def result(self) -> ItemResult:
        groups = [f"{_paths(where)}: {what}" for what, where in self.problems.items()]
        if groups:
            found = "; ".join(groups[:_SHOWN_PROBLEMS])
            if len(groups) > _SHOWN_PROBLEMS:
                found += f"; and {len(groups) - _SHOWN_PROBLEMS} more"
        else:
            distinct = list(dict.fromkeys(self.found))
            found = " | ".join(distinct) if distinct else "as expected"
            if len(self.found) > 1 and len(distinct) == 1:
                found += f" (all {len(self.found)})"
        decisions = [f"Decision {d.id}: {d.chosen} ({d.evidence})" for d in S.decisions_for(self.id)]
        checked = f"checked {len(self.where)}: {_paths(self.where)}" if self.where else ""
        parts = [self.ref, checked, *decisions, *dict.fromkeys(self.notes), *groups[_SHOWN_PROBLEMS:]]
        status: Status = "fail" if groups else "pass"
        return ItemResult(self.id, status, self.expected, found, ". ".join(p for p in parts if p))


def all_branches(block: S.Block) -> list[S.Branch]:
    branches = [b for stage in block.stages for b in stage.branches]
    return branches + ([block.linear] if block.linear else [])
