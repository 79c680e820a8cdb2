"""The checker: the port and the twins conform; upstream lucid-dl 2.9.0 fails exactly its
known deviations; planted faults fail the item that owns them and nothing else."""

from __future__ import annotations

import copy
import functools
import json
import types
from pathlib import Path

import lucid
import lucid.nn as lnn
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lucid_inception
from conformance import spec as S
from conformance import targets
from conformance.__main__ import main
from conformance.checker import DEFAULT_SIZE, ModelReport, check_model, expected_item_ids
from conformance.checker.model import MIN_SIZE
from conformance.introspect import ModelView, trace
from lucid_inception import inception_resnet as port_resnet
from lucid_inception.frameworks import adapter_for
from lucid_inception.twins import layers as twin_layers
from lucid_inception.upstream import upstream_is_released

from .conftest import UPSTREAM_BUG_ITEMS, released_upstream_only

MODELS = lucid_inception.MODEL_NAMES


@functools.cache
def _report(target: str, name: str) -> ModelReport:
    return check_model(targets.build(target, name), name, target=target)


def _failing(report: ModelReport) -> set[str]:
    return {r.id for r in report.failures}


def _result(report: ModelReport, item: str):
    return next(r for r in report.results if r.id == item)


# ----- the three targets


@pytest.mark.parametrize("name", MODELS)
def test_adapters_describe_port_and_twin_alike(name: str) -> None:
    # ModelView reads both frameworks through layer_info: the same module tree must read the same
    port, twin = (ModelView(lucid_inception.build(name, framework)) for framework in ("lucid", "torch"))
    assert list(port.info) == list(twin.info)
    differ = {
        n: (port.info[n], twin.info[n])
        for n in port.info
        if port.info[n] != twin.info[n] and port.info[n].get("kind") != "module"
    }
    assert not differ
    assert {port.op_kind(n) for n in port.info} == {twin.op_kind(n) for n in twin.info}


@pytest.mark.parametrize("target", ["port", "twin"])
@pytest.mark.parametrize("name", MODELS)
def test_port_and_twins_conform(target: str, name: str) -> None:
    report = _report(target, name)
    assert not report.failures, "\n".join(f"{r.id}: {r.found} [{r.evidence}]" for r in report.failures)
    assert tuple(r.id for r in report.results) == expected_item_ids(name)
    assert report.parameters == report.spec_parameters


def test_upstream_fails_exactly_its_known_deviations() -> None:
    """Released 2.9.0 fails exactly the known deviations; a kit-patched upstream none."""
    failing = set().union(*(_failing(_report("upstream", name)) for name in MODELS))
    assert failing == (UPSTREAM_BUG_ITEMS if upstream_is_released() else set())
    for name in MODELS:
        assert tuple(r.id for r in _report("upstream", name).results) == expected_item_ids(name)


@released_upstream_only
def test_upstream_evidence_names_each_bug() -> None:
    v4, v1, v2 = (_report("upstream", name) for name in MODELS)
    assert "ops 0, 1, 2, 3 of 4 never ran" in _result(v4, "inception_v4/stem/branch2_right-runs").found
    assert (
        "branch2_left 2, branch2_right 0"
        in _result(v2, "inception_resnet_v2/stem/branch2_right-runs").evidence
    )
    assert "Dropout(p=0.8) keeps 0.2" in _result(v1, "inception_resnet_v1/head/dropout-keep-0.8").found
    assert "no scaling (s = 1.0)" in _result(v2, "inception_resnet_v2/residual-scale").found
    width = _result(v2, "inception_resnet_v2/block_c/width-2144").found
    assert "_InceptionResModule_C.__init__ keeps 2048 (Fig. 19)" in width and "inception_res.py:" in width
    branch4 = _result(v4, "inception_v4/block_b/branch4-first-conv-192").found
    assert "conv out_channels 64 (expected 192)" in branch4 and "(7)" in branch4
    # the 64-wide branch is self-consistent after its first conv: only that op fails
    assert _result(v4, "inception_v4/block_b/branch4-second-conv-192").status == "pass"


def test_upstream_builds_write_no_registry() -> None:
    registry = Path(lucid.__file__).parent / "models" / "registry.json"
    before = registry.read_bytes() if registry.exists() else None
    for name in MODELS:
        targets.build("upstream", name)
    assert (registry.read_bytes() if registry.exists() else None) == before


def test_upstream_target_is_upstream_even_while_installed() -> None:
    lucid_inception.install()
    try:
        model = targets.build("upstream", "inception_resnet_v1")
    finally:
        lucid_inception.uninstall()
    assert type(model).__module__.startswith("lucid.models")
    assert targets.describe("upstream").startswith("upstream lucid-dl ")


# ----- planted faults: the owning item fails, and nothing else


def _check(model, name: str, size: int = DEFAULT_SIZE) -> ModelReport:
    return check_model(model, name, target="planted", size=size)


def test_bypassed_branch2_right_fails_its_runs_item() -> None:
    model = lucid_inception.inception_resnet_v2()

    def forward(self, x):  # upstream's stem: branch2_left twice
        x = self.conv(x)
        x = lucid.concatenate([self.branch1_pool(x), self.branch1_conv(x)], axis=1)
        x = lucid.concatenate([self.branch2_left(x), self.branch2_left(x)], axis=1)
        return lucid.concatenate([self.branch3_pool(x), self.branch3_conv(x)], axis=1)

    model.stem.forward = types.MethodType(forward, model.stem)
    assert _failing(_check(model, "inception_resnet_v2")) == {"inception_resnet_v2/stem/branch2_right-runs"}


def test_stride_seen_only_by_introspection() -> None:
    # At 75x75 the C blocks run on a 1x1 grid, where a 1x1 conv with stride 2 changes
    # nothing in the trace: the introspected stride still fails its item.
    model = lucid_inception.inception_resnet_v1()
    model.conv[17].branch1.conv.stride = (2, 2)
    report = _check(model, "inception_resnet_v1", size=MIN_SIZE)
    assert _failing(report) == {"inception_resnet_v1/block_c/branch1-first-conv-192"}
    assert "conv.17.branch1: conv stride (2, 2) (expected (1, 1))" in report.failures[0].found


