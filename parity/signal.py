"""A signal that cannot vanish: seeded BatchNorm statistics, knock-out liveness, and the
one-call ``check_pair``.

A parity check passes vacuously when a layer's output never reaches the logits: with
fresh BatchNorm statistics (mean 0, var 1) an untrained Inception-v4 shrinks its signal
at every layer, and a fault in front of a "dead" layer changes nothing measurable.
``randomize_batchnorm`` gives every BatchNorm seeded, non-trivial statistics *calibrated
to the activations it actually sees*, so the eval-mode network keeps an O(1) signal at
every depth; ``liveness`` then proves, block by block, that knocking the block out moves
the logits by far more than the comparison tolerance. A block that fails is named: a
fault there would be invisible.

Everything goes through the framework adapters (BatchNorms are found by
``adapter.is_batchnorm``, their inputs captured by ``capture_inputs``), so the same code
serves Lucid and torch models.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

import lucid_inception
from lucid_inception.frameworks import (
    LucidAdapter,
    TorchAdapter,
    adapter_for,
    capture_inputs,
    capture_outputs,
)
from parity.comparison import DeviceUnavailable, compare, unheld_dtype
from parity.report import _json_float
from parity.tolerances import TOLERANCES
from parity.weights import transfer

__all__ = [
    "BACKWARD_BATCH",
    "BATCH_ONE_GRADIENTS",
    "LIVENESS_FACTOR",
    "SIGNALS",
    "BlockLiveness",
    "LivenessReport",
    "ParityResult",
    "batchnorm_names",
    "calibration_batch",
    "last_map_side",
    "train_step_batch",
    "check_pair",
    "compares_locally",
    "default_batch",
    "device_skip_reason",
    "knockout",
    "knockout_blocks",
    "liveness",
    "prepare_signal",
    "randomize_batchnorm",
    "randomize_weights",
    "seeded_input",
    "verify_equal_state",
]

# How BatchNorm statistics are drawn (``prepare_signal``):
# - "random": mean ~ N(0, 0.2), var ~ U(0.5, 2), weight ~ U(0.5, 1.5), bias ~ N(0, 0.2),
#   whatever the activations' scale. Untrained Inception-v4 then shrinks its signal layer by
#   layer, but liveness still holds (every block moves the logits by >= 100 x tol).
# - "calibrated": the same draws in units of each channel's measured scale, so that every
#   layer has unit gain (Kaiming-like). A live signal through 60 plain layers also carries
#   rounding error: measured, float32 divergence grows ~1.5x per Inception-v4 block, to
#   ~55 x the float32 tolerance in the last block and ~6e-5 at the logits (299 px); the
#   ResNets stay near 1-1.4 x tol (their skips carry the signal). So it is compared locally
#   (``compare(..., local=True)``, each module on the same input), where every step stays
#   near 0.1 x tol (Inception-v4 at 75 px, both dtypes).
SIGNALS: tuple[str, ...] = ("random", "calibrated")

# A knocked-out block must move the logits by at least this many tolerances: a fault
# 100x smaller than a whole block's contribution still shows above the tolerance. Not
# 1000: measured on faithful pairs at 75 px in float32, seeds 0-11, Inception-v4's weakest
# knock-out (a stem branch) moves the logits by only 830-2720 x tol, so 1000 failed seeds 7,
# 9 and 10 ("invisible" blocks on a correct model); the ResNets' weakest move them by
# >= 7,500 x tol.
LIVENESS_FACTOR = 1e2

# The batch a gradient comparison runs at unless told otherwise. A gradient that must be
# summed over the batch (of any operand broadcast over it: a bias, a BatchNorm weight) is
# right at batch 1 however wrongly the sum is done: lucid-dl 2.9.0's broadcast gradients
# are wrong only at batch > 1 (docs/framework-ops.md, broadcast-gradient).
BACKWARD_BATCH = 2
BATCH_ONE_GRADIENTS = (
    "batch-1 gradients cannot show batch-reduction bugs (a gradient summed over the batch "
    "wrongly, like lucid-dl 2.9.0's broadcast gradients, is still right at batch 1)"
)


def default_batch(backward: bool) -> int:
    """The batch of a check whose batch was not given: ``BACKWARD_BATCH`` when gradients
    are compared, else 1."""
    return BACKWARD_BATCH if backward else 1


def batchnorm_names(model: object) -> list[str]:
    """Names of the BatchNorm modules of ``model``, in module order."""
    adapter = adapter_for(model)
    return [name for name, module in adapter.named_modules(model) if adapter.is_batchnorm(module)]


def _channel_stats(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance of an N x C x ... activation, in float64."""
    a = np.moveaxis(np.asarray(array, dtype=np.float64), 1, 0).reshape(array.shape[1], -1)
    return a.mean(axis=1), a.var(axis=1)


