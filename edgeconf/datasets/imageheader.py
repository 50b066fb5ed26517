"""Image dimensions read from a file's header, without decoding: the check that runs before any decoder.

Formats are recognised by their magic bytes (never by the file name): PNG, JPEG, BMP, GIF, WebP, TIFF,
PNM (PBM/PGM/PPM, PFM) and Sun raster. An image in any other format is refused, since its size cannot
be checked before a decoder allocates it.
"""
from __future__ import annotations

import struct
from typing import BinaryIO, Callable, Dict, Tuple

from edgeconf.errors import DataError

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WebP", "TIFF", "PNM", "Sun raster")
#: how far into a JPEG the frame header (SOF) may lie; EXIF and ICC segments come before it
JPEG_SCAN_LIMIT = 16 * 1024 * 1024


class _Bad(Exception):
    """The header is truncated or inconsistent (turned into a DataError naming the file)."""


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _Bad("truncated header")
    return data


def _png(f: BinaryIO, head: bytes) -> Tuple[int, int]:
    f.seek(8)
    length, kind = struct.unpack(">I4s", _read(f, 8))
    if kind != b"IHDR" or length < 8:
        raise _Bad("the first chunk is not IHDR")
    return struct.unpack(">II", _read(f, 8))


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(f: BinaryIO, head: bytes) -> Tuple[int, int]:
    f.seek(2)
    while f.tell() < JPEG_SCAN_LIMIT:
        byte = _read(f, 1)
        if byte != b"\xff":
            raise _Bad("no marker where one was expected")
        marker = _read(f, 1)[0]
        while marker == 0xFF:  # fill bytes
            marker = _read(f, 1)[0]
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            continue  # markers without a length
        if marker in (0xD9, 0xDA):
            raise _Bad("image data starts before a frame header")
        (length,) = struct.unpack(">H", _read(f, 2))
        if length < 2:
            raise _Bad("a segment length below 2")
        if marker in _SOF:
            _precision, height, width = struct.unpack(">BHH", _read(f, 5))
            if height == 0:
                raise _Bad("a frame header with height 0 (DNL height is not supported)")
            return width, height
        f.seek(length - 2, 1)
    raise _Bad("no frame header in the first %d bytes" % JPEG_SCAN_LIMIT)


def _bmp(f: BinaryIO, head: bytes) -> Tuple[int, int]:
    f.seek(14)
    (dib,) = struct.unpack("<I", _read(f, 4))
    if dib == 12:
        w, h = struct.unpack("<hh", _read(f, 4))
    elif dib >= 40:
        w, h = struct.unpack("<ii", _read(f, 8))
    else:
        raise _Bad("unknown DIB header size %d" % dib)
    return abs(w), abs(h)  # a negative height means a top-down bitmap


def _gif(f: BinaryIO, head: bytes) -> Tuple[int, int]:
    f.seek(6)
    return struct.unpack("<HH", _read(f, 4))


def _webp(f: BinaryIO, head: bytes) -> Tuple[int, int]:
    f.seek(12)
    kind = _read(f, 4)
    _read(f, 4)  # chunk size
    if kind == b"VP8 ":
        frame = _read(f, 10)
        if frame[3:6] != b"\x9d\x01\x2a":
            raise _Bad("bad VP8 start code")
        w, h = struct.unpack("<HH", frame[6:10])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L":
        data = _read(f, 5)
        if data[0] != 0x2F:
            raise _Bad("bad VP8L signature")
        bits = struct.unpack("<I", data[1:5])[0]
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if kind == b"VP8X":
        data = _read(f, 10)
        w = int.from_bytes(data[4:7], "little") + 1
        h = int.from_bytes(data[7:10], "little") + 1
        return w, h
    raise _Bad("unknown WebP chunk %r" % kind)


def _tiff(f: BinaryIO, head: bytes) -> Tuple[int, int]:
    end = "<" if head[:2] == b"II" else ">"
    f.seek(4)
    (ifd,) = struct.unpack(end + "I", _read(f, 4))
    f.seek(ifd)
    (count,) = struct.unpack(end + "H", _read(f, 2))
    size: Dict[int, int] = {}
    for _ in range(count):
        tag, kind, _n, raw = struct.unpack(end + "HHI4s", _read(f, 12))
        if tag in (256, 257):
            if kind == 3:  # SHORT, left-justified in the 4-byte field
                size[tag] = struct.unpack(end + "H", raw[:2])[0]
            elif kind == 4:  # LONG
                size[tag] = struct.unpack(end + "I", raw)[0]
            else:
                raise _Bad("image size stored with TIFF type %d" % kind)
    if 256 not in size or 257 not in size:
        raise _Bad("the first IFD has no ImageWidth/ImageLength")
    return size[256], size[257]


def _pnm(f: BinaryIO, head: bytes) -> Tuple[int, int]:
    f.seek(2)
    numbers = []
    token = b""
    for _ in range(4096):  # the header is short; comments included
        c = f.read(1)
        if not c:
            break
        if c == b"#":
            while c not in (b"\n", b"\r", b""):
                c = f.read(1)
            continue
        if c.isspace():
            if token:
                numbers.append(token)
                token = b""
                if len(numbers) == 2:
                    break
            continue
        token += c
    if len(numbers) < 2 or not all(n.isdigit() for n in numbers[:2]):
        raise _Bad("no width and height in the PNM header")
    return int(numbers[0]), int(numbers[1])


def _sun(f: BinaryIO, head: bytes) -> Tuple[int, int]:
    f.seek(4)
    return struct.unpack(">II", _read(f, 8))


def _kind(head: bytes) -> Tuple[str, Callable[[BinaryIO, bytes], Tuple[int, int]]]:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG", _png
    if head.startswith(b"\xff\xd8"):
        return "JPEG", _jpeg
    if head.startswith(b"BM"):
        return "BMP", _bmp
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF", _gif
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP", _webp
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF", _tiff
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456fF" and head[2:3].isspace():
        return "PNM", _pnm
    if head[:4] == b"\x59\xa6\x6a\x95":
        return "Sun raster", _sun
    raise KeyError(head[:8])


def image_size(f: BinaryIO, name: str) -> Tuple[str, int, int]:
    """``(format, width, height)`` from the header of the open binary file ``f``; :class:`DataError` otherwise."""
    f.seek(0)
    head = f.read(16)
    if not head:
        raise DataError("%s is empty (0 bytes); it is not an image" % name)
    try:
        fmt, reader = _kind(head)
    except KeyError:
        raise DataError("%s is not an image edgeconf can size before decoding (supported: %s)"
                        % (name, ", ".join(FORMATS))) from None
    try:
        w, h = reader(f, head)
    except (_Bad, struct.error, OSError, ValueError) as exc:
        raise DataError("%s has a corrupt %s header (%s)" % (name, fmt, exc)) from None
    return fmt, int(w), int(h)


__all__ = ["image_size", "FORMATS"]
