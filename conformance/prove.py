"""Prove the catalogue against real upstream trees.

For each version and finding, on a fresh copy with the finding's dependencies applied: the
reproducer fails unpatched (or, for a version the finding does not affect, passes), the
patch applies to pristine upstream on its own and after its dependencies, and the reproducer
then passes. Then all of the version's patches are applied together in catalogue order: the
result must equal the edits composed in memory (no hunk landed elsewhere), and every
reproducer passes. The conformance check (``conformance.checker``) runs before and after
each patch: the finding's items go fail -> pass and nothing goes pass -> fail. On the combined
tree the framework differential tests (``python -m conformance ops``, both dtypes, Lucid on
cpu) run too: no case may fail or error, and a known deviation that a patch claims to remove
(``Finding.ops_known``) may no longer read ``known-bug``; a half-fixed bug shows there even
when its reproducer passes.

A reproducer "fails" only by exiting 1 with a ``BUG:`` line; any other exit (a traceback, a
timeout) is an error of the kit, never evidence.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import upstream
from .findings import FINDINGS, Finding, dependencies
from .patches import write_version_patches

__all__ = [
    "REPO",
    "Checker",
    "CheckerError",
    "OpsError",
    "OpsRunner",
    "Proof",
    "Step",
    "VersionProof",
    "conformance_checker",
    "differing_files",
    "framework_ops",
    "ops_step",
    "prove_version",
    "reproduce",
]

REPO = Path(__file__).resolve().parent.parent
REPRODUCER_TIMEOUT = 300.0
CHECKER_TIMEOUT = 900.0
OPS_TIMEOUT = 600.0  # the full run takes about 5 s on 2 cores
OPS_STEP = "framework ops on the combined tree"

# root -> the JSON object of ``python -m conformance ops --json`` run against it
OpsRunner = Callable[[Path], Mapping[str, Any]]

# root -> {item id: "pass" | "fail"}
Checker = Callable[[Path], Mapping[str, str]]


class CheckerError(RuntimeError):
    """The conformance checker ran but did not produce the expected JSON."""


@dataclass(frozen=True)
class Step:
    """One checked expectation; ``status`` is "pass", "fail" or "skipped"."""

    name: str
    status: str
    detail: str


@dataclass(frozen=True)
class Proof:
    """The steps proving one finding on one version (``finding_id`` "all" for the combined tree)."""

    version: str
    finding_id: str
    steps: tuple[Step, ...]

    @property
    def ok(self) -> bool:
        return all(step.status != "fail" for step in self.steps)


@dataclass(frozen=True)
class VersionProof:
    version: str
    findings: tuple[Proof, ...]
    combined: Proof
    patches: Mapping[str, Path]

    @property
    def ok(self) -> bool:
        return self.combined.ok and all(p.ok for p in self.findings)


def reproduce(finding: Finding, root: Path) -> tuple[str, str]:
    """Run ``finding``'s reproducer on ``root``: ("present" | "absent" | "error", its line)."""
    res = upstream.run_python(root, finding.reproducer, REPRODUCER_TIMEOUT)
    lines = res.stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    if res.returncode == 0 and last.startswith("OK:"):
        return "absent", last
    if res.returncode == 1 and last.startswith("BUG:") and "Traceback" not in res.stderr:
        return "present", last
    return "error", f"exit {res.returncode}: {res.output.strip()[-1500:]}"


def conformance_checker(root: Path) -> Mapping[str, str]:
    """Run ``python -m conformance check --target upstream --json`` against ``root``'s lucid."""
    args = ["-m", "conformance", "check", "--target", "upstream", "--json"]
    res = upstream.run_python(root, args, CHECKER_TIMEOUT, cwd=REPO)
    try:
        items = json.loads(res.stdout)
    except json.JSONDecodeError as exc:
        raise CheckerError(f"checker printed no JSON (exit {res.returncode}):\n{res.output[-2000:]}") from exc
    if not isinstance(items, list):
        raise CheckerError(f"checker JSON must be a list of items, got {type(items).__name__}")
    statuses: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict) or item.get("status") not in ("pass", "fail") or "id" not in item:
            raise CheckerError(f"checker item must have an id and status pass|fail, got {item!r}")
        statuses[item["id"]] = item["status"]
    return statuses


class OpsError(RuntimeError):
    """``conformance ops`` ran but did not produce the expected JSON."""


