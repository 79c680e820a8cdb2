"""LUC-006: gradients of broadcast operands are wrong (lucid._match_grad_shape).

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-006-broadcast-grad-wrong.py
"""

import sys

import lucid
import numpy as np


def main() -> int:
    rng = np.random.default_rng(0)
    # (x shape, b shape, the gradient of sum(w * (x + b)) w.r.t. b: w summed over the
    # axes along which b was broadcast)
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
        if b.grad is None or b.grad.shape != expected.shape or not np.allclose(b.grad, expected, atol=1e-5):
            got = None if b.grad is None else [round(float(v), 3) for v in b.grad.ravel()[:3]]
            print(
                f"BUG: d/db sum(w * (x + b)) for x{x_shape} + b{b_shape} starts {got}, "
                f"expected {[round(float(v), 3) for v in expected.ravel()[:3]]}"
            )
            return 1
    print("OK: broadcast gradients sum over the broadcast axes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
