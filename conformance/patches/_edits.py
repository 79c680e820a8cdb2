"""Anchored text edits on an upstream tree, and unified diffs of the result.

Every edit names its anchor and fails loudly unless the anchor occurs exactly once in the
named scope (a class or function block), so a patch is never computed against code that
has moved or changed upstream.
"""

from __future__ import annotations

import difflib
from pathlib import Path

__all__ = ["AnchorError", "Edits", "locate", "unified_diff"]


class AnchorError(RuntimeError):
    """An edit's anchor is missing or ambiguous: upstream changed; the generator needs review."""


def locate(root: Path, marker: str) -> str:
    """The one ``lucid/**/*.py`` file (relative to ``root``) whose text contains ``marker``."""
    hits = sorted(p for p in (root / "lucid").rglob("*.py") if marker in p.read_text(encoding="utf-8"))
    if len(hits) != 1:
        found = [str(p.relative_to(root)) for p in hits]
        raise AnchorError(f"expected exactly one file under {root}/lucid defining {marker!r}, found {found}")
    return hits[0].relative_to(root).as_posix()


def _block(text: str, header: str, where: str) -> tuple[int, int]:
    """Character span of the block whose first line starts with ``header`` (its indentation
    included): up to the next non-blank line indented no deeper than the header."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(header)]
    if len(starts) != 1:
        raise AnchorError(f"{where}: expected one line starting with {header!r}, found {len(starts)}")
    first = starts[0]
    indent = len(header) - len(header.lstrip())
    last = len(lines)
    for i in range(first + 1, len(lines)):
        stripped = lines[i].strip()
        if stripped and len(lines[i]) - len(lines[i].lstrip()) <= indent and not stripped.startswith(")"):
            last = i
            break
    # Blank lines before the next block belong to the gap, not to this block.
    while last > first + 1 and not lines[last - 1].strip():
        last -= 1
    begin = sum(len(line) for line in lines[:first])
    return begin, begin + sum(len(line) for line in lines[first:last])


class Edits:
    """Edits of files under one tree, read from disk once, kept in memory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._original: dict[str, str] = {}
        self._current: dict[str, str] = {}

    def text(self, path: str) -> str:
        if path not in self._current:
            file = self.root / path
            if not file.is_file():
                raise AnchorError(f"no file {path} under {self.root}")
            self._original[path] = self._current[path] = file.read_text(encoding="utf-8")
        return self._current[path]

    def replace(self, path: str, old: str, new: str, *, within: str | None = None) -> None:
        """Replace the one occurrence of ``old`` (in the block headed ``within``, if given)."""
        text = self.text(path)
        begin, end = _block(text, within, path) if within is not None else (0, len(text))
        scope = text[begin:end]
        count = scope.count(old)
        if count != 1:
            where = f"{path} (block {within!r})" if within else path
            raise AnchorError(f"{where}: expected anchor once, found {count}:\n{old}")
        self._current[path] = text[:begin] + scope.replace(old, new) + text[end:]

    def replace_span(self, path: str, start: str, end: str, new: str, *, within: str | None = None) -> None:
        """Replace the text from the one occurrence of ``start`` through the first ``end``
        after it (both anchors included), so long upstream passages are not restated."""
        text = self.text(path)
        begin, stop = _block(text, within, path) if within is not None else (0, len(text))
        scope = text[begin:stop]
        count = scope.count(start)
        if count != 1:
            where = f"{path} (block {within!r})" if within else path
            raise AnchorError(f"{where}: expected start anchor once, found {count}:\n{start}")
        head = scope.index(start)
        tail = scope.find(end, head + len(start))
        if tail < 0:
            raise AnchorError(f"{path}: no end anchor after {start!r}:\n{end}")
        scope = scope[:head] + new + scope[tail + len(end) :]
        self._current[path] = text[:begin] + scope + text[stop:]

    def insert_before(self, path: str, anchor: str, new: str, *, within: str | None = None) -> None:
        self.replace(path, anchor, new + anchor, within=within)

    def insert_after(self, path: str, anchor: str, new: str, *, within: str | None = None) -> None:
        self.replace(path, anchor, anchor + new, within=within)

    def set_text(self, path: str, new: str) -> None:
        self.text(path)
        self._current[path] = new

    def changes(self) -> dict[str, str]:
        """New text of every file that changed, by path relative to the root."""
        return {p: t for p, t in sorted(self._current.items()) if t != self._original[p]}


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def unified_diff(root: Path, changes: dict[str, str]) -> str:
    """A ``patch -p1`` diff (``a/<path>``, ``b/<path>`` headers) from ``root``'s files to
    ``changes``; ends with a newline."""
    parts: list[str] = []
    for path, new in sorted(changes.items()):
        old = (Path(root) / path).read_text(encoding="utf-8")
        parts.extend(difflib.unified_diff(_lines(old), _lines(new), f"a/{path}", f"b/{path}"))
    diff = "".join(parts)
    if not diff:
        raise ValueError(f"no changes to diff under {root}")
    return diff if diff.endswith("\n") else diff + "\n"
