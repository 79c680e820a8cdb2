"""The upstream cache: a damaged cached tree is never used; it is fetched again. No
network: ``_download`` is replaced by a wheel built here, in a temporary cache."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from conformance import upstream
from conformance.cached_tree import _record_digest, tree_problem

VERSION = "2.9.0"
FILES = {
    "lucid/__init__.py": b"__version__ = '2.9.0'\n",
    "lucid/models/imgclf/inception.py": b"class _InceptionStem_V4:\n    pass\n",
}


def _write_wheel(dest: Path) -> Path:
    """A wheel as pip downloads one: the files and a dist-info RECORD with their sha256."""
    info = f"lucid_dl-{VERSION}.dist-info"
    rows = [f"{path},sha256={_record_digest(data, 'sha256')},{len(data)}" for path, data in FILES.items()]
    dest.mkdir(parents=True)
    wheel = dest / f"lucid_dl-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in FILES.items():
            zf.writestr(path, data)
        zf.writestr(f"{info}/RECORD", "\n".join([*rows, f"{info}/RECORD,,"]) + "\n")
    return wheel


@pytest.fixture
def downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A temporary cache; each (simulated) download is recorded."""
    monkeypatch.setenv("LUCID_INCEPTION_CACHE", str(tmp_path / "cache"))
    calls: list[str] = []

    def download(version: str, dest: Path) -> Path:
        calls.append(version)
        return _write_wheel(dest)

    monkeypatch.setattr(upstream, "_download", download)
    return calls


def test_a_whole_tree_is_fetched_once(downloads: list[str]) -> None:
    tree = upstream.fetch(VERSION)
    assert tree_problem(tree) is None
    assert upstream.fetch(VERSION) == tree
    assert downloads == [VERSION]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("truncate", "lucid/models/imgclf/inception.py does not match its sha256"),
        ("remove", "lucid/models/imgclf/inception.py, listed in lucid_dl-2.9.0.dist-info/RECORD, is missing"),
        ("empty", "no lucid/__init__.py"),
    ],
)
def test_a_damaged_tree_is_fetched_again(downloads: list[str], damage: str, problem: str) -> None:
    tree = upstream.fetch(VERSION)
    module = tree / "lucid" / "models" / "imgclf" / "inception.py"
    if damage == "truncate":
        module.write_bytes(b"")
    elif damage == "remove":
        module.unlink()
    else:  # an emptied folder, as the review found
        for path in sorted(tree.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
    assert problem in (tree_problem(tree) or "")
    with pytest.warns(UserWarning, match="is damaged .*: fetching lucid-dl 2.9.0 again"):
        assert upstream.fetch(VERSION) == tree
    assert downloads == [VERSION, VERSION]
    assert module.read_bytes() == FILES["lucid/models/imgclf/inception.py"]
    assert tree_problem(tree) is None
    assert [p.name for p in tree.parent.iterdir()] == [tree.name]  # nothing left aside


def test_an_sdist_tree_lists_its_sources(tmp_path: Path) -> None:
    # an sdist carries no digests: SOURCES.txt says which files must be there
    (tmp_path / "lucid").mkdir()
    (tmp_path / "lucid" / "__init__.py").write_text("")
    (tmp_path / "lucid_dl.egg-info").mkdir()
    (tmp_path / "lucid_dl.egg-info" / "SOURCES.txt").write_text("lucid/__init__.py\nlucid/port.py\n")
    assert tree_problem(tmp_path) == "lucid/port.py, listed in lucid_dl.egg-info/SOURCES.txt, is missing"
    (tmp_path / "lucid" / "port.py").write_text("")
    assert tree_problem(tmp_path) is None
