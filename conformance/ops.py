"""Differential conformance of every Lucid op the Inception models use, against torch.

Each case is a named record (ONNX backend-test style): how to make seeded data, how to run it
in Lucid and in torch, and which known deviations it is expected to show on which Lucid
version. The runner runs forward and backward on both sides with the same data and the same
random upstream gradient, compares every output, every input gradient and every parameter
gradient, and gives a verdict. Known bugs and conventions are explicit expectations
(``KNOWN``): a case that fails exactly as declared is ``known-bug`` / ``convention``, a case
that fails otherwise is ``fail``, and a case declared to fail that passes is
``unexpected-pass``. Nothing is skipped.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.metadata
import json
import math
import re
import sys
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import lucid
import lucid.nn as lnn
import lucid.nn.functional as LF
import numpy as np
import torch

from lucid_inception.frameworks import Adapter, LucidAdapter, TorchAdapter

__all__ = [
    "CASES",
    "DTYPES",
    "KNOWN",
    "LUCID_DEVICES",
    "TOLERANCE",
    "TORCH_DEVICES",
    "Check",
    "Known",
    "OpCase",
    "OpResult",
    "Stat",
    "add_ops_command",
    "lucid_version",
    "run_case",
    "run_cases",
    "select_cases",
]

DTYPES: tuple[str, ...] = ("float32", "float64")
LUCID_DEVICES: tuple[str, ...] = ("cpu", "gpu")
TORCH_DEVICES: tuple[str, ...] = ("cpu", "cuda")

# Error budget, one entry per dtype, never per case. Every case is sized so that no output
# element is a reduction of more than K_MAX = 256 terms (largest: the conv weight gradient,
# 2 x 9 x 9 = 162 terms; the adaptive pool, 64; BatchNorm statistics, 50). Recursive
# summation of K terms errs by at most K * u relative to the sum of |terms| (u = unit
# roundoff = eps / 2), and both sides round, so the budget is 2 * K_MAX * u = K_MAX * eps,
# applied to max|error| / max|reference| over the whole tensor. That is 3.1e-5 in float32
# and 5.7e-14 in float64. The bugs this kit exists to catch are orders of magnitude larger
# (wrong broadcast gradients: O(1); count_include_pad: O(0.1); n/(n-1) with n = 50 on the
# running variance: 5e-3), and the measured errors of correct ops sit about 75x below the
# budget in both dtypes (docs/framework-ops.md).
K_MAX = 256
TOLERANCE: dict[str, float] = {
    dt: K_MAX * float(np.finfo(dt).eps) for dt in DTYPES
}  # float32: 3.05e-05, float64: 5.68e-14

# Statistical checks (dropout) use a bound derived from the binomial standard deviation: a
# deviation beyond Z_SIGMA standard deviations has probability < 6e-7 for a correct op.
Z_SIGMA = 5.0

_VERDICTS_OK = ("pass", "known-bug", "convention")


@dataclass(frozen=True)
class Known:
    """A known deviation of Lucid from torch: a bug, or a documented convention."""

    id: str
    kind: str  # "bug" or "convention"
    lucid: str  # version spec it applies to: "*", "<=2.9.0", ">=2.0,<2.16" ...
    summary: str
    evidence: str
    devices: tuple[str, ...] = LUCID_DEVICES
    dtypes: tuple[str, ...] = DTYPES

    def applies(self, version: str, device: str, dtype: str) -> bool:
        """Whether this deviation is expected for that Lucid version, device and dtype."""
        return _version_matches(self.lucid, version) and device in self.devices and dtype in self.dtypes


KNOWN: dict[str, Known] = {
    k.id: k
    for k in (
        Known(
            id="broadcast-gradient",
            kind="bug",
            lucid="<=2.9.0",
            summary="gradient of a broadcast operand is wrong when the batch is > 1",
            evidence=(
                "lucid/__init__.py _match_grad_shape collapses a (N, C, ...) gradient onto a "
                "(1, C, 1, 1) or (C,) operand by reshaping it to (*operand.shape, k) and "
                "summing the last axis, which groups the wrong elements unless every "
                "broadcast axis trails; conv bias, Linear bias, BatchNorm affine parameters "
                "and BatchNorm's batch mean/variance all go through it (fixed in 2.16.0)"
            ),
        ),
        Known(
            id="biased-running-var",
            kind="convention",
            lucid="*",
            summary="BatchNorm running_var is updated with the biased batch variance",
            evidence=(
                "lucid/nn/functional/_norm.py batch_norm updates running_var with "
                "input_.var() (divisor n); torch uses the unbiased variance (divisor n - 1)"
            ),
        ),
        Known(
            id="avgpool-count-include-pad",
            kind="convention",
            lucid="*",
            summary="average pool always divides by k*k, padding included",
            evidence=(
                "lucid/_backend/pool.py avg_pool_nd_op has no count_include_pad option; "
                "it matches torch count_include_pad=True"
            ),
        ),
        Known(
            id="stale-dtype",
            kind="bug",
            lucid="==2.9.0",
            devices=("cpu",),  # on 'gpu' the scalar becomes an MLX float32 array
            dtypes=("float32",),
            summary="float32 BatchNorm running statistics turn float64 after one train step",
            evidence=(
                "Tensor.dtype is set once in __init__ and not updated when .data is "
                "assigned (as load_state_dict and every transfer by .data do), so a fresh "
                "BatchNorm's float64 buffers loaded with float32 arrays still report "
                "Float64; batch_norm's update `momentum * batch_mean + (1 - momentum) * "
                "running_mean` makes the Python scalar a Float64 tensor from that stale "
                "dtype, and NumPy promotes the result; afterwards eval-mode activations are "
                "float64 too. Not in 2.16.0, whose BatchNorm kernel updates raw arrays"
            ),
        ),
        Known(
            id="mlx-float32",
            kind="convention",
            lucid="*",
            devices=("gpu",),
            dtypes=("float64",),
            summary="device 'gpu' computes float64 data in float32",
            evidence=(
                "lucid/_tensor/tensor.py moves data with mx.array(data) and no dtype, and "
                "mx.array turns float64 NumPy arrays into float32 (MLX has no float64 on GPU)"
            ),
        ),
    )
}

# Deviations that concern every case on a device/dtype rather than one op. They are checked
# through the per-quantity dtype check: if Lucid's outputs do not have the requested dtype,
# the numeric errors are measured at the wrong precision and are not held against the
# tolerance.
_DTYPE_KNOWN: tuple[str, ...] = ("mlx-float32",)


@dataclass(frozen=True)
class Stat:
    """A reference for a statistic, with a bound derived from its sampling distribution."""

    value: float
    bound: float  # absolute
    basis: str


Quantities = dict[str, "np.ndarray | Stat"]
Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class OpCase:
    """One named differential case.

    ``make(rng, dtype)`` returns the seeded arrays both sides use (inputs, parameters and the
    upstream gradient). ``lucid(data, device)`` and ``torch(data, device)`` return the named
    quantities to compare: ``out`` (and other forward quantities), ``grad:<name>`` for every
    input and parameter. ``expect`` maps a ``KNOWN`` id to the quantities that deviation
    puts out of tolerance; it is in force where the ``Known`` record applies.
    """

    name: str
    op: str
    summary: str
    make: Callable[[np.random.Generator, str], Arrays]
    lucid: Callable[[Arrays, str], Quantities]
    torch: Callable[[Arrays, str], Quantities]
    expect: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        """Stable per-case seed (crc32 of the name, unlike hash() stable across runs)."""
        return zlib.crc32(self.name.encode())


@dataclass(frozen=True)
class Check:
    """The comparison of one quantity."""

    quantity: str
    max_abs: float
    max_rel: float
    tol: float
    tol_kind: str  # "rel": max_rel <= tol; "abs": max_abs <= tol (statistics)
    ok: bool
    dtype_ok: bool = True
    note: str = ""


@dataclass(frozen=True)
class OpResult:
    """The outcome of one case at one dtype."""

    case: str
    op: str
    dtype: str
    lucid_device: str
    torch_device: str
    lucid_version: str
    checks: tuple[Check, ...]
    expected: tuple[str, ...]  # KNOWN ids in force
    expected_verdict: str
    verdict: str
    message: str

    @property
    def failing(self) -> tuple[str, ...]:
        """Quantities out of tolerance (or of the wrong dtype)."""
        return tuple(c.quantity for c in self.checks if not (c.ok and c.dtype_ok))

    @property
    def ok(self) -> bool:
        """True for pass, known-bug and convention: the run agrees with its declaration."""
        return self.verdict in _VERDICTS_OK

    def check(self, quantity: str) -> Check:
        """The check of one quantity; KeyError lists the valid names."""
        for c in self.checks:
            if c.quantity == quantity:
                return c
        names = ", ".join(c.quantity for c in self.checks)
        raise KeyError(f"{self.case} has no quantity {quantity!r}; it has: {names}")

    def to_dict(self) -> dict:
        """Plain JSON-ready form (infinite errors, from shape mismatches, as "inf")."""
        d = asdict(self)
        for c in d["checks"]:
            for k in ("max_abs", "max_rel"):
                if not math.isfinite(c[k]):
                    c[k] = str(c[k])
        d["failing"] = list(self.failing)
        return d


# --------------------------------------------------------------------------------------
# Versions and devices


def lucid_version() -> str:
    """The installed lucid-dl version."""
    try:
        return importlib.metadata.version("lucid-dl")
    except importlib.metadata.PackageNotFoundError:
        v = getattr(lucid, "__version__", None)
        if v is None:
            raise RuntimeError(
                "cannot tell the Lucid version: no 'lucid-dl' distribution metadata and no lucid.__version__"
            ) from None
        return str(v)


def _version_tuple(v: str) -> tuple[int, ...]:
    m = re.match(r"\d+(\.\d+)*", v.strip())
    if m is None:
        raise ValueError(f"not a version: {v!r}")
    return tuple(int(p) for p in m.group(0).split("."))


def _version_matches(spec: str, version: str) -> bool:
    """Tiny PEP 440 subset: '*' or comma-joined clauses of <, <=, ==, >=, > and a version."""
    if spec.strip() == "*":
        return True
    have = _version_tuple(version)
    for clause in spec.split(","):
        m = re.fullmatch(r"\s*(<=|>=|==|<|>)\s*([0-9.]+)\s*", clause)
        if m is None:
            raise ValueError(
                f"bad version spec clause {clause!r} in {spec!r}; "
                "use '*' or clauses like '<=2.9.0', '>=2.0,<2.16'"
            )
        op, want = m.group(1), _version_tuple(m.group(2))
        n = max(len(have), len(want))
        a, b = have + (0,) * (n - len(have)), want + (0,) * (n - len(want))
        if not {"<": a < b, "<=": a <= b, "==": a == b, ">=": a >= b, ">": a > b}[op]:
            return False
    return True


# --------------------------------------------------------------------------------------
# The two sides. One function runs either framework through its adapter (the project's one
# mechanism for state, dtypes, devices, modes and gradients); both get the same arrays, and
# state-dict names are equal on both sides (the twin convention), so quantities line up.


def _side(
    adapter: Adapter,
    build: Callable[[], object] | None,
    forward: Callable[..., object],
    inputs: Sequence[str],
    train: bool = True,
    backward: bool = True,
    adjust: Callable[[Quantities, Arrays], None] | None = None,
) -> Callable[[Arrays, str], Quantities]:
    """Build the module (if any), give it the case's state in the case's dtype, run
    ``forward(module, *inputs)`` and backpropagate ``data["upstream"]``.

    Quantities: ``out``; every buffer by state name (after the run); ``grad:<name>`` for
    every input and parameter. ``adjust(q, data)`` turns a reference into a convention.
    """

    def run(data: Arrays, device: str) -> Quantities:
        dtype = data["upstream"].dtype
        module = build() if build is not None else None
        params: list[str] = []
        buffers: list[str] = []
        if module is not None:
            names = list(adapter.tensors(module))
            params = adapter.parameter_names(module)
            buffers = [k for k in names if k not in params]
            adapter.cast(module, dtype)
            adapter.load_state(
                module,
                {k: data[k] for k in names if k in data},
                what=f"loading the case's state into a {adapter.name} module",
            )
            adapter.set_training(module, train)
            adapter.to_device(module, device)
        xs = [adapter.tensor(data[n], device=device, requires_grad=backward) for n in inputs]
        if backward:
            out = forward(module, *xs)
            if tuple(out.shape) != data["upstream"].shape:
                raise ValueError(
                    f"{adapter.name} output shape {tuple(out.shape)} != "
                    f"{data['upstream'].shape}, the shape the case gives"
                )
            adapter.backward(out, data["upstream"])
        else:
            with adapter.no_grad():
                out = forward(module, *xs)
        q: Quantities = {"out": adapter.to_numpy(out)}
        if module is not None:
            state = adapter.state(module)
            q.update({k: state[k] for k in buffers})
        if backward:
            grads = {n: adapter.grad(x) for n, x in zip(inputs, xs, strict=True)}
            if module is not None:
                grads.update(adapter.parameter_grads(module))
            for name, g in grads.items():
                if g is None:
                    raise RuntimeError(f"{adapter.name} left no gradient on {name!r}")
                q[f"grad:{name}"] = g
        if adjust is not None:
            adjust(q, data)
        return q

    return run


def _lucid_side(
    build: Callable[[], object] | None,
    forward: Callable[..., object],
    inputs: Sequence[str],
    **kw: object,
) -> Callable[[Arrays, str], Quantities]:
    return _side(LucidAdapter, build, forward, inputs, **kw)


def _torch_side(
    build: Callable[[], object] | None,
    forward: Callable[..., object],
    inputs: Sequence[str],
    **kw: object,
) -> Callable[[Arrays, str], Quantities]:
    return _side(TorchAdapter, build, forward, inputs, **kw)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def _out_len(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


# --------------------------------------------------------------------------------------
# Case builders


N, CIN, COUT, HW = 2, 4, 6, 9  # batch 2: the broadcast-gradient bug needs N > 1


def _conv2d(name: str, k: tuple[int, int], s: int, p: tuple[int, int], functional: bool = False) -> OpCase:
    out_hw = tuple(_out_len(HW, k[i], s, p[i]) for i in range(2))

    def make(rng: np.random.Generator, dtype: str) -> Arrays:
        fan_in = CIN * k[0] * k[1]
        return {
            "x": _normal(rng, (N, CIN, HW, HW), dtype),
            "weight": (rng.standard_normal((COUT, CIN, *k)) / math.sqrt(fan_in)).astype(dtype),
            "bias": _normal(rng, (COUT,), dtype),
            "upstream": _normal(rng, (N, COUT, *out_hw), dtype),
        }

    if functional:
        # Weight and bias as plain leaf tensors through lucid.nn.functional.conv2d.
        lucid_run = _lucid_side(
            None,
            lambda _, x, w, b: LF.conv2d(x, w, b, stride=s, padding=p),
            inputs=("x", "weight", "bias"),
        )
        torch_run = _torch_side(
            None,
            lambda _, x, w, b: torch.nn.functional.conv2d(x, w, b, stride=s, padding=p),
            inputs=("x", "weight", "bias"),
        )
        how = "lucid.nn.functional.conv2d"
    else:
        lucid_run = _lucid_side(
            lambda: lnn.Conv2d(CIN, COUT, k, stride=s, padding=p, bias=True),
            lambda m, x: m(x),
            inputs=("x",),
        )
        torch_run = _torch_side(
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
        "bias": _normal(rng, (BN_C,), dtype),
        "running_mean": rng.uniform(-1, 1, BN_C).astype(dtype),
        "running_var": rng.uniform(0.5, 1.5, BN_C).astype(dtype),
        "upstream": _normal(rng, (N, BN_C, BN_HW, BN_HW), dtype),
    }


def _biased_running_var(q: Quantities, data: Arrays) -> None:
    """Convention biased-running-var: torch's running_var with the batch variance's n/(n-1)
    factor undone, i.e. what torch would hold had it used the biased variance."""
    n = N * BN_HW * BN_HW
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
        lucid=_lucid_side(
            lambda: lnn.BatchNorm2d(BN_C, eps=BN_EPS, momentum=BN_MOMENTUM),
            lambda m, x: m(x),
            **names,
        ),
        torch=_torch_side(
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
        torch=_torch_side(
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
            "x": _normal(rng, (N, CIN, HW, HW), dtype),
            "conv.weight": (rng.standard_normal((COUT, CIN, 3, 3)) / 6.0).astype(dtype),
            "conv.bias": _normal(rng, (COUT,), dtype),
            "bn.weight": rng.uniform(0.5, 1.5, COUT).astype(dtype),
            "bn.bias": _normal(rng, (COUT,), dtype),
            "bn.running_mean": rng.uniform(-1, 1, COUT).astype(dtype),
            "bn.running_var": rng.uniform(0.5, 1.5, COUT).astype(dtype),
            "upstream": _normal(rng, (N, COUT, HW, HW), dtype),
        }

    names = dict(inputs=("x",), train=False)
    return OpCase(
        name="conv_bn_relu_3x3_eval",
        op="conv_bn_relu",
        summary="nn.ConvBNReLU2d 3x3 padding 1 (conv bias on), eval mode: the models' building block",
        make=make,
        lucid=_lucid_side(
            lambda: lnn.ConvBNReLU2d(CIN, COUT, 3, padding=1, conv_bias=True),
            lambda m, x: m(x),
            **names,
        ),
        torch=_torch_side(
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
            "x": _normal(rng, shape, dtype),
            "upstream": _normal(rng, out_shape, dtype),
        }

    return OpCase(
        name=name,
        op=op,
        summary=summary,
        make=make,
        lucid=_lucid_side(lucid_module, lambda m, x: m(x), ("x",), train=train),
        torch=_torch_side(torch_module, lambda m, x: m(x), ("x",), train=train),
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
        d = {k: _normal(rng, s, dtype) for k, s in shapes.items()}
        d["upstream"] = _normal(rng, out_shape, dtype)
        return d

    return OpCase(
        name=name,
        op=op,
        summary=summary,
        make=make,
        lucid=_lucid_side(None, lambda _, *xs: lucid_fn(*xs), tuple(shapes)),
        torch=_torch_side(None, lambda _, *xs: torch_fn(*xs), tuple(shapes)),
        expect=dict(expect or {}),
    )


DROP_P = 0.2  # the models' head: Lucid Dropout(p=0.2) = keep 0.8
DROP_SIZE = 1 << 20  # 2^20 draws: binomial std of the drop fraction about 3.9e-4


def _dropout_train() -> OpCase:
    """Train-mode dropout, checked statistically against torch.

    With x = 1 every output is 0 or the keep scale. Quantities: ``kept_value`` (the distinct
    non-zero outputs, which must all be torch's 1/(1-p)), ``drop_fraction`` (Lucid's share
    of zeros against torch's, with a bound of Z_SIGMA standard deviations of the difference
    of two independent binomial fractions), and ``grad:x`` (the upstream gradient through
    Lucid's own mask times torch's scale).
    """

    def make(rng: np.random.Generator, dtype: str) -> Arrays:
        return {
            "x": np.ones(DROP_SIZE, dtype=dtype),
            "upstream": _normal(rng, (DROP_SIZE,), dtype),
            "seed": np.array(rng.integers(2**31)),
        }

    def lucid_run(data: Arrays, device: str) -> Quantities:
        m = lnn.Dropout(p=DROP_P)
        LucidAdapter.set_training(m, True)
        x = LucidAdapter.tensor(data["x"], device=device, requires_grad=True)
        # Lucid's dropout draws its mask from NumPy's global RNG: seed it, then put the
        # caller's global state back.
        state = np.random.get_state()
        try:
            lucid.random.seed(int(data["seed"]))
            out = m(x)
        finally:
            np.random.set_state(state)
        LucidAdapter.backward(out, data["upstream"])
        y = LucidAdapter.to_numpy(out)
        return {
            "kept_value": _kept_range(y),
            "drop_fraction": np.array(np.mean(y == 0)),
            "grad:x": LucidAdapter.grad(x),
            # An observation the reference needs, not a compared quantity: the mask Lucid
            # drew, so the gradient reference runs through the same mask.
            "_mask": y != 0,
        }

    def torch_run(data: Arrays, device: str) -> Quantities:
        dtype = getattr(torch, str(data["x"].dtype))
        with torch.random.fork_rng(devices=[] if device == "cpu" else None):
            torch.manual_seed(int(data["seed"]))
            x = torch.ones(DROP_SIZE, dtype=dtype, device=device)
            y = torch.nn.functional.dropout(x, p=DROP_P, training=True)
        kept = _kept_range(TorchAdapter.to_numpy(y))
        # Gradient of dropout with Lucid's mask, at torch's keep scale and dtype.
        mask = torch.from_numpy(data["_mask"]).to(device)
        upstream = torch.tensor(data["upstream"], device=device)
        grad = torch.where(mask, upstream * torch.tensor(kept[1], device=device), 0)
        frac = float(torch.mean((y == 0).double()))
        sd = math.sqrt(2 * DROP_P * (1 - DROP_P) / DROP_SIZE)
        return {
            "kept_value": kept,
            "drop_fraction": Stat(
                frac,
                Z_SIGMA * sd,
                f"{Z_SIGMA:g} sd of the difference of two binomial fractions (p={DROP_P}, n={DROP_SIZE})",
            ),
            "grad:x": TorchAdapter.to_numpy(grad),
        }

    return OpCase(
        name="dropout_p0.2_train",
        op="dropout",
        summary=f"nn.Dropout(p={DROP_P}) train mode on {DROP_SIZE} ones: p is the drop "
        "probability, kept values scaled by 1/(1-p)",
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
    # conv2d, every form the models use (SPEC.md): stems and reductions use 3x3 stride 1
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
            "x": _normal(rng, (N, 16), dt),
            "weight": (rng.standard_normal((10, 16)) / 4.0).astype(dt),
            "bias": _normal(rng, (10,), dt),
            "upstream": _normal(rng, (N, 10), dt),
        },
        lucid=_lucid_side(lambda: lnn.Linear(16, 10), lambda m, x: m(x), ("x",)),
        torch=_torch_side(lambda: torch.nn.Linear(16, 10), lambda m, x: m(x), ("x",)),
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


# --------------------------------------------------------------------------------------
# Runner


def _compare(name: str, got: np.ndarray, ref: np.ndarray | Stat, dtype: str) -> Check:
    dtype_ok = True
    note = ""
    if isinstance(ref, Stat):
        value = float(np.asarray(got))
        err = abs(value - ref.value)
        rel = err / abs(ref.value) if ref.value else (0.0 if err == 0 else math.inf)
        ok = math.isfinite(err) and err <= ref.bound
        note = f"{value:.6g} vs {ref.value:.6g}, bound {ref.bound:.3g} ({ref.basis})"
        return Check(name, err, rel, ref.bound, "abs", ok, True, note)
    tol = TOLERANCE[dtype]
    if got.dtype != np.dtype(dtype):
        dtype_ok = False
        note = f"Lucid gave {got.dtype}, expected {dtype}"
    if got.shape != ref.shape:
        return Check(
            name, math.inf, math.inf, tol, "rel", False, dtype_ok,
            f"shape {got.shape} != torch {ref.shape}",
        )  # fmt: skip
    if got.size == 0:
        return Check(name, 0.0, 0.0, tol, "rel", True, dtype_ok, note)
    g64, r64 = got.astype(np.float64), ref.astype(np.float64)
    if not np.all(np.isfinite(g64)):
        return Check(
            name, math.inf, math.inf, tol, "rel", False, dtype_ok,
            "non-finite values in Lucid's result",
        )  # fmt: skip
    max_abs = float(np.max(np.abs(g64 - r64)))
    scale = float(np.max(np.abs(r64)))
    # Relative to the largest reference magnitude; a zero reference only matches zero.
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    return Check(name, max_abs, max_rel, tol, "rel", max_rel <= tol, dtype_ok, note)


def _expected_verdict(known: Sequence[Known]) -> str:
    if not known:
        return "pass"
    return "known-bug" if any(k.kind == "bug" for k in known) else "convention"


def run_case(
    case: OpCase,
    dtype: str = "float32",
    lucid_device: str = "cpu",
    torch_device: str = "cpu",
    version: str | None = None,
) -> OpResult:
    """Run one case at one dtype and give its verdict against its declared expectations."""
    _check_choice("dtype", dtype, DTYPES)
    _check_choice("lucid_device", lucid_device, LUCID_DEVICES)
    _check_choice("torch_device", torch_device, TORCH_DEVICES)
    version = version or lucid_version()
    for known_id in case.expect:
        if known_id not in KNOWN:
            raise ValueError(
                f"case {case.name!r} expects unknown deviation {known_id!r}; known: {', '.join(KNOWN)}"
            )
    in_force = [KNOWN[i] for i in case.expect if KNOWN[i].applies(version, lucid_device, dtype)]
    dtype_known = [KNOWN[i] for i in _DTYPE_KNOWN if KNOWN[i].applies(version, lucid_device, dtype)]

    def result(checks: Sequence[Check], known: Sequence[Known], verdict: str, msg: str):
        return OpResult(
            case=case.name,
            op=case.op,
            dtype=dtype,
            lucid_device=lucid_device,
            torch_device=torch_device,
            lucid_version=version,
            checks=tuple(checks),
            expected=tuple(k.id for k in known),
            expected_verdict=_expected_verdict(known),
            verdict=verdict,
            message=msg,
        )

    try:
        data = case.make(np.random.default_rng(case.seed), dtype)
        with warnings.catch_warnings():
            # lucid.empty casts uninitialised float64 memory when building modules
            # (harmless: every parameter is overwritten from `data`).
            warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning)
            got = case.lucid(data, lucid_device)
        # Lucid's "_"-prefixed observations (dropout's mask) go to the reference side.
        observed = {k: v for k, v in got.items() if k.startswith("_")}
        ref = case.torch({**data, **observed}, torch_device)
    except Exception as e:  # reported as a verdict, with the exception text
        return result((), in_force, "error", f"{type(e).__name__}: {e}")

    got = {k: v for k, v in got.items() if k not in observed}
    if set(got) != set(ref):
        msg = f"quantities differ: Lucid {sorted(got)}, torch {sorted(ref)}"
        return result((), in_force, "error", msg)
    checks = [_compare(q, got[q], ref[q], dtype) for q in ref]

    # Device/dtype-level deviations (mlx-float32) come first: errors measured at the wrong
    # precision say nothing about the op, so the case's own expectations are not judged.
    if dtype_known:
        ids = ", ".join(k.id for k in dtype_known)
        wrong = [c.quantity for c in checks if not c.dtype_ok]
        if wrong:
            return result(checks, dtype_known, "convention", f"as declared: {ids}")
        return result(checks, dtype_known, "unexpected-pass", f"declared {ids}, dtype kept")

    failing = {c.quantity for c in checks if not (c.ok and c.dtype_ok)}
    declared: set[str] = set()
    for k in in_force:
        declared.update(case.expect[k.id])
    unknown_q = declared - {c.quantity for c in checks}
    if unknown_q:
        msg = f"expectations name quantities the case lacks: {sorted(unknown_q)}"
        return result(checks, in_force, "error", msg)
    ids = ", ".join(k.id for k in in_force)
    if not in_force:
        if failing:
            return result(checks, in_force, "fail", _describe(checks))
        return result(checks, in_force, "pass", "")
    if failing == declared:
        return result(checks, in_force, _expected_verdict(in_force), f"as declared: {ids}")
    if not failing:
        msg = f"declared {ids} on {_fmt_set(declared)}, but everything agrees"
        return result(checks, in_force, "unexpected-pass", msg)
    msg = f"declared {ids} on {_fmt_set(declared)}; measured: {_describe(checks)}"
    return result(checks, in_force, "fail", msg)


def _describe(checks: Iterable[Check]) -> str:
    """The failing quantities with why, in the case's order (first failure first)."""
    parts = []
    for c in checks:
        if not c.dtype_ok:
            parts.append(f"{c.quantity} ({c.note})")
        elif not c.ok:
            err = c.max_rel if c.tol_kind == "rel" else c.max_abs
            parts.append(f"{c.quantity} ({c.tol_kind} err {err:.2e} > {c.tol:.2e}{_note(c)})")
    return "; ".join(parts) or "nothing"