def _running_stats(mean: np.ndarray, var: np.ndarray, z: np.ndarray, f: np.ndarray) -> tuple:
    """Running statistics in units of the channel's measured scale ``s = sqrt(E[x^2])``:
    running_mean = z * s, running_var = f * s^2 (floored at a fraction of the layer's
    typical scale, for channels that are nearly zero)."""
    second = mean**2 + var
    second = np.maximum(second, 0.05 * float(np.median(second)) + 1e-12)
    return z * np.sqrt(second), f * second


def _calibrate(model: object, calibration: np.ndarray, draws: dict[str, tuple], dtypes: dict) -> None:
    """Set each BatchNorm's running statistics from its own input, in one eval-mode forward.

    A pre-hook sees each BatchNorm's input just before it runs and writes the statistics
    that input implies (perturbed by the pre-drawn ``draws``); the BatchNorm then runs with
    them, so every later layer is calibrated on what the finished eval-mode network really
    feeds it and perturbations never compound with depth (calibrating all layers from one
    train-mode forward lets them compound: measured, a BN output std of 1e4 deep in
    Inception-v4).
    """
    adapter = adapter_for(model)
    done: set[str] = set()

    def on_input(name: str, array: np.ndarray) -> None:
        if name in done:  # a BatchNorm run twice keeps its first calibration
            return
        done.add(name)
        mean, var = _running_stats(*_channel_stats(array), *draws[name])
        keys = (f"{name}.running_mean", f"{name}.running_var")
        adapter.restore(model, {k: v.astype(dtypes[k]) for k, v in zip(keys, (mean, var), strict=True)})

    modes = adapter.training_modes(model)
    try:
        adapter.set_training(model, False)
        with (
            adapter.no_grad(),
            capture_inputs(model, on_input, select=lambda _name, module: adapter.is_batchnorm(module)),
        ):
            model(adapter.tensor(calibration, device=adapter.device(model)))
    finally:
        adapter.restore_training_modes(model, modes)
    missing = [bn for bn in draws if bn not in done]
    if missing:
        raise RuntimeError(f"BatchNorm(s) not run by the calibration forward: {', '.join(missing)}")


