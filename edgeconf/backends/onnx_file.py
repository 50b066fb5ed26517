"""What an ONNX file declares, read from its protobuf bytes without importing ``onnx``.

Two facts matter before a model is handed to a runtime: the opsets it needs (so a runtime too old for
it gets a message that says so) and the external-data files it refers to (weights kept beside the graph,
which a bundle must list and hash like every other file). Importing ``onnx`` costs seconds on a Jetson, so
this module walks the protobuf wire format itself, visiting only the fields on the way to a tensor, with
an explicit stack (no recursion) and skipping tensor payloads by their length.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Tuple

from edgeconf.errors import ModelLoadError

if TYPE_CHECKING:
    import numpy as np

# Field numbers from onnx.proto: for each message kind, field -> kind of the submessage it holds.
_MODEL, _GRAPH, _NODE, _ATTR, _TENSOR, _SPARSE, _FUNCTION, _TRAINING, _ENTRY, _OPSET = range(10)
_ROUTES: Dict[int, Dict[int, int]] = {
    _MODEL: {7: _GRAPH, 8: _OPSET, 20: _TRAINING, 25: _FUNCTION},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _FUNCTION: {7: _NODE, 11: _ATTR},
    _NODE: {5: _ATTR},
    _ATTR: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _TENSOR: {13: _ENTRY},
}
_IR_VERSION = 1  # ModelProto.ir_version (varint)
#: Largest graph file read here (external data aside, ONNX files are limited to 2 GiB by protobuf).
MAX_BYTES = 2 << 30


@dataclass
class OnnxFacts:
    """``ir_version``, opset per domain (``""`` is the default ONNX domain) and external-data locations."""

    ir_version: int = 0
    opsets: Dict[str, int] = field(default_factory=dict)
    external: List[str] = field(default_factory=list)

    @property
    def opset(self) -> int:
        return self.opsets.get("", self.opsets.get("ai.onnx", 0))


class _Malformed(Exception):
    pass


def _varint(buf: bytes, pos: int, end: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("bad varint at byte %d" % pos)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes, start: int, end: int):
    """(field number, wire type, value or (start, end) of a length-delimited payload) of one message."""
    pos = start
    groups = 0
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0 at byte %d" % pos)
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            value, pos = (pos, pos + size), pos + size
        elif wire == 3:  # deprecated groups: skipped, balanced
            groups += 1
            continue
        elif wire == 4:
            groups -= 1
            if groups < 0:
                raise _Malformed("unbalanced group at byte %d" % pos)
            continue
        else:
            raise _Malformed("wire type %d at byte %d" % (wire, pos))
        if pos > end:
            raise _Malformed("field %d runs past its message" % number)
        if groups == 0:
            yield number, wire, value
    if groups:
        raise _Malformed("unterminated group")


def parse_onnx_facts(buf: bytes) -> OnnxFacts:
    """Read :class:`OnnxFacts` from the bytes of a ModelProto; raises ``ValueError`` if they are not one."""
    facts = OnnxFacts()
    stack: List[Tuple[int, int, int]] = [(_MODEL, 0, len(buf))]
    try:
        while stack:
            kind, start, end = stack.pop()
            if kind == _ENTRY:
                key = value = b""
                for number, wire, span in _fields(buf, start, end):
                    if wire == 2 and number in (1, 2):
                        text = bytes(buf[span[0]:span[1]])
                        key, value = (text, value) if number == 1 else (key, text)
                if key == b"location":
                    loc = value.decode("utf-8", "replace")
                    if loc not in facts.external:
                        facts.external.append(loc)
                continue
            if kind == _OPSET:
                domain, version = b"", 0
                for number, wire, v in _fields(buf, start, end):
                    if number == 1 and wire == 2:
                        domain = bytes(buf[v[0]:v[1]])
                    elif number == 2 and wire == 0:
                        version = v
                name = domain.decode("utf-8", "replace")
                facts.opsets[name] = max(version, facts.opsets.get(name, 0))
                continue
            routes = _ROUTES[kind]
            for number, wire, v in _fields(buf, start, end):
                if kind == _MODEL and number == _IR_VERSION and wire == 0:
                    facts.ir_version = v
                elif wire == 2 and number in routes:
                    stack.append((routes[number], v[0], v[1]))
    except _Malformed as exc:
        raise ValueError(str(exc)) from None
    return facts


def read_onnx_facts(path: str) -> OnnxFacts:
    """:class:`OnnxFacts` of an ONNX file; a file that is not ONNX raises :class:`ModelLoadError`."""
    try:
        size = os.path.getsize(path)
        if size > MAX_BYTES:
            raise ModelLoadError("%s is %d bytes; an ONNX graph file is at most 2 GiB (larger weights belong in "
                                 "external data)" % (path, size))
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as exc:
        raise ModelLoadError("cannot read %s: %s" % (path, (exc.strerror or str(exc)).lower())) from None
    try:
        facts = parse_onnx_facts(buf)
    except ValueError as exc:
        raise ModelLoadError("%s is not an ONNX model (%s); is it a complete .onnx file?" % (path, exc)) from None
    if not facts.opsets or not facts.ir_version:
        raise ModelLoadError("%s is not an ONNX model (no IR version or opset); is it a complete .onnx file?" % path)
    return facts


def numpy_dtype(elem_type: int) -> "np.dtype":
    """The numpy dtype of an ONNX ``TensorProto`` element type, on every supported ``onnx`` (1.12 has no
    ``helper.tensor_dtype_to_np_dtype``; newer ones deprecate ``onnx.mapping``)."""
    import numpy as np
    import onnx

    convert = getattr(onnx.helper, "tensor_dtype_to_np_dtype", None)
    if convert is not None:
        return np.dtype(convert(elem_type))
    return np.dtype(onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[elem_type])  # onnx < 1.13


__all__ = ["OnnxFacts", "parse_onnx_facts", "read_onnx_facts", "numpy_dtype"]