def _note(c: Check) -> str:
    return f"; {c.note}" if c.note else ""


def _fmt_set(s: Iterable[str]) -> str:
    return ", ".join(sorted(s)) or "nothing"


def _check_choice(what: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"{what} must be one of {', '.join(valid)}; got {value!r}")


def select_cases(pattern: str | None = None) -> tuple[OpCase, ...]:
    """Cases whose name matches a glob pattern (all when None); ValueError if none match."""
    if pattern is None:
        return CASES
    chosen = tuple(c for c in CASES if fnmatch.fnmatchcase(c.name, pattern))
    if not chosen:
        names = ", ".join(c.name for c in CASES)
        raise ValueError(f"no case matches {pattern!r}; cases: {names}")
    return chosen


def run_cases(
    dtypes: Sequence[str] = DTYPES,
    lucid_device: str = "cpu",
    *,
    torch_device: str = "cpu",
    pattern: str | None = None,
) -> list[OpResult]:
    """Run the cases (all, or those matching a glob) at each dtype; one result per pair."""
    if isinstance(dtypes, str):
        raise TypeError(f"dtypes must be a sequence of names, got the string {dtypes!r}")
    for dt in dtypes:
        _check_choice("dtype", dt, DTYPES)
    _check_choice("lucid_device", lucid_device, LUCID_DEVICES)
    _check_choice("torch_device", torch_device, TORCH_DEVICES)
    # Lucid 'gpu' without a GPU still runs (on MLX's CPU, with a warning), so it is allowed;
    # torch 'cuda' without CUDA cannot run at all.
    missing = TorchAdapter.device_unavailable(torch_device)
    if missing is not None:
        raise ValueError(f"torch_device={torch_device!r} cannot run here: {missing}")
    version = lucid_version()
    return [
        run_case(case, dt, lucid_device, torch_device, version)
        for case in select_cases(pattern)
        for dt in dtypes
    ]


