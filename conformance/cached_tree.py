"""Whether a cached upstream tree is whole: checked on every cache hit, because anything
can damage a folder after the kit renamed it into place (a truncated file, an emptied
folder), and a damaged tree otherwise surfaces far away, as an ``AnchorError`` that blames
an upstream change.

What the tree itself can vouch for is checked: ``lucid/__init__.py`` exists; a wheel's
``*.dist-info/RECORD`` lists every file with its sha256, and each must match; an sdist's
``*.egg-info/SOURCES.txt`` lists its files (without digests), and each must exist.
"""

from __future__ import annotations

import base64
import csv
import hashlib
from pathlib import Path

__all__ = ["tree_problem"]


def _record_digest(data: bytes, algorithm: str) -> str:
    """A digest as RECORD writes it: urlsafe base64 without padding (PEP 376 / 627)."""
    digest = hashlib.new(algorithm, data).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _record_problem(tree: Path, record: Path) -> str | None:
    name = record.relative_to(tree).as_posix()
    with record.open(newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            if not row or len(row) < 2 or not row[1]:  # RECORD lists itself without a digest
                continue
            path, (algorithm, _, expected) = row[0], row[1].partition("=")
            file = tree / path
            if not file.is_file():
                return f"{path}, listed in {name}, is missing"
            if algorithm not in hashlib.algorithms_available:
                return f"{name} uses an unknown digest {algorithm!r} for {path}"
            if _record_digest(file.read_bytes(), algorithm) != expected:
                return f"{path} does not match its {algorithm} in {name}"
    return None


def _sources_problem(tree: Path, sources: Path) -> str | None:
    name = sources.relative_to(tree).as_posix()
    for line in sources.read_text(encoding="utf-8").splitlines():
        if line.strip() and not (tree / line.strip()).is_file():
            return f"{line.strip()}, listed in {name}, is missing"
    return None


def tree_problem(tree: Path) -> str | None:
    """Why the cached tree ``tree`` (the folder holding ``lucid/``) is damaged, or None."""
    if not (tree / "lucid" / "__init__.py").is_file():
        return "no lucid/__init__.py"
    for record in sorted(tree.glob("*.dist-info/RECORD")):
        problem = _record_problem(tree, record)
        if problem:
            return problem
    for sources in sorted(tree.glob("*.egg-info/SOURCES.txt")):
        problem = _sources_problem(tree, sources)
        if problem:
            return problem
    return None
