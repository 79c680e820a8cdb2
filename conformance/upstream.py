"""Upstream lucid-dl sources: fetch into a cache, copy, patch, and run Python against a copy.

A cached tree is the folder holding ``lucid/`` (``patch -p1`` runs from there). It appears
only complete: it is unpacked (and, for an sdist, its C++ extensions built) in a temporary
folder beside the cache and renamed into place. Every cache hit checks it again
(``cached_tree``), and a damaged tree is fetched again.

lucid-dl 2.16.0 ships only an sdist whose ``lucid._backend.core`` imports a pybind11
extension at ``import lucid``, so the tree is useless without it. The extensions are built
the way upstream declares (``pip wheel`` of the sdist: PEP 517, with upstream's
``[build-system] requires``, sources from ``.extensions/cpp_extensions.json``), and the
extension modules of that wheel are put into the tree. The patches never touch C++ sources,
so the built extensions stay valid for every patched copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .cached_tree import tree_problem

__all__ = [
    "SUPPORTED_VERSIONS",
    "PatchError",
    "RunResult",
    "UpstreamUnavailable",
    "apply",
    "cache_root",
    "copy_tree",
    "extension_files",
    "fetch",
    "lucid_origin",
    "run_python",
]

SUPPORTED_VERSIONS: tuple[str, ...] = ("2.9.0", "2.16.0")

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
# pip's messages when the index cannot be reached at all (as opposed to a refused request).
_NETWORK_ERRORS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Failed to establish a new connection",
    "ConnectTimeoutError",
    "Could not fetch URL",
    "ProxyError",
)
_EXT_CONFIG = Path(".extensions") / "cpp_extensions.json"


class UpstreamUnavailable(RuntimeError):
    """pip could not reach the package index, so upstream sources cannot be fetched."""


class PatchError(RuntimeError):
    """A patch does not apply; the message holds patch's own output."""


@dataclass(frozen=True)
class RunResult:
    """Exit status and output of one subprocess; ``returncode`` is 124 on a timeout."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def cache_root() -> Path:
    """``$LUCID_INCEPTION_CACHE``, else ``~/.cache/lucid-inception/upstream``."""
    env = os.environ.get("LUCID_INCEPTION_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lucid-inception" / "upstream"


def _check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ValueError(f"version must look like '2.9.0', got {version!r}")
    return version


def _pip(args: Sequence[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    if proc.returncode != 0:
        out = proc.stdout + proc.stderr
        if any(marker in out for marker in _NETWORK_ERRORS):
            raise UpstreamUnavailable(f"{what}: pip cannot reach the package index:\n{out[-2000:]}")
        raise RuntimeError(f"{what}: pip exited {proc.returncode}:\n{out[-4000:]}")


def _download(version: str, dest: Path) -> Path:
    _pip(["download", "--no-deps", f"lucid-dl=={version}", "-d", str(dest)], f"lucid-dl {version}")
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise RuntimeError(f"expected one archive for lucid-dl {version}, pip left {files}")
    return files[0]


def _unpack(archive: Path, dest: Path) -> Path:
    """Unpack a wheel or sdist into ``dest``; return the folder holding ``lucid/``."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
        top = dest
    elif archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
        tops = [p for p in dest.iterdir() if p.is_dir()]
        if len(tops) != 1:
            raise RuntimeError(f"{archive.name} should hold one top folder, holds {[p.name for p in tops]}")
        top = tops[0]
    else:
        raise RuntimeError(f"unknown archive kind {archive.name}: expected a .whl or a .tar.gz")
    if not (top / "lucid" / "__init__.py").is_file():
        raise RuntimeError(f"{archive.name} holds no lucid/__init__.py")
    return top


def extension_files(tree: Path) -> list[Path]:
    """Paths (relative to ``tree``) of the extension modules this interpreter needs."""
    config = tree / _EXT_CONFIG
    if not config.is_file():
        return []
    names = [ext["name"] for ext in json.loads(config.read_text())["extensions"]]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    return [Path(*name.split(".")).with_name(name.split(".")[-1] + suffix) for name in names]


def _missing_extensions(tree: Path) -> list[Path]:
    return [rel for rel in extension_files(tree) if not (tree / rel).is_file()]


def _build_extensions(tree: Path, archive: Path, work: Path) -> None:
    """Build upstream's wheel from its sdist and put its extension modules into ``tree``.

    Each module is written beside its target and renamed over it, so a tree never holds a
    half-written extension (an interrupted build just leaves it missing).
    """
    wheels = work / "wheel"
    _pip(["wheel", "--no-deps", "-w", str(wheels), str(archive)], f"building {archive.name}")
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        members = set(zf.namelist())
        for rel in _missing_extensions(tree):
            if rel.as_posix() not in members:
                raise RuntimeError(f"{wheel.name} holds no {rel.as_posix()}; it has {sorted(members)}")
            target = tree / rel
            partial = target.with_name(target.name + ".partial")
            partial.write_bytes(zf.read(rel.as_posix()))
            partial.chmod(0o755)
            os.replace(partial, target)