def randomize_batchnorm(
    model: object,
    seed: int,
    *,
    calibration: np.ndarray | None = None,
    mean_spread: float = 0.2,
    var_range: tuple[float, float] = (0.5, 2.0),
) -> list[str]:
    """Give every BatchNorm of ``model`` seeded, non-trivial running statistics and affine
    parameters; returns the BatchNorm names.

    weight ~ U(0.5, 1.5), bias ~ N(0, mean_spread). Without ``calibration``: running_mean
    ~ N(0, mean_spread), running_var ~ U(var_range). With a calibration batch (N x C x H x W,
    not the input you compare on): each BatchNorm's statistics are set in units of its
    actual eval-mode input's per-channel scale ``s = sqrt(E[x^2])`` (see
    ``_running_stats``): running_mean = N(0, mean_spread) * s, running_var = U(var_range) *
    s^2. That is not the channel's own mean and variance (a channel with a large mean, a
    post-ReLU one, gets a gain below 1), but it keeps the eval-mode signal O(1) at every
    depth. Only BatchNorm tensors change; the model's training modes are restored.
    """
    if not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    low, high = var_range
    if not 0 < low <= high:
        raise ValueError(f"var_range must satisfy 0 < low <= high, got {var_range}")
    adapter = adapter_for(model)
    bns = batchnorm_names(model)
    rng = np.random.default_rng(seed)
    state = adapter.state(model)
    dtypes = {k: v.dtype for k, v in state.items()}
    draws: dict[str, tuple] = {}
    # Every random number is drawn up front, in module order: the result depends on the
    # seed alone, never on the order in which a forward reaches the BatchNorms.
    for bn in bns:
        channels = state[f"{bn}.running_mean"].shape
        state[f"{bn}.weight"] = rng.uniform(0.5, 1.5, channels)
        state[f"{bn}.bias"] = rng.normal(0.0, mean_spread, channels)
        draws[bn] = (rng.normal(0.0, mean_spread, channels), rng.uniform(low, high, channels))
        if calibration is None:
            mean, var = _running_stats(np.zeros(channels), np.ones(channels), *draws[bn])
            state[f"{bn}.running_mean"], state[f"{bn}.running_var"] = mean, var
    adapter.load_state(model, {k: np.asarray(v, dtype=dtypes[k]) for k, v in state.items()})
    if calibration is not None:
        calibration = np.asarray(calibration)
        if calibration.ndim != 4:
            raise ValueError(f"calibration must be an N x C x H x W batch, got shape {calibration.shape}")
        _calibrate(model, calibration, draws, dtypes)
    return bns


def randomize_weights(model: object, seed: int) -> int:
    """Redraw every parameter outside the BatchNorms the way Lucid initialises them, from a
    seeded generator: weights ~ U(+-sqrt(6 / fan_in)) (Kaiming/He uniform, unit gain
    through a ReLU), biases ~ U(+-1 / sqrt(fan_in)). A check is then reproducible whatever
    the process's RNG history (Lucid draws from numpy's global RNG, which ``import lucid``
    reseeds). Returns the number of tensors redrawn."""
    adapter = adapter_for(model)
    skip = tuple(f"{bn}." for bn in batchnorm_names(model))
    names = [k for k in adapter.parameter_names(model) if not k.startswith(skip)]
    state = adapter.state(model)
    rng = np.random.default_rng(seed)
    for key in names:
        is_bias = key.endswith(".bias")
        # A bias takes its weight's fan-in; a weight's fan-in is everything but dim 0.
        shape = state[key.removesuffix(".bias") + ".weight"].shape if is_bias else state[key].shape
        fan_in = max(int(np.prod(shape[1:])), 1)
        bound = np.sqrt((1.0 if is_bias else 6.0) / fan_in)
        state[key] = rng.uniform(-bound, bound, state[key].shape).astype(state[key].dtype)
    adapter.load_state(model, state)
    return len(names)


def verify_equal_state(a: object, b: object) -> list[str]:
    """Keys whose values differ between two models (exactly, after promoting both to
    float64) or whose dtypes differ; an empty list when the states are equal. Key-set
    differences are listed too."""
    sa, sb = adapter_for(a).state_views(a), adapter_for(b).state_views(b)
    problems = [f"{k}: only in the first model" for k in sa if k not in sb]
    problems += [f"{k}: only in the second model" for k in sb if k not in sa]
    for key in sa.keys() & sb.keys():
        va, vb = sa[key], sb[key]
        if va.shape != vb.shape:
            problems.append(f"{key}: shape {va.shape} vs {vb.shape}")
        elif va.dtype != vb.dtype:  # equal values in another dtype compute differently
            problems.append(f"{key}: dtype {va.dtype} vs {vb.dtype}")
        elif not np.array_equal(va, vb):  # compares in the promoted dtype
            difference = va.astype(np.float64) - vb.astype(np.float64)
            problems.append(f"{key}: max |difference| {np.max(np.abs(difference)):.3g}")
    return sorted(problems)


