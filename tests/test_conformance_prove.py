"""The combined-tree step of the patch proof compares every file, not only ``*.py``."""

from __future__ import annotations

from pathlib import Path

from conformance.prove import differing_files


def _tree(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_a_data_file_that_differs_is_found(tmp_path: Path) -> None:
    # LUC-005 edits 2.16.0's registry.json: the patched and the composed tree must agree on it
    same = {"lucid/models/vision/inception.py": "x = 1\n", "lucid/__pycache__/a.pyc": "cache"}
    patched = _tree(tmp_path / "patched", {**same, "lucid/models/registry.json": '{"v4": 42711400}\n'})
    composed = _tree(tmp_path / "composed", {**same, "lucid/models/registry.json": '{"v4": 40586984}\n'})
    assert differing_files(patched, composed) == ["lucid/models/registry.json"]


def test_a_file_in_one_tree_only_is_found(tmp_path: Path) -> None:
    patched = _tree(tmp_path / "patched", {"lucid/__init__.py": "", "lucid/extra.txt": "new\n"})
    composed = _tree(tmp_path / "composed", {"lucid/__init__.py": "", "lucid/__pycache__/b.pyc": "x"})
    assert differing_files(patched, composed) == ["lucid/extra.txt"]
    assert differing_files(composed, composed) == []
