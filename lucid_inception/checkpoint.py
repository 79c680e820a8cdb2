"""Loading state dicts into the corrected Lucid models: strict, checked, atomic.

Upstream Lucid's ``load_state_dict`` checks keys only: a tensor of the wrong shape is
stored as is and fails (or worse, broadcasts) at the first forward. Here every key, shape
and dtype is checked first; values are copied and cast to the model's dtype (upstream
checkpoints hold float64 BatchNorm buffers); on any problem nothing changes and the error
names every offending key.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping

import lucid.nn as lnn
import numpy as np

from lucid_inception.frameworks.lucid_adapter import LucidAdapter
from lucid_inception.frameworks.state import StateMismatchError

__all__ = ["load_checkpoint"]

# The Inception-v4 B blocks are conv.6 .. conv.12 (stem, 4 x A and Reduction-A come
# first); upstream starts their long branch at 64 channels instead of Fig. 5's 192:
# branch4.0 is the 1x1, branch4.1 the first 1x7.
_UPSTREAM_V4_B = re.compile(r"^conv\.(6|7|8|9|10|11|12)\.branch4\.[01]\.")


def _upstream_hint(key: str, got: tuple[int, ...], want: tuple[int, ...]) -> str | None:
    if _UPSTREAM_V4_B.match(key) and 64 in got and 192 in want:
        return (
            "an upstream lucid-dl inception_v4 tensor: upstream's B-block long branch "
            "starts with a 1x1 to 64 channels, Fig. 5's with 192"
        )
    return None


# The first line of the error when the values are torch tensors (a torch twin's
# ``state_dict()``): every key would otherwise only read "expected a numpy array".
_TORCH_VALUES_HINT = (
    "the values are torch tensors (a torch twin's state_dict()?), and a Lucid model loads numpy "
    "arrays: copy a twin's weights with parity.transfer(twin, model), or convert a .pt file "
    "with python -m parity convert model.pt model.lcd"
)


def _holds_torch_tensors(state_dict: object) -> bool:
    """Whether any value is a torch tensor; torch is not imported for it (with torch not
    imported, no value can be one)."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(state_dict, Mapping):
        return False
    return any(isinstance(value, torch.Tensor) for value in state_dict.values())


def load_checkpoint(model: lnn.Module, state_dict: Mapping[str, np.ndarray]) -> None:
    """Load ``state_dict`` (e.g. ``lucid.load(path)`` or an upstream model's
    ``state_dict()``) into ``model``, casting values to the model's dtypes."""
    if not isinstance(model, lnn.Module):  # a torch twin fails deep in numpy otherwise
        raise TypeError(
            f"load_checkpoint loads Lucid models, got a {type(model).__module__}.{type(model).__name__}; "
            "for a torch twin use its load_state_dict or parity.transfer"
        )
    what = f"loading a state dict into {type(model).__name__}"
    try:
        LucidAdapter.load_state(model, state_dict, cast=True, what=what, hint=_upstream_hint)
    except StateMismatchError as error:
        if not _holds_torch_tensors(state_dict):
            raise
        raise StateMismatchError(f"{_TORCH_VALUES_HINT}\n{what}", error.problems) from None
