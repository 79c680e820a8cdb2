"""What a built model is and what it does, through ``lucid_inception.frameworks`` only.

``ModelView`` is the module tree with each layer described in the adapters' shared
vocabulary (``layer_info``); ``trace`` runs one forward and records every module call
(completion order, input and output shapes, and arrays for the modules asked for).
``latent_constants`` reads the constructor code, defaults and class attributes of a
block's class for a width the paper prints but the built block does not use.
"""

from __future__ import annotations

import dis
import inspect
import sys
import types
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

import numpy as np

from lucid_inception.frameworks import adapter_for, capture_calls, module_that_raised

__all__ = ["INERT_KINDS", "Call", "ModelView", "Trace", "latent_constants", "same_array", "trace"]

# A module whose children are exactly these layers is one paper "conv" (Lucid's
# nn.ConvBNReLU2d, the port's subclass of it, the twins' ConvBNReLU2d, a Sequential of the three),
# and so is one with a conv and a BatchNorm that applies the ReLU in its forward (torchvision's
# BasicConv2d): what each computes is checked from the trace.
_CONV_BN_RELU = ("conv2d", "batchnorm2d", "relu")
_CONV_BN = ("conv2d", "batchnorm2d")
_OP_KINDS = {
    "conv2d": "linear-conv",
    "maxpool2d": "maxpool",
    "avgpool2d": "avgpool",
    "adaptive-avgpool2d": "global-avgpool",
    "dropout": "dropout",
    "linear": "fc",
}
# Modules that move no value and compute nothing: a Flatten before the fc, an Identity.
INERT_KINDS = ("reshape", "identity")


class ModelView:
    """The module tree of a Lucid or torch model, by dotted name (root ``""``)."""

    def __init__(self, model: object) -> None:
        self.model = model
        self.adapter = adapter_for(model)
        named = self.adapter.named_modules(model)
        self.modules: dict[str, object] = dict(named)
        self.info: dict[str, dict[str, object]] = {n: self.adapter.layer_info(m) for n, m in named}
        self.children: dict[str, list[str]] = {n: [] for n in self.modules}
        for name in self.modules:
            if name:
                self.children[name.rpartition(".")[0]].append(name)

    def class_name(self, name: str) -> str:
        return type(self.modules[name]).__name__

    def layer(self, name: str) -> str:
        return str(self.info[name]["kind"])

    def op_kind(self, name: str) -> str:
        """The paper op a module is (``conv``, ``linear-conv``, ``maxpool``, ...), or
        ``sequential`` (a Sequential or a ModuleList: its children in order, the way a
        model writes a chain either way), ``reshape`` (a Flatten) or ``identity`` (both
        ``INERT_KINDS``: they move no value and compute nothing) or ``other``."""
        layer = self.layer(name)
        if layer in _OP_KINDS:
            return _OP_KINDS[layer]
        # Before the chain rule: nn.Sequential(Conv2d, BatchNorm2d, ReLU) is how many models
        # write one paper conv, and no paper chain holds a BatchNorm of its own.
        # In any registration order (a module may define its BatchNorm first): the order
        # they run in is checked from the trace (``conv_parts``).
        if sorted(self.layer(c) for c in self.children[name]) in (sorted(_CONV_BN_RELU), sorted(_CONV_BN)):
            return "conv"
        if layer in ("sequential", "module-list"):
            return "sequential"
        if layer == "flatten":
            return "reshape"
        if layer == "identity":
            return "identity"
        return "other"

    def conv_parts(self, name: str) -> list[str]:
        """A paper conv's layers as [conv, BatchNorm(, ReLU)], whatever order its module
        registers them in; whether they run in that order is the op check's to say."""
        rank = {kind: i for i, kind in enumerate(_CONV_BN_RELU)}
        return sorted(self.children[name], key=lambda child: rank[self.layer(child)])

    def descendants(self, name: str) -> Iterator[str]:
        for child in self.children[name]:
            yield child
            yield from self.descendants(child)

    def leaves(self) -> list[str]:
        return [n for n in self.modules if not self.children[n]]

    def parameters(self, name: str) -> int:
        return self.adapter.count_parameters(self.modules[name])


@dataclass
class Call:
    """One call of a module: ``index`` is its completion order in the forward."""

    index: int
    input_shapes: list[tuple[int, ...]]
    output_shape: tuple[int, ...]
    inputs: list[np.ndarray] | None = None
    output: np.ndarray | None = None


@dataclass
class Trace:
    size: int
    calls: dict[str, list[Call]] = field(default_factory=dict)
    error: str | None = None
    # What the model returned when that is not one tensor ("a tuple"): no call of the
    # root is recorded then (the hooks record tensor outputs only), so say what it was.
    returned: str | None = None

    def count(self, name: str) -> int:
        return len(self.calls.get(name, ()))

    def first(self, name: str) -> Call | None:
        calls = self.calls.get(name)
        return calls[0] if calls else None


