"""One block on every repeat: its branches, concat layouts and, for a residual block, its
formula and width."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conformance import spec as S
from conformance.checker.binding import branch_path, join_path, op_path
from conformance.checker.op_checks import check_functional_op, check_op, find_offsets, fmt_shape, rtol_for
from conformance.checker.results import Item, ItemResult, block_item_ids, op_item
from conformance.introspect import Call, ModelView, Trace, latent_constants


def _stage_output(
    view: ModelView, tr: Trace, block: S.Block, path: str, index: int
) -> tuple[np.ndarray | None, str]:
    """The array a stage hands on, and where it was read."""
    if index + 1 < len(block.stages):
        nxt = block.stages[index + 1]
        for branch in nxt.branches:
            if branch.source is None:
                op = op_path(view, join_path(path, branch.name), 0)
                call = tr.first(op) if op else None
                if call and call.inputs:
                    return call.inputs[0], f"input of {op}"
        return None, "no op of the next stage ran"
    if block.linear is not None:
        lpath = join_path(path, block.linear.name)
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


def _check_concat(
    item: Item,
    view: ModelView,
    tr: Trace,
    stage: S.Stage,
    path: str,
    out: np.ndarray | None,
    where: str,
    ends: dict[str, BranchEnd],
) -> None:
    """The stage output holds each branch's output at its paper offset (or at the offset
    of an order a Decision accepts for this concat). A branch's output is its container's
    (each call), or, where a forward calls the container's ops one by one and never the
    container, its last op's (``ends``)."""
    if out is None:
        if not any(tr.count(join_path(path, name)) or ends[name].output is not None for name in stage.output):
            # A block that never ran: its branches' -runs items own the fault.
            item.notes.append(f"concat not observed ({where}); no branch ran: see the -runs items")
            return
        item.fail(path, f"concat not observed ({where})")
        return
    outputs: dict[str, list[np.ndarray]] = {}
    for name in stage.output:
        calls = tr.calls.get(join_path(path, name), [])
        outputs[name] = [c.output for c in calls if c.output is not None]
        end = ends[name].output
        if not outputs[name] and end is not None:
            outputs[name] = [end[0]]
    widths = {n: (o[0].shape[1] if o else stage.branch(n).out_channels) for n, o in outputs.items()}
    located = {n: find_offsets(out, o[0]) for n, o in outputs.items() if o}
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


# The array an op should read, and where it was read (None where it is not observed).
Source = tuple[np.ndarray, str] | None


@dataclass
class BranchEnd:
    """What a branch hands on: its output grid, width as built and traced output."""

    hw: tuple[int, int]
    width: int
    output: Source


@dataclass
class ResidualFit:
    """One block's fit: ``scale`` is None unless the formula holds (``problem`` None), so
    the residual-scale item compares only scales that are scales."""

    path: str
    scale: float | None
    error: float | None
    problem: str | None


def fit_residual(tr: Trace, path: str, linear_path: str) -> ResidualFit:
    """Fit ``y = relu(x + s * L)`` on one block call: on the positive outputs
    ``y - x = s * L``, so ``s`` is a least-squares ratio; then compare everywhere."""
    call, lin = tr.first(path), tr.first(linear_path)
    if call is None or lin is None or not call.inputs or call.output is None or lin.output is None:
        return ResidualFit(path, None, None, "the block or its linear conv did not run")
    x, y, lo = (a.astype(np.float64) for a in (call.inputs[0], call.output, lin.output))
    if not x.shape == y.shape == lo.shape:
        return ResidualFit(path, None, None, f"input {x.shape}, linear {lo.shape}, output {y.shape} differ")
    positive = y > 0
    denom = float(np.sum(lo[positive] ** 2))
    if denom == 0.0:
        return ResidualFit(path, None, None, "no positive output to fit the scale on")
    s = float(np.sum((y - x)[positive] * lo[positive])) / denom  # least squares on y > 0
    predicted = np.maximum(x + s * lo, 0.0)
    scale = max(float(np.max(np.abs(x))), float(np.max(np.abs(s * lo))), 1e-30)
    err = float(np.max(np.abs(predicted - y))) / scale
    if err > rtol_for(call.output):
        # no single s fits: the best one is no scale, and residual-formula owns the fault
        return ResidualFit(
            path,
            None,
            err,
            f"y != ReLU(x + s * linear) for any single s (best s {s:.4g}, error {err:.1e})",
        )
    return ResidualFit(path, s, err, None)


def _feeding_call(tr: Trace, path: str, reader: str | None) -> Call | None:
    """The call of op ``path`` whose output the next op of its chain (``reader``) should
    read: the last one to finish before the reader's first call. An op applied twice in a
    row feeds the reader its second output (the op's -runs item owns that fault); a
    block applied twice feeds each call of the reader its own."""
    first = tr.first(path)
    reader_call = tr.first(reader) if reader else None
    if first is None or reader_call is None:
        return first
    before = [call for call in tr.calls[path] if call.index < reader_call.index]
    return before[-1] if before else first