def test_stem_stride_fails_its_op_first() -> None:
    model = lucid_inception.inception_resnet_v1()
    model.stem.conv[6].conv.stride = (1, 1)  # Fig. 14's last 3x3/2 V conv
    report = _check(model, "inception_resnet_v1")
    item = "inception_resnet_v1/stem/conv-seventh-conv-256"
    assert item in _failing(report)
    assert "conv stride (1, 1) (expected (2, 2))" in _result(report, item).found
    stem_ops = [
        i for i in expected_item_ids("inception_resnet_v1") if i.startswith("inception_resnet_v1/stem/")
    ]
    assert _failing(report) & set(stem_ops) == {item}
    # everything after it fails on shapes only, never on structure
    others = [r for r in report.failures if r.id != item]
    assert others and all("stride" not in r.found for r in others)


@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_residual_scale_absent_or_too_large(scale: float) -> None:
    model = lucid_inception.inception_resnet_v1()
    for block in model.conv[6:16]:  # the B blocks only
        block.scale = scale
    report = _check(model, "inception_resnet_v1")
    assert _failing(report) == {"inception_resnet_v1/residual-scale"}
    found = report.failures[0].found
    assert ("block_b: no scaling" in found) if scale == 1.0 else ("s = 1.5 outside (0, 1]" in found)
    assert "block_a" not in found and "block_c" not in found


def test_missing_relu_after_the_add_fails_the_formula() -> None:
    model = lucid_inception.twins.inception_resnet_v1()

    def forward(self, x):
        mixed = self.mixed(x)
        return x + self.scale * self.conv_linear(mixed)  # no ReLU on the sum

    block = model.conv[2]
    block.forward = types.MethodType(forward, block)
    report = _check(model, "inception_resnet_v1")
    assert _failing(report) == {"inception_resnet_v1/block_a/residual-formula"}
    assert report.failures[0].found.startswith("conv.2: y != ReLU(x + s * linear)")


def test_head_dropout_probability() -> None:
    model = lucid_inception.inception_resnet_v1()
    model.dropout.p = 0.8
    assert _failing(_check(model, "inception_resnet_v1")) == {"inception_resnet_v1/head/dropout-keep-0.8"}


def test_swapped_concat_order() -> None:
    model = lucid_inception.twins.inception_resnet_v1()
    block = model.conv[16]  # Reduction-B: branch3 and branch4 are both 256 wide

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch4(x), self.branch3(x)], dim=1)

    block.forward = types.MethodType(forward, block)
    report = _check(model, "inception_resnet_v1")
    assert _failing(report) == {"inception_resnet_v1/reduction_b/concat-1792"}
    assert "branch4@1280, branch3@1536" in report.failures[0].found


def test_average_pool_that_ignores_padding_departs_from_lucid_not_the_paper() -> None:
    """Fig. 4 does not say whether the padding counts (TensorFlow's, which trained the
    paper's networks, does not; Lucid's does): only layout/conventions fails."""
    model = lucid_inception.twins.inception_v4()
    model.conv[2].branch1[0] = torch.nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/layout/conventions"}
    assert report.failures[0].found == "conv.2.branch1.0: count_include_pad False (expected True)"


def test_average_pool_computing_other_than_its_settings_fails_its_op() -> None:
    """Behaviour against the module's own settings: a pool that says it counts the padding
    and does not."""

    class Misleading(torch.nn.AvgPool2d):
        def forward(self, x):
            return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)

    model = lucid_inception.twins.inception_v4()
    model.conv[2].branch1[0] = Misleading(3, stride=1, padding=1, count_include_pad=True)
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/block_a/branch1-first-avgpool"}
    assert "output differs from the paper's" in report.failures[0].found


def test_a_tensorflow_style_port_fails_the_conventions_item_alone() -> None:
    """BatchNorm eps 1e-3 and momentum 0.01, no bias before a BatchNorm (timm's Inception-v4):
    settings the paper does not fix. Every paper item passes; layout/conventions names them."""
    model = lucid_inception.twins.inception_v4()
    for module in model.modules():
        if isinstance(module, twin_layers.ConvBNReLU2d):
            module.conv.bias = None
            module.bn.eps, module.bn.momentum = 1e-3, 0.01
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/layout/conventions"}
    found = report.failures[0].found
    for difference in (
        "conv bias False (expected True)",
        "bn eps 0.001 (expected 1e-05)",
        "bn momentum 0.01",
    ):
        assert f"conv.0.conv.0 .. conv.16.branch4_right (149): {difference}" in found


def test_v4_block_b_with_upstreams_64() -> None:
    model = lucid_inception.twins.inception_v4()
    for block in model.conv[6:13]:
        block.branch4[0] = twin_layers.ConvBNReLU2d(1024, 64, kernel_size=1)
        block.branch4[1] = twin_layers.ConvBNReLU2d(64, 192, kernel_size=(1, 7), padding=(0, 3))
    assert _failing(_check(model, "inception_v4")) == {"inception_v4/block_b/branch4-first-conv-192"}


def _c_block_forward(read_split: str):
    """A twin Inception-C forward whose split 1x3 branch reads ``read_split`` instead of
    branch3's output."""

    def forward(self, x):
        x3 = self.branch3(x)
        x3l = self.branch3_left({"block input": x, "flipped branch3": x3.flip(1)}[read_split])
        x4 = self.branch4(x)
        parts = [self.branch1(x), self.branch2(x), x3l, self.branch3_right(x3)]
        return torch.cat([*parts, self.branch4_left(x4), self.branch4_right(x4)], dim=1)

    return forward


def test_split_branch_reading_the_block_input() -> None:
    # branch3_left rebuilt 1536 -> 256 on the block input: it runs, and its in_channels
    # equal the width it receives, but not the 384 its source branch hands it
    model = lucid_inception.twins.inception_v4()
    for block in model.conv[-3:]:
        block.branch3_left = twin_layers.ConvBNReLU2d(1536, 256, kernel_size=(1, 3), padding=(0, 1))
        block.forward = types.MethodType(_c_block_forward("block input"), block)
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/block_c/branch3_left-first-conv-256"}
    found = report.failures[0].found
    assert "conv in_channels 1536 (expected 384)" in found
    assert "conv.14.branch3_left .. conv.16.branch3_left (3)" in found
    assert "its input is not the output of branch3" in found


