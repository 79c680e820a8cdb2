"""bench/bench_parity.py and bench/bench_models.py: a compare that fails is no time to
report, and bad arguments are usage errors (exit 2) before anything is built."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from parity.signal import seeded_input

from .conftest import plant_in_every_twin

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_parity():
    return _load("bench_parity")


@pytest.fixture(scope="module")
def bench_models():
    return _load("bench_models")


@pytest.mark.parametrize("planted", [False, True])
def test_a_failing_compare_is_timed_as_infinite_and_named(bench_parity, planted: bool, monkeypatch) -> None:
    """A fault that only a batch above 1 shows (the selftest's ``samples-mixed``): the
    fidelity compares at batch 1 pass, so the timing rows alone can report it."""
    if planted:
        plant_in_every_twin(monkeypatch, "samples-mixed")
    x = seeded_input(2, 75, 0)
    timed = bench_parity.time_pair(*bench_parity._pair("inception_resnet_v2", x), x, repeats=1)
    if planted:
        assert timed["ratio"] == math.inf and timed["failing"] == "avgpool"
    else:
        assert 0 < timed["ratio"] < math.inf and timed["failing"] is None


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("bench_parity", ["--repeats", "0"], "--repeats: expected at least 1, got 0"),
        ("bench_parity", ["--batch", "0"], "--batch: expected at least 1, got 0"),
        ("bench_parity", ["--mem-batch", "-1"], "--mem-batch: expected at least 1, got -1"),
        ("bench_parity", ["--size", "74"], "--size: the smallest input every model accepts is 75"),
        ("bench_models", ["--repeats", "0"], "--repeats: expected at least 1, got 0"),
        ("bench_models", ["--size", "74"], "--size: the smallest input every model accepts is 75"),
    ],
)
def test_bad_arguments_are_usage_errors(
    script: str, args: list[str], message: str, capsys, monkeypatch
) -> None:
    module = _load(script)
    # Nothing may be built before the check: a model build here would be the bug.
    monkeypatch.setattr(module.lucid_inception, "build", lambda *a, **k: pytest.fail("built a model"))
    with pytest.raises(SystemExit) as exited:
        module.main(args)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
