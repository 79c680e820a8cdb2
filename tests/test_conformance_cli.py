"""``python -m conformance``: bad usage is one line on stderr and exit status 2, before any
slow work, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.__main__ import main
from conformance.checker import DEFAULT_SIZE
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


def test_check_size_help_says_why_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert f"(default {DEFAULT_SIZE}: the smallest at which every model's last blocks run on a 2x2" in text
    assert "at 75, the smallest accepted, they run on 1x1" in text


def test_ops_case_matching_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--case: no case matches 'nomatch*'" in _usage_error(["ops", "--case", "nomatch*"], capsys)


def test_ops_torch_device_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # as on a machine without CUDA, whatever this one has
    monkeypatch.setattr(TorchAdapter, "device_unavailable", staticmethod(lambda device: "no CUDA device"))
    line = _usage_error(["ops", "--torch-device", "cuda", "--case", "conv2d_1x1"], capsys)
    assert line.endswith("--torch-device cuda cannot run here: no CUDA device")


@pytest.fixture
def no_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any fetch is slow work a refused ``--out`` must not reach."""
    from conformance import upstream

    def fetch(version: str) -> None:
        raise AssertionError(f"fetched {version} before refusing --out")

    monkeypatch.setattr(upstream, "fetch", fetch)


def test_report_out_that_is_not_a_report(
    tmp_path: Path, no_fetch: None, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keep.txt").write_text("mine\n")
    line = _usage_error(["report", "--out", str(tmp_path), "--no-prove"], capsys)
    assert line.endswith("exists and is not an upstream report folder: refusing to replace it")
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_report_out_that_is_a_file(
    tmp_path: Path, no_fetch: None, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "report"
    target.write_text("mine\n")
    assert _usage_error(["report", "--out", str(target)], capsys).endswith(f"{target} is a file")
    assert target.read_text() == "mine\n"
