"""``python -m conformance``: bad usage is one line on stderr and exit status 2, before any
slow work, never a traceback."""

from __future__ import annotations

import pytest

from conformance.__main__ import main
from lucid_inception.frameworks import TorchAdapter


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m conformance {argv[0]}: error: ")
    return lines[0]


def test_check_size_too_small(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--size: size must be >= 75" in _usage_error(["check", "--size", "10"], capsys)


def test_ops_case_matching_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--case: no case matches 'nomatch*'" in _usage_error(["ops", "--case", "nomatch*"], capsys)


def test_ops_torch_device_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # as on a machine without CUDA, whatever this one has
    monkeypatch.setattr(TorchAdapter, "device_unavailable", staticmethod(lambda device: "no CUDA device"))
    line = _usage_error(["ops", "--torch-device", "cuda", "--case", "conv2d_1x1"], capsys)
    assert line.endswith("--torch-device cuda cannot run here: no CUDA device")
