"""The corrected networks and their twins: sizes, shapes, and each of the five
corrections shown by behaviour (each test here fails on upstream lucid-dl 2.9.0)."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings

import lucid
import numpy as np
import pytest
import torch

import lucid_inception
from lucid_inception import MODEL_NAMES, _checks
from lucid_inception.frameworks import LucidAdapter, TorchAdapter, adapter_for, capture_outputs
from lucid_inception.inception_resnet import ResNetV1BlockB, ResNetV2BlockA, ResNetV2BlockC
from lucid_inception.twins.inception_resnet import ResNetV2BlockA as TwinResNetV2BlockA
from lucid_inception.upstream import build_upstream

from .conftest import image, randomize_batchnorm, released_upstream_only

FRAMEWORKS = ("lucid", "torch")

# The paper's networks' counts (conformance.spec derives them from the figures):
# (with conv biases, without conv biases = timm's convention)
PARAMS = {
    "inception_v4": (42_711_400, 42_679_816),
    "inception_resnet_v1": (22_769_848, 22_756_328),
    "inception_resnet_v2": (32_450_360, 32_433_928),
}
# Module that ends each stage -> (channels, height, width) at 299 (the paper's figures).
STAGES = {
    "inception_v4": {"conv.0": (384, 35, 35), "conv.5": (1024, 17, 17), "conv.13": (1536, 8, 8)},
    "inception_resnet_v1": {"stem": (256, 35, 35), "conv.5": (896, 17, 17), "conv.16": (1792, 8, 8)},
    "inception_resnet_v2": {"stem": (384, 35, 35), "conv.5": (1152, 17, 17), "conv.16": (2144, 8, 8)},
}


def run(model, x: np.ndarray) -> np.ndarray:
    """Eval-mode forward without graph building; numpy in, numpy out."""
    adapter = adapter_for(model)
    adapter.set_training(model, False)
    with adapter.no_grad():
        return adapter.to_numpy(model(adapter.tensor(x)))


def conv_bias_count(model) -> int:
    """Biases of the convs followed by BatchNorm (timm drops them; the residual blocks'
    linear 1x1 convs keep theirs in timm too)."""
    adapter = adapter_for(model)
    return sum(int(np.prod(t.shape)) for k, t in adapter.tensors(model).items() if k.endswith(".conv.bias"))


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_counts(shared_model, name: str, framework: str) -> None:
    model = shared_model(name, framework)
    total = adapter_for(model).count_parameters(model)
    assert (total, total - conv_bias_count(model)) == PARAMS[name]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_stage_shapes_at_299(shared_model, name: str, framework: str) -> None:
    model = shared_model(name, framework)
    shapes: dict[str, tuple[int, ...]] = {}
    with capture_outputs(model, lambda module, out: shapes.__setitem__(module, out.shape)):
        logits = run(model, image((1, 3, 299, 299)))
    assert logits.shape == (1, 1000)
    assert {m: shapes[m][1:] for m in STAGES[name]} == STAGES[name]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_smallest_input_is_75(shared_model, name: str, framework: str) -> None:
    model = shared_model(name, framework)
    assert run(model, image((2, 3, 75, 75))).shape == (2, 1000)
    with pytest.raises(ValueError, match="smaller than the 75x75 minimum"):
        run(model, image((1, 3, 74, 75)))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fresh_lucid_model_computes_in_float32(shared_model, name: str) -> None:
    model = shared_model(name, "lucid")
    assert set(LucidAdapter.dtypes(model).values()) == {np.dtype("float32")}
    found: set[np.dtype] = set()
    with capture_outputs(model, lambda _m, out: found.add(out.dtype)):
        run(model, image((1, 3, 75, 75)))
    assert found == {np.dtype("float32")}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_twin_has_the_lucid_keys_plus_num_batches_tracked(shared_model, name: str) -> None:
    lucid_keys = list(LucidAdapter.state(shared_model(name, "lucid")))
    twin = shared_model(name, "torch")
    assert list(TorchAdapter.state(twin)) == lucid_keys
    extra = set(twin.state_dict()) - set(lucid_keys)
    assert extra and all(k.endswith(".bn.num_batches_tracked") for k in extra)
    lucid_tree = [n for n, _ in LucidAdapter.named_modules(shared_model(name, "lucid"))]
    assert [n for n, _ in TorchAdapter.named_modules(twin)] == lucid_tree


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_lucid_and_twin_agree_on_shared_weights(name: str) -> None:
    model, twin = lucid_inception.build(name), lucid_inception.build(name, "torch")
    randomize_batchnorm(model, seed=1)
    TorchAdapter.load_state(twin, LucidAdapter.state(model))
    x = image((2, 3, 75, 75), seed=2)
    a, b = run(model, x), run(twin, x)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


# ----- correction 1: the stem runs branch2_right (Fig. 3)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_stem_branch2_right_changes_the_output(name: str, framework: str) -> None:
    model = lucid_inception.build(name, framework)
    x = image((1, 3, 75, 75), seed=3)
    randomize_batchnorm(model, seed=3, calibration=image((4, 3, 75, 75), seed=30))
    adapter = adapter_for(model)
    stem = "conv.0" if name == "inception_v4" else "stem"

    def stem_and_logits() -> tuple[np.ndarray, np.ndarray]:
        seen: dict[str, np.ndarray] = {}
        with capture_outputs(model, lambda m, out: seen.setdefault(m, out)):
            logits = run(model, x)
        return seen[stem], logits

    stem_before, logits_before = stem_and_logits()
    state = adapter.state(model)
    key = f"{stem}.branch2_right.3.conv.weight"
    state[key] = state[key] * 3.0
    adapter.load_state(model, state)
    stem_after, logits_after = stem_and_logits()
    # branch2_right feeds channels 96..191 of the second concat, i.e. half the stem
    assert np.abs(stem_after - stem_before).max() > 0.1 * np.abs(stem_before).max()
    assert not np.allclose(logits_after, logits_before, rtol=1e-3, atol=0)


@released_upstream_only
def test_upstream_stem_ignores_branch2_right() -> None:
    """The contrast that makes the test above meaningful: upstream never calls it."""
    upstream = build_upstream("inception_resnet_v2", num_classes=10)
    LucidAdapter.cast(upstream, "float32")
    x = image((1, 3, 75, 75), seed=3)
    before = run(upstream, x)
    state = LucidAdapter.state(upstream)
    state["stem.branch2_right.3.conv.weight"] *= 3.0
    LucidAdapter.load_state(upstream, state)
    np.testing.assert_array_equal(run(upstream, x), before)


# ----- correction 2: the head keeps 0.8


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_head_dropout_keeps_eight_in_ten(shared_model, name: str, framework: str) -> None:
    dropout = shared_model(name, framework).dropout
    adapter = adapter_for(dropout)
    n = 200_000
    lucid.random.seed(0)
    torch.manual_seed(0)
    adapter.set_training(dropout, True)
    try:
        out = adapter.to_numpy(dropout(adapter.tensor(np.ones((1, n), np.float32))))
    finally:
        adapter.set_training(dropout, False)
    kept = out != 0
    # binomial(n, 0.8): std of the kept fraction is 0.0009; allow 6 std
    assert abs(kept.mean() - 0.8) < 6 * np.sqrt(0.8 * 0.2 / n)
    np.testing.assert_allclose(out[kept], 1 / 0.8, rtol=1e-6)


# ----- correction 3: residual blocks scale their branch sum (Fig. 20)


def _lucid_block_by_hand(block, x: lucid.Tensor) -> np.ndarray:
    branches = [LucidAdapter.to_numpy(b(x)) for b in block.branches()]
    mixed = lucid.Tensor(np.concatenate(branches, axis=1))
    linear = LucidAdapter.to_numpy(block.conv_linear(mixed))
    return np.maximum(x.data + block.scale * linear, 0.0)


def test_residual_block_is_relu_of_x_plus_scaled_branches() -> None:
    block = ResNetV2BlockA(384, scale=0.17)
    randomize_batchnorm(block, seed=4)
    block.eval()
    x = lucid.Tensor(image((2, 384, 9, 9), seed=5))
    with lucid.no_grad():
        got = LucidAdapter.to_numpy(block(x))
        want = _lucid_block_by_hand(block, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # and the scale matters: the unscaled sum (upstream's) is far from it
    with lucid.no_grad():
        block.scale = 1.0
        unscaled = LucidAdapter.to_numpy(block(x))
    assert np.abs(unscaled - got).max() > 1e-2 * np.abs(got).max()


def test_twin_residual_block_matches_the_formula() -> None:
    block = TwinResNetV2BlockA(384, scale=0.17)
    randomize_batchnorm(block, seed=4)
    block.eval()
    x = torch.from_numpy(image((2, 384, 9, 9), seed=5))
    with torch.no_grad():
        mixed = torch.cat([block.branch1(x), block.branch2(x), block.branch3(x)], dim=1)
        want = torch.relu(x + 0.17 * block.conv_linear(mixed))
        np.testing.assert_allclose(block(x).numpy(), want.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("name", ["inception_resnet_v1", "inception_resnet_v2"])
def test_scale_triple_reaches_the_a_b_c_blocks(name: str, framework: str) -> None:
    model = lucid_inception.build(name, framework, scale=(0.1, 0.2, 0.3))
    blocks = [m for _, m in adapter_for(model).named_modules(model) if hasattr(m, "scale")]
    scales = [b.scale for b in blocks]
    assert scales == [0.1] * 5 + [0.2] * 10 + [0.3] * 5


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_default_scale_is_0_2(shared_model, framework: str) -> None:
    model = shared_model("inception_resnet_v2", framework)
    scales = {m.scale for _, m in adapter_for(model).named_modules(model) if hasattr(m, "scale")}
    assert scales == {0.2}


# ----- correction 4: the v2 C blocks take and return 2144 channels


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_resnet_v2_c_blocks_are_2144_wide(shared_model, framework: str) -> None:
    model = shared_model("inception_resnet_v2", framework)
    c_blocks = [model.conv[i] for i in range(17, 22)]
    assert all(tuple(b.conv_linear.weight.shape) == (2144, 448, 1, 1) for b in c_blocks)
    assert model.conv[16].out_channels == 2144 and model.fc.weight.shape[1] == 2144


def test_c_block_width_follows_its_input() -> None:
    """No constant width: the block's linear conv maps back to whatever comes in."""
    assert tuple(ResNetV2BlockC(100, scale=0.2).conv_linear.weight.shape) == (100, 448, 1, 1)
    assert tuple(ResNetV1BlockB(40, scale=0.2).conv_linear.weight.shape) == (40, 256, 1, 1)


