"""Hold a built model against the paper spec (``conformance.spec``), item by item.

Two sources of evidence, through ``lucid_inception.frameworks`` only:
- introspection: the module tree, each conv's kernel, stride, padding, channels, bias
  and BatchNorm, each pool's geometry and padding rule, the dropout probability, the fc;
- one traced forward (eval mode, 1 x 3 x 75 x 75 by default): which modules run, in what
  order, with what shapes; each concat's channel layout, read from the arrays; each
  residual block's formula and scale, fitted from its input, output and linear branch.

Items are per block type and checked on every repeat. Item ids are stable:
``<model>/<block>/<item>``; an op's item is ``<branch>-<ordinal>-<kind>[-<out>]``
(``inception_v4/block_b/branch4-first-conv-192``). Each item passes or fails with what
was expected, what was found and where. A check that cannot see its evidence (a branch
that never ran) says so and leaves the failure to the item that owns it (``-runs``), so
one fault fails one item.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from conformance import spec as S
from conformance.introspect import ModelView, Trace, latent_constants, trace

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_SIZE",
    "ItemResult",
    "ModelReport",
    "add_check_command",
    "check_model",
    "expected_item_ids",
    "op_item",
    "render",
]

DEFAULT_SIZE = 75  # the smallest input all three accept; every op still runs (SPEC.md)
DEFAULT_SEED = 0
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
# Relative tolerance of the behavioural checks (residual formula, pools), by the dtype the
# model computes in: float32 rounding (6e-8) times the handful of operations compared.
_RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-9}
_SHOWN_PROBLEMS = 3
# A fitted residual scale this close to 1 is no scaling; fits are exact to ~1e-7.
_SCALE_ONE = 1e-3

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
    ids = [f"{name}/layout/{item}" for item in ("forward", "repeats", "stage-shapes", "modules-accounted")]
    for block in (*net.blocks, net.head):
        prefix = f"{name}/{block.name}"
        branches = _all_branches(block)
        ids += [f"{prefix}/{b.name}-runs" for b in branches]
        ids += [f"{prefix}/{op_item(b, i)}" for b in branches for i in range(len(b.ops))]
        ids += [f"{prefix}/{stage.name}" for stage in block.stages if stage.is_concat]
        if block.residual:
            ids += [f"{prefix}/residual-formula", f"{prefix}/width-{block.in_channels}"]
    if net.residual_scale is not None:
        ids.append(f"{name}/residual-scale")
    return tuple(ids)


# ----- items: accumulate problems over repeats, then one result


def _paths(paths: Sequence[str]) -> str:
    paths = [p or "<root>" for p in dict.fromkeys(paths)]
    return ", ".join(paths) if len(paths) <= 2 else f"{paths[0]} .. {paths[-1]} ({len(paths)})"


@dataclass
class _Item:
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


# ----- binding the spec to module paths


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _op_path(view: ModelView, branch_path: str, index: int) -> str | None:
    """Op ``index`` of a branch: the branch module itself when it is one op, else its
    ``index``-th child."""
    if branch_path not in view.modules:
        return None
    if view.op_kind(branch_path) == "sequential":
        children = view.children[branch_path]
        return children[index] if index < len(children) else None
    return branch_path if index == 0 else None


@dataclass
class _Binding:
    blocks: dict[str, list[str]]  # spec block -> module path of each repeat found
    trunk: list[str]
    groups: list[tuple[str, list[str]]]  # consecutive trunk modules of one class


def _bind(view: ModelView, net: S.Network) -> _Binding:
    head = {b.name for b in net.head.stages[0].branches}
    trunk: list[str] = []
    for child in view.children[""]:
        if child in head:
            continue
        trunk.extend(view.children[child] if view.op_kind(child) == "sequential" else [child])
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
    return _Binding(blocks, trunk, groups)


def _all_branches(block: S.Block) -> list[S.Branch]:
    branches = [b for stage in block.stages for b in stage.branches]
    return branches + ([block.linear] if block.linear else [])


def _kept(view: ModelView, binding: _Binding, net: S.Network) -> set[str]:
    keep: set[str] = set()
    for block in (*net.blocks, net.head):
        for path in binding.blocks[block.name]:
            keep.add(path)
            for branch in _all_branches(block):
                bpath = _join(path, branch.name)
                keep.add(bpath)
                keep.update(p for i in range(len(branch.ops)) if (p := _op_path(view, bpath, i)))
    return keep


# ----- small helpers


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape[1:]) if len(shape) > 1 else str(tuple(shape))


def _hwc(shape: Sequence[int]) -> str:
    """An N x C x H x W shape as the paper writes it: ``35x35x384``."""
    return f"{shape[2]}x{shape[3]}x{shape[1]}" if len(shape) == 4 else _shape(shape)


def _hw(pair: Sequence[int]) -> str:
    return f"{pair[0]}x{pair[1]}"


def _rtol(array: np.ndarray) -> float:
    return _RTOL.get(array.dtype, 1e-4)


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-30)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) / scale if a.size else 0.0


def _pool_reference(x: np.ndarray, op: S.Op) -> np.ndarray:
    """The paper's pool of ``x`` (N, C, H, W) in float64: max pools valid, average pools
    zero-padded and divided by k*k (the padding counts)."""
    x = x.astype(np.float64)
    if op.kind == "global-avgpool":
        return x.mean(axis=(2, 3), keepdims=True)
    (kh, kw), (sh, sw), (ph, pw) = op.kernel, op.stride, op.padding
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    windows = np.stack(
        [x[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] for i in range(kh) for j in range(kw)], axis=0
    )
    return windows.max(axis=0) if op.kind == "maxpool" else windows.sum(axis=0) / (kh * kw)


def _compare(prefix: str, pairs: Iterable[tuple[str, object, object]]) -> list[str]:
    """``"conv out_channels 64 (expected 192)"`` for each pair that differs."""
    return [
        f"{prefix}{label} {found} (expected {expected})"
        for label, found, expected in pairs
        if found != expected
    ]


# ----- one op on one repeat


def _describe(view: ModelView, path: str, kind: str) -> str:
    info = view.info[path]
    if kind == "conv":
        conv, bn = (view.info[c] for c in view.children[path][:2])
        s = "" if conv["stride"] == (1, 1) else f"/{conv['stride'][0]}"
        return (
            f"{_hw(conv['kernel'])}{s} pad {_hw(conv['padding'])} conv {conv['in_channels']}->"
            f"{conv['out_channels']}{'' if conv['bias'] else ' no-bias'} +BN(eps {bn['eps']:g}) +ReLU"
        )
    if kind == "linear-conv":
        s = "" if info["stride"] == (1, 1) else f"/{info['stride'][0]}"
        return f"{_hw(info['kernel'])}{s} linear conv {info['in_channels']}->{info['out_channels']}"
    if kind in ("maxpool", "avgpool"):
        extra = ", counts padding" if info.get("count_include_pad") else ""
        return f"{kind} {_hw(info['kernel'])}/{info['stride'][0]} pad {_hw(info['padding'])}{extra}"
    if kind == "global-avgpool":
        return f"adaptive avgpool to {_hw(info['output_size'])}"
    if kind == "dropout":
        return f"Dropout(p={info['p']:g}) = keep {1 - float(info['p']):g}"
    if kind == "fc":
        return f"fc {info['in_features']}->{info['out_features']}"
    return f"{kind} ({view.class_name(path)})"


def _structure(view: ModelView, path: str, op: S.Op, in_width: int) -> list[str]:
    """Introspected hyperparameters against the spec; ``in_width`` is the width that
    actually feeds the op (the previous op's, as built or as run)."""
    info = view.info[path]
    if op.kind in ("conv", "linear-conv"):
        conv_path = view.children[path][0] if op.kind == "conv" else path
        conv = view.info[conv_path]
        problems = _compare(
            "conv " if op.kind == "conv" else "",
            [
                ("kernel", conv["kernel"], op.kernel),
                ("stride", conv["stride"], op.stride),
                ("padding", conv["padding"], op.padding),
                ("out_channels", conv["out_channels"], op.out_channels),
                ("in_channels", conv["in_channels"], in_width),
                ("dilation", conv["dilation"], (1, 1)),
                ("groups", conv["groups"], 1),
                ("bias", conv["bias"], True),
                ("padding_mode", conv["padding_mode"], "zeros"),
            ],
        )
        if op.kind == "conv":
            bn = view.info[view.children[path][1]]
            problems += _compare(
                "bn ",
                [
                    ("num_features", bn["num_features"], op.out_channels),
                    ("eps", bn["eps"], S.BN_EPS),
                    ("momentum", bn["momentum"], S.BN_MOMENTUM),
                    ("affine", bn["affine"], True),
                ],
            )
        return problems
    if op.kind in ("maxpool", "avgpool"):
        pairs = [
            ("kernel", info["kernel"], op.kernel),
            ("stride", info["stride"], op.stride),
            ("padding", info["padding"], op.padding),
            ("ceil_mode", info["ceil_mode"], False),
        ]
        if op.kind == "avgpool":
            pairs.append(("count_include_pad", info["count_include_pad"], True))
        return _compare("", pairs)
    if op.kind == "global-avgpool":
        return _compare("", [("output_size", info["output_size"], (1, 1))])
    if op.kind == "dropout":
        assert op.keep is not None
        p = float(info["p"])
        return [] if math.isclose(p, 1 - op.keep, abs_tol=1e-9) else [f"Dropout(p={p:g}) keeps {1 - p:g}"]
    if op.kind == "fc":
        return _compare(
            "",
            [
                ("in_features", info["in_features"], in_width),
                ("out_features", info["out_features"], op.out_channels),
                ("bias", info["bias"], True),
            ],
        )
    return []


def _check_op(
    view: ModelView, tr: Trace, path: str | None, op: S.Op, shape: tuple[int, ...], feed: int, runs_id: str
) -> tuple[str, list[str], list[str], int]:
    """(found, problems, notes, out width as built) for one op on one repeat."""
    if path is None:
        return "missing", ["no module here"], [], op.out_channels
    kind = view.op_kind(path)
    found = _describe(view, path, kind)
    if kind != op.kind:
        return (
            found,
            [f"a {kind} ({view.class_name(path)}), expected a {op.kind}"],
            [],
            op.out_channels,
        )
    call = tr.first(path)
    in_width = (
        call.input_shapes[0][1]
        if call and call.input_shapes and op.kind in ("conv", "linear-conv", "fc")
        else feed
    )
    problems = _structure(view, path, op, in_width)
    out_width = op.out_channels
    if op.kind in ("conv", "linear-conv"):
        conv_path = view.children[path][0] if op.kind == "conv" else path
        out_width = int(view.info[conv_path]["out_channels"])
    notes: list[str] = []
    if call is None:
        notes.append(f"{path} did not run: see {runs_id}")
        return found, problems, notes, out_width
    found += f" -> {_shape(call.output_shape)}"
    if call.output_shape != shape:
        problems.append(f"output {_shape(call.output_shape)} (expected {_shape(shape)})")
    if op.kind == "conv":  # conv -> BatchNorm -> ReLU, in that order, once per call
        steps = [tr.calls.get(c, []) for c in view.children[path]]
        if any(len(s) != tr.count(path) for s in steps) or not (
            steps[0] and steps[0][0].index < steps[1][0].index < steps[2][0].index < call.index
        ):
            problems.append("does not run conv -> BatchNorm -> ReLU once per call")
    if op.kind in ("maxpool", "avgpool", "global-avgpool") and call.output is not None and call.inputs:
        reference = _pool_reference(call.inputs[0], op)
        if reference.shape == call.output.shape:
            err = _rel_err(call.output, reference)
            if err > _rtol(call.output):
                problems.append(f"output differs from the paper's {op.label} of its input by {err:.1e}")
    return found, problems, notes, out_width


# ----- blocks


def _stage_output(
    view: ModelView, tr: Trace, block: S.Block, path: str, index: int
) -> tuple[np.ndarray | None, str]:
    """The array a stage hands on, and where it was read."""
    if index + 1 < len(block.stages):
        nxt = block.stages[index + 1]
        for branch in nxt.branches:
            if branch.source is None:
                op = _op_path(view, _join(path, branch.name), 0)
                call = tr.first(op) if op else None
                if call and call.inputs:
                    return call.inputs[0], f"input of {op}"
        return None, "no op of the next stage ran"
    if block.linear is not None:
        lpath = _join(path, block.linear.name)
        call = tr.first(lpath)
        return (
            (call.inputs[0], f"input of {lpath}") if call and call.inputs else (None, f"{lpath} did not run")
        )
    call = tr.first(path)
    return (
        (call.output, f"output of {path or '<root>'}")
        if call and call.output is not None
        else (None, f"{path} did not run")
    )


def _find_offsets(out: np.ndarray, part: np.ndarray) -> list[int]:
    width = part.shape[1]
    if part.shape[0] != out.shape[0] or part.shape[2:] != out.shape[2:]:
        return []
    return [o for o in range(out.shape[1] - width + 1) if np.array_equal(out[:, o : o + width], part)]


def _check_concat(
    item: _Item, view: ModelView, tr: Trace, stage: S.Stage, path: str, out: np.ndarray | None, where: str
) -> None:
    """The stage output holds each branch's output at its paper offset (or at the offset
    of an order a Decision accepts for this concat)."""
    if out is None:
        item.fail(path, f"concat not observed ({where})")
        return
    outputs: dict[str, list[np.ndarray]] = {}
    for name in stage.output:
        calls = tr.calls.get(_join(path, name), [])
        outputs[name] = [c.output for c in calls if c.output is not None]
    widths = {n: (o[0].shape[1] if o else stage.branch(n).out_channels) for n, o in outputs.items()}
    located = {n: _find_offsets(out, o[0]) for n, o in outputs.items() if o}
    layout = sorted((offs[0], n) for n, offs in located.items() if offs)
    found = ", ".join(f"{n}@{o}" for o, n in layout) + f" = {out.shape[1]}"
    orders = [stage.output] + [d.accepted_output for d in S.decisions_for(item.id) if d.accepted_output]
    matched = None
    for order in orders:
        offset, ok = 0, True
        for name in order:
            if outputs[name] and not any(
                np.array_equal(out[:, offset : offset + widths[name]], o) for o in outputs[name]
            ):
                ok = False
            offset += widths[name]
        if ok and offset == out.shape[1]:
            matched = order
            break
    if matched is not None and matched != stage.output:
        found += " (the accepted permutation)"
    item.found.append(found)
    if out.shape[1] != stage.out_channels:
        item.fail(path, f"concat is {out.shape[1]} wide (expected {stage.out_channels})")
    if matched is None:
        item.fail(path, f"concat layout {found} (read at the {where})")
    for name, calls in outputs.items():
        if not calls:
            item.notes.append(f"{name} did not run, so its slot is unchecked: see {name}-runs")
    if not any(outputs.values()):
        item.fail(path, "no branch of the concat ran")


@dataclass
class _ResidualFit:
    path: str
    scale: float | None
    error: float | None
    problem: str | None


def _fit_residual(tr: Trace, path: str, linear_path: str) -> _ResidualFit:
    """Fit ``y = relu(x + s * L)`` on one block call: on the positive outputs
    ``y - x = s * L``, so ``s`` is a least-squares ratio; then compare everywhere."""
    call, lin = tr.first(path), tr.first(linear_path)
    if call is None or lin is None or not call.inputs or call.output is None or lin.output is None:
        return _ResidualFit(path, None, None, "the block or its linear conv did not run")
    x, y, lo = (a.astype(np.float64) for a in (call.inputs[0], call.output, lin.output))
    if not x.shape == y.shape == lo.shape:
        return _ResidualFit(path, None, None, f"input {x.shape}, linear {lo.shape}, output {y.shape} differ")
    positive = y > 0
    denom = float(np.sum(lo[positive] ** 2))
    if denom == 0.0:
        return _ResidualFit(path, None, None, "no positive output to fit the scale on")
    s = float(np.sum((y - x)[positive] * lo[positive])) / denom  # least squares on y > 0
    predicted = np.maximum(x + s * lo, 0.0)
    scale = max(float(np.max(np.abs(x))), float(np.max(np.abs(s * lo))), 1e-30)
    err = float(np.max(np.abs(predicted - y))) / scale
    if err > _rtol(call.output):
        return _ResidualFit(
            path,
            s,
            err,
            f"y != ReLU(x + s * linear) for any single s (best s {s:.4g}, error {err:.1e})",
        )
    return _ResidualFit(path, s, err, None)


def _check_block(
    net: S.Network, block: S.Block, view: ModelView, tr: Trace, paths: list[str], size: int
) -> tuple[list[ItemResult], list[_ResidualFit]]:
    prefix = f"{net.name}/{block.name}"
    in_hw = S.block_shapes(net, size)[block.name][0]
    runs: dict[str, _Item] = {}
    ops: dict[str, _Item] = {}
    concats: dict[str, _Item] = {}
    residual = {
        "formula": _Item(
            f"{prefix}/residual-formula",
            "y = ReLU(x + s * linear1x1(concat)), one scalar s, no BatchNorm on the sum",
            f"{block.ref}, Fig. 20",
        ),
        "width": _Item(
            f"{prefix}/width-{block.in_channels}",
            f"input, linear 1x1 output and sum all {block.in_channels} wide"
            + "".join(
                f"; no unused {d.rejected_value} ({d.ref}) in the constructor"
                for d in S.decisions_for(f"{prefix}/width-{block.in_channels}")
                if d.rejected_value is not None
            ),
            block.ref,
        ),
    }
    fits: list[_ResidualFit] = []
    batch = 1

    def run_branch(
        bpath: str, branch: S.Branch, hw: tuple[int, int], feed: int, calls: dict[str, int]
    ) -> tuple[tuple[int, int], int]:
        """Check the ops of one branch on one repeat; returns its output grid and width."""
        rid = f"{prefix}/{branch.name}-runs"
        run_item = runs.setdefault(rid, _Item(rid, f"every op of {branch.name} runs", block.ref))
        run_item.where.append(bpath)
        counts = []
        for i, op in enumerate(branch.ops):
            opath = _op_path(view, bpath, i)
            hw = S.op_output_hw(op, *hw)
            shape = (
                (batch, op.out_channels) if op.kind in ("dropout", "fc") else (batch, op.out_channels, *hw)
            )
            oid = f"{prefix}/{op_item(branch, i)}"
            expected = f"{op.label} -> {_shape(shape)} at {size}"
            item = ops.setdefault(oid, _Item(oid, expected, op.ref))
            item.where.append(opath or f"{bpath}[{i}]")
            found, problems, notes, feed = _check_op(view, tr, opath, op, shape, feed, rid)
            item.found.append(found)
            if problems:
                item.fail(opath or f"{bpath}[{i}]", ", ".join(problems))
            item.notes += notes
            counts.append(tr.count(opath) if opath else 0)
        idle = [str(i) for i, count in enumerate(counts) if count == 0]
        if idle:
            ops_text = f"op {idle[0]}" if len(idle) == 1 else f"ops {', '.join(idle)}"
            run_item.fail(bpath, f"{ops_text} of {len(counts)} never ran")
        else:
            run_item.found.append("ran" if max(counts) == 1 else f"ran {max(counts)} times per forward")
        calls[branch.name] = max(counts)
        return hw, feed

    for path in paths:
        hw, width = in_hw, block.in_channels
        for si, stage in enumerate(block.stages):
            ends: dict[str, tuple[tuple[int, int], int]] = {}
            calls: dict[str, int] = {}
            for branch in stage.branches:
                start_hw, feed = (hw, width) if branch.source is None else ends[branch.source]
                ends[branch.name] = run_branch(_join(path, branch.name), branch, start_hw, feed, calls)
            if 0 in calls.values():  # a branch that never runs: say what ran instead
                counts = ", ".join(f"{name} {count}" for name, count in calls.items())
                for name in calls:
                    runs[f"{prefix}/{name}-runs"].notes.append(
                        f"calls per forward in {path or '<root>'}: {counts}"
                    )
            if stage.is_concat:
                cid = f"{prefix}/{stage.name}"
                names = " + ".join(f"{n} {stage.branch(n).out_channels}" for n in stage.output)
                item = concats.setdefault(cid, _Item(cid, f"[{names}] = {stage.out_channels}", stage.ref))
                item.where.append(path)
                out, where = _stage_output(view, tr, block, path, si)
                _check_concat(item, view, tr, stage, path, out, where)
            hw = ends[stage.output[0]][0]
            width = stage.out_channels
        if block.linear is not None:
            lpath = _join(path, block.linear.name)
            run_branch(lpath, block.linear, hw, width, {})
            fit = _fit_residual(tr, path, lpath)
            fits.append(fit)
            formula = residual["formula"]
            formula.where.append(path)
            if fit.problem:
                formula.fail(path, fit.problem)
            _check_width(residual["width"], view, tr, block, path, lpath)

    errors = [f.error for f in fits if f.error is not None and f.problem is None]
    if errors:
        residual["formula"].found.append(f"holds in {len(errors)}, max rel. error {max(errors):.0e}")
    results = [i.result() for i in runs.values()] + [i.result() for i in ops.values()]
    results += [i.result() for i in concats.values()]
    if block.linear is not None:
        results += [residual["formula"].result(), residual["width"].result()]
    return results, fits


def _check_width(item: _Item, view: ModelView, tr: Trace, block: S.Block, path: str, lpath: str) -> None:
    width = block.in_channels
    item.where.append(path)
    call = tr.first(path)
    seen = {
        "input": call.input_shapes[0][1] if call and call.input_shapes else None,
        "output": call.output_shape[1] if call else None,
        "linear out": view.info[lpath].get("out_channels") if lpath in view.info else None,
    }
    for label, value in seen.items():
        if value is not None and value != width:
            item.fail(path, f"{label} {value} wide (expected {width})")
    # A width the paper prints (Fig. 17's 1154, Fig. 19's 2048) that the constructor keeps
    # but the built block does not use cannot be seen in the model: read the code.
    used = {
        int(v)
        for p in (path, *view.descendants(path))
        for k, v in view.info[p].items()
        if k.endswith(("channels", "features"))
    }
    for decision in S.decisions_for(item.id):
        if decision.rejected_value is None or decision.rejected_value in used:
            continue
        for where in latent_constants(type(view.modules[path]), decision.rejected_value):
            item.fail(
                path, f"{where} keeps {decision.rejected_value} ({decision.ref}), which no built layer uses"
            )
    item.found.append(f"{seen['input']} + linear {seen['linear out']} -> {seen['output']}")


# ----- model-level items


def _check_layout(net: S.Network, view: ModelView, tr: Trace, binding: _Binding) -> list[ItemResult]:
    expected = ", ".join(f"{b.name} x{b.repeats}" for b in net.blocks)
    repeats = _Item(f"{net.name}/layout/repeats", f"{expected}, in this order", net.ref)
    repeats.found.append(", ".join(f"{cls} x{len(p)}" for cls, p in binding.groups))
    repeats.where = list(binding.trunk)
    if len(binding.groups) != len(net.blocks):
        repeats.fail(
            "", f"{len(binding.groups)} groups of blocks, expected {len(net.blocks)}: {repeats.found[0]}"
        )
    for block in net.blocks:
        if len(binding.blocks[block.name]) != block.repeats:
            repeats.fail(block.name, f"{len(binding.blocks[block.name])} blocks (expected {block.repeats})")
    ran = [(tr.first(p).index, p) for p in binding.trunk if tr.first(p)]
    if [p for _, p in sorted(ran)] != [p for _, p in ran]:
        repeats.fail("", f"blocks run out of order: {', '.join(p for _, p in sorted(ran))}")

    shapes = S.block_shapes(net, tr.size)
    stated = ", ".join(f"{s.height}x{s.width}x{s.channels}" for s in net.stage_shapes_299)
    derived = ", ".join(f"{_hw(shapes[s.block][1])}x{s.channels}" for s in net.stage_shapes_299)
    stage = _Item(
        f"{net.name}/layout/stage-shapes",
        f"{stated} at {net.input_size}" + ("" if tr.size == net.input_size else f"; {derived} at {tr.size}"),
        ", ".join(dict.fromkeys(s.ref for s in net.stage_shapes_299)),
    )
    got = []
    for s in net.stage_shapes_299:
        paths = binding.blocks[s.block]
        call = tr.first(paths[-1]) if paths else None
        stage.where.append(paths[-1] if paths else s.block)
        want = (1, s.channels, *shapes[s.block][1])
        if tr.size == net.input_size:
            want = (1, s.channels, s.height, s.width)
        if call is None:
            stage.fail(s.block, "did not run")
            continue
        got.append(_hwc(call.output_shape))
        if call.output_shape != want:
            stage.fail(s.block, f"{_hwc(call.output_shape)} (expected {_hwc(want)})")
    stage.found.append(", ".join(got))

    forward = _Item(f"{net.name}/layout/forward", f"a 1x3x{tr.size}x{tr.size} forward runs", net.ref)
    forward.where.append("")
    if tr.error:
        forward.fail("", f"forward raised {tr.error}")
    else:
        forward.found.append(f"ran, {sum(len(c) for c in tr.calls.values())} module calls")
    return [forward.result(), repeats.result(), stage.result(), _check_accounted(net, view, tr, binding)]


def _check_accounted(net: S.Network, view: ModelView, tr: Trace, binding: _Binding) -> ItemResult:
    """Every layer of the model is one of the spec's ops (or inside one), or a residual
    block's final ReLU: nothing unlisted computes or holds parameters."""
    covered: set[str] = set()
    for block in (*net.blocks, net.head):
        for path in binding.blocks[block.name]:
            for branch in _all_branches(block):
                bpath = _join(path, branch.name)
                for i in range(len(branch.ops)):
                    op = _op_path(view, bpath, i)
                    if op:
                        covered.add(op)
                        covered.update(view.descendants(op))
            if block.linear is not None and path in view.children:
                covered.update(c for c in view.children[path] if view.layer(c) == "relu")
    leaves = view.leaves()
    stray = [leaf for leaf in leaves if leaf not in covered]
    item = _Item(
        f"{net.name}/layout/modules-accounted", "every layer is a paper op (or a residual ReLU)", net.ref
    )
    item.where.append("")
    for leaf in stray:
        ran = tr.count(leaf)
        item.fail(
            leaf, f"{view.class_name(leaf)} ({view.parameters(leaf)} parameters, ran {ran}x) is no paper op"
        )
    item.found.append(f"all {len(leaves)} layers bound")
    return item.result()


def _check_scale(net: S.Network, fits_by_block: dict[str, list[_ResidualFit]]) -> ItemResult:
    spec = net.residual_scale
    assert spec is not None
    item = _Item(
        f"{net.name}/residual-scale",
        f"a scale s with {spec.low:g} < s <= {spec.high:g} and s != 1 (scaling present), one per block type; "
        f"recommended {spec.recommended[0]:g}-{spec.recommended[1]:g}",
        spec.ref,
    )
    summary = []
    for block, fits in fits_by_block.items():
        item.where += [f.path for f in fits]
        scales = [f.scale for f in fits if f.scale is not None]
        if not scales:
            item.fail(block, "no scale measured")
            continue
        lo, hi = min(scales), max(scales)
        summary.append(f"{block} {lo:.4g}" + ("" if hi - lo < 1e-4 else f"..{hi:.4g}") + f" x{len(scales)}")
        # s = 1 within measurement error is no scaling (Decision fig20-scale-value)
        absent = [f.path for f in fits if f.scale is not None and abs(f.scale - 1.0) < _SCALE_ONE]
        present = [f for f in fits if f.scale is not None and abs(f.scale - 1.0) >= _SCALE_ONE]
        if absent:
            item.fail(block, f"no scaling (s = 1.0) in {len(absent)} of {len(fits)} blocks")
        for fit in present:
            if not spec.low < fit.scale <= spec.high:
                item.fail(fit.path, f"s = {fit.scale:.4g} outside ({spec.low:g}, {spec.high:g}]")
        if hi - lo >= _SCALE_ONE:
            item.fail(block, f"scales differ between blocks ({lo:.4g}..{hi:.4g})")
        if present and not (spec.recommended[0] <= lo and hi <= spec.recommended[1]):
            item.notes.append(
                f"{block}: outside the recommended {spec.recommended[0]:g}-{spec.recommended[1]:g}"
            )
    item.found.append(", ".join(summary))
    return item.result()


def check_model(
    model: object, name: str, *, target: str = "", size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED
) -> ModelReport:
    """Check a built model (Lucid or torch) against the spec of ``name``."""
    if name not in S.SPECS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(S.SPECS)}")
    if size < 75:
        raise ValueError(f"size must be >= 75 (the smallest input all three models accept), got {size}")
    net = S.SPECS[name]
    view = ModelView(model)
    binding = _bind(view, net)
    channels = net.blocks[0].in_channels
    tr = trace(model, channels=channels, size=size, seed=seed, keep=_kept(view, binding, net))
    results = _check_layout(net, view, tr, binding)
    fits_by_block: dict[str, list[_ResidualFit]] = {}
    for block in (*net.blocks, net.head):
        block_results, fits = _check_block(net, block, view, tr, binding.blocks[block.name], size)
        results += block_results
        if block.residual:
            fits_by_block[block.name] = fits
    if net.residual_scale is not None:
        results.append(_check_scale(net, fits_by_block))
    return ModelReport(name, target, tuple(results), view.parameters(""), net.params)


