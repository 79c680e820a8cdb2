"""Everything the project does to a Lucid 2.x model, in one place.

Lucid differs from torch in ways that bite (shared/LUCID.md): no ``named_modules``; its
``load_state_dict`` checks no shapes, casts no dtypes and aliases the arrays it is given;
``Tensor.dtype`` is stored apart from ``Tensor.data`` and must be kept in step; a forward
hook's ``output.data`` is the live array; ``eval()`` does not stop graph building.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import lucid
import lucid.nn as lnn
import mlx.core as mx
import numpy as np
from lucid.types import to_numeric_type

from lucid_inception.frameworks.state import KeyHint, check_state

__all__ = ["LucidAdapter"]


def _to_numpy(data: object) -> np.ndarray:
    """A fresh numpy copy of a numpy or MLX array."""
    return np.array(data, copy=True)


def _assign(tensor: lucid.Tensor, array: np.ndarray) -> None:
    """Replace a tensor's data, on its device, keeping ``Tensor.dtype`` in step."""
    tensor.data = mx.array(array) if tensor.device == "gpu" else array
    tensor.dtype = to_numeric_type(array.dtype)


class LucidAdapter:
    name = "lucid"

    # ----- identity and structure
    @staticmethod
    def owns(model: object) -> bool:
        return isinstance(model, lnn.Module)

    @staticmethod
    def named_modules(model: lnn.Module) -> list[tuple[str, lnn.Module]]:
        """All modules in pre-order, the root named ``""``, as torch's ``named_modules``."""
        found: list[tuple[str, lnn.Module]] = []

        def walk(prefix: str, module: lnn.Module) -> None:
            found.append((prefix, module))
            for name, child in module._modules.items():
                if child is not None:
                    walk(f"{prefix}.{name}" if prefix else name, child)

        walk("", model)
        return found

    @staticmethod
    def tensors(model: lnn.Module) -> dict[str, lucid.Tensor]:
        """Parameters and buffers by state-dict name, in state-dict order."""
        return dict(model.state_dict(keep_vars=True))

    @classmethod
    def parameter_names(cls, model: lnn.Module) -> list[str]:
        return [k for k, t in cls.tensors(model).items() if isinstance(t, lnn.Parameter)]

    @staticmethod
    def count_parameters(model: lnn.Module) -> int:
        return int(sum(p.size for p in model.parameters()))

    # ----- state
    @classmethod
    def state(cls, model: lnn.Module) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer (never views of the live arrays)."""
        return {k: _to_numpy(t.data) for k, t in cls.tensors(model).items()}

    @classmethod
    def load_state(
        cls,
        model: lnn.Module,
        state: Mapping[str, np.ndarray],
        *,
        cast: bool = False,
        what: str = "loading state into a Lucid model",
        hint: KeyHint | None = None,
    ) -> None:
        """Strict and atomic: check everything, then copy; with ``cast`` values take the
        model's dtypes, without it dtypes must already match."""
        live = cls.tensors(model)
        expected = {k: (tuple(t.shape), np.dtype(t.data.dtype)) for k, t in live.items()}
        check_state(expected, state, what=what, check_dtype=not cast, hint=hint)
        # Copies are made before the first assignment, so nothing is half-written.
        new = {k: np.array(state[k], dtype=expected[k][1], copy=True) for k in live}
        for key, tensor in live.items():
            _assign(tensor, new[key])

    @classmethod
    def dtypes(cls, model: lnn.Module) -> dict[str, np.dtype]:
        return {k: np.dtype(t.data.dtype) for k, t in cls.tensors(model).items()}

    @classmethod
    def cast(cls, model: lnn.Module, dtype: str | np.dtype) -> None:
        target = np.dtype(dtype)
        for tensor in cls.tensors(model).values():
            if np.dtype(tensor.data.dtype) != target:
                _assign(tensor, np.asarray(_to_numpy(tensor.data), dtype=target))

    # ----- mode and device
    @classmethod
    def training_modes(cls, model: lnn.Module) -> list[bool]:
        return [m.training for _, m in cls.named_modules(model)]

    @classmethod
    def restore_training_modes(cls, model: lnn.Module, modes: list[bool]) -> None:
        for (_, module), mode in zip(cls.named_modules(model), modes, strict=True):
            module.training = mode

    @staticmethod
    def set_training(model: lnn.Module, mode: bool) -> None:
        model.train(mode)

    @staticmethod
    def device(model: lnn.Module) -> str:
        return model.device

    @staticmethod
    def to_device(model: lnn.Module, device: str) -> None:
        model.to(device)

    @staticmethod
    def device_unavailable(device: str) -> str | None:
        """``None`` when ``device`` can run here, else the reason it cannot."""
        if device == "cpu":
            return None
        if device == "gpu":
            if mx.metal.is_available() or mx.cuda.is_available():
                return None
            return (
                "Lucid device 'gpu' is MLX, and this MLX build has no GPU backend "
                "(mlx.core.metal and mlx.core.cuda unavailable): it would run on MLX's CPU"
            )
        return f"Lucid has no device {device!r}; valid: 'cpu', 'gpu'"

    # ----- running
    @staticmethod
    def tensor(x: np.ndarray, *, device: str = "cpu", requires_grad: bool = False) -> lucid.Tensor:
        return lucid.Tensor(np.array(x, copy=True), requires_grad=requires_grad, device=device)

    @staticmethod
    def to_numpy(t: lucid.Tensor) -> np.ndarray:
        return _to_numpy(t.data)

    @staticmethod
    def no_grad() -> contextlib.AbstractContextManager:
        return lucid.no_grad()

    @staticmethod
    def add_output_hook(module: lnn.Module, callback: Callable[[np.ndarray], None]) -> Callable[[], None]:
        """Call ``callback`` with a copy of the module's output after each call; returns
        the function that removes the hook."""

        def hook(_module: lnn.Module, _args: tuple, output: object) -> None:
            if isinstance(output, lucid.Tensor):
                callback(_to_numpy(output.data))

        return module.register_forward_hook(hook)

    @staticmethod
    def add_call_hook(
        module: lnn.Module, callback: Callable[[list[np.ndarray], np.ndarray], None]
    ) -> Callable[[], None]:
        """Call ``callback(inputs, output)`` with copies of the module's tensor arguments
        and output after each call; returns the function that removes the hook."""

        def hook(_module: lnn.Module, args: tuple, output: object) -> None:
            if isinstance(output, lucid.Tensor):
                inputs = [_to_numpy(a.data) for a in args if isinstance(a, lucid.Tensor)]
                callback(inputs, _to_numpy(output.data))

        return module.register_forward_hook(hook)

    @staticmethod
    def layer_info(module: lnn.Module) -> dict[str, object]:
        """What a layer is and its hyperparameters, in the vocabulary both adapters share:
        ``kind`` is one of ``LAYER_KINDS``; 2-D sizes are ``(h, w)`` tuples."""
        if isinstance(module, lnn.Conv2d):
            return {
                "kind": "conv2d",
                "in_channels": module.in_channels,
                "out_channels": module.out_channels,
                "kernel": tuple(module.kernel_size),
                "stride": tuple(module.stride),
                "padding": tuple(module.padding),
                "dilation": tuple(module.dilation),
                "groups": module.groups,
                "bias": module.bias is not None,
                "padding_mode": "zeros",
            }
        if isinstance(module, lnn.BatchNorm2d):
            return {
                "kind": "batchnorm2d",
                "num_features": module.num_features,
                "eps": module.eps,
                "momentum": module.momentum,
                "affine": module.affine,
                "track_running_stats": module.track_running_stats,
            }
        if isinstance(module, lnn.ReLU):
            return {"kind": "relu"}
        if isinstance(module, (lnn.MaxPool2d, lnn.AvgPool2d)):
            info: dict[str, object] = {
                "kind": "maxpool2d" if isinstance(module, lnn.MaxPool2d) else "avgpool2d",
                "kernel": tuple(module.kernel_size),
                "stride": tuple(module.stride),
                "padding": tuple(module.padding),
                "ceil_mode": False,  # Lucid 2.x pools floor only
            }
            if isinstance(module, lnn.AvgPool2d):
                info["count_include_pad"] = True  # Lucid's average pool always divides by k*k
            return info
        if isinstance(module, lnn.AdaptiveAvgPool2d):
            size = module.output_size
            return {
                "kind": "adaptive-avgpool2d",
                "output_size": tuple(size) if isinstance(size, (tuple, list)) else (size, size),
            }
        if isinstance(module, lnn.Dropout):
            return {"kind": "dropout", "p": float(module.p)}
        if isinstance(module, lnn.Linear):
            return {
                "kind": "linear",
                "in_features": module.in_features,
                "out_features": module.out_features,
                "bias": module.bias is not None,
            }
        if isinstance(module, lnn.Sequential):
            return {"kind": "sequential"}
        return {"kind": "module", "class": type(module).__name__}

    @staticmethod
    def backward(output: lucid.Tensor, grad: np.ndarray) -> None:
        """Backpropagate ``grad`` (the gradient of a scalar loss w.r.t. ``output``)."""
        seed = np.asarray(grad, dtype=output.data.dtype)
        output.grad = mx.array(seed) if output.device == "gpu" else seed
        output.backward()

    @staticmethod
    def grad(t: lucid.Tensor) -> np.ndarray | None:
        return None if t.grad is None else _to_numpy(t.grad)

    @classmethod
    def parameter_grads(cls, model: lnn.Module) -> dict[str, np.ndarray | None]:
        live = cls.tensors(model)
        return {k: cls.grad(live[k]) for k in cls.parameter_names(model)}

    @staticmethod
    def zero_grads(model: lnn.Module) -> None:
        for p in model.parameters():
            p.zero_grad()

    @staticmethod
    def iter_parameters(model: lnn.Module) -> Iterator[lucid.Tensor]:
        return model.parameters()
