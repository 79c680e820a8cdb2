"""Output files: checked before a long run, written whole or not at all.

``check_output_path`` fails (``ValueError``, one line) on a path that cannot be written:
a folder, a read-only parent folder or one that cannot be created (a missing one is
created). ``write_atomically`` writes through a
temporary file in the destination folder and ``os.replace``s it into place, so a failure
or a kill mid-write leaves no half-written file (and any old one untouched). The file
gets the mode an ordinary ``open`` would give it (``mkstemp`` creates 0600), or, when it
replaces a file, that file's mode.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["check_output_path", "write_atomically"]


def _folder(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def check_output_path(path: str | os.PathLike, what: str) -> None:
    """Raise ``ValueError`` unless ``path`` can be written: not a folder, in a writable
    folder, created (with its parents) when missing."""
    target = Path(path)
    folder = _folder(target)
    if target.is_dir():
        raise ValueError(f"{what} {os.fspath(path)}: is a folder, expected a file name")
    if not folder.is_dir():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise ValueError(
                f"{what} {os.fspath(path)}: cannot create folder {os.fspath(folder)}: {reason}"
            ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {os.fspath(path)}: folder {os.fspath(folder)} is not writable")


def _mode_for(target: Path) -> int:
    """The replaced file's mode, else what ``open`` gives a new file: 0666 less the umask."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask: on Linux read from /proc (``os.umask`` can only read it by
    setting it, a race with other threads creating files), elsewhere set and put back."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(umask)
    return umask


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a temporary file next to ``path`` (same suffix: writers that
    pick their format from it see the right one), then move it into place."""
    target = Path(path)
    folder = _folder(target)
    if not folder.is_dir():
        raise FileNotFoundError(f"{os.fspath(path)}: folder {os.fspath(folder)} does not exist")
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=target.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
