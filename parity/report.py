"""What ``compare`` returns: one ``Row`` per compared quantity, in execution order.

Kinds of row: ``state`` (a module's parameters and buffers before any forward), ``config``
(a layer's settings: kernel, stride, padding, eps, momentum, dropout rate, ...; placed where
the layer first ran),
``output`` (a module's output, call by call), ``input`` (with ``local``: the input side b's
module computed for itself, before side a's replaced it), ``error`` (an exception in a forward or a backward),
``bn_batch_stats``, ``bn_train_output`` and ``bn_running_update`` (train step), ``input_grad`` (backward: the
gradient a module call sends to its input; the root's is the model input's) and
``param_grad`` (backward). ``first_divergence`` names the module of the first failing row.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

__all__ = ["KINDS", "Report", "Row", "module_label"]

KINDS: tuple[str, ...] = (
    "state",
    "config",
    "output",
    "input",
    "input_grad",
    "param_grad",
    "bn_batch_stats",
    "bn_train_output",
    "bn_running_update",
    "error",
)


@dataclass(frozen=True)
class Row:
    """One comparison: ``max_rel`` is ``max_abs`` over the larger of the two sides' max
    absolute value (BN rows: over the BN input's scale, see ``compare``); it passes when
    ``max_rel <= tol``. ``shape_a``/``shape_b`` are ``None`` where a side has no value.
    ``repeat_of`` names the module whose row this one repeats: on both sides the output
    is, unchanged, that module's output tensor (a container returning its last child's)."""

    module: str
    kind: str
    shape_a: tuple | None
    shape_b: tuple | None
    max_abs: float
    max_rel: float
    tol: float
    ok: bool
    note: str = ""
    repeat_of: str | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["shape_a"] = None if self.shape_a is None else list(self.shape_a)
        out["shape_b"] = None if self.shape_b is None else list(self.shape_b)
        for key in ("max_abs", "max_rel", "tol"):
            out[key] = _json_float(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Row:
        values = dict(data)
        for key in ("shape_a", "shape_b"):
            values[key] = None if values[key] is None else _tuples(values[key])
        for key in ("max_abs", "max_rel", "tol"):
            values[key] = float(values[key])
        return cls(**values)


def _tuples(shape: list) -> tuple:
    """A shape read from JSON: lists back to tuples, nested ones too (a structured output's
    row holds one shape per array)."""
    return tuple(_tuples(part) if isinstance(part, list) else part for part in shape)


def module_label(name: str | None) -> str:
    """A module name for people: the root (``""``) as ``<model>``, no module (``None``) as ``-``."""
    if name is None:
        return "-"
    return name or "<model>"


def _json_float(value: float) -> float | str:
    """Non-finite floats as the strings ``float()`` reads back, so that the dict survives
    ``json.dumps(..., allow_nan=False)``."""
    return value if math.isfinite(value) else str(value)


def _overshoot(row: Row) -> float:
    """How far a row is over (or under) its tolerance; NaN counts as infinitely far."""
    if math.isnan(row.max_rel):
        return math.inf
    if row.tol > 0:
        return row.max_rel / row.tol
    return math.inf if row.max_rel > 0 else 0.0


@dataclass
class Report:
    """The outcome of ``compare(a, b, x)``; ``ok`` is true when every row passed."""

    ok: bool
    first_divergence: str | None
    rows: list[Row]
    dtype: str
    devices: tuple[str, str]
    frameworks: tuple[str, str]
    model_a: str
    model_b: str
    # Added beyond the team contract: the options the comparison ran with.
    backward: bool = False
    train_step: bool = False
    local: bool = False  # each module compared on the same input (teacher forcing)
    grad_seed: int = 0
    input_shape: tuple[int, ...] = field(default_factory=tuple)

    @property
    def failures(self) -> list[Row]:
        return [row for row in self.rows if not row.ok]

    def worst(self, n: int = 5, kind: str | None = None) -> list[Row]:
        """The ``n`` rows furthest over (or closest to) their tolerance, failures first;
        ``kind`` restricts to one kind of row. A row that repeats another's numbers
        (``repeat_of``) is left out: the row it repeats stands for both."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown row kind {kind!r}; valid: {', '.join(KINDS)}")
        rows = [row for row in self.rows if (kind is None or row.kind == kind) and row.repeat_of is None]
        rows.sort(key=lambda row: (row.ok, -_overshoot(row), -_finite_or_inf(row.max_rel)))
        return rows[:n]

    def to_dict(self) -> dict:
        """JSON-ready (non-finite numbers as strings, tuples as lists)."""
        return {
            "ok": self.ok,
            "first_divergence": self.first_divergence,
            "dtype": self.dtype,
            "devices": list(self.devices),
            "frameworks": list(self.frameworks),
            "model_a": self.model_a,
            "model_b": self.model_b,
            "backward": self.backward,
            "train_step": self.train_step,
            "local": self.local,
            "grad_seed": self.grad_seed,
            "input_shape": list(self.input_shape),
            "rows": [row.to_dict() for row in self.rows],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        return cls(
            ok=data["ok"],
            first_divergence=data["first_divergence"],
            rows=[Row.from_dict(row) for row in data["rows"]],
            dtype=data["dtype"],
            devices=tuple(data["devices"]),
            frameworks=tuple(data["frameworks"]),
            model_a=data["model_a"],
            model_b=data["model_b"],
            backward=data.get("backward", False),
            train_step=data.get("train_step", False),
            local=data.get("local", False),
            grad_seed=data.get("grad_seed", 0),
            input_shape=tuple(data.get("input_shape", ())),
        )


def _finite_or_inf(value: float) -> float:
    return math.inf if math.isnan(value) else value
