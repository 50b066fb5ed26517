"""open_dataset: every format, streaming folders, labels against a model, and one-line errors for bad data."""
from __future__ import annotations

import gzip
import json
import os
import struct
import warnings

import cv2
import numpy as np
import pytest

from edgeconf.datasets import FASHION_LABELS, open_dataset
from edgeconf.datasets import idx as idx_module
from edgeconf.errors import DataError


def _png(path, value: int, shape=(6, 5)) -> str:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))
    return str(path)


def _idx(path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(str(path), "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "imgs"
    for cls, values in (("cat", (10, 11)), ("dog", (20,)), ("eel", (30, 31, 32))):
        for v in values:
            _png(root / cls / ("%d.png" % v), v)
    return root


# -- formats ---------------------------------------------------------------------------------------
def test_npz_with_images_labels_and_class_names(tmp_path):
    x = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([2, 0, 1]), classes=np.array(["a", "b", "c"]))
    ds = open_dataset(str(tmp_path / "d.npz"))
    assert len(ds) == 3 and ds.kind == "npz" and not ds.model_ready
    assert ds.targets.tolist() == [2, 0, 1] and ds.classes == ["a", "b", "c"]
    np.testing.assert_array_equal(ds.image(1), x[1])
    assert ds.name(2) == "d.npz[2]"
    images, y = ds.load()
    np.testing.assert_array_equal(images, x)


def test_npz_of_model_ready_floats_and_npy_without_labels(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    assert open_dataset(str(tmp_path / "f.npz")).model_ready
    np.save(tmp_path / "i.npy", np.zeros((2, 8, 8, 3), np.uint8))
    ds = open_dataset(str(tmp_path / "i.npy"))
    assert len(ds) == 2 and not ds.labelled and ds.image(0).shape == (8, 8, 3)


def test_image_folder_classes_come_from_subfolders(image_folder):
    ds = open_dataset(str(image_folder))
    assert ds.kind == "imagefolder" and ds.classes == ["cat", "dog", "eel"]
    assert ds.targets.tolist() == [0, 0, 1, 2, 2, 2]
    assert [ds.name(i) for i in range(len(ds))][:3] == ["cat/10.png", "cat/11.png", "dog/20.png"]
    assert [int(s.image[0, 0]) for s in ds.samples()] == [10, 11, 20, 30, 31, 32]


def test_folders_are_streamed_and_bad_files_skipped_on_request(image_folder):
    (image_folder / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = open_dataset(str(image_folder))  # opening reads no image
    assert len(ds) == 7
    with pytest.raises(DataError, match="broken.png"):
        list(ds.samples())
    got = list(ds.samples(skip_errors=True))
    bad = [s for s in got if s.error]
    assert len(got) == 7 and len(bad) == 1 and bad[0].name == "dog/broken.png" and bad[0].image is None
    assert "corrupt PNG header" in bad[0].error


def test_flat_folder_is_unlabelled(tmp_path):
    for v in (1, 2):
        _png(tmp_path / "flat" / ("%d.jpg" % v), v * 50)
    ds = open_dataset(str(tmp_path / "flat"))
    assert ds.kind == "folder" and not ds.labelled and len(ds) == 2


def test_idx_folder_with_split_and_images_file(tmp_path, monkeypatch):
    root = tmp_path / "fashion"
    root.mkdir()
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 256, (3, 28, 28))
    _idx(root / "train-images-idx3-ubyte.gz", train)
    _idx(root / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4]))
    _idx(root / "t10k-images-idx3-ubyte.gz", test)
    _idx(root / "t10k-labels-idx1-ubyte.gz", np.array([9, 8, 7]))
    ds = open_dataset(str(root))  # the test split by default
    assert len(ds) == 3 and ds.targets.tolist() == [9, 8, 7] and ds.classes == FASHION_LABELS
    assert open_dataset(str(root) + ":train").targets.tolist() == [0, 1, 2, 3, 4]
    one = open_dataset(str(root / "train-images-idx3-ubyte.gz"))
    assert len(one) == 5 and one.labelled
    monkeypatch.setenv(idx_module.ENV_VAR, str(root))
    np.testing.assert_array_equal(open_dataset("fashion-mnist:train").image(4), train[4])


