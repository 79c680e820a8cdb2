"""One adapter per framework, and the one way to capture a forward.

``parity`` and ``conformance`` never touch Lucid or torch directly: they ask
``adapter_for(model)`` and use the same vocabulary for both (state, dtypes, devices,
training modes, hooks, gradients).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np

from lucid_inception.frameworks.lucid_adapter import LucidAdapter
from lucid_inception.frameworks.state import StateMismatchError, check_state
from lucid_inception.frameworks.torch_adapter import TorchAdapter

__all__ = [
    "ADAPTERS",
    "Adapter",
    "LucidAdapter",
    "StateMismatchError",
    "TorchAdapter",
    "LAYER_KINDS",
    "adapter_for",
    "capture_calls",
    "capture_inputs",
    "capture_outputs",
    "check_state",
    "track_modules",
]

Adapter = type[LucidAdapter] | type[TorchAdapter]
ADAPTERS: tuple[Adapter, ...] = (LucidAdapter, TorchAdapter)

# What ``adapter.layer_info(module)["kind"]`` can be, for either framework.
LAYER_KINDS: tuple[str, ...] = (
    "conv2d",
    "batchnorm2d",
    "relu",
    "maxpool2d",
    "avgpool2d",
    "adaptive-avgpool2d",
    "dropout",
    "linear",
    "sequential",
    "module",
)


def adapter_for(model: object) -> Adapter:
    """The adapter of a Lucid or torch model; ``TypeError`` for anything else."""
    for adapter in ADAPTERS:
        if adapter.owns(model):
            return adapter
    raise TypeError(f"expected a lucid.nn.Module or torch.nn.Module, got {type(model).__name__}")


@contextlib.contextmanager
def _hooks_on_every_module(
    model: object, install: Callable[[Adapter, str, object], list[Callable[[], None]]]
) -> Iterator[Adapter]:
    """Call ``install(adapter, name, module)`` for every named module (it returns the
    functions that remove what it registered); remove everything on exit, even when the
    body raises."""
    adapter = adapter_for(model)
    removers: list[Callable[[], None]] = []
    try:
        for name, module in adapter.named_modules(model):
            removers += install(adapter, name, module)
        yield adapter
    finally:
        for remove in removers:
            remove()


@contextlib.contextmanager
def capture_outputs(
    model: object, callback: Callable[[str, np.ndarray], None], *, copy: bool = True
) -> Iterator[None]:
    """While active, every named module's output is passed, as a numpy copy, to
    ``callback(name, array)`` in execution order (a module reports when it finishes,
    so children come before their parent; the root is named ``""``). With ``copy=False``
    the array is a read-only view of the live output, valid only until the callback returns."""

    def install(adapter: Adapter, name: str, module: object) -> list[Callable[[], None]]:
        return [adapter.add_output_hook(module, lambda array: callback(name, array), copy=copy)]

    with _hooks_on_every_module(model, install):
        yield


@contextlib.contextmanager
def capture_calls(
    model: object, callback: Callable[[str, list[np.ndarray], np.ndarray], None]
) -> Iterator[None]:
    """As ``capture_outputs``, with the inputs too: ``callback(name, inputs, output)``
    gets numpy copies of a module's tensor arguments and of its output after each call."""

    def install(adapter: Adapter, name: str, module: object) -> list[Callable[[], None]]:
        return [adapter.add_call_hook(module, lambda inputs, output: callback(name, inputs, output))]

    with _hooks_on_every_module(model, install):
        yield


@contextlib.contextmanager
def capture_inputs(
    model: object,
    callback: Callable[[str, np.ndarray], np.ndarray | None],
    select: Callable[[str, object], bool] = lambda name, module: True,
) -> Iterator[None]:
    """While active, each selected module's first input is passed, as a numpy copy, to
    ``callback(name, array)`` as the module is entered (parents before their children).
    ``select(name, module)`` picks the modules, e.g. ``adapter.is_batchnorm``. If the
    callback returns an array, the module runs on it instead of its input (teacher forcing)."""

    def install(adapter: Adapter, name: str, module: object) -> list[Callable[[], None]]:
        if not select(name, module):
            return []
        return [adapter.add_input_hook(module, lambda array: callback(name, array))]

    with _hooks_on_every_module(model, install):
        yield


@contextlib.contextmanager
def track_modules(model: object) -> Iterator[list[str]]:
    """While active, the yielded list holds the names of the modules entered and not yet
    returned, outermost first. When a forward raises, the list is left holding the path to
    the module that raised: its last entry."""
    stack: list[str] = []

    def leave(name: str) -> None:
        # Pop down to this module: entries above it belong to children that raised inside
        # a forward which caught the exception.
        while stack:
            if stack.pop() == name:
                break

    def install(adapter: Adapter, name: str, module: object) -> list[Callable[[], None]]:
        return [
            adapter.add_pre_hook(module, lambda: stack.append(name)),
            adapter.add_post_hook(module, lambda: leave(name)),
        ]

    with _hooks_on_every_module(model, install):
        yield stack
