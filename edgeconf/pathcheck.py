"""Why a path that should be a file is not one, in words: missing, a folder, or a link that leads nowhere."""
from __future__ import annotations

import os
from typing import Union

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


__all__ = ["not_a_file"]