def test_split_branch_reading_the_wrong_array_of_the_right_width() -> None:
    model = lucid_inception.twins.inception_v4()
    block = model.conv[-1]
    block.forward = types.MethodType(_c_block_forward("flipped branch3"), block)
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/block_c/branch3_left-first-conv-256"}
    assert "conv.16.branch3_left: its input is not the output of branch3" in report.failures[0].found


def test_chain_op_reading_other_data() -> None:
    # block A's branch4: the third conv reads a permutation of the second's output
    model = lucid_inception.twins.inception_v4()
    block = model.conv[2]
    first, second, third = block.branch4

    def forward(self, x):
        branch4 = third(second(first(x)).flip(1))
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), branch4], dim=1)

    block.forward = types.MethodType(forward, block)
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/block_a/branch4-third-conv-96"}
    assert "conv.2.branch4.2: its input is not the output of branch4.1" in report.failures[0].found


def test_blocks_applied_twice() -> None:
    # 14 Inception-B applications from 7 modules: the module count is the paper's
    model = lucid_inception.twins.inception_v4()
    trunk = list(model.conv)

    def features(x):
        for block in trunk:
            x = block(x)
            if type(block).__name__ == "InceptionB":
                x = block(x)
        return x

    model.features = features
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/layout/repeats"}
    assert "conv.6 .. conv.12 (7): applied 2 times per forward (once expected)" in report.failures[0].found


def _v4_with_features(route) -> torch.nn.Module:
    model = lucid_inception.twins.inception_v4()
    trunk = list(model.conv)  # conv.0 is the stem
    model.features = lambda x: route(trunk, x)
    return model


def _drop_output_of(index: int):
    def route(trunk, x):
        for i, block in enumerate(trunk):
            y = block(x)
            if i != index:
                x = y
        return x

    return route


def _scale_after(index: int):
    def route(trunk, x):
        for i, block in enumerate(trunk):
            x = block(x)
            if i == index:
                x = x * 0.5
        return x

    return route


@pytest.mark.parametrize(
    ("route", "found"),
    [
        (_drop_output_of(2), "conv.3: does not read the output of conv.2 (it reads the output of conv.1)"),
        (_scale_after(5), "conv.6: does not read the output of conv.5"),
        (_drop_output_of(16), "avgpool: the head's avgpool does not read the output of conv.16 (it reads"),
    ],
    ids=["block-output-dropped", "op-between-blocks", "head-reads-the-block-before-last"],
)
def test_hand_over_between_blocks(route, found: str) -> None:
    # Each block runs and is right inside; what one hands the next is not what it made
    report = _check(_v4_with_features(route), "inception_v4")
    assert _failing(report) == {"inception_v4/layout/hand-over"}
    assert report.failures[0].found.startswith(found)


def test_hand_over_to_the_head() -> None:
    # The trunk's output replaced by zeros: the output is fc.bias for any input
    model = lucid_inception.twins.inception_resnet_v2()
    features = model.features
    model.features = lambda x: torch.zeros_like(features(x))
    report = _check(model, "inception_resnet_v2")
    assert _failing(report) == {"inception_resnet_v2/layout/hand-over"}
    assert report.failures[0].found == "avgpool: the head's avgpool does not read the output of conv.21"


def test_hand_over_in_the_port() -> None:
    model = lucid_inception.inception_resnet_v1()
    trunk = list(model.conv)

    def features(x):
        x = model.stem(x)
        for i, block in enumerate(trunk):
            y = block(x)
            if i != 3:
                x = y
        return x

    model.features = features
    report = _check(model, "inception_resnet_v1")
    assert _failing(report) == {"inception_resnet_v1/layout/hand-over"}
    found = report.failures[0].found
    assert found == "conv.4: does not read the output of conv.3 (it reads the output of conv.2)"


@pytest.mark.parametrize("framework", ["torch", "lucid"])
def test_model_output_that_is_not_the_fc_output(framework: str) -> None:
    # Every op runs and is right, fc's output is the logits; the model returns them zeroed
    model = lucid_inception.build("inception_v4", framework)

    class ZeroedLogits(type(model)):
        def forward(self, x):
            return super().forward(x) * 0

    model.__class__ = ZeroedLogits
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/layout/hand-over"}
    assert report.failures[0].found == "<root>: the model's output is not the head's last op's output (fc)"


def test_chain_block_output_that_is_not_its_last_op_output() -> None:
    # Fig. 14's stem is one chain, no concat: its output negated after its last conv
    model = lucid_inception.twins.inception_resnet_v1()

    class NegatedStem(type(model.stem)):
        def forward(self, x):
            return -self.conv(x)

    model.stem.__class__ = NegatedStem
    report = _check(model, "inception_resnet_v1")
    assert _failing(report) == {"inception_resnet_v1/layout/hand-over"}
    assert report.failures[0].found == "stem: its output is not its last op's output (stem.conv.6)"


def test_default_size_runs_every_last_block_on_2x2() -> None:
    grids = {
        name: min(S.block_shapes(net, DEFAULT_SIZE)[net.blocks[-1].name][1]) for name, net in S.SPECS.items()
    }
    smaller = [min(S.block_shapes(net, DEFAULT_SIZE - 1)[net.blocks[-1].name][1]) for net in S.SPECS.values()]
    assert min(grids.values()) >= 2 and min(smaller) == 1 and MIN_SIZE <= DEFAULT_SIZE


def test_spatial_fault_in_the_last_blocks_at_the_default_size() -> None:
    # Inception-C's branch2 mirrored left-right: on the 1x1 grids of --size 75 this changes
    # no value; at the default size the concat slot of branch2 no longer matches
    model = lucid_inception.twins.inception_v4()

    def forward(self, x):
        x3, x4 = self.branch3(x), self.branch4(x)
        parts = [self.branch1(x), self.branch2(x).flip(3), self.branch3_left(x3), self.branch3_right(x3)]
        return torch.cat([*parts, self.branch4_left(x4), self.branch4_right(x4)], dim=1)

    for block in model.conv[-3:]:
        block.forward = types.MethodType(forward, block)
    report = check_model(model, "inception_v4", target="planted")
    assert _failing(report) == {"inception_v4/block_c/concat-1536"}
    assert "concat layout branch1@0, branch3_left@512" in report.failures[0].found


