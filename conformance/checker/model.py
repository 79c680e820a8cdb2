"""The model-level items (layout, modules accounted for, residual scale) and
``check_model``, which runs every item on one built model."""

from __future__ import annotations

import numpy as np

from conformance import spec as S
from conformance.checker.binding import Binding, bind_spec, branch_path, join_path, kept_paths, op_path
from conformance.checker.blocks import ResidualFit, check_block
from conformance.checker.extra_forwards import check_dropout_used, check_residual_at_scale
from conformance.checker.op_checks import convention_differences, fmt_hw, fmt_hwc
from conformance.checker.results import Item, ItemResult, ModelReport, all_branches
from conformance.introspect import INERT_KINDS, ModelView, Trace, same_array, trace

MIN_SIZE = 75  # the smallest input all three accept; every op still runs (74 collapses a grid to 0)
# The last blocks run on a grid this wide or wider at the default size: on 1x1 a
# spatial fault (a flipped branch, an NHWC array read as NCHW) changes no value.
DEFAULT_LAST_GRID = 2


def smallest_size_with_last_grid(side: int) -> int:
    """The smallest input size (>= MIN_SIZE) at which the last trunk block of every model
    outputs at least a ``side`` x ``side`` grid (spec arithmetic: 107 for 2x2)."""
    size = MIN_SIZE
    while any(min(S.block_shapes(net, size)[net.blocks[-1].name][1]) < side for net in S.SPECS.values()):
        size += 1
    return size


DEFAULT_SIZE = smallest_size_with_last_grid(DEFAULT_LAST_GRID)
DEFAULT_SEED = 0
# A fitted residual scale this close to 1 is no scaling; fits are exact to ~1e-7.
_SCALE_ONE = 1e-3


