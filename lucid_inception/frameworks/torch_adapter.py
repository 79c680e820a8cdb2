"""Everything the project does to a torch model, with the Lucid adapter's vocabulary.

torch specifics handled here: ``num_batches_tracked`` is not part of the transferable
state (Lucid has no such buffer), nor is a module's extra state (``get_extra_state``: any
object, which only its ``set_extra_state`` can put back); a forward hook must return
``None`` or it replaces the module's output; ``.numpy()`` shares memory, so captured
arrays are copied.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping

import numpy as np
import torch

from lucid_inception.frameworks.identity import TensorState
from lucid_inception.frameworks.state import COUNTER_SUFFIX, KeyHint, UnreadableTensor, check_state, same_bits
from lucid_inception.frameworks.structured import flatten_output

__all__ = ["TorchAdapter"]

_EXTRA_STATE = "_extra_state"  # torch.nn.modules.module._EXTRA_STATE_KEY_SUFFIX


def _is_extra_state(model: torch.nn.Module, key: str) -> bool:
    """``key`` holds what its module's ``get_extra_state`` returned: any object (a tensor
    too), which only ``set_extra_state`` writes back, never a ``copy_``."""
    owner, _, name = key.rpartition(".")
    if name != _EXTRA_STATE:
        return False
    try:
        module = model.get_submodule(owner)
    except AttributeError:  # a key a state-dict hook made up
        return False
    return type(module).get_extra_state is not torch.nn.Module.get_extra_state


def _is_tensor_state(model: torch.nn.Module, key: str, value: object) -> bool:
    return isinstance(value, torch.Tensor) and not _is_extra_state(model, key)


def _state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict's tensors (``num_batches_tracked`` too), without extra state: what
    ``snapshot``, ``restore`` and ``cast`` cover."""
    return {k: t for k, t in model.state_dict(keep_vars=True).items() if _is_tensor_state(model, k, t)}


def _saved(t: torch.Tensor) -> np.ndarray | torch.Tensor:
    """A copy for ``restore``: a numpy array in the tensor's memory layout (``np.array``
    keeps the strides; ``.copy()`` would make it C-ordered), or a torch clone when numpy has
    no dtype for it."""
    if t.is_floating_point() and t.dtype not in _NUMPY_FLOATS:
        return t.detach().clone()
    return np.array(t.detach().to("cpu").numpy(), copy=True)


def _restorable(model: torch.nn.Module, keys: Collection[str] | None) -> dict[str, torch.Tensor]:
    """What ``snapshot`` and ``restore`` cover (``keys`` of it, or all when ``None``): the
    state dict's tensors and the buffers it leaves out (non-persistent ones, which a forward
    may update: a running average). Keys that are all buffers (a compare without a cast)
    are found without the state dict's walk, a third of the time."""
    buffers = dict(model.named_buffers(remove_duplicate=False))
    if keys is not None and all(key in buffers for key in keys):
        return buffers
    live = _state_tensors(model)
    for key, buffer in buffers.items():
        live.setdefault(key, buffer)
    return live


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy().copy()


def _file_value(t: torch.Tensor) -> np.ndarray | UnreadableTensor:
    """A file's tensor as a numpy array, or why it cannot be one (every such key is then
    listed by the file's check, instead of the first one raising)."""
    if t.is_meta:
        return UnreadableTensor("a tensor on the meta device: it holds no values")
    try:
        return _to_numpy(t)
    except TypeError:  # a dtype numpy has none for: "Got unsupported ScalarType BFloat16"
        return UnreadableTensor(f"dtype {str(t.dtype).removeprefix('torch.')}; supported: float32, float64")


def _read_only(t: torch.Tensor) -> np.ndarray:
    # Shares memory on the CPU. Called for every output and every tensor of a compare:
    # ``detach`` only where ``numpy()`` needs it, ``to`` only off the CPU (~1 us each).
    if t.requires_grad:
        t = t.detach()
    view = (t if t.is_cpu else t.to("cpu")).numpy()
    view.flags.writeable = False
    return view


