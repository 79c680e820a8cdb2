"""The upstream half of the conformance kit: catalogue, patch generators, reproducers, proofs,
reports and the patched install.

Tests marked ``upstream`` fetch lucid-dl 2.9.0 and 2.16.0 with pip into the kit's cache
(``$LUCID_INCEPTION_CACHE``; the first 2.16.0 fetch builds its C++ extensions, about a
minute) and skip, with pip's message, only when the package index is unreachable.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from conformance import patches, prove, reports, upstream
from conformance.findings import FINDINGS, Finding, by_id, dependencies
from conformance.install_patched import _prepare
from conformance.patches._edits import AnchorError, Edits, unified_diff

from .conftest import UPSTREAM_BUG_ITEMS

VERSIONS = upstream.SUPPORTED_VERSIONS

IMPORT_FIX = "LUC-008-py312-import-nameerror"
LISTS_TWICE = "LUC-012-backward-lists-tensor-twice"
FUSION = "LUC-013-fusion-drops-gradient"
SHARED_GRAD = "LUC-015-gradient-accumulates-into-shared-array"


def _fetch_or_skip(version: str) -> Path:
    try:
        return upstream.fetch(version)
    except upstream.UpstreamUnavailable as exc:
        pytest.skip(f"PyPI unreachable, cannot fetch lucid-dl {version}: {exc}")


@pytest.fixture(scope="module")
def proofs() -> dict[str, prove.VersionProof]:
    """One proof per version for the whole module; the conformance check runs on the combined
    tree only (every finding's own check runs in ``python -m conformance report``)."""
    return {v: prove.prove_version(v, check_each=False) for v in VERSIONS if _fetch_or_skip(v)}


@pytest.fixture(scope="module")
def combined(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A copy of each version with all of its patches applied in catalogue order."""
    trees = {}
    for v in VERSIONS:
        source = _fetch_or_skip(v)
        root = upstream.copy_tree(v, tmp_path_factory.mktemp(v) / "tree")
        written = patches.write_version_patches(FINDINGS, v, source, tmp_path_factory.mktemp(f"{v}-patches"))
        for patch in written.values():
            upstream.apply(patch, root)
        trees[v] = root
    return trees


# ----- the catalogue (no network)


def test_catalogue_ids_reproducers_and_spec_items() -> None:
    ids = [f.id for f in FINDINGS]
    assert len(ids) == len(set(ids)), ids
    assert [i[:7] for i in ids] == sorted(i[:7] for i in ids), "catalogue order is id order"
    assert {i for f in FINDINGS for i in f.spec_items} == UPSTREAM_BUG_ITEMS
    on_disk = {p.stem for p in (Path(prove.REPO) / "conformance" / "reproducers").glob("*.py")}
    assert on_disk == set(ids), "one reproducer per finding, named by its id"
    for f in FINDINGS:
        assert f.reproducer.stem == f.id
        if f.spec_items:  # model findings affect both versions
            assert f.affected_versions == VERSIONS
    with pytest.raises(ValueError, match="not_affected must explain"):
        Finding(**{**vars(FINDINGS[0]), "affected_versions": ("2.9.0",)})
    with pytest.raises(ValueError, match="severity"):
        Finding(**{**vars(FINDINGS[0]), "severity": "urgent"})


def test_import_fix_precedes_everything_on_2_16_0_only() -> None:
    assert by_id(IMPORT_FIX).affected_versions == ("2.16.0",)
    # LUC-012's new order exposes LUC-015 (both versions) and, on 2.16.0, LUC-013: a consumer
    # listed twice had blocked the fusion. LUC-013 does not affect 2.9.0: no dependency there.
    also = {LISTS_TWICE: {"2.9.0": [SHARED_GRAD], "2.16.0": [FUSION, SHARED_GRAD]}}
    for finding in FINDINGS:
        if finding.id != IMPORT_FIX:
            more = also.get(finding.id, {})
            assert [d.id for d in dependencies(finding, "2.16.0")] == [IMPORT_FIX, *more.get("2.16.0", [])]
            assert [d.id for d in dependencies(finding, "2.9.0")] == more.get("2.9.0", [])
    with pytest.raises(ValueError, match="no finding"):
        by_id("LUC-999-nothing")


# ----- anchored edits, diffs, apply (no network)


def _mini_tree(root: Path, body: str) -> Path:
    (root / "lucid" / "models").mkdir(parents=True)
    (root / "lucid" / "__init__.py").write_text("")
    (root / "lucid" / "models" / "inception.py").write_text(body)
    return root


_STEM_SRC = """\
class _InceptionStem_V4(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        x = lucid.concatenate([self.branch2_left(x), self.branch2_left(x)], axis=1)
        return x


class Other(nn.Module):
    def forward(self, x):
        return lucid.concatenate([self.branch2_left(x), self.branch2_left(x)], axis=1)
"""


def test_generator_edits_only_its_block_and_diff_applies_with_patch(tmp_path: Path) -> None:
    root = _mini_tree(tmp_path / "tree", _STEM_SRC)
    changes = patches.stem_branch2_right(root)
    new = changes["lucid/models/inception.py"]
    assert new.count("self.branch2_right(x)") == 1  # the same line in Other is left alone
    diff = patches.render(patches.stem_branch2_right, root)
    assert diff.startswith("--- a/lucid/models/inception.py\n+++ b/lucid/models/inception.py\n")
    assert diff.endswith("\n")
    patch_file = tmp_path / "stem.patch"
    patch_file.write_text(diff)
    upstream.apply(patch_file, root)
    assert (root / "lucid/models/inception.py").read_text() == new
    with pytest.raises(upstream.PatchError, match="does not apply"):  # --forward: not twice
        upstream.apply(patch_file, root)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (_STEM_SRC.replace("self.branch2_left(x), self.branch2_left(x)", "a, b", 1), "found 0"),
        (_STEM_SRC + _STEM_SRC.split("\n\n\n")[0], "expected one line starting with"),
    ],
    ids=["anchor-gone", "block-twice"],
)
def test_generator_fails_loudly_when_upstream_changed(tmp_path: Path, source: str, message: str) -> None:
    root = _mini_tree(tmp_path, source)
    with pytest.raises(AnchorError, match=message):
        patches.stem_branch2_right(root)


_BACKWARD_SRC = """\
def backward(tensor, retain_grad=False, retain_graph=False) -> None:
    visited = set()
    topo_order = []
    stack = [tensor]

    while stack:
        node = stack[-1]
        if node in visited:
            stack.pop()
            topo_order.append(node)
            continue

        visited.add(node)
        for parent in node._prev:
            if parent not in visited:
                stack.append(parent)
"""


def test_backward_patch_lists_once_and_refuses_a_changed_sort(tmp_path: Path) -> None:
    """LUC-012's generator on 2.16.0's layout: the append is guarded; a sort upstream has
    rewritten (here: already deduplicated) is an AnchorError, not a second guard."""
    root = _mini_tree(tmp_path / "tree", _BACKWARD_SRC)
    (new,) = patches.backward_lists_each_tensor_once(root).values()
    guarded = (
        "            if node not in listed:\n"
        "                listed.add(node)\n"
        "                topo_order.append(node)\n"
    )
    assert guarded in new
    assert new.count("topo_order.append(node)") == 1
    changed = _BACKWARD_SRC.replace(
        "            topo_order.append(node)\n",
        "            if node not in topo_order:\n                topo_order.append(node)\n",
    )
    with pytest.raises(AnchorError, match="found 0"):
        patches.backward_lists_each_tensor_once(_mini_tree(tmp_path / "changed", changed))


_FUSION_SRC = """\
def backward(tensor, retain_grad=False, retain_graph=False) -> None:
    topo_order = []
    if lucid.USE_BAKCWARD_FUSION and tensor.is_cpu():
        _try_backward_fusion(topo_order)


def _try_backward_fusion(topo_order) -> None:
    for pid, v in list(consumer_of.items()):
        if p._op is None or v._op is None:
            continue
"""


def test_fusion_patch_guards_both_places_and_refuses_a_changed_call(tmp_path: Path) -> None:
    """LUC-013's generator: no fusion under retain_grad or retain_graph, none of a tensor with
    a hook or keep_grad; a fusion call upstream has changed is an AnchorError, not a partial
    patch."""
    root = _mini_tree(tmp_path / "tree", _FUSION_SRC)
    (new,) = patches.fusion_keeps_wanted_gradients(root).values()
    # retain_graph too: a fusion rewires the retained graph for good
    assert "        and tensor.is_cpu()\n        and not (retain_grad or retain_graph)\n    ):\n" in new
    assert "        if p._backward_hooks or p.keep_grad:" in new
    changed = _FUSION_SRC.replace("tensor.is_cpu():", "tensor.is_cpu() and fuse:")
    with pytest.raises(AnchorError, match="found 0"):
        patches.fusion_keeps_wanted_gradients(_mini_tree(tmp_path / "changed", changed))


_FLOPS_SRC = """\
class Tensor:
    @property
    def flops(self) -> int:
        total = 0
        queue = deque([self])
        visited = set()

        while queue:
            cur = queue.popleft()
            visited.add(cur)
            if cur._op is not None:
                total += cur._op.flops

            for next in cur._prev:
                if next not in visited:
                    queue.appendleft(next)

        return total
"""

_CONV_OP_SRC = """\
from lucid._backend.core import operation


class conv_nd(operation):
    def cpu(self, a, b):
        return out

    def __grad__(self, a: Tensor, b: Tensor, lib_: ModuleType) -> _GradFuncType:
        return grads
"""


def test_flops_patch_adds_a_count_only_where_there_is_none(tmp_path: Path) -> None:
    """LUC-014's generator: the walk skips a tensor popped again and an op counted already
    (one op, several outputs); 2.9.0's conv op gets a ``__flops__``; one that has one
    already is an AnchorError (upstream moved on)."""
    root = _mini_tree(tmp_path / "tree", _FLOPS_SRC)
    (root / "lucid" / "conv.py").write_text(_CONV_OP_SRC)
    changes = patches.flops_counted_once(root)
    walk = changes["lucid/models/inception.py"]
    assert "            if cur in visited:" in walk
    # x * x counts its op once; q and r of one qr share their op: (q + r) counts it once
    scope: dict = {"deque": deque}
    exec(walk, scope)
    x = _Node(_Op(1), [_Node(None, [])])
    square = _Node(_Op(10), [x, x])
    qr = _Op(100)
    leaf = _Node(None, [])
    q, r = _Node(qr, [leaf]), _Node(qr, [leaf])
    assert scope["Tensor"].flops.fget(square) == 11
    assert scope["Tensor"].flops.fget(_Node(_Op(10), [q, r])) == 110
    conv = changes["lucid/conv.py"]
    assert conv.index("    def __flops__(self, a: Tensor, b: Tensor)") < conv.index("    def __grad__(")
    flops_method = "    def __flops__(self, a, b):\n        return 1\n\n"
    counted = _CONV_OP_SRC.replace("    def cpu(", flops_method + "    def cpu(")
    (root / "lucid" / "conv.py").write_text(counted)
    with pytest.raises(AnchorError, match="counts its flops already"):
        patches.flops_counted_once(root)


_SET_GRAD_SRC = """\
def _set_tensor_grad(
    tensor: Tensor, grad: _NumPyArray | _MLXArray, at: SupportsIndex = ...
) -> None:
    if not tensor.requires_grad:
        return
    if tensor.grad is None:
        tensor.grad = grad
    else:
        if tensor.is_cpu() and not tensor.grad.flags.writeable:
            tensor.grad = tensor.grad.copy()

        if tensor.grad.ndim == 0:
            tensor.grad += grad
        else:
            tensor.grad[at] = tensor.grad[at] + grad
"""


def test_gradient_patch_stores_a_copy_and_refuses_a_changed_store(tmp_path: Path) -> None:
    """LUC-015's generator: the first gradient is stored as a copy, so accumulating into one
    tensor's gradient leaves a tensor handed the same array alone (add's two operands); a
    store upstream has changed is an AnchorError."""
    root = _mini_tree(tmp_path / "tree", _SET_GRAD_SRC)
    (new,) = patches.gradient_stored_as_a_copy(root).values()
    assert "        tensor.grad = grad.copy() if tensor.is_cpu() else mx.array(grad)\n" in new
    scope: dict = {}
    exec("from __future__ import annotations\n" + new, scope)
    shared = np.ones(3)  # what add's backward hands both operands
    b, c = _Grad(), _Grad()
    for tensor in (b, c, c):
        scope["_set_tensor_grad"](tensor, shared)
    assert b.grad.tolist() == [1.0] * 3 and c.grad.tolist() == [2.0] * 3 and shared.tolist() == [1.0] * 3
    changed = _SET_GRAD_SRC.replace("        tensor.grad = grad\n", "        tensor.grad = grad + 0\n")
    with pytest.raises(AnchorError, match="found 0"):
        patches.gradient_stored_as_a_copy(_mini_tree(tmp_path / "changed", changed))


class _Grad:
    """What ``_set_tensor_grad`` reads of a cpu tensor."""

    requires_grad = True
    grad = None

    def is_cpu(self) -> bool:
        return True


class _Op:
    def __init__(self, flops: int) -> None:
        self.flops = flops


class _Node:
    """What ``Tensor.flops`` reads of a tensor."""

    def __init__(self, op: _Op | None, prev: list[_Node]) -> None:
        self._op, self._prev = op, prev


def test_edits_span_and_missing_newline(tmp_path: Path) -> None:
    (tmp_path / "f.py").write_text("a\nstart\nmiddle\nend\nz")  # no final newline
    edits = Edits(tmp_path)
    edits.replace_span("f.py", "start\n", "end\n", "new\n")
    assert edits.changes() == {"f.py": "a\nnew\nz"}
    diff = unified_diff(tmp_path, edits.changes())
    assert diff.count("\\ No newline at end of file") == 1  # after z, unchanged context
    edits.replace("f.py", "z", "y")
    diff = unified_diff(tmp_path, edits.changes())
    assert diff.count("\\ No newline at end of file") == 2
    (tmp_path / "d.patch").write_text(diff)
    upstream.apply(tmp_path / "d.patch", tmp_path)
    assert (tmp_path / "f.py").read_text() == "a\nnew\ny"


def test_apply_is_all_or_nothing(tmp_path: Path) -> None:
    (tmp_path / "lucid").mkdir()
    (tmp_path / "lucid" / "a.py").write_text("one\n")
    (tmp_path / "lucid" / "b.py").write_text("two\n")
    good = "--- a/lucid/a.py\n+++ b/lucid/a.py\n@@ -1 +1 @@\n-one\n+ONE\n"
    bad = "--- a/lucid/b.py\n+++ b/lucid/b.py\n@@ -1 +1 @@\n-not there\n+TWO\n"
    (tmp_path / "x.patch").write_text(good + bad)
    with pytest.raises(upstream.PatchError, match="dry run"):
        upstream.apply(tmp_path / "x.patch", tmp_path)
    assert (tmp_path / "lucid" / "a.py").read_text() == "one\n"
    assert sorted(p.name for p in (tmp_path / "lucid").iterdir()) == ["a.py", "b.py"]  # no .rej/.orig


def test_run_python_forms_and_errors(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("import sys; print(sys.argv[1:] or 'script'); sys.exit(3)")
    assert upstream.run_python(tmp_path, script, 60).returncode == 3
    res = upstream.run_python(tmp_path, "import os; print(os.environ['PYTHONPATH'])", 60)
    assert res.stdout.strip() == str(tmp_path)
    assert upstream.run_python(tmp_path, ["-c", "print(7)"], 60).stdout.strip() == "7"
    slow = upstream.run_python(tmp_path, "import time; time.sleep(30)", 1)
    assert slow.timed_out and slow.returncode == 124
    with pytest.raises(TypeError, match="code_or_script"):
        upstream.run_python(tmp_path, 42, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2.9.0"):
        upstream.fetch("latest")


def test_reproduce_tells_a_crash_from_a_bug(tmp_path: Path) -> None:
    for body, outcome in [
        ("print('BUG: here'); raise SystemExit(1)", "present"),
        ("print('OK: fine')", "absent"),
        ("raise RuntimeError('the reproducer itself broke')", "error"),  # exit 1, but a traceback
        ("print('BUG: but exit 0')", "error"),
    ]:
        script = tmp_path / "LUC-900-probe.py"
        script.write_text(body)
        fake = Finding(
            **{**vars(by_id("LUC-006-broadcast-grad-wrong")), "id": "LUC-900-probe", "reproducer": script}
        )
        assert prove.reproduce(fake, tmp_path)[0] == outcome, body


def test_checker_step_needs_fail_to_pass_and_no_regression() -> None:
    items = ("m/x",)
    assert (
        prove._check_step("c", {"m/x": "fail", "m/y": "pass"}, {"m/x": "pass", "m/y": "pass"}, items).status
        == "pass"
    )
    not_fixed = prove._check_step("c", {"m/x": "fail"}, {"m/x": "fail"}, items)
    assert not_fixed.status == "fail" and "expected fail -> pass" in not_fixed.detail
    regressed = prove._check_step("c", {"m/x": "fail", "m/y": "pass"}, {"m/x": "pass", "m/y": "fail"}, items)
    assert regressed.status == "fail" and "m/y: pass -> fail (regression)" in regressed.detail
    gone = prove._check_step("c", {"m/x": "fail", "m/y": "pass"}, {"m/x": "pass"}, items)
    assert gone.status == "fail" and "m/y: pass -> absent" in gone.detail


def test_report_command_arguments() -> None:
    parser = argparse.ArgumentParser()
    reports.add_report_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "--out", "x"])
    assert args.versions is None and not args.no_prove and args.func is reports._report_main
    args = parser.parse_args(["report", "--out", "x", "--version", "2.16.0", "--no-prove"])
    assert args.versions == ["2.16.0"] and args.no_prove
    with pytest.raises(SystemExit):
        parser.parse_args(["report"])  # --out is required
    with pytest.raises(SystemExit):
        parser.parse_args(["report", "--out", "x", "--version", "3.0.0"])


# ----- against real upstream


@pytest.mark.upstream
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("finding_id", [f.id for f in FINDINGS])
def test_finding_proof(proofs: dict[str, prove.VersionProof], version: str, finding_id: str) -> None:
    """Affected: reproducer fails unpatched, the patch applies alone to pristine upstream and
    after its dependencies, the reproducer then passes. Not affected: it passes unpatched."""
    proof = next(p for p in proofs[version].findings if p.finding_id == finding_id)
    steps = {s.name: s for s in proof.steps}
    failing = [f"{s.name}: {s.detail}" for s in proof.steps if s.status != "pass"]
    assert not failing, failing
    if by_id(finding_id).affects(version):
        assert {
            "reproducer fails unpatched",
            "patch applies alone to pristine upstream",
            "patch applies after its dependencies",
            "reproducer passes patched",
        } <= steps.keys()
        assert steps["reproducer fails unpatched"].detail.startswith("BUG:")
    else:
        assert steps["not affected: reproducer passes unpatched"].detail.startswith("OK:")


@pytest.mark.upstream
@pytest.mark.parametrize("version", VERSIONS)
def test_all_patches_together(proofs: dict[str, prove.VersionProof], version: str) -> None:
    combined = proofs[version].combined
    failing = [f"{s.name}: {s.detail}" for s in combined.steps if s.status == "fail"]
    assert not failing, failing
    names = [s.name for s in combined.steps]
    assert "combined tree equals the edits composed in order" in names
    assert sum(n.endswith("passes on the combined tree") for n in names) == len(FINDINGS)
    (check,) = [s for s in combined.steps if s.name.startswith("conformance check")]
    assert check.status == "pass", check.detail
    (ops,) = [s for s in combined.steps if s.name == prove.OPS_STEP]
    assert ops.status == "pass" and f"lucid-dl {version}, cpu, float32+float64" in ops.detail, ops.detail
    if version == "2.9.0":  # the patches remove both 2.9.0 bugs the ops declare
        assert "broadcast-gradient (LUC-006) gone" in ops.detail, ops.detail
        assert "stale-dtype (LUC-009, LUC-011) gone" in ops.detail, ops.detail
        assert "known-bug" not in ops.detail, ops.detail


_FACTORIES = """
import warnings
warnings.filterwarnings(
    "ignore", message="(overflow|invalid value) encountered in cast", category=RuntimeWarning
)
import lucid, lucid.models as M
m = M.inception_resnet_v2(num_classes=10, scale=0.2)
blocks = [b for b in m.conv._modules.values() if hasattr(b, "scale")]
assert len(blocks) == 20 and {b.scale for b in blocks} == {0.2}, [b.scale for b in blocks]
assert m.dropout.p == 0.2
m = M.inception_resnet_v1(num_classes=10, scale=(0.1, 0.2, 0.3))
by_kind = {(type(b).__name__[-1], b.scale) for b in m.conv._modules.values() if hasattr(b, "scale")}
assert by_kind == {("A", 0.1), ("B", 0.2), ("C", 0.3)}, by_kind
bad_scales = [(0.0, ValueError), (1.5, ValueError), ("0.2", TypeError), ((0.1, 0.2), TypeError)]
bad_scales.append((True, TypeError))
for bad, kind in bad_scales:
    try:
        M.inception_resnet_v1(num_classes=10, scale=bad)
    except kind as exc:
        print("rejected", repr(bad), type(exc).__name__, exc)
    else:
        raise AssertionError(f"scale={bad!r} was accepted")
print("factories ok")
"""


@pytest.mark.upstream
@pytest.mark.parametrize("version", VERSIONS)
def test_upstream_factories_take_scale_once_patched(combined: dict[str, Path], version: str) -> None:
    res = upstream.run_python(combined[version], _FACTORIES, 300)
    assert res.returncode == 0 and "factories ok" in res.stdout, res.output[-3000:]
    assert upstream.lucid_origin(combined[version]).is_relative_to(combined[version])


_TENSOR_DTYPE = """
import warnings
warnings.filterwarnings(
    "ignore", message="(overflow|invalid value) encountered in cast", category=RuntimeWarning
)
import lucid, numpy as np
t = lucid.zeros((2,))
t.data = np.zeros(2, dtype=np.float32)
assert t.dtype is lucid.Float32 and (t * 0.5).data.dtype == np.float32, t.dtype
t.dtype = lucid.Float32  # restating the data's dtype is accepted
try:
    t.dtype = lucid.Float64
except ValueError as exc:
    assert "astype" in str(exc), exc
else:
    raise AssertionError("a dtype that mislabels the data was accepted")
assert t.astype(lucid.Float64).dtype is lucid.Float64 and t.data.dtype == np.float64
assert t.astype(bool).dtype is bool and lucid.Tensor(np.ones(2, dtype=bool)).dtype is bool
if hasattr(t, "add_"):  # 2.10+: C++ in-place operations assign .data, then restate dtype
    u = lucid.Tensor(np.ones(2, dtype=np.float32))
    u.add_(lucid.Tensor(np.ones(2, dtype=np.float32)))
    assert u.dtype is lucid.Float32 and u.data.tolist() == [2.0, 2.0], (u.dtype, u.data)
print("dtype ok")
"""


@pytest.mark.upstream
@pytest.mark.parametrize("version", VERSIONS)
def test_upstream_tensor_dtype_follows_data_once_patched(combined: dict[str, Path], version: str) -> None:
    """LUC-011's property: read from the data, restating it is accepted, mislabelling raises,
    ``astype`` and 2.16.0's in-place operations keep working."""
    res = upstream.run_python(combined[version], _TENSOR_DTYPE, 300)
    assert res.returncode == 0 and "dtype ok" in res.stdout, res.output[-3000:]


@pytest.mark.upstream
def test_planted_faults_fail_the_proof(tmp_path: Path) -> None:
    """A patch that does not fix, a catalogue that lies about a version, and a checker that
    sees no fix: each makes the proof fail with the step that caught it."""
    source = _fetch_or_skip("2.9.0")
    dropout = by_id("LUC-002-head-dropout-p08")
    real = patches.render(dropout.patch_generator, source)
    inert = tmp_path / "inert.patch"  # applies cleanly, changes only a comment
    inert.write_text(real.replace("Dropout(p=0.2)", "Dropout(p=0.8)"))
    proof = prove.prove_version(
        "2.9.0", {dropout.id: inert}, findings=(dropout,), checker=None, ops=None
    ).findings[0]
    failed = [s for s in proof.steps if s.status == "fail"]
    assert [s.name for s in failed] == ["reproducer passes patched"] and "BUG:" in failed[0].detail

    lying = Finding(
        **{**vars(by_id("LUC-009-bn-buffers-float64")), "affected_versions": VERSIONS, "not_affected": {}}
    )
    import_fix = tmp_path / "import.patch"
    import_fix.write_text(patches.render(patches.future_annotations, _fetch_or_skip("2.16.0")))
    proof = prove.prove_version(
        "2.16.0", {lying.id: inert, IMPORT_FIX: import_fix}, findings=(lying,), checker=None, ops=None
    ).findings[0]
    step = next(s for s in proof.steps if s.name == "reproducer fails unpatched")
    assert step.status == "fail" and "kit bug: passes on an affected version" in step.detail

    stem = by_id("LUC-001-stem-branch2-right-unused")
    item = "inception_v4/stem/branch2_right-runs"
    blind = prove.prove_version(
        "2.9.0", findings=(stem,), checker=lambda root: {item: "fail", "other": "pass"}, ops=None
    ).findings[0]
    step = next(s for s in blind.steps if s.name.startswith("conformance check"))
    assert step.status == "fail" and f"{item}: fail -> fail" in step.detail


@pytest.mark.upstream
def test_reports_are_written_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fetch_or_skip("2.9.0")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "conformance",
        "report",
        "--out",
        str(out),
        "--version",
        "2.9.0",
        "--no-prove",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=prove.REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    affected = [f.id for f in FINDINGS if f.affects("2.9.0")]
    assert written == sorted(
        [".upstream-report", "README.md"]
        + [f"{f.id}.md" for f in FINDINGS]
        + [f"patches/lucid-dl-2.9.0/{i}.patch" for i in affected]
    )
    page = (out / "LUC-006-broadcast-grad-wrong.md").read_text()
    assert "patches/lucid-dl-2.9.0/LUC-006-broadcast-grad-wrong.patch" in page
    assert by_id("LUC-006-broadcast-grad-wrong").reproducer.read_text().strip() in page
    before = (out / "README.md").read_text()

    def broken(*args: object) -> str:
        raise RuntimeError("planted failure while writing the index")

    monkeypatch.setattr(reports, "_index_md", broken)
    with pytest.raises(RuntimeError, match="planted"):
        reports.write_reports(out, ("2.9.0",), prove=False)
    assert (out / "README.md").read_text() == before  # the old report is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("mine")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="not an upstream report folder"):
        reports.write_reports(stranger, ("2.9.0",), prove=False)
    assert (stranger / "keep.txt").read_text() == "mine"


@pytest.mark.upstream
def test_fetch_is_atomic_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fetch_or_skip("2.9.0")
    monkeypatch.setenv("LUCID_INCEPTION_CACHE", str(tmp_path))

    def interrupted(archive: Path, dest: Path) -> Path:
        (dest / "lucid").mkdir(parents=True)  # half-unpacked, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(upstream, "_unpack", interrupted)
    with pytest.raises(KeyboardInterrupt):
        upstream.fetch("2.9.0")
    assert list(tmp_path.iterdir()) == []  # nothing a later fetch could mistake for a tree
    monkeypatch.undo()
    monkeypatch.setenv("LUCID_INCEPTION_CACHE", str(tmp_path))
    tree = upstream.fetch("2.9.0")
    assert tree == tmp_path / "lucid-dl-2.9.0" and (tree / "lucid" / "__init__.py").is_file()

    def offline(*args: object) -> Path:
        raise AssertionError("a cached tree must not be downloaded again")

    monkeypatch.setattr(upstream, "_download", offline)
    assert upstream.fetch("2.9.0") == tree


@pytest.mark.upstream
def test_install_patched_failing_half_way_leaves_no_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fetch_or_skip("2.16.0")
    apply = upstream.apply
    applied: list[str] = []

    def third_fails(patch: Path, root: Path, **kwargs: object) -> str:
        if len(applied) == 2:
            raise upstream.PatchError(f"planted: {patch.name} does not apply")
        applied.append(patch.name)
        return apply(patch, root, **kwargs)

    monkeypatch.setattr(upstream, "apply", third_fails)
    target, empty = tmp_path / "tree", tmp_path / "empty"
    empty.mkdir()
    for folder in (target, empty):
        applied.clear()
        with pytest.raises(upstream.PatchError, match="planted"):
            _prepare("2.16.0", folder)
    assert not target.exists()
    assert empty.is_dir() and not any(empty.iterdir())  # a folder that was there stays, empty
    monkeypatch.undo()
    assert _prepare("2.16.0", target) == [f.id for f in FINDINGS if f.affects("2.16.0")]  # the rerun works
    shutil.rmtree(target)


@pytest.mark.upstream
def test_install_patched_prepares_the_sdist_tree(tmp_path: Path) -> None:
    source = _fetch_or_skip("2.16.0")
    target = tmp_path / "tree"
    applied = _prepare("2.16.0", target)
    assert applied == [f.id for f in FINDINGS if f.affects("2.16.0")]
    assert all(not (target / rel).exists() for rel in upstream.extension_files(source))  # pip builds them
    assert "self.branch2_right(x)" in (target / "lucid/models/vision/inception.py").read_text()
    assert _prepare("2.16.0", target) == applied  # an earlier tree is replaced, not patched twice
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="new or empty"):
        _prepare("2.16.0", stranger)
    with pytest.raises(ValueError, match="wheel"):
        _prepare("2.9.0", tmp_path / "other")
    shutil.rmtree(target)


# LUC-006's first patch, which fixed only the collapse direction of ``_match_grad_shape``
# (a gradient larger than its operand); the expand direction kept its repeat-and-reshape.
_REDUCE_ONLY_FIX = """\
    if data.size < grad.size and grad.ndim >= data.ndim:
        lead = grad.ndim - data.ndim
        pairs = list(zip(data.shape, grad.shape[lead:]))
        if all(d in (1, g) for d, g in pairs):
            axes = tuple(range(lead))
            axes += tuple(lead + i for i, (d, g) in enumerate(pairs) if d == 1 and g != 1)
            return grad.sum(axis=axes).reshape(data.shape)

"""


def _collapse_only_changes(root: Path) -> dict[str, str]:
    """The old LUC-006 edit of ``root`` (pristine 2.9.0): {path: new text}."""
    edits = Edits(root)
    edits.insert_after(
        "lucid/__init__.py",
        "    if data.size == grad.size:\n        return grad.reshape(data.shape)\n\n",
        _REDUCE_ONLY_FIX,
        within="def _match_grad_shape(",
    )
    return edits.changes()


@pytest.mark.upstream
def test_broadcast_reproducer_catches_a_collapse_only_fix(tmp_path: Path) -> None:
    """LUC-006 has two directions: a patch that fixes only the collapse leaves the gradient
    of ``x.mean(axis=0, keepdims=True)`` (and training-mode BatchNorm's input gradient) wrong,
    and the reproducer says so; the kit's patch fixes both."""
    finding = by_id("LUC-006-broadcast-grad-wrong")
    source = _fetch_or_skip("2.9.0")
    root = upstream.copy_tree("2.9.0", tmp_path / "tree")
    for path, text in _collapse_only_changes(root).items():
        (root / path).write_text(text, encoding="utf-8")
    outcome, line = prove.reproduce(finding, root)
    assert outcome == "present" and "mean(axis=0, keepdims=True)" in line, line

    fixed = upstream.copy_tree("2.9.0", tmp_path / "fixed")
    patch = tmp_path / "LUC-006.patch"
    patch.write_text(patches.render(finding.patch_generator, source), encoding="utf-8")
    upstream.apply(patch, fixed)
    assert prove.reproduce(finding, fixed)[0] == "absent"


@pytest.mark.upstream
def test_framework_ops_step_fails_on_a_collapse_only_fix(tmp_path: Path) -> None:
    """The proof's framework-ops step on the combined tree catches the old LUC-006 patch by
    itself (training-mode BatchNorm's input gradient), whatever its reproducer says; the
    real combined trees pass it in ``test_all_patches_together``."""
    finding = by_id("LUC-006-broadcast-grad-wrong")
    source = _fetch_or_skip("2.9.0")
    old = tmp_path / "LUC-006-collapse-only.patch"
    old.write_text(unified_diff(source, _collapse_only_changes(source)), encoding="utf-8")
    combined = prove.prove_version("2.9.0", {finding.id: old}, findings=(finding,), checker=None).combined
    (step,) = [s for s in combined.steps if s.name == prove.OPS_STEP]
    assert step.status == "fail", step.detail
    assert "batchnorm2d_train [float32]: fail" in step.detail and "grad:x" in step.detail, step.detail
    assert "batchnorm2d_train [float64]: fail" in step.detail, step.detail


@pytest.mark.upstream
@pytest.mark.parametrize("version", VERSIONS)
def test_backward_order_patch_needs_its_dependencies(tmp_path: Path, version: str) -> None:
    """LUC-012's patch without the ones it depends on: its new backward order gives a wrong
    gradient through the array LUC-015 shares, and on 2.16.0 lets the fusion (LUC-013) take
    a hooked tensor's gradient; each is caught by a reproducer."""
    source = _fetch_or_skip(version)
    written = patches.write_version_patches(FINDINGS, version, source, tmp_path / "patches")
    root = upstream.copy_tree(version, tmp_path / "tree")
    for finding_id in (IMPORT_FIX, LISTS_TWICE):
        if finding_id in written:
            upstream.apply(written[finding_id], root)
    outcome, line = prove.reproduce(by_id(SHARED_GRAD), root)
    assert outcome == "present" and "d/da sum(n1 + n2 + a) is [1.21" in line, line
    outcome, line = prove.reproduce(by_id(LISTS_TWICE), root)
    if version == "2.16.0":
        assert outcome == "present" and line == (
            "BUG: v + 2v with v = p.reshape(4): a hook on p got ['None'], expected one gradient of 3s"
        ), line
    else:
        assert outcome == "absent", line


def test_ops_known_names_known_bugs() -> None:
    from conformance.ops.known import KNOWN

    claimed = {k: f.id for f in FINDINGS for k in f.ops_known}
    assert claimed.keys() >= {"broadcast-gradient", "stale-dtype"}
    assert all(KNOWN[k].kind == "bug" for k in claimed), claimed
