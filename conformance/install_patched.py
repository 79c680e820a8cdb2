"""Install upstream lucid-dl with all of this kit's patches into the running environment.

``python -m conformance.install_patched 2.16.0 --target DIR`` fetches the sdist (cached),
copies it to ``DIR`` (new, empty, or an earlier run's), applies every patch of that version
in catalogue order (LUC-008 makes it import on Python 3.12), and runs ``pip install DIR``
with this interpreter: pip builds the wheel the way upstream declares it, pybind11
extensions included, and installs it over whatever lucid-dl the environment had. Finally it
imports the installed package from a neutral folder and builds a patched model.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import upstream
from .findings import FINDINGS
from .patches import write_version_patches

__all__ = ["install", "main"]

_MARKER = ".lucid-inception-patched"  # marks a --target this module wrote and may replace

_VERIFY = """\
import importlib.metadata, sys, warnings
warnings.filterwarnings(
    "ignore", message="(overflow|invalid value) encountered in cast", category=RuntimeWarning
)
import lucid, lucid.models
model = lucid.models.inception_resnet_v2(num_classes=10, scale=(0.1, 0.2, 0.3))
print(lucid.__file__)
print(importlib.metadata.version("lucid-dl"), type(model).__name__, model.dropout.p)
"""


# The supported releases PyPI holds as an sdist: 2.9.0 is a wheel only, with no source tree
# to install (offered, it was refused only after its download).
SDIST_VERSIONS = tuple(version for version in upstream.SUPPORTED_VERSIONS if version != "2.9.0")


def _prepare(version: str, target: Path) -> list[str]:
    """Copy the pristine sdist tree to ``target`` and apply the version's patches."""
    source = upstream.fetch(version)
    if not (source / "setup.py").is_file() and not (source / "pyproject.toml").is_file():
        raise ValueError(
            f"lucid-dl {version} came as a wheel, not an sdist, so there is no source tree to "
            "install; install_patched handles sdist releases (2.16.0)"
        )
    if (target / _MARKER).is_file():  # an earlier run's tree: start again from pristine
        shutil.rmtree(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"--target must be a new or empty folder (or an earlier --target), {target} is not")
    existed = target.is_dir()
    # The marker comes first, so a run that dies half way (a patch that does not apply, a
    # kill) leaves a tree the next run recognises as its own and replaces.
    target.mkdir(parents=True, exist_ok=True)
    (target / _MARKER).write_text(f"lucid-dl {version}, being patched\n", encoding="utf-8")
    try:
        shutil.copytree(source, target, dirs_exist_ok=True)
        for rel in upstream.extension_files(target):  # the cache's own build: pip builds anew
            (target / rel).unlink(missing_ok=True)
        applied = []
        with tempfile.TemporaryDirectory(prefix="lucid-patches-") as tmp:
            for finding_id, patch in write_version_patches(FINDINGS, version, source, Path(tmp)).items():
                upstream.apply(patch, target)
                applied.append(finding_id)
    except BaseException:
        # no half-patched tree is left to install by hand: back to the folder as it was
        shutil.rmtree(target, ignore_errors=True)
        if existed:
            target.mkdir()
        raise
    (target / _MARKER).write_text(f"lucid-dl {version} with {', '.join(applied)}\n", encoding="utf-8")
    return applied


def install(version: str, target: Path, *, deps: bool = True) -> str:
    """Prepare the patched tree in ``target``, ``pip install`` it, verify; return a summary."""
    target = Path(target).resolve()
    applied = _prepare(version, target)
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", str(target)]
    if not deps:
        cmd.insert(-1, "--no-deps")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install of {target} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    with tempfile.TemporaryDirectory() as neutral:  # not the repo, not the tree: site-packages
        check = subprocess.run([sys.executable, "-c", _VERIFY], capture_output=True, text=True, cwd=neutral)
    lines = check.stdout.splitlines()
    found = lines[1].split() if len(lines) > 1 else []
    if check.returncode != 0 or found[:1] != [version] or Path(lines[0]).is_relative_to(target):
        raise RuntimeError(
            f"patched lucid-dl {version} installed, but importing it failed or found another copy:\n"
            f"{check.stdout}{check.stderr[-3000:]}"
        )
    return f"installed patched lucid-dl {version} ({', '.join(applied)}) from {target}: {'; '.join(lines)}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.install_patched", description=__doc__)
    parser.add_argument("version", choices=SDIST_VERSIONS, help="lucid-dl release (an sdist on PyPI)")
    parser.add_argument(
        "--target",
        required=True,
        type=Path,
        help="folder for the patched tree: new, empty, or an earlier run's (which it replaces)",
    )
    parser.add_argument("--no-deps", action="store_true", help="pass --no-deps to pip (numpy, mlx present)")
    args = parser.parse_args(argv)
    try:
        print(install(args.version, args.target, deps=not args.no_deps))
    except (ValueError, RuntimeError) as exc:  # upstream.PatchError is a RuntimeError
        print(f"install_patched: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