# The dtypes a model's transferable state may have: numpy's floating dtypes.
_STATE_DTYPES = "float16, float32, float64"
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def _np_dtype(t: torch.Tensor, key: str) -> np.dtype:
    """The numpy dtype of tensor ``key``; a clear ``TypeError`` for one numpy lacks
    (bfloat16, float8), where numpy would only say "data type not understood"."""
    name = str(t.dtype).removeprefix("torch.")
    try:
        return np.dtype(name)
    except TypeError:
        raise TypeError(
            f"{key} is {name}, which numpy has no dtype for; the state of a torch model must be "
            f"one of {_STATE_DTYPES} (cast it first, e.g. TorchAdapter.cast(model, 'float32'))"
        ) from None


@contextlib.contextmanager
def _ieee_float32() -> Iterator[None]:
    """float32 convolutions and matmuls without TF32 (cuDNN convolutions default to TF32,
    10-bit mantissas). Only torch's newer ``fp32_precision`` switches are touched: reading
    the legacy ``allow_tf32`` after setting them raises."""
    switches = [torch.backends.cudnn.conv, torch.backends.cuda.matmul]
    saved = [s.fp32_precision for s in switches]
    try:
        for switch in switches:
            switch.fp32_precision = "ieee"
        yield
    finally:
        for switch, value in zip(switches, saved, strict=True):
            switch.fp32_precision = value


def _pair(value: object) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else (value, value)


# Layer classes by ``layer_info`` kind. ``SyncBatchNorm`` computes what ``BatchNorm2d``
# does on one process (``convert_sync_batchnorm`` makes one of the other); each dropout
# drops something else in training (an element, a channel, with a SELU-preserving
# correction), so each is its own kind.
_BATCHNORM_KINDS = (
    (torch.nn.BatchNorm1d, "batchnorm1d"),
    (torch.nn.BatchNorm2d, "batchnorm2d"),
    (torch.nn.BatchNorm3d, "batchnorm3d"),
    (torch.nn.SyncBatchNorm, "batchnorm2d"),
)
_DROPOUT_KINDS = (
    (torch.nn.Dropout, "dropout"),
    (torch.nn.Dropout1d, "dropout1d"),
    (torch.nn.Dropout2d, "dropout2d"),
    (torch.nn.Dropout3d, "dropout3d"),
    (torch.nn.AlphaDropout, "alpha-dropout"),
    (torch.nn.FeatureAlphaDropout, "feature-alpha-dropout"),
)


def _kind_of(module: object, kinds: tuple[tuple[type, str], ...]) -> str | None:
    return next((kind for klass, kind in kinds if isinstance(module, klass)), None)


def _torch_load_reason(error: BaseException) -> str:
    """What ``torch.load(weights_only=True)`` found wrong, in one line, without its advice
    (re-run with ``weights_only=False``, allow-list a global, file an issue, read the docs):
    the unpickler's own verdict ("Unsupported operand 110", "Unsupported global: GLOBAL
    numpy...") or the first sentence of any other error (a truncated zip archive)."""
    text = str(error)
    _, marker, rest = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (rest if marker else text).splitlines() if line.strip()]
    if not lines:  # an empty file: EOFError with no message
        return (
            f"{type(error).__name__}: the file ends early"
            if isinstance(error, EOFError)
            else type(error).__name__
        )
    return lines[0].split(". ")[0].rstrip(".")


