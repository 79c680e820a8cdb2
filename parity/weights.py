"""Strict weight transfer between models and checkpoint files, any framework either side.

The twins share state-dict keys, so a transfer is an identity map: equal key sets
(torch's ``num_batches_tracked`` aside), exact shapes (never a reshape: a (1, 7) kernel
never fits a (7, 1) slot), equal dtypes, float32 or float64 only. Destination keys that
share memory are refused too (see ``parity._aliasing``), except tied keys (one tensor)
whose source values are equal. On any problem nothing is written and
``StateMismatchError`` (a ``ValueError``) lists every offending key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lucid_inception.frameworks import (
    ADAPTERS,
    COUNTER_SUFFIX,
    Adapter,
    StateMismatchError,
    UnreadableTensor,
    adapter_for,
    check_state,
)
from parity._aliasing import aliasing_problems, shared_with
from parity._files import write_atomically

__all__ = [
    "StateMismatchError",
    "TRANSFER_DTYPES",
    "checkpoint_format",
    "convert_checkpoint",
    "load_checkpoint_file",
    "save_checkpoint",
    "transfer",
]

TRANSFER_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(np.float64))


def _dtype_names(adapter: Adapter, live: Mapping[str, object]) -> dict[str, str]:
    # By name, so that a dtype numpy has none for (bfloat16) is listed like the others.
    return {key: adapter.dtype_name(tensor) for key, tensor in live.items()}


def _dtype_problems(names: Mapping[str, str], side: str) -> dict[str, str]:
    """Key -> problem, for every tensor in a dtype other than float32 and float64."""
    return {
        key: f"{key}: dtype {name} on the {side}; transfer supports float32 and float64"
        for key, name in names.items()
        if name not in ("float32", "float64")
    }


def _describe(model: object, adapter: Adapter) -> str:
    return f"{type(model).__name__} ({adapter.name})"


def transfer(src: object, dst: object) -> None:
    """Copy every parameter and buffer of ``src`` into ``dst`` (Lucid or torch, either
    way). Strict and atomic: see the module docstring."""
    src_adapter, dst_adapter = adapter_for(src), adapter_for(dst)
    what = f"transferring {_describe(src, src_adapter)} -> {_describe(dst, dst_adapter)}"
    src_live, dst_live = src_adapter.tensors(src), dst_adapter.tensors(dst)
    dst_names = _dtype_names(dst_adapter, dst_live)
    # State-dict entries that are no tensor (torch's extra state): a transfer cannot carry
    # them and must not drop them silently. One line per key, naming its side(s).
    held: dict[str, list[str]] = {}
    for side, adapter, model in (("source", src_adapter, src), ("destination", dst_adapter, dst)):
        for key, what_it_is in adapter.untransferable(model).items():
            held.setdefault(key, []).append(f"{what_it_is} on the {side}")
    problems = [
        f"{key}: {' and '.join(where)}, which transfer does not carry: tensors only"
        for key, where in held.items()
    ]
    odd_src = _dtype_problems(_dtype_names(src_adapter, src_live), "source")
    # Tensors with nothing to copy (torch: meta device): reading one raises halfway through.
    odd_src |= {
        key: f"{key}: on the source, {why}"
        for key, why in src_adapter.unreadable(src_live).items()
        if key not in odd_src
    }
    odd_dst = _dtype_problems(dst_names, "destination")
    # Tensors no write can reach (torch: meta device, inference tensors): copy_ would do
    # nothing, or raise halfway through.
    unwritable = {
        key: f"{key}: on the destination, {why}"
        for key, why in dst_adapter.unwritable(dst_live).items()
        if key not in odd_dst
    }
    problems += [*odd_src.values(), *odd_dst.values(), *unwritable.values()]
    # A key in such a dtype is listed for that alone: the checks below would name it again
    # (float16: "dtype float32, the model has float16") or could not read it (bfloat16).
    odd = odd_src.keys() | odd_dst.keys() | unwritable.keys()
    # Views, not copies: the destination makes whatever copies it needs, so a transfer
    # never holds a third copy of the weights.
    state = {key: src_adapter.read_only(t) for key, t in src_live.items() if key not in odd}
    dst_live = {key: t for key, t in dst_live.items() if key not in odd}
    layout = {key: (tuple(t.shape), np.dtype(dst_names[key])) for key, t in dst_live.items()}
    # Shared memory matters only to a destination written in place (torch; Lucid's load
    # replaces arrays). It is read from host views on the host, from the framework's
    # metadata elsewhere (a view there would be a copy; see parity._aliasing).
    in_place = dst_adapter.loads_in_place
    on_host = dst_adapter.device(dst) == "cpu"
    views = {key: dst_adapter.read_only(t) for key, t in dst_live.items()} if in_place and on_host else {}
    layouts = (
        {key: dst_adapter.memory_layout(t) for key, t in dst_live.items()} if in_place and not on_host else {}
    )
    try:
        check_state(layout, state, what=what, check_dtype=True)
    except StateMismatchError as error:
        problems = error.problems + problems
    problems += aliasing_problems(dst_live, views, state, layouts)
    if problems:
        raise StateMismatchError(what, problems)
    # The source in memory the destination is about to write (modules shared by both
    # models) would be read after an earlier key overwrote it: those arrays are copied.
    # Off the host nothing is found, nor needed: a source view is host memory or a copy.
    for key in shared_with(views, state):
        state[key] = np.array(state[key], copy=True)
    dst_adapter.load_state(dst, state, what=what)


def checkpoint_format(path: str | os.PathLike) -> Adapter:
    """The adapter whose file format ``path``'s suffix names: ``.lcd`` (Lucid),
    ``.pt``/``.pth`` (torch); ``ValueError`` for anything else."""
    suffix = Path(path).suffix.lower()
    for adapter in ADAPTERS:
        if suffix in adapter.suffixes:
            return adapter
    valid = ", ".join(f"{s} ({a.name})" for a in ADAPTERS for s in a.suffixes)
    raise ValueError(f"{os.fspath(path)}: unknown checkpoint suffix {suffix!r}; valid: {valid}")


def _check_file_state(state: Mapping[object, object], what: str) -> dict[str, np.ndarray]:
    """Every key a string, every value a float32/float64 array: else every problem, at once."""
    problems = []
    for key, value in state.items():
        if not isinstance(key, str):
            problems.append(f"{key!r}: key is a {type(key).__name__}, expected a str")
        elif isinstance(value, UnreadableTensor):
            problems.append(f"{key}: {value.why}")
        elif not isinstance(value, np.ndarray):
            problems.append(f"{key}: a {type(value).__name__}, expected an array")
        elif value.dtype not in TRANSFER_DTYPES:
            problems.append(f"{key}: dtype {value.dtype}; supported: float32, float64")
    if not state:
        problems.append("no tensors at all")
    if problems:
        raise StateMismatchError(what, problems)
    return dict(state)


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a state dict from a ``.lcd`` (``lucid.save``; a pickle, so trusted files only)
    or ``.pt``/``.pth`` file (``torch.load(weights_only=True)``; ``num_batches_tracked``
    dropped) as numpy arrays, checked: string keys, float32/float64 arrays."""
    return _read_checkpoint(path)[0]


