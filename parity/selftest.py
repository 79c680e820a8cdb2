"""Does the harness catch what it claims to? Plant known faults, demand each is found
where it was planted.

Each ``Fault`` is a record (ONNX backend-test style): an id, the model, the module it is
planted in, what it imitates, and a ``plant`` that monkeypatches one torch twin *instance*
after a clean transfer (attributes, a shadowed ``forward``, a gradient hook, a changed
tensor; the source files are never touched). A fault counts as found only when the
comparison fails AND its first divergence is the planted module or inside it: "caught
somewhere else" is a harness failure, and so is a fault nothing catches. A fault that
changes what the model computes must also be found there by the numbers alone (the rows
other than ``config``, which compare layer settings): a settings check that names the
planted layer must not stand in for outputs, gradients or statistics that no longer catch
it. A ``static`` fault (a dropout rate) changes nothing an eval-mode compare computes: only
its ``config`` row can find it, and must.

Before any fault, each model's clean pair must pass (the control): otherwise every fault
would be "caught" for free.

Spatial faults sit in blocks whose maps are larger than 1x1 at the 75x75 self-test size
(the C blocks are 1x1 there: a (1,3) kernel and its transpose see one tap alike).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

import lucid_inception
from lucid_inception.frameworks import adapter_for
from parity.comparison import compare
from parity.signal import prepare_signal, seeded_input, train_step_batch
from parity.weights import transfer

__all__ = ["FAULTS", "Fault", "FaultResult", "SelftestReport", "run_selftest"]

Plant = Callable[[object], None]


@dataclass(frozen=True)
class Fault:
    """A fault planted in the twin of ``model`` at module ``where``."""

    id: str
    model: str
    where: str
    what: str
    plant: Plant
    backward: bool = False
    train_step: bool = False
    min_batch: int = 1  # a fault that mixes the samples of a batch is invisible in a batch of one
    static: bool = False  # seen only in the layer's settings (``config`` rows), by no computed value

    @property
    def needs(self) -> str:
        return "backward" if self.backward else ("train-step" if self.train_step else "forward")

    @property
    def dtype(self) -> str:
        # float32 gradients are dominated by ReLU / max-pool decision flips (parity.tolerances).
        return "float64" if self.backward else "float32"

    def batch(self, size: int, batch: int) -> int:
        batch = max(batch, self.min_batch)
        return max(batch, train_step_batch(size)) if self.train_step else batch


def _module(model: object, name: str) -> object:
    modules = dict(adapter_for(model).named_modules(model))
    if name not in modules:
        raise KeyError(f"{type(model).__name__} has no module {name!r} (fault catalogue out of date?)")
    return modules[name]


def _set(name: str, **attributes: object) -> Plant:
    def plant(twin: object) -> None:
        module = _module(twin, name)
        for attribute, value in attributes.items():
            if not hasattr(module, attribute):
                raise AttributeError(f"{name} ({type(module).__name__}) has no attribute {attribute!r}")
            setattr(module, attribute, value)

    return plant


def _shadow(name: str, make: Callable[[object, Callable], Callable]) -> Plant:
    """Shadow the instance's ``forward`` with ``make(module, original_forward)``."""

    def plant(twin: object) -> None:
        module = _module(twin, name)
        module.forward = make(module, module.forward)

    return plant


def _scale_tensor(key: str, factor: float) -> Plant:
    """Change one tensor after the transfer, through the adapter."""

    def plant(twin: object) -> None:
        adapter = adapter_for(twin)
        state = adapter.state(twin)
        state[key] = (state[key] * factor).astype(state[key].dtype)
        adapter.load_state(twin, state)

    return plant


def _swap_channels(first: int, second: int) -> Callable[[object, Callable], Callable]:
    """Output channels [0, first) and [first, first + second) trade places: the concat of
    branch 1 and branch 2 in the wrong order."""

    def make(_module: object, original: Callable) -> Callable:
        def forward(x):
            y = original(x)
            order = (
                list(range(first, first + second))
                + list(range(first))
                + list(range(first + second, y.shape[1]))
            )
            return y[:, order]

        return forward

    return make


def _identity(_module: object, _original: Callable) -> Callable:
    return lambda x: x


def _dropout_at_inference(module: object, _original: Callable) -> Callable:
    keep = 1.0 - float(module.p)

    def forward(x):
        # Inverted dropout whatever the mode: what a dropout left in train mode does.
        return x * x.new_empty(x.shape).bernoulli_(keep) / keep

    return forward


def _batch_statistics(module: object, _original: Callable) -> Callable:
    def forward(x):
        # BatchNorm normalising with the batch's statistics at inference (left in train mode).
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = x.var(dim=(0, 2, 3), keepdim=True, unbiased=False)
        shape = (1, -1, 1, 1)
        return (x - mean) / (var + module.eps).sqrt() * module.weight.reshape(shape) + module.bias.reshape(
            shape
        )

    return forward


