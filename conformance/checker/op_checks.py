"""One op on one repeat: its hyperparameters (introspected) and its behaviour (traced)
against the spec."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np

from conformance import spec as S
from conformance.introspect import Call, ModelView, Trace, same_array

# Relative tolerance of the behavioural checks (residual formula, pools), by the dtype the
# model computes in: float32 rounding (6e-8) times the handful of operations compared.
_RTOL = {np.dtype(np.float16): 1e-2, np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-9}

# ----- small helpers


def _a(kind: str) -> str:
    """``kind`` with its article: "a conv", "an avgpool", "an other"."""
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape[1:]) if len(shape) > 1 else str(tuple(shape))


def fmt_hwc(shape: Sequence[int]) -> str:
    """An N x C x H x W shape as the paper writes it: ``35x35x384``."""
    return f"{shape[2]}x{shape[3]}x{shape[1]}" if len(shape) == 4 else fmt_shape(shape)


def fmt_hw(pair: Sequence[int]) -> str:
    return f"{pair[0]}x{pair[1]}"


def rtol_for(array: np.ndarray) -> float:
    return _RTOL.get(array.dtype, 1e-4)


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-30)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) / scale if a.size else 0.0


def _pool_reference(x: np.ndarray, op: S.Op, count_include_pad: bool = True) -> np.ndarray:
    """The paper's pool of ``x`` (N, C, H, W) in float64: max pools valid, average pools
    zero-padded and divided by k*k (the padding counts: Lucid's convention) or, with
    ``count_include_pad=False``, by the number of input positions in each window."""
    x = x.astype(np.float64)
    if op.kind == "global-avgpool":
        return x.mean(axis=(2, 3), keepdims=True)
    (kh, kw), (sh, sw), (ph, pw) = op.kernel, op.stride, op.padding

    def windows(a: np.ndarray) -> np.ndarray:
        a = np.pad(a, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        oh, ow = (a.shape[2] - kh) // sh + 1, (a.shape[3] - kw) // sw + 1
        return np.stack(
            [a[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] for i in range(kh) for j in range(kw)],
            axis=0,
        )

    if op.kind == "maxpool":
        return windows(x).max(axis=0)
    count = kh * kw if count_include_pad else windows(np.ones((1, 1, *x.shape[2:]))).sum(axis=0)
    return windows(x).sum(axis=0) / count


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
        conv, bn = (view.info[c] for c in view.conv_parts(path)[:2])
        s = "" if conv["stride"] == (1, 1) else f"/{conv['stride'][0]}"
        return (
            f"{fmt_hw(conv['kernel'])}{s} pad {fmt_hw(conv['padding'])} conv {conv['in_channels']}->"
            f"{conv['out_channels']}{'' if conv['bias'] else ' no-bias'} +BN(eps {bn['eps']:g}) +ReLU"
        )
    if kind == "linear-conv":
        s = "" if info["stride"] == (1, 1) else f"/{info['stride'][0]}"
        return f"{fmt_hw(info['kernel'])}{s} linear conv {info['in_channels']}->{info['out_channels']}"
    if kind in ("maxpool", "avgpool"):
        extra = ", counts padding" if info.get("count_include_pad") else ""
        return f"{kind} {fmt_hw(info['kernel'])}/{info['stride'][0]} pad {fmt_hw(info['padding'])}{extra}"
    if kind == "global-avgpool":
        return f"adaptive avgpool to {fmt_hw(info['output_size'])}"
    if kind == "dropout":
        return f"Dropout(p={info['p']:g}) = keep {1 - float(info['p']):g}"
    if kind == "fc":
        return f"fc {info['in_features']}->{info['out_features']}"
    return f"{kind} ({view.class_name(path)})"


def _structure(view: ModelView, path: str, op: S.Op, in_width: int) -> list[str]:
    """Introspected hyperparameters against the spec; ``in_width`` is the width the
    spec's data flow hands the op, as built (see ``check_op``)."""
    info = view.info[path]
    if op.kind in ("conv", "linear-conv"):
        conv_path = view.conv_parts(path)[0] if op.kind == "conv" else path
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
                ("padding_mode", conv["padding_mode"], "zeros"),
            ],
        )
        if op.kind == "conv":
            bn = view.info[view.conv_parts(path)[1]]
            problems += _compare(
                "bn ",
                [
                    ("num_features", bn["num_features"], op.out_channels),
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
            ],
        )
    return []