@pytest.mark.parametrize("framework", ["torch", "lucid"])
def test_float64_model_conforms(framework: str) -> None:
    # traced in the model's own dtype: the twin refuses a float32 input to a float64 model
    # (its forward fails); the port runs it, so the traced input's dtype shows the feed
    model = lucid_inception.build("inception_resnet_v1", framework)
    adapter_for(model).cast(model, "float64")
    report = _check(model, "inception_resnet_v1")
    assert not report.failures, [f"{r.id}: {r.found}" for r in report.failures]
    tr = trace(model, channels=3, size=MIN_SIZE, seed=0, keep={""})
    assert tr.first("").inputs[0].dtype == np.float64


def test_formula_fault_fails_the_formula_not_the_scale() -> None:
    # ReLU on the shortcut before the add, B blocks only: no single s fits, so the best-fit
    # s of each block is no scale and the scale item does not compare them
    model = lucid_inception.twins.inception_resnet_v1()

    def forward(self, x):
        mixed = self.mixed(x)
        return self.relu(x) + self.scale * self.conv_linear(mixed)

    for block in model.conv[6:16]:
        block.forward = types.MethodType(forward, block)
    report = _check(model, "inception_resnet_v1")
    assert _failing(report) == {"inception_resnet_v1/block_b/residual-formula"}
    scale = _result(report, "inception_resnet_v1/residual-scale")
    assert "block_b: 10 of 10 blocks have no scale (see residual-formula)" in scale.evidence


def test_missing_block_group_reports_its_items() -> None:
    # Inception-v4 without its three Inception-C blocks: their items fail, none vanishes
    model = lucid_inception.twins.inception_v4()
    model.conv = torch.nn.Sequential(*list(model.conv)[:-3])
    report = _check(model, "inception_v4")
    assert tuple(r.id for r in report.results) == expected_item_ids("inception_v4")
    block_c = {i for i in expected_item_ids("inception_v4") if i.startswith("inception_v4/block_c/")}
    assert len(block_c) == 20
    assert _failing(report) == {"inception_v4/layout/repeats"} | block_c
    assert {r.found for r in report.failures if r.id in block_c} == {"no block_c blocks found"}


def _regrouped(name: str, framework: str, skip: int | None = None):
    """The port's or twin's own layers, held as another faithful implementation might:
    the trunk as a ModuleList of one ModuleList per run of blocks of one class, and a
    Flatten module before the dropout. ``skip``: the trunk block the loop leaves out."""
    nn = torch.nn if framework == "torch" else lnn
    built = lucid_inception.build(name, framework)
    blocks = [*([built.stem] if hasattr(built, "stem") else []), *built.conv]
    stages: list[list] = []
    for block in blocks:
        if stages and type(stages[-1][-1]) is type(block):
            stages[-1].append(block)
        else:
            stages.append([block])

    class Regrouped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stages = nn.ModuleList([nn.ModuleList(stage) for stage in stages])
            self.avgpool = built.avgpool
            self.flatten = nn.Flatten(1)
            self.dropout, self.fc = built.dropout, built.fc

        def forward(self, x):
            for i, block in enumerate(b for stage in self.stages for b in stage):
                if i != skip:
                    x = block(x)
            return self.fc(self.dropout(self.flatten(self.avgpool(x))))

    return Regrouped()


@pytest.mark.parametrize("framework", ["torch", "lucid"])
@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v1"])
def test_module_lists_and_a_flatten_module_conform(name: str, framework: str) -> None:
    # A faithful model need not hold its blocks in a Sequential: nested ModuleLists are
    # opened as Sequentials are, and a Flatten module moves no value
    report = _check(_regrouped(name, framework), name)
    assert not report.failures, "\n".join(f"{r.id}: {r.found}" for r in report.failures)
    assert report.parameters == report.spec_parameters


def test_module_list_trunk_still_sees_a_skipped_block() -> None:
    # The same regrouped model with its loop leaving out the second Inception-A block
    # (its concat item leaves the fault to the -runs items: one fault, its items)
    report = _check(_regrouped("inception_v4", "torch", skip=2), "inception_v4")
    assert _failing(report) == {f"inception_v4/block_a/branch{i}-runs" for i in (1, 2, 3, 4)}
    assert all(r.found.startswith("stages.1.1.branch") for r in report.failures)


def _convs_as_sequentials(module, nn) -> None:
    """Every conv + BatchNorm + ReLU module rebuilt as ``nn.Sequential`` of its three layers
    (how many models write a paper conv), in place."""
    for name, child in list(module._modules.items()):
        kids = list(child._modules.values())
        if [type(k).__name__ for k in kids] == ["Conv2d", "BatchNorm2d", "ReLU"]:
            setattr(module, name, nn.Sequential(*kids))
        else:
            _convs_as_sequentials(child, nn)


@pytest.mark.parametrize(("name", "framework"), [("inception_v4", "torch"), ("inception_resnet_v2", "lucid")])
def test_convs_written_as_sequentials_conform(name: str, framework: str) -> None:
    # nn.Sequential(Conv2d, BatchNorm2d, ReLU) is one paper conv, as a branch's op or as a
    # whole one-op branch (no paper chain holds a BatchNorm of its own)
    model = lucid_inception.build(name, framework)
    _convs_as_sequentials(model, torch.nn if framework == "torch" else lnn)
    view = ModelView(model)
    convs = [path for path in view.modules if view.op_kind(path) == "conv"]
    assert len(convs) > 100 and all(view.layer(path) == "sequential" for path in convs)
    report = _check(model, name)
    assert not report.failures, "\n".join(f"{r.id}: {r.found}" for r in report.failures)


def test_sequential_conv_with_its_relu_before_its_batchnorm() -> None:
    model = lucid_inception.build("inception_v4", "torch")
    _convs_as_sequentials(model, torch.nn)
    conv, bn, relu = model.conv[1].branch4[0]
    model.conv[1].branch4[0] = torch.nn.Sequential(conv, relu, bn)
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/block_a/branch4-first-conv-64"}
    # Its layers in any order make a conv; the order they run in is the fault.
    found = report.failures[0].found
    assert found.startswith("conv.1.branch4.0: does not run conv -> BatchNorm -> ReLU once per call")


