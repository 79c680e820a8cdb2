"""Compare two models with the same module tree, Lucid or torch on either side, layer by layer.

``compare(a, b, x)`` borrows both models (``parity._borrow``: casts them to ``dtype``,
moves them to ``devices``, switches them to eval mode) and puts everything back afterwards: every
tensor the cast rewrites and every buffer (non-persistent ones too: a forward may update a
counter or an average) is restored from a snapshot where it changed, bit for bit, in its
own dtype and memory layout (never cast back), and so are modes, devices and gradients. A
parameter that the model's own forward writes into is not put back. In between:

1. **state**: every parameter and buffer must be equal; a difference is a row of the module
   that owns the tensor.
   **config**: every layer of a kind both adapters describe (``layer_info``: convolutions,
   BatchNorms, pools, dropout, linear, ReLU, identity) must have the same settings on both sides; a
   difference (a dropout rate, a BatchNorm momentum) is a row of that layer, placed where
   the layer runs. Some settings change nothing in an eval-mode forward and would be seen
   by no other row (a dropout's ``p``). Settings that agree only on some input sizes
   (``ceil_mode``, a global pool against a fixed one) differ: the models differ elsewhere.
   Containers and classes the adapters do not know are not compared.
2. **output**: both forwards run in lock-step (``parity._lockstep``) and every named
   module's output is compared call by call as it arrives, in execution order; a module
   that runs on one side only fails, and an exception becomes an ``error`` row. With
   ``local=True`` every module of side b runs on side a's input for the same call
   (teacher forcing, see ``_forward``): each row then measures that module alone.
   Afterwards every buffer is checked against its snapshot: one the eval forward changed
   on one side only (a BatchNorm moving its running statistics in eval), or to other
   values, is a ``state`` row of its owner (``_changed_buffer_rows``).
3. **backward** (optional): a seeded random gradient on the logits; the model input's
   gradient, every parameter's, and every module call's input gradient (that call's share,
   ``parity._input_grads``) are compared, in backward order (``parity._gradients``). A
   backward that raises is an ``error`` row.
4. **train step** (optional): a train-mode forward; each BatchNorm's batch mean and biased
   variance (from its captured input), its train-mode output and its running-statistics
   update are compared. Dropout stays in eval mode (the identity) on both sides: two
   random masks would feed the BatchNorms after it different inputs, and the step is
   about BatchNorm statistics (dropout's train-mode masking is not compared).
   Side b's BatchNorms run on side a's input (teacher forcing), so that each row measures
   one layer and not the drift of two train-mode forwards (``parity._train_step``).

Errors are relative to the larger of the two sides' max |value| (symmetric:
``compare(a, b)`` and ``compare(b, a)`` agree); BatchNorm rows are relative to the scale of
the BN input (``max|x|`` for means, ``max|x|^2`` for variances, see ``parity.tolerances``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lucid_inception.frameworks import Adapter, StateMismatchError, StructuredOutput, adapter_for
from parity._borrow import borrow, collector_paused, unreadable, unreadable_dtypes
from parity._capture import ForwardCapture, Repeat, event_module
from parity._context import (
    PHASES,
    Context,
    error_rows,
    module_events,
    number_calls,
    owner_of,
    unmatched_rows,
)
from parity._equality import all_equal, equal
from parity._gradients import gradient_rows
from parity._input_grads import InputGrads
from parity._lockstep import Side, SideResult, lead_for, run_lockstep
from parity._metrics import max_errors
from parity._side_by_side import WORKER_NAME
from parity._train_step import train_rows
from parity.report import Report, Row
from parity.tolerances import tolerance_for

__all__ = ["DeviceUnavailable", "compare", "unheld_dtype"]


class DeviceUnavailable(RuntimeError):
    """A requested device cannot run here; ``reason`` is the adapter's explanation."""

    def __init__(self, framework: str, device: str, reason: str) -> None:
        self.framework, self.device, self.reason = framework, device, reason
        super().__init__(f"{framework} device {device!r} is unavailable: {reason}")


# ----------------------------------------------------------------------------- checks


