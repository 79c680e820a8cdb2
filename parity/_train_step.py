"""The train step of a compare: a train-mode forward on both sides, each BatchNorm's batch
statistics, train-mode output and running-statistics update compared, side b's
BatchNorms fed side a's input (see ``train_rows``)."""

from __future__ import annotations

import contextlib
import functools
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np

from lucid_inception.frameworks import Adapter, capture_inputs, capture_outputs
from parity._context import PHASES, Context, error_rows, module_events, number_calls, unmatched_rows
from parity._lockstep import Side, run_lockstep
from parity._metrics import BatchStats, batch_stats, bn_output_errors, largest, max_errors, relative
from parity.report import Row

__all__ = ["stats_row", "train_rows"]


def train_rows(ctx: Context, xs: tuple[object, object]) -> None:
    """A train-mode forward on both sides: BatchNorm batch statistics, train-mode outputs
    and running updates.

    In train mode a BatchNorm subtracts its batch mean, which amplifies the relative error
    of its input: left alone, the two forwards drift apart with depth (measured: 1e-12 at
    the last blocks in float64, 1e-4 where a batch of 2 meets a 1x1 grid), whatever the
    frameworks do. So the comparison is local: side b's BatchNorms run on side a's input
    (teacher forcing), and each side's batch statistics come from its own input before
    the swap, which differs from side a's by one layer's rounding. Each BatchNorm's
    output is compared too (``bn_train_output``), both sides having normalised the same
    input: a fault in how train mode normalises shows there, also in a BatchNorm that no
    later BatchNorm reads (the last block's). Events are ``("input" | "output", name)``.
    """
    phase = PHASES["train"]
    tol = ctx.tol.bn
    bns = [
        {name: module for name, module in adapter.named_modules(model) if adapter.is_batchnorm(module)}
        for adapter, model in zip(ctx.adapters, ctx.models, strict=True)
    ]
    # The running statistics each side keeps (none for ``track_running_stats=False``).
    keys = [
        {f"{name}.{stat}" for name in bn for stat in ("running_mean", "running_var")}
        & set(adapter.buffer_names(model))
        for adapter, model, bn in zip(ctx.adapters, ctx.models, bns, strict=True)
    ]
    momenta = [
        {name: adapter.batchnorm_momentum(module) for name, module in bn.items()}
        for adapter, bn in zip(ctx.adapters, bns, strict=True)
    ]
    parameters = _bn_parameters(ctx.adapters[0], ctx.models[0], bns[0])  # side a's: both normalise with them
    # The statistics of the input each side's BatchNorm actually ran on, call by call.
    seen: tuple[dict, dict] = (defaultdict(list), defaultdict(list))
    last_call: dict[str, int] = {}  # BatchNorm -> position of its last call's row

    def on_pair(
        event: tuple[str, str], call: int, seq_a: int, seq_b: int, xa: np.ndarray, xb: np.ndarray, _live: int
    ) -> np.ndarray | None:
        kind, name = event
        last_call[name] = min(seq_a, seq_b)  # the running update's row follows the last call
        if kind == "output":
            if not seen[0].get(name):  # its input was not a captured tensor (a keyword argument)
                row = _train_output_row(name, xa, xb, None, parameters[name], ctx.tol.rel)
            else:
                stats = seen[0][name][-1]  # of this call's input, which both sides normalised
                row = _train_output_row(name, xa, xb, stats, parameters[name], ctx.tol.reduced(stats.n))
            ctx.add((phase, min(seq_a, seq_b), seq_a), row, call)
            return None
        own_a, own_b = batch_stats(xa), batch_stats(xb)
        seen[0][name].append(own_a)
        seen[1][name].append(own_a)  # side b waits in this BatchNorm's hook for side a's input
        ctx.add((phase, min(seq_a, seq_b), seq_a), stats_row(name, own_a, own_b, tol), call)
        return xa

    @contextlib.contextmanager
    def capture(event: Any, adapter: Adapter, model: object) -> Iterator[None]:
        def is_batchnorm(_name: str, module: object) -> bool:
            return adapter.is_batchnorm(module)

        with (
            capture_inputs(model, lambda name, array: event(("input", name), array), is_batchnorm),
            capture_outputs(model, lambda name, array: event(("output", name), array), select=is_batchnorm),
        ):
            yield

    sides = [
        Side(
            adapter,
            model,
            x,
            False,
            capture=lambda event, adapter=adapter, model=model: capture(event, adapter, model),
            lead_bytes=ctx.lead_bytes if i == 0 else 0,  # side b never runs ahead: it is fed side a's inputs
        )
        for i, (adapter, model, x) in enumerate(zip(ctx.adapters, ctx.models, xs, strict=True))
    ]
    for adapter, model in zip(ctx.adapters, ctx.models, strict=True):
        adapter.set_training(model, True)
        # Dropout stays in eval (the identity): each side would draw its own random mask,
        # and every BatchNorm after it would see a different input on each side. The step
        # is about BatchNorm statistics; a dropout's ``p`` is compared by its config row.
        for _, module in adapter.named_modules(model):
            if adapter.is_dropout(module):
                adapter.set_training(module, False)
    try:
        res_a, res_b, left_a, left_b = run_lockstep(sides[0], sides[1], on_pair)
    finally:
        for adapter, model in zip(ctx.adapters, ctx.models, strict=True):
            adapter.set_training(model, False)
    results = (res_a, res_b)
    for res in results:  # rows name modules: count a BatchNorm's calls by its input events
        res.calls = Counter({name: n for (kind, name), n in res.calls.items() if kind == "input"})
        res.first_seen = {name: seq for (kind, name), seq in res.first_seen.items() if kind == "input"}
    for kind, row_kind, what in (
        ("input", "bn_batch_stats", "BatchNorm input captured"),
        ("output", "bn_train_output", "BatchNorm output captured"),
    ):
        leftovers = (module_events(left_a, kind), module_events(left_b, kind))
        unmatched_rows(ctx, results, leftovers, phase, row_kind, what)
    error_rows(ctx, results, phase, "train-mode forward")
    for row_kind in ("bn_batch_stats", "bn_train_output"):
        number_calls(ctx, phase, row_kind, results)
    if res_a.error is not None or res_b.error is not None:
        return
    after = [
        adapter.snapshot(model, k) for adapter, model, k in zip(ctx.adapters, ctx.models, keys, strict=True)
    ]
    for name in bns[0]:
        if name in seen[0] and name in bns[1]:  # else never called, or already a failing row
            row = _running_row(ctx, name, seen, momenta, after)
            if row is not None:  # after the batch statistics of the layer's last call
                ctx.add((phase, last_call[name], math.inf), row)


