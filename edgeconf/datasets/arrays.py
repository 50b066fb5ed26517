""".npy and .npz files read safely: every array's header is checked before a byte of it is loaded.

Refused with a one-line :class:`DataError`: a header whose claimed shape needs more bytes than the file
holds (a 100 TB shape in a 1 kB file), Python-object arrays (``allow_pickle`` is never used), empty and
truncated files, and anything that is not a numpy file. Large ``.npy`` files are memory-mapped, not read.
"""
from __future__ import annotations

import os
import struct
import zipfile
import zlib
from tokenize import TokenError
from typing import BinaryIO, Dict, Optional, Sequence, Tuple

import numpy as np

from edgeconf.errors import DataError

NPY_MAGIC = b"\x93NUMPY"


def _header(f: BinaryIO, what: str) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy stream ``f`` positioned at its start."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError("unsupported .npy format version %s" % (version,))
    except (ValueError, EOFError, OSError, SyntaxError, TokenError) as exc:  # numpy tokenizes the header text
        raise DataError("%s is not a readable .npy array (%s)" % (what, _first_line(exc)[:120])) from None
    if dtype.hasobject:
        raise DataError("%s holds Python objects (dtype %s); edgeconf reads only plain numeric arrays and never "
                        "unpickles; save images as uint8 and labels as integers" % (what, dtype))
    return tuple(int(d) for d in shape), bool(fortran), dtype


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when the message is empty (a bare EOFError)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _claimed_bytes(shape: Sequence[int], dtype: np.dtype) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n * dtype.itemsize


def _check_size(what: str, shape: Sequence[int], dtype: np.dtype, available: int) -> None:
    want = _claimed_bytes(shape, dtype)
    if want > available:
        raise DataError("%s claims shape %s of %s (%d bytes) but holds only %d bytes; the file is truncated or "
                        "forged" % (what, tuple(shape), dtype, want, available))


def read_npy(path: str) -> np.ndarray:
    """The array of a ``.npy`` file, memory-mapped (read-only) once its header has been checked."""
    if not os.path.isfile(path):
        raise DataError("array file %s does not exist" % path)
    size = os.path.getsize(path)
    if size == 0:
        raise DataError("%s is empty (0 bytes); expected a .npy array" % path)
    with open(path, "rb") as f:
        shape, _, dtype = _header(f, path)
        offset = f.tell()
    _check_size(path, shape, dtype, size - offset)
    if _claimed_bytes(shape, dtype) == 0:
        return np.zeros(shape, dtype)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError("cannot read %s as a .npy array: %s" % (path, _first_line(exc)[:160])) from None


def read_npz(path: str, keys: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """Arrays of a ``.npz`` archive (only ``keys`` when given), each header checked before it is read."""
    if not os.path.isfile(path):
        raise DataError("array file %s does not exist" % path)
    if os.path.getsize(path) == 0:
        raise DataError("%s is empty (0 bytes); expected an .npz archive" % path)
    out: Dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            members = {info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")}
            for key, info in members.items():
                if keys is not None and key not in keys:
                    continue
                what = "%s[%r]" % (path, key)
                with zf.open(info) as f:
                    shape, _, dtype = _header(f, what)  # type: ignore[arg-type]
                    header_bytes = f.tell()
                _check_size(what, shape, dtype, info.file_size - header_bytes)
                with zf.open(info) as f:
                    out[key] = np.lib.format.read_array(f, allow_pickle=False)  # type: ignore[arg-type]
    except zipfile.BadZipFile as exc:
        raise DataError("%s is not an .npz archive (%s)" % (path, exc)) from None
    except (NotImplementedError, RuntimeError) as exc:  # zipfile: encrypted members, unsupported methods/versions
        raise DataError("%s uses a zip feature that cannot be read (%s); write it with numpy.savez or savez_compressed"
                        % (path, _first_line(exc)[:160])) from None
    except (ValueError, OSError, EOFError, zlib.error, zipfile.LargeZipFile, struct.error, UnicodeDecodeError) as exc:
        raise DataError("cannot read %s: %s" % (path, _first_line(exc)[:160])) from None
    return out


__all__ = ["read_npy", "read_npz"]