# ----- correction 5: the v4 B block's long branch starts with a 1x1 to 192 (Fig. 5)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_v4_b_block_long_branch_starts_at_192(shared_model, framework: str) -> None:
    model = shared_model("inception_v4", framework)
    for i in range(6, 13):
        branch = model.conv[i].branch4
        assert tuple(branch[0].conv.weight.shape) == (192, 1024, 1, 1)
        assert tuple(branch[1].conv.weight.shape) == (192, 192, 1, 7)


# ----- bad arguments and inputs


BAD_ARGUMENTS = [
    ({"num_classes": 0}, ValueError, "num_classes"),
    ({"num_classes": 2.0}, TypeError, "num_classes"),
    ({"num_classes": True}, TypeError, "num_classes"),
    ({"in_channels": 0}, ValueError, "in_channels"),
    ({"dropout": 1.0}, ValueError, r"\[0, 1\)"),
    ({"dropout": -0.1}, ValueError, "dropout"),
    ({"dropout": float("nan")}, ValueError, "finite"),
    ({"dropout": "0.2"}, TypeError, "dropout"),
    ({"dropout": 10**400}, ValueError, r"^dropout must be a number in .* of 1329 bits$"),  # float() overflows
    ({"num_classes": np.bool_(True)}, TypeError, "num_classes"),
    # past 4300 digits str() of an int raises its own ValueError: the messages give the size
    ({"num_classes": -(10**5000)}, ValueError, "num_classes must be an int >= 1, got an int of 16610 bits"),
    ({"in_channels": -(10**5000)}, ValueError, "in_channels must be an int >= 1, got an int of 16610 bits"),
    # a huge int is finite: out of range, not "must be a finite number"
    ({"dropout": -(10**5000)}, ValueError, r"^dropout must be a number in \[0, 1\), .* 16610 bits$"),
]
BAD_SCALES = [
    ({"scale": 0.0}, ValueError, r"\(0, 1\]"),
    ({"scale": 1.5}, ValueError, r"\(0, 1\]"),
    ({"scale": float("inf")}, ValueError, "finite"),
    ({"scale": float("nan")}, ValueError, "finite"),
    ({"scale": -0.2}, ValueError, r"\(0, 1\]"),
    ({"scale": "0.2"}, TypeError, "scale"),
    ({"scale": True}, TypeError, "scale"),
    ({"scale": (0.1, 0.2)}, ValueError, "three"),
    ({"scale": (10**5000,)}, ValueError, "three floats .* got a tuple of 1"),
    ({"scale": (0.1, 0.2, 2.0)}, ValueError, r"scale\[2\]"),
    ({"scale": 10**400}, ValueError, "scale"),
    ({"scale": (0.1, 0.2, -(10**400))}, ValueError, r"scale\[2\]"),
    ({"scale": 10**5000}, ValueError, r"^scale must be a number in \(0, 1\], got an int of 16610 bits$"),
    ({"scale": (0.1, 10**5000, 0.3)}, ValueError, r"^scale\[1\] must be a number in .* of 16610 bits$"),
    ({"scale": b"abc"}, TypeError, "scale"),
    ({"scale": bytearray(b"abc")}, TypeError, "scale"),
    ({"scale": memoryview(b"abc")}, TypeError, "scale"),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_ARGUMENTS + BAD_SCALES)
