"""parity.signal: seeded BatchNorm statistics, knock-out liveness, check_pair."""

from __future__ import annotations

import numpy as np
import pytest

import lucid_inception
from lucid_inception.frameworks import LucidAdapter, TorchAdapter, adapter_for, capture_outputs
from parity.signal import (
    LIVENESS_FACTOR,
    batchnorm_names,
    check_pair,
    knockout,
    knockout_blocks,
    last_map_side,
    liveness,
    prepare_signal,
    randomize_batchnorm,
    randomize_weights,
    seeded_input,
    train_step_batch,
    verify_equal_state,
)
from parity.tolerances import TOLERANCES
from parity.weights import transfer

from .conftest import released_upstream_only
from .test_parity_compare import fixed_lucid  # noqa: F401  (a fixture: a Lucid with correct gradients)

SIZE = 75
TOL = TOLERANCES["float32"].rel


def _bn_keys(state: dict) -> set[str]:
    return {k for k in state if k.rsplit(".", 1)[0].endswith(".bn")}


@pytest.mark.parametrize("framework", ["lucid", "torch"])
def test_randomize_batchnorm_is_seeded_and_touches_only_batchnorms(framework: str) -> None:
    a = lucid_inception.build("inception_resnet_v1", framework)
    adapter = adapter_for(a)
    before = adapter.state(a)
    names = randomize_batchnorm(a, 3)
    # Every ConvBNReLU2d has one BatchNorm, found by module type (named "<block>.bn").
    assert names and all(n.endswith(".bn") for n in names)
    assert len(names) == sum(k.endswith(".bn.running_mean") for k in before)
    after = adapter.state(a)
    changed = {k for k in after if not np.array_equal(after[k], before[k])}
    assert changed == _bn_keys(before)
    for name in names:
        var = after[f"{name}.running_var"]
        assert var.min() >= 0.5 and var.max() <= 2.0 and var.std() > 0.1
        assert np.abs(after[f"{name}.running_mean"]).max() > 0.05
    randomize_batchnorm(a, 3)
    again = adapter.state(a)
    assert all(np.array_equal(again[k], after[k]) for k in after)
    randomize_batchnorm(a, 4)
    key = f"{names[0]}.running_mean"
    assert not np.array_equal(adapter.state(a)[key], after[key])


def test_randomize_weights_is_seeded_like_lucid_init_and_leaves_batchnorms() -> None:
    a, b = (lucid_inception.build("inception_resnet_v1", "torch") for _ in range(2))
    bn_before = {k: v for k, v in TorchAdapter.state(a).items() if ".bn." in k}
    randomize_weights(a, 1)
    randomize_weights(b, 1)
    sa = TorchAdapter.state(a)
    assert all(".bn." in p for p in verify_equal_state(a, b))  # only b's own BatchNorms differ
    assert all(np.array_equal(sa[k], v) for k, v in bn_before.items())
    bound = np.sqrt(6 / (3 * 3 * 3))  # Kaiming uniform; the first conv's fan-in is 3 x 3 x 3
    assert 0.95 * bound < np.abs(sa["stem.conv.0.conv.weight"]).max() <= bound


def test_calibrated_statistics_give_every_layer_unit_gain() -> None:
    """With ``signal="calibrated"`` every eval-mode BatchNorm output has a std of order 1,
    at every depth of Inception-v4 (no vanishing, no explosion)."""
    model = lucid_inception.build("inception_v4", "torch")
    x = seeded_input(1, SIZE, 0)
    prepare_signal(model, x, seed=0, signal="calibrated")
    bns, stds = set(batchnorm_names(model)), []
    model.eval()
    keep = lambda name, array: name in bns and stds.append(float(array.std()))  # noqa: E731
    with TorchAdapter.no_grad(), capture_outputs(model, keep):
        model(TorchAdapter.tensor(x))
    assert len(stds) == len(bns)
    assert 0.5 < min(stds) and max(stds) < 2.0, (min(stds), max(stds))


