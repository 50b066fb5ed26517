"""Input keys for the memo cache: exact digests and difference hashes (dHash)."""
from __future__ import annotations

import hashlib

import numpy as np

_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def sha256_file(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def exact_digest(image: np.ndarray) -> bytes:
    """BLAKE2b digest of the array's dtype, shape and bytes (different shapes never collide)."""
    a = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=16)
    h.update(("%s%s" % (a.dtype.str, a.shape)).encode())
    h.update(a.data)
    return h.digest()


def dhash(image: np.ndarray, bits: int = 256) -> np.ndarray:
    """Difference hash: grey, resize to (s+1)×s, compare horizontal neighbours.

    ``bits`` must be a square of a multiple of 8 (64 → 8×8 grid, as in Kinnas et al.; 256 → 16×16).
    Returns the hash as ``bits // 64`` uint64 words (at least one).
    """
    import cv2

    side = int(round(bits ** 0.5))
    if side * side != bits or bits % 64:
        raise ValueError("dhash bits must be a square that is a multiple of 64 (64, 256, 1024), got %d" % bits)
    a = np.asarray(image)
    if a.ndim == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a[:, :, :3]), cv2.COLOR_RGB2GRAY) if a.shape[2] >= 3 else a[:, :, 0]
    small = cv2.resize(np.ascontiguousarray(a), (side + 1, side), interpolation=cv2.INTER_AREA)
    diff = small[:, 1:] > small[:, :-1]
    packed = np.packbits(diff.reshape(-1))
    return packed.view(">u8").astype(np.uint64)


def popcount(words: np.ndarray) -> np.ndarray:
    """Number of set bits per element of a uint64 array."""
    fast = getattr(np, "bitwise_count", None)
    if fast is not None:
        return fast(words)
    return _POPCOUNT8[np.ascontiguousarray(words).view(np.uint8)].reshape(words.shape + (8,)).sum(axis=-1)


def hamming(a: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Hamming distance of hash ``a`` (W words) to each row of ``table`` (N×W words)."""
    x = np.bitwise_xor(table, a[None, :])
    d = popcount(x)
    return d.sum(axis=1) if d.ndim == 2 else d
