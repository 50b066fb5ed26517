"""Why a path that should be a file is not one, in words: missing, a folder, or a link that leads nowhere; and why
an output cannot be written where it is asked for, checked before a run so a bad path fails at once."""
from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def not_a_file(path: PathLike) -> str:
    """What is wrong with ``path`` when ``os.path.isfile`` says no: ``"does not exist"``, ``"is a folder, not a
    file"`` or ``"is a link to nothing (a missing target or a loop of links)"``."""
    p = os.fspath(path)
    if os.path.isdir(p):
        return "is a folder, not a file"
    if os.path.islink(p):
        return "is a link to nothing (a missing target or a loop of links)"
    if os.path.exists(p):
        return "is not a regular file"
    return "does not exist"


def _nearest(path: str) -> str:
    """``path`` or the nearest of its parents that exists (a link counts, even a broken one)."""
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _not_a_folder(path: str) -> str:
    if os.path.isfile(path):
        return "%s is a file, not a folder" % path
    if os.path.islink(path):
        return "%s %s, not a folder" % (path, not_a_file(path))
    return "%s is not a folder" % path


def missing_folder(path: PathLike) -> Optional[str]:
    """Why the folder an output ``path`` goes in cannot take it, in words, or None when it is a folder: ``"the
    folder F does not exist; create it first"``, or ``"F is a file, not a folder; choose a path in a folder"``
    when a file stands where a folder of the path should be."""
    folder = os.path.dirname(os.path.abspath(os.path.expanduser(os.fspath(path))))
    if os.path.isdir(folder):
        return None
    probe = _nearest(folder)
    if not os.path.isdir(probe):
        return "%s; choose a path in a folder" % _not_a_folder(probe)
    return "the folder %s does not exist; create it first" % folder


def refuse_missing_folder(path: PathLike, doing: str) -> None:
    """Raise :class:`~edgeconf.errors.OutputError` ``"DOING: WHY"`` when the folder an output ``path`` goes in is
    missing or a file (:func:`missing_folder`); ``doing`` names the write, e.g. ``"cannot record to r.avi"``."""
    why = missing_folder(path)
    if why is not None:
        from edgeconf.errors import OutputError

        raise OutputError("%s: %s" % (doing, why))


def check_output_file(path: PathLike, option: str) -> None:
    """Refuse, before a run (:class:`~edgeconf.errors.OutputError`, one line), an output file ``path`` given as
    ``option`` that cannot be written: its folder missing or a file, the path a folder, no write permission."""
    from edgeconf.errors import OutputError

    p = os.path.expanduser(os.fspath(path))
    why = missing_folder(p)
    if why is None and os.path.isdir(p):
        why = "it is a folder; give a file name"
    device = os.path.exists(p) and not os.path.isfile(p)  # written in place; a file is renamed over
    where, need = (p, os.W_OK) if device else (os.path.dirname(os.path.abspath(p)), os.W_OK | os.X_OK)
    if why is None and not os.access(where, need):
        why = "permission denied; choose a folder you can write to"
    if why is not None:
        raise OutputError("cannot write %s %s: %s" % (option, os.fspath(path), why))


def check_output_folder(path: PathLike, option: str) -> None:
    """Refuse, before a run, an output folder ``path`` (made with its missing parents) that cannot be made or
    written: a file in its place or on its way, or a folder without write permission."""
    from edgeconf.errors import OutputError

    probe = _nearest(os.path.abspath(os.path.expanduser(os.fspath(path))))
    why = None
    if not os.path.isdir(probe):
        why = "%s; choose another path" % _not_a_folder(probe)
    elif not os.access(probe, os.W_OK | os.X_OK):
        why = "permission denied on %s; choose a folder you can write to" % probe
    if why is not None:
        raise OutputError("cannot write %s %s: %s" % (option, os.fspath(path), why))


__all__ = ["not_a_file", "missing_folder", "refuse_missing_folder", "check_output_file", "check_output_folder"]