@pytest.mark.parametrize(("shape", "in_channels"), [((1, 3, 90, 75), 3), ((1, 1, 75, 75), 1)])
def test_calibrated_signal_on_any_legal_input(shape: tuple[int, ...], in_channels: int) -> None:
    # The calibration images take x's shape (they were square, 3-channel: a numpy
    # concatenate error); the statistics stay finite and non-trivial.
    model = lucid_inception.build("inception_resnet_v1", "lucid", in_channels=in_channels)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    names = prepare_signal(model, x, seed=0, signal="calibrated")
    state = LucidAdapter.state(model)
    running = [state[f"{name}.running_var"] for name in names]
    assert names and all(np.isfinite(v).all() and (v > 0).all() for v in running)


def test_transfer_is_verified_exactly() -> None:
    source = lucid_inception.build("inception_resnet_v1", "lucid")
    prepare_signal(source, seeded_input(1, SIZE, 0), seed=0)
    twin = lucid_inception.build("inception_resnet_v1", "torch")
    transfer(source, twin)
    assert verify_equal_state(source, twin) == []
    state = TorchAdapter.state(twin)
    state["conv.3.branch2.1.bn.running_var"][5] += 1e-6
    TorchAdapter.load_state(twin, state)
    assert [p.split(":")[0] for p in verify_equal_state(source, twin)] == ["conv.3.branch2.1.bn.running_var"]
    twin.conv[3].branch2[1].bn.double()  # the same values in float64
    TorchAdapter.load_state(twin, {**TorchAdapter.state(twin), **LucidAdapter.state(source)}, cast=True)
    assert "conv.3.branch2.1.bn.weight: dtype float32 vs float64" in verify_equal_state(source, twin)


def test_knockout_blocks_cover_trunk_stem_branches_and_residual_branches() -> None:
    v4 = knockout_blocks(lucid_inception.build("inception_v4", "torch"))
    assert v4[:3] == ["conv.0.conv.0", "conv.0.conv.1", "conv.0.conv.2"]
    for block in ["conv.0.branch1_pool", "conv.0.branch2_right.3", "conv.0.branch3_conv", "conv.16"]:
        assert block in v4
    assert len(v4) == 13 + 17  # 13 stem parts, 17 trunk blocks
    v2 = knockout_blocks(lucid_inception.build("inception_resnet_v2", "lucid"))
    assert v2[0] == "stem" and "stem.branch2_right.0" in v2
    assert "conv.0.conv_linear" in v2 and "conv.5" in v2 and "conv.21.conv_linear" in v2  # Reduction-A whole
    v1 = knockout_blocks(lucid_inception.build("inception_resnet_v1", "torch"))
    assert v1[:8] == ["stem"] + [f"stem.conv.{i}" for i in range(7)]


@pytest.mark.parametrize("framework", ["lucid", "torch"])
def test_knockout_zeroes_the_block_and_restores_it(framework: str) -> None:
    model = lucid_inception.build("inception_resnet_v1", framework)
    adapter = adapter_for(model)
    adapter.set_training(model, False)
    x = adapter.tensor(seeded_input(1, SIZE, 0))
    seen: dict[str, np.ndarray] = {}
    with adapter.no_grad():
        base = adapter.to_numpy(model(x))
        with knockout(model, "conv.2.conv_linear"), capture_outputs(model, seen.__setitem__):
            knocked = adapter.to_numpy(model(x))
        after = adapter.to_numpy(model(x))
    assert not np.any(seen["conv.2.conv_linear"]) and seen["conv.2.conv_linear"].shape[1] == 256
    assert not np.allclose(base, knocked)
    np.testing.assert_array_equal(base, after)
    assert "forward" not in vars(dict(adapter.named_modules(model))["conv.2.conv_linear"])