class _BasicConv2d(torch.nn.Module):
    """torchvision's Inception-v3 layer: conv and BatchNorm modules, the ReLU in the forward."""

    def __init__(self, conv: torch.nn.Module, bn: torch.nn.Module, relu: bool = True) -> None:
        super().__init__()
        self.conv, self.bn, self.relu = conv, bn, relu

    def forward(self, x):
        y = self.bn(self.conv(x))
        return torch.nn.functional.relu(y, inplace=True) if self.relu else y


def _convs_as_basic(module: torch.nn.Module) -> None:
    for name, child in list(module.named_children()):
        kids = list(child.children())
        if [type(k).__name__ for k in kids] == ["Conv2d", "BatchNorm2d", "ReLU"]:
            setattr(module, name, _BasicConv2d(kids[0], kids[1]))
        else:
            _convs_as_basic(child)


def test_convs_with_the_relu_in_their_forward_conform() -> None:
    model = lucid_inception.twins.inception_resnet_v1()
    _convs_as_basic(model)
    report = _check(model, "inception_resnet_v1")
    assert not report.failures, "\n".join(f"{r.id}: {r.found}" for r in report.failures)
    # the same layer forgetting its ReLU fails its op item only
    model.stem.conv[2].relu = False
    report = _check(model, "inception_resnet_v1")
    assert _failing(report) == {"inception_resnet_v1/stem/conv-third-conv-64"}
    assert "its output is not ReLU of its BatchNorm's output" in report.failures[0].found


def test_concat_of_a_branch_whose_container_never_runs() -> None:
    # The forward runs branch4's ops one by one, so branch4 itself never runs: its slot
    # is checked against its last op's output
    model = lucid_inception.twins.inception_v4()

    def forward(self, x):
        first, second, third = self.branch4
        y4 = third(second(first(x)))
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), torch.zeros_like(y4)], dim=1)

    for block in model.conv[1:5]:
        block.forward = types.MethodType(forward, block)
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/block_a/concat-384"}
    found = report.failures[0].found
    assert found.startswith("conv.1: concat layout branch1@0, branch2@96, branch3@192 = 384")


def test_residual_concat_of_a_branch_whose_container_never_runs() -> None:
    model = lucid_inception.twins.inception_resnet_v1()

    def forward(self, x):
        first, second, third = self.branch3
        y3 = third(second(first(x)))
        mixed = torch.cat([self.branch1(x), self.branch2(x), torch.zeros_like(y3)], dim=1)
        return self.relu(x + self.scale * self.conv_linear(mixed))

    block = model.conv[2]
    block.forward = types.MethodType(forward, block)
    report = _check(model, "inception_resnet_v1")
    assert _failing(report) == {"inception_resnet_v1/block_a/concat-96"}
    assert report.failures[0].found.startswith("conv.2: concat layout branch1@0, branch2@32 = 96")


@pytest.mark.parametrize("framework", ["torch", "lucid"])
def test_bypassed_dropout(framework: str) -> None:
    # Dropout runs, but fc reads the undropped array: in eval mode the two are equal
    model = lucid_inception.build("inception_v4", framework)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        x = x.reshape(x.shape[0], -1)
        self.dropout(x)
        return self.fc(x)

    model.forward = types.MethodType(forward, model)
    np.random.seed(7), torch.manual_seed(7)
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/head/dropout-keep-0.8"}
    found = report.failures[0].found
    assert found == "dropout: bypassed: in training mode (BatchNorms in eval) fc does not read its output"
    # The training-mode forward drew its mask from the global RNGs and put them back.
    assert np.random.rand() == np.random.RandomState(7).rand()
    assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(7)))


def test_branch_applied_twice_in_its_block() -> None:
    model = lucid_inception.twins.inception_v4()
    block = model.conv[2]  # Inception-A

    def forward(self, x):
        self.branch2(x)  # an extra application, output dropped
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)

    block.forward = types.MethodType(forward, block)
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/block_a/branch2-runs"}
    assert "conv.2.branch2: runs 2 times per forward, its block 1" in report.failures[0].found


def test_conv_returning_its_batchnorm_output() -> None:
    # the ReLU runs, in order, but its output is dropped
    model = lucid_inception.inception_v4()
    conv = model.conv[0].branch2_right[1]

    def forward(self, x):
        y = self.bn(self.conv(x))
        self.relu(y)
        return y

    conv.forward = types.MethodType(forward, conv)
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/stem/branch2_right-second-conv-64"}
    assert "conv.0.branch2_right.1: its output is not its ReLU's output" in report.failures[0].found


def test_conv_whose_relu_skips_the_batchnorm() -> None:
    model = lucid_inception.twins.inception_resnet_v1()
    conv = model.conv[0].branch1  # block A's 1x1

    def forward(self, x):
        y = self.conv(x)
        self.bn(y)
        return self.relu(y)

    conv.forward = types.MethodType(forward, conv)
    report = _check(model, "inception_resnet_v1")
    assert _failing(report) == {"inception_resnet_v1/block_a/branch1-first-conv-32"}
    assert "its ReLU's output is not ReLU of its BatchNorm's output" in report.failures[0].found


def test_unlisted_layer() -> None:
    model = lucid_inception.inception_resnet_v1()
    model.conv[0].extra = lnn.Conv2d(256, 256, kernel_size=1)
    report = _check(model, "inception_resnet_v1")
    assert _failing(report) == {"inception_resnet_v1/layout/modules-accounted"}
    assert "conv.0.extra: Conv2d (65792 parameters, ran 0x) is no paper op" in report.failures[0].found


def test_parameter_held_by_a_block() -> None:
    # zero-initialised and added to the block output: no layer, no output change, but 384
    # parameters that are in no paper op
    model = lucid_inception.inception_v4()
    block = model.conv[2]
    block.extra = lnn.Parameter(lucid.zeros((1, 384, 1, 1)))
    forward = block.forward
    block.forward = lambda x: forward(x) + block.extra
    report = _check(model, "inception_v4")
    assert report.parameters == report.spec_parameters + 384
    assert _failing(report) == {"inception_v4/layout/modules-accounted"}
    assert "conv.2: InceptionA holds 384 parameters of its own" in report.failures[0].found