def framework_ops(root: Path) -> Mapping[str, Any]:
    """Run ``python -m conformance ops --json`` (float32 and float64, Lucid and torch on cpu)
    against ``root``'s lucid; its exit code is not read (an unexpected pass exits 1)."""
    args = ["-m", "conformance", "ops", "--json", "--dtype", "float32", "--dtype", "float64"]
    args += ["--lucid-device", "cpu", "--torch-device", "cpu"]
    res = upstream.run_python(root, args, OPS_TIMEOUT, cwd=REPO)
    try:
        payload = json.loads(res.stdout)
    except json.JSONDecodeError as exc:
        raise OpsError(f"ops printed no JSON (exit {res.returncode}):\n{res.output[-2000:]}") from exc
    results = payload.get("results") if isinstance(payload, dict) else None
    if not isinstance(results, list) or not isinstance(payload.get("known"), dict):
        raise OpsError("ops JSON must be an object with 'results' (a list) and 'known'")
    for r in results:
        if not isinstance(r, dict) or not {"case", "dtype", "verdict", "expected", "message"} <= r.keys():
            raise OpsError(f"ops result must have case, dtype, verdict, expected, message: {r!r}")
    return payload


def ops_step(version: str, payload: Mapping[str, Any], fixed: Mapping[str, Sequence[str]]) -> Step:
    """Judge ``conformance ops`` on a patched ``version``: ``fixed`` maps each known deviation
    the patches remove to the findings that remove it. Fails on a ``fail`` or ``error``
    verdict, on ``known-bug`` for a removed deviation, and on ``unexpected-pass`` of a
    deviation no patch claims to remove (the patches changed something unaccounted for)."""
    problems: list[str] = []
    ran = payload.get("lucid_version")
    if ran != version:
        problems.append(f"ran against lucid-dl {ran}, not the patched {version}")
    problems += [
        f"kit bug: {', '.join(by)} name(s) the unknown deviation {known_id!r}"
        for known_id, by in fixed.items()
        if known_id not in payload["known"]
    ]
    counts: dict[str, int] = {}
    gone: dict[str, int] = {}
    for r in payload["results"]:
        verdict, where = r["verdict"], f"{r['case']} [{r['dtype']}]"
        counts[verdict] = counts.get(verdict, 0) + 1
        removed = [k for k in r["expected"] if k in fixed]
        for k in removed:
            gone[k] = gone.get(k, 0) + (verdict in ("pass", "unexpected-pass"))
        if verdict in ("fail", "error"):
            problems.append(f"{where}: {verdict}: {r['message']}")
        elif verdict == "known-bug" and removed:
            by = sorted({f for k in removed for f in fixed[k]})
            problems.append(f"{where}: still known-bug ({', '.join(removed)}), which {', '.join(by)} remove")
        elif verdict == "unexpected-pass" and set(r["expected"]) - fixed.keys():
            unclaimed = ", ".join(sorted(set(r["expected"]) - fixed.keys()))
            problems.append(f"{where}: unexpected-pass of {unclaimed}, which no patch claims to remove")
        elif verdict not in ("pass", "convention", "known-bug", "unexpected-pass"):
            problems.append(f"{where}: unknown verdict {verdict!r}")
    if problems:
        return Step(OPS_STEP, "fail", "; ".join(problems))
    tally = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    removed = "; ".join(f"{k} ({', '.join(fixed[k])}) gone from {n} results" for k, n in gone.items())
    return Step(
        OPS_STEP,
        "pass",
        f"lucid-dl {ran}, cpu, float32+float64: {tally}" + (f"; {removed}" if removed else ""),
    )


def _check_step(name: str, before: Mapping[str, str], after: Mapping[str, str], items: Sequence[str]) -> Step:
    problems = [
        f"{item}: {before.get(item, 'absent')} -> {after.get(item, 'absent')} (expected fail -> pass)"
        for item in items
        if (before.get(item), after.get(item)) != ("fail", "pass")
    ]
    problems += [
        f"{item}: pass -> {after.get(item, 'absent')} (regression)"
        for item, status in before.items()
        if status == "pass" and after.get(item) != "pass"
    ]
    if problems:
        return Step(name, "fail", "; ".join(problems))
    fixed = ", ".join(items) if items else "no items (framework finding)"
    return Step(name, "pass", f"fail -> pass: {fixed}; no pass -> fail of {len(before)} items")


