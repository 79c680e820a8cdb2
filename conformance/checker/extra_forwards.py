"""Checks that need one more forward than the eval-mode trace: what a model does only in
training (``check_dropout_used``: the head's dropout, and anything else that acts in
training alone) and what it does only on large values (``check_residual_at_scale``: an
activation after a residual sum that is the ReLU on small values only)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import numpy as np

from conformance import spec as S
from conformance.checker.binding import Binding, join_path, op_path
from conformance.checker.blocks import fit_residual
from conformance.checker.results import op_item
from conformance.introspect import ModelView, Trace, same_array, trace

__all__ = ["LARGE_BLOCK_VALUES", "check_dropout_used", "check_residual_at_scale"]


@contextlib.contextmanager
def _global_rngs_kept() -> Iterator[None]:
    """numpy's global RNG (Lucid's dropout draws from it) and torch's, if loaded (its CPU
    and CUDA generators, as ``conformance.ops`` forks them), are left as they were: a
    conformance check must not change what a user's next draw gives."""
    numpy_state = np.random.get_state()
    torch = sys.modules.get("torch")
    try:
        with torch.random.fork_rng() if torch is not None else contextlib.nullcontext():
            yield
    finally:
        np.random.set_state(numpy_state)


def _returns(t: Trace, root: str, op: str) -> bool | None:
    """Whether the model's output is exactly ``op``'s in trace ``t`` (None: not observed)."""
    out, last = t.first(root), t.first(op)
    if out is None or last is None or out.output is None or last.output is None:
        return None
    return same_array(out.output, last.output)


def check_dropout_used(
    model: object,
    net: S.Network,
    view: ModelView,
    binding: Binding,
    eval_trace: Trace,
    channels: int,
    size: int,
    seed: int,
) -> dict[str, list[tuple[str, str]]]:
    """A head dropout is the identity in the eval-mode trace, so a forward that runs it
    and feeds the op after it the undropped array passes every eval-mode check; and what
    a forward does only in training (``F.dropout(x, p, self.training)``) never shows in
    eval. One more forward, with the model in training mode but its BatchNorms in eval
    (so that nothing else may change), shows both: the pool before the dropout must
    output, and the dropout read, what they do in eval (nothing before it acts only in
    training), the op after it must read exactly the dropped array (any mask: with keep
    < 1 it differs from the input), and the model return that op's output. Problems by
    item id."""
    problems: dict[str, list[tuple[str, str]]] = {}
    root = binding.blocks["head"][0]
    stage = net.head.stages[0]
    training = {name for name, module in view.modules.items() if not view.adapter.is_batchnorm(module)}
    for branch in stage.branches:
        if branch.ops[-1].kind != "dropout":
            continue
        dpath = op_path(view, join_path(root, branch.name), len(branch.ops) - 1)
        readers = [b for b in stage.branches if b.source == branch.name]
        if not dpath or not readers or view.op_kind(dpath) != "dropout":
            continue  # the op items report a missing or wrong module
        rpath = op_path(view, join_path(root, readers[0].name), 0)
        if not rpath:
            continue
        # The op that feeds the dropout (the global pool): its output is copied before the
        # dropout runs, so an in-place dropout cannot overwrite it.
        feeder = stage.branch(branch.source) if branch.source else None
        fpath = op_path(view, join_path(root, feeder.name), len(feeder.ops) - 1) if feeder else None
        keep = {dpath, rpath, root} | ({fpath} if fpath else set())
        with _global_rngs_kept():  # the dropout's mask comes from the framework's global RNG
            tr = trace(model, channels=channels, size=size, seed=seed, keep=keep, train=training)
        drop, read = tr.first(dpath), tr.first(rpath)
        if drop is None or read is None or drop.output is None or not read.inputs:
            continue  # the -runs items report an op that did not run
        found = problems.setdefault(f"{net.name}/{net.head.name}/{op_item(branch, len(branch.ops) - 1)}", [])
        mode = "in training mode (BatchNorms in eval)"
        # What the dropout reads must be what it reads in eval: its feeder's output, and its
        # own recorded input unless it dropped in place (its input then reads as its output).
        compared: list[tuple[str, np.ndarray | None, np.ndarray | None]] = []  # (what, train, eval)
        if fpath:
            train_call, eval_call = tr.first(fpath), eval_trace.first(fpath)
            outputs = [None if c is None else c.output for c in (train_call, eval_call)]
            compared.append((f"{fpath}'s output", *outputs))
        before = eval_trace.first(dpath)
        if (
            drop.inputs
            and before is not None
            and before.inputs
            and not same_array(drop.inputs[0], drop.output)
        ):
            compared.append(("its input", drop.inputs[0], before.inputs[0]))
        for what, in_training, in_eval in compared:
            if in_training is not None and in_eval is not None and not same_array(in_training, in_eval):
                found.append(
                    (dpath, f"{mode} {what} differs from eval's: something before it acts in training only")
                )
        if not same_array(read.inputs[0], drop.output):
            found.append((dpath, f"bypassed: {mode} {rpath} does not read its output"))

        # Only what changes in training: a model output that is never fc's is hand-over's.
        if _returns(eval_trace, root, rpath) and _returns(tr, root, rpath) is False:
            found.append(
                (
                    dpath,
                    f"{mode} the model's output is not {rpath}'s: something after it acts in training only",
                )
            )
    return {item: found for item, found in problems.items() if found}


