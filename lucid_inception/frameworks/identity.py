"""Which tensor an output is, and whether it changed since: for skipping a comparison that
would repeat one already made (a container returns its last child's output tensor)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TensorState"]


@dataclass(frozen=True, eq=False)
class TensorState:
    """A tensor object and the version of its contents when seen.

    ``version`` is torch's ``Tensor._version`` (every in-place op on the tensor or a view of
    it bumps it; a write through ``.data`` or a numpy view does not, and is not seen). Lucid keeps
    no such counter: there it is the identity of the tensor's data array, which Lucid's
    operations replace rather than modify; a change written straight into that array
    (``t.data[...] = v``) is not seen. Holding ``tensor`` keeps its ``id`` from being reused.
    """

    tensor: object
    version: int

    def same_as(self, other: TensorState | None) -> bool:
        return other is not None and self.tensor is other.tensor and self.version == other.version