def test_bad_arguments_are_rejected(kwargs: dict, error: type, match: str, framework: str) -> None:
    # v1 is the cheapest model; the checks run before any layer is built
    with pytest.raises(error, match=match):
        lucid_inception.build("inception_resnet_v1", framework, **kwargs)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_numpy_integers_are_accepted(framework: str) -> None:
    """E.g. ``num_classes=labels.max() + 1``; stored as plain ints."""
    model = lucid_inception.build(
        "inception_resnet_v1", framework, num_classes=np.int64(7), in_channels=np.int32(1)
    )
    assert (model.num_classes, model.in_channels) == (7, 1)
    assert type(model.num_classes) is int and type(model.in_channels) is int
    assert tuple(model.fc.weight.shape) == (7, 1792)


def test_inception_v4_has_no_scale_argument() -> None:
    with pytest.raises(TypeError):
        lucid_inception.build("inception_v4", scale=0.2)


def test_importing_the_package_leaves_torch_unimported() -> None:
    """A Lucid-only user pays nothing for torch (2.3 s of a 2.5 s import); the twins and
    the torch adapter load on first use."""
    code = (
        "import sys, lucid_inception, lucid_inception.frameworks as f\n"
        "m = lucid_inception.build('inception_resnet_v1', num_classes=2)\n"
        "assert f.adapter_for(m) is f.LucidAdapter\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "twin = lucid_inception.build('inception_resnet_v1', 'torch', num_classes=2)\n"
        "assert f.adapter_for(twin) is f.TorchAdapter and f.ADAPTERS[1] is f.TorchAdapter\n"
        "assert type(twin) is lucid_inception.twins.InceptionResNetV1\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]


def test_unknown_model_and_framework() -> None:
    with pytest.raises(ValueError, match="valid: inception_v4"):
        lucid_inception.build("inception_v3")
    with pytest.raises(ValueError, match="valid: 'lucid', 'torch'"):
        lucid_inception.build("inception_v4", "jax")


BAD_INPUTS = [
    ((3, 75, 75), "4-D"),
    ((1, 1, 3, 75, 75), "4-D"),
    ((1, 4, 75, 75), "expected 3 input channels"),
    ((0, 3, 75, 75), "non-empty"),
    ((1, 3, 75, 60), "smaller than"),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("shape", "match"), BAD_INPUTS)
def test_bad_inputs_are_rejected(shared_model, shape: tuple, match: str, framework: str) -> None:
    model = shared_model("inception_resnet_v1", framework)
    with pytest.raises(ValueError, match=match):
        run(model, np.zeros(shape, np.float32))


def test_the_stage_arithmetic_is_the_networks() -> None:
    """What the input checks derive their limits from: 299 -> 8 (Fig. 9 and 18), 74 -> 0."""
    assert [_checks.last_stage_size(s) for s in (299, 107, 106, 75, 74)] == [8, 2, 1, 1, 0]
    assert (_checks.MIN_INPUT_SIZE, _checks.MIN_TRAIN_SIZE_AT_BATCH_1) == (75, 107)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_train_mode_batch_of_one_needs_a_last_stage_bigger_than_1x1(framework: str) -> None:
    """Else the C blocks' BatchNorms see one value per channel: torch raises deep inside,
    Lucid silently outputs each BatchNorm's beta."""
    model = lucid_inception.build("inception_resnet_v1", framework, num_classes=2)
    adapter = adapter_for(model)
    adapter.set_training(model, True)
    with adapter.no_grad():
        with pytest.raises(ValueError, match=r"one value per channel .* a side >= 107"):
            model(adapter.tensor(image((1, 3, 106, 106))))
        # a 1x2 last stage (two values per channel) and a batch of two are fine
        assert adapter.to_numpy(model(adapter.tensor(image((1, 3, 75, 107))))).shape == (1, 2)
        assert adapter.to_numpy(model(adapter.tensor(image((2, 3, 75, 75))))).shape == (2, 2)
        adapter.set_training(model, False)
        assert adapter.to_numpy(model(adapter.tensor(image((1, 3, 75, 75))))).shape == (1, 2)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_train_mode_batch_of_one_is_fine_with_every_batchnorm_frozen(framework: str) -> None:
    """Fine-tuning with frozen BatchNorms: train mode, every BatchNorm in eval uses running
    statistics, so a 1x75x75 batch is valid; one BatchNorm left training is not."""
    model = lucid_inception.build("inception_resnet_v1", framework, num_classes=2)
    adapter = adapter_for(model)
    adapter.set_training(model, True)
    norms = [m for m in model.modules() if "BatchNorm" in type(m).__name__]
    for bn in norms:
        bn.eval()
    x = adapter.tensor(image((1, 3, 75, 75)))
    with adapter.no_grad():
        assert model.training
        assert adapter.to_numpy(model(x)).shape == (1, 2)
        norms[-1].train()
        with pytest.raises(ValueError, match="one value per channel"):
            model(x)


def test_batchnorms_training_in_an_eval_model_need_a_last_stage_bigger_than_1x1() -> None:
    """Test-time BatchNorm adaptation: the model in eval, its BatchNorms put back in train.
    What counts is the BatchNorms' mode, not the model's: a batch of one 75x75 image is the
    same ValueError on both sides (not logits independent of the input in Lucid, nor
    torch's own error deep inside the twin); a batch of two is fine."""
    messages = []
    for framework in FRAMEWORKS:
        model = lucid_inception.build("inception_resnet_v1", framework, num_classes=2)
        adapter = adapter_for(model)
        adapter.set_training(model, False)
        for bn in (m for m in model.modules() if "BatchNorm" in type(m).__name__):
            bn.train()
        with adapter.no_grad():
            assert not model.training
            with pytest.raises(ValueError, match="one value per channel in the last stage") as raised:
                model(adapter.tensor(image((1, 3, 75, 75))))
            messages.append(str(raised.value))
            assert adapter.to_numpy(model(adapter.tensor(image((2, 3, 75, 75))))).shape == (2, 2)
    assert messages[0] == messages[1]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_batchnorm_without_running_statistics_in_an_eval_model_counts_as_training(framework: str) -> None:
    """Without running statistics a BatchNorm normalises with the batch's even in eval
    (both frameworks' rule), so a batch of one 75x75 image is the same ValueError."""
    model = lucid_inception.build("inception_resnet_v1", framework, num_classes=2)
    adapter = adapter_for(model)
    adapter.set_training(model, False)
    last_bn = [m for m in model.modules() if "BatchNorm" in type(m).__name__][-1]
    if framework == "lucid":
        last_bn.register_buffer("running_mean", None)
        last_bn.register_buffer("running_var", None)
    else:
        last_bn.running_mean = last_bn.running_var = None
    with adapter.no_grad(), pytest.raises(ValueError, match="one value per channel in the last stage"):
        model(adapter.tensor(image((1, 3, 75, 75))))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_input_of_the_other_framework_is_a_type_error(shared_model, framework: str) -> None:
    model = shared_model("inception_resnet_v1", framework)
    with pytest.raises(TypeError, match="expected a (lucid|torch).Tensor"):
        model(np.zeros((1, 3, 75, 75), np.float32))


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_non_floating_input_is_a_type_error(shared_model, dtype: str, framework: str) -> None:
    model = shared_model("inception_resnet_v1", framework)
    with pytest.raises(TypeError, match=f"expected a floating-point float32 input .*, got {dtype}"):
        run(model, np.zeros((1, 3, 75, 75), dtype))


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_twin_input_of_another_float_dtype_is_a_type_error(shared_model, dtype: str) -> None:
    """torch's rule: a mismatched float dtype fails (here clearly, not deep inside a conv)."""
    model = shared_model("inception_resnet_v1", "torch")
    with pytest.raises(TypeError, match=f"the model's dtype float32, got {dtype}"):
        run(model, np.zeros((1, 3, 75, 75), dtype))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_twin_traces_with_torch_fx(name: str) -> None:
    """torch.fx (what torchvision's feature extraction runs) traces the twin: the input checks
    stay out of the graph, which computes what the twin does; eager calls still check."""
    model = lucid_inception.build(name, "torch", num_classes=10).eval()
    randomize_batchnorm(model, seed=2)
    graph = torch.fx.symbolic_trace(model)
    called = {node.target for node in graph.graph.nodes if node.op == "call_module"}
    assert {"fc", "avgpool"} <= called and len(called) > 200  # every layer, not a collapsed call
    x = torch.from_numpy(image((2, 3, 75, 75), seed=5))
    with torch.no_grad():
        assert torch.equal(graph(x), model(x))
    with pytest.raises(TypeError, match="expected a torch.Tensor input"):
        model(x.numpy())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_twin_compiles_with_torch_jit_script(name: str) -> None:
    """torch.jit.script compiles the twin (as torchvision's models do): the scripted model,
    saved and loaded back, has the same state and computes the same logits, the residual
    scales included; the eager model still checks its input."""
    scales = {} if name == "inception_v4" else {"scale": (0.1, 0.2, 0.3)}  # not the default
    model = lucid_inception.build(name, "torch", num_classes=10, **scales).eval()
    randomize_batchnorm(model, seed=2)
    saved = io.BytesIO()
    with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript; older releases do not
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(model), saved)
        saved.seek(0)
        scripted = torch.jit.load(saved)
    assert scripted.state_dict().keys() == model.state_dict().keys()
    x = torch.from_numpy(image((2, 3, 75, 75), seed=5))
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))
    with pytest.raises(TypeError, match="expected a torch.Tensor input"):
        model(x.numpy())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_twin_exports_with_torch_export(name: str) -> None:
    """torch.export (torch's successor to TorchScript) captures the twin whole: the exported
    program computes the same logits; the input checks run at export time and leave no op."""
    model = lucid_inception.build(name, "torch", num_classes=10).eval()
    randomize_batchnorm(model, seed=2)
    x = torch.from_numpy(image((2, 3, 75, 75), seed=5))
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.equal(exported.module()(x), model(x))
    with pytest.raises(TypeError, match="the model's dtype float32, got float64"):
        torch.export.export(model, (x.double(),))