def _check_input(x: object, dtype: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x: expected a numpy float array of shape (N, C, H, W), got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x: expected a floating-point array (float32 or float64), got dtype {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"x: expected 4 dimensions (N, C, H, W), got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"x: expected a non-empty batch, got shape {x.shape}")
    # Checked after the cast: finite float64 values beyond float32's range become inf, and
    # the forward would fail on them as if the model were at fault.
    with np.errstate(over="ignore"):  # reported below, as an error
        cast = np.ascontiguousarray(x, dtype=dtype)
    if not np.isfinite(cast).all():
        if not np.isfinite(x).all():
            raise ValueError("x: holds NaN or infinite values; expected finite inputs")
        raise ValueError(
            f"x: values up to {float(np.abs(x).max()):.3g} overflow {dtype} (largest finite "
            f"{float(np.finfo(dtype).max):.3g}); scale the input or compare in a wider dtype"
        )
    return cast


# Dtypes a device holds as another, by (framework, device, dtype): a compare there fails
# every row on the dtype alone, so it is refused up front. Lucid's 'gpu' tensors are made
# with ``mx.array(data)`` and no dtype, which turns float64 into float32 (the
# ``mlx-float32`` convention, docs/framework-ops.md).
_UNHELD_DTYPES = {
    ("lucid", "gpu", "float64"): (
        "MLX holds float64 data as float32 (the mlx-float32 convention, docs/framework-ops.md); "
        "compare in float32 there"
    ),
}


def unheld_dtype(framework: str, device: str, dtype: str) -> str | None:
    """Why ``framework`` on ``device`` cannot compare in ``dtype`` (a known convention, not
    an absent device: the same wherever it runs), or ``None``."""
    reason = _UNHELD_DTYPES.get((framework, device, str(np.dtype(dtype))))
    return None if reason is None else f"{framework} device {device!r} cannot compare in {dtype}: {reason}"


def _check_devices(devices: object, adapters: tuple[Adapter, Adapter], dtype: str) -> tuple[str, str]:
    if not (
        isinstance(devices, (tuple, list)) and len(devices) == 2 and all(isinstance(d, str) for d in devices)
    ):
        raise TypeError(f"devices: expected a pair of device names, e.g. ('cpu', 'cpu'), got {devices!r}")
    for adapter, device in zip(adapters, devices, strict=True):
        if device not in adapter.devices:
            raise ValueError(f"{adapter.name} has no device {device!r}; valid: {', '.join(adapter.devices)}")
        unheld = unheld_dtype(adapter.name, device, dtype)
        if unheld is not None:  # before the availability check: it holds wherever the device exists
            raise ValueError(unheld)
    for adapter, device in zip(adapters, devices, strict=True):
        reason = adapter.device_unavailable(device)
        if reason is not None:
            raise DeviceUnavailable(adapter.name, device, reason)
    return tuple(devices)


def _first_names(names: list[str], n: int = 5) -> str:
    shown = ", ".join(repr(name) for name in names[:n])
    return shown + (f" (+{len(names) - n} more)" if len(names) > n else "")


def _check_trees(a: object, b: object, adapters: tuple[Adapter, Adapter]) -> None:
    names_a = [name for name, _ in adapters[0].named_modules(a)]
    names_b = [name for name, _ in adapters[1].named_modules(b)]
    set_a, set_b = set(names_a), set(names_b)
    only_a = [name for name in names_a if name not in set_b]
    only_b = [name for name in names_b if name not in set_a]
    if only_a or only_b:
        raise ValueError(
            f"the models' module trees differ ({type(a).__name__} vs {type(b).__name__}): "
            f"only in a: {_first_names(only_a) or 'none'}; only in b: {_first_names(only_b) or 'none'}"
        )


def _check_independent(a: object, b: object, adapters: tuple[Adapter, Adapter], *, train_step: bool) -> None:
    """Two models of one framework hold no parameter in common (a shared backbone): else
    both backwards accumulate into the same ``.grad`` and the verdicts are wrong. With a
    train step no buffer either: both would update the same running statistics. (A
    constant buffer a class shares between its instances is fine otherwise.)"""
    if adapters[0] is not adapters[1]:
        return
    names_in_b = {id(tensor): key for key, tensor in adapters[1].tensors(b).items()}
    buffers = set() if train_step else set(adapters[0].buffer_names(a))
    shared = [
        key if names_in_b[id(tensor)] == key else f"{key} (b: {names_in_b[id(tensor)]})"
        for key, tensor in adapters[0].tensors(a).items()
        if id(tensor) in names_in_b and key not in buffers
    ]
    if shared:
        what = "parameter(s) or buffer(s)" if train_step else "parameter(s)"
        raise ValueError(
            f"the models share {len(shared)} {what} ({_first_names(shared)}): both backwards would "
            "accumulate into one .grad, both train steps update one running statistic; compare two "
            "independent models (build a second one and transfer into it, or copy.deepcopy)"
        )


# ------------------------------------------------------------------- borrowing a model


# ------------------------------------------------------------------------- comparing


def _state_rows(ctx: Context) -> None:
    """Every parameter and buffer equal, attributed to the module that owns it."""
    live_a, live_b = (adapter.tensors(model) for adapter, model in zip(ctx.adapters, ctx.models, strict=True))
    read_a, read_b = (adapter.read_only for adapter in ctx.adapters)
    keys = list(live_a) + [key for key in live_b if key not in live_a]
    by_owner: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        by_owner[owner_of(key)].append(key)
    order = {name: i for i, (name, _) in enumerate(ctx.adapters[0].named_modules(ctx.models[0]))}
    # Read on this thread, compared on two (``all_equal``). A tensor on the CPU is read as
    # a view; one on a GPU is copied to the host, so such a model is held there in full
    # meanwhile (Inception-v4: 0.17 GB in float32).
    values = {
        key: (read_a(live_a[key]), read_b(live_b[key])) for key in keys if key in live_a and key in live_b
    }
    same_shape = [key for key, (va, vb) in values.items() if va.shape == vb.shape]
    is_equal = dict(zip(same_shape, all_equal([values[key] for key in same_shape]), strict=True))
    for owner, owned in by_owner.items():
        problems, worst = [], (0.0, 0.0)
        shapes: tuple = (None, None)
        for key in owned:
            attr = key[len(owner) + 1 :] if owner else key
            if key not in values:
                problems.append(f"{attr} missing on side {'a' if key not in live_a else 'b'}")
                worst = (math.inf, math.inf)
                continue
            va, vb = values[key]
            if shapes == (None, None):
                shapes = (tuple(va.shape), tuple(vb.shape))
            if va.shape != vb.shape:
                problems.append(f"{attr} shape {tuple(va.shape)} vs {tuple(vb.shape)}")
                shapes, worst = (tuple(va.shape), tuple(vb.shape)), (math.inf, math.inf)
            elif not is_equal[key]:
                max_abs, max_rel, _ = max_errors(va, vb)
                problems.append(f"{attr} differs (max abs {max_abs:.3g})")
                if max_rel >= worst[1]:
                    shapes, worst = (tuple(va.shape), tuple(vb.shape)), (max_abs, max_rel)
        note = "; ".join(problems) if problems else f"{len(owned)} tensor(s) equal"
        row = Row(owner, "state", *shapes, *worst, ctx.tol.state, not problems, note)
        ctx.add((PHASES["state"], order.get(owner, len(order)), 0), row)


def _changed_buffer_rows(ctx: Context, saved: list[dict[str, np.ndarray]]) -> None:
    """Buffers the eval forward (and backward) changed, each side against its own snapshot:
    a change on one side only (a BatchNorm that updates its running statistics in eval),
    or to other values, fails at the buffer's owner. Nothing else would see it: the forward
    that made the change already ran on the old values, and the models are put back."""
    changed = [
        adapter.changed_since(model, snapshot)
        for adapter, model, snapshot in zip(ctx.adapters, ctx.models, saved, strict=True)
    ]
    phase = PHASES["forward"]
    for index, key in enumerate(sorted(changed[0].keys() | changed[1].keys())):
        now_a, now_b = changed[0].get(key), changed[1].get(key)
        attr = key.rpartition(".")[2]
        shapes = tuple(None if now is None else tuple(now.shape) for now in (now_a, now_b))
        if now_a is None or now_b is None:
            side = ctx.side(0 if now_b is None else 1)
            errors, note = (math.inf, math.inf), f"{attr} changed by the eval forward on side {side} only"
        elif now_a.shape != now_b.shape:
            errors, note = (math.inf, math.inf), f"{attr} changed by the eval forward to other shapes"
        elif not equal(now_a, now_b):
            errors, note = max_errors(now_a, now_b)[:2], f"{attr} changed by the eval forward to other values"
        else:
            continue  # the same change on both sides (a counter): nothing differs
        row = Row(owner_of(key), "state", *shapes, *errors, ctx.tol.state, False, note)
        ctx.add((phase, math.inf, index), row)


# Kinds whose settings say nothing about what a module computes: containers and classes
# the adapters do not know (their class names may differ between two faithful models).
_NOT_COMPARED_KINDS = frozenset({"module", "sequential", "module-list"})


_PLAIN_TYPES = frozenset({int, float, bool, str, type(None)})


def _plain(value: object) -> object:
    """A setting as plain Python values (a numpy array or scalar a user passed as a size)."""
    kind = type(value)
    if kind in _PLAIN_TYPES or (kind is tuple and all(type(v) in _PLAIN_TYPES for v in value)):
        return value  # nearly every setting (a third less time for the settings check)
    if isinstance(value, (tuple, list, np.ndarray)):
        return tuple(_plain(v) for v in value)
    return value.item() if isinstance(value, np.generic) else value


def _layer_settings(adapter: Adapter, module: object) -> dict[str, object] | None:
    """What a layer computes with, comparable across frameworks, from ``adapter.layer_info``;
    ``None`` for a module whose settings are not compared. Settings are taken as used, not
    as stored: a BatchNorm's momentum is the one its train step applies (Lucid runs
    ``None`` as 0.1, torch as a cumulative average), and a layer without padding has no
    padding mode or ``count_include_pad`` to differ in, and a BatchNorm that keeps no
    running statistics no momentum."""
    try:
        info = {key: _plain(value) for key, value in adapter.layer_info(module).items()}
        if info["kind"] in _NOT_COMPARED_KINDS:
            return None
        if adapter.is_batchnorm(module):
            info["momentum"] = adapter.batchnorm_momentum(module) if info["track_running_stats"] else None
        if not any(info.get("padding", (1,))):
            info.pop("padding_mode", None)
            info.pop("count_include_pad", None)
    except Exception:  # noqa: BLE001 (an odd attribute a user set: its outputs are still compared)
        return None
    return info


def _settings_difference(info_a: dict[str, object], info_b: dict[str, object]) -> list[str]:
    """What differs between two ``layer_info`` records, as ``"name a vs b"`` strings."""
    if info_a == info_b:  # nearly always: one dict comparison
        return []
    if info_a["kind"] != info_b["kind"]:
        return [f"kind {info_a['kind']} vs {info_b['kind']}"]
    return [
        f"{key} {info_a.get(key, '-')} vs {info_b.get(key, '-')}"
        for key in [*info_a, *(k for k in info_b if k not in info_a)]
        if key != "kind" and info_a.get(key) != info_b.get(key)
    ]


def _config_rows(ctx: Context, results: tuple[SideResult, SideResult]) -> None:
    """Every layer both sides describe, its settings compared; placed just before the
    layer's first output row (where it first ran), or after every output if it never ran."""
    phase = PHASES["forward"]
    named = [
        dict(adapter.named_modules(model)) for adapter, model in zip(ctx.adapters, ctx.models, strict=True)
    ]
    for index, name in enumerate(named[0]):
        infos = [
            _layer_settings(adapter, modules[name])
            for adapter, modules in zip(ctx.adapters, named, strict=True)
        ]
        if infos[0] is None or infos[1] is None:
            continue
        differences = _settings_difference(*infos)
        ran = [res.first_seen[name] for res in results if name in res.first_seen]
        key = (phase, min(ran), -math.inf) if ran else (phase, math.inf, index)
        note = "; ".join(differences) if differences else f"{infos[0]['kind']}: same settings"
        failed = math.inf if differences else 0.0
        ctx.add(key, Row(name, "config", None, None, failed, failed, 0.0, not differences, note))


def _forward(
    ctx: Context, xs: tuple[object, object], *, grad: bool, local: bool = False
) -> tuple[SideResult, SideResult]:
    """Eval-mode forwards in lock-step, every named module's output compared on arrival.

    ``local``: side b's modules each run on a copy of side a's input for the same call
    (their first argument), so a row measures one step's own error instead of the error
    carried from every layer before it. That is what a chaotic network needs (calibrated
    BatchNorm statistics amplify any rounding ~1.5x per block, see ``parity.tolerances``).
    The input side b computed for itself is compared before it is replaced (an ``input``
    row): code between modules (a residual sum and its scale, a concat) feeds the next
    module's input, and forcing that input alone would hide a fault there. The price:
    side b's modules no longer share input tensors, so a fault that only shows through
    aliasing (an in-place op on a tensor a skip connection still reads) is invisible; the
    default, as-given forward sees it. Events are ``(kind, module)`` pairs here: side b
    waits at every module's entry for side a's input (``lead_bytes=0``) and runs on what
    ``on_pair`` returns.
    """
    phase = PHASES["forward"]
    tol = ctx.tol.rel
    compared: dict[tuple[Any, int], Row] = {}  # event key -> its output row

    def on_pair(
        name: Any, call: int, seq_a: int, seq_b: int, out_a: Any, out_b: Any, _live: int
    ) -> np.ndarray | None:
        kind, module = name if local else ("output", name)
        if isinstance(out_a, Repeat) and isinstance(out_b, Repeat) and out_a.of == out_b.of in compared:
            # The very same two tensors, unchanged as far as their frameworks can tell: the
            # same numbers (for writes no version counter sees, see ``parity._capture.Repeat``).
            earlier = compared[out_a.of]
            of = event_module(out_a.of[0])
            note = "; ".join(filter(None, [f"the output of {of!r} again", earlier.note]))
            row = dataclasses.replace(earlier, module=module, note=note, repeat_of=earlier.repeat_of or of)
        else:
            out_a, out_b = (out.array if isinstance(out, Repeat) else out for out in (out_a, out_b))
            if isinstance(out_a, StructuredOutput) or isinstance(out_b, StructuredOutput):
                row = _structured_row(module, kind, out_a, out_b, tol)
            elif out_a.shape != out_b.shape:
                row = Row(
                    module, kind, out_a.shape, out_b.shape, math.inf, math.inf, tol, False, "shapes differ"
                )
            else:
                max_abs, max_rel, note = max_errors(out_a, out_b)
                ok = max_rel <= tol and out_a.dtype == out_b.dtype  # a changed dtype is a fault too
                row = Row(module, kind, out_a.shape, out_b.shape, max_abs, max_rel, tol, ok, note)
        if kind == "output":
            compared[(name, call)] = row
        ctx.add((phase, min(seq_a, seq_b), seq_a), row, call)
        return out_a if kind == "input" else None  # side b's module runs on side a's input

    captures = [ForwardCapture(m, local) for m in ctx.models]
    if grad and not local:  # a backward follows: every module call's input gradient too
        ctx.input_grads = tuple(
            InputGrads(adapter, model, lambda capture=capture: capture.emitted)
            for adapter, model, capture in zip(ctx.adapters, ctx.models, captures, strict=True)
        )
    sides = [
        Side(
            adapter,
            model,
            x,
            grad,
            capture=_with_input_grads(capture, ctx.input_grads[i] if ctx.input_grads else None),
            keep=capture.keep,
            lead_bytes=0 if local and i == 1 else ctx.lead_bytes,
        )
        for i, (adapter, model, x, capture) in enumerate(
            zip(ctx.adapters, ctx.models, xs, captures, strict=True)
        )
    ]
    res_a, res_b, left_a, left_b = run_lockstep(sides[0], sides[1], on_pair)
    if local:  # rows name modules: (kind, module) events become module names
        left_a, left_b = (module_events(left, "output") for left in (left_a, left_b))
        for res in (res_a, res_b):
            res.calls = Counter({name: n for (kind, name), n in res.calls.items() if kind == "output"})
            res.first_seen = {name: seq for (kind, name), seq in res.first_seen.items() if kind == "output"}
    unmatched_rows(ctx, (res_a, res_b), (left_a, left_b), phase, "output", "ran")
    error_rows(ctx, (res_a, res_b), phase, "forward")
    number_calls(ctx, phase, "output", (res_a, res_b))
    if local:
        number_calls(ctx, phase, "input", (res_a, res_b))
    return res_a, res_b


def _structured_row(module: str, kind: str, out_a: Any, out_b: Any, tol: float) -> Row:
    """Outputs that are not one tensor (a tuple, a dict, ``None``): the same layout on both
    sides, then every array in it within tolerance; the row holds the worst array's errors
    and says where it sits."""

    def kind_of(out: Any) -> str:
        return out.describe() if isinstance(out, StructuredOutput) else "a tensor"

    if not (isinstance(out_a, StructuredOutput) and isinstance(out_b, StructuredOutput)):
        note = f"outputs differ in kind: {kind_of(out_a)} vs {kind_of(out_b)}"
        return Row(module, kind, out_a.shape, out_b.shape, math.inf, math.inf, tol, False, note)
    if out_a.layout != out_b.layout or out_a.shape != out_b.shape:
        a, b = (f"{out.describe()} {out.shape}" for out in (out_a, out_b))
        if a == b:  # the difference is deeper than the summary: show the layouts themselves
            a, b = (repr(out.layout)[:120] for out in (out_a, out_b))
        note = f"outputs differ in layout: {a} vs {b}"
        return Row(module, kind, out_a.shape, out_b.shape, math.inf, math.inf, tol, False, note)
    worst, first_failure = (0.0, 0.0, ""), ""
    for path, a, b in zip(out_a.paths, out_a.arrays, out_b.arrays, strict=True):
        max_abs, max_rel, note = max_errors(a, b)
        where = "; ".join(filter(None, [f"at {path}", note]))
        if not (max_rel <= tol and a.dtype == b.dtype) and not first_failure:  # NaN fails too
            first_failure = f"fails {where}"
        if not max_rel <= worst[1]:  # the larger, or NaN
            worst = (max_abs, max_rel, f"worst {where}")
    # A failure is named where it is (a changed dtype may be 0 apart), else the worst element.
    note = "; ".join(filter(None, [out_a.describe(), first_failure or worst[2]]))
    return Row(module, kind, out_a.shape, out_b.shape, worst[0], worst[1], tol, not first_failure, note)


def _with_input_grads(
    capture: ForwardCapture, grads: InputGrads | None
) -> Callable[[Any], contextlib.AbstractContextManager]:
    """A side's hooks: its outputs, and with a backward to come its input gradients' nodes."""
    if grads is None:
        return capture.capture

    @contextlib.contextmanager
    def both(event: Any) -> Iterator[None]:
        with grads.capture(), capture.capture(event):
            yield

    return both


# ----------------------------------------------------------------------------- entry


# One compare at a time, process-wide; and whether this thread is running one (whose
# models' forwards might call compare again).
_ONE_AT_A_TIME = threading.Lock()
_COMPARING = threading.local()


def compare(
    a: Any,
    b: Any,
    x: np.ndarray,
    *,
    dtype: str = "float32",
    backward: bool = False,
    train_step: bool = False,
    devices: tuple[str, str] = ("cpu", "cpu"),
    grad_seed: int = 0,
    local: bool = False,
) -> Report:
    """Compare models ``a`` and ``b`` (Lucid or torch, same module tree) on input ``x``
    (numpy, N x C x H x W), layer by layer; see the module docstring. Both models are left
    exactly as found. ``local=True`` compares each module on the same input (see
    ``_forward``); it cannot be combined with ``backward`` (side b's graph is cut at every
    module). ``train_step=True`` compares the BatchNorms in train mode, with dropout left in
    eval mode (the identity) on both sides. Raises ``TypeError``/``ValueError`` for bad
    arguments (two models that share a parameter or buffer tensor too; ``StateMismatchError``
    listing every tensor in a dtype numpy cannot hold, e.g. bfloat16; ``ValueError`` for a
    dtype a device holds as another, e.g. float64 on Lucid's 'gpu': ``unheld_dtype``) and
    ``DeviceUnavailable`` for a device that cannot run here; a failing forward is a row.
    Compares run one at a time, process-wide (a call from another thread waits): Lucid's
    grad flag is one global, and so are the CPU thread limits of a run side by side
    (``parity._side_by_side``). A compare called inside the forward of a model another
    compare is running is a ``RuntimeError``."""
    if getattr(_COMPARING, "active", False) or threading.current_thread().name == WORKER_NAME:
        raise RuntimeError(
            "compare was called inside the forward of a model another compare is running; "
            "run the two one after the other"
        )
    with _ONE_AT_A_TIME:
        _COMPARING.active = True
        try:
            return _compare(a, b, x, dtype, backward, train_step, devices, grad_seed, local)
        finally:
            _COMPARING.active = False


def _compare(
    a: Any,
    b: Any,
    x: np.ndarray,
    dtype: str,
    backward: bool,
    train_step: bool,
    devices: tuple[str, str],
    grad_seed: int,
    local: bool,
) -> Report:
    tol = tolerance_for(dtype)
    dtype = tol.dtype
    adapters = (adapter_for(a), adapter_for(b))
    if a is b:
        raise ValueError("compare needs two model instances, got the same one twice (transfer into a copy)")
    _check_independent(a, b, adapters, train_step=train_step)
    for flag, value in (("backward", backward), ("train_step", train_step), ("local", local)):
        if not isinstance(value, (bool, np.bool_)):  # "no" would be true
            raise TypeError(f"{flag}: expected True or False, got {value!r}")
    if not isinstance(grad_seed, numbers.Integral) or isinstance(grad_seed, bool):
        raise TypeError(f"grad_seed: expected an int, got {type(grad_seed).__name__}")
    if local and backward:
        raise ValueError("local=True cuts side b's graph at every module: compare gradients without it")
    devices = _check_devices(devices, adapters, dtype)
    x = _check_input(x, dtype)
    _check_trees(a, b, adapters)

    ctx = Context(adapters, (a, b), tol, dtype, devices, lead_for(x.nbytes))
    with contextlib.ExitStack() as stack:
        stack.enter_context(collector_paused())
        # What cannot be read is listed, every tensor on both sides, once reading fails:
        # a bfloat16 tensor (TypeError) or one on the meta device (NotImplementedError).
        saved = []  # each side's buffers, as found
        try:
            for adapter, model, device in zip(adapters, (a, b), devices, strict=True):
                saved.append(stack.enter_context(borrow(model, adapter, dtype, device, grads=backward)))
                stack.enter_context(adapter.precise())
            _state_rows(ctx)
        except (TypeError, NotImplementedError) as error:
            problems = unreadable_dtypes(adapters, (a, b)) + unreadable(adapters, (a, b))
            if problems:
                raise StateMismatchError(
                    f"comparing {type(a).__name__} and {type(b).__name__}", problems
                ) from error
            raise
        # Contiguous, as a caller gives it. Not channels-last, although Lucid's CPU
        # convolutions leave their outputs in that order and comparing same-order pairs
        # costs a third less: torch's reshape, flatten and contiguous return a view of a
        # contiguous tensor but a copy of a channels-last one, so a model relying on that
        # aliasing would be judged on a forward its users never run (a fault hidden, a
        # faithful model failed: tests/test_parity_edges.py).
        xs = tuple(
            adapter.tensor(x, device=device, requires_grad=backward)
            for adapter, device in zip(adapters, devices, strict=True)
        )
        results = _forward(ctx, xs, grad=backward, local=bool(local))
        _config_rows(ctx, results)
        if backward and all(res.error is None for res in results):
            gradient_rows(ctx, results, xs, int(grad_seed))
        del results, xs  # the graphs, before the train step
        _changed_buffer_rows(ctx, saved)
        if train_step:
            xs = tuple(
                adapter.tensor(x, device=device) for adapter, device in zip(adapters, devices, strict=True)
            )
            train_rows(ctx, xs)

    rows = [row for _, row, _ in ctx.sorted_rows()]
    first = next((row.module for row in rows if not row.ok), None)
    return Report(
        ok=first is None and all(row.ok for row in rows),
        first_divergence=first,
        rows=rows,
        dtype=dtype,
        devices=devices,
        frameworks=(adapters[0].name, adapters[1].name),
        model_a=type(a).__name__,
        model_b=type(b).__name__,
        backward=backward,
        train_step=train_step,
        local=bool(local),
        grad_seed=int(grad_seed),
        input_shape=tuple(x.shape),
    )