def test_csv_and_jsonl_lists(tmp_path, image_folder):
    (tmp_path / "l.csv").write_text("path,label\nimgs/cat/10.png,3\nimgs/dog/20.png,1\n")
    ds = open_dataset(str(tmp_path / "l.csv"))
    assert ds.kind == "list" and ds.targets.tolist() == [3, 1] and ds.classes is None
    assert int(ds.image(1)[0, 0]) == 20
    (tmp_path / "n.jsonl").write_text('{"path": "imgs/cat/11.png", "label": "cat"}\n\n'
                                      '{"path": "%s", "label": "dog"}\n' % (image_folder / "dog" / "20.png"))
    ds = open_dataset(str(tmp_path / "n.jsonl"))
    assert ds.classes == ["cat", "dog"] and ds.targets.tolist() == [0, 1]
    (tmp_path / "u.csv").write_text("imgs/cat/10.png\nimgs/eel/30.png\n")
    assert not open_dataset(str(tmp_path / "u.csv")).labelled


# -- bad data ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, message", [
    (lambda p: np.savez(p / "e.npz", x=np.zeros((0, 28, 28), np.uint8)), "holds no images"),
    (lambda p: (p / "e.csv").write_text("path,label\n"), "names no images; the data set is empty"),
    (lambda p: (p / "e").mkdir(), "holds no images, no class subfolders"),
    (lambda p: np.savez(p / "e.npz", images_wrong=np.zeros((2, 4, 4), np.uint8)), "has no array 'x'"),
    (lambda p: np.savez(p / "e.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0.5, 1])), "integer class indices"),
    (lambda p: np.savez(p / "e.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 1, 2])), "do not belong"),
    (lambda p: np.savez(p / "e.npz", x=np.zeros((2, 4, 4), np.int32)), "must be uint8"),
    (lambda p: (p / "e.txt").write_text("hello"), "cannot tell the format"),
    (lambda p: None, "does not exist; expected an .npz"),
])
def test_bad_data_gets_one_line(tmp_path, make, message):
    make(tmp_path)
    target = next((str(tmp_path / n) for n in ("e.npz", "e.csv", "e", "e.txt") if os.path.exists(tmp_path / n)),
                  str(tmp_path / "missing.npz"))
    with pytest.raises(DataError, match=message) as err:
        open_dataset(target)
    assert "\n" not in str(err.value)


def test_an_image_folder_with_one_class_is_refused(tmp_path):
    _png(tmp_path / "one" / "only" / "a.png", 1)
    with pytest.raises(DataError, match="has one class folder \\(only\\); a labelled data set needs at least two"):
        open_dataset(str(tmp_path / "one"))


def test_loose_images_beside_class_folders_are_refused(image_folder):
    _png(image_folder / "stray.png", 1)
    with pytest.raises(DataError, match="both class subfolders .* and loose images"):
        open_dataset(str(image_folder))


def test_a_list_naming_missing_files(tmp_path, image_folder):
    (tmp_path / "m.csv").write_text("imgs/cat/10.png,0\nimgs/cat/nope.png,1\nimgs/dog/gone.png,1\n")
    with pytest.raises(DataError, match="names 2 file\\(s\\) that do not exist, e.g. .*nope.png"):
        open_dataset(str(tmp_path / "m.csv"))


@pytest.mark.parametrize("text, message", [
    ("imgs/cat/10.png,0\nimgs/dog/20.png,dog\n", "mixes class indices and class names"),
    ("imgs/cat/10.png,0\nimgs/dog/20.png\n", "labels for some images only"),
    ("imgs/cat/10.png,-1\n", "negative label"),
    ("imgs/cat/10.png,0,extra\n", "3 columns"),
])
def test_bad_lists(tmp_path, image_folder, text, message):
    (tmp_path / "b.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        open_dataset(str(tmp_path / "b.csv"))
    (tmp_path / "j.jsonl").write_text(json.dumps({"file": 3}) + "\n")
    with pytest.raises(DataError, match="no \"path\" string"):
        open_dataset(str(tmp_path / "j.jsonl"))


# -- labels against a model -----------------------------------------------------------------------------
def test_labels_map_by_name_onto_the_models_classes(image_folder):
    ds = open_dataset(str(image_folder))
    model = ["ant", "cat", "dog", "eel", "fox"]
    assert ds.labels_for(model, 5).tolist() == [1, 1, 2, 3, 3, 3]  # a subset of the model's classes, by name
    with pytest.raises(DataError, match="classes the model does not know: 'cat'"):
        ds.labels_for(["dog", "eel"], 2)
    assert ds.labels_for(None, 3).tolist() == [0, 0, 1, 2, 2, 2]  # no model labels: folder order
    with pytest.raises(DataError, match="has 3 classes \\(cat, dog, eel\\) but the model answers over 10"):
        ds.labels_for(None, 10)


def test_empty_class_folders_are_named_when_the_class_count_does_not_fit(image_folder):
    os.makedirs(str(image_folder / "bat"))  # sorts first: the data's classes shift by one
    os.makedirs(str(image_folder / "fox"))
    ds = open_dataset(str(image_folder))
    assert ds.classes == ["cat", "dog", "eel"] and ds.empty_classes == ["bat", "fox"]
    with pytest.raises(DataError, match="has 3 classes \\(cat, dog, eel\\) but the model answers over 5 \\(the folders "
                                        "bat/, fox/ hold no images\\); add images to them, or give the model's class "
                                        "names") as err:
        ds.labels_for(None, 5)
    assert "\n" not in str(err.value)
    assert ds.labels_for(["bat", "cat", "dog", "eel", "fox"], 5).tolist() == [1, 1, 2, 3, 3, 3]  # by name
    os.makedirs(str(image_folder.parent / "two" / "ant"))
    _png(image_folder.parent / "two" / "cat" / "a.png", 1)
    with pytest.raises(DataError, match="has one class folder \\(cat\\) \\(ant/ holds no images\\)"):
        open_dataset(str(image_folder.parent / "two"))


def test_a_label_with_a_slash_is_named_by_underscore_or_index_folder_by_folder(tmp_path):
    # FashionMNIST's class 0 is "T-shirt/top": no folder can carry that name
    for cls in ("T-shirt_top", "Trouser", "9"):
        _png(tmp_path / "d" / cls / "a.png", 1)
    ds = open_dataset(str(tmp_path / "d"))
    assert sorted(ds.labels_for(FASHION_LABELS, 10).tolist()) == [0, 1, 9]
    _png(tmp_path / "d" / "T-shirt-top" / "a.png", 1)
    with pytest.raises(DataError, match="classes the model does not know: 'T-shirt-top' .*'_' for a '/' in a label"):
        open_dataset(str(tmp_path / "d")).labels_for(FASHION_LABELS, 10)


def test_integer_folder_names_are_indices_and_ranges_are_checked(tmp_path):
    for cls in ("3", "7"):
        _png(tmp_path / "d" / cls / "a.png", 1)
    ds = open_dataset(str(tmp_path / "d"))
    assert ds.labels_for(FASHION_LABELS, 10).tolist() == [3, 7]
    with pytest.raises(DataError, match="labels 3..7 but the model answers over 5 classes"):
        ds.labels_for(None, 5)
    np.savez(tmp_path / "y.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 12]))
    with pytest.raises(DataError, match="labels 0..12 but the model answers over 10 classes \\(0..9\\)"):
        open_dataset(str(tmp_path / "y.npz")).labels_for(FASHION_LABELS, 10)


# -- labels that only look like numbers, and numbers no index can be -----------------------------------
def test_superscript_digits_are_class_names_not_indices(tmp_path):
    for cls in ("¹", "²"):
        _png(tmp_path / "sup" / cls / "a.png", 1)
    ds = open_dataset(str(tmp_path / "sup"))
    assert ds.labels_for(None, 2).tolist() == [0, 1]  # names in folder order, not int("¹")
    with pytest.raises(DataError, match="classes the model does not know: '²', '¹'"):
        ds.labels_for(["a", "b"], 2)
    _png(tmp_path / "a.png", 1)
    (tmp_path / "sup.csv").write_text("a.png,²\na.png,³\n")
    assert open_dataset(str(tmp_path / "sup.csv")).classes == ["²", "³"]
    (tmp_path / "arabic.csv").write_text("a.png,\u0663\n")  # ARABIC-INDIC DIGIT THREE: a name, not index 3
    assert open_dataset(str(tmp_path / "arabic.csv")).classes == ["\u0663"]
    np.savez(tmp_path / "c.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 1]), classes=np.array(["¹", "²"]))
    assert open_dataset(str(tmp_path / "c.npz")).labels_for(None, 2).tolist() == [0, 1]


@pytest.mark.parametrize("text", ["a.png,99999999999999999999999\n", "a.png,9223372036854775808\n",
                                  "a.png," + "9" * 5000 + "\n"])
def test_a_list_label_too_large_for_an_index_is_refused(tmp_path, text):
    _png(tmp_path / "a.png", 1)
    (tmp_path / "big.csv").write_text(text)
    with pytest.raises(DataError, match="big.csv row 1: the label (9+|9223372036854775808|9{27}…) is too large for a class index; labels are "
                                        "class indices") as err:
        open_dataset(str(tmp_path / "big.csv"))
    assert "\n" not in str(err.value)


def test_a_jsonl_label_too_large_for_an_index_is_refused(tmp_path):
    _png(tmp_path / "a.png", 1)
    (tmp_path / "big.jsonl").write_text('{"path": "a.png", "label": 1e30}\n')
    with pytest.raises(DataError, match="big.jsonl line 1: the label 1e\\+30 is too large for a class index"):
        open_dataset(str(tmp_path / "big.jsonl"))


def test_a_class_folder_named_by_a_huge_number_is_refused(tmp_path):
    for cls in ("1", "99999999999999999999999"):
        _png(tmp_path / "d" / cls / "a.png", 1)
    ds = open_dataset(str(tmp_path / "d"))
    for labels in (None, FASHION_LABELS):
        with pytest.raises(DataError, match="has the class 99999999999999999999999, too large for a class index"):
            ds.labels_for(labels, 10)


@pytest.mark.parametrize("y, shown", [(np.array([0, 1e30]), "1e\\+30"),
                                      (np.array([0, 2 ** 63 + 5], np.uint64), "9223372036854775813"),
                                      (np.array([-1e19, 0]), "-1e\\+19")])
def test_npz_labels_beyond_int64_are_refused_with_their_true_value(tmp_path, y, shown):
    np.savez(tmp_path / "y.npz", x=np.zeros((2, 4, 4), np.uint8), y=y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value encountered in cast" on the way
        with pytest.raises(DataError, match="y holds the label %s, far outside any class index" % shown) as err:
            open_dataset(str(tmp_path / "y.npz"))
    assert "\n" not in str(err.value)


def test_a_deeply_nested_jsonl_line_is_refused_in_one_line(tmp_path):
    _png(tmp_path / "a.png", 1)
    for name, line in (("deep.jsonl", '{"path": "a.png", "label": ' + "[" * 100000 + "]" * 100000 + "}"),
                       ("bare.jsonl", "[" * 100000)):
        (tmp_path / name).write_text(line + "\n")
        with pytest.raises(DataError, match="%s line 1 nests arrays/objects 10000[01] levels deep; at most 32" % name):
            open_dataset(str(tmp_path / name))
