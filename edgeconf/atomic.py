"""Write output files atomically: a temporary file in the same folder, then a rename.

A run that fails half-way (bad input, full disk, Ctrl-C) leaves an earlier file at the same path untouched
and no partial file behind. Targets that are not regular files (``/dev/stdout``, ``/dev/full``, a FIFO) are
written in place, since renaming over them would replace the device. Every OS error becomes an
:class:`~edgeconf.errors.OutputError` with a one-line message that names the path.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tempfile
import time
from typing import IO, Iterator, List, Optional, Tuple, Union

from edgeconf.errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]


class Terminated(BaseException):
    """SIGTERM arrived: raised from the CLI's signal handler so that every ``with`` block unwinds (a half-written
    output's temporary file is removed, an earlier file stays as it was), then the command exits 143."""


#: Set by the CLI's SIGTERM handler, which also raises :class:`Terminated`. Python drops an exception raised while
#: it runs a callback (a weakref's, a ``__del__``: "Exception ignored in ..."), so a signal that lands there would
#: be lost; with the flag set no output is committed any more (:func:`check_termination`), and the CLI exits 143
#: when the command returns.
_TERMINATING = [False]


def request_termination(requested: bool = True) -> None:
    """Record (or, with False, clear) that the process was asked to terminate."""
    _TERMINATING[0] = requested


def check_termination() -> None:
    """Raise :class:`Terminated` when the process was asked to terminate: called before an output is committed
    and between inputs of long loops."""
    if _TERMINATING[0]:
        raise Terminated()


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
    target = os.path.expanduser(os.fspath(path))  # '--out=~/x' reaches us unexpanded: the shell leaves it
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
        check_termination()  # a SIGTERM whose exception was dropped: the earlier file stays
        os.replace(tmp, target)
    except OSError as exc:
        _remove(tmp)
        raise OutputError(describe_os_error(target, exc)) from None
    except BaseException:
        _remove(tmp)
        raise


