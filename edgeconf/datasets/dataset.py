"""One entry to every data format: ``open_dataset(spec)`` gives a :class:`Dataset` of raw images and labels.

Formats (docs/data.md has examples):

* ``.npz`` with ``x`` (uint8 N×H×W or N×H×W×C raw images, or float32 model-ready inputs) and optional ``y``
  (integer labels) and ``classes`` (class names, a string array);
* ``.npy`` of images (no labels);
* an **ImageFolder**: one subfolder per class, the subfolder names are the class names;
* a flat folder of images (no labels);
* **IDX** (FashionMNIST/MNIST): ``fashion-mnist[:train|test]`` (the Debian package, or ``$EDGECONF_FASHION_MNIST``),
  a folder of IDX files with an optional ``:train``/``:test`` (default test), or an ``…-images-idx3-ubyte[.gz]``
  file (labels from the ``…-labels-idx1-ubyte`` file beside it);
* a **CSV** or **JSON-lines** list of ``path,label`` (paths relative to the list);
* a single image file.

Folders and lists are streamed: only the file names are listed up front, each image is read (header
checked against the pixel limit first) when it is used.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgeconf.datasets.arrays import read_npy, read_npz
from edgeconf.datasets.idx import (DEFAULT_ROOT, ENV_VAR, FASHION_LABELS, find_split, idx_labels_for, is_idx_images,
                                   read_idx, resolve_root)
from edgeconf.datasets.images import image_array, is_image_path, read_image
from edgeconf.datasets.lists import LIST_EXTENSIONS, read_list
from edgeconf.errors import DataError

FORMATS_HELP = ("an .npz (x: uint8 images N×H×W[×C], optional y: integer labels), an .npy of images, an ImageFolder "
                "(one subfolder per class), a folder of images, IDX files (fashion-mnist[:train|test], a folder of "
                "IDX files[:train|test], or an …-images-idx3-ubyte file), a CSV or JSON-lines list of path,label, or "
                "an image file")
FASHION = "fashion-mnist"
Images = Union[np.ndarray, List[np.ndarray]]


@dataclass
class Sample:
    """One item of a data set; ``image`` is None and ``error`` says why when it could not be read."""

    index: int
    name: str
    image: Optional[np.ndarray]
    target: Optional[int]
    error: Optional[str] = None


class Dataset:
    """Raw images (or model-ready arrays) with optional labels and class names, read on demand.

    ``targets`` are class indices (int64); ``classes`` names them when the source does (ImageFolder
    subfolders, a list's names, an .npz ``classes`` array, FashionMNIST). ``empty_classes``: an ImageFolder's
    subfolders that hold no images (not classes of the data set; named when the class count does not fit a
    model). Use :meth:`labels_for` to express the targets in a model's classes.
    """

    def __init__(self, source: str, kind: str, size: int, get: Callable[[int], np.ndarray],
                 name: Callable[[int], str], targets: Optional[np.ndarray] = None,
                 classes: Optional[List[str]] = None, model_ready: bool = False,
                 array: Optional[np.ndarray] = None, empty_classes: Sequence[str] = ()) -> None:
        if size == 0:
            raise DataError("%s holds no samples; the data set is empty" % source)
        if targets is not None and targets.shape != (size,):
            raise DataError("%s has %d samples but %d labels; they do not belong together"
                            % (source, size, targets.shape[0]))
        self.source, self.kind, self._size = source, kind, size
        self._get, self._name = get, name
        self.targets, self.classes, self.model_ready = targets, classes, model_ready
        self._array = array
        self.empty_classes = list(empty_classes)

    # -- access ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._size

    @property
    def labelled(self) -> bool:
        return self.targets is not None

    def name(self, i: int) -> str:
        return self._name(i)

    def image(self, i: int) -> np.ndarray:
        """Sample ``i``'s image (raw uint8, or a model-ready array); :class:`DataError` if it cannot be read."""
        return self._get(i)

    def samples(self, skip_errors: bool = False, limit: Optional[int] = None) -> Iterator[Sample]:
        """Every sample in order; with ``skip_errors`` an unreadable one comes with its error instead of raising."""
        n = self._size if limit is None else min(self._size, limit)
        for i in range(n):
            target = int(self.targets[i]) if self.targets is not None else None
            try:
                img = self._get(i)
            except DataError as exc:
                if not skip_errors:
                    raise
                yield Sample(i, self._name(i), None, target, str(exc))
                continue
            yield Sample(i, self._name(i), img, target)

    def load(self, limit: Optional[int] = None) -> Tuple[Images, Optional[np.ndarray]]:
        """``(images, targets)`` in memory: an array when every image has one shape, else a list of arrays."""
        n = self._size if limit is None else min(self._size, int(limit))
        y = None if self.targets is None else self.targets[:n]
        if self._array is not None:
            return np.ascontiguousarray(self._array[:n]), y
        imgs = [self._get(i) for i in range(n)]
        if len({(im.shape, im.dtype) for im in imgs}) == 1:
            return np.stack(imgs), y
        return imgs, y

    def describe(self) -> str:
        what = "%d %s" % (self._size, "arrays" if self.model_ready else "images")
        if self.targets is not None:
            k = len(self.classes) if self.classes else len(np.unique(self.targets))
            what += ", labelled, %d classes" % k
        return "%s %s (%s)" % (self.kind, self.source, what)

    # -- labels against a model --------------------------------------------------------------------
    def labels_for(self, model_labels: Optional[Sequence[str]], num_classes: Optional[int]) -> Optional[np.ndarray]:
        """The targets as indices into a model's classes, or None when the data has no labels.

        Class names are matched by name when the model has labels (an ImageFolder may hold a subset of the
        classes), each on its own: a model label, that label with ``_`` for each ``/`` (a folder cannot be named
        ``T-shirt/top``: ``T-shirt_top`` is), or an integer name (``0``, ``1``…), which is an index; integer
        labels are indices. Labels out of range and class counts that differ from the model are refused with
        one line.
        """
        if self.targets is None:
            return None
        y = self.targets
        if self.classes is not None:
            names = list(self.classes)
            if model_labels is not None:
                lookup = {n: i for i, n in enumerate(model_labels)}
                for i, n in enumerate(model_labels):
                    lookup.setdefault(n.replace("/", "_"), i)
                index = [lookup.get(n, _index(n, self.source) if _is_index(n) else None) for n in names]
                if all(i is not None for i in index):
                    y = np.array(index, dtype=np.int64)[y]
                else:
                    unknown = [n for n, i in zip(names, index) if i is None]
                    raise DataError("%s has classes the model does not know: %s (the model's labels: %s); name the "
                                    "classes like the model's labels ('_' for a '/' in a label), or by class index"
                                    % (self.source, ", ".join(repr(n) for n in unknown[:5]), ", ".join(model_labels)))
            elif all(_is_index(n) for n in names):
                y = np.array([_index(n, self.source) for n in names], dtype=np.int64)[y]
            elif num_classes is not None and len(names) != num_classes:
                raise DataError("%s has %d classes (%s) but the model answers over %d%s"
                                % (self.source, len(names), ", ".join(names[:10]), num_classes, self._empty_hint()))
        if num_classes is not None and y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise DataError("%s has labels %d..%d but the model answers over %d classes (0..%d); the labels do not "
                            "fit the model" % (self.source, int(y.min()), int(y.max()), num_classes, num_classes - 1))
        return y


    def _empty_hint(self) -> str:
        """The end of a class-count error: the empty class folders and what to do, or that the data does not fit."""
        if not self.empty_classes:
            return "; the data does not fit the model"
        many = len(self.empty_classes) > 1
        return (" (the folder%s %s hold%s no images); add images to %s, or give the model's class names (export "
                "or cascade --labels): the data's classes are then matched by name"
                % ("s" if many else "", _folders(self.empty_classes), "" if many else "s", "them" if many else "it"))


#: a class name that is a class index: ASCII digits only (``²`` or ``٣`` are names)
_INDEX = re.compile(r"-?[0-9]+")
_INT64_MAX = int(np.iinfo(np.int64).max)


def _is_index(name: str) -> bool:
    """A class name that is a class index (``0``, ``12``; a negative one is refused later as out of range)."""
    return _INDEX.fullmatch(name.strip()) is not None


def _index(name: str, source: str) -> int:
    """The class index a class name such as ``12`` stands for; one too large for int64 is refused with one line."""
    digits = name.strip().lstrip("-").lstrip("0")
    if len(digits) > len(str(_INT64_MAX)) or int(digits or "0") > _INT64_MAX:
        shown = name.strip() if len(name.strip()) <= 30 else name.strip()[:27] + "…"
        raise DataError("%s has the class %s, too large for a class index; name the classes like the model's labels "
                        "or by class index 0, 1, 2…" % (source, shown))
    return int(name)


def _folders(names: Sequence[str]) -> str:
    return ", ".join("%s/" % d for d in names[:10]) + (", …" if len(names) > 10 else "")


# ---------------------------------------------------------------------------------------- opening
def _array_dataset(source: str, kind: str, x: np.ndarray, y: Optional[np.ndarray], classes: Optional[List[str]],
                   max_pixels: Optional[int]) -> Dataset:
    base = os.path.basename(source)
    if np.issubdtype(x.dtype, np.floating):
        if x.ndim < 2 or x.shape[0] == 0 or x.size == 0:
            raise DataError("%s holds model-ready arrays of shape %s; expected (N, ...) with N >= 1" % (source, x.shape))
        model_ready = True
    else:
        x = image_array(x, source, max_pixels)
        model_ready = False
    return Dataset(source, kind, int(x.shape[0]), lambda i: np.asarray(x[i]), lambda i: "%s[%d]" % (base, i),
                   y, classes, model_ready, x)


def _targets(y: np.ndarray, source: str) -> np.ndarray:
    if y.ndim != 1:
        raise DataError("%s: y must be one integer label per sample (shape (N,)), got shape %s" % (source, y.shape))
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and y.size and np.all(np.mod(y, 1) == 0)):
            raise DataError("%s: y must hold integer class indices, got dtype %s" % (source, y.dtype))
    if y.size:
        low, high = y.min().item(), y.max().item()  # Python numbers: exact for uint64 and float
        for value in (low, high):
            if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
                raise DataError("%s: y holds the label %r, far outside any class index; y must hold class indices "
                                "0, 1, 2…" % (source, value))
    return y.astype(np.int64)