class TorchAdapter:
    name = "torch"
    devices = ("cpu", "cuda")
    # Checkpoint files of ``torch.save(state_dict)``, read back with ``weights_only=True``.
    suffixes = (".pt", ".pth")
    # BatchNorm's running_var tracks the unbiased batch variance, x n/(n-1) (Lucid: biased).
    running_var_unbiased = True
    # ``load_state`` writes into each tensor (``copy_``): shared memory matters.
    loads_in_place = True
    # Grad mode, autocast and inference mode are per thread: parity's lock-step runs a
    # torch side on the calling thread, under the caller's modes.
    modes_per_thread = True

    @staticmethod
    def grad_hooks_see_parts() -> bool:
        """No: a tensor hook runs once, with the whole gradient (torch sums the parts first)."""
        return False

    # ----- identity and structure
    @staticmethod
    def owns(model: object) -> bool:
        return isinstance(model, torch.nn.Module)

    @staticmethod
    def named_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        return list(model.named_modules())

    @staticmethod
    def tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Parameters and buffers by state-dict name, without ``num_batches_tracked``, extra
        state or any other object that is not a tensor (``untransferable`` lists those)."""
        return {k: t for k, t in _state_tensors(model).items() if not k.endswith(COUNTER_SUFFIX)}

    @staticmethod
    def untransferable(model: torch.nn.Module) -> dict[str, str]:
        """Key -> what it holds, for the state-dict entries that are not tensor state:
        extra state, or anything else a state-dict hook added. A transfer cannot carry
        them, so it names them rather than drop them silently."""
        return {
            k: f"extra state (a {type(v).__name__})" if _is_extra_state(model, k) else f"a {type(v).__name__}"
            for k, v in model.state_dict(keep_vars=True).items()
            if not _is_tensor_state(model, k, v)
        }

    @staticmethod
    def parameter_names(model: torch.nn.Module) -> list[str]:
        """Every name, a tied parameter's too (as Lucid lists them: torch's default lists a
        shared parameter once, and the other names would look missing on this side)."""
        return [k for k, _ in model.named_parameters(remove_duplicate=False)]

    @staticmethod
    def buffer_names(model: torch.nn.Module) -> list[str]:
        """Every buffer's state-dict name, ``num_batches_tracked`` included."""
        return [k for k, _ in model.named_buffers(remove_duplicate=False)]

    @staticmethod
    def is_batchnorm(module: torch.nn.Module) -> bool:
        return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)

    @staticmethod
    def is_dropout(module: torch.nn.Module) -> bool:
        """A module that drops at random in train mode and is the identity in eval mode
        (every dropout kind of ``torch.nn``)."""
        return isinstance(module, torch.nn.modules.dropout._DropoutNd)

    @staticmethod
    def batchnorm_momentum(module: torch.nn.Module) -> float | None:
        """The running-statistics momentum a train-mode forward uses (``None``: torch keeps a
        cumulative average)."""
        return None if module.momentum is None else float(module.momentum)

    @staticmethod
    def batchnorm_eps(module: torch.nn.Module) -> float:
        """The epsilon added to the variance (every BatchNorm kind, 1-D to 3-D)."""
        return float(module.eps)

    @staticmethod
    def count_parameters(model: torch.nn.Module) -> int:
        return int(sum(p.numel() for p in model.parameters()))

    # ----- state
    @classmethod
    def state(cls, model: torch.nn.Module) -> dict[str, np.ndarray]:
        return {k: _to_numpy(t) for k, t in cls.tensors(model).items()}

    @classmethod
    def state_views(cls, model: torch.nn.Module) -> dict[str, np.ndarray]:
        """As ``LucidAdapter.state_views`` (a CUDA tensor is copied to the host)."""
        return {k: _read_only(t) for k, t in cls.tensors(model).items()}

    @classmethod
    def load_state(
        cls,
        model: torch.nn.Module,
        state: Mapping[str, np.ndarray],
        *,
        cast: bool = False,
        what: str = "loading state into a torch model",
        hint: KeyHint | None = None,
    ) -> None:
        """Strict and atomic, as ``LucidAdapter.load_state``."""
        live = cls.tensors(model)
        expected = {k: (tuple(t.shape), _np_dtype(t, k)) for k, t in live.items()}
        check_state(expected, state, what=what, check_dtype=not cast, hint=hint)
        # Every conversion (dtype, byte order, layout) happens before the first write, so
        # nothing is half-written; an array already in the model's dtype and C order is
        # read in place: loading holds no second copy of the weights.
        # (``asarray``, not ``ascontiguousarray``: that one makes a 0-d array 1-d, and
        # ``copy_`` then refuses it after the keys before it were written.)
        sources = {k: np.asarray(state[k], dtype=expected[k][1], order="C") for k in live}
        with torch.no_grad(), warnings.catch_warnings():
            # from_numpy warns about read-only arrays (state views): they are only read here.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            for key, tensor in live.items():
                tensor.copy_(torch.from_numpy(sources[key]))

    @staticmethod
    def unreadable(live: Mapping[str, torch.Tensor]) -> dict[str, str]:
        """Key -> why, for every tensor that holds no values to read: one on the meta device
        (reading it raises ``NotImplementedError`` halfway through a transfer or a save)."""
        why = "a tensor on the meta device: it holds no values"
        return {key: why for key, t in live.items() if t.is_meta}

    @staticmethod
    def unwritable(live: Mapping[str, torch.Tensor]) -> dict[str, str]:
        """Key -> why, for every tensor ``load_state`` cannot write: one on the meta device
        (no memory: ``copy_`` into it does nothing and raises nothing), an inference tensor
        (torch refuses to change it outside ``inference_mode``, halfway through a load)."""
        why = {}
        for key, tensor in live.items():
            if tensor.is_meta:
                why[key] = "a tensor on the meta device: it has no memory to write into"
            elif tensor.is_inference():
                why[key] = (
                    "an inference tensor (made under torch.inference_mode()): torch refuses to write into it"
                )
        return why

    @staticmethod
    def memory_layout(t: torch.Tensor) -> tuple[tuple[str, int | None], int, int, tuple, tuple, bool | None]:
        """Where ``t``'s elements lie, from torch's metadata alone (no copy, any device):
        (device, address of its first element, element size, shape, strides in bytes,
        whether elements overlap). The last is torch's own verdict, ``None`` where torch
        cannot tell (any non-dense tensor: ``x[::2]``): ``parity._aliasing`` then works it
        out from the strides."""
        size = t.element_size()
        address = t.untyped_storage().data_ptr() + t.storage_offset() * size
        verdict = torch._debug_has_internal_overlap(t)  # 0: no, 1: yes, 2: too hard to tell
        overlaps = {0: False, 1: True}.get(verdict)
        strides = tuple(stride * size for stride in t.stride())
        return (t.device.type, t.device.index), address, size, tuple(t.shape), strides, overlaps

    @classmethod
    def layout(cls, model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Name -> (shape, dtype) of every transferable tensor: what ``load_state`` expects."""
        return {k: (tuple(t.shape), _np_dtype(t, k)) for k, t in cls.tensors(model).items()}

    @staticmethod
    def snapshot(model: torch.nn.Module, keys: Collection[str] | None = None) -> dict[str, np.ndarray]:
        """Copies of the named tensors (all when ``keys`` is None: the state dict's tensors,
        ``num_batches_tracked`` included, extra state not, and non-persistent buffers), each
        in its own dtype and memory layout (a channels-last weight stays channels-last), for
        ``restore``. A tensor numpy has no dtype for (a bfloat16 buffer) is kept as a torch
        clone: a compare refuses such state-dict tensors, but not non-persistent buffers."""
        live = _restorable(model, keys)
        return {k: _saved(t) for k, t in live.items() if keys is None or k in keys}

    @staticmethod
    def restore(model: torch.nn.Module, snapshot: Mapping[str, np.ndarray]) -> None:
        """Put back tensors taken by ``snapshot`` bit for bit, dtypes and layouts included (no
        cast), where they changed; a key the model no longer has (a buffer its forward set to
        ``None``) is passed over: there is nothing left to put it into."""
        live = _restorable(model, snapshot)
        with torch.no_grad():
            for key, array in snapshot.items():
                tensor = live.get(key)
                if tensor is None:  # the model dropped it itself (``self.cache = None``)
                    continue
                if isinstance(array, torch.Tensor):  # kept as a clone (see ``snapshot``)
                    tensor.data = array.clone().to(tensor.device)
                    continue
                if not tensor.is_meta and same_bits(tensor.detach().to("cpu").numpy(), array):
                    continue  # unchanged: its storage (and any view a user holds of it) stays
                # ``.data =`` keeps the Parameter object and lets its dtype change.
                tensor.data = torch.from_numpy(np.array(array, copy=True)).to(tensor.device)

    @staticmethod
    def changed_since(model: torch.nn.Module, snapshot: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Key -> a read-only view of its value now, for every tensor of ``snapshot`` whose
        bits changed since (compared in its dtype now: a cast alone is no change). Values,
        not ``_version``: torch's BatchNorm kernels update running statistics in place
        without bumping it."""
        live = _restorable(model, snapshot)
        changed = {}
        for key, saved in snapshot.items():
            tensor = live.get(key)
            if tensor is None or isinstance(saved, torch.Tensor):  # dropped, or kept as a clone
                continue
            now = _read_only(tensor)
            if not same_bits(now, saved.astype(now.dtype, copy=False)):  # ~1 us, not ~15
                changed[key] = now
        return changed

    @classmethod
    def dtypes(cls, model: torch.nn.Module) -> dict[str, np.dtype]:
        return {k: _np_dtype(t, k) for k, t in cls.tensors(model).items()}

    @staticmethod
    def cast(model: torch.nn.Module, dtype: str | np.dtype) -> None:
        """Cast the floating-point parameters and buffers of the state dict: what
        ``snapshot``/``restore`` cover. Not ``Module.to``, which also casts every ``.grad``
        and every non-persistent buffer, which nothing could put back."""
        target = getattr(torch, np.dtype(dtype).name)
        with torch.no_grad():
            for tensor in _state_tensors(model).values():
                if tensor.is_floating_point() and tensor.dtype != target:
                    tensor.data = tensor.data.to(target)  # keeps the Parameter object

    # ----- mode and device
    @classmethod
    def training_modes(cls, model: torch.nn.Module) -> list[bool]:
        return [m.training for _, m in cls.named_modules(model)]

    @classmethod
    def restore_training_modes(cls, model: torch.nn.Module, modes: list[bool]) -> None:
        for (_, module), mode in zip(cls.named_modules(model), modes, strict=True):
            module.training = mode

    @staticmethod
    def set_training(model: torch.nn.Module, mode: bool) -> None:
        model.train(mode)

    @staticmethod
    def device(model: torch.nn.Module) -> str:
        first = next(iter(model.parameters()), None)
        return "cpu" if first is None else first.device.type

    @staticmethod
    def to_device(model: torch.nn.Module, device: str) -> None:
        model.to(device)

    @staticmethod
    def device_unavailable(device: str) -> str | None:
        if device == "cpu":
            return None
        if device == "cuda":
            return None if torch.cuda.is_available() else "torch.cuda.is_available() is False: no CUDA device"
        return f"torch device {device!r} is not supported here; valid: 'cpu', 'cuda'"

    # ----- running
    @staticmethod
    def tensor(x: np.ndarray, *, device: str = "cpu", requires_grad: bool = False) -> torch.Tensor:
        t = torch.from_numpy(np.array(x, copy=True)).to(device)
        return t.requires_grad_(requires_grad)

    @staticmethod
    def to_numpy(t: torch.Tensor) -> np.ndarray:
        return _to_numpy(t)

    @staticmethod
    def read_only(t: torch.Tensor) -> np.ndarray:
        """As ``LucidAdapter.read_only`` (a CUDA tensor is copied to the host)."""
        return _read_only(t)

    @staticmethod
    def dtype_name(t: torch.Tensor) -> str:
        """The tensor's dtype by name (``"bfloat16"`` too, which numpy has no dtype for)."""
        return str(t.dtype).removeprefix("torch.")

    @staticmethod
    def no_grad() -> contextlib.AbstractContextManager:
        """Per thread: enter it on the thread that runs the forward."""
        return torch.no_grad()

    @staticmethod
    def grad_enabled() -> bool:
        """This thread's grad mode (what ``no_grad`` switches off)."""
        return torch.is_grad_enabled()

    @staticmethod
    def set_grad_enabled(mode: bool) -> None:
        """Set this thread's grad mode."""
        torch.set_grad_enabled(mode)

    @staticmethod
    @contextlib.contextmanager
    def limit_cpu_threads(count: int) -> Iterator[None]:
        """At most ``count`` intra-op threads (never more than now), process-wide, until
        the context exits."""
        before = torch.get_num_threads()
        torch.set_num_threads(max(1, min(count, before)))
        try:
            yield
        finally:
            torch.set_num_threads(before)

    @staticmethod
    def precise() -> contextlib.AbstractContextManager:
        """Full-precision float32 for comparisons: no TF32 in cuDNN convolutions or matmuls."""
        return _ieee_float32()

    @staticmethod
    def add_output_hook(
        module: torch.nn.Module,
        callback: Callable[..., None],
        *,
        copy: bool = True,
        identity: bool = False,
        structured: bool = False,
    ) -> Callable[[], None]:
        """As ``LucidAdapter.add_output_hook``: a copy, or with ``copy=False`` a read-only
        view valid only until the callback returns (a CUDA tensor is copied to the host);
        with ``identity`` the callback also gets the output's ``TensorState``; with
        ``structured`` an output that is not one tensor is reported as a ``StructuredOutput``.
        A floating output numpy has no dtype for (bfloat16, under ``torch.autocast``) is
        reported in float32, which holds it exactly."""
        read = _to_numpy if copy else _read_only

        def to_array(t: torch.Tensor) -> np.ndarray:
            if t.is_floating_point() and t.dtype not in _NUMPY_FLOATS:
                t = t.float()  # a new tensor: what a view would have shown, exactly
            return read(t)

        def hook(_module: torch.nn.Module, _args: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor):
                payload, state = to_array(output), TensorState(output, output._version)
            elif structured:
                payload, state = flatten_output(output, lambda v: isinstance(v, torch.Tensor), to_array), None
            else:
                return
            callback(payload, state) if identity else callback(payload)
            # returns None: a value would replace the module's output

        return module.register_forward_hook(hook).remove

    @staticmethod
    def add_call_hook(
        module: torch.nn.Module, callback: Callable[[list[np.ndarray], np.ndarray], None]
    ) -> Callable[[], None]:
        """As ``LucidAdapter.add_call_hook``: copies of the tensor arguments and the output."""

        def hook(_module: torch.nn.Module, args: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor):
                callback([_to_numpy(a) for a in args if isinstance(a, torch.Tensor)], _to_numpy(output))
            # returns None: a value would replace the module's output

        return module.register_forward_hook(hook).remove

    @staticmethod
    def layer_info(module: torch.nn.Module) -> dict[str, object]:
        """As ``LucidAdapter.layer_info``; torch's string and int forms become (h, w) tuples."""
        nn = torch.nn
        if isinstance(module, nn.Conv2d):
            kernel, dilation = _pair(module.kernel_size), _pair(module.dilation)
            padding = module.padding
            if padding == "valid":
                padding = (0, 0)
            elif padding == "same":
                padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
            return {
                "kind": "conv2d",
                "in_channels": module.in_channels,
                "out_channels": module.out_channels,
                "kernel": kernel,
                "stride": _pair(module.stride),
                "padding": _pair(padding),
                "dilation": dilation,
                "groups": module.groups,
                "bias": module.bias is not None,
                "padding_mode": module.padding_mode,
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
        if isinstance(module, nn.ReLU):
            return {"kind": "relu"}
        if isinstance(module, nn.MaxPool2d):
            return {
                "kind": "maxpool2d",
                "kernel": _pair(module.kernel_size),
                "stride": _pair(module.kernel_size if module.stride is None else module.stride),
                "padding": _pair(module.padding),
                "ceil_mode": module.ceil_mode,
                "dilation": _pair(module.dilation),
                "return_indices": module.return_indices,  # a (values, indices) pair
            }
        if isinstance(module, nn.AvgPool2d):
            kernel = _pair(module.kernel_size)
            divisor = module.divisor_override
            count_include_pad = module.count_include_pad and divisor is None
            # k*k is what counting the padding divides by, unless a window may hang past the
            # padded edge (ceil_mode): torch then divides by the clipped window.
            if divisor == kernel[0] * kernel[1] and not module.ceil_mode:
                count_include_pad, divisor = True, None
            return {
                "kind": "avgpool2d",
                "kernel": kernel,
                "stride": _pair(module.kernel_size if module.stride is None else module.stride),
                "padding": _pair(module.padding),
                "ceil_mode": module.ceil_mode,
                # any other divisor replaces k*k as well: it counts as not including the padding
                "count_include_pad": count_include_pad,
                "divisor_override": divisor,
            }
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return {"kind": "adaptive-avgpool2d", "output_size": _pair(module.output_size)}
        dropout = _kind_of(module, _DROPOUT_KINDS)
        if dropout is not None:
            return {"kind": dropout, "p": float(module.p)}
        if isinstance(module, nn.Identity):
            return {"kind": "identity"}
        if isinstance(module, nn.Flatten):
            return {"kind": "flatten", "start_dim": module.start_dim, "end_dim": module.end_dim}
        if isinstance(module, nn.Linear):
            return {
                "kind": "linear",
                "in_features": module.in_features,
                "out_features": module.out_features,
                "bias": module.bias is not None,
            }
        if isinstance(module, nn.Sequential):
            return {"kind": "sequential"}
        if isinstance(module, nn.ModuleList):
            return {"kind": "module-list"}
        return {"kind": "module", "class": type(module).__name__}

    @staticmethod
    def add_input_grad_hook(
        module: torch.nn.Module, enter: Callable[[], Callable[[np.ndarray | None], None] | None]
    ) -> Callable[[], None]:
        """As ``LucidAdapter.add_input_grad_hook``; the identity node is ``view_as``. Torch
        runs no hook on a view that is changed in place afterwards: inside the module
        (``ReLU(inplace=True)`` on its input), or after it returned the node itself (an
        ``Identity``, an eval-mode ``Dropout``) to a later in-place op. A node found changed
        when its module returns, or when the hook is removed (the forward has ended), gets
        ``(None, why)`` from the function instead: no gradient will come."""
        open_calls: list[tuple[torch.Tensor, int, Callable[[np.ndarray | None], None]]] = []
        returned_calls: list[tuple[torch.Tensor, int, Callable[[np.ndarray | None], None]]] = []

        def hook(_module: torch.nn.Module, args: tuple) -> tuple | None:
            if not (args and isinstance(args[0], torch.Tensor)):
                return None
            receive = enter()
            if receive is None or not args[0].requires_grad:
                return None
            node = args[0].view_as(args[0])

            def on_grad(grad: torch.Tensor) -> None:
                receive(_read_only(grad))  # returns None: a value would replace the gradient

            node.register_hook(on_grad)
            open_calls.append((node, node._version, receive))
            return (node, *args[1:])

        def returned(_module: torch.nn.Module, _args: tuple, _output: object) -> None:
            if open_calls:  # the innermost open call of this module is the one returning
                node, version, receive = open_calls.pop()
                if node._version != version:
                    receive(None, "its module changed its input in place")
                else:  # it may still be changed by what runs next
                    returned_calls.append((node, version, receive))

        handles = [module.register_forward_pre_hook(hook), module.register_forward_hook(returned)]

        def remove() -> None:
            for handle in handles:
                handle.remove()
            for node, version, receive in returned_calls:
                if node._version != version:
                    receive(None, "its module returned its input, which was then changed in place")
            returned_calls.clear()  # the nodes belong to the graph, not to this hook

        return remove

    @staticmethod
    def add_input_hook(
        module: torch.nn.Module, callback: Callable[[np.ndarray], np.ndarray | None]
    ) -> Callable[[], None]:
        """Call ``callback`` with a copy of the module's first input each time it is entered;
        if it returns an array, the module runs on that instead (same dtype and device)."""

        def hook(_module: torch.nn.Module, args: tuple) -> tuple | None:
            if not (args and isinstance(args[0], torch.Tensor)):
                return None
            first = args[0]
            replacement = callback(_to_numpy(first))
            if replacement is None:
                return None  # None keeps the arguments; a tuple replaces them
            tensor = torch.from_numpy(np.array(replacement, copy=True)).to(first)
            return (tensor.requires_grad_(first.requires_grad), *args[1:])

        return module.register_forward_pre_hook(hook).remove

    @staticmethod
    def backward(output: torch.Tensor, grad: np.ndarray) -> None:
        output.backward(torch.from_numpy(np.asarray(grad)).to(output.device, output.dtype))

    @staticmethod
    def grad(t: torch.Tensor) -> np.ndarray | None:
        return None if t.grad is None else _to_numpy(t.grad)

    @classmethod
    def parameter_grads(cls, model: torch.nn.Module) -> dict[str, np.ndarray | None]:
        return {k: cls.grad(p) for k, p in model.named_parameters(remove_duplicate=False)}

    @staticmethod
    def set_parameter_grads(model: torch.nn.Module, grads: Mapping[str, np.ndarray | None]) -> None:
        """Set (or, for ``None``, clear) the named parameters' gradients, e.g. to put back
        what ``parameter_grads`` returned."""
        live = dict(model.named_parameters(remove_duplicate=False))
        for key, grad in grads.items():
            param = live[key]
            param.grad = None if grad is None else torch.from_numpy(np.array(grad, copy=True)).to(param)

    @staticmethod
    def take_grads(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
        """Every parameter's ``.grad`` object, cleared on the model (``None``): what a
        compare then does (a cast, which rewrites ``.grad`` in place, a backward) never
        touches them, and ``give_grads`` puts the same objects back, layout included."""
        held = {}
        for key, param in model.named_parameters(remove_duplicate=False):
            held[key] = param.grad
            param.grad = None
        return held

    @staticmethod
    def give_grads(model: torch.nn.Module, held: Mapping[str, torch.Tensor | None]) -> None:
        """Put back what ``take_grads`` took (the parameters in their dtype and device again)."""
        live = dict(model.named_parameters(remove_duplicate=False))
        for key, grad in held.items():
            if key in live:
                live[key].grad = grad

    @staticmethod
    def iter_parameters(model: torch.nn.Module) -> Iterator[torch.Tensor]:
        return model.parameters()

    # ----- files
    @staticmethod
    def save_file(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
        """Write a state dict as ``torch.save`` of a dict of tensors (the twins load it
        with ``load_state_dict``; a missing ``num_batches_tracked`` defaults to 0)."""
        torch.save({k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}, os.fspath(path))

    @staticmethod
    def load_file(path: str | os.PathLike) -> dict[str, object]:
        """Read a ``torch.save``d state dict with ``weights_only=True``: every entry, tensors
        as numpy arrays (``num_batches_tracked`` too: ``parity.weights`` leaves it out and
        says so)."""
        try:
            content = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
            why = f"not a torch state dict saved with torch.save ({_torch_load_reason(error)})"
            raise ValueError(f"{os.fspath(path)}: {why}") from error
        if not isinstance(content, Mapping):
            raise ValueError(f"{os.fspath(path)}: holds a {type(content).__name__}, not a state dict")
        return {k: _file_value(v) if isinstance(v, torch.Tensor) else v for k, v in content.items()}