def test_latent_paper_width_in_a_constructor() -> None:
    class LatentBlockC(port_resnet.ResNetV2BlockC):
        def __init__(self, in_channels: int, scale: float) -> None:
            widths = [224, 256, 2048]  # Fig. 19's label, read nowhere
            super().__init__(in_channels, scale)
            del widths

    model = lucid_inception.inception_resnet_v2()
    for block in model.conv[17:22]:
        block.__class__ = LatentBlockC
    report = _check(model, "inception_resnet_v2")
    assert _failing(report) == {"inception_resnet_v2/block_c/width-2144"}
    assert "LatentBlockC.__init__ keeps 2048 (Fig. 19), which no built layer uses" in report.failures[0].found


class _DefaultArgBlockC(port_resnet.ResNetV2BlockC):
    def __init__(self, in_channels: int, scale: float, linear_width: int = 2048) -> None:
        super().__init__(in_channels, scale)  # Fig. 19's label as a default, read nowhere


class _ClassAttributeBlockC(port_resnet.ResNetV2BlockC):
    LINEAR_WIDTH = 2048  # Fig. 19's label as a class attribute, read nowhere


@pytest.mark.parametrize(
    ("klass", "where"),
    [
        (_DefaultArgBlockC, "_DefaultArgBlockC.__init__ (default linear_width)"),
        (_ClassAttributeBlockC, "_ClassAttributeBlockC.LINEAR_WIDTH"),
    ],
)
def test_latent_paper_width_outside_the_constructor_body(klass: type, where: str) -> None:
    model = lucid_inception.inception_resnet_v2()
    for block in model.conv[17:22]:
        block.__class__ = klass
    report = _check(model, "inception_resnet_v2")
    assert _failing(report) == {"inception_resnet_v2/block_c/width-2144"}
    assert f"{where} keeps 2048 (Fig. 19), which no built layer uses" in report.failures[0].found


# ----- the command line


def test_cli_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--target", "twin", "--model", "inception_resnet_v1", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["id"] for i in items] == list(expected_item_ids("inception_resnet_v1"))
    assert all(set(i) == {"id", "status", "expected", "found", "evidence"} for i in items)
    assert {i["status"] for i in items} == {"pass"}


def test_cli_table_and_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    released = upstream_is_released()
    code = main(["check", "--target", "upstream", "--model", "inception_resnet_v1", "--failures"])
    assert code == (1 if released else 0)
    out = capsys.readouterr().out
    if released:
        assert "item" in out and "status" in out and "expected" in out and "found" in out
        assert "FAIL inception_resnet_v1/residual-scale" in out
    assert out.rstrip().endswith(f"1 model(s), 79 items, {2 if released else 0} failing")


@pytest.mark.slow
def test_port_conforms_at_299() -> None:
    name = "inception_resnet_v2"
    report = check_model(lucid_inception.build(name), name, size=299)
    assert not report.failures
    shapes = next(r for r in report.results if r.id == f"{name}/layout/stage-shapes")
    assert shapes.found == "35x35x384, 17x17x1152, 8x8x2144"


def _with_head(forward, *, drop: str, framework: str = "torch") -> ModelReport:
    model = lucid_inception.build("inception_resnet_v1", framework)
    if framework == "lucid":
        model._modules.pop(drop)  # Lucid's delattr leaves the module registered
    else:
        delattr(model, drop)
    model.forward = types.MethodType(forward, model)
    return _check(model, "inception_resnet_v1")


@pytest.mark.parametrize("pool", ["adaptive_avg_pool2d", "mean", "lucid mean"])
def test_a_global_pool_applied_as_a_function_passes_by_what_it_computes(pool: str) -> None:
    """A pool has nothing its output does not show: one the forward applies as a function
    passes when the next op's module reads the paper's pool of the last block's output."""

    def forward(self, x):
        x = self.features(x)
        if pool == "adaptive_avg_pool2d":
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        else:
            x = x.mean(axis=(2, 3)) if pool == "lucid mean" else x.mean((2, 3))
        return self.fc(self.dropout(x))

    report = _with_head(forward, drop="avgpool", framework="lucid" if pool == "lucid mean" else "torch")
    assert not report.failures, [(r.id, r.found) for r in report.failures]
    found = _result(report, "inception_resnet_v1/head/global-avgpool").found
    assert "applied as a function: the input of dropout is the paper's global average pool" in found
    assert "of the output of conv.21" in found


@pytest.mark.parametrize("wrong", ["max", "doubled", "no pool"])
def test_a_wrong_function_in_place_of_the_head_pool_fails_the_pool_items(wrong: str) -> None:
    """A max pool, a scaled average, or no pool at all (one position per channel): the
    pool's items fail, saying that the dropout did not read the paper's pool."""

    def forward(self, x):
        x = self.features(x)
        if wrong == "max":
            x = F.adaptive_max_pool2d(x, 1).flatten(1)
        elif wrong == "doubled":
            x = 2 * x.mean((2, 3))
        else:
            x = x[:, :, 0, 0]
        return self.fc(self.dropout(x))

    report = _with_head(forward, drop="avgpool")
    pool = "inception_resnet_v1/head/global-avgpool"
    assert _failing(report) == {pool, "inception_resnet_v1/head/avgpool-runs"}
    found = _result(report, pool).found
    assert "no module here, and the input of dropout is not the paper's global average pool" in found


def test_a_dropout_applied_as_a_function_fails_saying_what_the_kit_needs() -> None:
    """A dropout's rate shows in no eval-mode output: the kit reads it from the module."""

    def forward(self, x):
        x = self.avgpool(self.features(x)).flatten(1)
        return self.fc(F.dropout(x, 0.2, self.training))

    report = _with_head(forward, drop="dropout")
    drop = "inception_resnet_v1/head/dropout-keep-0.8"
    assert drop in _failing(report)
    assert _failing(report) <= {drop, "inception_resnet_v1/head/dropout-runs"}
    assert "applies as a function cannot be checked; hold it in an nn.Dropout" in _result(report, drop).found


