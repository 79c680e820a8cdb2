"""Tolerances, one table per dtype, from one error budget (not picked per model).

The budget is computed in float64, in units of the unit roundoff ``u`` of the dtype being
compared, so float32 and float64 get the same reasoning and differ only by ``u``:

* **One layer.** The longest dot product in the three networks has ``K_MAX = 3*3*384 =
  3456`` terms (the 3x3 convolutions over 384 channels in Reduction-A of Inception-v4 and
  Inception-ResNet-v2; the classifier's is at most 2144). Rounding K products and sums is
  a random walk: each framework's result is off by about ``sqrt(K/2) * u`` relative to
  the output's scale (Higham & Mary, "A new approach to probabilistic rounding error
  analysis", 2019), and two frameworks that round independently add in quadrature:
  ``sqrt(K) * u``.
* **Depth.** Every conv is followed by BatchNorm and ReLU. BatchNorm scales signal and
  error alike; ReLU zeroes about half of the error's energy, so the error carried from
  layer to layer obeys ``e^2 = e^2 / 2 + eps^2`` and settles at ``sqrt(2) * eps`` instead
  of growing with depth. Residual blocks end in the same ReLU.
* **Safety** ``x 2``: headroom for weights less benign than random ones.

That is ``rel = 2 * sqrt(2) * sqrt(3456) * u = 166 u``: 9.9e-6 in float32 and 1.8e-14 in
float64, inside the project's targets (float32 logits within 1e-5, every float64 layer
within 1e-12). The float32 target caps the budget: the same reasoning cannot give float64
more than 168 u.

Gradients (``grad``) are a second chain of dot products through the same layers: the
error the forward left in the activations plus the backward's own rounding (``x 2``);
parameter gradients are in addition sums over all N*H*W positions, whose random-sign
terms cancel so that the result is small next to its terms (``x 2``). BatchNorm
statistics (``bn``) are computed, in float64, from each side's captured BN input, which
differs from the other side's by one layer's error ``dx <= rel * max|x|`` (the train step
feeds both BatchNorms the same input, see ``parity.comparison``): the batch mean by at most
``rel`` in units of ``max|x|``, the batch variance (``2 * cov(x, dx)``) by at most
``2 * rel`` in units of ``max|x|^2``; running statistics move by ``momentum`` times that,
but their rows keep the same bound ``bn`` (the table is per dtype, not per module's
momentum): 1/momentum looser than derived, and still tight enough that a momentum of
0.1003 instead of 0.1 fails (measured: 1.3e-4 against 2.0e-5 in float32).

A train-mode BatchNorm's output (``bn_train_output``, both sides on one input) carries the
rounding of its batch mean and variance, sums of ``n = N*H*W`` terms per channel: the
random walk above with ``max(n, K_MAX)`` terms (``Tolerance.reduced``). Lucid sums them
in float32 across its channels-last memory: at 120 px and batch 32 (n = 115,200) a
faithful pair's stem BatchNorms measured 1.3 x ``rel``, 0.22 x ``reduced(n)``. Each
channel is measured against ``|w| max|x| / sqrt(var + eps) + |b|`` (see
``parity._metrics.bn_output_errors``).

Measured on faithful pairs (seeded random weights and BatchNorm statistics, batch 2,
Lucid 2.9.0 vs torch 2.14 on CPU), in units of u:

* outputs, worst layer: float32 <= 70 u, float64 91-137 u (Inception-v4 at 299 px, four
  seeds: the thinnest margin, 1.2-1.8x); the ResNets <= 78 u; logits 13-20 u.
* gradients (Lucid's broadcast-gradient fix applied): float64 <= 135 u (75 px) and 78 u
  (299 px) against 664 u; float32 <= 80 u at 75 px when no ReLU flips (below).
* train step: batch statistics and running updates <= 15 u (float64), <= 40 u (float32).

Where the budget does not apply, by design:

* **Float32 gradients.** A forward rounding that flips one ReLU or max-pool decision
  changes the gradient there by O(1): at 299 px, batch 2, 9 of 30 million
  pre-activations change sign between Lucid and torch, and the gradients differ by 1e-2;
  at 75 px it happens now and then (about one process in six: the kernels' rounding
  varies from process to process), by 2e-3 to 2e-2. Check gradients in float64.
* **Chaotic networks.** With BatchNorm statistics calibrated to the activations (unit
  gain everywhere), an untrained Inception-v4 amplifies any perturbation about 1.5x per
  block: a faithful pair then reaches 3e-12 (float64) and 1.6e-3 (float32) in the last
  blocks at 299 px. That is the random network's conditioning, not the frameworks'.
  ``compare(..., local=True)`` measures each step on the same input instead; the budget
  then holds with room (worst step ~0.1 x tol, Inception-v4 at 75 px, both dtypes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DTYPES", "K_MAX", "TOLERANCES", "Tolerance", "tolerance_for"]

DTYPES: tuple[str, ...] = ("float32", "float64")

K_MAX = 3 * 3 * 384  # longest dot product: 3x3 conv over 384 channels (tests recompute it)
DEPTH_GAIN = math.sqrt(2.0)  # stationary error through BN + ReLU layers
SAFETY = 2.0
GRAD_PASSES = 2.0  # forward error carried + the backward's own rounding
GRAD_REDUCTION = 2.0  # cancellation in the N*H*W sums of parameter gradients
BN_VARIANCE = 2.0  # d var = 2 cov(x, dx)


@dataclass(frozen=True)
class Tolerance:
    """Relative tolerances of one dtype; ``state`` is 0: parameters and buffers must be
    equal before a forward is worth comparing."""

    dtype: str
    u: float
    rel: float
    grad: float
    bn: float
    state: float = 0.0

    def reduced(self, n: int) -> float:
        """``rel`` for a result reduced over ``n`` terms: the one-layer random walk with
        ``max(n, K_MAX)`` terms in place of ``K_MAX``. A train-mode BatchNorm's output
        carries the rounding of its batch mean and variance, sums of ``n = N*H*W`` values
        per channel (``bn_train_output`` rows)."""
        return self.rel * math.sqrt(max(1.0, n / K_MAX))

    def for_kind(self, kind: str) -> float:
        """The tolerance that applies to a row of this kind."""
        table = {
            "state": self.state,
            "config": 0.0,  # settings are equal or not
            "output": self.rel,
            "input": self.rel,
            "error": self.rel,
            "input_grad": self.grad,
            "param_grad": self.grad,
            "bn_batch_stats": self.bn,
            "bn_train_output": self.rel,  # at least: ``reduced(n)`` per row
            "bn_running_update": self.bn,
        }
        if kind not in table:
            raise ValueError(f"unknown row kind {kind!r}; valid: {', '.join(table)}")
        return table[kind]


def _budget(dtype: str) -> Tolerance:
    u = float(np.finfo(dtype).eps) / 2  # unit roundoff of round-to-nearest: 2^-24, 2^-53
    per_layer = math.sqrt(K_MAX) * u  # sqrt(K/2) * u per framework, two in quadrature
    rel = SAFETY * DEPTH_GAIN * per_layer
    return Tolerance(
        dtype=dtype,
        u=u,
        rel=rel,
        grad=GRAD_PASSES * GRAD_REDUCTION * rel,
        bn=BN_VARIANCE * rel,
    )


TOLERANCES: dict[str, Tolerance] = {dtype: _budget(dtype) for dtype in DTYPES}


def tolerance_for(dtype: object) -> Tolerance:
    """The table of ``dtype`` ("float32", "float64" or a numpy dtype); ``ValueError`` otherwise."""
    try:
        name = None if dtype is None else np.dtype(dtype).name  # np.dtype(None) is float64
    except TypeError:
        name = None
    if name not in TOLERANCES:
        raise ValueError(f"unsupported dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    return TOLERANCES[name]
