"""Property-based fuzzing (hypothesis): whatever bytes or values arrive, the outcome is a valid load or an
``EdgeconfError`` subclass, never another exception. Manifests are mutated from a valid bundle's (types, ranges,
nesting, paths, hashes); the .npy/.npz/image readers and the ONNX, JSON and manifest parsers get mutated bytes."""
from __future__ import annotations

import copy
import io
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeconf.backends.onnx_file import parse_onnx_facts
from edgeconf.bundle import MANIFEST, StageSpec, load_bundle, parse_manifest, save_bundle
from edgeconf.errors import EdgeconfError
from edgeconf.preprocess import Preprocessing
from edgeconf.schema.jsonload import loads, nesting_depth

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: values of every JSON type and of the edge cases a check must catch
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10 ** 30, max_value=10 ** 30),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0, 1, -1, 0.5, 1.9, 1e308, 1e-308, 2 ** 63]),
    st.text(max_size=12), st.sampled_from(["", "../x.onnx", "/etc/passwd", "a\0b", "false", "Infinity", "\ud800",
                                           "dhash64", "exact", "image", "logits", "x" * 5000]),
    st.lists(st.integers(0, 9), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """A valid two-stage bundle (folder, manifest JSON)."""
    from onnx_models import random_classifier, save

    folder = tmp_path_factory.mktemp("fuzz") / "bundle"
    src = folder.parent
    a = save(random_classifier(1), src / "a.onnx")
    b = save(random_classifier(2), src / "b.onnx")
    save_bundle(str(folder), [StageSpec("a", "a.onnx", "margin", 0.4), StageSpec("b", "b.onnx", "maxp", 0.0)],
                {"a.onnx": a, "b.onnx": b}, ["c%d" % i for i in range(10)], Preprocessing())
    return folder, json.loads((folder / MANIFEST).read_text())


def _paths(value, prefix=()):
    """Every (path, value) inside a JSON value."""
    yield prefix, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _set(data, path, value):
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


@st.composite
def mutated_manifest(draw, base):
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "nest", "add"]))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if action == "replace":
            _set(data, path, draw(ODD_VALUES))
        elif action == "delete":
            if isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.pop(path[-1])
        elif action == "nest":
            value = parent[path[-1]]
            for _ in range(draw(st.integers(1, 60))):
                value = [value] if draw(st.booleans()) else {"x": value}
            parent[path[-1]] = value
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(ODD_VALUES)
        else:
            parent.append(draw(ODD_VALUES))
    return data


def test_mutated_manifests_load_or_raise_edgeconf_errors(valid):
    folder, base = valid

    @FUZZ
    @given(mutated_manifest(base))
    def check(data):
        try:
            manifest = parse_manifest(data)
        except EdgeconfError:
            return
        assert manifest.stages and manifest.labels  # accepted: then it is a complete, typed manifest
        for spec in manifest.stages:
            assert isinstance(spec.name, str) and isinstance(spec.threshold, float) and 0 <= spec.threshold <= 1
            assert isinstance(spec.temperature, float) and spec.temperature > 0
        assert isinstance(manifest.memo.enabled, bool) and isinstance(manifest.memo.capacity, int)

    check()


def test_mutated_manifest_files_load_or_raise_edgeconf_errors(valid, tmp_path):
    """The same through the folder: load_bundle reads, verifies hashes and builds the cascade."""
    folder, base = valid
    work = tmp_path / "bundle"
    work.mkdir()
    for name in ("a.onnx", "b.onnx"):
        os.link(folder / name, work / name)

    @settings(max_examples=60, deadline=None)
    @given(mutated_manifest(base))
    def check(data):
        (work / MANIFEST).write_text(json.dumps(data))
        try:
            load_bundle(str(work)).close()
        except EdgeconfError:
            pass

    check()


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_manifest_bytes_never_escape_as_other_exceptions(tmp_path_factory, raw):
    folder = tmp_path_factory.mktemp("raw")
    (folder / MANIFEST).write_bytes(raw)
    with pytest.raises(EdgeconfError):
        load_bundle(str(folder))


@FUZZ
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,: ', max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=3),
                                                                                 inner, max_size=3), max_leaves=30))
def test_nesting_depth_agrees_with_json(value):
    text = json.dumps(value)
    depth = max((len(p) for p, v in _paths(value) if isinstance(v, (list, dict))), default=-1) + 1
    assert nesting_depth(text) == depth
    assert loads(text, "x") == value


@FUZZ
@given(st.binary(max_size=600))
def test_onnx_facts_of_random_bytes_are_facts_or_value_errors(raw):
    try:
        parse_onnx_facts(raw)
    except ValueError:
        pass


def _valid_onnx_bytes():
    from onnx_models import random_classifier

    return random_classifier(1).SerializeToString()


@FUZZ
@given(st.data())
def test_onnx_facts_of_mutated_models(data):
    raw = bytearray(_valid_onnx_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        parse_onnx_facts(bytes(raw[:cut]))
    except ValueError:
        pass


# -- the readers of images and arrays (edgeconf.datasets) -------------------------------------------------
def _npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _mutate(data, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(0, 6))):
        if b:
            b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    return bytes(b[: data.draw(st.integers(0, len(b)))]) if data.draw(st.booleans()) else bytes(b)


@FUZZ
@given(st.data())
def test_npy_reader_on_mutated_files(tmp_path_factory, data):
    from edgeconf.datasets.arrays import read_npy

    shape = tuple(data.draw(st.lists(st.integers(0, 6), min_size=0, max_size=4)))
    dtype = data.draw(st.sampled_from(["uint8", "float32", "int64", "bool", "<U3"]))
    raw = _mutate(data, _npy_bytes(np.zeros(shape, dtype=dtype)))
    path = tmp_path_factory.mktemp("npy") / "x.npy"
    path.write_bytes(raw)
    try:
        read_npy(str(path))
    except EdgeconfError:
        pass


@FUZZ
@given(st.data())
def test_npz_reader_on_mutated_files(tmp_path_factory, data):
    from edgeconf.datasets.arrays import read_npz

    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((2, 4, 4), np.uint8), y=np.arange(2))
    path = tmp_path_factory.mktemp("npz") / "x.npz"
    path.write_bytes(_mutate(data, buf.getvalue()))
    try:
        read_npz(str(path))
    except EdgeconfError:
        pass


@FUZZ
@given(st.data())
def test_image_reader_on_mutated_files(tmp_path_factory, data):
    import cv2

    from edgeconf.datasets.images import read_image

    ext = data.draw(st.sampled_from([".png", ".jpg", ".bmp", ".pgm", ".tif", ".webp"]))
    ok, enc = cv2.imencode(ext, np.full((9, 7) if ext == ".pgm" else (9, 7, 3), 90, np.uint8))
    assert ok
    path = tmp_path_factory.mktemp("img") / ("x" + ext)
    path.write_bytes(_mutate(data, enc.tobytes()))
    try:
        img = read_image(str(path))
    except EdgeconfError:
        return
    assert img.dtype == np.uint8 and img.ndim in (2, 3)
