"""Differential conformance of the Lucid ops the models use, against torch (conformance/ops/).

Every case must come out exactly as declared for the installed Lucid version; planted bugs
(monkeypatched Lucid ops, wrong declarations) must be caught.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import lucid
import lucid.nn as lnn
import lucid.nn.functional as LF
import mlx.core as mx
import numpy as np
import pytest
import torch

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


def _dropout_fixed_mask(input_: lucid.Tensor, p: float = 0.5, training: bool = True):
    """Planted: the same mask on every call (an RNG that never advances)."""
    if not training:
        return input_
    mask = (np.random.default_rng(0).random(input_.shape) > p).astype(input_.data.dtype)
    return input_ * lucid.Tensor(mask) * (1.0 / (1 - p))


def _dropout_first_elements(input_: lucid.Tensor, p: float = 0.5, training: bool = True):
    """Planted: no randomness at all, always drops the first p of the elements."""
    if not training:
        return input_
    mask = np.ones(input_.shape, dtype=input_.data.dtype).reshape(-1)
    mask[: round(p * mask.size)] = 0
    return input_ * lucid.Tensor(mask.reshape(input_.shape)) * (1.0 / (1 - p))


@pytest.mark.parametrize("dtype", ops.DTYPES)
@pytest.mark.parametrize(
    ("planted", "caught"),
    [
        (_dropout_keep_prob, ("drop_fraction", "block_drop_fraction")),
        (_dropout_unscaled, ("kept_value", "grad:x")),
        (_dropout_fixed_mask, ("changed_on_redraw",)),
        (_dropout_first_elements, ("block_drop_fraction", "changed_on_redraw")),
    ],
    ids=["p-as-keep-probability", "no-keep-scaling", "same-mask-every-call", "drops-first-elements"],
)
def test_planted_dropout_bug_is_caught(
    monkeypatch: pytest.MonkeyPatch, planted, caught: tuple[str, ...], dtype: str
) -> None:
    monkeypatch.setattr(LF, "dropout", planted)
    r = ops.run_case(_case("dropout_p0.2_train"), dtype, version=VERSION)
    assert r.verdict == "fail"
    assert set(r.failing) == set(caught), r.message


def test_dropout_case_leaves_the_callers_rngs_as_found() -> None:
    """The case seeds the RNG Lucid's dropout draws from (NumPy's); the caller's NumPy and
    MLX draws and ``lucid.random.get_seed()`` come out as without it."""

    def draws() -> tuple[float, float, object]:
        return np.random.rand(), float(mx.random.uniform()), lucid.random.get_seed()

    lucid.random.seed(123)
    without = draws()
    lucid.random.seed(123)
    r = ops.run_case(_case("dropout_p0.2_train"), "float32", version=VERSION)
    assert r.verdict == "pass", r.message
    assert draws() == without


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


# --- bugs hiding behind a declaration: a known-bug verdict needs more than the failing set


def _needs_broadcast_bug() -> None:
    if not ops.KNOWN["broadcast-gradient"].applies(VERSION, "cpu", "float64"):
        pytest.skip(f"lucid {VERSION}: broadcast-gradient not expected")


def _plant_bn_grad_x(monkeypatch: pytest.MonkeyPatch) -> None:
    """BatchNorm's input gradient off by 0.3 x upstream; forward unchanged."""
    real = lnn.BatchNorm2d.forward
    monkeypatch.setattr(
        lnn.BatchNorm2d, "forward", lambda self, x: real(self, x) + (x * 0.3 - (x * 0.3).detach())
    )


def _plant_bn_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    """BatchNorm's weight gradient skewed; forward unchanged."""
    real = lnn.BatchNorm2d.forward

    def forward(self, x):
        out = real(self, x)
        w = self.weight.reshape(1, -1, 1, 1)
        return out + (out * 0 + 1) * (w - w.detach()) * 5.0

    monkeypatch.setattr(lnn.BatchNorm2d, "forward", forward)


