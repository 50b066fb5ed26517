"""Make ``edgeconf/data/fashion_sample.npz``: a small FashionMNIST sample shipped for ``demo://``.

Takes the first ``--per-class`` images of each class from the FashionMNIST *test* split (Debian package
``dataset-fashion-mnist``, gzipped IDX files), in file order, so the output is reproducible byte for byte.

    python scripts/make_fashion_sample.py [--root /usr/share/datasets/fashion-mnist] [--per-class 30]
"""
from __future__ import annotations

import argparse
import gzip
import os
import struct

import numpy as np

LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: str) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes into an array of the shape its header gives."""
    with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as fh:
        data = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError("%s is not an unsigned-byte IDX file" % path)
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "edgeconf", "data", "fashion_sample.npz"))
    args = parser.parse_args()
    images = read_idx(os.path.join(args.root, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(args.root, "t10k-labels-idx1-ubyte.gz"))
    picked = np.concatenate([np.flatnonzero(labels == c)[: args.per_class] for c in range(10)])
    np.savez_compressed(
        args.out,
        images=np.ascontiguousarray(images[picked]),
        labels=labels[picked].astype(np.uint8),
        test_index=picked.astype(np.int32),
        label_names=np.array(LABELS),
    )
    print("wrote %s: %d images (%d per class) from the FashionMNIST test split" % (os.path.normpath(args.out), len(picked), args.per_class))


if __name__ == "__main__":
    main()
