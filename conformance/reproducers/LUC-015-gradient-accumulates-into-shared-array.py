"""LUC-015: `lucid._set_tensor_grad` stores a tensor's first gradient as given and adds later
ones into that array in place, while add's backward hands one array to both operands: adding
to one tensor's gradient adds to the other's. `b + c + c` with `c = b.reshape(3)`, a kept
gradient, and two backward passes of `w1 + w2` come out wrong, on 'cpu' and 'gpu' alike.

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-015-gradient-accumulates-into-shared-array.py
"""

import sys

import lucid
import numpy as np

A = np.array([1.0, 2.0, 3.0])


def show(grad: object) -> str:
    return "None" if grad is None else np.array2string(np.asarray(grad).ravel())


def main() -> int:
    problems = []

    for device in ("cpu", "gpu"):  # 'gpu' is MLX, on CPU where there is no Metal
        a = lucid.Tensor(A, requires_grad=True, device=device)
        b = a * 1.0
        c = b.reshape(3)  # c and (b + c) are handed one array by the last add
        bc = b + c
        bc.keep_grad = True
        (bc + c).sum().backward()
        if not np.allclose(np.asarray(a.grad), 3.0) or not np.allclose(np.asarray(bc.grad), 1.0):
            problems.append(
                f"b + c + c with c = b.reshape(3) on '{device}': d/da {show(a.grad)} (expected 3), "
                f"kept (b + c).grad {show(bc.grad)} (expected 1)"
            )

    w1 = lucid.Tensor(np.ones(3), requires_grad=True)
    w2 = lucid.Tensor(np.ones(3), requires_grad=True)
    for _ in range(2):  # gradient accumulation: no zeroing between the passes
        (w1 + w2).sum().backward()
    if not (np.allclose(w1.grad, 2.0) and np.allclose(w2.grad, 2.0)):
        problems.append(
            f"two backward passes of sum(w1 + w2): {show(w1.grad)} and {show(w2.grad)}, expected 2"
        )

    # Right unpatched; wrong (1.21) once only LUC-012's patch has changed the backward order.
    a = lucid.Tensor(A, requires_grad=True)
    n1 = a * 0.1
    n2 = n1 * 0.1
    (n1 + n2 + a * 1.0).sum().backward()
    if not np.allclose(a.grad, 1.11):
        problems.append(f"n1 = 0.1a, n2 = 0.1 n1: d/da sum(n1 + n2 + a) is {show(a.grad)}, expected 1.11")

    if problems:
        print(f"BUG: {'; '.join(problems)}")
        return 1
    print("OK: each tensor accumulates its gradient into its own array")
    return 0


if __name__ == "__main__":
    sys.exit(main())
