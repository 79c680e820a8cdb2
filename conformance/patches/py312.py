"""Patch generator that makes lucid-dl 2.10-2.16 import on Python 3.12/3.13.

Those releases declare ``python_requires=">=3.12"`` but rely on Python 3.14's deferred
evaluation of annotations (PEP 649): ``lucid/types.py`` annotates a Protocol with itself,
so ``import lucid`` raises ``NameError: name '_TensorLike' is not defined`` on 3.12.
``from __future__ import annotations`` gives every annotated module the same deferral on
3.12 and changes nothing on 3.14.
"""

from __future__ import annotations

import ast
from pathlib import Path

from ._edits import Edits

__all__ = ["future_annotations"]

_FUTURE = "from __future__ import annotations\n"


def _has_annotations(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            if node.returns is not None or any(a is not None and a.annotation for a in every):
                return True
    return False


def _defers_annotations(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    )


def _with_future(text: str, tree: ast.Module) -> str:
    """``text`` with the future import as its first statement (after the docstring)."""
    lines = text.splitlines(keepends=True)
    first = tree.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        at, new = first.end_lineno, "\n" + _FUTURE  # keep the docstring first
    else:
        decorators = getattr(first, "decorator_list", [])
        at, new = min([first.lineno] + [d.lineno for d in decorators]) - 1, _FUTURE + "\n"
    return "".join(lines[:at]) + new + "".join(lines[at:])


def future_annotations(root: Path) -> dict[str, str]:
    """Add ``from __future__ import annotations`` to every ``lucid/`` module that has
    annotations and lacks it (modules without annotations behave the same either way)."""
    edits = Edits(root)
    for file in sorted((Path(root) / "lucid").rglob("*.py")):
        path = file.relative_to(root).as_posix()
        text = edits.text(path)
        tree = ast.parse(text, filename=path)
        if tree.body and _has_annotations(tree) and not _defers_annotations(tree):
            edits.set_text(path, _with_future(text, tree))
    return edits.changes()
