"""LUC-006: gradients of broadcast operands, and of reductions with keepdims, are wrong
(lucid._match_grad_shape), in both directions: a gradient larger than its operand is
collapsed by a reshape instead of summed over the broadcast axes, and a gradient smaller
than its operand (a mean or sum over leading axes with keepdims) is expanded by a
repeat-and-reshape instead of broadcast along the reduced axes. Training-mode BatchNorm
uses both (its affine parameters, its batch mean and variance over (0, 2, 3)).

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-006-broadcast-grad-wrong.py
"""

import sys

import lucid
import lucid.nn as nn
import numpy as np


def _start(a) -> list[float] | None:
    return None if a is None else [round(float(v), 3) for v in np.asarray(a).ravel()[:3]]


def _wrong(got, expected) -> bool:
    got = None if got is None else np.asarray(got)
    return got is None or got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-4, atol=1e-5)


def _batchnorm_grad_x(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """d/dx sum(w * batchnorm(x)) in training mode, weight 1, bias 0, by hand: per channel,
    (w - mean(w) - xhat * mean(w * xhat)) / sqrt(var + eps), means and the (biased) variance
    over (N, H, W)."""
    axes = (0, 2, 3)
    mu = x.mean(axis=axes, keepdims=True)
    std = np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    xhat = (x - mu) / std
    return (w - w.mean(axis=axes, keepdims=True) - xhat * (w * xhat).mean(axis=axes, keepdims=True)) / std


def main() -> int:
    rng = np.random.default_rng(0)

    # Collapse: (x shape, b shape, the gradient of sum(w * (x + b)) w.r.t. b: w summed
    # over the axes along which b was broadcast).
    cases = [
        ((2, 3), (3,), lambda w: w.sum(axis=0)),  # a bias
        ((2, 3, 4, 4), (1, 3, 1, 1), lambda w: w.sum(axis=(0, 2, 3), keepdims=True)),  # BatchNorm affine
        ((2, 3), (2, 1), lambda w: w.sum(axis=1, keepdims=True)),  # a trailing broadcast axis
    ]
    for x_shape, b_shape, want in cases:
        x = lucid.Tensor(rng.standard_normal(x_shape).astype(np.float32), requires_grad=True)
        b = lucid.Tensor(rng.standard_normal(b_shape).astype(np.float32), requires_grad=True)
        w = rng.standard_normal(x_shape).astype(np.float32)
        ((x + b) * lucid.Tensor(w)).sum().backward()
        expected = want(w)
        if _wrong(b.grad, expected):
            print(
                f"BUG: d/db sum(w * (x + b)) for x{x_shape} + b{b_shape} starts {_start(b.grad)}, "
                f"expected {_start(expected)}"
            )
            return 1

    # Expand: the gradient of sum(w * x.mean(axis, keepdims=True)) w.r.t. x is w / n
    # repeated along the reduced axes.
    for x_shape, axis in (((2, 3), 0), ((2, 3, 4, 4), (0, 2, 3)), ((2, 3), 1)):
        x = lucid.Tensor(rng.standard_normal(x_shape).astype(np.float32), requires_grad=True)
        m = x.mean(axis=axis, keepdims=True)
        w = rng.standard_normal(m.shape).astype(np.float32)
        (m * lucid.Tensor(w)).sum().backward()
        n = np.prod([x_shape[a] for a in np.atleast_1d(axis)])
        expected = np.broadcast_to(w / n, x_shape)
        if _wrong(x.grad, expected):
            print(
                f"BUG: d/dx sum(w * x.mean(axis={axis}, keepdims=True)) for x{x_shape} starts "
                f"{_start(x.grad)}, expected {_start(expected)}"
            )
            return 1

    # Both at once: training-mode BatchNorm's input gradient.
    bn = nn.BatchNorm2d(3)
    bn.train()
    x_np = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    w = rng.standard_normal(x_np.shape).astype(np.float32)
    x = lucid.Tensor(x_np, requires_grad=True)
    (bn(x) * lucid.Tensor(w)).sum().backward()
    expected = _batchnorm_grad_x(x_np.astype(np.float64), w.astype(np.float64), bn.eps)
    if _wrong(x.grad, expected):
        err = float(np.max(np.abs(np.asarray(x.grad) - expected)) / np.max(np.abs(expected)))
        print(f"BUG: training-mode BatchNorm2d input gradient is off by {err:.2g} (max, relative)")
        return 1

    print("OK: gradients sum over broadcast axes and repeat along reduced axes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