# Fresh weights keep a residual block's values small (below ~0.2 in the default trace),
# where an activation that is the identity on small values (a ReLU6, a clamp) looks like
# the paper's ReLU: the formula must also hold on an input scaled so that the first
# residual block reads values about this large.
LARGE_BLOCK_VALUES = 1000.0


def check_residual_at_scale(
    model: object, net: S.Network, binding: Binding, eval_trace: Trace, channels: int, size: int, seed: int
) -> tuple[dict[str, dict[str, list[tuple[str, str]]]], dict[str, dict[str, list[str]]]]:
    """Blocks whose formula holds in the default trace but not on a larger input:
    problems for their residual-formula items, by block and item id; and notes where the
    larger input overflows the model's dtype."""
    pairs = [
        (block, path, join_path(path, block.linear.name))
        for block in net.blocks
        if block.linear is not None
        for path in binding.blocks[block.name]
    ]
    first = eval_trace.first(pairs[0][1]) if pairs else None
    if first is None or not first.inputs or not np.isfinite(first.inputs[0]).all():
        return {}, {}  # no residual block, or none ran: the -runs and formula items say so
    reach = float(np.max(np.abs(first.inputs[0])))
    if reach == 0.0:
        return {}, {}
    scale = LARGE_BLOCK_VALUES / reach
    model_input = eval_trace.first("")
    if model_input is not None and model_input.inputs:  # the scaled input within 1/16 of the dtype's range
        x = model_input.inputs[0]
        scale = min(scale, float(np.finfo(x.dtype).max) / 16 / max(float(np.max(np.abs(x))), 1e-30))
    keep = {p for _, path, lpath in pairs for p in (path, lpath)}
    large = trace(model, channels=channels, size=size, seed=seed, keep=keep, scale=scale)
    problems: dict[str, dict[str, list[tuple[str, str]]]] = {}
    notes: dict[str, dict[str, list[str]]] = {}
    for block, path, lpath in pairs:
        if fit_residual(eval_trace, path, lpath).problem:
            continue  # residual-formula already fails here
        calls = [large.first(name) for name in (path, lpath)]
        arrays = [a for c in calls if c is not None for a in (*(c.inputs or ()), c.output) if a is not None]
        if not all(np.isfinite(a).all() for a in arrays):  # overflowed: nothing to fit
            item = f"{net.name}/{block.name}/residual-formula"
            note = f"{path}: not checked on an input {scale:.3g}x larger (it overflows {arrays[0].dtype})"
            notes.setdefault(block.name, {}).setdefault(item, []).append(note)
            continue
        fit = fit_residual(large, path, lpath)
        if fit.problem:
            item = f"{net.name}/{block.name}/residual-formula"
            call = large.first(path)
            values = (
                f", values up to {float(np.max(np.abs(call.output))):.3g}"
                if call and call.output is not None
                else ""
            )
            what = f"on an input {scale:.3g}x larger{values}: {fit.problem}"
            problems.setdefault(block.name, {}).setdefault(item, []).append((path, what))
    return problems, notes