def test_twin_takes_a_half_precision_input_under_autocast() -> None:
    """torch's rule under autocast: the first conv casts any floating input to the autocast
    dtype, so a bfloat16 batch is valid there (and only there); a non-floating one is not."""
    model = lucid_inception.build("inception_resnet_v1", "torch", num_classes=2).eval()
    x = torch.from_numpy(image((1, 3, 75, 75))).bfloat16()
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
            assert out.dtype == torch.bfloat16
            # the same values in float32 give the same logits: autocast casts both alike
            assert torch.equal(out, model(x.float()))
            with pytest.raises(TypeError, match="expected a floating-point float32 input .*, got int64"):
                model(x.long())
            # float64 autocast leaves alone: the twin's own message, not torch's from the conv
            with pytest.raises(TypeError, match="the model's dtype float32, got float64"):
                model(x.double())
        with pytest.raises(TypeError, match="the model's dtype float32, got bfloat16"):
            model(x)


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_lucid_casts_a_float_input_of_another_dtype_to_the_model_dtype(shared_model, dtype: str) -> None:
    """Lucid's factories make float64 (``lucid.random.randn``, ``lucid.Tensor(list)``): the
    Lucid model computes in its own dtype, as on a float32 input, and leaves the input be."""
    model = shared_model("inception_resnet_v1", "lucid")
    x = image((1, 3, 75, 75)).astype(dtype)
    xt = lucid.Tensor(x)
    with lucid.no_grad():
        out = model.eval()(xt)
    assert out.data.dtype == np.float32
    assert xt.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out.data, run(model, x.astype(np.float32)))


