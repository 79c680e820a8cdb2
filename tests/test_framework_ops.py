"""Differential conformance of the Lucid ops the models use, against torch (conformance/ops/).

Every case must come out exactly as declared for the installed Lucid version; planted bugs
(monkeypatched Lucid ops, wrong declarations) must be caught.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import lucid
import lucid.nn.functional as LF
import numpy as np
import pytest

from conformance import ops
from conformance.ops.known import version_matches
from lucid_inception.frameworks import LucidAdapter, TorchAdapter

VERSION = ops.lucid_version()
BY_NAME = {c.name: c for c in ops.CASES}
LUCID_GPU_MISSING = LucidAdapter.device_unavailable("gpu")
TORCH_CUDA_MISSING = TorchAdapter.device_unavailable("cuda")


def _case(name: str) -> ops.OpCase:
    return BY_NAME[name]


@pytest.mark.parametrize("dtype", ops.DTYPES)
@pytest.mark.parametrize("case", ops.CASES, ids=lambda c: c.name)
def test_case_comes_out_as_declared(case: ops.OpCase, dtype: str) -> None:
    r = ops.run_case(case, dtype, version=VERSION)
    assert r.verdict == r.expected_verdict, (
        f"{r.case} [{dtype}] on lucid {VERSION}: {r.verdict}, declared "
        f"{r.expected_verdict} ({', '.join(r.expected) or 'no deviation'}): {r.message}"
    )


def test_case_names_are_unique_and_declarations_known() -> None:
    names = [c.name for c in ops.CASES]
    assert len(names) == len(set(names))
    for c in ops.CASES:
        assert set(c.expect) <= set(ops.KNOWN), c.name


def test_broadcast_gradient_bug_is_found_on_the_broadcast_operand() -> None:
    known = ops.KNOWN["broadcast-gradient"]
    if not known.applies(VERSION, "cpu", "float32"):
        pytest.skip(f"lucid {VERSION} is outside broadcast-gradient's range {known.lucid}")
    for dtype in ops.DTYPES:
        for name in ("add_broadcast_c", "add_broadcast_1c11"):
            r = ops.run_case(_case(name), dtype, version=VERSION)
            assert r.failing == ("grad:b",), (name, dtype, r.message)
            # An O(1) error, not rounding; forward and the full-shape operand are exact.
            assert r.check("grad:b").max_rel > 0.1
            assert r.check("grad:x").max_rel == 0.0
            assert r.check("out").max_rel == 0.0
        same = ops.run_case(_case("add_same_shape"), dtype, version=VERSION)
        assert same.verdict == "pass" and same.failing == ()


def test_bias_gradient_is_the_only_conv_failure_on_affected_versions() -> None:
    if not ops.KNOWN["broadcast-gradient"].applies(VERSION, "cpu", "float64"):
        pytest.skip(f"lucid {VERSION}: broadcast-gradient not expected")
    r = ops.run_case(_case("conv2d_3x3_s2_valid"), "float64", version=VERSION)
    assert r.failing == ("grad:bias",)
    for q in ("out", "grad:x", "grad:weight"):
        assert r.check(q).max_rel < 1e-14, q


# --- planted bugs ---------------------------------------------------------------------


def _dropout_keep_prob(input_: lucid.Tensor, p: float = 0.5, training: bool = True):
    """Planted: p read as the KEEP probability."""
    if not training:
        return input_
    mask = (lucid.random.rand(*input_.shape) > 1 - p).free()
    return input_ * mask * (1.0 / (1 - p))


def _dropout_unscaled(input_: lucid.Tensor, p: float = 0.5, training: bool = True):
    """Planted: no inverted scaling."""
    if not training:
        return input_
    mask = (lucid.random.rand(*input_.shape) > p).free()
    return input_ * mask


@pytest.mark.parametrize(
    ("planted", "caught"),
    [
        (_dropout_keep_prob, ("drop_fraction",)),
        (_dropout_unscaled, ("kept_value", "grad:x")),
    ],
    ids=["p-as-keep-probability", "no-keep-scaling"],
)
def test_planted_dropout_bug_is_caught(
    monkeypatch: pytest.MonkeyPatch, planted, caught: tuple[str, ...]
) -> None:
    monkeypatch.setattr(LF, "dropout", planted)
    r = ops.run_case(_case("dropout_p0.2_train"), "float32", version=VERSION)
    assert r.verdict == "fail"
    assert r.failing == caught, r.message


@pytest.mark.parametrize("dtype", ops.DTYPES)
def test_planted_gradient_error_of_ten_tolerances_is_caught(
    monkeypatch: pytest.MonkeyPatch, dtype: str
) -> None:
    # Every gradient Lucid accumulates is off by 10 tolerances, relative.
    factor = 1 + 10 * ops.TOLERANCE[dtype]
    real = lucid._set_tensor_grad

    def skewed(tensor, grad, at=...):
        return real(tensor, grad * np.asarray(factor, dtype=grad.dtype), at)

    monkeypatch.setattr(lucid, "_set_tensor_grad", skewed)
    for name, grads in (("relu", ("grad:x",)), ("concat_axis1", ("grad:a", "grad:b", "grad:c"))):
        r = ops.run_case(_case(name), dtype, version=VERSION)
        assert r.verdict == "fail", r.message
        assert r.failing == grads
        for q in grads:
            assert 5 * r.check(q).tol < r.check(q).max_rel < 20 * r.check(q).tol


def test_planted_wrong_output_shape_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    real = LF.max_pool2d

    def stride_one(x, kernel_size=1, stride=1, padding=0):  # planted: stride ignored
        return real(x, kernel_size, 1, padding)

    monkeypatch.setattr(LF, "max_pool2d", stride_one)
    r = ops.run_case(_case("maxpool_3x3_s2_valid"), "float32", version=VERSION)
    assert r.verdict == "error" and not r.ok
    assert "output shape (2, 3, 7, 7) != (2, 3, 4, 4)" in r.message


def test_declared_failure_that_passes_is_an_unexpected_pass() -> None:
    case = dataclasses.replace(
        _case("avgpool_3x3_s1_p1_count_include_pad"),
        expect={"avgpool-count-include-pad": ("out", "grad:x")},
    )
    r = ops.run_case(case, "float64", version=VERSION)
    assert r.verdict == "unexpected-pass" and not r.ok


def test_failure_other_than_declared_is_a_failure() -> None:
    case = dataclasses.replace(
        _case("avgpool_3x3_s1_p1_exclude_pad"),
        expect={"avgpool-count-include-pad": ("out",)},
    )
    r = ops.run_case(case, "float64", version=VERSION)
    assert r.verdict == "fail"
    assert set(r.failing) == {"out", "grad:x"}


def test_wrong_torch_reference_is_caught() -> None:
    # The exclude-pad case stripped of its declaration: a plain mismatch.
    case = dataclasses.replace(_case("avgpool_3x3_s1_p1_exclude_pad"), expect={})
    r = ops.run_case(case, "float32", version=VERSION)
    assert r.verdict == "fail" and set(r.failing) == {"out", "grad:x"}


# --- versions, input checks, command line ----------------------------------------------


@pytest.mark.parametrize(
    ("spec", "version", "want"),
    [
        ("*", "2.9.0", True),
        ("<=2.9.0", "2.9.0", True),
        ("<=2.9.0", "2.9", True),
        ("<=2.9.0", "2.16.0", False),
        ("<2.16", "2.15.9", True),
        (">=2.0,<2.16", "2.16.0", False),
        ("==2.9.0", "2.9.0.post1", True),
    ],
)
def test_version_specs(spec: str, version: str, want: bool) -> None:
    assert version_matches(spec, version) is want


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="float32, float64"):
        ops.run_cases(("float16",))
    with pytest.raises(TypeError, match="sequence"):
        ops.run_cases("float32")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cpu, gpu"):
        ops.run_cases(("float32",), "mps")
    with pytest.raises(ValueError, match="conv2d_1x1"):
        ops.select_cases("no_such_case*")
    with pytest.raises(ValueError, match="version spec"):
        version_matches("~=2.9", "2.9.0")


def test_cuda_reference_refused_without_cuda() -> None:
    if TORCH_CUDA_MISSING is None:
        pytest.skip("torch has CUDA here")
    with pytest.raises(ValueError, match="cuda"):
        ops.run_cases(("float32",), torch_device="cuda")


def _cli(args: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    ops.add_ops_command(sub)
    ns = parser.parse_args(["ops", *args])
    return ns.func(ns)


def test_cli_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["--case", "add_*", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "add_same_shape" in out and "forward max rel err" in out
    assert _cli(["--case", "linear", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [r["dtype"] for r in payload["results"]] == ["float32", "float64"]
    assert payload["lucid_version"] == VERSION


def test_cli_exit_code_is_1_on_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(LF, "dropout", _dropout_unscaled)
    assert _cli(["--case", "dropout_*_train", "--dtype", "float64"]) == 1
    assert "FAIL: dropout_p0.2_train" in capsys.readouterr().err


# --- devices ---------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(LUCID_GPU_MISSING is not None, reason=str(LUCID_GPU_MISSING))
def test_lucid_gpu_comes_out_as_declared() -> None:
    bad = [r for r in ops.run_cases(lucid_device="gpu") if not r.ok]
    assert not bad, [(r.case, r.dtype, r.verdict, r.message) for r in bad]


@pytest.mark.gpu
@pytest.mark.skipif(TORCH_CUDA_MISSING is not None, reason=str(TORCH_CUDA_MISSING))
def test_torch_cuda_reference_comes_out_as_declared() -> None:
    bad = [r for r in ops.run_cases(torch_device="cuda") if not r.ok]
    assert not bad, [(r.case, r.dtype, r.verdict, r.message) for r in bad]