def check_block(
    net: S.Network,
    block: S.Block,
    view: ModelView,
    tr: Trace,
    paths: list[str],
    size: int,
    extra: dict[str, list[tuple[str, str]]] | None = None,
    handed: Source = None,
    notes: dict[str, list[str]] | None = None,
) -> tuple[list[ItemResult], list[ResidualFit]]:
    """The block's items on every repeat; ``extra`` adds problems found elsewhere to an op
    or residual item (item id -> (where, what)), e.g. the head's train-mode dropout check,
    and ``notes`` adds notes to them (item id -> texts). ``handed``
    is what the previous block hands the head (checked on the root, which has no call of
    its own): the layout/hand-over item checks that the head's first op reads it; here it
    is only what a first op applied as a function is computed from."""
    if not paths:
        return _missing_block(net, block), []
    prefix = f"{net.name}/{block.name}"
    in_hw = S.block_shapes(net, size)[block.name][0]
    runs: dict[str, Item] = {}
    ops: dict[str, Item] = {}
    concats: dict[str, Item] = {}
    residual = {
        "formula": Item(
            f"{prefix}/residual-formula",
            "y = ReLU(x + s * linear1x1(concat)), one scalar s, no BatchNorm on the sum",
            f"{block.ref}, Fig. 20",
        ),
        "width": Item(
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
    fits: list[ResidualFit] = []
    batch = 1

    def run_branch(
        bpath: str,
        branch: S.Branch,
        hw: tuple[int, int],
        feed: int,
        source: Source,
        calls: dict[str, int],
        after: str | None = None,
        fallback: Source = None,
        concat: np.ndarray | None = None,
    ) -> BranchEnd:
        """Check the ops of one branch on one repeat, each against the width and the array
        its predecessor (or ``feed`` / ``source`` for the first) hands it; returns the
        branch's output grid, width as built and output array. An op with no module is
        checked by the input of the module after it (the next op, or ``after`` for the
        last: the first op of the branch that reads this one), computed from ``source``
        (``fallback`` where none is observed: see ``handed``), or, ending a concat's
        branch, by the stage output ``concat``."""
        rid = f"{prefix}/{branch.name}-runs"
        run_item = runs.setdefault(rid, Item(rid, f"every op of {branch.name} runs", block.ref))
        run_item.where.append(bpath)
        counts = []
        for i, op in enumerate(branch.ops):
            opath = op_path(view, bpath, i)
            hw = S.op_output_hw(op, *hw)
            shape = (
                (batch, op.out_channels) if op.kind in ("dropout", "fc") else (batch, op.out_channels, *hw)
            )
            oid = f"{prefix}/{op_item(branch, i)}"
            expected = f"{op.label} -> {fmt_shape(shape)} at {size}"
            item = ops.setdefault(oid, Item(oid, expected, op.ref))
            item.where.append(opath or f"{bpath}[{i}]")
            if opath is None:  # applied as a function, or absent
                reader = op_path(view, bpath, i + 1) if i + 1 < len(branch.ops) else after
                ends_concat = concat if i + 1 == len(branch.ops) else None
                found, problems, output, count = check_functional_op(
                    tr, op, source or fallback, reader, ends_concat
                )
                item.found.append(found)
                if problems:
                    item.fail(f"{bpath}[{i}]", ", ".join(problems))
                counts.append(count)
                source, feed = output, op.out_channels
                continue
            found, problems, notes, feed = check_op(view, tr, opath, op, shape, feed, source, rid)
            item.found.append(found)
            if problems:
                item.fail(opath, ", ".join(problems))
            item.notes += notes
            counts.append(tr.count(opath))
            call = _feeding_call(tr, opath, op_path(view, bpath, i + 1) if i + 1 < len(branch.ops) else None)
            # named within the block, so one fault on every repeat reads as one problem
            local = opath.removeprefix(f"{bpath.rpartition('.')[0]}.")
            source = (call.output, f"output of {local}") if call and call.output is not None else None
        idle = [str(i) for i, count in enumerate(counts) if count == 0]
        if idle:
            ops_text = f"op {idle[0]}" if len(idle) == 1 else f"ops {', '.join(idle)}"
            run_item.fail(bpath, f"{ops_text} of {len(counts)} never ran")
        else:
            run_item.found.append("ran" if max(counts) == 1 else f"ran {max(counts)} times per forward")
        calls[branch.name] = max(counts)
        return BranchEnd(hw, feed, source)

    def flag_extra_runs(path: str, calls: dict[str, int]) -> None:
        """A branch applied more often than its block fails its ``-runs`` item. A branch
        that runs in place of one that never runs (upstream's stem: ``branch2_left``
        twice, ``branch2_right`` never) is one fault, owned by the branch that never ran."""
        if 0 in calls.values():  # say what ran instead
            counts = ", ".join(f"{name} {count}" for name, count in calls.items())
            note = f"calls per forward in {path or '<root>'}: {counts}"
            for name in calls:
                runs[f"{prefix}/{name}-runs"].notes.append(note)
            return
        block_calls = tr.count(path) if path else 1  # the head is checked on the root
        for name, count in calls.items():
            if block_calls and count > block_calls:
                runs[f"{prefix}/{name}-runs"].fail(
                    join_path(path, name), f"runs {count} times per forward, its block {block_calls}"
                )

    for path in paths:
        # The block's input: its traced array and width (the head, checked on the root,
        # is fed by the last trunk block, which the layout items hold).
        call = tr.first(path) if path else None
        hw, width = in_hw, block.in_channels
        stage_input: Source = None
        if call and call.inputs:
            width, stage_input = call.inputs[0].shape[1], (call.inputs[0], "block input")
        for si, stage in enumerate(block.stages):
            ends: dict[str, BranchEnd] = {}
            calls: dict[str, int] = {}
            out, where = _stage_output(view, tr, block, path, si) if stage.is_concat else (None, "")
            for branch in stage.branches:
                start = BranchEnd(hw, width, stage_input) if branch.source is None else ends[branch.source]
                readers = [b.name for b in stage.branches if b.source == branch.name]
                after = op_path(view, branch_path(view, path, block, readers[0]), 0) if readers else None
                fallback = handed if si == 0 and branch.source is None else None
                ends[branch.name] = run_branch(
                    branch_path(view, path, block, branch.name),
                    branch,
                    start.hw,
                    start.width,
                    start.output,
                    calls,
                    after,
                    fallback,
                    out if branch.name in stage.output else None,
                )
            flag_extra_runs(path, calls)
            hw = ends[stage.output[0]].hw
            width = sum(ends[name].width for name in stage.output)  # as built
            stage_input = ends[stage.output[0]].output
            if stage.is_concat:
                cid = f"{prefix}/{stage.name}"
                names = " + ".join(f"{n} {stage.branch(n).out_channels}" for n in stage.output)
                item = concats.setdefault(cid, Item(cid, f"[{names}] = {stage.out_channels}", stage.ref))
                item.where.append(path)
                _check_concat(item, view, tr, stage, path, out, where, ends)
                # The concat item holds the layout of the array the next stage's first op
                # reads; every other first op of that stage must read the same array.
                local = where.replace(f"{path}.", "") if path else where
                last = si + 1 == len(block.stages)
                stage_input = (out, f"stage output ({local})") if out is not None and not last else None
        if block.linear is not None:
            lpath = join_path(path, block.linear.name)
            linear_calls: dict[str, int] = {}
            run_branch(lpath, block.linear, hw, width, None, linear_calls)
            flag_extra_runs(path, linear_calls)
            fit = fit_residual(tr, path, lpath)
            fits.append(fit)
            formula = residual["formula"]
            formula.where.append(path)
            if fit.problem:
                formula.fail(path, fit.problem)
            _check_width(residual["width"], view, tr, block, path, lpath)

    items = {**ops, **{item.id: item for item in residual.values()}}
    for oid, problems in (extra or {}).items():
        for where, what in problems:
            items[oid].fail(where, what)
    for oid, said in (notes or {}).items():  # what could not be checked: said, not failed
        items[oid].notes += said
    errors = [f.error for f in fits if f.error is not None and f.problem is None]
    if errors:
        residual["formula"].found.append(f"holds in {len(errors)}, max rel. error {max(errors):.0e}")
    results = [i.result() for i in runs.values()] + [i.result() for i in ops.values()]
    results += [i.result() for i in concats.values()]
    if block.linear is not None:
        results += [residual["formula"].result(), residual["width"].result()]
    return results, fits


def _missing_block(net: S.Network, block: S.Block) -> list[ItemResult]:
    """Every item of a block type the model binds no module to fails with that reason: a
    report lists every item id (``expected_item_ids``), so a missing group's items do not
    vanish from it (layout/repeats says what the trunk holds instead)."""
    return [
        ItemResult(
            item,
            "fail",
            f"{block.repeats} {block.title} block(s), this item checked on each",
            f"no {block.name} blocks found",
            f"{block.ref}. No module of the trunk is bound to {block.name}: see layout/repeats",
        )
        for item in block_item_ids(net.name, block)
    ]


def _check_width(item: Item, view: ModelView, tr: Trace, block: S.Block, path: str, lpath: str) -> None:
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