@pytest.mark.parametrize("framework", ["lucid", "torch"])
def test_a_chain_block_written_as_a_sequential_of_its_ops_binds_whole(framework: str) -> None:
    """Fig. 14's stem is one chain, which a model may write as a Sequential of its seven
    ops (no ``conv`` attribute under it). It binds as the stem: opened into seven trunk
    blocks, 62 of the 78 items failed."""
    model = lucid_inception.build("inception_resnet_v1", framework)
    model.stem = model.stem.conv
    report = _check(model, "inception_resnet_v1")
    assert not report.failures, [(r.id, r.found) for r in report.failures]
    assert "stem.3" in _result(report, "inception_resnet_v1/stem/conv-fourth-maxpool").evidence


def test_a_fault_in_a_chain_block_written_as_a_sequential_fails_its_op_only() -> None:
    model = lucid_inception.twins.inception_resnet_v1()
    model.stem = model.stem.conv
    model.stem[3] = torch.nn.AvgPool2d(3, 2)  # Fig. 14: a 3x3 max pool, stride 2
    report = _check(model, "inception_resnet_v1")
    assert _failing(report) == {"inception_resnet_v1/stem/conv-fourth-maxpool"}
    assert (
        "an avgpool (AvgPool2d), expected a maxpool"
        in _result(report, "inception_resnet_v1/stem/conv-fourth-maxpool").found
    )


def _functional_reduction_a(pool, *, swapped: bool = False):
    model = lucid_inception.twins.inception_v4()
    block = model.conv[5]
    del block.branch1

    def forward(self, x):
        parts = [pool(x, 3, 2), self.branch2(x), self.branch3(x)]
        return torch.cat([parts[1], parts[0], parts[2]] if swapped else parts, dim=1)

    block.forward = types.MethodType(forward, block)
    return _check(model, "inception_v4")


def test_a_max_pool_branch_applied_as_a_function_passes_by_its_slot_in_the_concat() -> None:
    """torchvision writes a reduction's pool branch as ``F.max_pool2d`` inside the forward:
    no module reads it, but a max pool makes no new value, so the concat must hold its
    exact output at the branch's offset."""
    report = _functional_reduction_a(F.max_pool2d)
    assert not report.failures, [(r.id, r.found) for r in report.failures]
    found = _result(report, "inception_v4/reduction_a/branch1-first-maxpool").found
    assert found.startswith("applied as a function: the concat holds the paper's maxpool 3x3/2 V")


def test_a_wrong_or_misplaced_functional_pool_branch_fails() -> None:
    report = _functional_reduction_a(F.avg_pool2d)  # Fig. 7 draws a max pool
    pool = "inception_v4/reduction_a/branch1-first-maxpool"
    assert _failing(report) == {pool, "inception_v4/reduction_a/branch1-runs"}
    assert "no module here, and the concat does not hold the paper's maxpool" in _result(report, pool).found
    report = _functional_reduction_a(F.max_pool2d, swapped=True)
    assert _failing(report) == {"inception_v4/reduction_a/concat-1024"}


# ----- found by an adversarial review (2026-12-01): each failed or passed wrongly before


@pytest.mark.parametrize("clamp", [6.0, 50.0])
def test_activation_that_is_the_identity_on_small_values_fails_the_formula(clamp: float) -> None:
    # ReLU6 (or any clamp) after the residual sum: fresh weights keep a block's values
    # below ~0.2, where it is the paper's ReLU; on the larger input it is not.
    model = lucid_inception.twins.inception_resnet_v1()

    def forward(self, x):
        return self.relu(x + self.scale * self.conv_linear(self.mixed(x))).clamp(max=clamp)

    for block in model.conv[6:16]:  # the B blocks
        block.forward = types.MethodType(forward, block)
    report = _check(model, "inception_resnet_v1")
    assert _failing(report) == {"inception_resnet_v1/block_b/residual-formula"}
    assert "larger" in report.failures[0].found and "conv.6:" in report.failures[0].found


@pytest.mark.parametrize("framework", ["torch", "lucid"])
def test_dropout_that_acts_only_in_training_fails_the_dropout_item(framework: str) -> None:
    # A second dropout applied by the forward in training only (keep 0.8 * 0.2): invisible
    # in eval, and to a check that puts the dropout module alone in training mode.
    model = lucid_inception.build("inception_v4", framework)
    if framework == "torch":

        def forward(self, x):
            return self.fc(F.dropout(self.dropout(self.avgpool(self.conv(x)).flatten(1)), 0.8, self.training))
    else:

        def forward(self, x):
            pooled = self.avgpool(self.conv(x)).reshape(x.shape[0], -1)
            return self.fc(lucid.nn.functional.dropout(self.dropout(pooled), 0.8, self.training))

    model.forward = types.MethodType(forward, model)
    modes = adapter_for(model).training_modes(model)
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/head/dropout-keep-0.8"}
    assert "in training mode (BatchNorms in eval) fc does not read its output" in report.failures[0].found
    assert adapter_for(model).training_modes(model) == modes  # put back


def test_dropout_check_runs_the_trunk_as_in_eval() -> None:
    # The training-mode forward keeps every BatchNorm in eval: a faithful model reads the
    # same values there, so only a train-only op before the dropout shows.
    model = lucid_inception.twins.inception_v4()
    block = model.conv[16]
    forward = type(block).forward

    def noisy(self, x):
        return F.dropout(forward(self, x), 0.1, self.training)

    block.forward = types.MethodType(noisy, block)
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/head/dropout-keep-0.8"}
    assert "avgpool's output differs from eval's" in report.failures[0].found


@pytest.mark.parametrize("wrap", [lambda y: (y * 0,), lambda y: {"logits": y * 0}])
def test_model_returning_a_container_fails_the_forward_item(wrap) -> None:
    # The hooks record tensor outputs only: a tuple around zeroed logits passed every item.
    model = lucid_inception.twins.inception_v4()
    forward = type(model).forward
    model.forward = types.MethodType(lambda self, x: wrap(forward(self, x)), model)
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/layout/forward"}
    assert "not one tensor (the logits)" in report.failures[0].found


def test_identity_modules_are_inert() -> None:
    model = lucid_inception.twins.inception_v4()
    model.conv[1].spare = torch.nn.Identity()  # registered, never run
    model.conv.insert(5, torch.nn.Identity())  # in the trunk, run between two blocks
    model.conv[2].branch3.insert(1, torch.nn.Identity())  # inside a chain branch
    report = _check(model, "inception_v4")
    assert not report.failures, [f"{r.id}: {r.found}" for r in report.failures]