def same_array(got: np.ndarray, expected: np.ndarray) -> bool:
    """The same values in the same order (shapes aside: a flattened copy is the same array)."""
    return got.size == expected.size and np.array_equal(got.reshape(-1), expected.reshape(-1))


def _input_dtype(model: object) -> np.dtype:
    """The floating dtype of the model's first floating tensor (the stem's first conv
    weight, which the input meets first): a float64 model is traced in float64, as it
    runs. float32 for a model without one, or with one numpy lacks (bfloat16: its forward
    then fails on the float32 input, a finding, where the dtype lookup would raise)."""
    try:
        dtypes = adapter_for(model).dtypes(model).values()
    except TypeError:
        return np.dtype(np.float32)
    return next((d for d in dtypes if d.kind == "f"), np.dtype(np.float32))


def trace(
    model: object,
    *,
    channels: int,
    size: int,
    seed: int,
    keep: Collection[str],
    train: Collection[str] = (),
    scale: float = 1.0,
) -> Trace:
    """Run one eval-mode forward of a 1 x channels x size x size standard-normal batch
    (times ``scale``); record every module call, with arrays for the modules named in
    ``keep``. A forward that raises is recorded in ``Trace.error`` with the calls made
    before it. The modules named in ``train`` (the model but its BatchNorms, to see what
    acts only in training) run in training mode."""
    adapter = adapter_for(model)
    x = np.random.default_rng(seed).standard_normal((1, channels, size, size)) * scale
    x = x.astype(_input_dtype(model))
    result = Trace(size)
    counter = iter(range(1 << 62))

    def record(name: str, inputs: list[np.ndarray], output: np.ndarray) -> None:
        kept = name in keep
        result.calls.setdefault(name, []).append(
            Call(
                next(counter),
                [tuple(a.shape) for a in inputs],
                tuple(output.shape),
                inputs if kept else None,
                output if kept else None,
            )
        )

    modes = adapter.training_modes(model)
    adapter.set_training(model, False)
    if train:  # module by module: ``set_training`` would reach every descendant
        adapter.restore_training_modes(model, [name in train for name, _ in adapter.named_modules(model)])
    try:
        with adapter.no_grad(), capture_calls(model, record):
            given = adapter.tensor(x)
            output = model(given)
        if not isinstance(output, type(given)):
            result.returned = f"a {type(output).__name__}"
    except Exception as error:  # noqa: BLE001 - a failing forward is a finding, not a crash
        where = module_that_raised(model, error)
        result.error = (f"in {where}: " if where else "") + f"{type(error).__name__}: {error}"
    finally:
        adapter.restore_training_modes(model, modes)
    return result


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _holds(const: object, value: int) -> bool:
    if isinstance(const, (tuple, list, frozenset, set)):
        return any(_holds(c, value) for c in const)
    return type(const) is int and const == value


def _framework_class(klass: type) -> bool:
    module = klass.__module__ or ""
    return klass is object or module.startswith(("torch", "lucid.nn", "lucid._"))


def _short(filename: str) -> str:
    return "/".join(filename.replace("\\", "/").split("/")[-3:])


def latent_constants(klass: type, value: int) -> list[str]:
    """Where the constructors of ``klass`` (its own and inherited, framework classes
    excluded) hold the integer ``value``: as a literal or through a module-level name in
    their code, as a default argument, or as a class attribute of ``klass`` or a base:
    ``["pkg/mod.py:125 Class.__init__"]``. A built model cannot show a value its
    constructor reads but never builds with; its code can."""
    found: list[str] = []
    for owner in klass.__mro__:
        if _framework_class(owner):
            continue
        for name, attribute in vars(owner).items():
            if not name.startswith("__") and _holds(attribute, value):
                module = sys.modules.get(owner.__module__)
                where = _short(getattr(module, "__file__", None) or owner.__module__)
                found.append(f"{where} {owner.__qualname__}.{name}")
        init = owner.__dict__.get("__init__")
        if not isinstance(init, types.FunctionType):
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.default is not parameter.empty and _holds(parameter.default, value):
                where = f"{_short(init.__code__.co_filename)}:{init.__code__.co_firstlineno}"
                found.append(f"{where} {owner.__qualname__}.__init__ (default {parameter.name})")
        for code in _code_objects(init.__code__):
            for instr in dis.get_instructions(code):
                hit = instr.opname == "LOAD_CONST" and _holds(instr.argval, value)
                if instr.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(instr.argval, str):
                    hit = hit or _holds(init.__globals__.get(instr.argval), value)
                if hit:
                    line = instr.positions.lineno if instr.positions else None
                    found.append(f"{_short(code.co_filename)}:{line} {owner.__qualname__}.__init__")
    return found