def test_liveness_passes_and_names_an_invisible_block() -> None:
    twin = lucid_inception.build("inception_resnet_v1", "torch")
    x = seeded_input(1, SIZE, 0)
    prepare_signal(twin, x, seed=0)
    blocks = ["stem.conv.3", "conv.2.conv_linear", "conv.3.conv_linear", "conv.20.conv_linear"]
    report = liveness(twin, x, tol=TOL, blocks=blocks)
    assert report.ok and report.invisible == [], report.summary()
    # A residual branch scaled to (almost) nothing: knocking it out is invisible.
    dict(TorchAdapter.named_modules(twin))["conv.3"].scale = 1e-9
    report = liveness(twin, x, tol=TOL, blocks=blocks)
    assert not report.ok and report.invisible == ["conv.3.conv_linear"]
    assert "conv.3.conv_linear" in report.summary() and "invisible" in report.summary()


def test_liveness_names_a_dead_branch_inside_a_live_block() -> None:
    """Upstream bug 1's kind inside a trunk block: a branch whose layers never run. The
    block itself is alive (its other branches reach the logits), so only the layers'
    absence from the forward can tell."""
    twin = lucid_inception.build("inception_resnet_v1", "torch")
    x = seeded_input(1, SIZE, 0)
    prepare_signal(twin, x, seed=0)
    block = dict(TorchAdapter.named_modules(twin))["conv.0"]
    assert liveness(twin, x, tol=TOL, blocks=["conv.0"]).ok
    block.branch3.forward = block.branch2.forward  # branch3's own layers never run
    report = liveness(twin, x, tol=TOL, blocks=["conv.0"])
    dead = [
        name for name, module in TorchAdapter.named_modules(block.branch3) if list(module.parameters(False))
    ]
    assert not report.ok and report.invisible == [f"conv.0.branch3.{name}" for name in dead], report.summary()
    assert f"conv.0.branch3.{dead[0]} (never runs)" in report.summary()
    assert [b.block for b in report.blocks if b.ran] == ["conv.0"]


@pytest.mark.parametrize("seed", [7, 9, 10])
def test_a_faithful_inception_v4_is_live_at_75_pixels_whatever_the_seed(seed: int) -> None:
    """The seeds where Inception-v4's weakest knock-out (a stem branch) moves the logits by
    less than 1000 x tol (830-980): a correct model must not be called blind there."""
    source = lucid_inception.build("inception_v4", "lucid")
    twin = lucid_inception.build("inception_v4", "torch")
    x = seeded_input(1, SIZE, seed)
    prepare_signal(source, x, seed=seed)
    transfer(source, twin)
    report = liveness(twin, x, tol=TOL)
    assert report.ok, report.summary()
    assert min(b.change for b in report.blocks) < 1000 * TOL  # the seeds that failed at factor 1000


def test_liveness_demands_factor_times_tol_not_just_tol() -> None:
    """A block whose knock-out moves the logits by ~10 x tol is visible to the comparison
    but not by the margin liveness demands: invisible at the default factor (100), alive
    at factor 1; the threshold is exactly ``factor * tol``."""
    twin = lucid_inception.build("inception_resnet_v1", "torch")
    x = seeded_input(1, SIZE, 0)
    prepare_signal(twin, x, seed=0)
    blocks = ["conv.3.conv_linear"]
    full = liveness(twin, x, tol=TOL, blocks=blocks).blocks[0].change
    # The residual branch's knock-out moves the logits in proportion to its scale (small
    # changes are linear): scale it so that it moves them by about 10 x tol.
    dict(TorchAdapter.named_modules(twin))["conv.3"].scale *= 10 * TOL / full
    weak = liveness(twin, x, tol=TOL, blocks=blocks)
    change = weak.blocks[0].change
    assert 5 * TOL < change < 20 * TOL, change / TOL
    assert weak.factor == LIVENESS_FACTOR and weak.blocks[0].threshold == LIVENESS_FACTOR * TOL
    assert not weak.ok and weak.invisible == blocks, weak.summary()
    assert liveness(twin, x, tol=TOL, factor=1.0, blocks=blocks).ok
    assert liveness(twin, x, tol=TOL, factor=0.99 * change / TOL, blocks=blocks).ok
    assert not liveness(twin, x, tol=TOL, factor=1.01 * change / TOL, blocks=blocks).ok


