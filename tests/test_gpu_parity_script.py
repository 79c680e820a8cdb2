"""bench/gpu_parity.py, the prepared script for the device tool's GPU: its table, verdicts,
skips and exit status, exercised here on CPU pairs (CI has no GPU)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from lucid_inception.frameworks import TorchAdapter

from .conftest import plant_in_every_twin

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_parity.py"
SMALL = ["--model", "inception_resnet_v1", "--size", "75", "--batch", "1"]


@pytest.fixture(scope="module")
def gpu_parity():
    spec = importlib.util.spec_from_file_location("gpu_parity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pairs_are_parsed_and_checked(gpu_parity) -> None:
    assert gpu_parity.parse_pair("lucid:cpu-torch:cuda") == (("lucid", "cpu"), ("torch", "cuda"))
    for bad, why in [
        ("lucid:cpu", "FRAMEWORK:DEVICE-FRAMEWORK:DEVICE"),
        ("jax:cpu-torch:cpu", "unknown framework 'jax'"),
        ("lucid:cuda-torch:cpu", "lucid has no device 'cuda'; valid: cpu, gpu"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            gpu_parity.parse_pair(bad)


def test_cpu_pairs_run_and_pass(gpu_parity, capsys) -> None:
    pairs = ["--pair", "lucid:cpu-torch:cpu", "--pair", "torch:cpu-torch:cpu"]
    assert gpu_parity.main([*SMALL, *pairs, "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "1x3x75x75, seed 0" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("inception_resnet_v1")]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("lucid:cpu-torch:cpu", "float64", "PASS"),
        ("torch:cpu-torch:cpu", "float64", "PASS"),
    ]
    assert float(rows[0][5]) > 0 and float(rows[1][5]) == 0  # torch against itself: bit-exact


def test_a_fault_fails_the_table_and_the_exit_status(gpu_parity, monkeypatch, capsys) -> None:
    plant_in_every_twin(monkeypatch, "missing-relu")
    assert gpu_parity.main([*SMALL, "--pair", "lucid:cpu-torch:cpu", "--dtype", "float32"]) == 1
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("inception"))
    assert row.split()[3:5] == ["FAIL", "stem.conv.4.relu"]


def test_an_error_is_a_row_and_fails(gpu_parity, monkeypatch, capsys) -> None:
    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(gpu_parity, "compare", broken)
    assert gpu_parity.main([*SMALL, "--pair", "lucid:cpu-torch:cpu", "--dtype", "float32"]) == 1
    out = capsys.readouterr().out
    assert (
        " error " in out
        and "not run: inception_resnet_v1 lucid:cpu-torch:cpu float32: RuntimeError: boom" in out
    )


@pytest.mark.skipif(TorchAdapter.device_unavailable("cuda") is None, reason="a CUDA device is present")
def test_absent_devices_are_skipped_with_the_reason(gpu_parity, capsys) -> None:
    assert gpu_parity.main([*SMALL, "--pair", "lucid:cpu-torch:cuda"]) == 1  # nothing ran
    out = capsys.readouterr().out
    assert out.count(" skipped ") == 2  # float32 and float64
    assert "nothing ran: no pair could run here" in out
    assert f"not run: lucid:cpu-torch:cuda: torch=cuda: {TorchAdapter.device_unavailable('cuda')}" in out


def test_float64_on_lucid_gpu_is_listed_as_not_run(gpu_parity, capsys) -> None:
    """MLX holds float64 as float32 (the mlx-float32 convention): those rows are not run,
    with the reason, whatever devices exist here, and do not fail the table."""
    argv = [*SMALL, "--pair", "lucid:gpu-torch:cpu", "--pair", "torch:cpu-lucid:gpu", "--dtype", "float64"]
    argv += ["--pair", "torch:cpu-torch:cpu"]  # one pair that runs: the skips alone fail no table
    assert gpu_parity.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("inception_resnet_v1")]
    assert [(r[1], r[3]) for r in rows] == [
        ("lucid:gpu-torch:cpu", "skipped"),
        ("torch:cpu-lucid:gpu", "skipped"),
        ("torch:cpu-torch:cpu", "PASS"),
    ]
    for label in ("lucid:gpu-torch:cpu", "torch:cpu-lucid:gpu"):
        assert f"not run: {label} float64: lucid device 'gpu' cannot compare in float64" in out
    assert "mlx-float32" in out