class _Trees:
    """Fresh copies of one version's tree, with patches applied; all removed on exit."""

    def __init__(self, version: str) -> None:
        self.version = version
        self._tmp = Path(tempfile.mkdtemp(prefix=f"prove-lucid-dl-{version}-"))
        self._numbers = itertools.count(1)  # thread-safe in CPython

    def copy(self, patch_files: Sequence[Path] = ()) -> Path:
        root = upstream.copy_tree(self.version, self._tmp / f"tree{next(self._numbers)}")
        for patch in patch_files:
            upstream.apply(patch, root)
        origin = upstream.lucid_origin(root)
        if not origin.is_relative_to(root):
            raise RuntimeError(f"import lucid resolves to {origin}, not into the copy at {root}")
        return root

    def __enter__(self) -> _Trees:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)


class _Baselines:
    """Checker results per set of applied patches, so each baseline is checked once."""

    def __init__(self, checker: Checker | None, trees: _Trees) -> None:
        self.checker, self.trees = checker, trees
        self._cache: dict[tuple[Path, ...], Mapping[str, str] | None | CheckerError] = {}
        self._lock = threading.Lock()  # findings are proven in parallel; check a baseline once

    def get(self, patch_files: tuple[Path, ...]) -> Mapping[str, str] | None:
        """Raises the checker's error (cached like a result) when it cannot run there."""
        if self.checker is None:
            return None
        with self._lock:
            if patch_files not in self._cache:
                try:
                    self._cache[patch_files] = self.checker(self.trees.copy(patch_files))
                except CheckerError as exc:
                    self._cache[patch_files] = exc
            result = self._cache[patch_files]
        if isinstance(result, CheckerError):
            raise result
        return result


def _checker_steps(
    name: str, baselines: _Baselines, base: tuple[Path, ...], patched: Path, items: Sequence[str]
) -> list[Step]:
    if baselines.checker is None:
        return [Step(name, "skipped", "checker not requested")]
    note = ""
    try:
        before = baselines.get(base)
    except CheckerError as exc:
        # Unpatched upstream the check may not run at all (2.16.0 does not import on 3.12):
        # then every item counts as failing before; the patched run must still work.
        before = None
        note = f"unpatched, the checker cannot run ({_first_error_line(str(exc))}); "
    try:
        after = baselines.checker(patched)
    except CheckerError as exc:
        return [Step(name, "fail", str(exc))]
    if before is None:  # the unpatched run could not check: every item was failing
        before = dict.fromkeys(after, "fail")
    step = _check_step(name, before, after, items)
    return [Step(step.name, step.status, note + step.detail)]


def _first_error_line(text: str) -> str:
    """The last line that names an exception, else the first line."""
    errors = [line.strip() for line in text.splitlines() if "Error" in line or "Exception" in line]
    return errors[-1] if errors else text.splitlines()[0]


def _prove_finding(
    finding: Finding, trees: _Trees, patches: Mapping[str, Path], baselines: _Baselines, check: bool
) -> Proof:
    version = trees.version
    deps = tuple(patches[d.id] for d in dependencies(finding, version))
    steps: list[Step] = []
    try:
        base = trees.copy(deps)
    except upstream.PatchError as exc:
        return Proof(version, finding.id, (Step("dependencies applied first", "fail", str(exc)),))
    if deps:
        steps.append(Step("dependencies applied first", "pass", ", ".join(p.stem for p in deps)))
    outcome, line = reproduce(finding, base)
    if not finding.affects(version):
        status = "pass" if outcome == "absent" else "fail"
        why = "" if outcome == "absent" else "kit bug: catalogued as not affected, but "
        steps.append(Step("not affected: reproducer passes unpatched", status, why + line))
        return Proof(version, finding.id, tuple(steps))
    if outcome == "present":
        steps.append(Step("reproducer fails unpatched", "pass", line))
    else:
        why = "kit bug: passes on an affected version: " if outcome == "absent" else ""
        steps.append(Step("reproducer fails unpatched", "fail", why + line))
    patch = patches[finding.id]
    try:
        upstream.apply(patch, upstream.fetch(version), dry_run=True)
        steps.append(Step("patch applies alone to pristine upstream", "pass", patch.name))
        upstream.apply(patch, base)
        steps.append(Step("patch applies after its dependencies", "pass", patch.name))
    except upstream.PatchError as exc:
        steps.append(Step("patch applies", "fail", str(exc)))
        return Proof(version, finding.id, tuple(steps))
    outcome, line = reproduce(finding, base)
    steps.append(Step("reproducer passes patched", "pass" if outcome == "absent" else "fail", line))
    if check:
        steps += _checker_steps("conformance check: fail -> pass", baselines, deps, base, finding.spec_items)
    return Proof(version, finding.id, tuple(steps))