def _open_npz(path: str, max_pixels: Optional[int]) -> Dataset:
    arrays = read_npz(path)
    key = next((k for k in ("x", "images") if k in arrays), None)
    if key is None:
        raise DataError("%s has no array 'x' (it has: %s); expected %s" % (path, ", ".join(sorted(arrays)) or "none",
                                                                          FORMATS_HELP))
    y = arrays.get("y", arrays.get("labels"))
    classes = None
    names = arrays.get("classes")
    if names is not None:
        if names.dtype.kind not in "US" or names.ndim != 1:
            raise DataError("%s: 'classes' must be a 1-D array of class names (strings)" % path)
        classes = [str(n) for n in names.tolist()]
    targets = _targets(y, path) if y is not None else None
    if classes is not None and targets is not None and targets.size and (targets.min() < 0 or targets.max() >= len(classes)):
        raise DataError("%s: labels %d..%d but only %d class names" % (path, targets.min(), targets.max(), len(classes)))
    return _array_dataset(path, "npz", arrays[key], targets, classes, max_pixels)


def _open_idx(images: str, labels: Optional[str], source: str, fashion: bool, max_pixels: Optional[int]) -> Dataset:
    x = read_idx(images)
    y = None
    if labels is not None:
        y = read_idx(labels)
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError("%s has %d images but %s holds labels of shape %s; the files do not belong together"
                            % (images, x.shape[0], labels, y.shape))
        y = y.astype(np.int64)
    classes = list(FASHION_LABELS) if fashion else None
    if classes is not None and y is not None and y.size and y.max() >= len(classes):
        classes = None
    return _array_dataset(source, "idx", x, y, classes, max_pixels)