def test_last_map_side_matches_the_models() -> None:
    twin = lucid_inception.build("inception_resnet_v1", "torch")
    twin.eval()
    for size in (75, 107):
        seen: dict[str, np.ndarray] = {}
        with TorchAdapter.no_grad(), capture_outputs(twin, seen.__setitem__):
            twin(TorchAdapter.tensor(seeded_input(1, size, 0)))
        assert seen["conv.16"].shape[-1] == last_map_side(size)  # Reduction-B
    assert last_map_side(299) == 8 and train_step_batch(75) == 8 and train_step_batch(299) == 1


def test_check_pair_agrees_and_proves_liveness() -> None:
    lines: list[str] = []
    result = check_pair("inception_resnet_v1", size=SIZE, progress=lines.append)
    assert result.ok, result.explain()
    assert result.report.ok and result.liveness.ok and result.batchnorms == 107
    assert any("liveness" in line for line in lines)
    assert result.to_dict()["report"]["ok"] is True


@released_upstream_only
def test_check_pair_backward_shows_lucid_290s_gradients() -> None:
    """Gradients are compared at batch 2 by default: lucid-dl 2.9.0's broadcast gradients
    are right at batch 1 and wrong above it."""
    result = check_pair(
        "inception_resnet_v1", size=SIZE, dtype="float64", backward=True, check_liveness=False
    )
    assert result.batch == 2 and result.report.input_shape == (2, 3, SIZE, SIZE)
    assert not result.ok and result.report.first_divergence == "fc"
    assert all(row.kind == "param_grad" for row in result.report.failures)


@pytest.mark.usefixtures("fixed_lucid")
def test_check_pair_backward_agrees_on_a_lucid_with_correct_gradients() -> None:
    result = check_pair(
        "inception_resnet_v1", size=SIZE, dtype="float64", backward=True, check_liveness=False
    )
    assert result.ok and result.batch == 2, result.explain()
    assert sum(row.kind == "param_grad" for row in result.report.rows) == 470


def test_check_pair_train_step_agrees() -> None:
    batch = train_step_batch(SIZE)
    result = check_pair("inception_resnet_v1", size=SIZE, batch=batch, train_step=True, check_liveness=False)
    assert result.ok and result.report.input_shape[0] == batch, result.explain()
    kinds = {row.kind for row in result.report.rows}
    assert {"bn_batch_stats", "bn_running_update"} <= kinds


def test_check_pair_refuses_a_meaningless_train_step() -> None:
    with pytest.raises(ValueError, match="batch >= 8"):
        check_pair("inception_resnet_v1", size=SIZE, batch=1, train_step=True)


def test_check_pair_skips_an_absent_device_with_its_reason() -> None:
    reason = TorchAdapter.device_unavailable("cuda")
    if reason is None:
        pytest.skip("CUDA is present here: nothing to skip")
    result = check_pair("inception_resnet_v1", size=SIZE, devices=("cpu", "cuda"))
    assert result.skipped and "torch=cuda" in result.skipped and reason in result.skipped
    assert result.ok and result.report is None  # not a failure, not silence


def test_check_pair_skips_float64_on_lucid_gpu_with_the_convention() -> None:
    result = check_pair("inception_resnet_v1", size=SIZE, dtype="float64", devices=("gpu", "cpu"))
    assert result.skipped.startswith("lucid device 'gpu' cannot compare in float64")
    assert "mlx-float32" in result.skipped and result.ok and result.report is None


def test_one_rule_decides_local_comparisons() -> None:
    """``compares_locally`` is what check_pair, the CLI and the plugin all apply."""
    from parity.signal import compares_locally

    assert compares_locally("random", False, False) is False
    assert compares_locally("random", True, False) is True
    assert compares_locally("calibrated", False, False) is True
    with pytest.raises(ValueError, match="a backward needs the twin's whole graph"):
        compares_locally("calibrated", False, True)
    with pytest.raises(ValueError, match="a backward needs the twin's whole graph"):
        check_pair("inception_resnet_v1", size=75, signal="calibrated", backward=True, dtype="float64")
    result = check_pair("inception_resnet_v1", size=75, signal="calibrated", check_liveness=False)
    assert result.ok and result.report.local
