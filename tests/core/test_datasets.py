"""FashionMNIST IDX loading: real files written by the tests, gzipped and plain, and the Debian package when present."""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest

from edgeconf.datasets import idx as datasets
from edgeconf.datasets import FASHION_LABELS, load_fashion_mnist, read_idx
from edgeconf.errors import DataError, EdgeconfError


def write_idx(path, array: np.ndarray, gz: bool = True, type_code: int = 0x08) -> str:
    header = struct.pack(">HBB", 0, type_code, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + np.ascontiguousarray(array).astype(array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype).tobytes()
    opener = gzip.open if gz else open
    with opener(str(path), "wb") as f:
        f.write(payload)
    return str(path)


def make_folder(folder, n_train=12, n_test=7, gz=True, dotted=False, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for split, (img, lab), n in (("train", ("train-images", "train-labels"), n_train),
                                 ("test", ("t10k-images", "t10k-labels"), n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        sep = "." if dotted else "-"
        ext = ".gz" if gz else ""
        write_idx(os.path.join(str(folder), "%s%sidx3-ubyte%s" % (img, sep, ext)), images, gz)
        write_idx(os.path.join(str(folder), "%s%sidx1-ubyte%s" % (lab, sep, ext)), labels, gz)
        out[split] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dotted", [False, True])
def test_loads_gzipped_and_plain_files_exactly(tmp_path, gz, dotted):
    truth = make_folder(tmp_path, gz=gz, dotted=dotted)
    for split in ("train", "test"):
        x, y = load_fashion_mnist(split, root=str(tmp_path))
        assert x.dtype == np.uint8 and x.shape == truth[split][0].shape
        assert y.dtype == np.int64
        np.testing.assert_array_equal(x, truth[split][0])
        np.testing.assert_array_equal(y, truth[split][1].astype(np.int64))


def test_environment_variable_names_the_folder(tmp_path, monkeypatch):
    truth = make_folder(tmp_path)
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))
    x, _ = load_fashion_mnist("test")
    np.testing.assert_array_equal(x, truth["test"][0])


def test_argument_wins_over_environment(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    make_folder(a, seed=1)
    truth_b = make_folder(b, seed=2)
    monkeypatch.setenv(datasets.ENV_VAR, str(a))
    x, _ = load_fashion_mnist("train", root=str(b))
    np.testing.assert_array_equal(x, truth_b["train"][0])


def test_missing_folder_is_a_data_error_with_a_hint(tmp_path):
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        load_fashion_mnist("train", root=str(tmp_path / "nope"))


def test_missing_file_names_it(tmp_path):
    make_folder(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_fashion_mnist("test", root=str(tmp_path))
    load_fashion_mnist("train", root=str(tmp_path))  # the other split still loads


def test_unknown_split(tmp_path):
    with pytest.raises(DataError, match="split"):
        load_fashion_mnist("validation", root=str(tmp_path))


def test_truncated_gzip_is_a_data_error(tmp_path):
    make_folder(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated|corrupt"):
        load_fashion_mnist("train", root=str(tmp_path))


def test_truncated_payload_is_a_data_error(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    path = write_idx(tmp_path / "x.idx", images, gz=False)
    with open(path, "rb") as f:
        blob = f.read()
    with open(path, "wb") as f:
        f.write(blob[:-10])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_not_idx_is_a_data_error(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"PK\x03\x04 this is a zip, not IDX")
    with pytest.raises(DataError, match="magic"):
        read_idx(str(path))
    assert issubclass(DataError, EdgeconfError)


def test_wrong_image_shape_is_refused(tmp_path):
    make_folder(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((7, 32, 32), np.uint8))
    with pytest.raises(DataError, match="28×28"):
        load_fashion_mnist("test", root=str(tmp_path))


def test_label_count_must_match_images(tmp_path):
    make_folder(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="do not belong together"):
        load_fashion_mnist("test", root=str(tmp_path))


def test_labels_out_of_range_are_refused(tmp_path):
    make_folder(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(7, 12, np.uint8))
    with pytest.raises(DataError, match="0..9"):
        load_fashion_mnist("test", root=str(tmp_path))


def test_read_idx_multibyte_types(tmp_path):
    arr = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    path = write_idx(tmp_path / "ints.idx", arr, gz=False, type_code=0x0C)
    np.testing.assert_array_equal(read_idx(path), arr)


def test_labels_are_the_ten_fashion_classes():
    assert len(FASHION_LABELS) == 10 and len(set(FASHION_LABELS)) == 10
    assert FASHION_LABELS[0] == "T-shirt/top" and FASHION_LABELS[9] == "Ankle boot"


@pytest.mark.skipif(not os.path.isdir(datasets.DEFAULT_ROOT), reason="Debian dataset-fashion-mnist not installed")
def test_debian_package_test_split():
    x, y = load_fashion_mnist("test", root=datasets.DEFAULT_ROOT)
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == [1000] * 10
    assert y[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]  # the published order of t10k-labels


@pytest.mark.parametrize("gz", [True, False])
def test_a_header_claiming_a_huge_shape_reads_only_what_the_file_holds(tmp_path, gz):
    header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">III", 4000000, 100000, 100000)
    path = str(tmp_path / ("forged.idx" + (".gz" if gz else "")))
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(header + b"\0" * 1000)
    with pytest.raises(DataError, match="holds 1000 data bytes but its header"):
        read_idx(path)
