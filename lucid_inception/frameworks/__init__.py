"""One adapter per framework, and the one way to capture a forward.

``parity`` and ``conformance`` never touch Lucid or torch directly: they ask
``adapter_for(model)`` and use the same vocabulary for both (state, dtypes, devices,
training modes, hooks, gradients).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from lucid_inception.frameworks.identity import TensorState
from lucid_inception.frameworks.lucid_adapter import LucidAdapter
from lucid_inception.frameworks.state import COUNTER_SUFFIX, StateMismatchError, UnreadableTensor, check_state
from lucid_inception.frameworks.structured import StructuredOutput

if TYPE_CHECKING:
    from lucid_inception.frameworks.torch_adapter import TorchAdapter

    Adapter = type[LucidAdapter] | type[TorchAdapter]

__all__ = [
    "ADAPTERS",
    "Adapter",
    "COUNTER_SUFFIX",
    "LucidAdapter",
    "StateMismatchError",
    "StructuredOutput",
    "UnreadableTensor",
    "TensorState",
    "TorchAdapter",
    "LAYER_KINDS",
    "adapter_for",
    "capture_calls",
    "capture_inputs",
    "capture_outputs",
    "check_state",
    "module_that_raised",
]


def _torch_adapter() -> type[TorchAdapter]:
    from lucid_inception.frameworks.torch_adapter import TorchAdapter

    return TorchAdapter


def __getattr__(name: str) -> Any:
    # The torch side loads on first use: ``import lucid_inception`` (whose checkpoint
    # loading and input checks use the Lucid adapter) must not import torch.
    if name == "TorchAdapter":
        value: Any = _torch_adapter()
    elif name == "ADAPTERS":
        value = (LucidAdapter, _torch_adapter())
    elif name == "Adapter":
        value = type[LucidAdapter] | type[_torch_adapter()]
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # once: later lookups do not come back here
    return value


# What ``adapter.layer_info(module)["kind"]`` can be, for either framework.
LAYER_KINDS: tuple[str, ...] = (
    "conv2d",
    "batchnorm1d",
    "batchnorm2d",
    "batchnorm3d",
    "relu",
    "maxpool2d",
    "avgpool2d",
    "adaptive-avgpool2d",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "alpha-dropout",
    "feature-alpha-dropout",
    "identity",
    "flatten",
    "linear",
    "sequential",
    "module-list",
    "module",
)


def adapter_for(model: object) -> Adapter:
    """The adapter of a Lucid or torch model; ``TypeError`` for anything else."""
    if LucidAdapter.owns(model):
        return LucidAdapter
    # A torch model exists only once torch is imported: no need to import it to ask.
    if "torch" in sys.modules and _torch_adapter().owns(model):
        return _torch_adapter()
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
    model: object,
    callback: Callable[..., None],
    *,
    copy: bool = True,
    identity: bool = False,
    structured: bool = False,
    select: Callable[[str, object], bool] = lambda name, module: True,
) -> Iterator[None]:
    """While active, every named module's output is passed, as a numpy copy, to
    ``callback(name, array)`` in execution order (a module reports when it finishes,
    so children come before their parent; the root is named ``""``). With ``copy=False``
    the array is a read-only view of the live output, valid only until the callback returns;
    with ``identity``, ``callback(name, array, state)`` also gets its ``TensorState``.
    With ``structured`` an output that is not one tensor comes as a ``StructuredOutput``
    (state ``None``); else such outputs are skipped. ``select(name, module)`` picks the
    modules, as in ``capture_inputs``."""

    def install(adapter: Adapter, name: str, module: object) -> list[Callable[[], None]]:
        if not select(name, module):
            return []

        def report(*args: object) -> None:
            callback(name, *args)

        return [adapter.add_output_hook(module, report, copy=copy, identity=identity, structured=structured)]

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


def module_that_raised(model: object, error: BaseException) -> str:
    """The name of the innermost of ``model``'s modules that ``error`` propagated out of
    (``""``, the root's name, when none is found).

    Read from the traceback: every module call, Lucid's ``Module.__call__`` and torch's
    ``Module._call_impl`` alike (and a ``forward`` called directly), runs in a frame whose
    ``self`` is the module. A child that raised inside a forward which caught the exception
    is not on the traceback, so it is not blamed. Costs nothing until a forward raises,
    where hooks on every module would cost every call.
    """
    names = {id(module): name for name, module in adapter_for(model).named_modules(model)}
    found = ""
    trace = error.__traceback__
    while trace is not None:  # outermost frame first: the last match is the innermost
        owner = trace.tb_frame.f_locals.get("self")
        if owner is not None and id(owner) in names:
            found = names[id(owner)]
        trace = trace.tb_next
    return found