def _train_unbiased_variance(module: object, original: Callable) -> Callable:
    def forward(x):
        y = original(x)  # the running statistics updated as they should be
        if not module.training:
            return y
        # In train mode, normalised with the unbiased batch variance (torch's running_var
        # convention carried over to the output): no eval-mode value and no statistic shows it.
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = x.var(dim=(0, 2, 3), keepdim=True, unbiased=True)
        shape = (1, -1, 1, 1)
        normalised = (x - mean) / (var + module.eps).sqrt()
        return normalised * module.weight.reshape(shape) + module.bias.reshape(shape)

    return forward


def _mix_samples(_module: object, original: Callable) -> Callable:
    def forward(x):
        # Every sample gets the batch's mean (a reduction over the wrong axis, a flatten in
        # the wrong order): exact in a batch of one.
        y = original(x)
        return y.mean(dim=0, keepdim=True).expand_as(y)

    return forward


def _relu_after(_module: object, original: Callable) -> Callable:
    return lambda x: original(x).clamp(min=0)


def _transpose_kernel(name: str) -> Plant:
    """A (1, 7) conv becomes (7, 1): the kernel transposed, padding swapped to match."""

    def plant(twin: object) -> None:
        conv = _module(twin, name)
        kh, kw = conv.kernel_size
        conv.weight.data = conv.weight.data.transpose(2, 3).contiguous()
        conv.kernel_size = (kw, kh)
        conv.padding = (conv.padding[1], conv.padding[0])

    return plant


def _computed_transposed(conv: object, _original: Callable) -> Callable:
    """A (7, 1) conv computed as (1, 7) from the right weights (a wrong permute when porting
    a kernel), padding swapped to match: the state is untouched, only outputs can tell."""
    import torch.nn.functional as F

    def forward(x):
        padding = (conv.padding[1], conv.padding[0])
        weight = conv.weight.transpose(2, 3)
        return F.conv2d(x, weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups)

    return forward


def _drop_bias(name: str) -> Plant:
    def plant(twin: object) -> None:
        _module(twin, name).bias = None  # a conv built with bias=False (the timm convention)

    return plant


def _bias_gradient(name: str, factor: float) -> Plant:
    def plant(twin: object) -> None:
        _module(twin, name).bias.register_hook(lambda grad: grad * factor)

    return plant


def _input_gradient_scaled(factor: float) -> Callable[[object, Callable], Callable]:
    """A module whose backward sends ``factor`` times the right gradient to its input (a
    wrong pooling backward); its forward, and the gradient it receives, are untouched."""

    def make(_module: object, original: Callable) -> Callable:
        def forward(x):
            x = x.view_as(x)
            x.register_hook(lambda grad: grad * factor)
            return original(x)

        return forward

    return make


def _stem_duplicated_branch(stem: str) -> Plant:
    """Upstream bug 1: ``concat([branch2_left(x), branch2_left(x)])``; ``branch2_right``
    never runs (its call returns ``branch2_left``'s output)."""

    def plant(twin: object) -> None:
        left, right = _module(twin, f"{stem}.branch2_left"), _module(twin, f"{stem}.branch2_right")
        right.forward = lambda x: left(x)

    return plant


V4, V1, V2 = "inception_v4", "inception_resnet_v1", "inception_resnet_v2"