def test_float16_model_conforms() -> None:
    model = lucid_inception.twins.inception_resnet_v1().half()
    report = _check(model, "inception_resnet_v1")
    assert not report.failures, [f"{r.id}: {r.found}" for r in report.failures]


def test_conv_modules_registering_their_batchnorm_first_conform() -> None:
    # What the layers run in is read from the trace; the order they are defined in is free.
    model = lucid_inception.twins.inception_resnet_v1()
    for module in model.modules():
        if isinstance(module, twin_layers.ConvBNReLU2d):
            module._modules = {name: module._modules[name] for name in ("bn", "relu", "conv")}
    report = _check(model, "inception_resnet_v1")
    assert not report.failures, [f"{r.id}: {r.found}" for r in report.failures]


def test_forward_item_names_the_module_that_raised() -> None:
    model = lucid_inception.twins.inception_resnet_v1()
    model.conv[2].branch3[1].conv.stride = (2, 2)  # its concat then raises
    report = _check(model, "inception_resnet_v1")
    found = _result(report, "inception_resnet_v1/layout/forward").found
    assert found.startswith("<root>: forward raised in conv.2: RuntimeError")
    assert "inception_resnet_v1/block_a/branch3-second-conv-32" in _failing(report)


@pytest.mark.parametrize("framework", ["torch", "lucid"])
def test_blocks_registered_in_another_order_than_they_run_conform(framework: str) -> None:
    # The stem registered after the blocks: binding follows the run order (61 items failed).
    model = lucid_inception.build("inception_resnet_v1", framework)
    order = ["conv", "stem", "avgpool", "dropout", "fc"]
    model._modules = type(model._modules)((name, model._modules[name]) for name in order)
    assert [name for name, _ in adapter_for(model).named_modules(model)][1] == "conv"
    report = _check(model, "inception_resnet_v1")
    assert not report.failures, [f"{r.id}: {r.found}" for r in report.failures]


def test_an_op_applied_twice_in_its_chain_fails_its_runs_item_only() -> None:
    # The next op reads the doubled op's second output: it was blamed ("its input is not
    # the output of branch4.1"), while the op applied twice passed.
    model = lucid_inception.twins.inception_v4()

    def forward(self, x):
        s = self.branch4
        y = s[4](s[3](s[2](s[1](s[1](s[0](x))))))
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), y], 1)

    for block in model.conv[6:13]:  # the B blocks
        block.forward = types.MethodType(forward, block)
    report = _check(model, "inception_v4")
    assert _failing(report) == {"inception_v4/block_b/branch4-runs"}
    assert "runs 2 times per forward, its block 1" in report.failures[0].found


def test_a_spare_layer_that_never_runs_is_only_unaccounted() -> None:
    # It was bound as a seventh block group: layout/repeats failed too.
    model = lucid_inception.twins.inception_resnet_v1()
    model.aux = torch.nn.Linear(896, 1000)
    report = _check(model, "inception_resnet_v1")
    assert _failing(report) == {"inception_resnet_v1/layout/modules-accounted"}
    assert "aux: Linear (897000 parameters, ran 0x) is no paper op" in report.failures[0].found


def test_an_average_pool_dividing_by_its_window_conforms() -> None:
    # divisor_override=9 computes the paper's pool with the padding counted (it failed
    # its op and the conventions item).
    model = lucid_inception.twins.inception_v4()
    for block in model.conv[1:5]:  # the A blocks
        block.branch1[0] = torch.nn.AvgPool2d(3, 1, 1, divisor_override=9)
    report = _check(model, "inception_v4")
    assert not report.failures, [f"{r.id}: {r.found}" for r in report.failures]


def test_an_in_place_dropout_conforms() -> None:
    # It overwrites its recorded input: what it reads is taken from the pool before it.
    model = lucid_inception.twins.inception_v4()
    model.dropout = torch.nn.Dropout(0.2, inplace=True)
    report = _check(model, "inception_v4")
    assert not report.failures, [f"{r.id}: {r.found}" for r in report.failures]


def test_a_spare_block_does_not_undo_binding_in_run_order() -> None:
    # The stem registered after the blocks, and a copy of a block that never runs: only
    # the spare is reported (one module that never ran made the whole trunk fall back to
    # registration order: 61 items failed).
    model = lucid_inception.twins.inception_resnet_v1()
    order = ["conv", "stem", "avgpool", "dropout", "fc"]
    model._modules = type(model._modules)((name, model._modules[name]) for name in order)
    model.spare = copy.deepcopy(model.conv[6])
    report = _check(model, "inception_resnet_v1")
    assert _failing(report) == {
        "inception_resnet_v1/layout/repeats",
        "inception_resnet_v1/layout/modules-accounted",
    }


def test_a_clamp_after_the_sum_fails_in_float16_too() -> None:
    # The larger input stays within float16's range (it overflowed at the input's cast for
    # about half of the random builds, and the check then passed over every block).
    torch.manual_seed(2)
    model = lucid_inception.twins.inception_resnet_v1()

    def forward(self, x):
        return self.relu(x + self.scale * self.conv_linear(self.mixed(x))).clamp(max=6)

    for block in model.conv[0:5]:  # the A blocks
        block.forward = types.MethodType(forward, block)
    report = _check(model.half(), "inception_resnet_v1")
    assert _failing(report) == {"inception_resnet_v1/block_a/residual-formula"}


def test_a_block_the_larger_input_overflows_is_said_not_judged() -> None:
    # float16 A blocks whose linear 1x1 is 300x larger: on the larger input the last of
    # them overflow; their formula item says so in its evidence and does not fail.
    torch.manual_seed(0)  # seeds 0-3 alike: the last two blocks overflow
    model = lucid_inception.twins.inception_resnet_v1()
    with torch.no_grad():
        for block in model.conv[0:5]:
            block.conv_linear.weight.mul_(300)
    report = _check(model.half(), "inception_resnet_v1")
    assert not report.failures, [f"{r.id}: {r.found}" for r in report.failures]
    evidence = _result(report, "inception_resnet_v1/block_a/residual-formula").evidence
    assert "not checked on an input" in evidence and "(it overflows float16)" in evidence