def _read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], list[str]]:
    """``load_checkpoint_file``, and the counter keys (``COUNTER_SUFFIX``) it left out."""
    adapter = checkpoint_format(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{os.fspath(path)}: no such checkpoint file")
    try:
        content = adapter.load_file(path)
    except (ValueError, OSError):  # the adapter's own verdict, or the file system's
        raise
    except Exception as error:
        # A tensor numpy cannot hold (bfloat16), a pickle naming a module or class that is
        # not installed, or a corrupt file (a pickle frame too long to exist, a truncated
        # archive: OverflowError, MemoryError, IndexError...): unusable input, not a bug.
        raise ValueError(
            f"{os.fspath(path)}: not a state dict of float32/float64 arrays ({type(error).__name__}: {error})"
        ) from error
    counters = [key for key in content if isinstance(key, str) and key.endswith(COUNTER_SUFFIX)]
    state = {key: value for key, value in content.items() if key not in counters}
    return _check_file_state(state, f"reading {os.fspath(path)}"), counters


def _write_atomically(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Whole or not at all, with an ordinary file's mode (see ``parity._files``)."""
    adapter = checkpoint_format(path)
    # The temporary file has the target's suffix: ``lucid.save`` picks its format from it.
    write_atomically(path, lambda tmp: adapter.save_file(state, tmp))


def save_checkpoint(model: object, path: str | os.PathLike) -> None:
    """Write ``model``'s parameters and buffers to ``path`` in the format its suffix names
    (``.lcd`` or ``.pt``/``.pth``), whatever the model's framework. A model with state a
    file of tensors cannot hold (a dtype other than float32/float64, torch's extra state) is
    refused, every such key listed, and nothing is written."""
    adapter = adapter_for(model)
    live = adapter.tensors(model)
    odd = _dtype_problems(_dtype_names(adapter, live), "model")
    odd |= {key: f"{key}: {why}" for key, why in adapter.unreadable(live).items() if key not in odd}
    # What a file of tensors cannot hold (torch's extra state) is named, not dropped unsaid.
    carried_by = "torch.save(model.state_dict()) does"
    odd |= {
        key: f"{key}: {what}, which a checkpoint of tensors does not carry ({carried_by})"
        for key, what in adapter.untransferable(model).items()
    }
    problems = list(odd.values())
    if problems:
        raise StateMismatchError(f"saving {_describe(model, adapter)} to {os.fspath(path)}", problems)
    _write_atomically(adapter.state(model), path)


def convert_checkpoint(src_path: str | os.PathLike, dst_path: str | os.PathLike) -> list[str]:
    """Convert a checkpoint file between ``.lcd`` and ``.pt``/``.pth`` (either way), with the
    checks of ``load_checkpoint_file``; the destination appears whole or not at all.
    Returns the keys left out: torch's ``num_batches_tracked`` counters (``COUNTER_SUFFIX``)."""
    checkpoint_format(dst_path)  # a bad destination suffix fails before reading anything
    if Path(src_path).resolve() == Path(dst_path).resolve():
        raise ValueError(f"{os.fspath(src_path)}: source and destination are the same file")
    state, counters = _read_checkpoint(src_path)
    _write_atomically(state, dst_path)
    return counters
