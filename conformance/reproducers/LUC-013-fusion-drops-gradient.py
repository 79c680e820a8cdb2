"""LUC-013: the backward fusion of 2.10+ fuses a tensor into its consumer even when that
tensor's own gradient is wanted: its hooks get None, and neither `keep_grad`,
`backward(retain_grad=True)` nor `lucid.autograd.grad` gets its gradient; after
`backward(retain_graph=True)` the retained graph stays fused, so a later backward does not
reach the tensor either.

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-013-fusion-drops-gradient.py
"""

import inspect
import sys

import lucid
import numpy as np

# 2.9.0 names the flag that keeps every gradient `keep_grad`, 2.16.0 `retain_grad`.
KEEP = "keep_grad" if "keep_grad" in inspect.signature(lucid.Tensor.backward).parameters else "retain_grad"
EXPECTED = np.full((2, 2), 3.0)  # d/dy of sum(3 * y.reshape(4))


def reshaped_twice() -> tuple[lucid.Tensor, lucid.Tensor]:
    """y = (2a).reshape(2, 2), consumed only by a second reshape: the pair that 2.16.0's
    `DoubleReshape` fusion merges. Returns y and sum(3 * y.reshape(4))."""
    a = lucid.Tensor(np.ones(4), requires_grad=True)
    y = (a * 2.0).reshape(2, 2)
    return y, (y.reshape(4) * 3.0).sum()


def show(grad: object) -> str:
    return "None" if grad is None else np.array2string(np.asarray(grad).ravel())


def main() -> int:
    problems = []

    y, loss = reshaped_twice()
    seen = []
    y.register_hook(lambda tensor, grad: seen.append(grad))
    loss.backward()
    if len(seen) != 1 or seen[0] is None or not np.allclose(seen[0], EXPECTED):
        problems.append(f"a hook on y got {[show(g) for g in seen]}, expected one gradient of 3s")

    y, loss = reshaped_twice()
    y.keep_grad = True
    loss.backward()
    if y.grad is None or not np.allclose(y.grad, EXPECTED):
        problems.append(f"with y.keep_grad, y.grad is {show(y.grad)}")

    y, loss = reshaped_twice()
    loss.backward(**{KEEP: True})
    if y.grad is None or not np.allclose(y.grad, EXPECTED):
        problems.append(f"after backward({KEEP}=True), y.grad is {show(y.grad)}")

    # The graph kept for a second backward must still reach y.
    y, loss = reshaped_twice()
    loss.backward(retain_graph=True)
    y.keep_grad = True
    loss.backward()
    if y.grad is None or not np.allclose(y.grad, EXPECTED):
        problems.append(
            f"after backward(retain_graph=True), a second backward with y.keep_grad: y.grad is {show(y.grad)}"
        )

    autograd = getattr(lucid, "autograd", None)
    if autograd is not None and hasattr(autograd, "grad"):
        for retained in (False, True):
            y, loss = reshaped_twice()
            if retained:
                loss.backward(retain_graph=True)
            call = "backward(retain_graph=True), then " if retained else ""
            try:
                got = autograd.grad(loss, y)
                if not np.allclose(got, EXPECTED):
                    problems.append(f"{call}lucid.autograd.grad(loss, y) is {show(got)}")
            except RuntimeError as error:
                problems.append(f"{call}lucid.autograd.grad(loss, y) raised RuntimeError: {error}")

    if problems:
        print(f"BUG: {'; '.join(problems)}")
        return 1
    print(
        "OK: a tensor whose gradient is wanted (hook, keep_grad, retain_grad, autograd.grad) gets it, "
        "also from a graph retained (retain_graph)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
