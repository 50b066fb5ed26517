"""Parse untrusted JSON with bounds: size, nesting depth, integer length, finite numbers only.

Python's ``json`` recurses once per nesting level, so a document nested a few thousand levels deep raises
``RecursionError`` (and how deep is too deep depends on the interpreter). The depth is therefore measured
first, by a linear scan that skips string literals, and a document deeper than the limit is refused with
a one-line error before ``json`` sees it.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Optional, Type

import numpy as np

from edgeconf.errors import DataError, EdgeconfError

#: Deepest nesting of arrays/objects accepted (a bundle manifest needs 4).
MAX_DEPTH = 32
#: Longest integer literal accepted (Python's int() of a huge literal is quadratic on 3.8-3.10).
MAX_INT_DIGITS = 40
#: Default size limit of a JSON file read with :func:`read_json`.
MAX_BYTES = 8 << 20

_ESCAPE = re.compile(r"\\.", re.S)
_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class _Refused(Exception):
    pass


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in ``text`` (brackets inside strings do not count).

    Linear time for any input: escape pairs go first, so every string is then ``"[^"]*"``; a quote left
    over opens an unterminated string, where ``json`` will stop, so the scan stops there too.
    """
    plain = _STRING.sub("", _ESCAPE.sub("", text))
    cut = plain.find('"')
    brackets = _NOT_BRACKET.sub("", plain if cut < 0 else plain[:cut])
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused("an integer with %d digits" % len(literal))
    return int(literal)


def _constant(name: str) -> float:
    raise _Refused("%s, which is not a JSON number" % name)


def depth_problem(text: str, what: str, max_depth: int = MAX_DEPTH) -> Optional[str]:
    """``"WHAT nests arrays/objects N levels deep; at most M are allowed"`` when ``text`` nests deeper than
    ``max_depth`` (too deep for ``json``, which recurses per level), else None. Callers may add what to give."""
    depth = nesting_depth(text)
    if depth > max_depth:
        return "%s nests arrays/objects %d levels deep; at most %d are allowed" % (what, depth, max_depth)
    return None


def loads(text: str, what: str, error: Type[EdgeconfError] = DataError, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``text`` (named ``what`` in messages); any problem raises ``error`` with a one-line message."""
    problem = depth_problem(text, what, max_depth)
    if problem:
        raise error(problem)
    try:
        return json.loads(text, parse_int=_int, parse_constant=_constant)
    except _Refused as exc:
        raise error("%s holds %s; refusing it" % (what, exc)) from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise error("%s is not valid JSON: %s" % (what, exc)) from None


def read_json(path: str, what: str = "", error: Type[EdgeconfError] = DataError, max_bytes: int = MAX_BYTES,
              max_depth: int = MAX_DEPTH) -> Any:
    """Read a UTF-8 JSON file of at most ``max_bytes`` bytes (``what`` names it in messages, default its path)."""
    what = what or path
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise error("cannot read %s: %s" % (what, (os.strerror(exc.errno) if exc.errno else str(exc)).lower())) from None
    if len(raw) > max_bytes:
        raise error("%s is larger than %d bytes; refusing to parse it" % (what, max_bytes))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error("%s is not UTF-8 text (byte %d)" % (what, exc.start)) from None
    return loads(text, what, error, max_depth)


__all__ = ["MAX_DEPTH", "MAX_BYTES", "MAX_INT_DIGITS", "nesting_depth", "depth_problem", "loads", "read_json"]
