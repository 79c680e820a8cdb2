"""The catalogue of upstream lucid-dl faults this project found: what, where, how to see it
(a reproducer script), how to fix it (a patch generator), and which conformance-check
items it breaks.

``affected_versions`` and ``not_affected`` are claims; ``conformance.prove`` checks both by
running each reproducer on unpatched upstream.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import patches
from .upstream import SUPPORTED_VERSIONS

__all__ = ["FINDINGS", "REPRODUCERS", "SEVERITIES", "Finding", "by_id", "dependencies"]

REPRODUCERS = Path(__file__).parent / "reproducers"
SEVERITIES = ("critical", "high", "medium", "low")
_ID = re.compile(r"^LUC-\d{3}-[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Finding:
    """One upstream fault.

    ``evidence`` is Markdown. ``depends_on`` names findings whose patches must be applied
    before this one's reproducer can run (where that finding affects the version).
    ``not_affected`` says, for each supported version outside ``affected_versions``, why.
    ``ops_known`` names the known deviations of ``python -m conformance ops``
    (``conformance.ops.known.KNOWN`` ids) that this finding's patch removes on its own: on
    the combined tree the cases declaring them must no longer read ``known-bug``.
    """

    id: str
    title: str
    severity: str
    affected_versions: tuple[str, ...]
    evidence: str
    reproducer: Path
    patch_generator: patches.Generator
    spec_items: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    not_affected: Mapping[str, str] = field(default_factory=dict)
    ops_known: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ValueError(f"finding id must look like 'LUC-001-some-slug', got {self.id!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"{self.id}: severity must be one of {SEVERITIES}, got {self.severity!r}")
        unknown = set(self.affected_versions) - set(SUPPORTED_VERSIONS)
        if not self.affected_versions or unknown:
            raise ValueError(
                f"{self.id}: affected_versions must be a non-empty subset of {SUPPORTED_VERSIONS}, "
                f"got {self.affected_versions}"
            )
        expected = set(SUPPORTED_VERSIONS) - set(self.affected_versions)
        if set(self.not_affected) != expected:
            raise ValueError(
                f"{self.id}: not_affected must explain exactly {sorted(expected)}, "
                f"got {sorted(self.not_affected)}"
            )
        if not self.reproducer.is_file():
            raise ValueError(f"{self.id}: no reproducer at {self.reproducer}")

    def affects(self, version: str) -> bool:
        return version in self.affected_versions


def _reproducer(finding_id: str) -> Path:
    return REPRODUCERS / f"{finding_id}.py"


_PY312 = "LUC-008-py312-import-nameerror"
_FUSION = "LUC-013-fusion-drops-gradient"
_SHARED_GRAD = "LUC-015-gradient-accumulates-into-shared-array"
# On 2.16.0 nothing else runs before LUC-008's patch makes `import lucid` work on 3.12.
_NEEDS_IMPORT = (_PY312,)
_MODELS_29 = "`lucid/models/imgclf/inception.py`, `inception_res.py`"
_MODELS_216 = "`lucid/models/vision/inception.py`, `inception_res.py`"

FINDINGS: tuple[Finding, ...] = (
    Finding(
        id="LUC-001-stem-branch2-right-unused",
        title="The Inception-v4 stem never calls branch2_right",
        severity="high",
        affected_versions=SUPPORTED_VERSIONS,
        evidence=(
            "`_InceptionStem_V4.forward` (" + _MODELS_29 + " in 2.9.0, " + _MODELS_216 + " in 2.16.0) "
            "computes `lucid.concatenate([self.branch2_left(x), self.branch2_left(x)], axis=1)`. "
            "`branch2_right` (1x1 64 -> 7x1 64 -> 1x7 64 -> 3x3 V 96, Fig. 3) is built, saved and "
            "loaded but never runs, so the second concat of the stem is one branch twice. The stem "
            "is shared by `inception_v4` and `inception_resnet_v2`; checkpoints trained upstream "
            "hold untrained `branch2_right` weights."
        ),
        reproducer=_reproducer("LUC-001-stem-branch2-right-unused"),
        patch_generator=patches.stem_branch2_right,
        spec_items=("inception_v4/stem/branch2_right-runs", "inception_resnet_v2/stem/branch2_right-runs"),
        depends_on=_NEEDS_IMPORT,
    ),
    Finding(
        id="LUC-002-head-dropout-p08",
        title="The classifier heads drop 80% instead of keeping 80%",
        severity="high",
        affected_versions=SUPPORTED_VERSIONS,
        evidence=(
            "All three heads use `nn.Dropout(p=0.8)` (2.9.0: `Inception_V4`, `InceptionResNet_V1/V2`; "
            "2.16.0: the v4 default in `Inception._build_v4` and `InceptionResNetConfig.dropout_prob`). "
            "Lucid's `p` is the drop probability (inverted dropout, as in torch), while the paper's "
            "heads keep 0.8 (Fig. 9, Fig. 15): `p=0.2`. Training upstream zeroes 80% of the pooled "
            "features."
        ),
        reproducer=_reproducer("LUC-002-head-dropout-p08"),
        patch_generator=patches.head_dropout,
        spec_items=(
            "inception_v4/head/dropout-keep-0.8",
            "inception_resnet_v1/head/dropout-keep-0.8",
            "inception_resnet_v2/head/dropout-keep-0.8",
        ),
        depends_on=_NEEDS_IMPORT,
    ),
    Finding(
        id="LUC-003-no-residual-scaling",
        title="Inception-ResNet blocks do not scale their residuals",
        severity="medium",
        affected_versions=SUPPORTED_VERSIONS,
        evidence=(
            "Every Inception-ResNet block (`_InceptionResModule_A/B/C`) computes "
            "`relu(x + conv_linear(concat))`. Section 3.3 and Fig. 20 scale the residual by a factor "
            "of 0.1-0.3 before the add, which the paper found necessary to keep wide residual "
            "Inception networks from dying early in training. Neither the blocks, the models nor the "
            "factories accept a scale. The patch adds `scale` (a float or an (A, B, C) triple, "
            "default 0.2 like this project's port, checked to lie in (0, 1]) to the blocks, models, "
            "2.16.0's `InceptionResNetConfig` and the factories, and computes "
            "`relu(x + scale * conv_linear(concat))`."
        ),
        reproducer=_reproducer("LUC-003-no-residual-scaling"),
        patch_generator=patches.residual_scaling,
        spec_items=("inception_resnet_v1/residual-scale", "inception_resnet_v2/residual-scale"),
        depends_on=_NEEDS_IMPORT,
    ),
    Finding(
        id="LUC-004-dead-2048-v2-block-c",
        title="A dead 2048 beside the working 2144 in the Inception-ResNet-v2 C block",
        severity="low",
        affected_versions=SUPPORTED_VERSIONS,
        evidence=(
            "`_InceptionResModule_C` sets `cfg = [224, 256, 2048]` for v2 (and `[192, 192, 1792]` for "
            "v1) but never reads `cfg[2]`: the linear conv maps back to `in_channels`. 2048 is Fig. "
            "19's number; Reduction-B gives 1152 + 384 + 288 + 320 = 2144 and the residual add needs "
            'the input width, so a change that makes the conv use `cfg[2]` "to match the paper" '
            "breaks the add. The patch removes the unread entries."
        ),
        reproducer=_reproducer("LUC-004-dead-2048-v2-block-c"),
        patch_generator=patches.dead_2048_block_c,
        spec_items=("inception_resnet_v2/block_c/width-2144",),
        depends_on=_NEEDS_IMPORT,
    ),
    Finding(
        id="LUC-005-v4-block-b-branch4-64",
        title="The Inception-v4 B block's long branch starts with a 1x1 of 64, not 192",
        severity="high",
        affected_versions=SUPPORTED_VERSIONS,
        evidence=(
            "`_InceptionModule_V4B.branch4` starts `ConvBNReLU2d(in_channels, 64, 1)` -> "
            "`ConvBNReLU2d(64, 192, (1, 7))`; Fig. 5 draws 1x1 192 -> 1x7 192 -> 7x1 224 -> 1x7 224 "
            "-> 7x1 256. Upstream Inception-v4 has 40,586,984 parameters instead of 42,711,400 "
            "(counted from Fig. 3-9, conv biases included). The fix changes the shapes of "
            "`branch4.0.*` and `branch4.1.conv.weight` in "
            "all seven B blocks, so upstream v4 checkpoints no longer load into the fixed model; on "
            "2.16.0 it also updates the count `lucid/models/registry.json` lists for `inception_v4`."
        ),
        reproducer=_reproducer("LUC-005-v4-block-b-branch4-64"),
        patch_generator=patches.v4_block_b_branch4,
        spec_items=("inception_v4/block_b/branch4-first-conv-192",),
        depends_on=_NEEDS_IMPORT,
    ),
    Finding(
        id="LUC-006-broadcast-grad-wrong",
        title="Gradients of broadcast operands and of keepdims reductions are wrong",
        severity="critical",
        affected_versions=("2.9.0",),
        evidence=(
            "`lucid._match_grad_shape` fits a gradient to its operand's shape by reshaping, which "
            "is right only when the axes involved trail. A gradient larger than its operand is "
            "reshaped to `data.shape + (k,)` and summed over the last axis: for `x (N, C) + b (C,)` "
            "it reads the (N, C) gradient as (C, N), so `b.grad` mixes rows and columns, and every "
            "conv/linear bias and BatchNorm weight/bias gradient is wrong. A gradient smaller than "
            "its operand (a `mean`/`sum` with `keepdims` over a leading axis) is flattened, "
            "repeated along a new last axis and reshaped: for `x.mean(axis=0, keepdims=True)` "
            "with upstream gradient [1, 2, 3] on a (2, 3) `x`, `x.grad` is [[.5, .5, 1], "
            "[1, 1.5, 1.5]] instead of [[.5, 1, 1.5], [.5, 1, 1.5]]. Training-mode BatchNorm "
            "takes its batch mean and variance over (0, 2, 3), so its input gradient, and with it "
            "every gradient below a BatchNorm, is wrong too: training on 2.9.0 is broken. The "
            "patch replaces the function's body: shapes of equal size are reshaped as before; "
            "otherwise the shapes are right-aligned, the gradient is summed over the axes where "
            "the operand has size 1 (or lacks the axis) and broadcast along the axes where the "
            "gradient has size 1."
        ),
        reproducer=_reproducer("LUC-006-broadcast-grad-wrong"),
        patch_generator=patches.broadcast_gradients,
        depends_on=_NEEDS_IMPORT,
        ops_known=("broadcast-gradient",),
        not_affected={
            "2.16.0": "2.16.0's `_match_grad_shape` right-aligns the shapes, sums over the "
            "broadcast axes and broadcasts along the reduced ones (2.10-2.15 not checked)."
        },
    ),
    Finding(
        id="LUC-007-registry-json-write",
        title="Model factories write registry.json into the installed package",
        severity="high",
        affected_versions=SUPPORTED_VERSIONS,
        evidence=(
            "`lucid.register_model` wraps every factory so that building a model writes "
            "`lucid/models/registry.json` inside the installed package: 2.9.0 creates the file on "
            "every call where it is missing and rewrites it for each new name; 2.16.0 does so for "
            "every name missing from the shipped file, e.g. each user-registered model. A read-only "
            "install (system site-packages, an image layer) makes the factory raise "
            "`PermissionError`; parallel processes race on the file, and in 2.9.0 a reader of a "
            "half-written file raises `JSONDecodeError` from every factory until the file is "
            "deleted (2.16.0 silently resets it to `{}`). The patch updates the registry only on "
            f"request (`{patches.REGISTRY_OPT_IN}=1`, for maintainers regenerating the index) and "
            "then atomically (write beside, `os.replace`)."
        ),
        reproducer=_reproducer("LUC-007-registry-json-write"),
        patch_generator=patches.registry_opt_in,
        depends_on=_NEEDS_IMPORT,
    ),
    Finding(
        id=_PY312,
        title="lucid-dl 2.10-2.16 declare Python >= 3.12 but import only on 3.14",
        severity="critical",
        affected_versions=("2.16.0",),
        evidence=(
            'The sdist declares `python_requires=">=3.12"` (classifiers 3.12, 3.13, 3.14), but on '
            "3.12/3.13 `import lucid` raises `NameError: name '_TensorLike' is not defined`: "
            "`lucid/types.py` annotates the `_TensorLike` Protocol with itself, which works only with "
            "Python 3.14's deferred annotations (PEP 649). The patch adds `from __future__ import "
            "annotations` to every annotated module, which changes nothing on 3.14. On Python >= "
            "3.14 the reproducer passes unpatched. Every other reproducer needs this patch first on "
            "2.16.0, and `import lucid` also needs 2.16.0's C++ extensions, which the kit builds "
            "from the sdist (docs/upstream.md)."
        ),
        reproducer=_reproducer(_PY312),
        patch_generator=patches.future_annotations,
        not_affected={"2.9.0": "2.9.0 evaluates no forward references at import and imports on 3.12."},
    ),
    Finding(
        id="LUC-009-bn-buffers-float64",
        title="Fresh BatchNorm buffers are float64",
        severity="medium",
        affected_versions=("2.9.0",),
        evidence=(
            "`_NormBase` creates `running_mean`/`running_var` with `lucid.zeros/ones((num_features,))`, "
            "which are float64, and `nn.Buffer` keeps them so while `nn.Parameter` casts to float32. "
            "An eval-mode BatchNorm of a fresh model turns float32 input into float64 output, so a "
            "fresh upstream model computes in float64 after its first BatchNorm (about 1.8x slower on "
            "the CPU) and its state dict mixes dtypes. The patch creates the buffers as float32."
        ),
        reproducer=_reproducer("LUC-009-bn-buffers-float64"),
        patch_generator=patches.batchnorm_float32_buffers,
        depends_on=_NEEDS_IMPORT,
        ops_known=("stale-dtype",),  # float32 buffers: nothing stale to promote from
        not_affected={"2.16.0": "2.10+ creates the buffers with `dtype=lucid.Float32`."},
    ),
    Finding(
        id="LUC-010-load-state-dict-unchecked",
        title="load_state_dict checks no shapes or dtypes and aliases the given arrays",
        severity="high",
        affected_versions=SUPPORTED_VERSIONS,
        evidence=(
            "`Module.load_state_dict` checks key names only. A value of the wrong shape replaces the "
            "parameter (the model fails later, far from the cause, or not at all), a float64 value "
            "turns a float32 parameter float64, and the module keeps the caller's array "
            "(`Tensor(value)` does not copy), so editing the state dict afterwards edits the model: "
            "a numpy array on the 'cpu' device, an MLX array on 'gpu'. The patch converts and checks "
            "every entry before assigning any (a `ValueError` names every mismatched key and the "
            "module is unchanged), casts each value to the dtype of the tensor it replaces, and "
            "copies it (`mx.array(data)` for MLX: a new array the caller's updates cannot reach)."
        ),
        reproducer=_reproducer("LUC-010-load-state-dict-unchecked"),
        patch_generator=patches.checked_load_state_dict,
        depends_on=_NEEDS_IMPORT,
    ),
    Finding(
        id="LUC-011-tensor-dtype-stale",
        title="Tensor.dtype goes stale when .data is assigned, and promotes float32 to float64",
        severity="medium",
        affected_versions=SUPPORTED_VERSIONS,
        evidence=(
            "`Tensor.__init__` stores `self.dtype` once; assigning `.data` (as `Module.load_state_dict` "
            "does: `attr.data = value_t.data`) leaves it describing the old array. `func_op` types "
            "Python scalars by the first tensor operand's `dtype`, so `t * 0.5` on float32 data "
            "labelled float64 gives float64 (numpy promotes a float64 0-d array). On 2.9.0 this turns "
            "a float32 model float64 in the usual fine-tuning flow: a fresh `BatchNorm2d` has float64 "
            "buffers (LUC-009); after `load_state_dict` of a float32 state `running_mean.dtype` still "
            "reads float64, the first train step computes `(1 - momentum) * running_mean` in float64 "
            "and stores it, and from then on eval outputs are float64 (about 1.8x slower on the CPU). "
            "On the 'gpu' device the scalar is an MLX float32 and nothing is promoted. 2.16.0 stores "
            "the dtype the same way (`t.data = <float32>` on a float64 tensor: `dtype` float64, "
            "`t * 0.5` float64), so a float64 buffer of a user's module loaded with float32 data "
            "goes stale there too; its BatchNorm does not: fresh buffers are float32 and a loaded "
            "float32 `BatchNorm2d` stays float32 through a train step (its kernel updates the "
            "arrays). The patch makes `dtype` a property read from the data (cached per array dtype); "
            "assigning the data's own dtype is accepted (2.16.0's C++ in-place operations restate "
            "it), any other raises `ValueError` (use `astype`)."
        ),
        reproducer=_reproducer("LUC-011-tensor-dtype-stale"),
        patch_generator=patches.tensor_dtype_from_data,
        depends_on=_NEEDS_IMPORT,
        ops_known=("stale-dtype",),  # also removed by LUC-009 alone (measured)
    ),
    Finding(
        id="LUC-012-backward-lists-tensor-twice",
        title="backward runs a tensor's backward once per consumer that pushed it: x * x raises, "
        "kept gradients are passed on twice",
        severity="high",
        affected_versions=SUPPORTED_VERSIONS,
        evidence=(
            "The backward pass (2.9.0: `Tensor.backward` in `lucid/_tensor/tensor.py`; 2.16.0: "
            "`lucid.autograd.backward`) sorts the graph depth-first with an explicit stack, pushing "
            "every parent not yet visited and appending a tensor to `topo_order` whenever it is "
            "popped as visited. A parent that two consumers push before it is visited is popped "
            "twice and listed twice, so its backward runs twice, and between the two runs the "
            "gradient of a non-leaf is cleared. Three consequences: (1) `y = x * x` (or `x + x`) "
            "with a non-leaf `x` raises `BackwardError` (`float * None`: the second run finds no "
            "gradient); (2) with every gradient kept (2.9.0 `backward(keep_grad=True)`, 2.16.0 "
            "`backward(retain_grad=True)`, which `lucid.autograd.grad` uses), nothing is cleared "
            "and the second run passes on the first run's part again: for `w = h + 2h`, "
            "`h = 3a`, `lucid.autograd.grad(w.sum(), a)` is 12 instead of 9; (3) otherwise the "
            "gradients are right, but the tensor's backward runs twice (every Inception-ResNet "
            "block's input, whose sum `x + scale * branch(x)` reads it before the branch does) and "
            "a hook registered on it sees its gradient in two parts. On 2.16.0 the double listing "
            "also makes the backward fusion count one consumer as two and skip the fusion. The "
            "patch lists a tensor the first time it is finished, which is a valid topological "
            "order (a later pop is a stale second push). It needs two other patches first. "
            "LUC-015's, on both versions: the new order lets more graphs reach that fault "
            "(`n1 = 0.1a`, `n2 = 0.1 n1`: d/da sum(n1 + n2 + a) is right unpatched, 1.21 instead "
            "of 1.11 with this patch alone). LUC-013's, on 2.16.0 (`depends_on` names it for "
            "every version, and a dependency applies only where it affects the version, which "
            "2.9.0 without a fusion is not): a consumer listed twice had blocked the fusion, so "
            "this patch alone brings LUC-013 to graphs it had spared (a hook on "
            "`p = (2a).reshape(2, 2)` read once by `v = p.reshape(4)`, summed as `v + 2v`, gets "
            "None)."
        ),
        reproducer=_reproducer("LUC-012-backward-lists-tensor-twice"),
        patch_generator=patches.backward_lists_each_tensor_once,
        depends_on=(*_NEEDS_IMPORT, _FUSION, _SHARED_GRAD),
    ),
    Finding(
        id=_FUSION,
        title="The backward fusion takes the gradient of a tensor whose gradient is wanted",
        severity="medium",
        affected_versions=("2.16.0",),
        evidence=(
            "`lucid.autograd.backward` runs `_try_backward_fusion` on every CPU backward (the flag "
            "is `lucid.USE_BAKCWARD_FUSION`, on by default). It merges a tensor `p` whose only "
            "consumer `v` has a fusion partner op (`DoubleReshape`: a reshape of a reshape; "
            "`DoubleNeg`, `DoubleT`, `LogExp`, squeeze/unsqueeze pairs) into `v`: `v`'s backward "
            "now writes straight to `p`'s parents and `p`'s own backward is a no-op, so `p.grad` "
            "stays None. Nothing checks whether `p`'s gradient is wanted: a backward hook on `p` is "
            "still called, with `None`; `p.keep_grad = True` and `backward(retain_grad=True)` leave "
            "`p.grad` None; `lucid.autograd.grad(loss, p)` raises 'Some inputs did not receive "
            "gradients'. The fusion also rewires the graph for good: after "
            "`backward(retain_graph=True)` a later backward, hook, `keep_grad` or "
            "`lucid.autograd.grad` on the retained graph finds `p` cut out and gets nothing. "
            "Found through the parity harness, whose input-gradient node was a reshape "
            "until it met a module that reshapes its input again (it now uses `x[...]`). The patch "
            "fuses nothing when every gradient is kept (`retain_grad`) or the graph is "
            "(`retain_graph`) and leaves out a `p` with a hook or `keep_grad`; the gradients that "
            "reach the leaves are unchanged."
        ),
        reproducer=_reproducer(_FUSION),
        patch_generator=patches.fusion_keeps_wanted_gradients,
        depends_on=_NEEDS_IMPORT,
        not_affected={"2.9.0": "2.9.0 has no backward fusion: `Tensor.backward` runs every tensor's own."},
    ),
    Finding(
        id="LUC-014-flops-miscounted",
        title="FLOP counts double-count shared tensors and multi-output ops, and 2.9.0 counts no convolution",
        severity="low",
        affected_versions=SUPPORTED_VERSIONS,
        evidence=(
            "`Tensor.flops` (what `lucid.count_flops` records and `lucid.models.summarize` prints) "
            "walks the graph with a deque used as a stack, marking a tensor visited when it is "
            "popped and pushing every parent not yet visited. A parent that two consumers push "
            "before it is popped is popped, and counted, twice: `x * x` counts 9 flops for 6, "
            "`h + 2h` 12 for 9, and every Inception-ResNet block's input once more: 4,357,248 "
            "FLOPs too many for this port's Inception-ResNet-v1 at 299 px, which is 6.1% of its "
            "total counted once on unpatched 2.9.0 (71,227,768, where convolutions count 0) and "
            "0.07% of the total with convolutions counted (6,275,797,464); -v2: 5,426,816, 5.9% "
            "and 0.06%. "
            "An op with several outputs is every output's `_op` and is counted once per output "
            "reached: `q, r = lucid.linalg.qr(a)` (4x4), `(q + r).flops` is 186 for 101 (qr's "
            "85 twice). On 2.9.0 the convolution op "
            "`conv_nd` has no `__flops__`, so a convolution counts 0 and a `Conv2d` only its bias "
            "add: this port's Inception-v4 totals 92 million FLOPs at 299 px (bias adds and the "
            "cheap ops), where its convolutions do 12.25 billion multiply-adds. 2.16.0's "
            "`conv_nd_kernel` counts them. "
            "The patch skips a tensor popped again and an op counted already and, on 2.9.0, "
            "gives `conv_nd` the multiply-add count 2.16.0 uses."
        ),
        reproducer=_reproducer("LUC-014-flops-miscounted"),
        patch_generator=patches.flops_counted_once,
        depends_on=_NEEDS_IMPORT,
    ),
    Finding(
        id=_SHARED_GRAD,
        title="A gradient is accumulated in place into an array other tensors hold as theirs: "
        "b + c + c and a second backward of w1 + w2 give wrong gradients",
        severity="high",
        affected_versions=SUPPORTED_VERSIONS,
        evidence=(
            "`lucid._set_tensor_grad` (`lucid/__init__.py`, the same in 2.9.0 and 2.16.0) stores a "
            "tensor's first gradient as given (`tensor.grad = grad`) and adds every later one into "
            "that array in place (`tensor.grad[at] = tensor.grad[at] + grad`; `+=` for 0-d). The "
            "array given is often another tensor's gradient too: add's backward hands its own "
            "`result.grad` to both operands, and a same-shape gradient passes through "
            "`_match_grad_shape` unchanged. So adding to one tensor's gradient adds to all of them, "
            "silently, on 'cpu' (numpy) and 'gpu' (MLX item assignment updates the shared array "
            "object) alike. With `b = 1a`, `c = b.reshape(3)`, d/da sum(b + c + c) is 4 instead of "
            "3 (`(b + c)` and `c` get one array, and `c`'s second part doubles `(b + c)`'s), and a "
            "kept `(b + c).grad` reads 4 instead of 1. Two leaves added directly get one array: "
            "two backward passes of sum(w1 + w2) without zeroing (gradient accumulation) leave 3 "
            "in both for 2, and `w1.grad is w2.grad`, so an in-place edit of one (clipping, "
            "averaging) edits the other. Which graphs are hit depends on the backward order: with "
            "LUC-012's patch alone, `n1 = 0.1a`, `n2 = 0.1 n1`, d/da sum(n1 + n2 + a) is 1.21 "
            "instead of 1.11, so LUC-012's patch depends on this one. The patch stores a copy of "
            "the first gradient (`grad.copy()`, `mx.array(grad)` on 'gpu'), so the array a tensor "
            "accumulates into is its own; the accumulation itself is unchanged."
        ),
        reproducer=_reproducer(_SHARED_GRAD),
        patch_generator=patches.gradient_stored_as_a_copy,
        depends_on=_NEEDS_IMPORT,
    ),
    Finding(
        id="LUC-016-tensor-not-picklable",
        title="No Tensor, Parameter or Module can be pickled: every dtype holds an mlx.core.Dtype",
        severity="medium",
        affected_versions=SUPPORTED_VERSIONS,
        evidence=(
            "`lucid.types.Numeric` (every tensor's `dtype`: `Float32`, `Int64`, ...) keeps the "
            "MLX dtype of its type in `_mlx_dtype`, an `mlx.core.Dtype`, which pickle refuses: "
            "`pickle.dumps(lucid.zeros(2))` raises `TypeError: cannot pickle 'mlx.core.Dtype' "
            "object`, and so does pickling any module with a parameter. What users do with a "
            "torch model fails with a Lucid one: `pickle`/`joblib`/`cloudpickle` a model, hand it "
            "to a `multiprocessing` worker (arguments are pickled), cache it. `copy.deepcopy` "
            "works. Found by a fault probe of this project, pickling a port model. The class is "
            "the same in 2.9.0 and 2.16.0; on 2.16.0 a leaf tensor also holds the module-level "
            "`noop` `BackwardOperation` of `lucid/_backend/core.py`, whose `grad_func` is a "
            "lambda (`PicklingError` once the dtype pickles). The patch gives `Numeric` a "
            "`__reduce__`: a `lucid.types` constant pickles by its name and unpickles as that "
            "same object (`dtype is lucid.Float32` holds after a round trip), any other "
            "`Numeric` as its base type and bits; the MLX dtype is worked out again in the "
            "loading process, for its own default device. On 2.16.0 `noop` pickles by name too "
            "(a tensor with a graph still holds weak references and does not pickle)."
        ),
        reproducer=_reproducer("LUC-016-tensor-not-picklable"),
        patch_generator=patches.numeric_pickles_by_name,
        depends_on=_NEEDS_IMPORT,
    ),
)


def by_id(finding_id: str) -> Finding:
    """The catalogue entry with this id."""
    for finding in FINDINGS:
        if finding.id == finding_id:
            return finding
    raise ValueError(f"no finding {finding_id!r}; known: {[f.id for f in FINDINGS]}")


def dependencies(finding: Finding, version: str) -> tuple[Finding, ...]:
    """Findings whose patches must precede ``finding``'s reproducer on ``version``, in
    catalogue order (those that do not affect ``version`` have no patch there)."""
    wanted = {by_id(d).id for d in finding.depends_on}
    return tuple(f for f in FINDINGS if f.id in wanted and f.affects(version))
