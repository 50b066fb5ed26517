"""Typed declarations of JSON fields on dataclasses, and the strict reader/writer they give.

A field is declared once, on the dataclass that holds it::

    @dataclass
    class MemoSettings:
        enabled: bool = entry(Bool(), True)
        capacity: int = entry(Int(1, 1 << 20), 4096)

``from_json(MemoSettings, value, "memo")`` then refuses anything but an object whose keys are declared and
whose values pass their check (``true`` for a bool, never ``"false"``; an int, never ``1.9``; a finite
float in range), with a one-line message naming the key. ``to_json`` writes the same keys back. Adding a
field to a format is one ``entry(...)`` line.
"""
from __future__ import annotations

import abc
import copy
import math
import re
from dataclasses import MISSING, Field, field, fields
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Type, TypeVar

from edgeconf.errors import EdgeconfError

T = TypeVar("T")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Default of a field that the JSON must hold.
REQUIRED: Any = _Required()


class Invalid(Exception):
    """A value failed its check; ``from_json`` turns it into the caller's error type."""


def show(value: Any) -> str:
    """A short description of a value for messages: the value itself when small, else its kind."""
    if value is None or isinstance(value, (bool, int, float)):
        text = repr(value) if not isinstance(value, bool) else ("true" if value else "false")
        return text if len(text) <= 40 else "a %d-digit number" % len(text)
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else "a %d-character string" % len(value)
    if isinstance(value, (list, tuple)):
        return "a list of %d" % len(value)
    if isinstance(value, dict):
        return "an object"
    return "a %s" % type(value).__name__


def _fail(where: str, what: str, value: Any) -> Invalid:
    return Invalid("%s must be %s, got %s" % (where, what, show(value)))


class Check(abc.ABC):
    """Checks one JSON value and returns what to keep (``load``) or what to write (``dump``)."""

    what = "a value"

    @abc.abstractmethod
    def load(self, value: Any, where: str) -> Any:
        """The value to keep; raises :class:`Invalid` naming ``where`` when ``value`` does not pass."""

    def dump(self, value: Any) -> Any:
        return value


