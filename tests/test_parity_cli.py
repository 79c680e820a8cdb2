"""python -m parity: check, selftest listing, upstream, convert, plots, exit codes, and the
pytest plugin."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lucid_inception
from lucid_inception.frameworks import TorchAdapter
from lucid_inception.upstream import upstream_is_released
from parity import cli, load_checkpoint_file, save_checkpoint, tables
from parity.cli import EXIT_ERROR, EXIT_FAIL, EXIT_OK, EXIT_USAGE, main, parse_devices
from parity.plot import PlotUnavailable, plot_reports
from parity.selftest import FAULTS
from parity.upstream import compare_upstream

from .conftest import patched_upstream_only, plant_in_every_twin, released_upstream_only
from .test_parity_compare import fixed_lucid  # noqa: F401  (a fixture: a Lucid with correct gradients)

SMALL = ["--model", "inception_resnet_v1", "--size", "75", "--quiet"]
NO_CUDA = TorchAdapter.device_unavailable("cuda")


def test_parse_devices() -> None:
    assert parse_devices("lucid=cpu,torch=cuda") == ("cpu", "cuda")
    assert parse_devices("torch=cuda") == ("cpu", "cuda")
    assert parse_devices(" lucid = gpu ") == ("gpu", "cpu")
    for bad in ["cuda", "torch=tpu", "lucid=cuda", "jax=cpu", "torch=cpu,torch=cuda", "torch="]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse_devices(bad)


def test_help_explains_what_is_compared_and_the_exit_codes(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for needle in [
        "divergence",
        "liveness",
        "exit codes",
        "selftest",
        "upstream",
        "convert",
        "--devices",
    ]:
        assert needle in text


@pytest.mark.parametrize(
    "argv",
    [
        ["--devices", "torch=tpu"],
        ["--size", "74"],
        ["--model", "resnet50"],
        ["--dtype", "float16"],
        ["--seed", "-1"],
        ["selftest", "--seed", "-1"],
    ],
)
def test_bad_options_are_usage_errors(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == EXIT_USAGE
    assert "error" in capsys.readouterr().err


def test_a_meaningless_train_step_is_refused(capsys) -> None:
    assert main([*SMALL, "--train-step"]) == EXIT_USAGE
    assert "--batch >= 8" in capsys.readouterr().err


def test_check_passes_writes_json_and_plot_and_reports_a_skipped_device(tmp_path: Path, capsys) -> None:
    devices = ["--devices", "lucid=cpu,torch=cuda", "--devices", "lucid=cpu,torch=cpu"]
    argv = [*SMALL, *devices, "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")]
    assert main(argv) == EXIT_OK
    out = capsys.readouterr().out
    assert "verdict               PASS" in out and "liveness ok" in out
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["ok"] is True and len(payload["results"]) == 2
    compared = [r for r in payload["results"] if not r["skipped"]]
    assert compared[0]["report"]["rows"] and compared[0]["liveness"]["ok"]
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    if NO_CUDA:
        assert f"skipped: torch=cuda: {NO_CUDA}" in out
        assert "PASS: 1 compared, 1 skipped" in out


def test_a_run_that_compared_nothing_says_so_and_require_devices_fails_it(tmp_path: Path, capsys) -> None:
    """Every run skipped is no PASS: the summary says nothing was compared. With
    --require-devices an absent device fails the run (a CI job whose device vanished).
    Lucid's 'gpu' cannot hold float64 on any machine, so this run is skipped everywhere."""
    argv = [*SMALL, "--devices", "lucid=gpu", "--dtype", "float64", "--no-liveness"]
    assert main(argv) == EXIT_OK
    out = capsys.readouterr().out
    assert "NOTHING COMPARED: 0 compared, 1 skipped" in out and "PASS" not in out
    report = tmp_path / "r.json"
    assert main([*argv, "--require-devices", "--json", str(report)]) == EXIT_FAIL
    out = capsys.readouterr().out
    assert "FAIL: 0 compared, 1 skipped (--require-devices: an absent device fails the run)" in out
    payload = json.loads(report.read_text())
    assert payload["ok"] is False and payload["require_devices"] is True


def test_check_fails_and_names_the_first_divergence(monkeypatch, capsys, tmp_path: Path) -> None:
    """A twin whose stem lost a ReLU: exit 1, the table names where."""
    plant_in_every_twin(monkeypatch, "missing-relu")
    assert main([*SMALL, "--no-liveness", "--json", str(tmp_path / "r.json")]) == EXIT_FAIL
    out = capsys.readouterr().out
    assert "verdict               FAIL" in out
    assert "first divergence      stem.conv.4.relu" in out
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["report"]["first_divergence"] == (
        "stem.conv.4.relu"
    )


