"""Everything the project does to a Lucid 2.x model, in one place.

Lucid differs from torch in ways that bite (docs/framework-ops.md): no ``named_modules``; its
``load_state_dict`` checks no shapes, casts no dtypes and aliases the arrays it is given;
``Tensor.dtype`` is stored apart from ``Tensor.data`` and must be kept in step; a forward
hook's ``output.data`` is the live array; ``eval()`` does not stop graph building.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping

import lucid
import lucid.nn as lnn
import mlx.core as mx
import numpy as np
import threadpoolctl
from lucid.nn.modules.drop import _DropoutNd
from lucid.nn.modules.norm import _BatchNorm
from lucid.types import to_numeric_type

from lucid_inception.frameworks.identity import TensorState
from lucid_inception.frameworks.state import KeyHint, check_state, same_bits
from lucid_inception.frameworks.structured import flatten_output

__all__ = ["LucidAdapter", "numpy_dtype", "quiet_uninitialised_casts"]


def _to_numpy(data: object) -> np.ndarray:
    """A fresh numpy copy of a numpy or MLX array."""
    return np.array(data, copy=True)


_LEAF_UNMEASURED = (
    "its input is a leaf (the model's input), and an identity node there can make this "
    "Lucid's backward raise (upstream bug LUC-012)"
)


@contextlib.contextmanager
def quiet_uninitialised_casts() -> Iterator[None]:
    """While building Lucid modules: lucid-dl 2.9.0's ``Conv2d`` and ``Linear`` make their
    weights with ``lucid.empty`` (float64 memory as found) and cast that to float32 before
    ``reset_parameters`` overwrites it. Where the garbage lies beyond float32's range numpy
    warns "overflow encountered in cast", where it is a signalling NaN "invalid value
    encountered in cast", now and then, in the middle of a user's output. None of those
    values survives initialisation, so the warnings say nothing about the module; this
    hides those two and no other."""
    with warnings.catch_warnings():
        for message in ("overflow encountered in cast", "invalid value encountered in cast"):
            warnings.filterwarnings("ignore", message=message, category=RuntimeWarning)
        yield


def numpy_dtype(data: object) -> np.dtype:
    """The numpy dtype of a numpy or MLX array. On Lucid's 'gpu' device ``Tensor.data`` is
    an MLX array, whose dtype (``mlx.core.float32``) numpy cannot interpret; MLX and numpy
    name their common dtypes alike."""
    dtype = data.dtype
    if isinstance(dtype, mx.Dtype):
        return np.dtype(str(dtype).removeprefix("mlx.core."))
    return np.dtype(dtype)


def _read_only(data: object) -> np.ndarray:
    """A read-only numpy view of a numpy array (MLX arrays are converted, i.e. copied)."""
    view = np.asarray(data).view()
    view.flags.writeable = False
    return view


def _assign(tensor: lucid.Tensor, array: np.ndarray) -> None:
    """Replace a tensor's data, on its device, keeping ``Tensor.dtype`` in step."""
    tensor.data = mx.array(array) if tensor.device == "gpu" else array
    # From what was stored: MLX keeps float64 as float32 (and kit-patched Lucid derives
    # Tensor.dtype from the data, refusing any other value).
    tensor.dtype = to_numeric_type(tensor.data.dtype)


# Lucid 2.9.0 has no forward pre-hooks. ``Module.__call__`` calls ``self.forward``, so a
# pre-hook is an instance attribute ``forward`` that runs the hooks and then the real
# forward; it is removed (and any instance ``forward`` that was there put back) when the
# last pre-hook of the module goes.
_PRE_HOOKS = "_lucid_inception_pre_hooks"


def _add_forward_pre_hook(module: lnn.Module, fn: Callable[[tuple], tuple | None]) -> Callable[[], None]:
    """``fn(args)`` runs before the forward; a tuple it returns replaces the arguments."""
    registry = module.__dict__.get(_PRE_HOOKS)
    if registry is None:
        hooks: dict[object, Callable[[tuple], tuple | None]] = {}
        own = module.__dict__.get("forward")  # e.g. a forward patched onto the instance
        inner = own if own is not None else type(module).forward.__get__(module)

        def forward(*args: object, **kwargs: object) -> object:
            for hook in list(hooks.values()):
                replaced = hook(args)
                if replaced is not None:
                    args = replaced
            return inner(*args, **kwargs)

        registry = (hooks, own)
        object.__setattr__(module, _PRE_HOOKS, registry)
        object.__setattr__(module, "forward", forward)
    hooks, own = registry
    token = object()
    hooks[token] = fn

    def remove() -> None:
        hooks.pop(token, None)
        if not hooks and module.__dict__.get(_PRE_HOOKS) is registry:
            del module.__dict__[_PRE_HOOKS]
            if own is None:
                del module.__dict__["forward"]
            else:
                object.__setattr__(module, "forward", own)

    return remove