# --------------------------------------------------------------------------------------
# Command line


def _fmt_checks(checks: Iterable[Check]) -> str:
    parts = []
    for c in checks:
        mark = "" if c.ok else " !"
        if not c.dtype_ok:
            mark += " !dtype"
        parts.append(f"{c.quantity.removeprefix('grad:')} {c.max_rel:.1e}{mark}")
    return "\n".join(parts)


def _table(results: Sequence[OpResult]) -> str:
    from tabulate import tabulate

    rows = []
    for r in results:
        fwd = [c for c in r.checks if not c.quantity.startswith("grad:")]
        grads = [c for c in r.checks if c.quantity.startswith("grad:")]
        verdict = r.verdict if not r.expected else f"{r.verdict} ({', '.join(r.expected)})"
        if r.verdict == "error":
            verdict += f"\n{r.message}"
        rows.append([r.case, r.dtype, _fmt_checks(fwd), _fmt_checks(grads), verdict])
    headers = ["case", "dtype", "forward max rel err", "grad max rel err", "verdict"]
    return tabulate(rows, headers=headers, tablefmt="simple_grid")


def _ops_main(args: argparse.Namespace) -> int:
    results = run_cases(
        tuple(args.dtype or DTYPES),
        args.lucid_device,
        torch_device=args.torch_device,
        pattern=args.case,
    )
    bad = [r for r in results if not r.ok]
    if args.json:
        payload = {
            "lucid_version": lucid_version(),
            "torch_version": torch.__version__,
            "tolerance": TOLERANCE,
            "known": {k: asdict(v) for k, v in KNOWN.items()},
            "results": [r.to_dict() for r in results],
        }
        print(json.dumps(payload, indent=2, allow_nan=False))
    else:
        print(f"lucid-dl {lucid_version()} ({args.lucid_device}) vs torch "
              f"{torch.__version__} ({args.torch_device}); relative tolerance "
              + ", ".join(f"{k} {v:.2e}" for k, v in TOLERANCE.items()))  # fmt: skip
        print(_table(results))
        print("'!' = out of tolerance. Known deviations in force:")
        shown = sorted({i for r in results for i in r.expected})
        for i in shown:
            k = KNOWN[i]
            print(f"  {k.id} ({k.kind}, lucid {k.lucid}): {k.summary}. {k.evidence}.")
        counts: dict[str, int] = {}
        for r in results:
            counts[r.verdict] = counts.get(r.verdict, 0) + 1
        print(", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
        for r in bad:
            print(f"{r.verdict.upper()}: {r.case} [{r.dtype}]: {r.message}", file=sys.stderr)
    return 1 if bad else 0


def add_ops_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``ops`` subcommand; its ``func`` default returns the exit code."""
    p = subparsers.add_parser(
        "ops",
        help="differential tests of the Lucid ops the models use, against torch",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "--dtype",
        action="append",
        choices=DTYPES,
        help="dtype to run (repeatable; default: all)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--case", metavar="PATTERN", help="glob on case names, e.g. 'conv2d_*'")
    p.add_argument("--lucid-device", choices=LUCID_DEVICES, default="cpu")
    p.add_argument("--torch-device", choices=TORCH_DEVICES, default="cpu")
    p.set_defaults(func=_ops_main)
    return p
