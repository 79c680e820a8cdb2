"""The backward phase of a compare: the same seeded gradient on both sides' outputs, then
the model input's gradient, every parameter's and every module call's input gradient
compared, in backward order."""

from __future__ import annotations

import math

import numpy as np

from lucid_inception.frameworks import module_that_raised
from parity._context import PHASES, Context, number_calls, owner_of
from parity._lockstep import SideResult
from parity._metrics import max_errors
from parity.report import Row

__all__ = ["gradient_rows"]


def gradient_rows(
    ctx: Context, results: tuple[SideResult, SideResult], xs: tuple[object, object], grad_seed: int
) -> None:
    """Backpropagate the same seeded gradient on both sides' logits; compare the input
    gradient and every parameter's (rows in backward order: the last module first)."""
    phase = PHASES["backward"]
    outputs = [res.output for res in results]
    for i, out in enumerate(outputs):
        if not hasattr(out, "shape"):  # a tuple, a dict: nothing for the harness to seed
            note = (
                f"backward not run: side {ctx.side(i)}'s model returned a {type(out).__name__}, "
                "not one tensor (backward=True seeds a single output's gradient)"
            )
            row = Row("", "input_grad", None, None, math.inf, math.inf, ctx.tol.grad, False, note)
            ctx.add((phase, 0, 0), row)
            return
    shapes = [tuple(out.shape) for out in outputs]
    if shapes[0] != shapes[1]:
        note = f"backward skipped: the outputs' shapes differ ({shapes[0]} vs {shapes[1]})"
        ctx.add(
            (phase, 0, 0), Row("", "input_grad", None, None, math.inf, math.inf, ctx.tol.grad, False, note)
        )
        return
    upstream = np.random.default_rng(grad_seed).standard_normal(shapes[0]).astype(ctx.dtype)
    grads: list[tuple[np.ndarray | None, dict[str, np.ndarray | None]]] = []
    raised = False
    kept: dict[tuple[str, int], np.ndarray] = {}  # side a's module-input gradients
    receivers = (
        lambda key, grad: kept.__setitem__(key, np.array(grad, copy=True)),
        lambda key, grad: _input_grad_row(ctx, key, kept.pop(key, None), grad),
    )
    for i, (adapter, model) in enumerate(zip(ctx.adapters, ctx.models, strict=True)):
        if ctx.input_grads is not None and not raised:
            ctx.input_grads[i].receive = receivers[i]
        try:
            adapter.backward(outputs[i], upstream)
        except Exception as error:  # e.g. a graph cut by .detach(), a gradient hook that raises
            raised = True
            ctx.add((phase, -math.inf, i), _backward_error_row(ctx, i, error))
        else:
            grads.append((adapter.grad(xs[i]), adapter.parameter_grads(model)))
        finally:
            if ctx.input_grads is not None:
                ctx.input_grads[i].finish()
        outputs[i] = results[i].output = None  # frees this side's graph before the other's backward
    if raised:  # one side's gradients are missing or partial: nothing to compare them with
        ctx.rows = [entry for entry in ctx.rows if entry[1].kind != "input_grad"]
        return
    for key, grad in sorted(kept.items()):  # side a's only: side b's never came
        _input_grad_row(ctx, key, grad, None)
    number_calls(ctx, phase, "input_grad", results)
    (input_a, params_a), (input_b, params_b) = grads
    position = results[0].first_seen
    ctx.add((phase, math.inf, 0), _grad_row("", "input_grad", input_a, input_b, ctx, "input x"))
    for key in list(params_a) + [k for k in params_b if k not in params_a]:
        owner = owner_of(key)
        row = _grad_row(
            owner,
            "param_grad",
            params_a.get(key),
            params_b.get(key),
            ctx,
            key[len(owner) + 1 :],
            present=(key in params_a, key in params_b),
        )
        # Backward order: modules that finished last in the forward get their gradient first.
        ctx.add((phase, -position.get(owner, -1), 0), row)


def _input_grad_row(ctx: Context, key: tuple[str, int], ga: np.ndarray | None, gb: np.ndarray | None) -> None:
    """One module call's input gradient, placed in backward order: after the rows of every
    module that entered after it (its own parameters' included), before those of modules
    that had finished when it entered."""
    side = next(g for g in ctx.input_grads if key in g.entered)
    name, call = key
    what = "the gradient this call sends to its input"
    unmeasured = [(i, g.unmeasured[key]) for i, g in enumerate(ctx.input_grads) if key in g.unmeasured]
    if unmeasured:  # e.g. torch runs no hook on a node changed in place: nothing to compare
        i, why = unmeasured[0]
        note = f"{what}: not compared (side {'ab'[i]}: {why})"
        row = Row(name, "input_grad", None, None, 0.0, 0.0, ctx.tol.grad, True, note)
    else:
        row = _grad_row(name, "input_grad", ga, gb, ctx, what)
    # Calls entering at one position nest (a container, then its first child): the inner
    # one's backward finishes first.
    ctx.add((PHASES["backward"], 0.5 - side.entered[key], 1, -side.order[key]), row, call)


def _backward_error_row(ctx: Context, i: int, error: Exception) -> Row:
    """A backward that raised: a row at the module it raised in. An error inside the
    autograd engine (a tensor it saved, changed in place) has no module on its traceback:
    the row is then at the first module, in backward order, whose input gradient never
    came (with input gradients captured: a forward before a backward), else at the root."""
    module = module_that_raised(ctx.models[i], error)
    where = f"in module {module!r}"
    stopped = ctx.input_grads[i].first_missing() if ctx.input_grads is not None and not module else None
    if stopped is not None:
        module, where = stopped, f"before {stopped!r} had its input gradient (backward order)"
    note = (
        f"side {ctx.side(i)} raised in the backward {where}: "
        f"{type(error).__name__}: {error}; no gradients compared"
    )
    return Row(module, "error", None, None, math.inf, math.inf, ctx.tol.grad, False, note)


def _grad_row(
    module: str,
    kind: str,
    ga: np.ndarray | None,
    gb: np.ndarray | None,
    ctx: Context,
    what: str,
    present: tuple[bool, bool] = (True, True),
) -> Row:
    tol = ctx.tol.grad
    if not all(present):
        note = f"{what}: a parameter on side {'b' if present[1] else 'a'} only"
        return Row(module, kind, None, None, math.inf, math.inf, tol, False, note)
    if ga is None and gb is None:
        return Row(
            module, kind, None, None, 0.0, 0.0, tol, True, f"{what}: no gradient on either side (unused)"
        )
    if ga is None or gb is None:
        note = f"{what}: no gradient on side {'a' if ga is None else 'b'}"
        shapes = (None if ga is None else ga.shape, None if gb is None else gb.shape)
        return Row(module, kind, *shapes, math.inf, math.inf, tol, False, note)
    if ga.shape != gb.shape:
        return Row(module, kind, ga.shape, gb.shape, math.inf, math.inf, tol, False, f"{what}: shapes differ")
    max_abs, max_rel, note = max_errors(ga, gb)
    note = "; ".join(filter(None, [what, note]))
    ok = max_rel <= tol and ga.dtype == gb.dtype
    return Row(module, kind, ga.shape, gb.shape, max_abs, max_rel, tol, ok, note)
