"""The paper spec holds together: channel arithmetic, Table 1, stage shapes at 299,
parameter counts, the Decisions; and it is data only (nothing in ``lucid_inception``
imports it)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import spec as S
from conformance.checker import expected_item_ids

from .conftest import UPSTREAM_BUG_ITEMS

NETS = list(S.SPECS.values())
ROOT = Path(__file__).resolve().parents[1]


def _ops(block: S.Block) -> list[S.Op]:
    ops = [op for stage in block.stages for branch in stage.branches for op in branch.ops]
    return ops + (list(block.linear.ops) if block.linear else [])


@pytest.mark.parametrize("net", NETS, ids=lambda n: n.name)
def test_channels_chain_within_every_branch(net: S.Network) -> None:
    for block in (*net.blocks, net.head):
        width = block.in_channels
        for stage in block.stages:
            ends: dict[str, int] = {}
            for branch in stage.branches:
                feed = width if branch.source is None else ends[branch.source]
                for op in branch.ops:
                    assert op.in_channels == feed, f"{net.name}/{block.name}/{branch.name}: {op.label}"
                    if op.kind in ("maxpool", "avgpool", "global-avgpool", "dropout"):
                        assert op.out_channels == op.in_channels, (
                            f"{block.name}/{branch.name}: pools keep width"
                        )
                    feed = op.out_channels
                ends[branch.name] = feed
            # a concat's width is the sum of its branches, as the figure states it
            assert sum(ends[name] for name in stage.output) == stage.out_channels, (
                f"{block.name}/{stage.name}"
            )
            width = stage.out_channels
        if block.linear is not None:  # residual: the linear 1x1 maps the concat back to the input width
            (linear,) = block.linear.ops
            assert linear.in_channels == width
            assert linear.out_channels == block.in_channels == block.out_channels
        elif block.name != "head":
            assert width == block.out_channels, (
                f"{block.name}: last stage {width}, block {block.out_channels}"
            )


@pytest.mark.parametrize("net", NETS, ids=lambda n: n.name)
def test_blocks_chain_and_head_reads_the_last_width(net: S.Network) -> None:
    widths = [(b.in_channels, b.out_channels) for b in net.blocks]
    for (_, out), (nxt, _) in zip(widths, widths[1:], strict=False):
        assert out == nxt
    assert net.head.in_channels == net.blocks[-1].out_channels
    assert net.blocks[0].in_channels == 3
    (fc,) = net.head.stages[0].branch("fc").ops
    assert (fc.in_channels, fc.out_channels) == (net.blocks[-1].out_channels, net.num_classes)


@pytest.mark.parametrize(
    ("name", "table", "width_in", "width_out"),
    [
        ("inception_v4", (192, 224, 256, 384), 384, 1024),
        ("inception_resnet_v1", (192, 192, 256, 384), 256, 896),
        ("inception_resnet_v2", (256, 256, 384, 384), 384, 1152),
    ],
)
def test_table1_gives_reduction_a(name: str, table: tuple[int, ...], width_in: int, width_out: int) -> None:
    net = S.SPECS[name]
    t = net.table1
    assert (t.k, t.l, t.m, t.n) == table
    block = net.block("reduction_a")
    (stage,) = block.stages
    assert stage.branch("branch2").ops[0].out_channels == t.n
    assert [op.out_channels for op in stage.branch("branch3").ops] == [t.k, t.l, t.m]
    assert block.in_channels == width_in
    assert block.out_channels == width_in + t.n + t.m == width_out  # Fig. 7: in + n + m
    assert next(s for s in net.stage_shapes_299 if s.block == "reduction_a").channels == width_out


@pytest.mark.parametrize("net", NETS, ids=lambda n: n.name)
def test_stage_shapes_at_299_follow_from_the_ops(net: S.Network) -> None:
    shapes = S.block_shapes(net, net.input_size)
    for stated in net.stage_shapes_299:
        block = net.block(stated.block)
        assert shapes[stated.block][1] == (stated.height, stated.width)
        assert block.out_channels == stated.channels
        assert block.grid_299 == stated.height
    for block in net.blocks:
        h = w = shapes[block.name][0][0]
        for stage in block.stages:  # each stage's stated grid (Fig. 3: 147, 73, 71, 35)
            h, w = S.stage_output_hw(stage, h, w)
            assert h == w == stage.grid_299, f"{net.name}/{block.name}/{stage.name}"


@pytest.mark.parametrize("net", NETS, ids=lambda n: n.name)
def test_smallest_input_is_75(net: S.Network) -> None:
    assert S.block_shapes(net, 75)["reduction_b"][1] == (1, 1)
    assert S.block_shapes(net, 74)["reduction_b"][1][0] < 1  # 74 collapses in Reduction-B


@pytest.mark.parametrize("net", NETS, ids=lambda n: n.name)
def test_parameter_counts_follow_from_the_ops(net: S.Network) -> None:
    assert S.count_parameters(net) == net.params
    assert S.count_parameters(net, conv_bias=False) == net.params_without_conv_bias


def test_decision_widths_follow_from_the_reductions() -> None:
    v2 = S.SPECS["inception_resnet_v2"]
    fig17 = next(d for d in S.DECISIONS if d.id == "fig17-width-1152")
    fig19 = next(d for d in S.DECISIONS if d.id == "fig19-width-2144")
    reduction_a = v2.block("reduction_a").stages[0]
    assert sum(reduction_a.branch(n).out_channels for n in reduction_a.output) == 384 + 384 + 384 == 1152
    reduction_b = v2.block("reduction_b").stages[0]
    assert (
        sum(reduction_b.branch(n).out_channels for n in reduction_b.output) == 1152 + 384 + 288 + 320 == 2144
    )
    for block, decision in (("block_b", fig17), ("block_c", fig19)):
        (linear,) = v2.block(block).linear.ops
        assert linear.out_channels == int(decision.chosen) == v2.block(block).in_channels
        assert decision.rejected_value not in (linear.out_channels, v2.block(block).in_channels)
    assert (fig17.rejected_value, fig19.rejected_value) == (1154, 2048)


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_stem_stride_decision(name: str) -> None:
    stage = S.SPECS[name].block("stem").stages[-1]
    (conv,) = stage.branch("branch3_conv").ops
    assert conv.stride == (2, 2)
    assert S.op_output_hw(conv, 71, 71) == (35, 35)
    assert S.op_output_hw(dataclasses.replace(conv, stride=(1, 1)), 71, 71) == (69, 69)  # as drawn
    assert S.decisions_for(f"{name}/stem/{'branch3_conv-first-conv-192'}")


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_stem_concat_permutation_is_the_only_one_and_only_there(name: str) -> None:
    stage = S.SPECS[name].block("stem").stages[-1]
    assert stage.output == ("branch3_conv", "branch3_pool")  # the paper's order (Fig. 3)
    (decision,) = [d for d in S.DECISIONS if d.accepted_output]
    assert (
        sorted(decision.accepted_output) == sorted(stage.output) and decision.accepted_output != stage.output
    )
    assert decision.items == ("inception_v4/stem/concat-384", "inception_resnet_v2/stem/concat-384")
    # the permutation keeps every branch's width: only the next layer's input channels move
    assert {stage.branch(n).out_channels for n in stage.output} == {192}


def test_residual_scale_is_a_range_not_a_value() -> None:
    assert S.SPECS["inception_v4"].residual_scale is None
    for name in ("inception_resnet_v1", "inception_resnet_v2"):
        scale = S.SPECS[name].residual_scale
        assert scale is not None and (scale.low, scale.high, scale.recommended) == (0.0, 1.0, (0.1, 0.3))


def test_head_keeps_0_8() -> None:
    for net in NETS:
        (dropout,) = net.head.stages[0].branch("dropout").ops
        assert dropout.keep == 0.8 and dropout.item == "dropout-keep-0.8"


def test_every_record_names_its_source() -> None:
    source = re.compile(r"(Fig\. \d+|Table 1|Section \d)")
    for net in NETS:
        assert source.search(net.ref)
        for block in (*net.blocks, net.head):
            assert source.search(block.ref), block.name
            for stage in block.stages:
                assert source.search(stage.ref), stage.name
            for op in _ops(block):
                assert source.search(op.ref), f"{net.name}/{block.name}: {op.label}"
        assert all(source.search(s.ref) for s in net.stage_shapes_299)
    for decision in S.DECISIONS:
        assert source.search(decision.ref) and decision.paper and decision.chosen and decision.evidence


def test_decisions_govern_existing_items() -> None:
    every = {i for name in S.MODEL_NAMES for i in expected_item_ids(name)}
    for decision in S.DECISIONS:
        assert set(decision.items) <= every, decision.id
    assert UPSTREAM_BUG_ITEMS <= every


def test_records_are_frozen() -> None:
    net = S.SPECS["inception_v4"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.params = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.blocks[0].stages[0].branches[0].ops[0].stride = (1, 1)  # type: ignore[misc]


def test_the_models_never_import_the_spec() -> None:
    code = (
        "import sys, lucid_inception, lucid_inception.twins; "
        "print([m for m in sys.modules if m.startswith('conformance')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
    for path in (ROOT / "lucid_inception").rglob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+conformance", path.read_text(), re.M), path