FAULTS: tuple[Fault, ...] = (
    Fault(
        "avgpool-stride",
        V4,
        "conv.1.branch1.0",
        "AvgPool2d(3, padding=1) without stride=1: torch defaults the stride to the kernel size",
        _set("conv.1.branch1.0", stride=3),
    ),
    Fault(
        "avgpool-count-include-pad",
        V4,
        "conv.2.branch1.0",
        "average pool excluding the padding from the divisor (Lucid always counts it)",
        _set("conv.2.branch1.0", count_include_pad=False),
    ),
    Fault(
        "concat-order",
        V4,
        "conv.3",
        "Inception-A concat with branches 1 and 2 swapped (96 + 96 channels)",
        _shadow("conv.3", _swap_channels(96, 96)),
    ),
    Fault(
        "padding-off-by-one",
        V4,
        "conv.7.branch3.1.conv",
        "a (1,7) conv padded (0,2) instead of (0,3)",
        _set("conv.7.branch3.1.conv", padding=(0, 2)),
    ),
    Fault(
        "bn-batch-statistics",
        V4,
        "conv.13.branch2.0.bn",
        "a BatchNorm normalising with batch statistics at inference (left in train mode)",
        _shadow("conv.13.branch2.0.bn", _batch_statistics),
    ),
    Fault(
        "missing-relu",
        V1,
        "stem.conv.4.relu",
        "a ConvBNReLU2d without its ReLU",
        _shadow("stem.conv.4.relu", _identity),
    ),
    Fault(
        "weight-after-transfer",
        V1,
        "conv.12.branch2.1.conv",
        "a conv weight changed by 1% after the transfer",
        _scale_tensor("conv.12.branch2.1.conv.weight", 1.01),
    ),
    Fault(
        "relu-on-linear-conv",
        V1,
        "conv.17.conv_linear",
        "a ReLU after the residual block's linear 1x1 (Fig. 10-13 draw it linear)",
        _shadow("conv.17.conv_linear", _relu_after),
    ),
    Fault(
        "bn-momentum",
        V1,
        "conv.3.branch2.0.bn",
        "BatchNorm momentum 0.2 instead of Lucid's 0.1 (shows in the running-stat update)",
        _set("conv.3.branch2.0.bn", momentum=0.2),
        train_step=True,
    ),
    Fault(
        "bn-train-variance",
        V1,
        "conv.21.branch1.bn",
        "the last block's BatchNorm normalising with the unbiased batch variance in train mode "
        "(no later BatchNorm reads its output)",
        _shadow("conv.21.branch1.bn", _train_unbiased_variance),
        train_step=True,
    ),
    Fault(
        "stem-duplicated-branch",
        V2,
        "stem.branch2_right",
        "upstream bug 1: the stem concatenates branch2_left twice, branch2_right never runs",
        _stem_duplicated_branch("stem"),
    ),
    Fault(
        "residual-scale",
        V2,
        "conv.8",
        "upstream bug 3: a residual block without scaling (1.0 instead of 0.2)",
        _set("conv.8", scale=1.0),
    ),
    Fault(
        "bn-eps",
        V2,
        "conv.7.branch2.1.bn",
        "BatchNorm eps 1e-3 (the TF default) instead of 1e-5",
        _set("conv.7.branch2.1.bn", eps=1e-3),
    ),
    Fault(
        "kernel-transposed",
        V2,
        "conv.9.branch2.1.conv",
        "a (1,7) kernel built as (7,1) (weights transposed, padding swapped: the state rows see the shape)",
        _transpose_kernel("conv.9.branch2.1.conv"),
    ),
    Fault(
        "kernel-computed-transposed",
        V2,
        "conv.10.branch2.2.conv",
        "a (7,1) kernel applied as (1,7): right weights, transposed view in the forward",
        _shadow("conv.10.branch2.2.conv", _computed_transposed),
    ),
    Fault(
        "conv-bias-missing",
        V2,
        "conv.5.branch3.0.conv",
        "a conv built without bias (timm's convention; Lucid's ConvBNReLU2d has one)",
        _drop_bias("conv.5.branch3.0.conv"),
    ),
    Fault(
        "dropout-at-inference",
        V2,
        "dropout",
        "the head's dropout active at inference (left in train mode)",
        _shadow("dropout", _dropout_at_inference),
    ),
    Fault(
        "dropout-rate",
        V2,
        "dropout",
        "upstream bug 2: the head's Dropout(p=0.8) drops 80% (the paper keeps 80%: p=0.2)",
        _set("dropout", p=0.8),
        static=True,
    ),
    Fault(
        "samples-mixed",
        V2,
        "avgpool",
        "the global average pool averaging over the batch too (each sample gets the batch's mean)",
        _shadow("avgpool", _mix_samples),
        min_batch=2,
    ),
    Fault(
        "bias-gradient",
        V1,
        "conv.2.conv_linear",
        "a conv bias's gradient 10% too large in the backward (a wrong backward formula)",
        _bias_gradient("conv.2.conv_linear", 1.1),
        backward=True,
    ),
    Fault(
        "pool-gradient",
        V1,
        "conv.5.branch1",
        "a max-pool whose backward sends 10% too much gradient to its input (no parameters of its own)",
        _shadow("conv.5.branch1", _input_gradient_scaled(1.1)),
        backward=True,
    ),
)


@dataclass(frozen=True)
class FaultResult:
    fault: Fault
    caught: bool
    found: str | None  # the report's first divergence
    kind: str | None  # the kind of the first failing row
    seconds: float
    error: str | None = None  # the plant or compare itself failed
    found_by_values: str | None = None  # the first failing row's module, ``config`` rows left out
    value_kind: str | None = None  # and that row's kind

    def _inside(self, module: str | None) -> bool:
        where = self.fault.where
        return module is not None and (module == where or module.startswith(where + "."))

    @property
    def localized(self) -> bool:
        if not (self.caught and self._inside(self.found)):
            return False
        if self.fault.static:  # its settings row finds it, and nothing else fails
            return self.kind == "config" and self.found_by_values is None
        return self._inside(self.found_by_values)

    @property
    def ok(self) -> bool:
        return self.error is None and self.localized

    def to_dict(self) -> dict:
        return {
            "id": self.fault.id,
            "model": self.fault.model,
            "planted_in": self.fault.where,
            "what": self.fault.what,
            "needs": self.fault.needs,
            "dtype": self.fault.dtype,
            "caught": self.caught,
            "found": self.found,
            "localized": self.localized,
            "kind": self.kind,
            "found_by_values": self.found_by_values,
            "value_kind": self.value_kind,
            "seconds": round(self.seconds, 2),
            "error": self.error,
        }


