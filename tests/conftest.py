"""Shared fixtures: models are expensive to build on 2 cores, so read-only tests share one
instance per (name, framework); tests that change a model build their own."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import lucid_inception
from lucid_inception.frameworks import adapter_for, capture_outputs
from lucid_inception.upstream import upstream_is_released, upstream_version

# The conformance items upstream lucid-dl 2.x fails, from SPEC.md's "What upstream Lucid
# 2.x gets wrong", bugs 1-5. The checker and the findings catalogue are each held to it.
UPSTREAM_BUG_ITEMS = frozenset(
    {
        # 1. the stem concatenates branch2_left twice; branch2_right never runs
        "inception_v4/stem/branch2_right-runs",
        "inception_resnet_v2/stem/branch2_right-runs",
        # 2. Dropout(p=0.8): keeps 0.2
        "inception_v4/head/dropout-keep-0.8",
        "inception_resnet_v1/head/dropout-keep-0.8",
        "inception_resnet_v2/head/dropout-keep-0.8",
        # 3. no residual scaling
        "inception_resnet_v1/residual-scale",
        "inception_resnet_v2/residual-scale",
        # 4. a dead cfg[2] = 2048 in the v2 C block's constructor
        "inception_resnet_v2/block_c/width-2144",
        # 5. the v4 B block's long branch starts with a 1x1 to 64
        "inception_v4/block_b/branch4-first-conv-192",
    }
)

# Tests that pin the bugs of upstream as released run where upstream is 2.9.0 as
# released; the lucid216 leg runs a kit-patched lucid-dl 2.16.0 instead, and
# tests/test_patched_upstream.py holds that one to the port.
released_upstream_only = pytest.mark.skipif(
    not upstream_is_released(),
    reason=f"pins lucid-dl 2.9.0's released bugs; this run imports lucid-dl {upstream_version()} "
    "patched by the conformance kit (see tests/test_patched_upstream.py)",
)
patched_upstream_only = pytest.mark.skipif(
    upstream_is_released(),
    reason="needs a kit-patched lucid-dl (tox -e lucid216); this run imports lucid-dl 2.9.0 as released",
)


@functools.cache
def _shared_model(name: str, framework: str):
    return lucid_inception.build(name, framework)


@pytest.fixture
def shared_model():
    """``shared_model(name, framework)``: a cached model; tests must not change it."""
    return _shared_model


def randomize_batchnorm(model, seed: int, calibrate_on: np.ndarray | None = None) -> None:
    """Seeded, non-trivial BatchNorm statistics and affine parameters, so that no BN
    layer is an identity that hides a fault in front of it.

    With ``calibrate_on`` (an input batch) the running statistics are the batch
    statistics of that input instead of random numbers: a deep randomly initialised
    network then keeps its signal alive to the logits in eval mode (with arbitrary
    statistics, layers far from the input see only BN biases and the logits stop
    depending on the input).
    """
    adapter = adapter_for(model)
    rng = np.random.default_rng(seed)
    state = adapter.state(model)
    for key, value in state.items():
        if key.endswith("running_mean") or key.endswith("bn.bias"):
            state[key] = rng.normal(0.0, 0.2, value.shape).astype(value.dtype)
        elif key.endswith("running_var") or key.endswith("bn.weight"):
            state[key] = rng.uniform(0.5, 2.0, value.shape).astype(value.dtype)
    adapter.load_state(model, state)
    if calibrate_on is None:
        return
    # BN input of the ConvBNReLU at path P is the output of P.conv.
    prefixes = [k.removesuffix(".bn.running_mean") for k in state if k.endswith(".bn.running_mean")]
    wanted = {f"{p}.conv" for p in prefixes}
    seen: dict[str, np.ndarray] = {}
    modes = adapter.training_modes(model)
    adapter.set_training(model, True)  # BN normalises with batch statistics
    try:
        with (
            adapter.no_grad(),
            capture_outputs(model, lambda m, out: m in wanted and seen.setdefault(m, out)),
        ):
            model(adapter.tensor(calibrate_on))
    finally:
        adapter.restore_training_modes(model, modes)
    state = adapter.state(model)
    for p in prefixes:
        conv_out = seen[f"{p}.conv"]
        state[f"{p}.bn.running_mean"] = conv_out.mean(axis=(0, 2, 3)).astype(conv_out.dtype)
        state[f"{p}.bn.running_var"] = conv_out.var(axis=(0, 2, 3)).astype(conv_out.dtype)
    adapter.load_state(model, state)


def image(shape: tuple[int, ...], seed: int = 0, dtype: str = "float32") -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)