# ----- liveness


def _children(named: dict[str, object], prefix: str) -> list[str]:
    """Direct children of ``prefix`` in module order."""
    depth = prefix.count(".") + 1
    return [n for n in named if n.startswith(prefix + ".") and n.count(".") == depth]


def knockout_blocks(model: object) -> list[str]:
    """The blocks ``liveness`` knocks out, in module order: every direct child of the trunk
    ``conv``, the ``stem`` (Inception-ResNet), and inside the stem every branch and every
    layer of its plain sequence (``stem.conv.N`` / ``conv.0.conv.N``). A residual block is
    knocked out through its ``conv_linear``: zeroing the residual branch leaves
    ``ReLU(x)``, which shows whether the branch reaches the logits at all."""
    named = dict(adapter_for(model).named_modules(model))
    trunk = _children(named, "conv") if "conv" in named else []
    stem = "stem" if "stem" in named else ("conv.0" if "conv.0.branch1_pool" in named else None)
    blocks: list[str] = []
    if stem == "stem":
        blocks.append("stem")
    if stem is not None:
        for child in _children(named, stem):
            sequence = _children(named, child)
            if sequence and all(c.rsplit(".", 1)[1].isdigit() for c in sequence):
                blocks += sequence  # a plain Sequential: each layer is a block
            else:
                blocks.append(child)
    for block in trunk:
        blocks.append(f"{block}.conv_linear" if f"{block}.conv_linear" in named else block)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no 'conv' trunk or 'stem': nothing to knock out")
    return blocks


@contextlib.contextmanager
def knockout(model: object, block: str) -> Iterator[None]:
    """While active, module ``block`` of ``model`` returns zeros of its output's shape.

    The instance's ``forward`` is shadowed by one that multiplies the real output by 0
    (both frameworks dispatch ``__call__`` through ``self.forward``, and ``tensor * 0.0``
    keeps dtype, device and shape); the class is untouched and the shadow is removed on exit.
    """
    named = dict(adapter_for(model).named_modules(model))
    if block not in named:
        raise ValueError(f"{type(model).__name__} has no module {block!r}")
    module = named[block]
    if "forward" in vars(module):
        raise RuntimeError(f"module {block!r} already has an instance-level forward (nested knock-out?)")
    original = module.forward
    module.forward = lambda *args, **kwargs: original(*args, **kwargs) * 0.0
    try:
        yield
    finally:
        del module.forward


@dataclass(frozen=True)
class BlockLiveness:
    """How much knocking out ``block`` moved the logits (max |change| / max |logit|).
    ``ran``: False for a layer with parameters that never ran in the forward (a dead
    branch, upstream bug 1's kind): nothing that happens there can reach the logits."""

    block: str
    change: float
    threshold: float
    alive: bool
    ran: bool = True


@dataclass(frozen=True)
class LivenessReport:
    blocks: list[BlockLiveness]
    tol: float
    factor: float

    @property
    def ok(self) -> bool:
        return all(b.alive for b in self.blocks)

    @property
    def invisible(self) -> list[str]:
        """Blocks whose knock-out the comparison could not see."""
        return [b.block for b in self.blocks if not b.alive]

    def summary(self) -> str:
        weakest = min(self.blocks, key=lambda b: b.change)
        if self.ok:
            return (
                f"liveness ok: all {len(self.blocks)} blocks move the logits by >= {self.factor:g} x tol "
                f"(weakest {weakest.block}: {weakest.change:.3g} relative)"
            )
        rows = ", ".join(
            f"{b.block} ({b.change:.3g})" if b.ran else f"{b.block} (never runs)"
            for b in self.blocks
            if not b.alive
        )
        return (
            f"liveness FAILED: knocking out these blocks moves the logits by less than "
            f"{self.factor:g} x tol = {self.factor * self.tol:.3g} relative, so a fault there "
            f"would be invisible: {rows}"
        )

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "tol": self.tol,
            "factor": self.factor,
            # A NaN change (non-finite logits) as a string: the JSON is written with allow_nan=False.
            "blocks": [{**asdict(b), "change": _json_float(b.change)} for b in self.blocks],
        }