def convention_differences(view: ModelView, path: str, op: S.Op) -> list[str]:
    """Where the op at ``path`` departs from Lucid's conventions (``S.CONVENTIONS``),
    which the paper does not fix: a bias on every conv and fc, BatchNorm eps and momentum,
    average pools counting their padding. Differences here are no paper fault (a
    TensorFlow port uses BatchNorm eps 1e-3 and no conv bias): layout/conventions lists them."""
    kind = view.op_kind(path)
    if kind != op.kind:
        return []  # the op item reports it
    info = view.info[path]
    if kind in ("conv", "linear-conv", "fc"):
        conv = view.info[view.conv_parts(path)[0]] if kind == "conv" else info
        pairs = [("bias", conv["bias"], S.CONVENTIONS["bias"])]
        prefix = "conv " if kind == "conv" else f"{kind} "
        differences = _compare(prefix, pairs)
        if kind == "conv":
            bn = view.info[view.conv_parts(path)[1]]
            differences += _compare(
                "bn ",
                [
                    ("eps", bn["eps"], S.CONVENTIONS["bn_eps"]),
                    ("momentum", bn["momentum"], S.CONVENTIONS["bn_momentum"]),
                ],
            )
        return differences
    if kind == "avgpool":
        return _compare(
            "", [("count_include_pad", info["count_include_pad"], S.CONVENTIONS["count_include_pad"])]
        )
    return []


def _reads(call: Call, expected: np.ndarray) -> bool:
    """Whether the call's first input is ``expected`` (values compared exactly; the fc
    reads its flattened input)."""
    return bool(call.inputs) and same_array(call.inputs[0], expected)


def _conv_data_flow(view: ModelView, tr: Trace, path: str, call: Call) -> list[str]:
    """A paper conv returns ReLU(BN(conv(x))) of its own input: running the three in order
    is not enough if the module returns, or feeds on, something else. ReLU is checked by
    what it computes (an in-place ReLU overwrites its recorded input); a conv without a
    ReLU module (the ReLU in its forward) must return ReLU of its BatchNorm's output."""
    steps = [tr.first(c) for c in view.conv_parts(path)]
    conv, bn, relu = (*steps, None)[:3]
    if not (all(steps) and call.inputs and call.output is not None):
        return []  # the order check above reports a child that did not run
    links = [
        ("its conv does not read its input", conv.inputs and _reads(conv, call.inputs[0])),
        (
            "its BatchNorm does not read its conv's output",
            conv.output is not None and _reads(bn, conv.output),
        ),
    ]
    if relu is None:  # the ReLU is in the module's forward: its output must be that ReLU's
        links.append(
            (
                "its output is not ReLU of its BatchNorm's output",
                bn.output is not None and np.array_equal(call.output, np.maximum(bn.output, 0)),
            )
        )
    else:
        links += [
            (
                "its ReLU's output is not ReLU of its BatchNorm's output",
                relu.output is not None
                and bn.output is not None
                and np.array_equal(relu.output, np.maximum(bn.output, 0)),
            ),
            (
                "its output is not its ReLU's output",
                relu.output is not None and np.array_equal(call.output, relu.output),
            ),
        ]
    return [problem for problem, holds in links if not holds]


# What holds each op as a module, for the message of an op with none: the kit reads an
# op's settings from its module, so an op the forward applies as a function
# (``F.adaptive_avg_pool2d``, ``x.mean((2, 3))``, ``F.dropout``) is invisible to it.
_MODULE_FOR = {
    "conv": "a conv -> BatchNorm -> ReLU module (Lucid's nn.ConvBNReLU2d, or a Sequential of the three)",
    "linear-conv": "an nn.Conv2d",
    "maxpool": "an nn.MaxPool2d",
    "avgpool": "an nn.AvgPool2d",
    "global-avgpool": "an nn.AdaptiveAvgPool2d((1, 1))",
    "dropout": "an nn.Dropout",
    "fc": "an nn.Linear",
}


_POOLS = ("maxpool", "avgpool", "global-avgpool")


def _no_module(op: S.Op) -> str:
    if op.kind in _POOLS:
        return (
            f"no module here, and no module after it was seen reading its output (a {op.kind} "
            "applied as a function is checked by what the next op's module reads, a max pool "
            f"branch by the concat that holds it); or hold it in {_MODULE_FOR[op.kind]}"
        )
    return (
        f"no module here: the kit reads a {op.kind}'s settings from its module, so one the "
        f"forward applies as a function cannot be checked; hold it in {_MODULE_FOR[op.kind]}"
    )


def find_offsets(out: np.ndarray, part: np.ndarray) -> list[int]:
    """The channel offsets at which ``out`` (N, C, H, W) holds ``part`` exactly."""
    width = part.shape[1]
    if part.shape[0] != out.shape[0] or part.shape[2:] != out.shape[2:]:
        return []
    return [o for o in range(out.shape[1] - width + 1) if np.array_equal(out[:, o : o + width], part)]