# ``LucidAdapter.grad_hooks_see_parts``, once probed: True or False (None: not yet known).
_BACKWARD_SPLITS_GRADIENTS: bool | None = None


def _probe_backward_splits_gradients() -> bool | None:
    """How many times Lucid runs the backward hook of h in ``w = h + 2h`` (h = 3a): more
    than once means its gradient comes in parts. None when it cannot be told."""
    if not lucid.grad_enabled():
        return None
    try:
        a = lucid.Tensor(np.ones(1), requires_grad=True)
        h = a * 3.0
        runs: list[object] = []
        h.register_hook(lambda _tensor, grad: runs.append(grad))
        (h + h * 2.0).sum().backward()  # w's parents: h, then 2h, which reads h again
    except Exception:  # noqa: BLE001 (a Lucid that cannot run this: assume parts)
        return None
    return len(runs) > 1


# Layer classes by ``layer_info`` kind, as ``TorchAdapter``'s: each dropout drops
# something else in training (an element, a channel, with a SELU-preserving correction).
_BATCHNORM_KINDS = (
    (lnn.BatchNorm1d, "batchnorm1d"),
    (lnn.BatchNorm2d, "batchnorm2d"),
    (lnn.BatchNorm3d, "batchnorm3d"),
)
_DROPOUT_KINDS = (
    (lnn.Dropout, "dropout"),
    (lnn.Dropout1d, "dropout1d"),
    (lnn.Dropout2d, "dropout2d"),
    (lnn.Dropout3d, "dropout3d"),
    (lnn.AlphaDropout, "alpha-dropout"),
)


def _kind_of(module: object, kinds: tuple[tuple[type, str], ...]) -> str | None:
    return next((kind for klass, kind in kinds if isinstance(module, klass)), None)


