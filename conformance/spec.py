"""The three networks of Szegedy et al. 2016 (arXiv:1602.07261), transcribed as data.

Source: the paper's figures and Table 1. Every record
carries the figure or table it comes from. Branches are named as Lucid 2.x names its
modules (the names every upstream state dict carries, kept by the port and its torch
twins), so that a checker can find them; the paper itself names no branch.

This module is data and arithmetic on that data. It is never used to build a model:
``lucid_inception`` does not import ``conformance`` (a test holds that), and the checker
holds built models against it. Where the paper contradicts itself, the choice is a
``Decision`` with its evidence, never a silent edit.

Conventions (Lucid's ``nn.ConvBNReLU2d``): a ``conv`` is conv (with bias) ->
BatchNorm2d (eps 1e-5, momentum 0.1, affine) -> ReLU; a ``linear-conv`` is a plain conv
with bias. Unmarked convs are same-padded (k // 2 per axis); "V" convs are valid. A
``maxpool`` is 3x3 stride 2 valid; an ``avgpool`` is 3x3 stride 1 pad 1 and counts the
padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BN_EPS",
    "BN_MOMENTUM",
    "CONVENTIONS",
    "DECISIONS",
    "MODEL_NAMES",
    "OP_KINDS",
    "SPECS",
    "Block",
    "Branch",
    "Decision",
    "Network",
    "Op",
    "OpKind",
    "ResidualScale",
    "Stage",
    "StageShape",
    "Table1",
    "block_shapes",
    "count_parameters",
    "decisions_for",
    "op_output_hw",
]

OpKind = Literal["conv", "linear-conv", "maxpool", "avgpool", "global-avgpool", "dropout", "fc"]
OP_KINDS: tuple[str, ...] = ("conv", "linear-conv", "maxpool", "avgpool", "global-avgpool", "dropout", "fc")

# Lucid's conventions, kept by the port; the paper fixes none of them (its networks
# were trained in TensorFlow: BatchNorm eps 1e-3, no conv bias, average pools that do not
# count their padding). The checker lists differences in one item, layout/conventions,
# and fails no paper item on them.
BN_EPS = 1e-5  # nn.ConvBNReLU2d's BatchNorm
BN_MOMENTUM = 0.1
CONVENTIONS: dict[str, object] = {
    "bias": True,  # every conv (also before a BatchNorm) and the fc
    "bn_eps": BN_EPS,
    "bn_momentum": BN_MOMENTUM,
    "count_include_pad": True,  # Lucid's average pool always counts the padding
}

MODEL_NAMES: tuple[str, ...] = ("inception_v4", "inception_resnet_v1", "inception_resnet_v2")


@dataclass(frozen=True)
class Op:
    """One layer. ``in_channels``/``out_channels`` are equal for pools and dropout."""

    kind: OpKind
    ref: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    keep: float | None = None  # dropout only: the keep probability the paper writes
    item: str | None = None  # a checker item name that replaces the generated one

    @property
    def label(self) -> str:
        """Paper notation: ``3x3/2 V conv 96``, ``maxpool 3x3/2 V``, ``dropout keep 0.8``."""
        k = f"{self.kernel[0]}x{self.kernel[1]}"
        s = "" if self.stride == (1, 1) else f"/{self.stride[0]}"
        pad = " V" if self.padding == (0, 0) and self.kernel != (1, 1) else ""
        if self.kind in ("conv", "linear-conv"):
            return f"{k}{s}{pad} {self.kind} {self.in_channels}->{self.out_channels}"
        if self.kind in ("maxpool", "avgpool"):
            return f"{self.kind} {k}{s}{pad or f' pad {self.padding[0]}'}"
        if self.kind == "dropout":
            return f"dropout keep {self.keep} (p {1 - (self.keep or 0):.2g})"
        if self.kind == "fc":
            return f"fc {self.in_channels}->{self.out_channels}"
        return "global average pool"


@dataclass(frozen=True)
class Branch:
    """A chain of ops. It reads the stage input, or the output of branch ``source`` of
    the same stage (Inception-C's split branches, the head's chain)."""

    name: str
    ops: tuple[Op, ...]
    source: str | None = None

    @property
    def out_channels(self) -> int:
        return self.ops[-1].out_channels


@dataclass(frozen=True)
class Stage:
    """Branches, and the stage output: the listed branch outputs concatenated along
    channels in paper order (one name: the output of that branch, no concat)."""

    name: str
    ref: str
    branches: tuple[Branch, ...]
    output: tuple[str, ...]
    out_channels: int  # as the figure states it
    grid_299: int  # output side at a 299x299 input, as the figure states it

    @property
    def is_concat(self) -> bool:
        return len(self.output) > 1

    def branch(self, name: str) -> Branch:
        return next(b for b in self.branches if b.name == name)


@dataclass(frozen=True)
class Block:
    """A block type of a network, repeated ``repeats`` times. A residual block adds
    ``scale * linear(concat)`` to its input and applies ReLU (Fig. 20)."""

    name: str
    title: str
    ref: str
    repeats: int
    in_channels: int
    out_channels: int
    grid_299: int
    stages: tuple[Stage, ...]
    linear: Branch | None = None  # residual blocks: the linear 1x1 back to the input width

    @property
    def residual(self) -> bool:
        return self.linear is not None


@dataclass(frozen=True)
class Table1:
    """Table 1: filter counts of Reduction-A (Fig. 7)."""

    k: int
    l: int
    m: int
    n: int
    ref: str = "Table 1"


@dataclass(frozen=True)
class StageShape:
    block: str
    height: int
    width: int
    channels: int
    ref: str


@dataclass(frozen=True)
class ResidualScale:
    """Section 3.3 / Fig. 20: residuals are scaled down before the addition. The paper
    gives no single value; it recommends 0.1-0.3."""

    low: float = 0.0  # exclusive
    high: float = 1.0  # inclusive; see Decision fig20-scale-value on 1.0
    recommended: tuple[float, float] = (0.1, 0.3)
    ref: str = "Section 3.3, Fig. 20"


@dataclass(frozen=True)
class Network:
    name: str
    title: str
    ref: str
    blocks: tuple[Block, ...]  # the trunk, in order; each with its repeat count
    head: Block
    table1: Table1
    stage_shapes_299: tuple[StageShape, ...]
    params: int  # 1000 classes, conv biases on (Lucid convention)
    params_without_conv_bias: int  # the timm convention
    residual_scale: ResidualScale | None
    input_size: int = 299
    num_classes: int = 1000

    def block(self, name: str) -> Block:
        if name == "head":
            return self.head
        return next(b for b in self.blocks if b.name == name)


@dataclass(frozen=True)
class Decision:
    """A place where the paper contradicts itself (or leaves a value open), what this
    project implements, and the evidence. ``items`` are the checker items it governs."""

    id: str
    ref: str
    paper: str
    chosen: str
    evidence: str
    items: tuple[str, ...]
    rejected_value: int | None = None  # a paper width that must not linger in the code
    accepted_output: tuple[str, ...] | None = None  # an accepted concat order besides the paper's


# ----- building the data: small helpers that keep the transcription close to the figures


def _kernel(k: str) -> tuple[int, int]:
    h, w = k.split("x")
    return int(h), int(w)


def _conv(cin: int, cout: int, k: str, ref: str, *, stride: int = 1, valid: bool = False) -> Op:
    kernel = _kernel(k)
    padding = (0, 0) if valid else (kernel[0] // 2, kernel[1] // 2)  # "same": k // 2 per axis
    return Op("conv", ref, cin, cout, kernel, (stride, stride), padding)


def _linear(cin: int, cout: int, ref: str) -> Op:
    return Op("linear-conv", ref, cin, cout, item=f"linear-conv-{cout}")


def _maxpool(width: int, ref: str) -> Op:
    return Op("maxpool", ref, width, width, (3, 3), (2, 2), (0, 0))


def _avgpool(width: int, ref: str) -> Op:
    return Op("avgpool", ref, width, width, (3, 3), (1, 1), (1, 1))


def _b(name: str, *ops: Op, source: str | None = None) -> Branch:
    return Branch(name, tuple(ops), source)


def _concat(ref: str, *branches: Branch, width: int, grid: int) -> Stage:
    """A stage whose output concatenates its leaf branches (those no other branch reads)
    in the order given; ``width`` and ``grid`` as the figure states them."""
    leaves = tuple(b.name for b in branches if not any(o.source == b.name for o in branches))
    return Stage(f"concat-{width}", ref, tuple(branches), leaves, width, grid)


# ----- Inception-v4 (Fig. 3-9)


def _v4_stem() -> Block:
    f = "Fig. 3"
    return Block(
        name="stem",
        title="Stem",
        ref=f,
        repeats=1,
        in_channels=3,
        out_channels=384,
        grid_299=35,
        stages=(
            Stage(
                name="conv",
                ref=f,
                branches=(
                    _b(
                        "conv",
                        _conv(3, 32, "3x3", f, stride=2, valid=True),  # 149x149x32
                        _conv(32, 32, "3x3", f, valid=True),  # 147x147x32
                        _conv(32, 64, "3x3", f),  # 147x147x64
                    ),
                ),
                output=("conv",),
                out_channels=64,
                grid_299=147,
            ),
            _concat(  # 73x73: 64 + 96 = 160
                f,
                _b("branch1_pool", _maxpool(64, f)),
                _b("branch1_conv", _conv(64, 96, "3x3", f, stride=2, valid=True)),
                width=160,
                grid=73,
            ),
            _concat(  # 71x71: 96 + 96 = 192
                f,
                _b("branch2_left", _conv(160, 64, "1x1", f), _conv(64, 96, "3x3", f, valid=True)),
                _b(
                    "branch2_right",
                    _conv(160, 64, "1x1", f),
                    _conv(64, 64, "7x1", f),
                    _conv(64, 64, "1x7", f),
                    _conv(64, 96, "3x3", f, valid=True),
                ),
                width=192,
                grid=71,
            ),
            _concat(  # 35x35: 192 + 192 = 384; the conv's stride: Decision fig3-stem-stride
                f,
                _b(
                    "branch3_conv",
                    _conv(
                        192, 192, "3x3", f"{f} (stride 2: Decision fig3-stem-stride)", stride=2, valid=True
                    ),
                ),
                _b("branch3_pool", _maxpool(192, f)),
                width=384,
                grid=35,
            ),
        ),
    )


def _reduction_a(cin: int, t: Table1) -> Block:
    f = "Fig. 7, Table 1"
    out = cin + t.n + t.m
    return Block(
        name="reduction_a",
        title="Reduction-A",
        ref=f,
        repeats=1,
        in_channels=cin,
        out_channels=out,
        grid_299=17,
        stages=(
            _concat(  # 17x17: in + n + m
                f,
                _b("branch1", _maxpool(cin, f)),
                _b("branch2", _conv(cin, t.n, "3x3", f"{f} (n)", stride=2, valid=True)),
                _b(
                    "branch3",
                    _conv(cin, t.k, "1x1", f"{f} (k)"),
                    _conv(t.k, t.l, "3x3", f"{f} (l)"),
                    _conv(t.l, t.m, "3x3", f"{f} (m)", stride=2, valid=True),
                ),
                width=out,
                grid=17,
            ),
        ),
    )


def _v4_block_a() -> Block:
    f = "Fig. 4"
    return Block(
        name="block_a",
        title="Inception-A",
        ref=f,
        repeats=4,
        in_channels=384,
        out_channels=384,
        grid_299=35,
        stages=(
            _concat(  # 96 + 96 + 96 + 96 = 384
                f,
                _b("branch1", _avgpool(384, f), _conv(384, 96, "1x1", f)),
                _b("branch2", _conv(384, 96, "1x1", f)),
                _b("branch3", _conv(384, 64, "1x1", f), _conv(64, 96, "3x3", f)),
                _b("branch4", _conv(384, 64, "1x1", f), _conv(64, 96, "3x3", f), _conv(96, 96, "3x3", f)),
                width=384,
                grid=35,
            ),
        ),
    )


def _v4_block_b() -> Block:
    f = "Fig. 5"
    return Block(
        name="block_b",
        title="Inception-B",
        ref=f,
        repeats=7,
        in_channels=1024,
        out_channels=1024,
        grid_299=17,
        stages=(
            _concat(  # 128 + 384 + 256 + 256 = 1024
                f,
                _b("branch1", _avgpool(1024, f), _conv(1024, 128, "1x1", f)),
                _b("branch2", _conv(1024, 384, "1x1", f)),
                _b(
                    "branch3",
                    _conv(1024, 192, "1x1", f),
                    _conv(192, 224, "1x7", f),
                    _conv(224, 256, "7x1", f),
                ),
                _b(
                    "branch4",
                    _conv(1024, 192, "1x1", f),  # upstream Lucid 2.x: 64
                    _conv(192, 192, "1x7", f),
                    _conv(192, 224, "7x1", f),
                    _conv(224, 224, "1x7", f),
                    _conv(224, 256, "7x1", f),
                ),
                width=1024,
                grid=17,
            ),
        ),
    )


def _v4_reduction_b() -> Block:
    f = "Fig. 8"
    return Block(
        name="reduction_b",
        title="Reduction-B",
        ref=f,
        repeats=1,
        in_channels=1024,
        out_channels=1536,
        grid_299=8,
        stages=(
            _concat(  # 1024 + 192 + 320 = 1536
                f,
                _b("branch1", _maxpool(1024, f)),
                _b("branch2", _conv(1024, 192, "1x1", f), _conv(192, 192, "3x3", f, stride=2, valid=True)),
                _b(
                    "branch3",
                    _conv(1024, 256, "1x1", f),
                    _conv(256, 256, "1x7", f),
                    _conv(256, 320, "7x1", f),
                    _conv(320, 320, "3x3", f, stride=2, valid=True),
                ),
                width=1536,
                grid=8,
            ),
        ),
    )


def _v4_block_c() -> Block:
    f = "Fig. 6"
    return Block(
        name="block_c",
        title="Inception-C",
        ref=f,
        repeats=3,
        in_channels=1536,
        out_channels=1536,
        grid_299=8,
        stages=(
            _concat(  # 256 + 256 + (256 + 256) + (256 + 256) = 1536
                f,
                _b("branch1", _avgpool(1536, f), _conv(1536, 256, "1x1", f)),
                _b("branch2", _conv(1536, 256, "1x1", f)),
                _b("branch3", _conv(1536, 384, "1x1", f)),
                _b("branch3_left", _conv(384, 256, "1x3", f), source="branch3"),
                _b("branch3_right", _conv(384, 256, "3x1", f), source="branch3"),
                _b(
                    "branch4",
                    _conv(1536, 384, "1x1", f),
                    _conv(384, 448, "1x3", f),
                    _conv(448, 512, "3x1", f),
                ),
                _b("branch4_left", _conv(512, 256, "3x1", f), source="branch4"),
                _b("branch4_right", _conv(512, 256, "1x3", f), source="branch4"),
                width=1536,
                grid=8,
            ),
        ),
    )


def _head(width: int, ref: str) -> Block:
    keep = 0.8  # "Dropout (keep 0.8)"; Lucid and torch take the drop probability 0.2
    return Block(
        name="head",
        title="Head",
        ref=ref,
        repeats=1,
        in_channels=width,
        out_channels=1000,
        grid_299=1,
        stages=(
            Stage(
                name="head",
                ref=ref,
                branches=(
                    _b("avgpool", Op("global-avgpool", ref, width, width, item="global-avgpool")),
                    _b(
                        "dropout",
                        Op("dropout", ref, width, width, keep=keep, item=f"dropout-keep-{keep}"),
                        source="avgpool",
                    ),
                    _b("fc", Op("fc", ref, width, 1000, item=f"fc-{width}-1000"), source="dropout"),
                ),
                output=("fc",),
                out_channels=1000,
                grid_299=1,
            ),
        ),
    )


# ----- Inception-ResNet-v1 and -v2 (Fig. 10-20)


def _resnet_v1_stem() -> Block:
    f = "Fig. 14"
    return Block(
        name="stem",
        title="Stem",
        ref=f,
        repeats=1,
        in_channels=3,
        out_channels=256,
        grid_299=35,
        stages=(
            Stage(
                name="conv",
                ref=f,
                branches=(
                    _b(
                        "conv",
                        _conv(3, 32, "3x3", f, stride=2, valid=True),  # 149x149x32
                        _conv(32, 32, "3x3", f, valid=True),  # 147x147x32
                        _conv(32, 64, "3x3", f),  # 147x147x64
                        _maxpool(64, f),  # 73x73x64
                        _conv(64, 80, "1x1", f),  # 73x73x80
                        _conv(80, 192, "3x3", f, valid=True),  # 71x71x192
                        _conv(192, 256, "3x3", f, stride=2, valid=True),  # 35x35x256
                    ),
                ),
                output=("conv",),
                out_channels=256,
                grid_299=35,
            ),
        ),
    )


def _residual(
    name: str, title: str, ref: str, repeats: int, width: int, grid: int, branches: tuple[Branch, ...]
) -> Block:
    concat = sum(b.out_channels for b in branches)
    return Block(
        name=name,
        title=title,
        ref=ref,
        repeats=repeats,
        in_channels=width,
        out_channels=width,
        grid_299=grid,
        stages=(_concat(ref, *branches, width=concat, grid=grid),),
        linear=_b("conv_linear", _linear(concat, width, f"{ref}, Fig. 20")),
    )


def _resnet_reduction_b(cin: int, b3: int, b4_mid: int, b4_out: int, ref: str) -> Block:
    out = cin + 384 + b3 + b4_out
    return Block(
        name="reduction_b",
        title="Reduction-B",
        ref=ref,
        repeats=1,
        in_channels=cin,
        out_channels=out,
        grid_299=8,
        stages=(
            _concat(
                ref,
                _b("branch1", _maxpool(cin, ref)),
                _b("branch2", _conv(cin, 256, "1x1", ref), _conv(256, 384, "3x3", ref, stride=2, valid=True)),
                _b("branch3", _conv(cin, 256, "1x1", ref), _conv(256, b3, "3x3", ref, stride=2, valid=True)),
                _b(
                    "branch4",
                    _conv(cin, 256, "1x1", ref),
                    _conv(256, b4_mid, "3x3", ref),
                    _conv(b4_mid, b4_out, "3x3", ref, stride=2, valid=True),
                ),
                width=out,
                grid=8,
            ),
        ),
    )


def _resnet_v1() -> Network:
    t = Table1(192, 192, 256, 384)
    a, b, c = "Fig. 10", "Fig. 11", "Fig. 13"
    return Network(
        "inception_resnet_v1",
        "Inception-ResNet-v1",
        "Fig. 15",
        (
            _resnet_v1_stem(),
            _residual(  # 32 + 32 + 32 = 96 -> 256
                "block_a",
                "Inception-ResNet-A",
                a,
                5,
                256,
                35,
                (
                    _b("branch1", _conv(256, 32, "1x1", a)),
                    _b("branch2", _conv(256, 32, "1x1", a), _conv(32, 32, "3x3", a)),
                    _b("branch3", _conv(256, 32, "1x1", a), _conv(32, 32, "3x3", a), _conv(32, 32, "3x3", a)),
                ),
            ),
            _reduction_a(256, t),  # 256 + 384 + 256 = 896
            _residual(  # 128 + 128 = 256 -> 896
                "block_b",
                "Inception-ResNet-B",
                b,
                10,
                896,
                17,
                (
                    _b("branch1", _conv(896, 128, "1x1", b)),
                    _b(
                        "branch2",
                        _conv(896, 128, "1x1", b),
                        _conv(128, 128, "1x7", b),
                        _conv(128, 128, "7x1", b),
                    ),
                ),
            ),
            _resnet_reduction_b(896, 256, 256, 256, "Fig. 12"),  # 896 + 384 + 256 + 256 = 1792
            _residual(  # 192 + 192 = 384 -> 1792
                "block_c",
                "Inception-ResNet-C",
                c,
                5,
                1792,
                8,
                (
                    _b("branch1", _conv(1792, 192, "1x1", c)),
                    _b(
                        "branch2",
                        _conv(1792, 192, "1x1", c),
                        _conv(192, 192, "1x3", c),
                        _conv(192, 192, "3x1", c),
                    ),
                ),
            ),
        ),
        _head(1792, "Fig. 15"),
        t,
        (
            StageShape("stem", 35, 35, 256, "Fig. 14, Fig. 15"),
            StageShape("reduction_a", 17, 17, 896, "Fig. 15"),
            StageShape("reduction_b", 8, 8, 1792, "Fig. 15"),
        ),
        22_769_848,
        22_756_328,
        ResidualScale(),
    )


def _resnet_v2() -> Network:
    t = Table1(256, 256, 384, 384)
    a, b, c = "Fig. 16", "Fig. 17", "Fig. 19"
    return Network(
        "inception_resnet_v2",
        "Inception-ResNet-v2",
        "Fig. 15",
        (
            _v4_stem(),
            _residual(  # 32 + 32 + 64 = 128 -> 384
                "block_a",
                "Inception-ResNet-A",
                a,
                5,
                384,
                35,
                (
                    _b("branch1", _conv(384, 32, "1x1", a)),
                    _b("branch2", _conv(384, 32, "1x1", a), _conv(32, 32, "3x3", a)),
                    _b("branch3", _conv(384, 32, "1x1", a), _conv(32, 48, "3x3", a), _conv(48, 64, "3x3", a)),
                ),
            ),
            _reduction_a(384, t),  # 384 + 384 + 384 = 1152
            _residual(  # 192 + 192 = 384 -> 1152 (Fig. 17 says 1154: Decision fig17-width-1152)
                "block_b",
                "Inception-ResNet-B",
                b,
                10,
                1152,
                17,
                (
                    _b("branch1", _conv(1152, 192, "1x1", b)),
                    _b(
                        "branch2",
                        _conv(1152, 128, "1x1", b),
                        _conv(128, 160, "1x7", b),
                        _conv(160, 192, "7x1", b),
                    ),
                ),
            ),
            _resnet_reduction_b(1152, 288, 288, 320, "Fig. 18"),  # 1152 + 384 + 288 + 320 = 2144
            _residual(  # 192 + 256 = 448 -> 2144 (Fig. 19 says 2048: Decision fig19-width-2144)
                "block_c",
                "Inception-ResNet-C",
                c,
                5,
                2144,
                8,
                (
                    _b("branch1", _conv(2144, 192, "1x1", c)),
                    _b(
                        "branch2",
                        _conv(2144, 192, "1x1", c),
                        _conv(192, 224, "1x3", c),
                        _conv(224, 256, "3x1", c),
                    ),
                ),
            ),
        ),
        _head(2144, "Fig. 15"),
        t,
        (  # Fig. 15 draws v1's widths for both: Decision fig15-v2-widths
            StageShape("stem", 35, 35, 384, "Fig. 3"),
            StageShape("reduction_a", 17, 17, 1152, "Fig. 7, Table 1"),
            StageShape("reduction_b", 8, 8, 2144, "Fig. 18"),
        ),
        32_450_360,
        32_433_928,
        ResidualScale(),
    )


def _v4() -> Network:
    t = Table1(192, 224, 256, 384)
    return Network(
        "inception_v4",
        "Inception-v4",
        "Fig. 9",
        (_v4_stem(), _v4_block_a(), _reduction_a(384, t), _v4_block_b(), _v4_reduction_b(), _v4_block_c()),
        _head(1536, "Fig. 9"),
        t,
        (
            StageShape("stem", 35, 35, 384, "Fig. 3, Fig. 9"),
            StageShape("reduction_a", 17, 17, 1024, "Fig. 9"),
            StageShape("reduction_b", 8, 8, 1536, "Fig. 9"),
        ),
        42_711_400,
        42_679_816,
        None,
    )


SPECS: dict[str, Network] = {net.name: net for net in (_v4(), _resnet_v1(), _resnet_v2())}

DECISIONS: tuple[Decision, ...] = (
    Decision(
        "fig17-width-1152",
        "Fig. 17",
        "the Inception-ResNet-v2 B block's linear 1x1 conv is labelled 1154",
        "1152",
        "Reduction-A (Fig. 7, Table 1 n=384, m=384) gives 384 + 384 + 384 = 1152, and the residual "
        "add needs the block's input width",
        ("inception_resnet_v2/block_b/width-1152",),
        rejected_value=1154,
    ),
    Decision(
        "fig19-width-2144",
        "Fig. 19",
        "the Inception-ResNet-v2 C block's linear 1x1 conv is labelled 2048",
        "2144",
        "Reduction-B (Fig. 18) gives 1152 + 384 + 288 + 320 = 2144, and the residual add needs the "
        "block's input width; a constructor that keeps 2048 is one 'fix to match the paper' away "
        "from a broken add",
        ("inception_resnet_v2/block_c/width-2144",),
        rejected_value=2048,
    ),
    Decision(
        "fig3-stem-stride",
        "Fig. 3",
        "the stem's last conv is drawn '3x3 Conv (192 V)' with no stride",
        "stride 2",
        "Fig. 3 states 71x71x192 -> 35x35x384; a valid 3x3 conv gives (71 - 3) / 2 + 1 = 35 with "
        "stride 2 and 69 with stride 1, and the parallel max pool (stride 2) gives 35",
        (
            "inception_v4/stem/branch3_conv-first-conv-192",
            "inception_resnet_v2/stem/branch3_conv-first-conv-192",
        ),
    ),
    Decision(
        "fig3-stem-concat3-order",
        "Fig. 3",
        "the stem's third concat is [3x3/2 V conv 192, maxpool]",
        "[maxpool, 3x3/2 V conv 192], as upstream Lucid 2.x",
        "the order is only a permutation of the next layer's input channels (the function class "
        "is the same); upstream checkpoints depend on it. A checker accepts this permutation for "
        "this concat only",
        ("inception_v4/stem/concat-384", "inception_resnet_v2/stem/concat-384"),
        accepted_output=("branch3_pool", "branch3_conv"),
    ),
    Decision(
        "fig15-v2-widths",
        "Fig. 15",
        "the Inception-ResNet schema draws 35x35x256, 17x17x896, 8x8x1792 for both versions",
        "Inception-ResNet-v2: 35x35x384, 17x17x1152, 8x8x2144",
        "v2 uses the Inception-v4 stem (Fig. 3, 384), Reduction-A with Table 1's 256/256/384/384 "
        "(384 + 384 + 384 = 1152) and Fig. 18's Reduction-B (1152 + 384 + 288 + 320 = 2144); the "
        "figure's widths are v1's",
        ("inception_resnet_v2/layout/stage-shapes",),
    ),
    Decision(
        "fig20-scale-value",
        "Section 3.3, Fig. 20",
        "residuals are scaled by a factor 'between 0.1 and 0.3'; no single value",
        "any scale s with 0 < s < 1, the same for every block of a type (the port defaults to 0.2)",
        "s = 1 is the same function as no scaling, so a behavioural check cannot tell 'scale 1.0' "
        "from 'no scaling'; both fail. Values outside the recommended 0.1-0.3 pass and are reported",
        ("inception_resnet_v1/residual-scale", "inception_resnet_v2/residual-scale"),
    ),
)


def decisions_for(item: str) -> tuple[Decision, ...]:
    """The decisions that govern a checker item."""
    return tuple(d for d in DECISIONS if item in d.items)


# ----- arithmetic on the data (derived, never transcribed)


def op_output_hw(op: Op, h: int, w: int) -> tuple[int, int]:
    """Output grid of an op for an h x w input (floor division, as Lucid and torch)."""
    if op.kind == "global-avgpool":
        return 1, 1
    if op.kind in ("dropout", "fc"):
        return 1, 1
    (kh, kw), (sh, sw), (ph, pw) = op.kernel, op.stride, op.padding
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def _branch_out_hw(stage: Stage, h: int, w: int) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for branch in stage.branches:  # sources come first in every stage
        bh, bw = (h, w) if branch.source is None else out[branch.source]
        for op in branch.ops:
            bh, bw = op_output_hw(op, bh, bw)
        out[branch.name] = (bh, bw)
    return out


def stage_output_hw(stage: Stage, h: int, w: int) -> tuple[int, int]:
    grids = _branch_out_hw(stage, h, w)
    sizes = {grids[name] for name in stage.output}
    if len(sizes) != 1:
        raise ValueError(f"stage {stage.name}: branches end on different grids {sorted(sizes)}")
    return sizes.pop()


def block_shapes(net: Network, size: int) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """``{block name: ((in_h, in_w), (out_h, out_w))}`` for a size x size input."""
    shapes: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
    h = w = size
    for block in (*net.blocks, net.head):
        start = (h, w)
        for stage in block.stages:
            h, w = stage_output_hw(stage, h, w)
        shapes[block.name] = (start, (h, w))
    return shapes


def count_parameters(net: Network, *, conv_bias: bool = True) -> int:
    """Parameters of the network as specified (every repeat): conv weights (+ bias) and
    BatchNorm scale and shift; linear convs and the fc keep their bias either way (timm)."""
    total = 0
    for block in (*net.blocks, net.head):
        ops = [op for stage in block.stages for branch in stage.branches for op in branch.ops]
        if block.linear is not None:
            ops += list(block.linear.ops)
        per_block = 0
        for op in ops:
            if op.kind == "conv":
                per_block += op.kernel[0] * op.kernel[1] * op.in_channels * op.out_channels
                per_block += (op.out_channels if conv_bias else 0) + 2 * op.out_channels
            elif op.kind == "linear-conv":
                per_block += op.kernel[0] * op.kernel[1] * op.in_channels * op.out_channels + op.out_channels
            elif op.kind == "fc":
                per_block += op.in_channels * op.out_channels + op.out_channels
        total += per_block * block.repeats
    return total
