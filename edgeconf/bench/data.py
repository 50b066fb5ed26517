"""The benchmark's data: any data set :func:`edgeconf.datasets.open_dataset` reads, checked against the bundle.

Refused up front, in one line: data without labels, labels that do not fit the bundle's classes (by name or
index), and images whose channels do not fit a preprocessing (grey images for an RGB model, or the reverse),
which would otherwise run and report accuracies that mean nothing. Images of another size are resized by the
preprocessing, as in deployment; that is noted.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Union

import numpy as np

from edgeconf.datasets import FASHION_LABELS, open_dataset
from edgeconf.errors import ConfigError, DataError
from edgeconf.preprocess import Preprocessing, channel_mismatch

#: the data ``edgeconf bench`` uses when none is given (with the shipped zoo only)
DEFAULT_DATA = "fashion-mnist:test"
Images = Union[np.ndarray, List[np.ndarray]]


@dataclass
class BenchData:
    """The base samples of the benchmark: raw images, labels as the bundle's class indices, and what they are."""

    images: Images
    labels: np.ndarray
    name: str
    notes: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def check_fit(data: BenchData, pre: Optional[Preprocessing], what: str) -> None:
    """Refuse images whose channels do not fit ``pre``; note a size that the preprocessing changes."""
    if pre is None:
        raise ConfigError("%s has no preprocessing; the benchmark classifies raw images" % what)
    wrong = channel_mismatch(data.images, pre)
    if wrong:
        raise DataError("%s takes %s images (preprocessing channels %d) but %s holds %s images; benchmark it on the "
                        "data it was built for (--data)" % (what, wrong[0], pre.channels, data.name, wrong[1]))
    sizes = {tuple(np.shape(im)[:2]) for im in (data.images[:256] if isinstance(data.images, list) else data.images[:1])}
    if sizes != {pre.size}:
        data.notes.append("%s resizes the images (%s) to %d×%d (%s)" % (what, ", ".join("%d×%d" % s for s in sorted(sizes)),
                                                                       pre.size[0], pre.size[1], pre.resize))


def limit_sample(labels: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Indices (ascending) of a seeded, class-stratified random sample of ``limit`` of the samples whose class
    indices are ``labels``: each class gets its share of ``limit`` (largest remainders first), at least one
    sample while ``limit`` allows, so a data set stored class by class is not cut to its first classes."""
    labels = np.asarray(labels)
    n = len(labels)
    if limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * (limit / n)
    take = np.floor(share).astype(np.int64)
    if limit >= len(classes):
        take = np.maximum(take, 1)
    # hand out what is left by largest remainder (ties broken by the seed), or take back from the largest shares
    order = np.lexsort((rng.random(len(classes)), -(share - np.floor(share))))
    k = 0
    while take.sum() < limit:
        c = order[k % len(order)]
        if take[c] < counts[c]:
            take[c] += 1
        k += 1
    while take.sum() > limit:
        c = int(np.argmax(np.where(take > 1, take - share, -np.inf)))  # never below one sample
        take[c] -= 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=int(t), replace=False) for c, t in zip(classes, take) if t]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def load_bench_data(spec: Optional[str], labels: Sequence[str], classes: int, limit: Optional[int] = None,
                    max_pixels: Optional[int] = None, seed: int = 0) -> BenchData:
    """The labelled samples of ``spec`` (default: the FashionMNIST test split).

    ``limit``: a seeded (``seed``), class-stratified random sample of that many samples, in the data's order,
    noted in the result's notes; every class keeps its share (at least one sample while ``limit`` allows).
    """
    ds = open_dataset(spec or DEFAULT_DATA, max_pixels=max_pixels)
    if ds.model_ready:
        raise DataError("%s holds model-ready float arrays; the benchmark runs raw uint8 images through the bundle's "
                        "preprocessing and memo" % ds.source)
    if not ds.labelled:
        raise DataError("%s has no labels; the benchmark needs labelled data (an .npz with y, an ImageFolder, IDX "
                        "files, a labelled list)" % ds.source)
    if limit is not None and limit < 1:
        raise ConfigError("--limit must be >= 1, got %d" % limit)
    y = np.asarray(ds.labels_for(list(labels), classes), dtype=np.int64)
    name = "FashionMNIST test" if spec is None else ds.source
    notes: List[str] = []
    if limit is None or limit >= len(ds):
        images, _ = ds.load()
        if limit is not None:
            notes.append("--limit %d: all %d samples used (the data holds no more)" % (limit, len(ds)))
        return BenchData(images, y[:len(images)], name, notes)
    idx = limit_sample(y, limit, seed)
    imgs = [ds.image(int(i)) for i in idx]
    images: Images = np.stack(imgs) if len({(im.shape, im.dtype) for im in imgs}) == 1 else imgs
    sub = y[idx]
    notes.append("--limit %d: a seeded random sample of %d of %d samples (seed %d, stratified by class: %d of %d "
                 "classes, %d to %d samples each)" % (limit, len(idx), len(ds), seed, len(np.unique(sub)),
                                                     len(np.unique(y)), np.bincount(sub)[np.unique(sub)].min(),
                                                     np.bincount(sub).max()))
    return BenchData(images, sub, name, notes)


def baseline_fit(runner: Any, logits: str, labels: Sequence[str], classes: int, path: str) -> None:
    """The baseline must answer over the bundle's classes (and carry the same class names, when it has any)."""
    spec = runner.output(logits)
    n = spec.shape[-1] if spec.shape else None
    if isinstance(n, int) and n > 0 and n != classes:
        raise ConfigError("the baseline %s answers over %d classes but the bundle over %d; compare models of the "
                          "same task" % (path, n, classes))
    raw = (getattr(runner, "metadata", None) or {}).get("edgeconf.labels")
    if raw:
        try:
            theirs = json.loads(raw)
        except (ValueError, RecursionError):
            theirs = None
        if isinstance(theirs, list) and theirs and list(theirs) != list(labels):
            raise ConfigError("the baseline %s has the classes %s, the bundle %s; compare models of the same task"
                              % (os.path.basename(path), ", ".join(map(str, theirs[:5])) + ("…" if len(theirs) > 5 else ""),
                                 ", ".join(list(labels)[:5]) + ("…" if len(labels) > 5 else "")))


__all__ = ["BenchData", "DEFAULT_DATA", "check_fit", "limit_sample", "load_bench_data", "baseline_fit", "FASHION_LABELS"]