def same_path(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name the same file or folder (links, ``..`` and relative paths resolved): an output
    must never be written over one of the run's own inputs."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return os.path.realpath(os.fspath(a)) == os.path.realpath(os.fspath(b))


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` lies in ``folder`` (both already absolute or real paths), at any depth."""
    return os.path.commonpath([path, folder]) == folder and path != folder


def bundle_folder_of(path: PathLike) -> Optional[str]:
    """The bundle folder (one that holds ``edgeconf.json``) ``path`` is, or lies in at any depth; else None."""
    folder = os.path.realpath(os.fspath(path))
    while True:
        if os.path.isdir(folder) and os.path.lexists(os.path.join(folder, "edgeconf.json")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def refuse_overwriting_inputs(out: Optional[PathLike], option: str, inputs: "List[Optional[PathLike]]") -> None:
    """Raise a :class:`~edgeconf.errors.ConfigError` when ``out`` (the value of ``option``) would overwrite one
    of ``inputs``: ``out`` names an input, an existing file of the bundle an input is or lies in, or an existing
    data file (an image or an IDX file, what the data readers take) inside an input folder. Links and ``..`` are
    resolved; inputs that are not paths on disk are ignored. A new file beside an input overwrites nothing."""
    from edgeconf.errors import ConfigError

    if not out:
        return
    out_s = os.path.expanduser(os.fspath(out))
    if not (os.path.lexists(out_s) or os.path.exists(os.path.realpath(out_s))):
        where: List[str] = []  # a new file overwrites nothing
    else:  # the file itself, and (a link) the link in its real folder
        parent = os.path.realpath(os.path.dirname(os.path.abspath(out_s)))
        where = [os.path.realpath(out_s), os.path.join(parent, os.path.basename(out_s))]
    for src in inputs:
        if not src or not os.path.exists(os.fspath(src)):
            continue
        if same_path(out_s, src):
            raise ConfigError("%s %s is one of this run's inputs; writing there would destroy it: choose another "
                              "path" % (option, os.fspath(out)))
        bundle = bundle_folder_of(src)
        if bundle is not None and any(_inside(p, bundle) for p in where):
            raise ConfigError("%s %s is a file of bundle %s, an input of this run; writing there would destroy it: "
                              "choose another path" % (option, os.fspath(out), _shown(bundle, src)))
        folder = os.path.realpath(os.fspath(src))
        if os.path.isdir(folder) and any(_inside(p, folder) and _data_file(p) for p in where):
            raise ConfigError("%s %s is a data file in folder %s, an input of this run; writing there would destroy it: "
                              "choose another path" % (option, os.fspath(out), os.fspath(src)))


def _data_file(path: str) -> bool:
    """Whether a data folder's reader reads ``path``: an image, or an IDX file."""
    from edgeconf.datasets.images import is_image_path

    return is_image_path(path) or path.lower().endswith(("-ubyte", "-ubyte.gz"))


def _shown(bundle: str, src: PathLike) -> str:
    """The bundle as the user named it where ``src`` is the bundle itself, else its real path."""
    return os.fspath(src) if os.path.realpath(os.fspath(src)) == bundle else bundle


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


class FileSet:
    """Several files replaced together, as one change: all of them, or (when anything fails) none.

    ``with FileSet() as fs: fs.write(a, data); fs.write(b, text); fs.commit()``. :meth:`write` puts each new
    file complete on disk beside its target (a temporary file, fsynced) and returns its sha256 and size;
    :meth:`commit` then renames them over their targets in the order written, keeping the old files aside
    (hard links, or copies where the file system has none). When a rename fails, the targets already replaced
    get their old files back and the error becomes an :class:`~edgeconf.errors.OutputError`. A block that
    raises after :meth:`commit` (a check of the result that fails) restores the old files too; a block that
    ends normally drops them. Write a manifest that lists the others last, so a reader never sees it point at a
    file that is not there yet. (A process killed in the middle of :meth:`commit` can still leave a mix: the
    renames are atomic one by one, not together.)
    """

    def __init__(self) -> None:
        self._staged: List[Tuple[str, str]] = []  # (target, temporary file), in commit order
        self._saved: List[Tuple[str, Optional[str]]] = []  # (target, its old file kept aside, or None: was absent)
        self.committed = False

    def write(self, path: PathLike, data: Union[bytes, str]) -> Tuple[str, int]:
        """Put ``data`` (bytes, or text as UTF-8) on disk beside ``path``; (sha256 hex, bytes) of it."""
        target = os.fspath(path)
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if os.path.isdir(target):
            raise OutputError("cannot write %s: it is a folder; give a file name" % target)
        folder = os.path.dirname(os.path.abspath(target))
        try:
            fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(target), suffix=".tmp", dir=folder)
        except OSError as exc:
            raise OutputError(describe_os_error(target, exc)) from None
        self._staged.append((target, tmp))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            keep_mode(target, tmp)
        except OSError as exc:
            raise OutputError(describe_os_error(target, exc)) from None
        return hashlib.sha256(raw).hexdigest(), len(raw)

    def commit(self) -> None:
        """Replace every target with its new file, in the order written; all or none (see the class)."""
        if self.committed:
            raise RuntimeError("FileSet.commit called twice")
        check_termination()
        target = ""
        try:
            for target, tmp in self._staged:
                saved = _set_aside(target) if os.path.lexists(target) else None
                try:
                    os.replace(tmp, target)
                except BaseException:
                    if saved is not None:  # this target was not replaced: its old file is still in place
                        _remove(saved)
                    raise
                self._saved.append((target, saved))
        except OSError as exc:
            self._restore()
            raise OutputError(describe_os_error(target, exc)) from None
        except BaseException:
            self._restore()
            raise
        self.committed = True
        self._staged = []

    def _restore(self) -> None:
        """Put every target's old file back (or remove a target that did not exist), newest first."""
        for target, saved in reversed(self._saved):
            try:
                if saved is not None:
                    os.replace(saved, target)
                elif os.path.lexists(target):
                    os.unlink(target)
            except OSError:
                pass
        self._saved = []
        self._discard()

    def _discard(self) -> None:
        for _, tmp in self._staged:
            _remove(tmp)
        self._staged = []

    def __enter__(self) -> "FileSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._restore()
            return
        self._discard()
        for _, saved in self._saved:
            if saved is not None:
                _remove(saved)
        self._saved = []


def new_folder_beside(target: PathLike, suffix: str = ".tmp") -> str:
    """A new, empty hidden folder beside ``target`` (same file system, so it can be renamed into place), with
    the usual permissions (``mkdtemp`` alone makes it 0700, which a server running as another user cannot
    read). OS errors become an :class:`~edgeconf.errors.OutputError` that names ``target``."""
    out = os.path.abspath(os.fspath(target))
    try:
        tmp = tempfile.mkdtemp(prefix=".%s." % os.path.basename(out), suffix=suffix, dir=os.path.dirname(out))
    except OSError as exc:
        raise OutputError(describe_os_error(out, exc)) from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def swap_folder(new: str, target: str) -> None:
    """Put the complete folder ``new`` (beside ``target``, on its file system) where ``target`` is: an existing
    ``target`` is renamed aside first and removed after, so a reader sees the old folder or the new one."""
    if not os.path.isdir(target):
        os.rename(new, target)
        return
    old = tempfile.mkdtemp(prefix=".%s." % os.path.basename(os.path.abspath(target)), suffix=".old",
                           dir=os.path.dirname(os.path.abspath(target)))
    os.rmdir(old)
    os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def folder_beside(out: PathLike) -> Iterator[str]:
    """``with folder_beside(out) as tmp:`` fill the new hidden folder ``tmp`` (:func:`new_folder_beside`), then rename
    it into place inside the block. When the block fails, ``tmp`` is removed and the error names ``out``, not the
    hidden folder: an OS error becomes an :class:`~edgeconf.errors.OutputError`."""
    target = os.fspath(out)
    tmp = new_folder_beside(target)
    try:
        yield tmp
    except OutputError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(str(exc).replace(tmp, target)) from None
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(describe_os_error(target, exc)) from None
    except shutil.Error as exc:  # copytree gathers its files' errors: report the first one
        shutil.rmtree(tmp, ignore_errors=True)
        first = exc.args[0][0] if exc.args and exc.args[0] else None
        raise OutputError("cannot write %s: %s" % (target, str(first[2] if first else exc).lower())) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _set_aside(path: str) -> str:
    """A copy of ``path``'s current file beside it (a hard link where the file system allows): its old content
    stays there whatever replaces ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, aside = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".old", dir=folder)
    os.close(fd)
    os.unlink(aside)
    try:
        os.link(path, aside)
    except OSError:
        try:
            shutil.copy2(path, aside)
        except BaseException:
            _remove(aside)
            raise
    return aside


@contextlib.contextmanager
def folder_lock(folder: PathLike, what: str, wait_s: float = 60.0) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (``flock`` on the folder itself: no lock file) for a
    read-change-write of the files in it, so two commands that change the same bundle take turns instead of
    losing one's change. Waits up to ``wait_s`` seconds for another holder, then raises an
    :class:`~edgeconf.errors.OutputError`. Where ``flock`` does not exist (not Linux), no lock is taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = os.fspath(folder)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # the folder itself is missing (not a file it would create)
            raise OutputError("cannot open %s: the folder %s does not exist" % (what, path)) from None
        raise OutputError(describe_os_error(path, exc, "open")) from None
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutputError(describe_os_error(path, exc, "lock")) from None
                if time.monotonic() >= deadline:
                    raise OutputError("another process has been changing %s for over %.0f s; wait for it to finish, "
                                      "then run this again" % (what, wait_s)) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


__all__ = ["atomic_write", "write_text", "write_bytes", "describe_os_error", "FileSet", "folder_lock", "new_folder_beside", "folder_beside", "swap_folder", "same_path",
           "refuse_overwriting_inputs", "bundle_folder_of"]