def _discard(tree: Path) -> None:
    """Move a damaged tree out of the way (atomically, so no reader sees it half removed),
    then remove it."""
    aside = tree.with_name(f".{tree.name}.damaged-{os.getpid()}")
    os.rename(tree, aside)
    shutil.rmtree(aside, ignore_errors=True)


def fetch(version: str) -> Path:
    """The cached source tree of lucid-dl ``version`` (the folder holding ``lucid/``).

    A cached tree is checked first (``cached_tree.tree_problem``); a damaged one is
    discarded, with a warning, and fetched again."""
    _check_version(version)
    root = cache_root()
    tree = root / f"lucid-dl-{version}"
    if tree.is_dir():
        problem = tree_problem(tree)
        if problem is None and not _missing_extensions(tree):
            return tree
        if problem is not None:
            warnings.warn(
                f"cached {tree} is damaged ({problem}): fetching lucid-dl {version} again", stacklevel=2
            )
            _discard(tree)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".lucid-dl-{version}-", dir=root) as tmp:
        work = Path(tmp)
        archive = _download(version, work / "download")
        if tree.is_dir():  # cached by an interpreter with another extension suffix
            _build_extensions(tree, archive, work)
            return tree
        top = _unpack(archive, work / "unpacked")
        problem = tree_problem(top)
        if problem is not None:
            raise RuntimeError(f"{archive.name} is not whole: {problem}")
        if _missing_extensions(top):
            _build_extensions(top, archive, work)
        try:
            os.rename(top, tree)
        except OSError:
            if not tree.is_dir():  # not a concurrent fetch that won the race
                raise
    return tree


def copy_tree(version: str, dest: Path | None = None) -> Path:
    """A disposable copy of the cached tree: ``dest`` (which must not exist), else a new
    temporary folder that the caller removes."""
    source = fetch(version)
    if dest is None:
        dest = Path(tempfile.mkdtemp(prefix=f"lucid-dl-{version}-"))
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    else:
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def apply(patch_path: Path, root: Path, *, dry_run: bool = False) -> str:
    """Apply ``patch_path`` to ``root`` with ``patch -p1``; return patch's output.

    A dry run comes first, so a patch that does not apply leaves ``root`` untouched (with
    ``dry_run`` nothing else happens). No fuzz: a hunk applies only where all of its context
    matches (offsets are allowed).
    """
    if shutil.which("patch") is None:
        raise RuntimeError("GNU patch is required (apt-get install patch)")
    patch_path = Path(patch_path)
    if not patch_path.is_file():
        raise ValueError(f"no patch file at {patch_path}")
    base = ["patch", "-p1", "--forward", "--batch", "--fuzz=0", "--no-backup-if-mismatch"]
    base += ["-d", str(root), "-i", str(patch_path.resolve())]
    for extra in (["--dry-run"],) if dry_run else (["--dry-run"], []):
        proc = subprocess.run(base + extra, capture_output=True, text=True)
        if proc.returncode != 0:
            stage = "dry run" if extra else "apply"
            raise PatchError(
                f"{patch_path.name} does not apply to {root} ({stage}):\n{proc.stdout}{proc.stderr}"
            )
    return proc.stdout


def run_python(
    root: Path,
    code_or_script: str | Path | Sequence[str],
    timeout: float,
    *,
    cwd: Path | None = None,
) -> RunResult:
    """Run this interpreter with ``PYTHONPATH=root``, so ``import lucid`` gets that tree.

    ``code_or_script``: a ``Path`` is run as a script, a ``str`` as ``-c`` code, a sequence
    as the interpreter's arguments (e.g. ``["-m", "pkg", ...]``).
    """
    if isinstance(code_or_script, Path):
        args = [str(code_or_script)]
    elif isinstance(code_or_script, str):
        args = ["-c", code_or_script]
    elif isinstance(code_or_script, Sequence):
        args = list(code_or_script)
    else:
        raise TypeError(
            f"code_or_script must be a Path, str or sequence, got {type(code_or_script).__name__}"
        )
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    try:
        proc = subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd if cwd is not None else root,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return RunResult(124, out, err + f"\ntimed out after {timeout} s", timed_out=True)
    return RunResult(proc.returncode, proc.stdout, proc.stderr)


def lucid_origin(root: Path) -> Path:
    """Where ``import lucid`` resolves with ``PYTHONPATH=root``, found without importing it
    (an unpatched 2.16.0 tree does not import on Python 3.12)."""
    res = run_python(root, "import importlib.util as u; print(u.find_spec('lucid').origin)", 60)
    if res.returncode != 0:
        raise RuntimeError(f"cannot locate lucid under {root}:\n{res.output}")
    return Path(res.stdout.strip())