# ----- command line: ``python -m conformance check``


def add_check_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``check`` subcommand; its ``func`` default returns the exit code."""
    from conformance.targets import TARGETS

    p = subparsers.add_parser(
        "check",
        help="hold built models against the paper spec",
        description="Hold the port, its torch twins or upstream Lucid against the paper, item by item.",
    )
    p.add_argument("--target", choices=TARGETS, default="port", help="what to check (default: port)")
    p.add_argument(
        "--model", action="append", choices=S.MODEL_NAMES, help="model to check (repeatable; default: all)"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print a JSON list of {"id", "status", "expected", "found", "evidence"}',
    )
    p.add_argument("--failures", action="store_true", help="list only failing items in the tables")
    p.add_argument(
        "--size",
        type=int,
        default=DEFAULT_SIZE,
        help=f"input side of the traced forward (default {DEFAULT_SIZE}; 299 is the paper's)",
    )
    p.set_defaults(func=_check_main)
    return p


def _check_main(args: argparse.Namespace) -> int:
    from conformance import targets

    reports = []
    for name in args.model or S.MODEL_NAMES:
        model = targets.build(args.target, name)
        reports.append(check_model(model, name, target=args.target, size=args.size))
    if args.json:
        print(json.dumps([r.to_json() for report in reports for r in report.results], indent=1))
    else:
        print(render(reports, targets.describe(args.target), failures_only=args.failures, size=args.size))
    return 1 if any(report.failures for report in reports) else 0


def render(
    reports: Sequence[ModelReport], title: str, *, failures_only: bool = False, size: int = DEFAULT_SIZE
) -> str:
    """Human output: a table per model, the evidence of each failure, a summary line."""
    from tabulate import tabulate

    lines = [f"{title}; traced at 1x3x{size}x{size}", ""]
    for report in reports:
        shown = report.failures if failures_only else report.results
        rows = [
            (
                r.id.removeprefix(f"{report.model}/"),
                "FAIL" if r.status == "fail" else "pass",
                r.expected,
                r.found,
            )
            for r in shown
        ]
        lines.append(f"{report.model}: {report.parameters:,} parameters (spec {report.spec_parameters:,})")
        if rows:
            headers = ("item", "status", "expected", "found")
            lines.append(tabulate(rows, headers=headers, maxcolwidths=[None, None, 48, 64]))
        for r in report.failures:
            lines += [f"  FAIL {r.id}", f"    expected: {r.expected}", f"    found:    {r.found}"]
            lines.append(f"    evidence: {r.evidence}")
        passed = len(report.results) - len(report.failures)
        lines += [
            f"{report.model}: {len(report.results)} items, {passed} pass, {len(report.failures)} fail",
            "",
        ]
    total = sum(len(r.results) for r in reports)
    failed = sum(len(r.failures) for r in reports)
    lines.append(f"{title}: {len(reports)} model(s), {total} items, {failed} failing")
    return "\n".join(lines)