def _layers_with_parameters(adapter: object, model: object) -> list[str]:
    """The modules that own parameters directly (not through a child), in module order."""
    owners = {key.rpartition(".")[0] for key in adapter.parameter_names(model)}
    return [name for name, _ in adapter.named_modules(model) if name in owners]


def liveness(
    model: object,
    x: np.ndarray,
    *,
    tol: float,
    factor: float = LIVENESS_FACTOR,
    blocks: Sequence[str] | None = None,
) -> LivenessReport:
    """Knock out each block in turn (``knockout_blocks`` by default) and measure how far the
    eval-mode logits move, relative to their largest magnitude; a block is alive when the
    change is at least ``factor * tol``. Below block level, every layer with parameters of
    its own must run in the forward, or it is listed as never running (a dead branch inside
    a live block is invisible to block knock-outs). The model's training modes are restored."""
    if tol <= 0 or factor <= 0:
        raise ValueError(f"tol and factor must be positive, got tol={tol}, factor={factor}")
    adapter = adapter_for(model)
    blocks = list(knockout_blocks(model) if blocks is None else blocks)
    modes = adapter.training_modes(model)
    device = adapter.device(model)
    # The input takes the model's dtype (a float64 input to a float32 torch model raises).
    x = np.asarray(x, dtype=next(iter(adapter.dtypes(model).values())))

    def logits() -> np.ndarray:
        return adapter.to_numpy(model(adapter.tensor(x, device=device))).astype(np.float64)

    results = []
    try:
        adapter.set_training(model, False)
        with adapter.no_grad():
            ran: set[str] = set()
            with capture_outputs(model, lambda name, _view: ran.add(name), copy=False):
                base = logits()
            results += [
                BlockLiveness(layer, 0.0, factor * tol, False, ran=False)
                for layer in _layers_with_parameters(adapter, model)
                if layer not in ran
            ]
            scale = max(float(np.max(np.abs(base))), np.finfo(np.float64).tiny)
            for block in blocks:
                with knockout(model, block):
                    change = float(np.max(np.abs(logits() - base))) / scale
                results.append(BlockLiveness(block, change, factor * tol, bool(change >= factor * tol)))
    finally:
        adapter.restore_training_modes(model, modes)
    return LivenessReport(results, tol, factor)


# ----- the one-call helper


@dataclass
class ParityResult:
    """What ``check_pair`` found: the comparison report, liveness of the twin, and how the
    signal was prepared; ``skipped`` holds the reason when a device was absent."""

    model: str
    dtype: str
    devices: tuple[str, str]  # (Lucid device, torch device)
    report: object | None  # parity.Report
    liveness: LivenessReport | None
    batchnorms: int
    seed: int
    size: int
    batch: int
    seconds: float = 0.0
    skipped: str | None = None
    signal: str = "random"

    @property
    def ok(self) -> bool:
        """True when the pair agrees and every block is alive (a skipped pair is not a failure)."""
        if self.skipped is not None:
            return True
        return bool(self.report.ok) and (self.liveness is None or self.liveness.ok)

    @property
    def label(self) -> str:
        return f"{self.model} {self.dtype} lucid={self.devices[0]} vs torch={self.devices[1]}"

    def explain(self, top: int = 8) -> str:
        """The table ``python -m parity`` prints for this pair."""
        from parity.tables import render_result  # the CLI's table; imported late (tabulate)

        return render_result(self, top)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "dtype": self.dtype,
            "devices": {"lucid": self.devices[0], "torch": self.devices[1]},
            "ok": self.ok,
            "skipped": self.skipped,
            "seed": self.seed,
            "size": self.size,
            "batch": self.batch,
            "seconds": round(self.seconds, 3),
            "signal": self.signal,
            "batchnorms_randomized": self.batchnorms,
            "liveness": None if self.liveness is None else self.liveness.to_dict(),
            "report": None if self.report is None else self.report.to_dict(),
        }