def _plant_conv_bias_inf(monkeypatch: pytest.MonkeyPatch) -> None:
    """The conv bias gradient overflows (inf in float32 already at batch 2)."""
    real = lnn.Conv2d.forward

    def forward(self, x):
        b = self.bias.reshape(1, -1, 1, 1)
        return real(self, x) + (b - b.detach()) * 1e30 * 1e30

    monkeypatch.setattr(lnn.Conv2d, "forward", forward)


def _plant_linear_bias(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Linear bias gradient times 8; forward unchanged."""
    real = lnn.Linear.forward
    monkeypatch.setattr(
        lnn.Linear, "forward", lambda self, x: real(self, x) + (self.bias - self.bias.detach()) * 7.0
    )


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", ops.DTYPES)
@pytest.mark.parametrize(
    ("plant", "cases"),
    [
        (_plant_bn_grad_x, ("batchnorm2d_train",)),
        (_plant_bn_weight, ("batchnorm2d_train", "batchnorm2d_eval")),
        (_plant_conv_bias_inf, ("conv2d_1x1",)),
        (_plant_linear_bias, ("linear",)),
    ],
    ids=["bn-grad-x", "bn-weight", "conv-bias-inf", "linear-bias-x8"],
)
def test_other_bug_on_the_declared_quantities_is_a_failure(
    monkeypatch: pytest.MonkeyPatch, plant, cases: tuple[str, ...], dtype: str
) -> None:
    """Each plant puts exactly the quantities declared for broadcast-gradient out of tolerance
    on 2.9.0, which alone read ``known-bug``; it survives batch 1 (or is not finite), so it
    is not that bug."""
    _needs_broadcast_bug()
    plant(monkeypatch)
    for name in cases:
        r = ops.run_case(_case(name), dtype, version=VERSION)
        assert set(r.failing) == set(_case(name).expect["broadcast-gradient"]), r.message
        assert r.verdict == "fail", f"{name} [{dtype}]: {r.verdict}: {r.message}"
        assert "batch-1 twin fails" in r.message or "never a known deviation" in r.message


def test_non_finite_declared_quantity_is_never_the_known_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_broadcast_bug()
    _plant_conv_bias_inf(monkeypatch)
    with np.errstate(over="ignore"):
        r = ops.run_case(_case("conv2d_1x1"), "float32", version=VERSION)
    assert r.verdict == "fail" and "non-finite" in r.message and "never a known deviation" in r.message


@pytest.mark.parametrize("dtype", ops.DTYPES)
def test_real_broadcast_bug_reads_known_bug_and_vanishes_in_the_batch_1_twin(dtype: str) -> None:
    _needs_broadcast_bug()
    for name in ("batchnorm2d_train", "batchnorm2d_eval", "conv2d_1x1", "linear", "add_broadcast_c"):
        r = ops.run_case(_case(name), dtype, version=VERSION)
        assert r.verdict == "known-bug", f"{name} [{dtype}]: {r.message}"
        twin = dataclasses.replace(_case(name), expect={}, make=_first_sample(_case(name)))
        t = ops.run_case(twin, dtype, version=VERSION)
        assert t.verdict == "pass", f"{name} [{dtype}] at batch 1: {t.message}"


def _first_sample(case: ops.OpCase):
    def make(rng: np.random.Generator, dtype: str):
        return {k: (v[:1] if k in case.batch_keys else v) for k, v in case.make(rng, dtype).items()}

    return make


def test_every_case_declaring_a_batch_1_bug_has_a_batch_1_twin() -> None:
    from conformance.ops.runner import _batch_1

    vanishing = {k.id for k in ops.KNOWN.values() if k.vanishes_at_batch_1}
    declaring = [c for c in ops.CASES if vanishing & set(c.expect)]
    assert declaring
    for case in declaring:
        data = case.make(np.random.default_rng(case.seed), "float32")
        twin = _batch_1(case, data)
        assert all(twin[k].shape[0] == 1 < data[k].shape[0] for k in case.batch_keys), case.name
    with pytest.raises(ValueError, match="no common batch axis"):
        _batch_1(dataclasses.replace(declaring[0], batch_keys=("nope",)), data)


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


def _fp32_precision() -> tuple[str, str]:
    return torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision


def test_torch_side_runs_forward_and_backward_without_tf32(monkeypatch: pytest.MonkeyPatch) -> None:
    """The torch reference runs inside ``TorchAdapter.precise()`` (on CUDA, float32
    convolutions would otherwise be TF32); the switches are read inside the forward and the
    backward, which need no CUDA, and are put back after."""
    seen: dict[str, tuple[str, str]] = {}
    conv_forward, backward = torch.nn.Conv2d.forward, TorchAdapter.backward

    def spy_forward(self, x):
        seen["forward"] = _fp32_precision()
        return conv_forward(self, x)

    def spy_backward(output, grad):
        seen["backward"] = _fp32_precision()
        return backward(output, grad)

    monkeypatch.setattr(torch.nn.Conv2d, "forward", spy_forward)
    monkeypatch.setattr(TorchAdapter, "backward", staticmethod(spy_backward))
    # Set by hand: monkeypatch would delete these switches on undo (they live behind __getattr__).
    saved = _fp32_precision()
    try:
        torch.backends.cudnn.conv.fp32_precision = "tf32"
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        r = ops.run_case(_case("conv2d_1x1"), "float32", version=VERSION)
        after = _fp32_precision()
    finally:
        torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = saved
    assert r.verdict == r.expected_verdict, r.message
    assert seen == {"forward": ("ieee", "ieee"), "backward": ("ieee", "ieee")}
    assert after == ("tf32", "tf32")


# Lucid 'gpu' in float64 is the mlx-float32 convention. MLX's CPU build runs device 'gpu'
# (with a warning), so these run on every machine, GPU or not.


def test_mlx_float32_is_the_dtype_only_and_judged_at_float32() -> None:
    r = ops.run_case(_case("relu"), "float64", lucid_device="gpu", version=VERSION)
    assert r.verdict == "convention" and r.expected == ("mlx-float32",), r.message
    for c in r.checks:
        assert c.lucid_dtype == "float32" and not c.dtype_ok and c.ok, c
        assert c.tol == ops.TOLERANCE["float32"]
    # A case's own declarations stay in force: on 2.9.0 the Linear bias bug is a known bug.
    r = ops.run_case(_case("linear"), "float64", lucid_device="gpu", version=VERSION)
    assert r.verdict == r.expected_verdict, r.message
    assert "mlx-float32" in r.expected


@pytest.mark.parametrize(
    ("planted", "why"),
    [
        (lambda self, x: x * float("nan"), "non-finite values"),
        (lambda self, x: x * 1.0, "rel err"),  # the identity: ReLU does nothing
    ],
    ids=["nan", "identity"],
)
def test_wrong_values_under_mlx_float32_fail(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], planted, why: str
) -> None:
    monkeypatch.setattr(lnn.ReLU, "forward", planted)
    r = ops.run_case(_case("relu"), "float64", lucid_device="gpu", version=VERSION)
    assert r.verdict == "fail", r.message
    assert set(r.failing) == {"out", "grad:x"} and why in r.message
    assert _cli(["--case", "relu", "--dtype", "float64", "--lucid-device", "gpu"]) == 1
    assert "FAIL: relu [float64]" in capsys.readouterr().err


def test_other_bug_on_declared_quantities_under_mlx_float32_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_broadcast_bug()
    _plant_linear_bias(monkeypatch)
    r = ops.run_case(_case("linear"), "float64", lucid_device="gpu", version=VERSION)
    assert r.verdict == "fail" and "batch-1 twin fails" in r.message, r.message


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