def test_check_names_a_changed_setting_no_output_shows(monkeypatch, capsys) -> None:
    """Upstream bug 2 in a twin (a head Dropout(p=0.8)): every output agrees in eval mode,
    the check still fails, and its table says which setting differs where."""
    plant_in_every_twin(monkeypatch, "dropout-rate")
    assert main([*SMALL, "--no-liveness"]) == EXIT_FAIL
    out = capsys.readouterr().out
    assert "first divergence      dropout" in out
    assert "why                   p 0.2 vs 0.8" in out  # the first failing row's note, in full
    assert "layer settings        1 of " in out and "layers differ: dropout: p 0.2 vs 0.8" in out
    worst = out[out.index(" rows:\n") :]  # the "worst N rows:" table
    assert "note" in worst.splitlines()[1] and "p 0.2 vs 0.8" in worst  # and in the worst rows


def _record_check_pair(monkeypatch) -> list[dict]:
    """Stand in for ``check_pair``: record its options, compare nothing."""
    from parity.signal import ParityResult

    calls: list[dict] = []

    def record(model: str, **kw) -> ParityResult:
        calls.append(kw)
        devices, seed, size, batch = kw["devices"], kw["seed"], kw["size"], kw["batch"]
        return ParityResult(model, kw["dtype"], devices, None, None, 0, seed, size, batch, skipped="recorded")

    monkeypatch.setattr("parity.signal.check_pair", record)
    return calls