def last_map_side(size: int) -> int:
    """Side of the smallest feature map (Reduction-B's output) for a ``size`` input, the
    same for all three models: 299 -> 8, 75 -> 1."""

    def down(x: int) -> int:  # 3x3, stride 2, valid
        return (x - 3) // 2 + 1

    x = down(size) - 2  # stem: 3x3/2 V, 3x3 V, 3x3 same
    x = down(x) - 2  # maxpool (Fig. 14: then 1x1), 3x3 V
    return down(down(down(x)))  # the stem's last stride 2, Reduction-A, Reduction-B


def calibration_batch(size: int, batch: int = 1) -> int:
    """Images to calibrate BatchNorm statistics on at input ``size``: at least 16 values
    per channel in the smallest map (8x8 at 299, 1x1 at 75), and at least the batch."""
    side = last_map_side(size)
    return max(batch, 4, -(-16 // (side * side)))


def train_step_batch(size: int) -> int:
    """The smallest batch a train-step comparison is meaningful at: every BatchNorm must
    see at least 8 values per channel. With 2 (batch 2 at 75, a 1x1 map) train-mode
    BatchNorm maps each pair to +-1 and amplifies rounding error without bound (measured:
    0.09 relative in float32 after ten such layers); with 8 it stays < 0.25 x tol."""
    side = last_map_side(size)
    return max(1, -(-8 // (side * side)))


def seeded_input(batch: int, size: int, seed: int, in_channels: int = 3) -> np.ndarray:
    """The seeded N(0, 1) image batch every check uses."""
    return np.random.default_rng(seed).standard_normal((batch, in_channels, size, size)).astype(np.float32)


def prepare_signal(model: object, x: np.ndarray, *, seed: int, signal: str = "random") -> list[str]:
    """Seed ``model``'s weights and randomise its BatchNorms; returns their names.

    ``signal="random"``: the statistics of ``randomize_batchnorm`` without calibration.
    ``signal="calibrated"``: the same draws in units of each channel's measured scale on
    ``x`` plus seeded images (``calibration_batch`` in all), so that every layer keeps unit
    gain; see ``SIGNALS``.
    """
    if signal not in SIGNALS:
        raise ValueError(f"unknown signal {signal!r}; valid: {', '.join(SIGNALS)}")
    x = np.asarray(x)
    randomize_weights(model, seed)
    if signal == "random":
        return randomize_batchnorm(model, seed)
    # Images shaped like x (any channels, height and width); the shorter side sets the
    # smallest map, so it sets how many images there must be.
    extra = calibration_batch(min(x.shape[-2:]), len(x)) - len(x) or 1
    images = np.random.default_rng(seed + 1).standard_normal((extra, *x.shape[1:])).astype(np.float32)
    calibration = np.concatenate([x, images.astype(x.dtype)])  # as seeded_input draws them
    return randomize_batchnorm(model, seed, calibration=calibration)


def device_skip_reason(devices: tuple[str, str]) -> str | None:
    """Why (Lucid device, torch device) cannot run here, or ``None``; ``ValueError`` for a
    device name the framework does not have."""
    reasons = []
    for adapter, device in zip((LucidAdapter, TorchAdapter), devices, strict=True):
        if device not in adapter.devices:
            raise ValueError(f"{adapter.name} has no device {device!r}; valid: {', '.join(adapter.devices)}")
        reason = adapter.device_unavailable(device)
        if reason:
            reasons.append(f"{adapter.name}={device}: {reason}")
    return "; ".join(reasons) or None


def _unheld_dtype_reason(devices: tuple[str, str], dtype: str) -> str | None:
    """Why a device cannot compare in ``dtype`` (float64 on Lucid's 'gpu'), as a skip reason."""
    reasons = [
        unheld_dtype(adapter.name, device, dtype)
        for adapter, device in zip((LucidAdapter, TorchAdapter), devices, strict=True)
    ]
    return "; ".join(r for r in reasons if r) or None


def compares_locally(signal: str, local: bool, backward: bool) -> bool:
    """Whether a check compares module by module: when asked, and always for the
    calibrated signal (with unit gain an untrained network amplifies any rounding ~1.5x
    per block, see ``SIGNALS``). ``ValueError`` when that meets a backward, which needs
    the twin's whole graph. One rule for ``check_pair``, the CLI and the pytest plugin."""
    local = bool(local) or signal == "calibrated"
    if local and backward:
        raise ValueError(
            "a backward needs the twin's whole graph, which a local comparison cuts at every "
            "module (the calibrated signal always compares locally)"
        )
    return local


def check_pair(
    name: str,
    *,
    dtype: str = "float32",
    backward: bool = False,
    train_step: bool = False,
    devices: tuple[str, str] = ("cpu", "cpu"),
    size: int = 299,
    batch: int | None = None,
    seed: int = 0,
    check_liveness: bool = True,
    signal: str = "random",
    local: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ParityResult:
    """Build the Lucid model ``name`` and its torch twin, seed the Lucid weights and
    randomise its BatchNorms (``prepare_signal``), transfer Lucid -> twin, verify the
    states are equal, compare layer by layer (``local``, implied by the calibrated signal:
    each module on the Lucid side's input, see ``compares_locally``) and prove liveness on
    the twin. ``devices`` is (Lucid device, torch device); an absent one, or one that
    cannot hold ``dtype`` (float64 on Lucid's 'gpu', ``parity.comparison.unheld_dtype``),
    gives a result with ``skipped`` set to the reason, before anything is built. ``batch`` defaults to
    ``default_batch(backward)``: 2 with gradients (see ``BACKWARD_BATCH``), else 1."""
    if batch is None:
        batch = default_batch(backward)
    if name not in lucid_inception.MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(lucid_inception.MODEL_NAMES)}")
    if dtype not in TOLERANCES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(TOLERANCES)}")
    if train_step and batch < train_step_batch(size):
        raise ValueError(
            f"a train step at {size}x{size} needs batch >= {train_step_batch(size)}: every BatchNorm must "
            f"see >= 8 values per channel and the last map is {last_map_side(size)}x{last_map_side(size)}; "
            f"got batch {batch}"
        )
    local = compares_locally(signal, local, backward)
    devices = (devices[0], devices[1])
    say = progress or (lambda _line: None)
    start = time.perf_counter()
    result = ParityResult(name, dtype, devices, None, None, 0, seed, size, batch, signal=signal)
    result.skipped = _unheld_dtype_reason(devices, dtype) or device_skip_reason(devices)
    if result.skipped:
        return result
    say(f"{name}: building the Lucid model and its torch twin")
    source = lucid_inception.build(name, "lucid")
    twin = lucid_inception.build(name, "torch")
    x = seeded_input(batch, size, seed)
    say(f"{name}: seeding weights and {signal} BatchNorm statistics (seed {seed})")
    result.batchnorms = len(prepare_signal(source, x, seed=seed, signal=signal))
    say(f"{name}: transferring Lucid -> torch and verifying")
    transfer(source, twin)
    problems = verify_equal_state(source, twin)
    if problems:
        raise RuntimeError("transfer left the models different:\n" + "\n".join(problems))
    modes = ("local forward" if local else "forward") + (" + backward" if backward else "")
    modes += " + train step" if train_step else ""
    say(f"{name}: comparing {dtype} {modes} layer by layer ({batch}x3x{size}x{size})")
    try:
        result.report = compare(
            source,
            twin,
            x,
            dtype=dtype,
            backward=backward,
            train_step=train_step,
            devices=devices,
            grad_seed=seed,
            local=local,
        )
    except DeviceUnavailable as error:
        result.skipped = str(error)
        return result
    if check_liveness:
        say(f"{name}: liveness (knocking out each block of the twin)")
        result.liveness = liveness(twin, x, tol=TOLERANCES[dtype].rel)
    result.seconds = time.perf_counter() - start
    return result
