"""Steps of the combined-tree proof: it compares every file, not only ``*.py``; it judges
``conformance ops`` against the deviations the patches claim to remove."""

from __future__ import annotations

from pathlib import Path

from conformance import prove
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


def _ops_payload(*results: tuple[str, str, tuple[str, ...]]) -> dict:
    known = ("broadcast-gradient", "stale-dtype", "biased-running-var")
    rows = [
        {"case": c, "dtype": "float32", "verdict": v, "expected": list(e), "message": f"{c} says {v}"}
        for c, v, e in results
    ]
    return {"lucid_version": "2.9.0", "known": dict.fromkeys(known, {}), "results": rows}


def test_ops_step_judges_verdicts_against_the_removed_deviations() -> None:
    fixed = {"broadcast-gradient": ["LUC-006"]}
    ok = _ops_payload(
        ("linear", "unexpected-pass", ("broadcast-gradient",)),
        ("bn", "convention", ("biased-running-var",)),
        ("stale", "known-bug", ("stale-dtype",)),  # no patch here claims it
        ("relu", "pass", ()),
    )
    step = prove.ops_step("2.9.0", ok, fixed)
    assert step.status == "pass" and "broadcast-gradient (LUC-006) gone from 1 results" in step.detail
    bad = _ops_payload(
        ("linear", "known-bug", ("broadcast-gradient",)),  # the patch left it exactly as declared
        ("conv", "fail", ("broadcast-gradient",)),
        ("pool", "error", ()),
        ("bn", "unexpected-pass", ("biased-running-var",)),  # a convention changed: unaccounted for
    )
    detail = prove.ops_step("2.9.0", bad, fixed).detail
    assert prove.ops_step("2.9.0", bad, fixed).status == "fail"
    assert "linear [float32]: still known-bug (broadcast-gradient), which LUC-006 remove" in detail
    assert "conv [float32]: fail: conv says fail" in detail and "pool [float32]: error" in detail
    assert "bn [float32]: unexpected-pass of biased-running-var, which no patch claims" in detail
    other = prove.ops_step("2.16.0", ok, {"no-such-deviation": ["LUC-999"]})
    assert other.status == "fail" and "not the patched 2.16.0" in other.detail
    assert "unknown deviation 'no-such-deviation'" in other.detail
