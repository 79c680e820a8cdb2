"""LUC-012: Tensor.backward's depth-first sort lists a tensor once for every consumer that
pushed it before it was visited, and runs its backward once per listing: `x * x` on a
non-leaf x raises, a residual's input runs its backward twice, and a kept gradient
(`keep_grad` in 2.9.0, `retain_grad` and `lucid.autograd.grad` in 2.16.0) is passed on twice.
On 2.16.0 the double listing had also blocked the backward fusion: listed once, a hooked
tensor read by a consumer read twice is fused (LUC-013) unless LUC-013's patch came first.

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-012-backward-lists-tensor-twice.py
"""

import inspect
import sys

import lucid
import numpy as np

# 2.9.0 names the flag that keeps every gradient `keep_grad`, 2.16.0 `retain_grad`.
KEEP = "keep_grad" if "keep_grad" in inspect.signature(lucid.Tensor.backward).parameters else "retain_grad"
A = np.array([1.0, 2.0])


def residual(**backward_kwargs: bool) -> tuple[np.ndarray, int]:
    """w = h + 2h with h = 3a, summed: dw/da = 9 everywhere. Returns a's gradient and how
    many times h's backward hook ran (once: h is one tensor)."""
    a = lucid.Tensor(A, requires_grad=True)
    h = a * 3.0
    runs = []
    h.register_hook(lambda tensor, grad: runs.append(grad))
    w = h + h * 2.0  # w's parents: h, then 2h, which reads h again
    w.sum().backward(**backward_kwargs)
    return a.grad, len(runs)


def main() -> int:
    problems = []

    a = lucid.Tensor(A, requires_grad=True)
    x = a * 1.0  # a non-leaf
    try:
        (x * x).sum().backward()
        if not np.allclose(a.grad, 2 * A):
            problems.append(f"d/da sum((1a)^2) is {a.grad}, expected {2 * A}")
    except Exception as error:  # noqa: BLE001 (what upstream raises is the finding)
        cause = error.__cause__ or error
        problems.append(f"x * x on a non-leaf x: backward raised {type(cause).__name__}: {cause}")

    grad, runs = residual()
    if not np.allclose(grad, 9.0) or runs != 1:
        problems.append(f"w = h + 2h: h's backward ran {runs} times (gradient {grad}, expected 9)")

    grad, _ = residual(**{KEEP: True})
    if not np.allclose(grad, 9.0):
        problems.append(f"backward({KEEP}=True) gives d/da {grad}, expected 9")

    # p's only consumer v is read twice: listed twice, v blocked 2.16.0's DoubleReshape
    # fusion of p; listed once, p is fused and its hook gets None without LUC-013's patch.
    a = lucid.Tensor(np.ones(4), requires_grad=True)
    p = (a * 2.0).reshape(2, 2)
    seen = []
    p.register_hook(lambda tensor, grad: seen.append(grad))
    v = p.reshape(4)
    (v + v * 2.0).sum().backward()
    if len(seen) != 1 or seen[0] is None or not np.allclose(seen[0], 3.0):
        shown = ["None" if g is None else np.asarray(g).ravel().tolist() for g in seen]
        problems.append(f"v + 2v with v = p.reshape(4): a hook on p got {shown}, expected one gradient of 3s")

    autograd = getattr(lucid, "autograd", None)
    if autograd is not None and hasattr(autograd, "grad"):
        a = lucid.Tensor(A, requires_grad=True)
        h = a * 3.0
        got = autograd.grad((h + h * 2.0).sum(), a)
        if not np.allclose(got, 9.0):
            problems.append(f"lucid.autograd.grad gives {got}, expected 9")

    if problems:
        print(f"BUG: {'; '.join(problems)}")
        return 1
    print("OK: backward runs each tensor once; x * x, kept gradients and autograd.grad are right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