def _train_output_row(
    name: str, ya: np.ndarray, yb: np.ndarray, stats: BatchStats | None, params: tuple, tol: float
) -> Row:
    """A BatchNorm's train-mode output, both sides on side a's input (``stats``), measured
    per channel against its conditioning (``bn_output_errors``); ``params`` are side a's
    ``(weight, bias, eps)``. Without ``stats`` (its input was not captured), against the
    output's own scale."""
    if ya.shape != yb.shape:
        return Row(
            name, "bn_train_output", ya.shape, yb.shape, math.inf, math.inf, tol, False, "shapes differ"
        )
    if stats is None:
        max_abs, max_rel, note = max_errors(ya, yb)
        note = "; ".join(filter(None, [note, "its input was not captured: of max|y|"]))
    else:
        max_abs, max_rel = bn_output_errors(ya, yb, stats, *params)
        note = f"per channel, of |w| max|x| / sqrt(var + eps) + |b|; tolerance for sums of {stats.n} values"
    if ya.dtype != yb.dtype:
        note = f"dtypes differ: {ya.dtype} vs {yb.dtype}; {note}"
    ok = max_rel <= tol and ya.dtype == yb.dtype
    return Row(name, "bn_train_output", ya.shape, yb.shape, max_abs, max_rel, tol, ok, note)


def _bn_parameters(adapter: Adapter, model: object, bns: dict[str, object]) -> dict[str, tuple]:
    """``name -> (weight, bias, eps)`` of each BatchNorm (1 and 0 without affine)."""
    state = adapter.state_views(model)
    return {
        name: (
            state.get(f"{name}.weight", 1.0),
            state.get(f"{name}.bias", 0.0),
            adapter.batchnorm_eps(module),
        )
        for name, module in bns.items()
    }