def _composed(trees: _Trees, findings: Sequence[Finding]) -> Path:
    """A copy with each finding's generator run in turn on the previous one's output."""
    root = trees.copy()
    for finding in findings:
        for path, text in finding.patch_generator(root).items():
            (root / path).write_text(text, encoding="utf-8")
    return root


def _files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.relative_to(root).parts
    }


def differing_files(a: Path, b: Path) -> list[str]:
    """Every regular file (outside ``__pycache__``) that is in only one of two trees or
    differs in its bytes. Every file, not only ``*.py``: a patch may edit data (LUC-005
    edits 2.16.0's ``lucid/models/registry.json``)."""
    files_a, files_b = _files(a), _files(b)
    return sorted(
        (files_a ^ files_b) | {p for p in files_a & files_b if (a / p).read_bytes() != (b / p).read_bytes()}
    )


def _prove_combined(
    trees: _Trees,
    findings: Sequence[Finding],
    patches: Mapping[str, Path],
    baselines: _Baselines,
    ops: OpsRunner | None = framework_ops,
) -> Proof:
    version = trees.version
    mine = [f for f in findings if f.id in patches]
    steps: list[Step] = []
    try:
        root = trees.copy([patches[f.id] for f in mine])
    except upstream.PatchError as exc:
        return Proof(
            version, "all", (Step("all patches apply together in catalogue order", "fail", str(exc)),)
        )
    steps.append(
        Step("all patches apply together in catalogue order", "pass", ", ".join(f.id[:7] for f in mine))
    )
    differ = differing_files(root, _composed(trees, mine))
    steps.append(
        Step(
            "combined tree equals the edits composed in order",
            "fail" if differ else "pass",
            f"differs in {differ}" if differ else "every file byte-identical",
        )
    )
    for finding in findings:
        outcome, line = reproduce(finding, root)
        steps.append(
            Step(
                f"{finding.id[:7]} passes on the combined tree",
                "pass" if outcome == "absent" else "fail",
                line,
            )
        )
    deps = tuple(patches[f.id] for f in mine if any(f in dependencies(g, version) for g in findings))
    items = [item for f in mine for item in f.spec_items]
    steps += _checker_steps("conformance check: all items fixed", baselines, deps, root, items)
    if ops is None:
        steps.append(Step(OPS_STEP, "skipped", "framework ops not requested"))
    else:
        fixed: dict[str, list[str]] = {}
        for f in mine:
            for known_id in f.ops_known:
                fixed.setdefault(known_id, []).append(f.id[:7])
        try:
            steps.append(ops_step(version, ops(root), fixed))
        except OpsError as exc:
            steps.append(Step(OPS_STEP, "fail", str(exc)))
    return Proof(version, "all", tuple(steps))


def prove_version(
    version: str,
    patches: Mapping[str, Path] | None = None,
    *,
    findings: Sequence[Finding] = FINDINGS,
    checker: Checker | None = conformance_checker,
    check_each: bool = True,
    workers: int = 2,
    ops: OpsRunner | None = framework_ops,
) -> VersionProof:
    """Prove ``findings`` on lucid-dl ``version`` with the given patch files (by finding id;
    generated into a temporary folder when omitted). ``checker=None`` leaves out the
    conformance-check steps; ``check_each=False`` runs it on the combined tree only.
    ``ops=None`` leaves out the framework ops on the combined tree.
    ``workers`` findings are proven at once (each in its own copies)."""
    upstream.fetch(version)
    with tempfile.TemporaryDirectory(prefix="lucid-patches-") as tmp, _Trees(version) as trees:
        if patches is None:
            patches = write_version_patches(findings, version, upstream.fetch(version), Path(tmp))
        missing = [f.id for f in findings if f.affects(version) and f.id not in patches]
        if missing:
            raise ValueError(f"no patch file for {missing} on {version}")
        baselines = _Baselines(checker, trees)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            proofs = tuple(
                pool.map(lambda f: _prove_finding(f, trees, patches, baselines, check_each), findings)
            )
        combined = _prove_combined(trees, findings, patches, baselines, ops)
        return VersionProof(version, proofs, combined, dict(patches))
