"""Output files: checked before a long run, written whole or not at all.

``check_output_path`` fails (``ValueError``, one line) on a path that cannot be written:
a folder, a read-only parent folder or one that cannot be created (a missing one is
created). ``write_atomically`` writes through a temporary file in the destination folder,
flushes it to disk and ``os.replace``s it into place, so a failure, Ctrl-C, a SIGTERM (a
CI timeout, ``kill``) or a crash of the machine mid-write leaves no half-written file and
any old one untouched (a SIGKILL leaves the hidden temporary file behind, never a
half-written target). The file gets the mode an ordinary ``open`` would give it
(``mkstemp`` creates 0600), or, when it replaces a file, that file's mode. A symbolic link
is written through (the link stays, the file it names is replaced); a hard-linked file is
replaced by a new one, as any atomic write must.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While active (on the main thread, where Python runs signal handlers), SIGTERM raises
    ``SystemExit(143)`` like Ctrl-C raises ``KeyboardInterrupt``: the ``except`` below then
    removes the temporary file. By default SIGTERM ends the process without unwinding."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:  # a handler installed from C reads as None: the default is what it did
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _sync(path: Path) -> None:
    """Flush ``path`` (a file or a folder) to disk: without it a crash of the machine can
    leave the new name pointing at data that was never written."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a folder cannot be opened on every platform
        return
    try:
        os.fsync(fd)
    except OSError:  # a file system without fsync on folders
        pass
    finally:
        os.close(fd)


def _temporary_file(target: Path, folder: Path) -> tuple[int, str]:
    """A new hidden file next to ``target``, with its suffix. The name keeps at most 32
    characters of the target's: a name near the file system's limit (255 bytes) is still a
    valid target, and its temporary file must be too. An error names the target, not the
    temporary file."""
    suffix = target.suffix.lower()
    if len(suffix) > 16:  # not a format's suffix (``.lcd``, ``.json``): part of a long name
        suffix = ""
    try:
        return tempfile.mkstemp(dir=folder, prefix=f".{target.stem[:32]}.", suffix=suffix)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OSError(f"{target}: cannot write in folder {os.fspath(folder)}: {reason}") from None


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a temporary file next to ``path`` (same suffix, lower-cased:
    writers that pick their format from it see the right one, and ``lucid.save`` knows
    ``.lcd`` only), then move it into place."""
    target = Path(path)
    if target.is_symlink():  # write the file it names; the link stays
        target = Path(os.path.realpath(target))
    folder = _folder(target)
    if not folder.is_dir():
        raise FileNotFoundError(f"{os.fspath(path)}: folder {os.fspath(folder)} does not exist")
    if target.is_dir():
        raise IsADirectoryError(f"{os.fspath(path)}: is a folder, expected a file name")
    tmp: Path | None = None
    with _sigterm_unwinds():
        try:
            fd, name = _temporary_file(target, folder)
            os.close(fd)
            tmp = Path(name)
            write(tmp)
            os.chmod(tmp, _mode_for(target))
            _sync(tmp)
            os.replace(tmp, target)
        except BaseException:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise
        _sync(folder)  # the rename itself