def stats_row(name: str, sa: BatchStats, sb: BatchStats, tol: float) -> Row:
    """Batch mean against max|x|, biased batch variance against max|x|^2 (see tolerances)."""
    if sa.mean.shape != sb.mean.shape:
        return Row(
            name, "bn_batch_stats", sa.shape, sb.shape, math.inf, math.inf, tol, False, "channels differ"
        )
    scale = largest(sa.scale, sb.scale)
    d_mean, d_var = float(np.abs(sa.mean - sb.mean).max()), float(np.abs(sa.var - sb.var).max())
    # Against max|x|^2 in two steps: scale**2 overflows a float above ~1.3e154 (a finite input).
    rel_mean, rel_var = relative(d_mean, scale), relative(relative(d_var, scale), scale)
    worst = largest(rel_mean, rel_var)  # a NaN fails the row
    note = f"batch mean {rel_mean:.3g} (of max|x|), biased batch variance {rel_var:.3g} (of max|x|^2)"
    return Row(
        name, "bn_batch_stats", sa.shape, sb.shape, largest(d_mean, d_var), worst, tol, worst <= tol, note
    )


def _running_row(
    ctx: Context,
    name: str,
    stats: tuple[dict, dict],
    momenta: list[dict],
    after: list[dict],
) -> Row | None:
    """Running statistics after the step, both on the biased-variance convention; ``None``
    when neither side keeps any (``track_running_stats=False``: nothing to update).

    A framework whose running_var is unbiased (torch) added ``m * v * n/(n-1)`` per call
    where a biased one (Lucid) adds ``m * v``; removing the difference ``m * v/(n-1)``
    (decayed by later calls) from its result, with ``v`` and ``n`` from its own captured BN
    input, makes the two comparable. Momentum ``None`` (torch's cumulative average) has no
    such correction here: it is compared as it is when both sides use it and keep the same
    variance convention, and fails against anything else.
    """
    tol = ctx.tol.bn
    keeps = [f"{name}.running_mean" in side and f"{name}.running_var" in side for side in after]
    if not any(keeps):
        return None
    if not all(keeps):
        note = f"running statistics kept on side {'ab'[keeps.index(True)]} only"
        return Row(name, "bn_running_update", None, None, math.inf, math.inf, tol, False, note)
    scale = functools.reduce(largest, (s.scale for side in stats for s in side[name]))
    cumulative = [momenta[i][name] is None for i in range(2)]
    as_they_are = all(cumulative) and len({a.running_var_unbiased for a in ctx.adapters}) == 1
    values, notes = [], []
    if as_they_are:
        notes.append("momentum None (cumulative average) on both sides: compared as they are")
    for i, adapter in enumerate(ctx.adapters):
        momentum = momenta[i][name]
        if momentum is None and not as_they_are:
            note = f"side {ctx.side(i)}: momentum None (cumulative average) is not compared"
            return Row(name, "bn_running_update", None, None, math.inf, math.inf, tol, False, note)
        mean = after[i][f"{name}.running_mean"].astype(np.float64)
        var = after[i][f"{name}.running_var"].astype(np.float64)
        if adapter.running_var_unbiased and not as_they_are:
            correction = np.zeros_like(var)
            for s in stats[i][name]:
                correction = (1 - momentum) * correction + momentum * s.var / max(s.n - 1, 1)
            var = var - correction
            ns = ", ".join(str(s.n) for s in stats[i][name])
            notes.append(
                f"side {ctx.side(i)} keeps an unbiased running_var: compared after -m*v/(n-1), n={ns}"
            )
        values.append((mean, var))
    (mean_a, var_a), (mean_b, var_b) = values
    if mean_a.shape != mean_b.shape:
        return Row(
            name,
            "bn_running_update",
            mean_a.shape,
            mean_b.shape,
            math.inf,
            math.inf,
            tol,
            False,
            "running statistics' shapes differ",
        )
    d_mean, d_var = float(np.abs(mean_a - mean_b).max()), float(np.abs(var_a - var_b).max())
    # Against max|x|^2 in two steps: scale**2 overflows a float above ~1.3e154 (a finite input).
    rel_mean, rel_var = relative(d_mean, scale), relative(relative(d_var, scale), scale)
    notes.insert(0, f"running_mean {rel_mean:.3g} (of max|x|), running_var {rel_var:.3g} (of max|x|^2)")
    worst = largest(rel_mean, rel_var)  # a NaN fails the row
    return Row(
        name,
        "bn_running_update",
        mean_a.shape,
        mean_b.shape,
        largest(d_mean, d_var),
        worst,
        tol,
        worst <= tol,
        "; ".join(notes),
    )