@dataclass
class SelftestReport:
    controls: dict[str, str | None]  # "model/mode" -> None when the clean pair passed, else why not
    results: list[FaultResult]
    size: int
    seed: int
    local: bool = False

    @property
    def ok(self) -> bool:
        return all(v is None for v in self.controls.values()) and all(r.ok for r in self.results)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "size": self.size,
            "seed": self.seed,
            "local": self.local,
            "controls": self.controls,
            "faults": [r.to_dict() for r in self.results],
        }


def _first_failing_kind(report: object) -> str | None:
    failures = report.failures
    return failures[0].kind if failures else None


def _first_failing_value(report: object) -> tuple[str | None, str | None]:
    """The first divergence by the numbers alone (layer settings, ``config`` rows, left
    out): its module and the kind of its row."""
    row = next((row for row in report.failures if row.kind != "config"), None)
    return (None, None) if row is None else (row.module, row.kind)


class _Pair:
    """One model's randomised Lucid source and clean twin; each fault gets a deep copy."""

    def __init__(self, name: str, x: np.ndarray, seed: int) -> None:
        self.source = lucid_inception.build(name, "lucid")
        prepare_signal(self.source, x, seed=seed)
        self.twin = lucid_inception.build(name, "torch")
        transfer(self.source, self.twin)

    def compare(self, twin: object, x: np.ndarray, **modes: object) -> object:
        # compare() leaves both models exactly as it found them (train steps included).
        return compare(self.source, twin, x, **modes)


def _modes(fault: Fault, local: bool) -> dict[str, object]:
    # A backward needs side b's whole graph, which a local compare cuts: those faults run as given.
    return {
        "backward": fault.backward,
        "train_step": fault.train_step,
        "dtype": fault.dtype,
        "local": local and not fault.backward,
    }


def run_selftest(
    faults: Sequence[Fault] = FAULTS,
    *,
    size: int = 75,
    batch: int = 1,
    seed: int = 0,
    local: bool = False,
    progress: Callable[[str], None] | None = None,
) -> SelftestReport:
    """Plant each fault in a fresh copy of a clean twin and compare against the Lucid
    source (``local``: module by module on the same inputs, see ``parity.comparison``; faults
    that need a backward run as given); ``progress`` gets one line per step."""
    say = progress or (lambda _line: None)
    pairs: dict[str, _Pair] = {}
    controls: dict[str, str | None] = {}
    results: list[FaultResult] = []
    for fault in faults:
        if fault.model not in pairs:
            say(f"selftest: building {fault.model} ({size}x{size})")
            # Prepared on the biggest input this model's faults use (they share its first images).
            largest = max(f.batch(size, batch) for f in faults if f.model == fault.model)
            pairs[fault.model] = _Pair(fault.model, seeded_input(largest, size, seed), seed)
        pair = pairs[fault.model]
        x = seeded_input(fault.batch(size, batch), size, seed)
        control = f"{fault.model}/{fault.needs}"
        if fault.min_batch > batch:  # its clean pair is checked at that batch too
            control += f" at batch {fault.batch(size, batch)}"
        if control not in controls:
            say(f"selftest: control {control}")
            report = pair.compare(pair.twin, x, **_modes(fault, local))
            controls[control] = None if report.ok else f"clean pair fails at {report.first_divergence}"
        say(f"selftest: {fault.id} ({fault.model}, {fault.where})")
        start = time.perf_counter()
        twin = copy.deepcopy(pair.twin)
        try:
            fault.plant(twin)
            report = pair.compare(twin, x, **_modes(fault, local))
        except Exception as error:  # noqa: BLE001 (a harness that raises has not localised anything)
            results.append(
                FaultResult(
                    fault, False, None, None, time.perf_counter() - start, f"{type(error).__name__}: {error}"
                )
            )
            continue
        value_row = _first_failing_value(report)
        results.append(
            FaultResult(
                fault,
                not report.ok,
                report.first_divergence,
                _first_failing_kind(report),
                time.perf_counter() - start,
                found_by_values=value_row[0],
                value_kind=value_row[1],
            )
        )
    return SelftestReport(controls, results, size, seed, local)