def _in_concat(
    op: S.Op, source: tuple[np.ndarray, str], concat: np.ndarray
) -> tuple[str, list[str], tuple[np.ndarray, str] | None, int]:
    """A max pool applied as a function as a concat's branch: no module reads it, but a
    max pool computes no new value, so its exact output must sit in the concat output."""
    reference = _pool_reference(source[0], op).astype(concat.dtype)
    what = f"the paper's {op.label} of the {source[1]}"
    offsets = find_offsets(concat, reference)
    if not offsets:
        return "missing", [f"no module here, and the concat does not hold {what}"], None, 0
    found = f"applied as a function: the concat holds {what} (channel {offsets[0]})"
    return found, [], (reference, f"{op.label} of the {source[1]}"), 1


def check_functional_op(
    tr: Trace,
    op: S.Op,
    source: tuple[np.ndarray, str] | None,
    reader: str | None,
    concat: np.ndarray | None = None,
) -> tuple[str, list[str], tuple[np.ndarray, str] | None, int]:
    """(found, problems, output as read, calls per forward) for an op with no module.

    A pool has no weights and no settings that its output does not show, so one the
    forward applies as a function (``F.adaptive_avg_pool2d``, ``x.mean((2, 3))``,
    ``F.max_pool2d``) is checked by what it computes: the module that reads its output
    (``reader``: the next op of the chain) must receive the paper's pool of ``source``,
    the array the data flow hands the op; a max pool that ends a concat's branch must
    sit, exactly, in the concat output (``concat``). Any other op, or a pool whose output
    is seen nowhere, needs its module (``_no_module``)."""
    call = tr.first(reader) if reader else None
    if reader is None and concat is not None and op.kind == "maxpool" and source is not None:
        return _in_concat(op, source, concat)
    if op.kind not in _POOLS or source is None or call is None or not call.inputs:
        return "missing", [_no_module(op)], None, 0
    got, reference = call.inputs[0], _pool_reference(source[0], op)
    what = f"the paper's {op.label} of the {source[1]}"
    if got.size != reference.size or _rel_err(got.reshape(reference.shape), reference) > rtol_for(got):
        return "missing", [f"no module here, and the input of {reader} is not {what}"], None, 0
    return (
        f"applied as a function: the input of {reader} is {what}",
        [],
        (got, f"input of {reader}"),
        tr.count(reader),
    )


def check_op(
    view: ModelView,
    tr: Trace,
    path: str,
    op: S.Op,
    shape: tuple[int, ...],
    feed: int,
    source: tuple[np.ndarray, str] | None,
    runs_id: str,
) -> tuple[str, list[str], list[str], int]:
    """(found, problems, notes, out width as built) for one op on one repeat.

    ``feed`` is the width the spec's data flow hands the op, as built: the previous op's
    output width, the source branch's, or the stage input's. ``source`` is the array that
    flow hands it in the trace, with where it was read (None where it is not observed).
    Comparing ``in_channels`` with the width the op received in the trace would prove
    nothing (a forward that runs always has them equal); comparing it with ``feed``, and
    the traced input with ``source``, follows the data."""
    kind = view.op_kind(path)
    found = _describe(view, path, kind)
    if kind != op.kind:
        return (
            found,
            [f"{_a(kind)} ({view.class_name(path)}), expected {_a(op.kind)}"],
            [],
            op.out_channels,
        )
    call = tr.first(path)
    problems = _structure(view, path, op, feed)
    out_width = op.out_channels
    if op.kind in ("conv", "linear-conv"):
        conv_path = view.conv_parts(path)[0] if op.kind == "conv" else path
        out_width = int(view.info[conv_path]["out_channels"])
    notes: list[str] = []
    if call is None:
        notes.append(f"{path} did not run: see {runs_id}")
        return found, problems, notes, out_width
    found += f" -> {fmt_shape(call.output_shape)}"
    if source is not None and call.inputs and not _reads(call, source[0]):
        problems.append(f"its input is not the {source[1]}")
    if call.output_shape != shape:
        problems.append(f"output {fmt_shape(call.output_shape)} (expected {fmt_shape(shape)})")
    if op.kind == "conv":  # conv -> BatchNorm (-> ReLU module), in that order, once per call
        steps = [tr.calls.get(c, []) for c in view.conv_parts(path)]
        ends = [s[0].index for s in steps if s] + [call.index]  # completion order
        if any(len(s) != tr.count(path) for s in steps) or not (
            all(steps) and all(a < b for a, b in itertools.pairwise(ends))
        ):
            layers = " -> ".join(["conv", "BatchNorm", "ReLU"][: len(steps)])
            problems.append(f"does not run {layers} once per call")
    if op.kind == "conv":
        problems += _conv_data_flow(view, tr, path, call)
    if op.kind in ("maxpool", "avgpool", "global-avgpool") and call.output is not None and call.inputs:
        reference = _pool_reference(call.inputs[0], op, bool(view.info[path].get("count_include_pad", True)))
        if reference.shape == call.output.shape:
            err = _rel_err(call.output, reference)
            if err > rtol_for(call.output):
                problems.append(f"output differs from the paper's {op.label} of its input by {err:.1e}")
    return found, problems, notes, out_width