def test_backward_is_compared_in_float64_at_batch_2(monkeypatch, capsys) -> None:
    """Batch-1 gradients cannot show a batch-reduction bug (lucid-dl 2.9.0's broadcast
    gradients are right at batch 1): --backward runs at batch 2 unless --batch says otherwise."""
    calls = _record_check_pair(monkeypatch)
    assert main([*SMALL, "--backward"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "gradients are compared in float64 only" in err and "warning" not in err
    assert [(kw["dtype"], kw["backward"], kw["batch"]) for kw in calls] == [
        ("float32", False, 2),
        ("float64", True, 2),
    ]
    calls.clear()
    assert main([*SMALL, "--backward", "--dtype", "float64", "--batch", "1"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "warning: --backward at --batch 1: batch-1 gradients cannot show batch-reduction bugs" in err
    assert [(kw["dtype"], kw["backward"], kw["batch"]) for kw in calls] == [("float64", True, 1)]
    calls.clear()
    assert main(SMALL) == EXIT_OK  # no gradients: batch 1
    assert [kw["batch"] for kw in calls] == [1]


def test_a_repeated_model_runs_once(monkeypatch) -> None:
    calls = _record_check_pair(monkeypatch)
    assert main([*SMALL, "--model", "inception_resnet_v1"]) == EXIT_OK
    assert len(calls) == 1


def test_json_to_standard_output_is_refused_not_written_to_a_file_named_dash(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*SMALL, "--json", "-"]) == EXIT_USAGE
    assert "standard output is not supported" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("raised", "code", "said"),
    [
        (KeyboardInterrupt(), cli.EXIT_INTERRUPTED, "interrupted (exit 130)"),
        (
            MemoryError("Unable to allocate 213. PiB"),
            EXIT_USAGE,
            "out of memory (Unable to allocate 213. PiB)",
        ),
    ],
)
def test_an_interrupt_and_memory_running_out_are_not_harness_bugs(
    monkeypatch, capsys, raised, code, said
) -> None:
    def stop(_model: str, **_kw: object) -> None:
        raise raised

    monkeypatch.setattr("parity.signal.check_pair", stop)
    assert main(SMALL) == code
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and "this is a bug" not in err


def test_help_says_backward_runs_at_batch_2(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "2 with --backward" in text and "batch-1 gradients cannot show batch-reduction bugs" in text


BACKWARD = [*SMALL, "--backward", "--dtype", "float64", "--no-liveness"]


@released_upstream_only
def test_backward_fails_on_lucid_290_and_names_the_gradients(capsys, tmp_path: Path) -> None:
    """The README's claim: on lucid-dl 2.9.0 --backward fails, naming each wrong gradient
    (its broadcast gradients are wrong at batch > 1, docs/framework-ops.md)."""
    assert main([*BACKWARD, "--json", str(tmp_path / "r.json")]) == EXIT_FAIL
    out = capsys.readouterr().out
    assert "first divergence      fc" in out and "input                 2x3x75x75" in out
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["batch"] == 2
    rows = payload["results"][0]["report"]["rows"]
    failing = {(r["module"], r["note"]) for r in rows if r["kind"] == "param_grad" and not r["ok"]}
    assert {("fc", "bias"), ("stem.conv.0.conv", "bias"), ("stem.conv.0.bn", "weight")} <= failing
    assert all(r["ok"] for r in rows if r["kind"] == "output")


@pytest.mark.usefixtures("fixed_lucid")
def test_backward_passes_on_a_lucid_with_correct_gradients(capsys, tmp_path: Path) -> None:
    assert main([*BACKWARD, "--json", str(tmp_path / "r.json")]) == EXIT_OK, capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())["results"][0]["report"]
    assert report["input_shape"] == [2, 3, 75, 75]
    assert sum(r["kind"] == "param_grad" for r in report["rows"]) == 470


def test_train_step_passes(capsys, tmp_path: Path) -> None:
    argv = [*SMALL, "--train-step", "--batch", "8", "--no-liveness", "--json", str(tmp_path / "r.json")]
    assert main(argv) == EXIT_OK, capsys.readouterr().out
    rows = json.loads((tmp_path / "r.json").read_text())["results"][0]["report"]["rows"]
    kinds = {r["kind"] for r in rows}
    assert {"bn_batch_stats", "bn_running_update"} <= kinds and all(r["ok"] for r in rows)


def test_calibrated_statistics_compare_locally_and_pass(capsys, tmp_path: Path) -> None:
    argv = ["--model", "inception_v4", "--size", "75", "--quiet", "--signal", "calibrated", "--no-liveness"]
    assert main([*argv, "--json", str(tmp_path / "r.json")]) == EXIT_OK
    captured = capsys.readouterr()
    assert "--signal calibrated compares locally (--local)" in captured.err
    assert "compared              locally (each module on the Lucid side's input)" in captured.out
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["local"] is True and payload["results"][0]["report"]["local"] is True


def test_local_and_backward_are_a_usage_error(capsys) -> None:
    assert main([*SMALL, "--local", "--backward"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert (
        "error: --backward with --local or --signal calibrated: a backward needs the twin's whole graph"
        in err
    )


def test_a_harness_error_is_exit_3(monkeypatch, capsys) -> None:
    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("parity.signal.check_pair", broken)
    assert main(SMALL) == EXIT_ERROR
    assert "boom" in capsys.readouterr().err


def test_selftest_lists_its_faults(capsys) -> None:
    assert main(["selftest", "--list"]) == EXIT_OK
    out = capsys.readouterr().out
    assert all(f.id in out for f in FAULTS)
    assert main(["selftest", "--fault", "no-such-fault"]) == EXIT_USAGE


def test_convert_round_trip_and_bad_input(tmp_path: Path, capsys) -> None:
    twin = lucid_inception.build("inception_resnet_v1", "torch")
    save_checkpoint(twin, tmp_path / "a.pt")
    assert main(["convert", str(tmp_path / "a.pt"), str(tmp_path / "b.lcd")]) == EXIT_OK
    assert "wrote" in capsys.readouterr().out
    a, b = load_checkpoint_file(tmp_path / "a.pt"), load_checkpoint_file(tmp_path / "b.lcd")
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert main(["convert", str(tmp_path / "a.pt"), str(tmp_path / "b.onnx")]) == EXIT_USAGE
    assert main(["convert", str(tmp_path / "missing.pt"), str(tmp_path / "c.lcd")]) == EXIT_USAGE
    assert "missing.pt" in capsys.readouterr().err


def test_convert_says_what_it_left_out_and_names_the_file_it_could_not_use(tmp_path: Path, capsys) -> None:
    import pickle

    import torch

    twin = lucid_inception.build("inception_resnet_v1", "torch")
    torch.save(twin.state_dict(), tmp_path / "twin.pt")  # with torch's num_batches_tracked counters
    assert main(["convert", str(tmp_path / "twin.pt"), str(tmp_path / "twin.lcd")]) == EXIT_OK
    counters = sum(key.endswith("num_batches_tracked") for key in twin.state_dict())
    assert f"left out {counters} num_batches_tracked counter(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert "except torch's num_batches_tracked" in " ".join(capsys.readouterr().out.split())
    # A destination that is a folder, or in a folder nothing can be written to, is named as
    # given (not as the hidden temporary file); a long valid name is still written.
    (tmp_path / "folder.pt").mkdir()
    long_name = tmp_path / ("m" * 245 + ".lcd")
    for dst, why in (
        (tmp_path / "folder.pt", "folder.pt: is a folder, expected a file name"),
        (Path("/proc/x.lcd"), "/proc/x.lcd: cannot write in folder /proc"),
        (long_name, None),
    ):
        code = main(["convert", str(tmp_path / "twin.pt"), str(dst)])
        err = capsys.readouterr().err
        assert code == (EXIT_OK if why is None else EXIT_USAGE), err
        assert why is None or (why in err and ".folder" not in err and "/proc/." not in err), err
    assert long_name.is_file() and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # lucid.load's own ValueError names no file.
    with open(tmp_path / "old.lcd", "wb") as file:
        pickle.dump({"type": "dict", "format_version": 0.5, "content": {}}, file)
    assert main(["convert", str(tmp_path / "old.lcd"), str(tmp_path / "old.pt")]) == EXIT_USAGE
    assert "old.lcd: not a Lucid .lcd state dict (Incompatible format version" in capsys.readouterr().err


@released_upstream_only
def test_upstream_names_the_stem_bug(tmp_path: Path, capsys) -> None:
    argv = ["upstream", "--model", "inception_resnet_v2", "--size", "75", "--quiet"]
    assert main([*argv, "--json", str(tmp_path / "u.json")]) == EXIT_FAIL
    out = capsys.readouterr().out
    assert "where: stem.branch2_right" in out
    assert "stem.branch2_right: runs in the port (1x), never upstream" in out
    assert "stem.branch2_left: runs 2x upstream, 1x in the port" in out
    result = json.loads((tmp_path / "u.json").read_text())["results"][0]
    assert result["location"] == "stem.branch2_right" and result["first_divergence"].startswith(
        "stem.branch2_"
    )
    # With upstream bug 3 undone the stem is still where they part.
    assert result["unscaled"]["first_divergence"].startswith("stem.branch2_")


@released_upstream_only
def test_upstream_v4_stem_and_v1_residual_scale() -> None:
    v4 = compare_upstream("inception_v4", size=75)
    assert v4.scope == "conv.0" and v4.location == "conv.0.branch2_right" and not v4.agrees
    assert v4.first_divergence.startswith("conv.0.branch2_")
    v1 = compare_upstream("inception_resnet_v1", size=75)
    assert v1.calls == [] and v1.first_divergence.startswith("conv.0")  # bug 3, first residual block
    # With bug 3 undone, what is left is upstream bug 2, which only the layer settings show.
    left = [(r.module, r.kind, r.note) for r in v1.unscaled_report.failures]
    assert left == [("dropout", "config", "p 0.8 vs 0.2")]
    assert "still differs, first at dropout (settings: p 0.8 vs 0.2)" in v1.summary()


@patched_upstream_only
def test_patched_upstream_agrees_with_the_port(capsys) -> None:
    assert main(["upstream", "--size", "75", "--quiet"]) == EXIT_OK, capsys.readouterr().out
    for name in lucid_inception.MODEL_NAMES:
        result = compare_upstream(name, size=75)
        assert result.agrees and result.calls == [] and result.first_divergence is None, result.summary()


def test_the_plot_names_a_setting_that_no_output_shows(monkeypatch, tmp_path: Path) -> None:
    from parity.report import Report, Row

    rows = [
        Row("dropout", "config", None, None, float("inf"), float("inf"), 0.0, False, "p 0.2 vs 0.8"),
        Row("dropout", "output", (1, 4), (1, 4), 0.0, 0.0, 1e-5, True),
    ]
    report = Report(False, "dropout", rows, "float32", ("cpu", "cpu"), ("lucid", "torch"), "A", "B")
    titles: list[str] = []
    monkeypatch.setattr("parity.plot._panel", lambda ax, title, rows, xlabel: titles.append(title))
    plot_reports([("v2", report)], tmp_path / "p.png")
    assert titles == ["v2: outputs (FAIL; settings differ at dropout)"]


def test_each_plot_panel_has_its_own_verdict_and_order(monkeypatch, tmp_path: Path) -> None:
    """Outputs that agree are not titled FAIL because a gradient failed; gradients run in
    backward order, and their axis says so."""
    from parity.plot import plot_format
    from parity.report import Report, Row

    rows = [
        Row("fc", "output", (1, 4), (1, 4), 0.0, 0.0, 1e-5, True),
        Row("fc", "param_grad", (4,), (4,), 1.0, 1.0, 1e-12, False, "bias"),
    ]
    report = Report(False, "fc", rows, "float64", ("cpu", "cpu"), ("lucid", "torch"), "A", "B", backward=True)
    panels: list[tuple[str, str]] = []
    monkeypatch.setattr("parity.plot._panel", lambda ax, title, rows, xlabel: panels.append((title, xlabel)))
    plot_reports([("v1", report)], tmp_path / "p.png")
    assert panels == [
        ("v1: outputs (PASS)", "module, in execution order"),
        ("v1: parameter gradients (FAIL)", "parameter, in backward order (the last module's first)"),
    ]
    with pytest.raises(ValueError, match="unsupported plot suffix .pgf"):  # needs TeX, found too late
        plot_format(tmp_path / "p.pgf")


def test_plot_needs_matplotlib(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(PlotUnavailable, match="pip install"):
        plot_reports([("x", object())], tmp_path / "x.png")


def test_plot_without_matplotlib_fails_before_comparing(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr("parity.signal.check_pair", lambda *a, **k: pytest.fail("compared anyway"))
    assert main([*SMALL, "--plot", str(tmp_path / "x.png")]) == EXIT_USAGE
    assert "matplotlib" in capsys.readouterr().err


def _plugin_args() -> list[str]:
    registered = {ep.name for ep in importlib.metadata.entry_points(group="pytest11")}
    return [] if "parity" in registered else ["-p", "parity.pytest_plugin"]


def test_pytest_plugin_generates_tests_and_reports_failures(tmp_path: Path) -> None:
    # A conftest that breaks the twin's first residual block: the generated test must fail
    # with the parity table, and the fixture-based test must see the same.
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import lucid_inception.twins.inception_resnet as twins
            original = twins.ResNetV1BlockA.__init__
            def init(self, *args, **kwargs):
                original(self, *args, **kwargs)
                self.scale = 0.5
            twins.ResNetV1BlockA.__init__ = init
            """
        )
    )
    (tmp_path / "test_mine.py").write_text(
        "def test_mine(parity_pair):\n"
        "    result = parity_pair('inception_resnet_v1', check_liveness=False)\n"
        "    assert not result.ok and result.report.first_divergence.startswith('conv.0')\n"
    )
    command = [sys.executable, "-m", "pytest", *_plugin_args(), "-p", "no:cacheprovider", str(tmp_path)]
    command += ["--parity", "--parity-size", "75", "--parity-model", "inception_resnet_v1", "-q"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 failed, 1 passed" in done.stdout
    assert "parity[inception_resnet_v1-float32-lucid_cpu-torch_cpu]" in done.stdout
    assert "first divergence      conv.0" in done.stdout


def test_pytest_plugin_compares_gradients_at_batch_2(tmp_path: Path) -> None:
    argv = ["--parity", "--parity-size", "75", "--parity-model", "inception_resnet_v1", "-q"]
    argv += ["--parity-dtype", "float64", "--parity-backward"]
    done = _pytest(tmp_path, *argv)
    if upstream_is_released():  # lucid-dl 2.9.0: broadcast gradients wrong at batch > 1
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
        assert "input                 2x3x75x75" in done.stdout
        assert "first divergence      fc" in done.stdout
    else:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    done = _pytest(tmp_path, *argv, "--parity-batch", "1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]  # batch 1 hides the bug
    assert "--parity-backward at --parity-batch 1: batch-1 gradients cannot show" in done.stdout


def test_pytest_plugin_compares_a_calibrated_signal_locally(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pytest", *_plugin_args(), "-p", "no:cacheprovider", str(tmp_path)]
    command += ["--parity", "--parity-size", "75", "--parity-model", "inception_v4", "-q"]
    done = subprocess.run(
        [*command, "--parity-signal", "calibrated"], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    refused = subprocess.run(
        [*command, "--parity-local", "--parity-backward"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert refused.returncode == pytest.ExitCode.USAGE_ERROR
    assert (
        "--parity-backward with --parity-local or --parity-signal calibrated: a backward needs"
        in refused.stderr
    )


def test_pytest_plugin_require_devices_fails_an_absent_device(tmp_path: Path) -> None:
    """Lucid's 'gpu' cannot hold float64 on any machine: the generated test and the fixture's
    check skip it, and fail it under --parity-require-devices."""
    (tmp_path / "test_fixture.py").write_text(
        "def test_mine(parity_pair):\n"
        "    parity_pair.check(parity_pair('inception_resnet_v1', check_liveness=False))\n"
    )
    argv = ["--parity", "--parity-size", "75", "--parity-model", "inception_resnet_v1", "-q", "-rs"]
    argv += ["--parity-dtype", "float64", "--parity-devices", "lucid=gpu"]
    done = _pytest(tmp_path, *argv)
    assert done.returncode == 0 and "2 skipped" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    done = _pytest(tmp_path, *argv, "--parity-require-devices")
    assert done.returncode == 1 and "2 failed" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert "--parity-require-devices: lucid device 'gpu' cannot compare in float64" in done.stdout


def test_pytest_plugin_quiets_openblas_only_for_a_parity_session(tmp_path: Path) -> None:
    (tmp_path / "test_env.py").write_text(
        "import os\ndef test_env():\n    print('TIMEOUT=' + str(os.environ.get('OPENBLAS_THREAD_TIMEOUT')))\n"
    )
    command = [sys.executable, "-m", "pytest", *_plugin_args(), "-p", "no:cacheprovider", str(tmp_path)]
    command += ["-q", "-s", "-k", "test_env"]
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    for extra, seen in (([], "TIMEOUT=None"), (["--parity"], "TIMEOUT=4")):
        done = subprocess.run([*command, *extra], capture_output=True, text=True, cwd=tmp_path, env=env)
        assert done.returncode == 0 and seen in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]


def test_cli_module_runs_as_python_dash_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "parity", "selftest", "--list"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "missing-relu" in done.stdout
    assert cli.EXIT_FAIL == 1


# ------------------------------------------------------------------- package and process


def _run_python(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"} | env
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True
    )
    return done.stdout.strip()


def test_importing_parity_or_its_pytest_plugin_loads_no_framework() -> None:
    """Every pytest session of the environment imports the plugin; ``python -m parity``
    must set OpenBLAS's timeout before numpy loads."""
    loaded = _run_python(
        "import sys, parity, parity.pytest_plugin; "
        "print(sorted(m for m in ('numpy', 'torch', 'lucid', 'mlx') if m in sys.modules))"
    )
    assert loaded == "[]"


def test_the_package_exports_resolve_even_after_the_submodule_is_imported() -> None:
    import parity
    import parity.comparison  # binds the attribute ``comparison``, not ``compare``

    assert set(parity.__all__) == set(parity._EXPORTS)
    for name in parity.__all__:
        assert getattr(parity, name) is getattr(importlib.import_module(parity._EXPORTS[name]), name)
    assert callable(parity.compare) and parity.compare.__module__ == "parity.comparison"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        parity.nothing  # noqa: B018


def test_python_m_parity_quiets_openblas_unless_the_user_chose() -> None:
    run_cli = (
        "import os, runpy, sys; sys.argv = ['parity', '--help']\n"
        "try:\n    runpy.run_module('parity', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    )
    assert _run_python(run_cli).splitlines()[-1] == "4"
    assert _run_python(run_cli, OPENBLAS_THREAD_TIMEOUT="9").splitlines()[-1] == "9"


# Wraps quiet_openblas_workers to record, at each call, whether numpy had loaded: OpenBLAS
# reads its setting once, when numpy loads, so a later call changes nothing.
_SPY_ON_OPENBLAS = (
    "import sys, parity._openblas as openblas\n"
    "numpy_loaded_at_call = []\n"
    "real = openblas.quiet_openblas_workers\n"
    "def spy(*args, **kwargs):\n"
    "    numpy_loaded_at_call.append('numpy' in sys.modules)\n"
    "    return real(*args, **kwargs)\n"
    "openblas.quiet_openblas_workers = spy\n"
)


def test_python_m_parity_sets_openblas_before_numpy_loads() -> None:
    code = _SPY_ON_OPENBLAS + (
        "import runpy; sys.argv = ['parity', '--help']\n"
        "try:\n    runpy.run_module('parity', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('numpy loaded at call:', numpy_loaded_at_call)"
    )
    assert _run_python(code).splitlines()[-1] == "numpy loaded at call: [False]"


def test_pytest_parity_sets_openblas_before_numpy_loads(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text("def test_x():\n    pass\n")
    argv = [*_plugin_args(), "-p", "no:cacheprovider", "-q", "--collect-only", "--parity", str(tmp_path)]
    code = _SPY_ON_OPENBLAS + (
        f"import pytest; pytest.main({argv!r})\nprint('numpy loaded at call:', numpy_loaded_at_call)"
    )
    assert _run_python(code).splitlines()[-1] == "numpy loaded at call: [False]"


# ----- unusable output paths and input files: exit 2, one line, before any comparing


@pytest.fixture
def never_compares(monkeypatch) -> None:
    def ran(*_args, **_kwargs):
        raise AssertionError("compared before the usage error")

    for name in ("check_pair",):
        monkeypatch.setattr(f"parity.signal.{name}", ran)
    monkeypatch.setattr("parity.selftest.run_selftest", ran)
    monkeypatch.setattr("parity.upstream.compare_upstream", ran)


@pytest.mark.parametrize(
    ("option", "name", "message"),
    [
        ("--json", ".", "is a folder"),
        ("--json", "a-file/r.json", "cannot create folder a-file"),
        ("--plot", "r.xyz", "unsupported plot suffix .xyz; supported: "),
        ("--plot", "r", "unsupported plot suffix (none)"),
        ("--plot", "a-folder.png", "is a folder"),
        ("--plot", "a-file/r.png", "cannot create folder a-file"),
    ],
)
def test_an_unwritable_output_is_a_usage_error_before_the_run(
    tmp_path: Path, monkeypatch, capsys, never_compares, option: str, name: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder.png").mkdir()
    commands = [[], ["selftest"], ["upstream"]] if option == "--json" else [[]]  # only check plots
    for command in commands:
        assert main([*command, *SMALL, option, name]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err and err.startswith(f"error: {option} ")
    assert sorted(os.listdir(tmp_path)) == ["a-file", "a-folder.png"]


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_a_missing_output_folder_is_created_before_the_run(tmp_path: Path, option: str) -> None:
    """As before the up-front check: ``--json new/dir/r.json`` creates new/dir."""
    target = tmp_path / "new" / "dir" / f"r.{'json' if option == '--json' else 'png'}"
    args = argparse.Namespace(**{"json": None, "plot": None, option[2:]: target})
    assert cli._output_problem(args) is None
    assert target.parent.is_dir() and not target.exists()


def test_the_umask_is_read_without_setting_it_on_linux(tmp_path: Path, monkeypatch) -> None:
    """os.umask(0) + restore races other threads creating files: Linux reads /proc."""
    from parity import _files

    if not Path("/proc/self/status").exists():
        pytest.skip("no /proc")
    old = os.umask(0o027)
    try:

        def no_umask(_mask: int) -> int:
            raise AssertionError("os.umask called")

        monkeypatch.setattr(os, "umask", no_umask)
        assert _files._mode_for(tmp_path / "new.json") == 0o640
    finally:
        monkeypatch.undo()
        os.umask(old)


def test_json_and_plot_are_written_whole_with_an_ordinary_mode(tmp_path: Path, monkeypatch) -> None:
    old = os.umask(0o022)
    try:
        target = tmp_path / "r.json"
        target.write_text("the old report")
        os.chmod(target, 0o640)
        with pytest.raises(ValueError, match="Out of range float"):
            cli._write_json(target, {"x": float("nan")})
        assert target.read_text() == "the old report" and os.listdir(tmp_path) == ["r.json"]

        def disk_full(path: Path, text: str) -> None:
            with open(path, "w") as file:
                file.write(text[:3])
            raise OSError("disk full")

        with monkeypatch.context() as patch:
            patch.setattr(Path, "write_text", disk_full)
            with pytest.raises(OSError, match="disk full"):
                cli._write_json(target, {"x": 1})
        assert target.read_text() == "the old report" and os.listdir(tmp_path) == ["r.json"]
        cli._write_json(target, {"x": 1})
        assert json.loads(target.read_text()) == {"x": 1}
        assert (target.stat().st_mode & 0o777) == 0o640  # a replaced file keeps its mode
        cli._write_json(tmp_path / "new.json", {"x": 1})
        assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_convert_writes_an_ordinary_mode_and_refuses_unreadable_files(tmp_path: Path, capsys) -> None:
    import torch

    old = os.umask(0o022)
    try:
        torch.save({"w": torch.zeros(2)}, tmp_path / "a.pt")
        assert main(["convert", str(tmp_path / "a.pt"), str(tmp_path / "b.lcd")]) == EXIT_OK
        assert (tmp_path / "b.lcd").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
    capsys.readouterr()

    # A pickle (protocol 0) of an object whose class lives in a module that is not installed.
    (tmp_path / "gone.lcd").write_bytes(b"cno_such_module_anywhere\nGone\n(tR.")
    # A protocol-4 frame claiming 2^64 - 1 bytes: pickle raises OverflowError.
    (tmp_path / "frame.lcd").write_bytes(b"\x80\x04\x95" + b"\xff" * 8)
    # A torch archive whose pickle builds a tuple from an empty stack: IndexError.
    with zipfile.ZipFile(tmp_path / "a.pt") as good, zipfile.ZipFile(tmp_path / "stack.pt", "w") as bad:
        for item in good.infolist():
            data = good.read(item)
            bad.writestr(item, b"\x80\x02\x86." if item.filename.endswith("data.pkl") else data)
    for src in ("gone.lcd", "frame.lcd", "stack.pt"):
        assert main(["convert", str(tmp_path / src), str(tmp_path / "out.lcd")]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and f"{src}: not a state dict" in err, err
    assert not (tmp_path / "out.lcd").exists()


def test_convert_says_plainly_why_a_file_is_no_torch_checkpoint(tmp_path: Path, capsys) -> None:
    """torch.load's advice (re-run with weights_only=False, allow-list a global, file an
    issue) is wrong for a file that is no pickle, unsafe for one that is, and nothing the CLI
    can do: the one line says what is wrong instead."""
    import torch

    (tmp_path / "text.pt").write_text("not a checkpoint")
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"w": np.zeros(2)}, tmp_path / "numpy.pt")  # a pickled numpy array, no tensor
    torch.save({"w": torch.zeros(2)}, tmp_path / "a.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "a.pt").read_bytes()[:200])
    why = {
        "text.pt": "(Unsupported operand 110)",
        "empty.pt": "(EOFError: the file ends early)",
        "numpy.pt": "(Unsupported global: GLOBAL numpy.",
        "cut.pt": "(PytorchStreamReader failed reading zip archive",
    }
    for src, reason in why.items():
        assert main(["convert", str(tmp_path / src), str(tmp_path / "out.lcd")]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert f"{src}: not a torch state dict saved with torch.save {reason}" in err, err
        assert "weights_only" not in err and "Re-running" not in err and "add_safe_globals" not in err, err
    assert not (tmp_path / "out.lcd").exists()


def test_convert_to_an_upper_case_suffix_and_through_a_symbolic_link(tmp_path: Path, capsys) -> None:
    """``.LCD`` passes the suffix check, so it must be written (``lucid.save`` knows ``.lcd``
    only); a link to the output stays a link, and the file it names gets the checkpoint."""
    import torch

    torch.save({"w": torch.arange(3.0)}, tmp_path / "a.pt")
    assert main(["convert", str(tmp_path / "a.pt"), str(tmp_path / "b.LCD")]) == EXIT_OK, capsys.readouterr()
    assert np.array_equal(load_checkpoint_file(tmp_path / "b.LCD")["w"], [0.0, 1.0, 2.0])
    (tmp_path / "real.pt").write_bytes(b"old")
    (tmp_path / "link.pt").symlink_to("real.pt")
    assert main(["convert", str(tmp_path / "b.LCD"), str(tmp_path / "link.pt")]) == EXIT_OK
    assert (tmp_path / "link.pt").is_symlink()
    assert np.array_equal(load_checkpoint_file(tmp_path / "real.pt")["w"], [0.0, 1.0, 2.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.LCD", "link.pt", "real.pt"]


@pytest.mark.parametrize("name", ["m" * 245 + ".lcd", "results_v1." + "x" * 239, "é" * 100 + ".json"])
def test_an_atomic_write_takes_any_name_the_file_system_takes(tmp_path: Path, name: str) -> None:
    """The temporary file's name must be valid wherever the target's is: it kept the whole
    name (then its whole last "suffix") and failed near the 255-byte limit."""
    from parity import _files

    _files.write_atomically(tmp_path / name, lambda tmp: tmp.write_text("whole"))
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_an_atomic_write_reaches_the_disk_before_its_name_does(tmp_path: Path, monkeypatch) -> None:
    from parity import _files

    synced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (synced.append("replace"), real_replace(a, b))[1])
    _files.write_atomically(tmp_path / "out.txt", lambda tmp: tmp.write_text("whole"))
    assert synced == ["fsync", "replace", "fsync"]  # the data, the rename, the folder
    assert (tmp_path / "out.txt").read_text() == "whole"


_TERMINATED_WRITE = """
import os, signal, sys, time
from pathlib import Path
from parity._files import write_atomically

def write(tmp: Path) -> None:
    tmp.write_text("half")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)

write_atomically(Path(sys.argv[1]), write)
"""


def test_a_sigterm_mid_write_leaves_no_temporary_file_and_the_old_file(tmp_path: Path) -> None:
    (tmp_path / "out.pt").write_text("old")
    command = [sys.executable, "-c", _TERMINATED_WRITE, str(tmp_path / "out.pt")]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1]
    )
    assert result.returncode == 128 + 15, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out.pt"] and (tmp_path / "out.pt").read_text() == "old"


def test_a_nan_liveness_change_survives_strict_json() -> None:
    from parity.signal import BlockLiveness, LivenessReport

    report = LivenessReport([BlockLiveness("conv.0", float("nan"), 1e-3, False)], tol=1e-6, factor=1000.0)
    assert json.loads(json.dumps(report.to_dict(), allow_nan=False))["blocks"][0]["change"] == "nan"


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", *_plugin_args(), "-p", "no:cacheprovider", str(tmp_path)]
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=tmp_path, timeout=600)


@pytest.mark.parametrize(
    ("selection", "counted", "listed"),
    [
        ([], "2 tests collected", 2),
        (["-k", "nothing_matches"], "no tests collected (2 deselected)", 0),
        (["-m", "not slow"], "1/2 tests collected (1 deselected)", 1),  # parity at 299 is slow
        (["-k", "parity"], "1/2 tests collected (1 deselected)", 1),
    ],
)
def test_pytest_plugin_counts_its_tests_and_deselects_them(
    tmp_path: Path, selection: list[str], counted: str, listed: int
) -> None:
    (tmp_path / "test_a.py").write_text("def test_x():\n    pass\n")
    done = _pytest(tmp_path, "--parity", "--parity-model", "inception_v4", "--collect-only", "-q", *selection)
    assert done.returncode in (0, pytest.ExitCode.NO_TESTS_COLLECTED), done.stdout + done.stderr
    assert counted in done.stdout, done.stdout
    assert sum("::" in line for line in done.stdout.splitlines()) == listed, done.stdout


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--parity-batch", "0"], "--parity-batch: expected a positive integer, got 0"),
        (["--parity-seed", "-1"], "--parity-seed: expected a non-negative integer, got -1"),
        (["--parity-size", "74"], "--parity-size: expected a size >= 75"),
    ],
)
def test_pytest_plugin_bad_options_are_usage_errors(tmp_path: Path, option: list[str], message: str) -> None:
    done = _pytest(tmp_path, "--parity", *option)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert message in done.stderr


def test_pytest_plugin_fixture_takes_the_backward_option(tmp_path: Path) -> None:
    (tmp_path / "test_fixture.py").write_text(
        textwrap.dedent(
            """
            import parity.signal

            def test_defaults(parity_pair, monkeypatch):
                seen = []
                monkeypatch.setattr(parity.signal, "check_pair", lambda model, **kw: seen.append(kw))
                parity_pair("inception_v4")
                parity_pair("inception_v4", dtype="float32")
                parity_pair("inception_v4", backward=False)
                print("SEEN", [(kw["dtype"], kw["backward"]) for kw in seen])
            """
        )
    )
    done = _pytest(tmp_path, "-q", "-s", "--parity-backward")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SEEN [('float64', True), ('float32', False), ('float64', False)]" in done.stdout
    done = _pytest(tmp_path, "-q", "-s", "--parity-backward", "--parity-dtype", "float64")
    assert "SEEN [('float64', True), ('float32', False), ('float64', False)]" in done.stdout


def test_a_divergence_at_the_root_is_named_not_dashed() -> None:
    from parity import compare
    from parity.signal import ParityResult

    from .test_parity_edges import X, torch_pair

    a, b = torch_pair("float64")
    inner = b.forward
    b.forward = lambda x: inner(x) * 2  # the logits, after every module returned
    report = compare(a, b, X, dtype="float64")
    assert report.first_divergence == ""
    result = ParityResult("tiny", "float64", ("cpu", "cpu"), report, None, 0, 0, 8, 2)
    assert "first divergence      <model>" in tables.render_result(result, 3)
    assert result.explain(3) == tables.render_result(result, 3)  # what a failing pytest shows
    overall = tables.render_overall([result]).splitlines()[-1].split()
    assert overall[3:5] == ["FAIL", "<model>"]