def test_lucid_input_of_another_dtype_that_wants_its_gradient_is_a_type_error() -> None:
    """Lucid has no differentiable cast: casting would silently cut the input's gradient."""
    model = lucid_inception.build("inception_resnet_v1", num_classes=3).eval()
    x = lucid.Tensor(image((1, 3, 75, 75), dtype="float64"), requires_grad=True)
    with pytest.raises(TypeError, match="float32, got float64 with requires_grad"):
        model(x)
    with lucid.no_grad():  # no gradient wanted: cast like any other input
        assert model(x).data.dtype == np.float32
    assert x.data.dtype == np.float64 and x.grad is None


def test_lucid_factory_input_works_through_install() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import lucid, lucid_inception; lucid_inception.install(); import lucid.models; "
            "m = lucid.models.inception_resnet_v1(num_classes=3).eval(); "
            "print(m(lucid.random.randn(1, 3, 75, 75)).data.dtype)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "float32"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_float64_model_takes_float64_input(framework: str) -> None:
    model = lucid_inception.build("inception_resnet_v1", framework, num_classes=3)
    adapter_for(model).cast(model, "float64")
    assert run(model, image((1, 3, 75, 75), dtype="float64")).dtype == np.float64
    if framework == "lucid":  # cast to the model's float64, as the conformance trace feeds it
        assert run(model, image((1, 3, 75, 75))).dtype == np.float64
    else:
        with pytest.raises(TypeError, match="the model's dtype float64, got float32"):
            run(model, image((1, 3, 75, 75)))


