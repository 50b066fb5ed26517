"""Write output files atomically: a temporary file in the same folder, then a rename.

A run that fails half-way (bad input, full disk, Ctrl-C) leaves an earlier file at the same path untouched
and no partial file behind. Targets that are not regular files (``/dev/stdout``, ``/dev/full``, a FIFO) are
written in place, since renaming over them would replace the device. Every OS error becomes an
:class:`~edgeconf.errors.OutputError` with a one-line message that names the path.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from typing import IO, Iterator, Union

from edgeconf.errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]


def describe_os_error(path: PathLike, exc: OSError, what: str = "write") -> str:
    """``cannot write PATH: no space left on device`` — the reason in words, and what to do where it helps."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.ENOENT and os.path.isdir(os.path.dirname(os.path.abspath(os.fspath(path)))):
        return "cannot %s %s: that folder does not accept new files; choose another location" % (what, os.fspath(path))
    hint = {errno.EACCES: "; choose a folder you can write to",
            errno.EPERM: "; choose a folder you can write to",
            errno.EROFS: "; choose a writable location",
            errno.ENOSPC: "; free some space or choose another location",
            errno.ENOENT: "; create the folder first",
            errno.EISDIR: "; give a file name, not a folder"}.get(exc.errno or 0, "")
    return "cannot %s %s: %s%s" % (what, os.fspath(path), reason.lower(), hint)


def _in_place(path: str) -> bool:
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO]:
    """``with atomic_write(path) as f: f.write(...)``: the file appears complete at ``path`` or not at all.

    ``mode`` is ``"w"`` (text) or ``"wb"``. The temporary file lives beside ``path`` so the final rename is
    atomic on the same file system; it is removed when the block raises.
    """
    if mode not in ("w", "wb"):
        raise ValueError("atomic_write mode must be 'w' or 'wb', got %r" % mode)
    target = os.fspath(path)
    kwargs = {} if "b" in mode else {"encoding": encoding, "newline": ""}
    if os.path.isdir(target):
        raise OutputError("cannot write %s: it is a folder; give a file name" % target)
    if _in_place(target):
        try:
            with open(target, mode, **kwargs) as f:  # type: ignore[call-overload]
                yield f
        except OSError as exc:
            raise OutputError(describe_os_error(target, exc)) from None
        return
    folder = os.path.dirname(os.path.abspath(target))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(target), suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(describe_os_error(target, exc)) from None
    try:
        with os.fdopen(fd, mode, **kwargs) as f:  # type: ignore[call-overload]
            yield f
            f.flush()
            os.fsync(f.fileno())
        keep_mode(target, tmp)
        os.replace(tmp, target)
    except OSError as exc:
        _remove(tmp)
        raise OutputError(describe_os_error(target, exc)) from None
    except BaseException:
        _remove(tmp)
        raise


def keep_mode(target: str, tmp: str) -> None:
    """Give the new file the old file's permissions, or the usual ones (mkstemp makes it 0600)."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


__all__ = ["atomic_write", "write_text", "write_bytes", "describe_os_error"]
