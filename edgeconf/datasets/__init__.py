"""The data layer: every reader of images, arrays and labelled data sets that edgeconf's commands use.

* :mod:`~edgeconf.datasets.idx` — IDX files (FashionMNIST / MNIST), ``load_fashion_mnist``;
* :mod:`~edgeconf.datasets.images` — image files and ``.npy``/``.npz`` arrays as raw uint8 images.
"""
from __future__ import annotations

from edgeconf.datasets.idx import FASHION_LABELS, load_fashion_mnist, read_idx
from edgeconf.datasets.images import IMAGE_EXTENSIONS, iter_inputs, read_image

__all__ = ["FASHION_LABELS", "load_fashion_mnist", "read_idx", "IMAGE_EXTENSIONS", "iter_inputs", "read_image"]
