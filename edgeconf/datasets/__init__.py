"""The data layer: every reader of images, arrays and labelled data sets that edgeconf's commands use.

* :func:`open_dataset` — one entry for every format (.npz/.npy, ImageFolder, image folders, IDX, CSV and
  JSON-lines lists, single images): a :class:`Dataset` of raw images, labels and class names;
* :mod:`~edgeconf.datasets.idx` — IDX files (FashionMNIST / MNIST), ``load_fashion_mnist``;
* :mod:`~edgeconf.datasets.images` — image files and image arrays, read safely;
* :mod:`~edgeconf.datasets.arrays` — ``.npy``/``.npz`` with their headers checked before loading;
* :mod:`~edgeconf.datasets.limits` — the pixel limit every image is checked against before decoding.
"""
from __future__ import annotations

from edgeconf.datasets.dataset import FORMATS_HELP, Dataset, Sample, open_dataset
from edgeconf.datasets.idx import FASHION_LABELS, load_fashion_mnist, read_idx
from edgeconf.datasets.images import IMAGE_EXTENSIONS, iter_inputs, read_image
from edgeconf.datasets.limits import DEFAULT_MAX_PIXELS, max_image_pixels

__all__ = ["open_dataset", "Dataset", "Sample", "FORMATS_HELP", "FASHION_LABELS", "load_fashion_mnist", "read_idx",
           "IMAGE_EXTENSIONS", "iter_inputs", "read_image", "DEFAULT_MAX_PIXELS", "max_image_pixels"]
