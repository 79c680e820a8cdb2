"""Upstream reports as files: ``DIR/<finding-id>.md`` per finding, ``DIR/README.md`` (index
and combined proofs) and ``DIR/patches/lucid-dl-<version>/<finding-id>.patch``.

Everything is written to a temporary folder beside ``DIR`` and moved into place at the end,
so a failure leaves no half-written report. ``python -m conformance report`` runs this.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from tabulate import tabulate

from . import upstream
from .findings import FINDINGS, Finding, dependencies
from .patches import write_version_patches
from .prove import REPO, Checker, Proof, VersionProof, conformance_checker, prove_version
from .usage import UsageError

__all__ = ["add_report_command", "write_reports"]

_MARKER = ".upstream-report"  # marks a folder this module wrote and may replace


def _cell(text: str, limit: int = 600) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _patch_link(finding_id: str, version: str) -> str:
    return f"patches/lucid-dl-{version}/{finding_id}.patch"


def _status(finding: Finding, version: str, proofs: Mapping[str, VersionProof]) -> str:
    if version not in proofs:
        return "patch (not proven)" if finding.affects(version) else "not affected (not proven)"
    proof = next(p for p in proofs[version].findings if p.finding_id == finding.id)
    if not proof.ok:
        return "**FAILED**"
    return "patched, proven" if finding.affects(version) else "not affected, proven"


def _steps_table(proofs: Sequence[Proof]) -> str:
    rows = [
        (p.version, s.name, s.status.upper() if s.status == "fail" else s.status, _cell(s.detail))
        for p in proofs
        for s in p.steps
    ]
    return tabulate(rows, headers=("lucid-dl", "step", "status", "detail"), tablefmt="github")


def _finding_md(finding: Finding, versions: Sequence[str], proofs: Mapping[str, VersionProof]) -> str:
    deps = {v: [d.id for d in dependencies(finding, v)] for v in versions}
    needs = "; ".join(f"{', '.join(ids)} on {v}" for v, ids in deps.items() if ids) or "nothing"
    items = ", ".join(f"`{i}`" for i in finding.spec_items) or "none (framework finding)"
    head = tabulate(
        [(finding.severity, ", ".join(finding.affected_versions), items, needs)],
        headers=("severity", "affected lucid-dl", "conformance items", "apply first"),
        tablefmt="github",
    )
    patch_rows = []
    for v in versions:
        if finding.affects(v):
            link = _patch_link(finding.id, v)
            patch_rows.append((v, f"[{link}]({link})"))
        else:
            measured = ""
            if v in proofs:
                (step,) = [
                    s
                    for p in proofs[v].findings
                    if p.finding_id == finding.id
                    for s in p.steps
                    if s.name.startswith("not affected")
                ]
                measured = f" Reproducer on unpatched {v}: {step.detail}"
            patch_rows.append((v, _cell(f"not affected: {finding.not_affected[v]}{measured}")))
    reproducer = finding.reproducer.relative_to(REPO).as_posix()
    proven = [p for v in versions if v in proofs for p in proofs[v].findings if p.finding_id == finding.id]
    proof = _steps_table(proven) if proven else "Not run (`--no-prove`)."
    return f"""# {finding.id}: {finding.title}

{head}

## Evidence

{finding.evidence}

## Patches

{tabulate(patch_rows, headers=("lucid-dl", "patch"), tablefmt="github")}

Apply from the folder that holds `lucid/`: `patch -p1 < {finding.id}.patch`. Each patch is
generated from upstream's own source and applies to pristine upstream on its own; on 2.16.0
run nothing before LUC-008's patch makes `import lucid` work on Python 3.12.

## Reproducer

`{reproducer}` exits 1 with a `BUG:` line while the fault is present and 0 with an `OK:` line
once it is fixed: `PYTHONPATH=<folder holding lucid/> python {finding.reproducer.name}`.

```python
{finding.reproducer.read_text(encoding="utf-8").rstrip()}
```

## Proof

{proof}
"""


def _index_md(versions: Sequence[str], proofs: Mapping[str, VersionProof]) -> str:
    rows = [
        (f"[{f.id}]({f.id}.md)", f.title, f.severity, *(_status(f, v, proofs) for v in versions))
        for f in FINDINGS
    ]
    index = tabulate(rows, headers=("finding", "title", "severity", *versions), tablefmt="github")
    combined = "\n\n".join(
        f"### lucid-dl {v}\n\n{_steps_table([proofs[v].combined])}" for v in versions if v in proofs
    )
    return f"""# Upstream lucid-dl findings

Written by `python -m conformance report` from `conformance/findings.py`; see
`docs/upstream.md` for how the kit works.

{index}

## How the patches are made and proven