def _path_dataset(source: str, kind: str, paths: List[str], targets: Optional[np.ndarray],
                  classes: Optional[List[str]], max_pixels: Optional[int], root: str,
                  empty_classes: Sequence[str] = ()) -> Dataset:
    def name(i: int) -> str:
        return os.path.relpath(paths[i], root) if root else paths[i]

    return Dataset(source, kind, len(paths), lambda i: read_image(paths[i], max_pixels), name, targets, classes,
                   empty_classes=empty_classes)


def _walk_images(folder: str) -> List[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames) if is_image_path(f) and not f.startswith("."))
    return out


def _open_folder(folder: str, split: Optional[str], max_pixels: Optional[int]) -> Dataset:
    entries = sorted(e for e in os.listdir(folder) if not e.startswith("."))
    if any(is_idx_images(e) for e in entries):
        images, labels = find_split(folder, split or "test")
        fashion = "fashion" in os.path.abspath(folder).lower()
        return _open_idx(images, labels, "%s:%s" % (folder, split or "test"), fashion, max_pixels)
    if split is not None:
        raise DataError("%s:%s names a split, but %s holds no IDX files" % (folder, split, folder))
    subdirs = [e for e in entries if os.path.isdir(os.path.join(folder, e))]
    loose = [e for e in entries if is_image_path(e) and os.path.isfile(os.path.join(folder, e))]
    classes = [d for d in subdirs if _walk_images(os.path.join(folder, d))]
    empty = [d for d in subdirs if d not in classes]
    if classes:
        if loose:
            raise DataError("%s holds both class subfolders (%s) and loose images (%s); an ImageFolder keeps every "
                            "image inside its class's subfolder" % (folder, ", ".join(classes[:3]), loose[0]))
        if len(classes) < 2:
            raise DataError("ImageFolder %s has one class folder (%s)%s; a labelled data set needs at least two "
                            "classes, one subfolder each" % (folder, classes[0], " (%s hold%s no images)" % (
                                _folders(empty), "s" if len(empty) == 1 else "") if empty else ""))
        paths: List[str] = []
        targets: List[int] = []
        for k, c in enumerate(classes):
            found = _walk_images(os.path.join(folder, c))
            paths += found
            targets += [k] * len(found)
        return _path_dataset(folder, "imagefolder", paths, np.asarray(targets, np.int64), classes, max_pixels, folder,
                             empty)
    if loose:
        return _path_dataset(folder, "folder", [os.path.join(folder, e) for e in loose], None, None, max_pixels, "")
    raise DataError("folder %s holds no images, no class subfolders with images and no IDX files; expected %s"
                    % (folder, FORMATS_HELP))


