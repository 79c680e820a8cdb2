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


# ----------------------------------------------------------- --factory: the user's own model

_FACTORIES = """
import lucid_inception

def faithful():
    return lucid_inception.twins.inception_resnet_v1()

def keeps_0_2():  # the head drops 80%: upstream's bug 2
    model = lucid_inception.twins.inception_resnet_v1()
    model.dropout.p = 0.8
    return model

class Zoo:
    v1 = staticmethod(faithful)

def raises():
    raise RuntimeError("no weights here")

def not_a_model():
    return 42
"""


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of model factories in the current directory, as a user's own would be;
    ``sys.path`` is put back afterwards (``--factory`` puts the current directory first)."""
    import sys

    name = f"user_nets_{tmp_path.name.replace('-', '_')}"  # unique: imports are cached
    (tmp_path / f"{name}.py").write_text(_FACTORIES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return name


def test_check_factory_holds_a_users_model_against_the_paper(
    factories: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for factory in ("faithful", "Zoo.v1"):
        assert main(["check", "--factory", f"{factories}:{factory}", "--model", "inception_resnet_v1"]) == 0
        out = capsys.readouterr().out
        assert out.rstrip().endswith(
            f"{factories}:{factory}: your model (torch, InceptionResNetV1): 1 model(s), 79 items, 0 failing"
        )
    assert main(["check", "--factory", f"{factories}:keeps_0_2", "--model", "inception_resnet_v1"]) == 1
    assert "inception_resnet_v1/head/dropout-keep-0.8" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--factory", "nocolon"], "--factory 'nocolon': expected MODULE:CALLABLE"),
        (["--factory", "no_such_module_here:f"], "importing no_such_module_here raised ModuleNotFoundError"),
        (["--factory", "{m}:missing"], "{m} has no 'missing'"),
        (["--factory", "{m}:raises"], "calling it raised RuntimeError: no weights here"),
        (["--factory", "{m}:not_a_model"], "returned int, not a Lucid or torch module"),
    ],
)
def test_check_factory_problems_are_usage_errors(
    factories: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.format(m=factories) for a in argv]
    line = _usage_error(["check", *argv, "--model", "inception_resnet_v1"], capsys)
    assert line.endswith(message.format(m=factories)) or message.format(m=factories) in line


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--target", "twin", "--model", "inception_v4"],
            "--factory checks your model instead of a --target",
        ),
        ([], "--factory: name the paper's network to hold the model against, once (--model NAME)"),
        (["--model", "inception_v4", "--model", "inception_resnet_v1"], "once (--model NAME)"),
    ],
)
def test_check_factory_needs_one_model_and_no_target(
    factories: str, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in _usage_error(["check", "--factory", f"{factories}:faithful", *extra], capsys)