class Bool(Check):
    what = "true or false"

    def load(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise _fail(where, self.what, value)
        return value


class Int(Check):
    """An integer (never a bool or a float) in ``[lo, hi]``."""

    def __init__(self, lo: Optional[int] = None, hi: Optional[int] = None) -> None:
        self.lo, self.hi = lo, hi
        self.what = "an integer" + _range_text(lo, hi)

    def load(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(where, self.what, value)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise _fail(where, self.what, value)
        return int(value)


class Float(Check):
    """A finite number (an int is accepted and becomes a float) in ``[lo, hi]``, or ``> gt``."""

    def __init__(self, lo: Optional[float] = None, hi: Optional[float] = None, gt: Optional[float] = None) -> None:
        self.lo, self.hi, self.gt = lo, hi, gt
        self.what = "a finite number" + (" > %g" % gt if gt is not None else "") + _range_text(lo, hi)

    def load(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(where, self.what, value)
        try:
            x = float(value)
        except OverflowError:
            raise _fail(where, self.what, value) from None
        if not math.isfinite(x) or (self.gt is not None and not x > self.gt) \
                or (self.lo is not None and x < self.lo) or (self.hi is not None and x > self.hi):
            raise _fail(where, self.what, value)
        return x


def _range_text(lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return " in [%s, %s]" % (_num(lo), _num(hi))
    if lo is not None:
        return " >= %s" % _num(lo)
    if hi is not None:
        return " <= %s" % _num(hi)
    return ""


def _num(x: Any) -> str:
    return "%d" % x if isinstance(x, int) else "%g" % x


class Str(Check):
    """A string (valid Unicode, at most ``max_len`` characters), optionally one of ``choices``."""

    def __init__(self, choices: Optional[Iterable[str]] = None, empty: bool = False, max_len: int = 4096,
                 pattern: Optional[str] = None, what: Optional[str] = None) -> None:
        self.choices = tuple(choices) if choices is not None else None
        self.empty, self.max_len = empty, max_len
        self.pattern = re.compile(pattern) if pattern else None
        if what:
            self.what = what
        elif self.choices is not None:
            self.what = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            self.what = "a string" if empty else "a non-empty string"

    def load(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or (not value and not self.empty):
            raise _fail(where, self.what, value)
        if len(value) > self.max_len:
            raise Invalid("%s is %d characters long; at most %d are allowed" % (where, len(value), self.max_len))
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid("%s holds an unpaired surrogate; it must be valid Unicode" % where) from None
        if (self.choices is not None and value not in self.choices) or (self.pattern and not self.pattern.fullmatch(value)):
            raise _fail(where, self.what, value)
        return value


class Path(Str):
    """A relative path inside a folder: forward slashes, no NUL, no absolute path, no ``..`` part."""

    what = "a relative path inside the folder"

    def __init__(self) -> None:
        super().__init__(max_len=1024)
        self.what = Path.what

    def load(self, value: Any, where: str) -> str:
        value = super().load(value, where)
        parts = value.replace("\\", "/").split("/")
        if "\0" in value or value.startswith(("/", "\\")) or ".." in parts:
            raise _fail(where, self.what, value)
        return value


class Optional_(Check):
    """``null`` or a value passing ``inner``."""

    def __init__(self, inner: Check) -> None:
        self.inner = inner
        self.what = "null or " + inner.what

    def load(self, value: Any, where: str) -> Any:
        return None if value is None else self.inner.load(value, where)

    def dump(self, value: Any) -> Any:
        return None if value is None else self.inner.dump(value)


class ListOf(Check):
    """A list of ``min_len``..``max_len`` items, each passing ``item``; kept as ``kind`` (list or tuple)."""

    def __init__(self, item: Check, min_len: int = 0, max_len: Optional[int] = None, kind: Callable = list) -> None:
        self.item, self.min_len, self.max_len, self.kind = item, min_len, max_len, kind
        if max_len is not None and max_len == min_len:
            size = "%d " % min_len
        elif min_len:
            size = "%d or more " % min_len if max_len is None else "%d to %d " % (min_len, max_len)
        else:
            size = "" if max_len is None else "at most %d " % max_len
        self.what = "a list of %sitems (each %s)" % (size, item.what)

    def load(self, value: Any, where: str) -> Any:
        if not isinstance(value, (list, tuple)) or len(value) < self.min_len \
                or (self.max_len is not None and len(value) > self.max_len):
            raise _fail(where, self.what, value)
        return self.kind(self.item.load(v, "%s[%d]" % (where, i)) for i, v in enumerate(value))

    def dump(self, value: Any) -> Any:
        return [self.item.dump(v) for v in value]


class DictOf(Check):
    """An object with string keys (each passing ``key``) and values passing ``value``."""

    def __init__(self, value: Check, key: Optional[Check] = None, max_len: Optional[int] = None) -> None:
        self.value, self.key, self.max_len = value, key or Str(), max_len
        self.what = "an object"

    def load(self, value: Any, where: str) -> Dict[str, Any]:
        if not isinstance(value, dict) or (self.max_len is not None and len(value) > self.max_len):
            raise _fail(where, self.what, value)
        out = {}
        for k, v in value.items():
            k = self.key.load(k, "a key of %s" % where)
            out[k] = self.value.load(v, "%s[%r]" % (where, k))
        return out

    def dump(self, value: Any) -> Any:
        return {k: self.value.dump(v) for k, v in value.items()}


class Any_(Check):
    """Any JSON value (free-form data such as provenance), checked iteratively to be plain, finite JSON."""

    what = "a JSON value"

    def __init__(self, max_depth: int = 32) -> None:
        self.max_depth = max_depth

    def load(self, value: Any, where: str) -> Any:
        stack: List[Tuple[Any, int]] = [(value, 0)]
        while stack:
            v, depth = stack.pop()
            if depth > self.max_depth:
                raise Invalid("%s nests deeper than %d levels" % (where, self.max_depth))
            if isinstance(v, dict):
                if not all(isinstance(k, str) for k in v):
                    raise Invalid("%s holds an object with a non-string key" % where)
                stack.extend((x, depth + 1) for x in v.values())
            elif isinstance(v, (list, tuple)):
                stack.extend((x, depth + 1) for x in v)
            elif isinstance(v, float) and not math.isfinite(v):
                raise Invalid("%s holds %r; JSON numbers must be finite" % (where, v))
            elif v is not None and not isinstance(v, (bool, int, float, str)):
                raise Invalid("%s holds a %s, which is not JSON" % (where, type(v).__name__))
        return copy.deepcopy(value) if isinstance(value, (dict, list)) else value


class Struct(Check):
    """An object read into the dataclass ``cls`` through its declared fields."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.what = "an object"

    def load(self, value: Any, where: str) -> Any:
        return _read(self.cls, value, where)

    def dump(self, value: Any) -> Any:
        return to_json(value)


def entry(check: Check, default: Any = REQUIRED, key: Optional[str] = None, write_default: bool = True,
          required: Optional[bool] = None) -> Any:
    """Declare a dataclass field read from JSON key ``key`` (default: the field's name) with ``check``.

    A field with ``default=REQUIRED`` must be present in the JSON (``required=True`` demands it even when
    Python code may leave it at ``default``). ``write_default=False`` leaves the key out of ``to_json``
    while the value equals its default (so optional keys appear only when used).
    """
    meta = {"check": check, "key": key, "write_default": write_default,
            "required": default is REQUIRED if required is None else required}
    if default is REQUIRED:
        return field(metadata=meta)
    if isinstance(default, (list, dict, set)) or type(default).__hash__ is None:  # mutable: a fresh copy each time
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def declared(cls: type) -> List[Tuple[str, Field]]:
    """(JSON key, dataclass field) of every declared field of ``cls``, in declaration order."""
    return [(f.metadata.get("key") or f.name, f) for f in fields(cls) if "check" in f.metadata]


def _read(cls: Type[T], data: Any, where: str, extra: Optional[Dict[str, Any]] = None) -> T:
    if not isinstance(data, dict):
        raise _fail(where, "an object", data)
    decl = declared(cls)
    keys = {k for k, _ in decl}
    unknown = [k for k in data if k not in keys]
    if unknown:
        if extra is None:
            raise Invalid("%s has unknown key %s; known keys: %s"
                          % (where, show(unknown[0]) if isinstance(unknown[0], str) else repr(unknown[0]),
                             ", ".join(sorted(keys))))
        for k in unknown:
            extra[k] = Any_().load(data[k], "%s.%s" % (where, k))
    kwargs = {}
    for key, f in decl:
        if key in data:
            kwargs[f.name] = f.metadata["check"].load(data[key], "%s.%s" % (where, key) if where else key)
        elif f.metadata["required"]:
            raise Invalid("%s is missing key %r" % (where, key) if where else "missing key %r" % key)
    try:
        return cls(**kwargs)  # type: ignore[call-arg]
    except Invalid:
        raise
    except EdgeconfError as exc:  # a dataclass's own cross-field check
        raise Invalid(str(exc)) from None


def from_json(cls: Type[T], data: Any, where: str, error: Type[EdgeconfError],
              extra: Optional[Dict[str, Any]] = None) -> T:
    """Read ``data`` into ``cls``; every problem raises ``error`` in one line that starts with ``where``.

    Undeclared keys are refused, unless ``extra`` is a dict: then they are checked to be plain JSON and
    collected there.
    """
    try:
        return _read(cls, data, where, extra)
    except Invalid as exc:
        raise error(str(exc)) from None


def load_value(check: Check, value: Any, where: str, error: Type[EdgeconfError]) -> Any:
    """Check one value outside a dataclass, raising ``error`` on failure."""
    try:
        return check.load(value, where)
    except Invalid as exc:
        raise error(str(exc)) from None


def to_json(obj: Any) -> Dict[str, Any]:
    """The declared fields of a dataclass instance as a JSON object (optional keys left out at default)."""
    out: Dict[str, Any] = {}
    for key, f in declared(type(obj)):
        value = getattr(obj, f.name)
        if not f.metadata["write_default"] and value == _default_of(f):
            continue
        out[key] = f.metadata["check"].dump(value)
    return out


def _default_of(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return REQUIRED


__all__ = ["REQUIRED", "Invalid", "Check", "Bool", "Int", "Float", "Str", "Path", "Optional_", "ListOf", "DictOf",
           "Any_", "Struct", "entry", "declared", "from_json", "load_value", "to_json", "show"]
