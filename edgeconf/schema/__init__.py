"""Reading untrusted JSON safely and checking it against typed declarations.

``read_json``/``loads`` bound the size and nesting depth of a document *before* parsing it (so no input
can raise ``RecursionError`` or exhaust memory), and :mod:`edgeconf.schema.fields` turns a dataclass whose
fields carry a typed check into a strict reader: every value is checked (a bool must be a bool, an int an
int, a float finite and in range), unknown keys are refused, and each failure is one line naming the key.
"""
from __future__ import annotations

from edgeconf.schema.fields import (REQUIRED, Any_, Bool, Check, DictOf, Float, Int, Invalid, ListOf, Optional_, Path,
                                    Str, Struct, declared, entry, from_json, load_value, to_json)
from edgeconf.schema.jsonload import MAX_DEPTH, loads, read_json

__all__ = ["REQUIRED", "Any_", "Bool", "Check", "DictOf", "Float", "Int", "Invalid", "ListOf", "Optional_", "Path",
           "Str", "Struct", "declared", "entry", "from_json", "load_value", "to_json", "MAX_DEPTH", "loads", "read_json"]
