"""Shared fixtures: models are expensive to build on 2 cores, so read-only tests share one
instance per (name, framework); tests that change a model build their own."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import lucid_inception
from lucid_inception.upstream import upstream_is_released, upstream_version
from parity.signal import randomize_batchnorm  # noqa: F401  (the harness's own, for the tests)

# The conformance items upstream lucid-dl 2.x fails, from the README's table of
# upstream bugs, 1-5. The checker and the findings catalogue are each held to it.
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


def image(shape: tuple[int, ...], seed: int = 0, dtype: str = "float32") -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def plant_in_every_twin(monkeypatch: pytest.MonkeyPatch, fault_id: str) -> None:
    """Make ``lucid_inception.build`` plant the selftest fault ``fault_id`` in every torch
    twin it builds: for code that builds its own pairs (the CLI, the bench scripts)."""
    from parity.selftest import FAULTS

    fault = next(f for f in FAULTS if f.id == fault_id)
    build = lucid_inception.build

    def faulty_build(name: str, framework: str = "lucid", **kwargs):
        model = build(name, framework, **kwargs)
        if framework == "torch":
            fault.plant(model)
        return model

    monkeypatch.setattr(lucid_inception, "build", faulty_build)
