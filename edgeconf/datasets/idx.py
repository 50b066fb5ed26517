"""FashionMNIST from IDX files: the Debian ``dataset-fashion-mnist`` package or any folder with the four files.

Only numpy is needed. Files may be gzipped (``*.gz``) or plain; both the canonical names
(``train-images-idx3-ubyte``) and the dotted variants (``train-images.idx3-ubyte``) are accepted.
"""
from __future__ import annotations

import gzip
import os
import zlib
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgeconf.errors import DataError

ENV_VAR = "EDGECONF_FASHION_MNIST"
DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"

FASHION_LABELS: List[str] = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

SPLITS = {"train": ("train-images", "train-labels", 60000), "test": ("t10k-images", "t10k-labels", 10000)}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_HINT = ("install the Debian package dataset-fashion-mnist, or pass a folder holding the four FashionMNIST IDX "
         "files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
         "t10k-labels-idx1-ubyte[.gz]) as root= / --data, or set %s" % ENV_VAR)


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (gzipped or plain) into an array; raise :class:`DataError` when it is not valid IDX.

    The header is read first and the data must hold exactly the bytes it claims: a header claiming a huge
    shape makes the reader stop at what the file holds, never allocate what it claims.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:  # type: ignore[operator]
            magic = f.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
                raise DataError("%s is not an IDX file (bad magic number); expected MNIST-style IDX data" % path)
            dtype = _IDX_DTYPES.get(magic[2])
            ndim = magic[3]
            if dtype is None or ndim == 0:
                raise DataError("%s has an unknown IDX type code 0x%02x or no dimensions" % (path, magic[2]))
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise DataError("%s is truncated inside its IDX header" % path)
            shape = tuple(int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(ndim))
            dt = np.dtype(dtype)
            want = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            data = _read_upto(f, want + 1)  # only what is there: a forged header cannot make this allocate more
    except FileNotFoundError:
        raise DataError("IDX file %s does not exist; %s" % (path, _HINT)) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError("cannot read IDX file %s (%s); the file is truncated or corrupt, re-download it" % (path, exc)) from None
    if len(data) != want:
        raise DataError("%s holds %s data bytes but its header %s needs %d; the file is truncated or corrupt"
                        % (path, "more" if len(data) > want else len(data), shape, want))
    return np.frombuffer(data, dtype=dt).reshape(shape)


def _read_upto(f, limit: int, chunk: int = 1 << 24) -> bytes:
    """At most ``limit`` bytes, read in chunks (``f.read(n)`` would allocate n bytes before reading)."""
    parts, got = [], 0
    while got < limit:
        part = f.read(min(chunk, limit - got))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def idx_labels_for(images_path: str) -> Optional[str]:
    """The labels file beside an IDX images file (``…-images-idx3-ubyte`` → ``…-labels-idx1-ubyte``), if any."""
    folder, name = os.path.split(images_path)
    for a, b in (("-images-idx3-ubyte", "-labels-idx1-ubyte"), ("-images.idx3-ubyte", "-labels.idx1-ubyte")):
        if a in name:
            stem = name.replace(a, b)
            for cand in (stem, stem + ".gz", stem[:-3] if stem.endswith(".gz") else None):
                if cand and os.path.isfile(os.path.join(folder, cand)):
                    return os.path.join(folder, cand)
    return None


def is_idx_images(name: str) -> bool:
    n = name.lower()
    return n.endswith(("idx3-ubyte", "idx3-ubyte.gz"))


def find_split(root: str, split: str) -> Tuple[str, str]:
    """(images, labels) IDX paths of ``split`` (train or test) in a folder of FashionMNIST/MNIST files."""
    if split not in SPLITS:
        raise DataError("unknown IDX split %r; use 'train' or 'test'" % (split,))
    img_stem, lab_stem, _ = SPLITS[split]
    return _find(root, img_stem, "idx3-ubyte"), _find(root, lab_stem, "idx1-ubyte")


def _candidates(stem: str, kind: str) -> Sequence[str]:
    names = []
    for sep in ("-", "."):
        base = "%s%s%s" % (stem, sep, kind)
        names += [base + ".gz", base]
    return names


def _find(root: str, stem: str, kind: str) -> str:
    for name in _candidates(stem, kind):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    raise DataError("FashionMNIST file %s-%s[.gz] is missing in %s; %s" % (stem, kind, root, _HINT))


def resolve_root(root: Optional[str] = None) -> str:
    """The data folder: ``root`` if given, else ``$EDGECONF_FASHION_MNIST``, else the Debian package folder."""
    if root is None:
        root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise DataError("FashionMNIST folder %s does not exist; %s" % (root, _HINT))
    return root


def load_fashion_mnist(split: str = "train", root: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N×28×28 uint8) and labels (N int64) of the ``train`` or ``test`` split."""
    if split not in SPLITS:
        raise DataError("unknown FashionMNIST split %r; use 'train' or 'test'" % (split,))
    folder = resolve_root(root)
    img_stem, lab_stem, _ = SPLITS[split]
    images = read_idx(_find(folder, img_stem, "idx3-ubyte"))
    labels = read_idx(_find(folder, lab_stem, "idx1-ubyte"))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError("FashionMNIST %s images have shape %s and dtype %s; expected N×28×28 uint8"
                        % (split, images.shape, images.dtype))
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError("FashionMNIST %s has %d images but labels of shape %s; the files do not belong together"
                        % (split, images.shape[0], labels.shape))
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_LABELS)):
        raise DataError("FashionMNIST %s labels range %d..%d; expected 0..9" % (split, labels.min(), labels.max()))
    return images, labels