def _check_layout(net: S.Network, view: ModelView, tr: Trace, binding: Binding) -> list[ItemResult]:
    expected = ", ".join(f"{b.name} x{b.repeats}" for b in net.blocks)
    repeats = Item(f"{net.name}/layout/repeats", f"{expected}, in this order, each applied once", net.ref)
    repeats.found.append(", ".join(f"{cls} x{len(p)}" for cls, p in binding.groups))
    repeats.where = list(binding.trunk)
    if len(binding.groups) != len(net.blocks):
        repeats.fail(
            "", f"{len(binding.groups)} groups of blocks, expected {len(net.blocks)}: {repeats.found[0]}"
        )
    for block in net.blocks:
        if len(binding.blocks[block.name]) != block.repeats:
            repeats.fail(block.name, f"{len(binding.blocks[block.name])} blocks (expected {block.repeats})")
    # The paper applies each block once per forward: a block applied twice is an extra
    # block, though the module count is right.
    for path in binding.trunk:
        if tr.count(path) > 1:
            repeats.fail(path, f"applied {tr.count(path)} times per forward (once expected)")
    ran = [(tr.first(p).index, p) for p in binding.trunk if tr.first(p)]
    if [p for _, p in sorted(ran)] != [p for _, p in ran]:
        repeats.fail("", f"blocks run out of order: {', '.join(p for _, p in sorted(ran))}")

    shapes = S.block_shapes(net, tr.size)
    stated = ", ".join(f"{s.height}x{s.width}x{s.channels}" for s in net.stage_shapes_299)
    derived = ", ".join(f"{fmt_hw(shapes[s.block][1])}x{s.channels}" for s in net.stage_shapes_299)
    stage = Item(
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
        got.append(fmt_hwc(call.output_shape))
        if call.output_shape != want:
            stage.fail(s.block, f"{fmt_hwc(call.output_shape)} (expected {fmt_hwc(want)})")
    stage.found.append(", ".join(got))

    forward = Item(f"{net.name}/layout/forward", f"a 1x3x{tr.size}x{tr.size} forward runs", net.ref)
    forward.where.append("")
    if tr.error:
        forward.fail("", f"forward raised {tr.error}")
    elif tr.returned:  # a tuple or dict around the logits: nothing checks what it holds
        forward.fail("", f"the model returns {tr.returned}, not one tensor (the logits)")
    else:
        forward.found.append(f"ran, {sum(len(c) for c in tr.calls.values())} module calls")
    return [
        forward.result(),
        repeats.result(),
        stage.result(),
        _check_hand_over(net, view, tr, binding),
        _check_accounted(net, view, tr, binding),
        _check_conventions(net, view, binding),
    ]


def _check_hand_over(net: S.Network, view: ModelView, tr: Trace, binding: Binding) -> ItemResult:
    """The data handed on between blocks: the first block (the stem, as the spec defines
    it) reads the model input, each block exactly the previous block's traced output, and
    the head's first op the last block's output. Each block checks its own inside; only
    this ties them together (a block whose output is dropped, an unlisted op between two
    blocks or before the head, would otherwise pass). A block that ends in a chain hands
    on its last op's output (``_check_chain_outputs``)."""
    item = Item(
        f"{net.name}/layout/hand-over",
        "the stem reads the input, each block the previous block's output, the head the last block's; "
        "a block ending in a chain (the head: the model's output) outputs its last op's output",
        net.ref,
    )
    root = tr.first("")
    handed: list[tuple[str, np.ndarray]] = []  # (what, array) handed on so far, in order
    if root and root.inputs:
        handed.append(("the model input", root.inputs[0]))
    readers = [p for block in net.blocks for p in binding.blocks[block.name]]
    head_branch = net.head.stages[0].branches[0]
    head_op = op_path(view, join_path(binding.blocks["head"][0], head_branch.name), 0)
    for path in [*readers, head_op]:
        if not path:
            continue
        call = tr.first(path)
        label = "" if path in readers else f"the head's {head_branch.name} "
        item.where.append(path)
        if call is None or not call.inputs or not handed:
            item.notes.append(f"{path}: input not observed (did not run)")
        else:
            what, expected = handed[-1]
            got = call.inputs[0]
            if not same_array(got, expected):
                same = [w for w, a in handed[:-1] if a.shape == got.shape and np.array_equal(a, got)]
                instead = f" (it reads {same[-1]})" if same else ""
                item.fail(path, f"{label}does not read {what}{instead}")
        last = tr.calls[path][-1] if call is not None else None  # a block applied twice: layout/repeats
        if path in readers and last is not None and last.output is not None:
            handed.append((f"the output of {path}", last.output))
    _check_chain_outputs(item, net, view, tr, binding)
    item.found.append(f"{len(item.where)} hand-overs, each the same array")
    return item.result()


def _last_output(tr: Trace, path: str) -> np.ndarray | None:
    """The output of the last call of ``path`` (a block applied twice: layout/repeats)."""
    calls = tr.calls.get(path)
    return calls[-1].output if calls else None


def _handed_to_head(net: S.Network, tr: Trace, binding: Binding) -> tuple[np.ndarray, str] | None:
    """The last trunk block's output, which the head reads (layout/hand-over checks that
    it does), and where it was read."""
    paths = binding.blocks[net.blocks[-1].name]
    output = _last_output(tr, paths[-1]) if paths else None
    return None if output is None else (output, f"output of {paths[-1]}")


def _check_chain_outputs(item: Item, net: S.Network, view: ModelView, tr: Trace, binding: Binding) -> None:
    """A block whose last stage is a chain (Fig. 14's stem, the head, a single
    ``output=("fc",)``) has no concat item or residual formula to tie its output to its
    ops: its module's output must be its last op's, and the head's module is the model, so
    the model returns the fc's output (logits zeroed or clipped after the fc fail here)."""
    for block in (*net.blocks, net.head):
        stage = block.stages[-1]
        if stage.is_concat or block.residual:  # the concat item / residual-formula read the output
            continue
        branch = stage.branch(stage.output[0])
        for path in binding.blocks[block.name]:
            op = op_path(view, branch_path(view, path, block, branch.name), len(branch.ops) - 1)
            if not op:
                continue  # the op item reports the missing module
            item.where.append(op)
            made, handed = _last_output(tr, op), _last_output(tr, path)
            if made is None or handed is None:
                item.notes.append(f"{path or '<root>'}: output not observed (did not run, or no tensor)")
            elif not same_array(handed, made):
                what = "its output is not its" if path else "the model's output is not the head's"
                item.fail(path, f"{what} last op's output ({op})")


def _check_accounted(net: S.Network, view: ModelView, tr: Trace, binding: Binding) -> ItemResult:
    """Every layer of the model is one of the spec's ops (or inside one), or a residual
    block's final ReLU: nothing unlisted computes; and no container holds parameters of
    its own, so every parameter is in a paper op."""
    covered: set[str] = set()
    for block in (*net.blocks, net.head):
        for path in binding.blocks[block.name]:
            for branch in all_branches(block):
                bpath = branch_path(view, path, block, branch.name)
                for i in range(len(branch.ops)):
                    op = op_path(view, bpath, i)
                    if op:
                        covered.add(op)
                        covered.update(view.descendants(op))
            if block.linear is not None and path in view.children:
                covered.update(c for c in view.children[path] if view.layer(c) == "relu")
    leaves = view.leaves()
    # A Flatten (before the fc) or an Identity moves no value; an empty container runs nothing.
    inert = (*INERT_KINDS, "sequential")
    stray = [leaf for leaf in leaves if leaf not in covered and view.op_kind(leaf) not in inert]
    item = Item(
        f"{net.name}/layout/modules-accounted",
        "every layer is a paper op (or a residual ReLU); every parameter is in one",
        net.ref,
    )
    item.where.append("")
    for leaf in stray:
        ran = tr.count(leaf)
        item.fail(
            leaf, f"{view.class_name(leaf)} ({view.parameters(leaf)} parameters, ran {ran}x) is no paper op"
        )
    # A parameter held directly by a container (a block, a branch) is no layer, so the
    # leaves miss it; it is what a container holds beyond its children.
    for path in view.modules:
        children = view.children[path]
        own = view.parameters(path) - sum(view.parameters(c) for c in children) if children else 0
        if own:
            item.fail(
                path or "<root>",
                f"{view.class_name(path)} holds {own} parameters of its own, outside any paper op",
            )
    item.found.append(f"all {len(leaves)} layers bound, no parameters outside them")
    return item.result()


def _check_conventions(net: S.Network, view: ModelView, binding: Binding) -> ItemResult:
    """Lucid's conventions (``S.CONVENTIONS``) on every bound op: settings the paper does
    not fix, so the op items pass whatever they are; a model that departs from them
    (a TensorFlow port: BatchNorm eps 1e-3, no conv bias) fails this item alone."""
    c = S.CONVENTIONS
    item = Item(
        f"{net.name}/layout/conventions",
        "Lucid's conventions, which the paper does not fix: a bias on every conv and the fc, "
        f"BatchNorm eps {c['bn_eps']:g} and momentum {c['bn_momentum']:g}, "
        "average pools counting their padding",
        "Lucid's defaults (the paper fixes none)",
    )
    for block in (*net.blocks, net.head):
        for path in binding.blocks[block.name]:
            for branch in all_branches(block):
                bpath = branch_path(view, path, block, branch.name)
                for i, op in enumerate(branch.ops):
                    opath = op_path(view, bpath, i)
                    if opath:
                        item.where.append(opath)
                        for difference in convention_differences(view, opath, op):
                            item.fail(opath, difference)
    item.found.append(f"Lucid's on all {len(item.where)} ops")
    return item.result()


def _check_scale(net: S.Network, fits_by_block: dict[str, list[ResidualFit]]) -> ItemResult:
    spec = net.residual_scale
    assert spec is not None
    item = Item(
        f"{net.name}/residual-scale",
        f"a scale s with {spec.low:g} < s <= {spec.high:g} and s != 1 (scaling present), one per block type; "
        f"recommended {spec.recommended[0]:g}-{spec.recommended[1]:g}",
        spec.ref,
    )
    summary = []
    for block, fits in fits_by_block.items():
        item.where += [f.path for f in fits]
        unfit = len([f for f in fits if f.scale is None])
        if unfit:  # one fault, one item: a block whose formula fails has no scale to compare
            item.notes.append(f"{block}: {unfit} of {len(fits)} blocks have no scale (see residual-formula)")
        scales = [f.scale for f in fits if f.scale is not None]
        if not scales:
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
    item.found.append(", ".join(summary) or "no scale to compare")
    return item.result()


def traced_size_problem(size: int) -> str | None:
    """Why ``size`` cannot be traced, or None."""
    if size < MIN_SIZE:
        return f"size must be >= {MIN_SIZE} (the smallest input all three models accept), got {size}"
    return None


def check_model(
    model: object, name: str, *, target: str = "", size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED
) -> ModelReport:
    """Check a built model (Lucid or torch) against the spec of ``name``."""
    if name not in S.SPECS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(S.SPECS)}")
    size_problem = traced_size_problem(size)
    if size_problem:
        raise ValueError(size_problem)
    net = S.SPECS[name]
    view = ModelView(model)
    binding = bind_spec(view, net)
    channels = net.blocks[0].in_channels
    tr = trace(model, channels=channels, size=size, seed=seed, keep=kept_paths(view, binding, net))
    # Bound in the order the blocks ran (not the order they are registered in): traced
    # again, keeping the arrays that binding's checks read, only where the two differ.
    in_run_order = bind_spec(view, net, ran={name: calls[0].index for name, calls in tr.calls.items()})
    if in_run_order != binding:
        binding = in_run_order
        tr = trace(model, channels=channels, size=size, seed=seed, keep=kept_paths(view, binding, net))
    results = _check_layout(net, view, tr, binding)
    extra, notes = check_residual_at_scale(model, net, binding, tr, channels, size, seed)
    extra["head"] = check_dropout_used(model, net, view, binding, tr, channels, size, seed)
    fits_by_block: dict[str, list[ResidualFit]] = {}
    for block in (*net.blocks, net.head):
        handed = _handed_to_head(net, tr, binding) if block is net.head else None
        paths = binding.blocks[block.name]
        block_results, fits = check_block(
            net, block, view, tr, paths, size, extra.get(block.name), handed, notes.get(block.name)
        )
        results += block_results
        if block.residual:
            fits_by_block[block.name] = fits
    if net.residual_scale is not None:
        results.append(_check_scale(net, fits_by_block))
    return ModelReport(name, target, tuple(results), view.parameters(""), net.params)
