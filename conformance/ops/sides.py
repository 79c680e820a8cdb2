"""Running one case on one framework: build the module, give it the case's state, run the
forward and the backward, and collect the quantities to compare."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from conformance.ops.records import Arrays, Quantities
from lucid_inception.frameworks import Adapter, LucidAdapter, TorchAdapter

# One function runs either framework through its adapter (the project's one mechanism for
# state, dtypes, devices, modes and gradients); both get the same arrays, and state-dict
# names are equal on both sides (the twin convention), so quantities line up.


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
        # precise(): torch's float32 convolutions and matmuls without TF32 (on CUDA, cuDNN
        # convolutions default to it: 10-bit mantissas, far over the float32 tolerance);
        # Lucid has no such mode.
        with adapter.precise():
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


def lucid_side(
    build: Callable[[], object] | None,
    forward: Callable[..., object],
    inputs: Sequence[str],
    **kw: object,
) -> Callable[[Arrays, str], Quantities]:
    return _side(LucidAdapter, build, forward, inputs, **kw)


def torch_side(
    build: Callable[[], object] | None,
    forward: Callable[..., object],
    inputs: Sequence[str],
    **kw: object,
) -> Callable[[Arrays, str], Quantities]:
    return _side(TorchAdapter, build, forward, inputs, **kw)


def normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def out_len(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1