class LucidAdapter:
    name = "lucid"
    devices = ("cpu", "gpu")
    # Checkpoint files in Lucid's own format: ``lucid.save(state_dict, "x.lcd")``.
    suffixes = (".lcd",)
    # BatchNorm's running_var tracks the biased batch variance (torch: unbiased).
    running_var_unbiased = False
    # ``load_state`` replaces each tensor's array (shared memory cannot corrupt it).
    loads_in_place = False
    # The grad flag is one global (torch's modes are per thread): parity's lock-step runs
    # a torch side on the calling thread and a Lucid side on a worker.
    modes_per_thread = False

    @staticmethod
    def grad_hooks_see_parts() -> bool:
        """Whether a tensor's backward hooks may run more than once, each time with a part
        of its gradient (the parts sum to it). Lucid's backward sorts the graph depth-first
        and lists a tensor that two consumers push before it is visited twice; it runs the
        tensor's backward at both places, clearing ``grad`` in between (every residual
        block's input). That is upstream bug LUC-012 (``conformance.findings``), in 2.9.0
        and 2.16.0 as released; a Lucid with its patch runs each tensor once. Probed once
        on this Lucid; where it cannot be probed (gradients switched off, an error), the
        answer is yes: summing parts is right either way, only costlier (and a module fed
        the model's input gets no input-gradient row, see ``add_input_grad_hook``)."""
        global _BACKWARD_SPLITS_GRADIENTS
        if _BACKWARD_SPLITS_GRADIENTS is None:
            _BACKWARD_SPLITS_GRADIENTS = _probe_backward_splits_gradients()
        return _BACKWARD_SPLITS_GRADIENTS is not False

    # ----- identity and structure
    @staticmethod
    def owns(model: object) -> bool:
        return isinstance(model, lnn.Module)

    @staticmethod
    def named_modules(model: lnn.Module) -> list[tuple[str, lnn.Module]]:
        """All modules in pre-order, the root named ``""``, as torch's ``named_modules``: a
        module registered under two names (``self.again = self.conv``) is listed once,
        under the first, its children with it, or the two frameworks' trees would differ.
        (Its tensors keep both names: ``tensors`` walks every name, as state dicts do.)"""
        found: list[tuple[str, lnn.Module]] = []
        seen: set[int] = set()

        def walk(prefix: str, module: lnn.Module) -> None:
            if id(module) in seen:
                return
            seen.add(id(module))
            found.append((prefix, module))
            for name, child in module._modules.items():
                if child is not None:
                    walk(f"{prefix}.{name}" if prefix else name, child)

        walk("", model)
        return found

    @staticmethod
    def tensors(model: lnn.Module) -> dict[str, lucid.Tensor]:
        """Parameters and buffers by state-dict name, in state-dict order: what
        ``model.state_dict(keep_vars=True)`` returns, in linear time. Lucid's own rescans
        every key gathered so far at each module (10 ms for Inception-v4, run twice per
        compare); this walk drops the same keys, a module's ``_state_dict_pass_attr``,
        once per module. A model whose modules override ``state_dict`` gets theirs."""
        if any(type(m).state_dict is not lnn.Module.state_dict for _, m in LucidAdapter.named_modules(model)):
            return dict(model.state_dict(keep_vars=True))
        found: dict[str, lucid.Tensor] = {}

        def walk(prefix: str, module: lnn.Module) -> None:
            for name, tensor in (*module._parameters.items(), *module._buffers.items()):
                found[prefix + name] = tensor
            for name, child in module._modules.items():
                walk(f"{prefix}{name}.", child)
            for key in module._state_dict_pass_attr:  # Lucid deletes these keys, at any depth
                found.pop(key, None)

        walk("", model)
        return found

    @staticmethod
    def untransferable(model: lnn.Module) -> dict[str, str]:
        """As ``TorchAdapter.untransferable``: none (Lucid's state dict holds tensors only)."""
        return {}

    @classmethod
    def parameter_names(cls, model: lnn.Module) -> list[str]:
        return [k for k, t in cls.tensors(model).items() if isinstance(t, lnn.Parameter)]

    @classmethod
    def buffer_names(cls, model: lnn.Module) -> list[str]:
        """Every buffer's state-dict name (Lucid has no framework-only buffers)."""
        return [k for k, t in cls.tensors(model).items() if not isinstance(t, lnn.Parameter)]

    @staticmethod
    def is_batchnorm(module: lnn.Module) -> bool:
        return isinstance(module, _BatchNorm)

    @staticmethod
    def is_dropout(module: lnn.Module) -> bool:
        """A module that drops at random in train mode and is the identity in eval mode
        (Lucid's ``DropPath`` drops in both modes, so it is not one)."""
        return isinstance(module, (_DropoutNd, lnn.DropBlock))

    @staticmethod
    def batchnorm_momentum(module: lnn.Module) -> float | None:
        """The running-statistics momentum a train-mode forward uses (``None`` would mean a
        cumulative average; Lucid falls back to 0.1 instead)."""
        return 0.1 if module.momentum is None else float(module.momentum)

    @staticmethod
    def batchnorm_eps(module: lnn.Module) -> float:
        """The epsilon added to the variance (every BatchNorm kind, 1-D to 3-D)."""
        return float(module.eps)

    @staticmethod
    def count_parameters(model: lnn.Module) -> int:
        """Each parameter once, a tied one too (Lucid's ``parameters()`` repeats it; torch's
        does not)."""
        unique = {id(p): p for p in model.parameters()}
        return int(sum(p.size for p in unique.values()))

    # ----- state
    @classmethod
    def state(cls, model: lnn.Module) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer (never views of the live arrays)."""
        return {k: _to_numpy(t.data) for k, t in cls.tensors(model).items()}

    @classmethod
    def state_views(cls, model: lnn.Module) -> dict[str, np.ndarray]:
        """Read-only views of every parameter and buffer (copies from an MLX device), for
        reading the state without a second copy of the weights in memory. Valid until the
        model's tensors change."""
        return {k: _read_only(t.data) for k, t in cls.tensors(model).items()}

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
        expected = {k: (tuple(t.shape), numpy_dtype(t.data)) for k, t in live.items()}
        check_state(expected, state, what=what, check_dtype=not cast, hint=hint)
        # Copies are made before the first assignment, so nothing is half-written.
        new = {k: np.array(state[k], dtype=expected[k][1], copy=True) for k in live}
        for key, tensor in live.items():
            _assign(tensor, new[key])

    @staticmethod
    def unreadable(live: Mapping[str, lucid.Tensor]) -> dict[str, str]:
        """As ``TorchAdapter.unreadable``: none (Lucid has no meta device)."""
        return {}

    @staticmethod
    def unwritable(live: Mapping[str, lucid.Tensor]) -> dict[str, str]:
        """As ``TorchAdapter.unwritable``: none (``load_state`` replaces arrays, on any device)."""
        return {}

    @classmethod
    def layout(cls, model: lnn.Module) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Name -> (shape, dtype) of every transferable tensor: what ``load_state`` expects."""
        return {k: (tuple(t.shape), numpy_dtype(t.data)) for k, t in cls.tensors(model).items()}

    @classmethod
    def snapshot(cls, model: lnn.Module, keys: Collection[str] | None = None) -> dict[str, np.ndarray]:
        """Copies of the named tensors (all when ``keys`` is None), each in its own dtype, for
        ``restore``."""
        live = cls.tensors(model)
        return {k: _to_numpy(t.data) for k, t in live.items() if keys is None or k in keys}

    @classmethod
    def restore(cls, model: lnn.Module, snapshot: Mapping[str, np.ndarray]) -> None:
        """Put back tensors taken by ``snapshot`` bit for bit, dtypes included (no cast),
        where they changed; a key the model no longer has is passed over."""
        live = cls.tensors(model)
        for key, array in snapshot.items():
            if key not in live:  # the model dropped it itself
                continue
            data = live[key].data
            if same_bits(_read_only(data), array):  # an MLX array is read to the host
                continue  # unchanged: its array (and any view a user holds of it) stays
            _assign(live[key], np.array(array, copy=True))

    @classmethod
    def changed_since(cls, model: lnn.Module, snapshot: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """As ``TorchAdapter.changed_since``."""
        live = cls.tensors(model)
        changed = {}
        for key, saved in snapshot.items():
            if key not in live:
                continue
            now = _read_only(live[key].data)
            if not same_bits(now, saved.astype(now.dtype, copy=False)):  # ~1 us, not ~15
                changed[key] = now
        return changed

    @classmethod
    def dtypes(cls, model: lnn.Module) -> dict[str, np.dtype]:
        return {k: numpy_dtype(t.data) for k, t in cls.tensors(model).items()}

    @classmethod
    def cast(cls, model: lnn.Module, dtype: str | np.dtype) -> None:
        """Cast the floating-point parameters and buffers, as ``TorchAdapter.cast``: an
        integer or boolean buffer (an index, a mask) keeps its dtype, or indexing with it
        would raise."""
        target = np.dtype(dtype)
        for tensor in cls.tensors(model).values():
            current = numpy_dtype(tensor.data)
            if np.issubdtype(current, np.floating) and current != target:
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
    def read_only(t: lucid.Tensor) -> np.ndarray:
        """A read-only numpy view of a CPU tensor (a copy from an MLX device)."""
        return _read_only(t.data)

    @staticmethod
    def dtype_name(t: lucid.Tensor) -> str:
        """The dtype of the tensor's data by name (an MLX one numpy lacks, e.g. ``"bfloat16"``, too)."""
        dtype = t.data.dtype
        return str(dtype).removeprefix("mlx.core.") if isinstance(dtype, mx.Dtype) else np.dtype(dtype).name

    @staticmethod
    def no_grad() -> contextlib.AbstractContextManager:
        """Lucid's switch is one global flag (torch's is per thread): code that runs a
        Lucid forward on a worker thread enters it on the calling thread as well."""
        return lucid.no_grad()

    @staticmethod
    def grad_enabled() -> bool:
        """The global grad flag that ``no_grad`` switches off."""
        return lucid.grad_enabled()

    @staticmethod
    def set_grad_enabled(mode: bool) -> None:
        """Set the global grad flag. Lucid has no setter: ``lucid.no_grad`` assigns the
        module global ``lucid._grad_enabled`` itself, and so does this."""
        lucid._grad_enabled = bool(mode)

    @staticmethod
    def limit_cpu_threads(count: int) -> contextlib.AbstractContextManager:
        """At most ``count`` threads in numpy's BLAS (the matrix products under Lucid's
        'cpu' convolutions and linear layers; never more than now), process-wide, until the
        context exits."""
        blas = threadpoolctl.ThreadpoolController().select(user_api="blas")
        now = min((library["num_threads"] for library in blas.info()), default=count)
        return blas.limit(limits=max(1, min(count, now)))

    @staticmethod
    def precise() -> contextlib.AbstractContextManager:
        """Full-precision arithmetic for comparisons; Lucid has no reduced-precision modes."""
        return contextlib.nullcontext()

    @staticmethod
    def add_output_hook(
        module: lnn.Module,
        callback: Callable[..., None],
        *,
        copy: bool = True,
        identity: bool = False,
        structured: bool = False,
    ) -> Callable[[], None]:
        """Call ``callback`` with a copy of the module's output after each call; returns
        the function that removes the hook. With ``copy=False`` the callback gets a
        read-only view of the live array, valid only until it returns (the forward waits);
        with ``identity`` it also gets the output's ``TensorState`` (``None`` for a
        structured one); with ``structured`` an output that is not one tensor (a tuple, a
        dict, ``None``) is reported too, as a ``StructuredOutput``; else it is skipped."""

        def to_array(tensor: lucid.Tensor) -> np.ndarray:
            return _to_numpy(tensor.data) if copy else _read_only(tensor.data)

        def hook(_module: lnn.Module, _args: tuple, output: object) -> None:
            if isinstance(output, lucid.Tensor):
                payload, state = to_array(output), TensorState(output, id(output.data))
            elif structured:
                payload, state = flatten_output(output, lambda v: isinstance(v, lucid.Tensor), to_array), None
            else:
                return
            callback(payload, state) if identity else callback(payload)

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
        batchnorm = _kind_of(module, _BATCHNORM_KINDS)
        if batchnorm is not None:
            return {
                "kind": batchnorm,
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
            if isinstance(module, lnn.MaxPool2d):  # Lucid 2.x max pools: no dilation, values only
                info["dilation"] = (1, 1)
                info["return_indices"] = False
            else:
                info["count_include_pad"] = True  # Lucid's average pool always divides by k*k
                info["divisor_override"] = None
            return info
        if isinstance(module, lnn.AdaptiveAvgPool2d):
            size = module.output_size
            return {
                "kind": "adaptive-avgpool2d",
                "output_size": tuple(size) if isinstance(size, (tuple, list, np.ndarray)) else (size, size),
            }
        dropout = _kind_of(module, _DROPOUT_KINDS)
        if dropout is not None:
            return {"kind": dropout, "p": float(module.p)}
        if isinstance(module, lnn.Identity):
            return {"kind": "identity"}
        if isinstance(module, lnn.Flatten):  # torch's names: start_axis is start_dim
            return {"kind": "flatten", "start_dim": module.start_axis, "end_dim": module.end_axis}
        if isinstance(module, lnn.Linear):
            return {
                "kind": "linear",
                "in_features": module.in_features,
                "out_features": module.out_features,
                "bias": module.bias is not None,
            }
        if isinstance(module, lnn.Sequential):
            return {"kind": "sequential"}
        if isinstance(module, lnn.ModuleList):
            return {"kind": "module-list"}
        return {"kind": "module", "class": type(module).__name__}

    @staticmethod
    def add_input_grad_hook(
        module: lnn.Module, enter: Callable[[], Callable[[np.ndarray | None], None] | None]
    ) -> Callable[[], None]:
        """Each time the module is entered with a first argument that requires grad, call
        ``enter()``; if it returns a function, route the argument through an identity node
        of this call's own (``x[...]``: a view, no copy; not a reshape, which Lucid 2.16.0's
        backward fusion merges with a following reshape, handing the node's hook None:
        upstream bug LUC-013) and, in the backward, pass that node's gradient, i.e. this
        call's share of the input's gradient, to the function as a read-only view valid
        until it returns. Returns the function that removes the hook (nodes already made
        keep theirs until the backward frees the graph).

        A leaf argument (the model's input) gets no node where the backward lists a tensor
        once per consumer (``grad_hooks_see_parts``, upstream bug LUC-012): a module that
        reads its input twice in one op (``x * x``) runs fine on the leaf, but on a node the
        second run of the node's backward finds no gradient and raises, and the harness
        would have broken a working model. The function gets ``(None, why)`` instead."""

        def hook(args: tuple) -> tuple | None:
            if not (args and isinstance(args[0], lucid.Tensor)):
                return None
            receive = enter()  # every call counts, for the call numbers
            if receive is None or not args[0].requires_grad:
                return None
            if args[0].is_leaf and LucidAdapter.grad_hooks_see_parts():
                receive(None, _LEAF_UNMEASURED)
                return None
            node = args[0][...]

            def on_grad(_tensor: lucid.Tensor, grad: object) -> None:
                # None: a second visit of the node with nothing accumulated since the first
                # (Lucid 2.16.0's backward passes it on, see ``grad_hooks_see_parts``)
                if grad is not None:
                    receive(_read_only(grad))

            node.register_hook(on_grad)
            return (node, *args[1:])

        return _add_forward_pre_hook(module, hook)

    @staticmethod
    def add_input_hook(
        module: lnn.Module, callback: Callable[[np.ndarray], np.ndarray | None]
    ) -> Callable[[], None]:
        """Call ``callback`` with a copy of the module's first input each time it is entered;
        if it returns an array, the module runs on that instead (same dtype and device)."""

        def hook(args: tuple) -> tuple | None:
            if not (args and isinstance(args[0], lucid.Tensor)):
                return None
            first = args[0]
            replacement = callback(_to_numpy(first.data))
            if replacement is None:
                return None
            value = np.array(replacement, dtype=numpy_dtype(first.data), copy=True)
            tensor = lucid.Tensor(value, requires_grad=first.requires_grad, device=first.device)
            return (tensor, *args[1:])

        return _add_forward_pre_hook(module, hook)

    @staticmethod
    def backward(output: lucid.Tensor, grad: np.ndarray) -> None:
        """Backpropagate ``grad`` (the gradient of a scalar loss w.r.t. ``output``)."""
        if output.device == "gpu":  # output.data.dtype is an MLX dtype there
            output.grad = mx.array(np.asarray(grad), dtype=output.data.dtype)
        else:
            output.grad = np.asarray(grad, dtype=output.data.dtype)
        output.backward()

    @staticmethod
    def grad(t: lucid.Tensor) -> np.ndarray | None:
        return None if t.grad is None else _to_numpy(t.grad)

    @classmethod
    def parameter_grads(cls, model: lnn.Module) -> dict[str, np.ndarray | None]:
        live = cls.tensors(model)
        return {k: cls.grad(live[k]) for k in cls.parameter_names(model)}

    @classmethod
    def set_parameter_grads(cls, model: lnn.Module, grads: Mapping[str, np.ndarray | None]) -> None:
        """Set (or, for ``None``, clear) the named parameters' gradients, e.g. to put back
        what ``parameter_grads`` returned: in the gradient's own dtype, which need not be the
        parameter's (a float64 BatchNorm buffer makes float64 gradients, LUC-009)."""
        live = cls.tensors(model)
        for key, grad in grads.items():
            tensor = live[key]
            if grad is None:
                tensor.grad = None
            else:
                value = np.array(grad, copy=True)
                tensor.grad = mx.array(value) if tensor.device == "gpu" else value

    @classmethod
    def take_grads(cls, model: lnn.Module) -> dict[str, object]:
        """As ``TorchAdapter.take_grads``: each parameter's ``.grad`` (a numpy or MLX array),
        cleared on the model."""
        live = cls.tensors(model)
        held = {}
        for key in cls.parameter_names(model):
            held[key] = live[key].grad
            live[key].grad = None
        return held

    @classmethod
    def give_grads(cls, model: lnn.Module, held: Mapping[str, object]) -> None:
        """Put back what ``take_grads`` took, the same arrays."""
        live = cls.tensors(model)
        for key, grad in held.items():
            if key in live:
                live[key].grad = grad

    @staticmethod
    def iter_parameters(model: lnn.Module) -> Iterator[lucid.Tensor]:
        return model.parameters()

    # ----- files
    @staticmethod
    def save_file(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
        """Write a state dict in Lucid's format (``lucid.save``: a pickled dict of numpy
        arrays; the suffix must be ``.lcd``)."""
        lucid.save(dict(state), os.fspath(path))

    @staticmethod
    def load_file(path: str | os.PathLike) -> dict[str, object]:
        """Read a ``.lcd`` file with ``lucid.load``. It is a pickle: load only trusted files."""
        try:
            content = lucid.load(os.fspath(path))
        except (pickle.UnpicklingError, EOFError, AttributeError, KeyError, ValueError) as error:
            # ValueError: lucid.load's own verdict ("Incompatible format version: 1.0 != 1.1"),
            # which does not name the file.
            raise ValueError(f"{os.fspath(path)}: not a Lucid .lcd state dict ({error})") from error
        if not isinstance(content, Mapping):
            raise ValueError(f"{os.fspath(path)}: holds a {type(content).__name__}, not a state dict")
        return dict(content)
