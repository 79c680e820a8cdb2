"""Upstream lucid-dl 2.9.0 against the corrected port, on shared weights.

Both sides are Lucid models with the same state-dict keys. The port's BatchNorms are
randomised (calibrated), the port's state is transferred into the upstream model (whose
fresh BatchNorm buffers are float64: it is cast to the port's dtype first), and the two
are compared layer by layer. Where the shapes allow it the whole model is compared
(Inception-ResNet-v1/-v2); Inception-v4's B blocks differ in shape (upstream's 64-channel
long branch), so for it the stems (``conv.0``) are compared as models.

The layer-by-layer report is complemented by *call counts*: a module that runs a
different number of times on the two sides is named with both counts. That is how
upstream bug 1 shows itself precisely: upstream's stem calls ``branch2_left`` twice and
never calls ``branch2_right``.

Upstream models come from ``lucid_inception.upstream.build_upstream`` (upstream's own
factories, undecorated: nothing is written to site-packages).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

import lucid_inception
from lucid_inception.frameworks import adapter_for, capture_outputs
from lucid_inception.upstream import build_upstream, upstream_version
from parity.comparison import compare
from parity.report import module_label
from parity.signal import prepare_signal, seeded_input, verify_equal_state
from parity.weights import transfer

__all__ = [
    "UPSTREAM_SCOPE",
    "CallDifference",
    "UpstreamResult",
    "build_upstream",
    "call_counts",
    "compare_upstream",
]

# What is compared per model: the whole model, or the named sub-module (a prefix).
UPSTREAM_SCOPE: dict[str, str] = {
    "inception_v4": "conv.0",  # the stem: the B blocks' long branch differs in shape
    "inception_resnet_v1": "",
    "inception_resnet_v2": "",
}


def call_counts(model: object, x: np.ndarray) -> Counter:
    """How many times each named module runs in one eval-mode forward of ``x``."""
    adapter = adapter_for(model)
    counts: Counter = Counter()
    modes = adapter.training_modes(model)
    try:
        adapter.set_training(model, False)
        with adapter.no_grad(), capture_outputs(model, lambda name, _array: counts.update([name])):
            model(adapter.tensor(x, device=adapter.device(model)))
    finally:
        adapter.restore_training_modes(model, modes)
    for name, _ in adapter.named_modules(model):
        counts.setdefault(name, 0)
    return counts


@dataclass(frozen=True)
class CallDifference:
    """A module that runs ``port`` times in the port and ``upstream`` times upstream."""

    module: str
    port: int
    upstream: int

    def describe(self) -> str:
        if self.upstream == 0 and self.module.endswith("branch2_right"):
            return (
                f"{self.module}: runs in the port ({self.port}x), never upstream "
                "(upstream bug 1: the stem concatenates branch2_left twice)"
            )
        if self.upstream == 0:
            return f"{self.module}: runs in the port ({self.port}x), never upstream"
        if self.port == 0:
            return f"{self.module}: runs upstream ({self.upstream}x), never in the port"
        return f"{self.module}: runs {self.upstream}x upstream, {self.port}x in the port"


def _call_differences(
    port: Counter, upstream: Counter, order: list[str], prefix: str
) -> list[CallDifference]:
    """Modules whose call counts differ, in the port's module order, without the children
    of a listed module that differ in the same way (``branch2_right`` stands for its
    eleven sub-modules)."""
    listed: list[CallDifference] = []
    for name in order:
        p, u = port.get(name, 0), upstream.get(name, 0)
        if p == u:
            continue
        full = f"{prefix}.{name}" if prefix and name else (prefix or name)
        parent = next((d for d in listed if full.startswith(d.module + ".")), None)
        if parent is not None and (parent.port, parent.upstream) == (p, u):
            continue
        listed.append(CallDifference(full, p, u))
    return listed


@dataclass
class UpstreamResult:
    """Upstream against the port: ``report`` and ``calls`` with the port as built;
    ``unscaled_*`` (Inception-ResNets) with the port's residual scale set to 1.0, i.e. with
    upstream bug 3 undone, which isolates every other difference."""

    model: str
    scope: str  # "" for the whole model, else the compared sub-module
    report: object  # parity.Report, a = upstream, b = port; names relative to ``scope``
    calls: list[CallDifference]
    lucid_version: str
    unscaled_report: object | None = None
    unscaled_calls: list[CallDifference] | None = None
    notes: list[str] = field(default_factory=list)

    def qualify(self, module: str | None) -> str | None:
        """A module name of the report, made absolute in the full model."""
        if module is None or not self.scope:
            return module
        return f"{self.scope}.{module}" if module else self.scope

    @property
    def first_divergence(self) -> str | None:
        return self.qualify(self.report.first_divergence)

    @property
    def location(self) -> str | None:
        """The most precise place the two differ: a module that runs on one side only,
        else the first that runs a different number of times, else the first divergence."""
        never = [d for d in self.calls if 0 in (d.port, d.upstream)]
        chosen = never or self.calls
        return chosen[0].module if chosen else self.first_divergence

    @property
    def agrees(self) -> bool:
        return bool(self.report.ok) and not self.calls

    def summary(self) -> str:
        scope = f"stem ({self.scope})" if self.scope else "whole model"
        head = f"{self.model} [{scope}]: upstream lucid-dl {self.lucid_version}"
        if self.agrees:
            return f"{head} agrees with the port"
        lines = [
            f"{head} differs from the port",
            f"  where: {self.location}",
            f"  first divergence (layer by layer): {_divergence(self.report, self.first_divergence)}",
        ]
        lines += [f"  call count: {d.describe()}" for d in self.calls]
        if self.unscaled_report is not None:
            if self.unscaled_report.ok and not self.unscaled_calls:
                verdict = "agrees: the residual scale (upstream bug 3) is the only difference"
            else:
                first = self.qualify(self.unscaled_report.first_divergence)
                verdict = f"still differs, first at {_divergence(self.unscaled_report, first)}"
            lines.append(f"  with the port's residual scale set to 1.0 (upstream bug 3 undone): {verdict}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        unscaled = None
        if self.unscaled_report is not None:
            unscaled = {
                "agrees": bool(self.unscaled_report.ok) and not self.unscaled_calls,
                "first_divergence": self.qualify(self.unscaled_report.first_divergence),
                "call_differences": [asdict(d) for d in self.unscaled_calls or []],
                "report": self.unscaled_report.to_dict(),
            }
        return {
            "model": self.model,
            "scope": self.scope or "<whole model>",
            "lucid_version": self.lucid_version,
            "agrees": self.agrees,
            "location": self.location,
            "first_divergence": self.first_divergence,
            "call_differences": [asdict(d) for d in self.calls],
            "notes": self.notes,
            "report": self.report.to_dict(),
            "unscaled": unscaled,
        }


def _divergence(report: object, qualified: str | None) -> str:
    """The first divergence for people; a layer whose settings differ says which (a
    dropout rate, upstream bug 2, is seen by no eval-mode output)."""
    failures = report.failures
    label = module_label(qualified)
    if failures and failures[0].kind == "config":
        return f"{label} (settings: {failures[0].note})"
    return label


def _submodule(model: object, name: str) -> object:
    if not name:
        return model
    modules = dict(adapter_for(model).named_modules(model))
    if name not in modules:
        raise ValueError(f"{type(model).__name__} has no module {name!r}")
    return modules[name]


def _compare(port: object, upstream: object, x: np.ndarray, dtype: str, scope: str) -> tuple:
    order = [n for n, _ in adapter_for(port).named_modules(port)]
    calls = _call_differences(call_counts(port, x), call_counts(upstream, x), order, scope)
    return compare(upstream, port, x, dtype=dtype), calls


def compare_upstream(
    name: str,
    *,
    size: int = 299,
    batch: int = 1,
    seed: int = 0,
    dtype: str = "float32",
    isolate: bool = True,
) -> UpstreamResult:
    """Compare upstream ``name`` with the port on the port's (randomised) weights; with
    ``isolate`` (Inception-ResNets) also with the port's residual scale set to 1.0."""
    if name not in UPSTREAM_SCOPE:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(UPSTREAM_SCOPE)}")
    scope = UPSTREAM_SCOPE[name]
    port_model = lucid_inception.build(name, "lucid")
    x = seeded_input(batch, size, seed)
    prepare_signal(port_model, x, seed=seed)
    upstream_model = build_upstream(name)
    port, upstream = _submodule(port_model, scope), _submodule(upstream_model, scope)
    adapter = adapter_for(upstream)
    # Upstream's fresh BatchNorm buffers are float64; transfer is strict about dtypes.
    adapter.cast(upstream, np.dtype(next(iter(adapter.dtypes(port).values()))))
    transfer(port, upstream)
    problems = verify_equal_state(port, upstream)
    if problems:
        raise RuntimeError("transfer left the models different:\n" + "\n".join(problems))
    report, calls = _compare(port, upstream, x, dtype, scope)
    result = UpstreamResult(name, scope, report, calls, upstream_version())
    if isolate and name != "inception_v4":
        unscaled = lucid_inception.build(name, "lucid", scale=1.0)
        transfer(port_model, unscaled)
        result.unscaled_report, result.unscaled_calls = _compare(unscaled, upstream_model, x, dtype, scope)
    if scope:
        result.notes.append(
            f"only {scope} is compared: the rest of upstream {name} differs in shape "
            "(upstream bug 5: the B blocks' long branch starts at 64 channels, Fig. 5 at 192)"
        )
    return result
