"""The known deviations of Lucid from torch (bugs and conventions), and which Lucid
version, device and dtype each applies to."""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass

import lucid

from conformance.ops.records import DTYPES, LUCID_DEVICES


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
    # A bug that is documented to vanish at batch 1: a case declaring it gets the
    # ``known-bug`` verdict only if its batch-1 twin (``OpCase.batch_keys`` cut to the first
    # sample) passes on the quantities only this bug declares.
    vanishes_at_batch_1: bool = False

    def applies(self, version: str, device: str, dtype: str) -> bool:
        """Whether this deviation is expected for that Lucid version, device and dtype."""
        return version_matches(self.lucid, version) and device in self.devices and dtype in self.dtypes


KNOWN: dict[str, Known] = {
    k.id: k
    for k in (
        Known(
            id="broadcast-gradient",
            kind="bug",
            lucid="<=2.9.0",
            vanishes_at_batch_1=True,
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

# Deviations that concern every case on a device/dtype rather than one op. Where one is in
# force, Lucid's float32 results for float64 data are that convention (the dtype difference
# only): their values are judged by the usual rules, at float32's tolerance.
DTYPE_KNOWN: tuple[str, ...] = ("mlx-float32",)


# --------------------------------------------------------------------------------------
# Versions


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


def version_matches(spec: str, version: str) -> bool:
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
