"""The cases: every form of every Lucid op the Inception models use (``CASES``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import lucid
import lucid.nn as lnn
import lucid.nn.functional as LF
import numpy as np
import torch

from conformance.ops.records import Z_SIGMA, Arrays, OpCase, Quantities, Stat
from conformance.ops.sides import lucid_side, normal, out_len, torch_side
from lucid_inception.frameworks import LucidAdapter, TorchAdapter

N, CIN, COUT, HW = 2, 4, 6, 9  # batch 2: the broadcast-gradient bug needs N > 1


def _conv2d(name: str, k: tuple[int, int], s: int, p: tuple[int, int], functional: bool = False) -> OpCase:
    out_hw = tuple(out_len(HW, k[i], s, p[i]) for i in range(2))

    def make(rng: np.random.Generator, dtype: str) -> Arrays:
        fan_in = CIN * k[0] * k[1]
        return {
            "x": normal(rng, (N, CIN, HW, HW), dtype),
            "weight": (rng.standard_normal((COUT, CIN, *k)) / math.sqrt(fan_in)).astype(dtype),
            "bias": normal(rng, (COUT,), dtype),
            "upstream": normal(rng, (N, COUT, *out_hw), dtype),
        }

    if functional:
        # Weight and bias as plain leaf tensors through lucid.nn.functional.conv2d.
        lucid_run = lucid_side(
            None,
            lambda _, x, w, b: LF.conv2d(x, w, b, stride=s, padding=p),
            inputs=("x", "weight", "bias"),
        )
        torch_run = torch_side(
            None,
            lambda _, x, w, b: torch.nn.functional.conv2d(x, w, b, stride=s, padding=p),
            inputs=("x", "weight", "bias"),
        )
        how = "lucid.nn.functional.conv2d"
    else:
        lucid_run = lucid_side(
            lambda: lnn.Conv2d(CIN, COUT, k, stride=s, padding=p, bias=True),
            lambda m, x: m(x),
            inputs=("x",),
        )
        torch_run = torch_side(
            lambda: torch.nn.Conv2d(CIN, COUT, k, stride=s, padding=p, bias=True),
            lambda m, x: m(x),
            inputs=("x",),
        )
        how = "nn.Conv2d"
    return OpCase(
        name=name,
        op="conv2d",
        summary=f"{how} {k[0]}x{k[1]} stride {s} padding {p}, bias, {N}x{CIN}x{HW}x{HW} -> {COUT} channels",
        make=make,
        lucid=lucid_run,
        torch=torch_run,
        expect={"broadcast-gradient": ("grad:bias",)},
    )


BN_C, BN_HW = 3, 5  # n = N * 5 * 5 = 50 values per channel: n/(n-1) = 1.02
BN_MOMENTUM, BN_EPS = 0.1, 1e-5


def _bn_make(rng: np.random.Generator, dtype: str) -> Arrays:
    # Per-channel offsets and scales, random affine parameters and running statistics, so
    # no term of the normalisation vanishes.
    loc = rng.uniform(-2, 2, (1, BN_C, 1, 1))
    scale = rng.uniform(0.5, 2, (1, BN_C, 1, 1))
    x = loc + scale * rng.standard_normal((N, BN_C, BN_HW, BN_HW))
    return {
        "x": x.astype(dtype),
        "weight": rng.uniform(0.5, 1.5, BN_C).astype(dtype),
        "bias": normal(rng, (BN_C,), dtype),
        "running_mean": rng.uniform(-1, 1, BN_C).astype(dtype),
        "running_var": rng.uniform(0.5, 1.5, BN_C).astype(dtype),
        "upstream": normal(rng, (N, BN_C, BN_HW, BN_HW), dtype),
    }


def _biased_running_var(q: Quantities, data: Arrays) -> None:
    """Convention biased-running-var: torch's running_var with the batch variance's n/(n-1)
    factor undone, i.e. what torch would hold had it used the biased variance."""
    n = data["x"].size // BN_C  # values per channel (the batch-1 twin has fewer)
    old = data["running_var"].astype(np.float64)
    new = q["running_var"].astype(np.float64)
    kept = (1 - BN_MOMENTUM) * old
    q["running_var"] = (kept + (new - kept) * (n - 1) / n).astype(data["x"].dtype)


def _batchnorm(name: str, train: bool, backward: bool = True, biased_reference: bool = True) -> OpCase:
    names = dict(inputs=("x",), train=train, backward=backward)
    adjust = _biased_running_var if (train and biased_reference) else None
    expect: dict[str, tuple[str, ...]] = {}
    if backward:
        # Train mode: the batch mean and variance are (1, C, 1, 1) operands broadcast over
        # the batch, so the input gradient is wrong too. Eval mode: only the affine ones.
        grads = ("grad:x", "grad:weight", "grad:bias") if train else ("grad:weight", "grad:bias")
        expect["broadcast-gradient"] = grads
    if train and not biased_reference:
        expect["biased-running-var"] = ("running_var",)
    if train:
        mode = "train (batch statistics, running-stat update)"
        ref = "biased" if biased_reference else "torch's unbiased"
        mode += f", reference running_var: {ref}"
    else:
        mode = "eval (running statistics)"
    return OpCase(
        name=name,
        op="batch_norm",
        summary=f"nn.BatchNorm2d({BN_C}) {mode}, {N}x{BN_C}x{BN_HW}x{BN_HW}"
        + ("" if backward else ", forward only"),
        make=_bn_make,
        lucid=lucid_side(
            lambda: lnn.BatchNorm2d(BN_C, eps=BN_EPS, momentum=BN_MOMENTUM),
            lambda m, x: m(x),
            **names,
        ),
        torch=torch_side(
            lambda: torch.nn.BatchNorm2d(BN_C, eps=BN_EPS, momentum=BN_MOMENTUM),
            lambda m, x: m(x),
            adjust=adjust,
            **names,
        ),
        expect=expect,
    )


def _batchnorm_upstream_load() -> OpCase:
    """Train step after loading state with Lucid's own ``load_state_dict``.

    Deliberately not through the adapter: this is the upstream path (checkpoints, user
    code), which assigns ``.data`` and leaves ``Tensor.dtype`` stale.
    """

    def lucid_run(data: Arrays, device: str) -> Quantities:
        m = lnn.BatchNorm2d(BN_C, eps=BN_EPS, momentum=BN_MOMENTUM)
        if data["x"].dtype == np.float64:
            # A float64 run loads into a float64 module, as the torch side does: a loader
            # that casts to the module's dtype (torch's, and the kit's LUC-010 patch) must
            # not be judged on float32 precision. Float32 runs keep the fresh module as
            # upstream builds it: that is where the stale dtype bites.
            LucidAdapter.cast(m, "float64")
        m.load_state_dict({k: data[k].copy() for k in ("weight", "bias", "running_mean", "running_var")})
        m.train()
        m.to(device)
        with lucid.no_grad():
            out = m(LucidAdapter.tensor(data["x"], device=device))
        return {
            "out": LucidAdapter.to_numpy(out),
            "running_mean": LucidAdapter.to_numpy(m.running_mean),
            "running_var": LucidAdapter.to_numpy(m.running_var),
        }

    return OpCase(
        name="batchnorm2d_train_after_load_state_dict",
        op="batch_norm",
        summary=f"nn.BatchNorm2d({BN_C}) state loaded with Lucid's load_state_dict, one train "
        "step (forward only), reference running_var: biased",
        make=_bn_make,
        lucid=lucid_run,
        torch=torch_side(
            lambda: torch.nn.BatchNorm2d(BN_C, eps=BN_EPS, momentum=BN_MOMENTUM),
            lambda m, x: m(x),
            ("x",),
            backward=False,
            adjust=_biased_running_var,
        ),
        expect={"stale-dtype": ("running_mean", "running_var")},
    )


class _TorchConvBNReLU(torch.nn.Module):
    """Twin of lucid.nn.ConvBNReLU2d: same attribute names, conv with bias."""

    def __init__(self, cin: int, cout: int, k: int, padding: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, k, padding=padding, bias=True)
        self.bn = torch.nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.relu = torch.nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _conv_bn_relu_eval() -> OpCase:
    # Eval mode only: in train mode the conv bias gradient is identically zero (BatchNorm
    # subtracts the batch mean), so a relative error against it is rounding noise over
    # rounding noise. The train-mode parts are covered by conv2d_* and batchnorm2d_train.

    def make(rng: np.random.Generator, dtype: str) -> Arrays:
        return {
            "x": normal(rng, (N, CIN, HW, HW), dtype),
            "conv.weight": (rng.standard_normal((COUT, CIN, 3, 3)) / 6.0).astype(dtype),
            "conv.bias": normal(rng, (COUT,), dtype),
            "bn.weight": rng.uniform(0.5, 1.5, COUT).astype(dtype),
            "bn.bias": normal(rng, (COUT,), dtype),
            "bn.running_mean": rng.uniform(-1, 1, COUT).astype(dtype),
            "bn.running_var": rng.uniform(0.5, 1.5, COUT).astype(dtype),
            "upstream": normal(rng, (N, COUT, HW, HW), dtype),
        }

    names = dict(inputs=("x",), train=False)
    return OpCase(
        name="conv_bn_relu_3x3_eval",
        op="conv_bn_relu",
        summary="nn.ConvBNReLU2d 3x3 padding 1 (conv bias on), eval mode: the models' building block",
        make=make,
        lucid=lucid_side(
            lambda: lnn.ConvBNReLU2d(CIN, COUT, 3, padding=1, conv_bias=True),
            lambda m, x: m(x),
            **names,
        ),
        torch=torch_side(
            lambda: _TorchConvBNReLU(CIN, COUT, 3, padding=1),
            lambda m, x: m(x),
            **names,
        ),
        expect={"broadcast-gradient": ("grad:conv.bias", "grad:bn.weight", "grad:bn.bias")},
    )


def _unary(
    name: str,
    op: str,
    summary: str,
    shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    lucid_module: Callable[[], object],
    torch_module: Callable[[], torch.nn.Module],
    train: bool = False,
    expect: Mapping[str, tuple[str, ...]] | None = None,
) -> OpCase:
    def make(rng: np.random.Generator, dtype: str) -> Arrays:
        return {
            "x": normal(rng, shape, dtype),
            "upstream": normal(rng, out_shape, dtype),
        }

    return OpCase(
        name=name,
        op=op,
        summary=summary,
        make=make,
        lucid=lucid_side(lucid_module, lambda m, x: m(x), ("x",), train=train),
        torch=torch_side(torch_module, lambda m, x: m(x), ("x",), train=train),
        expect=dict(expect or {}),
    )


def _fn(
    name: str,
    op: str,
    summary: str,
    shapes: Mapping[str, tuple[int, ...]],
    out_shape: tuple[int, ...],
    lucid_fn: Callable[..., lucid.Tensor],
    torch_fn: Callable[..., torch.Tensor],
    expect: Mapping[str, tuple[str, ...]] | None = None,
) -> OpCase:
    """A case for a plain function of leaf tensors (no module)."""

    def make(rng: np.random.Generator, dtype: str) -> Arrays:
        d = {k: normal(rng, s, dtype) for k, s in shapes.items()}
        d["upstream"] = normal(rng, out_shape, dtype)
        return d

    return OpCase(
        name=name,
        op=op,
        summary=summary,
        make=make,
        lucid=lucid_side(None, lambda _, *xs: lucid_fn(*xs), tuple(shapes)),
        torch=torch_side(None, lambda _, *xs: torch_fn(*xs), tuple(shapes)),
        expect=dict(expect or {}),
    )


DROP_P = 0.2  # the models' head: Lucid Dropout(p=0.2) = keep 0.8
DROP_SIZE = 1 << 20  # 2^20 draws: binomial std of the drop fraction about 3.9e-4
DROP_BLOCKS = 16  # contiguous blocks of 2^16 elements, each with its own drop fraction
# Share of elements whose mask changes between two independent draws: 2 p (1 - p).
DROP_CHANGE = 2 * DROP_P * (1 - DROP_P)


def _binomial_bound(p: float, n: int) -> float:
    """Z_SIGMA standard deviations of the difference of two independent binomial fractions
    (probability p, n draws each): a correct op is outside with probability < 6e-7."""
    return Z_SIGMA * math.sqrt(2 * p * (1 - p) / n)


def _block_fractions(dropped: np.ndarray) -> np.ndarray:
    """The share of dropped elements in each of DROP_BLOCKS contiguous blocks."""
    return dropped.reshape(DROP_BLOCKS, -1).mean(axis=1)


def _dropout_train() -> OpCase:
    """Train-mode dropout, checked statistically against torch.

    With x = 1 every output is 0 or the keep scale. Quantities: ``kept_value`` (the distinct
    non-zero outputs, which must all be torch's 1/(1-p)); ``drop_fraction`` (Lucid's share
    of zeros against torch's); ``block_drop_fraction`` (the same in each of DROP_BLOCKS
    contiguous blocks, Lucid's block i against torch's: a mask that drops by position, e.g.
    always the first p of the elements, fails it); ``changed_on_redraw`` (the share of mask
    elements that change on the next call, against torch's: a mask that repeats fails it);
    and ``grad:x`` (the upstream gradient through Lucid's own mask times torch's scale). The
    statistics are held to Z_SIGMA standard deviations of the difference of two independent
    binomial fractions of their size (``_binomial_bound``); with 1 + 16 + 1 of them, a
    correct dropout fails one with probability < 18 x 6e-7 = 1.1e-5.
    """

    def make(rng: np.random.Generator, dtype: str) -> Arrays:
        return {
            "x": np.ones(DROP_SIZE, dtype=dtype),
            "upstream": normal(rng, (DROP_SIZE,), dtype),
            "seed": np.array(rng.integers(2**31)),
        }

    def lucid_run(data: Arrays, device: str) -> Quantities:
        m = lnn.Dropout(p=DROP_P)
        LucidAdapter.set_training(m, True)
        x = LucidAdapter.tensor(data["x"], device=device, requires_grad=True)
        # Lucid's dropout draws its mask from NumPy's global RNG (lucid.random.rand is
        # np.random.rand, on every device, in 2.9.0 and 2.16.0): seed that one alone and put
        # the caller's state back. Not lucid.random.seed: it also reseeds MLX and sets
        # lucid.random.get_seed(), caller state this case has no business changing.
        state = np.random.get_state()
        try:
            np.random.seed(int(data["seed"]))
            out = m(x)
            with lucid.no_grad():
                again = m(x)  # the next call must draw a new mask
        finally:
            np.random.set_state(state)
        LucidAdapter.backward(out, data["upstream"])
        y = LucidAdapter.to_numpy(out)
        dropped = y == 0
        return {
            "kept_value": _kept_range(y),
            "drop_fraction": np.array(np.mean(dropped)),
            "block_drop_fraction": _block_fractions(dropped),
            "changed_on_redraw": np.array(np.mean(dropped != (LucidAdapter.to_numpy(again) == 0))),
            "grad:x": LucidAdapter.grad(x),
            # An observation the reference needs, not a compared quantity: the mask Lucid
            # drew, so the gradient reference runs through the same mask.
            "_mask": ~dropped,
        }

    def torch_run(data: Arrays, device: str) -> Quantities:
        dtype = getattr(torch, str(data["x"].dtype))
        with torch.random.fork_rng(devices=[] if device == "cpu" else None):
            torch.manual_seed(int(data["seed"]))
            x = torch.ones(DROP_SIZE, dtype=dtype, device=device)
            y = torch.nn.functional.dropout(x, p=DROP_P, training=True)
            again = torch.nn.functional.dropout(x, p=DROP_P, training=True)
        kept = _kept_range(TorchAdapter.to_numpy(y))
        # Gradient of dropout with Lucid's mask, at torch's keep scale and dtype.
        mask = torch.from_numpy(data["_mask"]).to(device)
        upstream = torch.tensor(data["upstream"], device=device)
        grad = torch.where(mask, upstream * torch.tensor(kept[1], device=device), 0)
        dropped = TorchAdapter.to_numpy(y) == 0
        changed = float(np.mean(dropped != (TorchAdapter.to_numpy(again) == 0)))
        block = DROP_SIZE // DROP_BLOCKS
        return {
            "kept_value": kept,
            "drop_fraction": Stat(
                float(np.mean(dropped)),
                _binomial_bound(DROP_P, DROP_SIZE),
                f"{Z_SIGMA:g} sd of the difference of two binomial fractions (p={DROP_P}, n={DROP_SIZE})",
            ),
            "block_drop_fraction": Stat(
                _block_fractions(dropped),
                _binomial_bound(DROP_P, block),
                f"per block, {Z_SIGMA:g} sd of the difference of two binomial fractions "
                f"(p={DROP_P}, n={block})",
            ),
            "changed_on_redraw": Stat(
                changed,
                _binomial_bound(DROP_CHANGE, DROP_SIZE),
                f"{Z_SIGMA:g} sd of the difference of two binomial fractions "
                f"(p=2p(1-p)={DROP_CHANGE:g}, n={DROP_SIZE})",
            ),
            "grad:x": TorchAdapter.to_numpy(grad),
        }

    return OpCase(
        name="dropout_p0.2_train",
        op="dropout",
        summary=f"nn.Dropout(p={DROP_P}) train mode on {DROP_SIZE} ones, called twice: p is the drop "
        "probability, kept values scaled by 1/(1-p), a new mask on every call",
        make=make,
        lucid=lucid_run,
        torch=torch_run,
    )


def _kept_range(y: np.ndarray) -> np.ndarray:
    """[min, max] of the non-zero outputs; NaN (a failed comparison) if none was kept."""
    kept = y[y != 0]
    if kept.size == 0:
        return np.full(2, np.nan, dtype=y.dtype)
    return np.array([kept.min(), kept.max()], dtype=y.dtype)


def _scaled_residual(x: object, y: object) -> object:
    return x + 0.17 * y


CASES: tuple[OpCase, ...] = (
    # conv2d, every form the models use (conformance.spec): stems and reductions use 3x3 stride 1
    # and 2 valid, blocks 3x3 same, 1x1, and the factorised 1x7/7x1 and 1x3/3x1.
    _conv2d("conv2d_3x3_s1_valid", (3, 3), 1, (0, 0)),
    _conv2d("conv2d_3x3_s1_same", (3, 3), 1, (1, 1)),
    _conv2d("conv2d_3x3_s2_valid", (3, 3), 2, (0, 0)),
    _conv2d("conv2d_3x3_s2_same", (3, 3), 2, (1, 1)),
    _conv2d("conv2d_1x1", (1, 1), 1, (0, 0)),
    _conv2d("conv2d_1x7_p0_3", (1, 7), 1, (0, 3)),
    _conv2d("conv2d_7x1_p3_0", (7, 1), 1, (3, 0)),
    _conv2d("conv2d_1x3_p0_1", (1, 3), 1, (0, 1)),
    _conv2d("conv2d_3x1_p1_0", (3, 1), 1, (1, 0)),
    _conv2d("conv2d_functional_3x3_s1_same", (3, 3), 1, (1, 1), functional=True),
    # batch norm
    _batchnorm("batchnorm2d_train", train=True),
    _batchnorm(
        "batchnorm2d_train_running_var_unbiased",
        train=True,
        backward=False,
        biased_reference=False,
    ),
    _batchnorm("batchnorm2d_eval", train=False),
    _batchnorm_upstream_load(),
    _conv_bn_relu_eval(),
    # pools
    _unary(
        "maxpool_3x3_s2_valid",
        "max_pool2d",
        "nn.MaxPool2d(3, stride=2), no padding",
        (N, 3, HW, HW),
        (N, 3, 4, 4),
        lambda: lnn.MaxPool2d(3, stride=2, padding=0),
        lambda: torch.nn.MaxPool2d(3, stride=2, padding=0),
    ),
    _unary(
        "avgpool_3x3_s1_p1_count_include_pad",
        "avg_pool2d",
        "nn.AvgPool2d(3, stride=1, padding=1) against torch count_include_pad=True",
        (N, 3, HW, HW),
        (N, 3, HW, HW),
        lambda: lnn.AvgPool2d(3, stride=1, padding=1),
        lambda: torch.nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True),
    ),
    _unary(
        "avgpool_3x3_s1_p1_exclude_pad",
        "avg_pool2d",
        "nn.AvgPool2d(3, stride=1, padding=1) against torch count_include_pad=False (not Lucid's convention)",
        (N, 3, HW, HW),
        (N, 3, HW, HW),
        lambda: lnn.AvgPool2d(3, stride=1, padding=1),
        lambda: torch.nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
        expect={"avgpool-count-include-pad": ("out", "grad:x")},
    ),
    _unary(
        "adaptive_avgpool_1x1",
        "adaptive_avg_pool2d",
        "nn.AdaptiveAvgPool2d((1, 1)) on 8x8 (the models' last feature map at 299)",
        (N, COUT, 8, 8),
        (N, COUT, 1, 1),
        lambda: lnn.AdaptiveAvgPool2d((1, 1)),
        lambda: torch.nn.AdaptiveAvgPool2d((1, 1)),
    ),
    # head
    _unary(
        "dropout_p0.2_eval",
        "dropout",
        f"nn.Dropout(p={DROP_P}) eval mode: identity",
        (N, 16),
        (N, 16),
        lambda: lnn.Dropout(p=DROP_P),
        lambda: torch.nn.Dropout(p=DROP_P),
        train=False,
    ),
    _dropout_train(),
    OpCase(
        name="linear",
        op="linear",
        summary="nn.Linear(16, 10) with bias, batch 2",
        make=lambda rng, dt: {
            "x": normal(rng, (N, 16), dt),
            "weight": (rng.standard_normal((10, 16)) / 4.0).astype(dt),
            "bias": normal(rng, (10,), dt),
            "upstream": normal(rng, (N, 10), dt),
        },
        lucid=lucid_side(lambda: lnn.Linear(16, 10), lambda m, x: m(x), ("x",)),
        torch=torch_side(lambda: torch.nn.Linear(16, 10), lambda m, x: m(x), ("x",)),
        expect={"broadcast-gradient": ("grad:bias",)},
    ),
    _unary(
        "relu",
        "relu",
        "nn.ReLU",
        (N, 3, 5, 5),
        (N, 3, 5, 5),
        lnn.ReLU,
        torch.nn.ReLU,
    ),
    # tensor ops
    _fn(
        "concat_axis1",
        "concatenate",
        "lucid.concatenate([a, b, c], axis=1), 3 + 4 + 2 channels",
        {"a": (N, 3, 5, 5), "b": (N, 4, 5, 5), "c": (N, 2, 5, 5)},
        (N, 9, 5, 5),
        lambda a, b, c: lucid.concatenate([a, b, c], axis=1),
        lambda a, b, c: torch.cat([a, b, c], dim=1),
    ),
    _fn(
        "reshape_flatten",
        "reshape",
        "x.reshape(x.shape[0], -1) (the models' head)",
        {"x": (N, COUT, 1, 1)},
        (N, COUT),
        lambda x: x.reshape(x.shape[0], -1),
        lambda x: x.reshape(x.shape[0], -1),
    ),
    _fn(
        "flatten_start1",
        "flatten",
        "lucid.flatten(x, start_axis=1) on (2, 3, 4, 4)",
        {"x": (N, 3, 4, 4)},
        (N, 48),
        lambda x: lucid.flatten(x, start_axis=1),
        lambda x: torch.flatten(x, start_dim=1),
    ),
    _fn(
        "add_same_shape",
        "add",
        "x + y, same shape (the residual sum)",
        {"x": (N, 6, 5, 5), "y": (N, 6, 5, 5)},
        (N, 6, 5, 5),
        lambda x, y: x + y,
        lambda x, y: x + y,
    ),
    _fn(
        "add_broadcast_c",
        "add",
        "x + b, x (2, 6), b (6,) (the Linear bias)",
        {"x": (N, 6), "b": (6,)},
        (N, 6),
        lambda x, b: x + b,
        lambda x, b: x + b,
        expect={"broadcast-gradient": ("grad:b",)},
    ),
    _fn(
        "add_broadcast_1c11",
        "add",
        "x + b, x (2, 6, 5, 5), b (1, 6, 1, 1) (the conv bias)",
        {"x": (N, 6, 5, 5), "b": (1, 6, 1, 1)},
        (N, 6, 5, 5),
        lambda x, b: x + b,
        lambda x, b: x + b,
        expect={"broadcast-gradient": ("grad:b",)},
    ),
    _fn(
        "scalar_mul",
        "mul",
        "0.17 * t (the residual scaling, Python float on the left)",
        {"t": (N, 6, 5, 5)},
        (N, 6, 5, 5),
        lambda t: 0.17 * t,
        lambda t: 0.17 * t,
    ),
    _fn(
        "scaled_residual_add",
        "add",
        "x + 0.17 * y (an Inception-ResNet block's sum before its ReLU)",
        {"x": (N, 6, 5, 5), "y": (N, 6, 5, 5)},
        (N, 6, 5, 5),
        _scaled_residual,
        _scaled_residual,
    ),
)