- Each patch is generated from upstream's own source by anchored edits (an anchor that is
  missing or ambiguous stops the generator) against pristine upstream, so each applies on its
  own. The edits of different findings are far enough apart that all of a version's patches
  also apply together, in catalogue (file-name) order, with `patch -p1 --fuzz=0`:
  `for p in patches/lucid-dl-2.16.0/*.patch; do patch -p1 < "$p"; done`.
- The proof copies upstream, checks that each reproducer fails unpatched (passes where the
  finding does not apply), applies the patch, checks that the reproducer passes, and runs the
  conformance check before and after (`python -m conformance check --target upstream --json`):
  the finding's items go fail -> pass, nothing goes pass -> fail. Then it applies all patches
  together, compares the result byte for byte with the edits composed in memory, and runs
  every reproducer and the conformance check on it.
- lucid-dl 2.16.0 is an sdist whose `import lucid` needs its pybind11 extensions: the kit builds
  them from the sdist. On Python 3.12 every 2.16.0 run needs LUC-008's patch first.

{combined or "Proofs not run (`--no-prove`)."}
"""


def out_dir_problem(out_dir: Path) -> str | None:
    """Why ``out_dir`` cannot receive a report (it is replaced whole), or None: it must be
    new, empty, or an earlier report. Checked before any fetch or proof."""
    if out_dir.exists() and not out_dir.is_dir():
        return f"--out must be a folder, {out_dir} is a file"
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / _MARKER).is_file():
        return f"{out_dir} exists and is not an upstream report folder: refusing to replace it"
    return None


def _replace(tmp: Path, out_dir: Path) -> None:
    """Move ``tmp`` to ``out_dir``; an existing ``out_dir`` must be an earlier report."""
    if out_dir.exists():
        problem = out_dir_problem(out_dir)  # again: it may have changed during the proofs
        if problem:
            raise ValueError(problem)
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old)
    else:
        os.rename(tmp, out_dir)


def write_reports(
    out_dir: Path,
    versions: Sequence[str] = upstream.SUPPORTED_VERSIONS,
    prove: bool = True,
    *,
    checker: Checker | None = conformance_checker,
) -> bool:
    """Write the reports and patches for ``versions`` into ``out_dir``; with ``prove``, run
    the proofs and include them. Returns whether every proof passed (True without proofs)."""
    unknown = [v for v in versions if v not in upstream.SUPPORTED_VERSIONS]
    if not versions or unknown:
        raise ValueError(f"versions must be among {upstream.SUPPORTED_VERSIONS}, got {list(versions)}")
    out_dir = Path(out_dir).resolve()
    problem = out_dir_problem(out_dir)
    if problem:
        raise ValueError(problem)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        proofs: dict[str, VersionProof] = {}
        for v in versions:
            dest = tmp / "patches" / f"lucid-dl-{v}"
            written = write_version_patches(FINDINGS, v, upstream.fetch(v), dest)
            if prove:
                proofs[v] = prove_version(v, written, checker=checker)
        for finding in FINDINGS:
            (tmp / f"{finding.id}.md").write_text(_finding_md(finding, versions, proofs), encoding="utf-8")
        (tmp / "README.md").write_text(_index_md(versions, proofs), encoding="utf-8")
        (tmp / _MARKER).write_text("written by conformance.reports\n", encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private; the report is for reading
        _replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return all(p.ok for p in proofs.values())


def add_report_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand; its ``func`` default returns the exit code."""
    p = subparsers.add_parser(
        "report",
        help="write upstream lucid-dl findings, patches and their proofs",
        description="Write one Markdown report per upstream finding, an index and the patches; "
        "prove each patch against real upstream sources (fetched with pip, cached).",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder to write: new, empty, or an earlier report (which it replaces)",
    )
    p.add_argument(
        "--version",
        action="append",
        dest="versions",
        choices=upstream.SUPPORTED_VERSIONS,
        help="lucid-dl version (repeatable; default: all of " + ", ".join(upstream.SUPPORTED_VERSIONS) + ")",
    )
    p.add_argument("--no-prove", action="store_true", help="write reports and patches without proving them")
    p.set_defaults(func=_report_main)
    return p


def _report_main(args: argparse.Namespace) -> int:
    versions = tuple(dict.fromkeys(args.versions or upstream.SUPPORTED_VERSIONS))
    problem = out_dir_problem(args.out.resolve())
    if problem:
        raise UsageError(problem)
    try:
        ok = write_reports(args.out, versions, prove=not args.no_prove)
    except upstream.UpstreamUnavailable as exc:
        print(f"cannot fetch upstream sources: {exc}", file=sys.stderr)
        return 2
    verdict = "proofs not run" if args.no_prove else ("all proofs pass" if ok else "SOME PROOFS FAILED")
    print(f"wrote {args.out}: {len(FINDINGS)} finding reports, patches for {', '.join(versions)}; {verdict}")
    return 0 if ok else 1
