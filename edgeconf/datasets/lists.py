"""List files of images: CSV (``path,label`` rows) and JSON lines (``{"path": …, "label": …}``).

Paths are relative to the list file's folder (absolute paths are used as they are). The label column is
optional; a label is a class index (``3``) or a class name (``cat``), not a mix. A CSV header row
(``path,label``) is recognised and skipped.
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from typing import List, Optional, Union

from edgeconf.errors import DataError
from edgeconf.schema.jsonload import depth_problem

LIST_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".ndjson")
_PATH_KEYS = ("path", "file", "filename", "image")
#: at most this many rows in a list file (a sanity bound on what is kept in memory: names and labels only)
MAX_ROWS = 10_000_000
#: a label that is a class index: ASCII digits only ("²" or "٣" are class names, not indices)
_INDEX = re.compile(r"[-+]?[0-9]+")
#: the largest class index a label may hold (the targets are int64)
_INDEX_MAX = 2 ** 63 - 1


@dataclass
class ListEntries:
    """The rows of a list file: image paths (resolved) and their raw labels (None when the list has none)."""

    paths: List[str]
    labels: Optional[List[Union[int, str]]]


def _too_large(text: str, where: str) -> DataError:
    return DataError("%s: the label %s is too large for a class index; labels are class indices 0, 1, 2… or "
                     "class names" % (where, text if len(text) <= 30 else text[:27] + "…"))


def _label(value: object, where: str) -> Union[int, str]:
    if isinstance(value, bool) or value is None:
        raise DataError("%s: the label must be a class index or a class name, got %s" % (where, json.dumps(value)))
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        if abs(value) > _INDEX_MAX:
            raise _too_large(repr(value), where)
        return int(value)
    text = str(value).strip()
    if not text:
        raise DataError("%s: the label is empty" % where)
    if not _INDEX.fullmatch(text):
        return text
    if len(text.lstrip("+-").lstrip("0")) > len(str(_INDEX_MAX)):  # int() of thousands of digits is slow or refused
        raise _too_large(text, where)
    number = int(text)
    if abs(number) > _INDEX_MAX:
        raise _too_large(text, where)
    return number


def _resolve(base: str, rel: str) -> str:
    rel = rel.strip()
    return rel if os.path.isabs(rel) else os.path.normpath(os.path.join(base, rel))


def read_list(path: str) -> ListEntries:
    """Parse a CSV/TSV or JSON-lines list; every named file must exist (the message names the first missing)."""
    base = os.path.dirname(os.path.abspath(path))
    paths: List[str] = []
    labels: List[Optional[Union[int, str]]] = []
    try:
        with open(path, "r", encoding="utf-8", newline="") as f:
            if path.lower().endswith((".jsonl", ".ndjson")):
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    where = "%s line %d" % (path, n)
                    too_deep = depth_problem(line, where)
                    if too_deep:
                        raise DataError(too_deep + '; each line must be an object like {"path": "a.png", "label": 3}')
                    try:
                        row = json.loads(line)
                    except ValueError as exc:
                        raise DataError("%s is not JSON (%s); each line must be an object like "
                                        "{\"path\": \"a.png\", \"label\": 3}" % (where, exc)) from None
                    key = next((k for k in _PATH_KEYS if isinstance(row, dict) and k in row), None)
                    if key is None or not isinstance(row[key], str):
                        raise DataError("%s has no \"path\" string; each line must be an object like "
                                        "{\"path\": \"a.png\", \"label\": 3}" % where)
                    paths.append(_resolve(base, row[key]))
                    labels.append(_label(row["label"], where) if "label" in row else None)
                    if len(paths) > MAX_ROWS:
                        raise DataError("%s lists more than %d images" % (path, MAX_ROWS))
            else:
                reader = csv.reader(f, delimiter="\t" if path.lower().endswith(".tsv") else ",")
                for n, row in enumerate(reader, 1):
                    if not row or not any(c.strip() for c in row):
                        continue
                    if n == 1 and row[0].strip().lower() in _PATH_KEYS:
                        continue  # header
                    where = "%s row %d" % (path, n)
                    if len(row) > 2:
                        raise DataError("%s has %d columns; expected path[,label]" % (where, len(row)))
                    paths.append(_resolve(base, row[0]))
                    labels.append(_label(row[1], where) if len(row) > 1 else None)
                    if len(paths) > MAX_ROWS:
                        raise DataError("%s lists more than %d images" % (path, MAX_ROWS))
    except UnicodeDecodeError:
        raise DataError("%s is not UTF-8 text; expected a CSV or JSON-lines list of path,label" % path) from None
    except csv.Error as exc:
        raise DataError("%s is not a valid CSV list (%s)" % (path, exc)) from None
    except OSError as exc:
        raise DataError("cannot read list %s: %s" % (path, os.strerror(exc.errno) if exc.errno else exc)) from None
    if not paths:
        raise DataError("list %s names no images; the data set is empty" % path)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError("list %s names %d file(s) that do not exist, e.g. %s (paths are relative to the list's folder)"
                        % (path, len(missing), missing[0]))
    have = [v is not None for v in labels]
    if any(have) and not all(have):
        first = have.index(False) if have[0] else have.index(True)
        raise DataError("list %s gives labels for some images only (row %d differs); label all or none"
                        % (path, first + 1))
    if not any(have):
        return ListEntries(paths, None)
    kinds = {type(v) for v in labels}
    if len(kinds) > 1:
        raise DataError("list %s mixes class indices and class names as labels; use one kind" % path)
    return ListEntries(paths, [v for v in labels if v is not None])


__all__ = ["read_list", "ListEntries", "LIST_EXTENSIONS"]