def _open_list(path: str, max_pixels: Optional[int]) -> Dataset:
    entries = read_list(path)
    targets, classes = None, None
    if entries.labels is not None:
        if isinstance(entries.labels[0], str):
            classes = sorted(set(str(v) for v in entries.labels))
            lookup = {c: i for i, c in enumerate(classes)}
            targets = np.array([lookup[str(v)] for v in entries.labels], dtype=np.int64)
        else:
            targets = np.array(entries.labels, dtype=np.int64)
            if targets.min() < 0:
                raise DataError("list %s has a negative label (%d); labels are class indices >= 0" % (path, targets.min()))
    root = os.path.dirname(os.path.abspath(path))
    return _path_dataset(path, "list", entries.paths, targets, classes, max_pixels, root)


def _split_spec(spec: str) -> Tuple[str, Optional[str]]:
    for split in ("train", "test"):
        suffix = ":" + split
        if spec.endswith(suffix) and (spec[:-len(suffix)] == FASHION or os.path.isdir(spec[:-len(suffix)])):
            return spec[:-len(suffix)], split
    return spec, None


def open_dataset(spec: Any, max_pixels: Optional[int] = None) -> Dataset:
    """Open a data set from a path or name (see the module doc for the formats); one-line :class:`DataError`
    naming what was expected when it is none of them."""
    if isinstance(spec, np.ndarray) or (isinstance(spec, (list, tuple)) and spec):
        raise DataError("data given as %s: arrays are given as a pair (x, y) of images and integer labels (y None "
                        "where there are none), anything else by its path or name: %s"
                        % ("an array" if isinstance(spec, np.ndarray) else "a %s of %d items" % (type(spec).__name__,
                                                                                                   len(spec)),
                           FORMATS_HELP))
    if isinstance(spec, (str, bytes, os.PathLike)):
        spec = os.fspath(spec)
        if isinstance(spec, bytes):
            spec = os.fsdecode(spec)
    if not isinstance(spec, str) or not spec:
        raise DataError("no data given (got %s); expected the path or name of %s, or a pair (x, y) of arrays"
                        % (repr(spec) if spec is None or isinstance(spec, str) else "type " + type(spec).__name__,
                           FORMATS_HELP))
    path, split = _split_spec(spec)
    if path == FASHION:
        root = resolve_root(None)
        images, labels = find_split(root, split or "test")
        return _open_idx(images, labels, "%s:%s" % (FASHION, split or "test"), True, max_pixels)
    if os.path.isdir(path):
        return _open_folder(path, split, max_pixels)
    if not os.path.exists(path):
        raise DataError("data %s does not exist; expected %s" % (path, FORMATS_HELP))
    low = path.lower()
    if low.endswith(".npz"):
        return _open_npz(path, max_pixels)
    if low.endswith(".npy"):
        return _array_dataset(path, "npy", read_npy(path), None, None, max_pixels)
    if low.endswith(LIST_EXTENSIONS):
        return _open_list(path, max_pixels)
    if is_idx_images(low):
        fashion = "fashion" in os.path.abspath(path).lower()
        return _open_idx(path, idx_labels_for(path), path, fashion, max_pixels)
    if is_image_path(low):
        return _path_dataset(path, "image", [path], None, None, max_pixels, "")
    raise DataError("cannot tell the format of %s from its name; expected %s" % (path, FORMATS_HELP))


__all__ = ["Dataset", "Sample", "open_dataset", "FORMATS_HELP", "FASHION", "ENV_VAR", "DEFAULT_ROOT"]