def test_load_checkpoint_names_a_torch_twin_instead_of_failing_in_numpy() -> None:
    twin = lucid_inception.build("inception_resnet_v1", "torch", num_classes=4)
    state = lucid_inception.build("inception_resnet_v1", "lucid", num_classes=4).state_dict()
    with pytest.raises(TypeError, match="loads Lucid models, got a .*InceptionResNetV1; for a torch twin"):
        lucid_inception.load_checkpoint(twin, state)


def test_in_channels_and_num_classes_are_honoured() -> None:
    model = lucid_inception.build("inception_resnet_v1", in_channels=1, num_classes=7)
    assert run(model, image((1, 1, 80, 80))).shape == (1, 7)


# Float64 garbage whose cast to float32 makes numpy warn: beyond float32's range
# ("overflow encountered in cast"), and a signalling NaN ("invalid value encountered in
# cast"; seen on this machine building Inception-ResNet-v1).
GARBAGE = {"huge": 1e300, "signalling-nan": np.array(0x7FF0000000000001, np.uint64).view(np.float64)}


@pytest.mark.parametrize("garbage", GARBAGE)
@pytest.mark.parametrize("builder", ["port", "upstream"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_building_shows_no_warning_from_lucids_uninitialised_weights(
    name: str, builder: str, garbage: str, monkeypatch
) -> None:
    """lucid-dl 2.9.0's Conv2d and Linear cast ``lucid.empty``'s float64 memory to float32
    before initialising it; some garbage made numpy warn in the middle of a user's output.
    Planted here in every ``lucid.empty``. The model (the port's, and upstream's as the
    harness builds it) must build silently, and initialised."""
    real_empty = lucid.empty

    def garbage_empty(*args, **kwargs):
        tensor = real_empty(*args, **kwargs)
        tensor.data[...] = GARBAGE[garbage]
        return tensor

    monkeypatch.setattr(lucid, "empty", garbage_empty)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = lucid_inception.build(name, "lucid") if builder == "port" else build_upstream(name)
    assert all(
        np.isfinite(array).all() and np.abs(array).max() < 10 for array in LucidAdapter.state(model).values()
    )
