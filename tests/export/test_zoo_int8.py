"""The shipped INT8 zoo (``scripts/quantize_zoo.py``): every copy was made from the float model shipped now, meets
the issue's targets on test data, and its recorded numbers are recomputed here on held-out test images; the
INT8 bundle's report is consistent with its shipping rule, and docs/zoo.md shows what int8.json records."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

import edgeconf
from edgeconf.bundle import load_bundle, sha256_file
from edgeconf.confidence import expected_calibration_error
from edgeconf.datasets import load_fashion_mnist
from edgeconf.errors import DataError
from edgeconf.export.data import run_outputs
from edgeconf.export.head import read_head_metadata
from edgeconf.export.quantize import ece_difference_se

ZOO = os.path.join(os.path.dirname(edgeconf.__file__), "data", "zoo")
INT8 = os.path.join(ZOO, "int8", "int8.json")
DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "docs", "zoo.md")
RERUN = "re-run scripts/quantize_zoo.py"


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def report() -> dict:
    if not os.path.isfile(INT8):
        pytest.fail("the INT8 zoo report is missing: " + RERUN)
    return _load(INT8)


@pytest.fixture(scope="module")
def zoo() -> dict:
    return _load(os.path.join(ZOO, "zoo.json"))


@pytest.fixture(scope="module")
def test_images():
    try:
        x, y = load_fashion_mnist("test")
    except DataError as exc:
        pytest.skip("FashionMNIST not available here: %s" % exc)
    return (x.astype(np.float32) / 255.0)[:, None], y


def shipped(report):
    return [(n, r) for n, r in report["models"].items() if r["meets_targets"]]


def test_every_zoo_model_is_reported_and_shipped_copies_meet_the_targets(report, zoo):
    assert set(report["models"]) == set(zoo["models"])
    assert shipped(report), "no INT8 copy ships"
    on_disk = set(os.listdir(os.path.join(ZOO, "int8", "models")))
    assert on_disk == {os.path.basename(r["file"]) for _, r in shipped(report)}  # only copies that meet the targets
    for name, r in report["models"].items():
        assert r["evaluated_on"] == "test" and r["samples"] == 10000
        ok = r["int8_accuracy"] >= r["float_accuracy"] - 0.005 and r["int8_ece"] <= r["float_ece"] + 0.005
        assert r["meets_targets"] == ok
        assert 0.0 <= r["agreement"] <= 1.0
        cpu = r["cpu"]
        assert cpu["float_us"] > 0 and cpu["int8_us"] > 0
        assert cpu["ratio"] == pytest.approx(cpu["int8_us"] / cpu["float_us"], rel=1e-3)
        if ok:
            path = os.path.join(ZOO, r["file"])
            assert sha256_file(path) == r["sha256"]
            meta = read_head_metadata(onnx.load(path))
            assert meta["precision"] == "int8-qdq" and meta["temperature"] == pytest.approx(r["temperature"])
            assert meta["int8"]["float_layers"] == r["float_layers"]
        else:
            assert "file" not in r


def test_int8_copies_were_made_from_the_shipped_float_models(report, zoo):
    """Stale-copy guard: retraining the zoo without re-making the INT8 copies fails here."""
    for name, r in shipped(report):
        float_file = zoo["models"][name]["file"]
        current = sha256_file(os.path.join(ZOO, float_file))
        assert current == zoo["models"][name]["sha256"], "zoo.json is out of date for %s" % float_file
        meta = read_head_metadata(onnx.load(os.path.join(ZOO, r["file"])))
        assert meta["int8"]["float_sha256"] == r["source_sha256"] == current, (
            "%s was made from another %s than the one shipped now: %s" % (r["file"], float_file, RERUN))


@pytest.mark.slow
def test_shipped_copies_recomputed_on_test_images(report, zoo, test_images):
    """The files give the recorded numbers on the first test images, and the targets (met on the whole test split,
    as recorded) hold on this subset too; its ECE difference is allowed its sampling noise, as the exporter does."""
    x, y = test_images
    for name, r in shipped(report):
        n = r["check"]["samples"]
        pf = run_outputs(os.path.join(ZOO, zoo["models"][name]["file"]), x[:n], ["probs"])["probs"]
        pq = run_outputs(os.path.join(ZOO, r["file"]), x[:n], ["probs"])["probs"]
        for p, rec in ((pf, r["check"]["float"]), (pq, r["check"]["int8"])):
            assert float((p.argmax(1) == y[:n]).mean()) == pytest.approx(rec["accuracy"], abs=1e-9)
            assert expected_calibration_error(p, y[:n]) == pytest.approx(rec["ece"], abs=1e-5)
        assert r["check"]["int8"]["accuracy"] >= r["check"]["float"]["accuracy"] - 0.005, name
        noise = ece_difference_se(pf, pq, y[:n])
        assert r["check"]["int8"]["ece"] - noise <= r["check"]["float"]["ece"] + 0.005, name


def test_int8_bundle_report_follows_its_shipping_rule(report, zoo):
    b = report["bundle"]
    folder = os.path.join(ZOO, "int8", "bundle")
    assert b["stages"] == zoo["bundle"]["stages"]
    t = b["test"]
    assert t["samples"] == 10000 and 0.0 <= t["agreement"] <= 1.0
    assert t["float"]["accuracy"] == pytest.approx(zoo["bundle"]["runtime_test"]["accuracy"])  # the shipped float bundle
    assert b["meets_accuracy_target"] == (t["int8"]["accuracy"] >= t["float"]["accuracy"] - 0.003)
    assert b["meets_cost_target_here"] == (t["cpu"]["ratio"] <= 1.0)
    assert t["cpu"]["ratio"] == pytest.approx(t["cpu"]["int8_us"] / t["cpu"]["float_us"], rel=1e-3)
    assert b["shipped"] == (b["meets_accuracy_target"] and b["meets_cost_target_here"])
    assert os.path.isdir(folder) == b["shipped"]
    if not b["shipped"]:
        assert b["reason"]


def test_shipped_int8_bundle_recomputed(report, zoo, test_images):
    b = report["bundle"]
    if not b["shipped"]:
        pytest.skip("no INT8 bundle shipped: %s" % b["reason"])
    x, y = test_images
    n = b["check"]["samples"]
    with load_bundle(os.path.join(ZOO, b["folder"]), memo=False, threads=1) as cascade:
        res = cascade.run_batch(x[:n])
    assert float((res.class_ids == y[:n]).mean()) == pytest.approx(b["check"]["accuracy"])
    for i, stage in enumerate(b["stages"]):
        meta = read_head_metadata(onnx.load(os.path.join(ZOO, b["folder"], "stage%d.onnx" % (i + 1))))
        assert meta["precision"] == "int8-qdq"
        assert meta["int8"]["float_sha256"] == zoo["models"][stage]["sha256"], RERUN


def test_docs_show_what_int8_json_records(report):
    with open(DOCS, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("<!-- int8:begin"):text.index("<!-- int8:end -->")]
    for name, r in report["models"].items():
        row = next((ln for ln in section.splitlines() if ln.startswith("| `%s` |" % name)), None)
        assert row is not None, "docs/zoo.md has no INT8 row for %s: %s" % (name, RERUN)
        assert "%.2f %%" % (100 * r["int8_accuracy"]) in row and "%.2f %%" % (100 * r["int8_ece"]) in row
        assert "| %.2f |" % r["cpu"]["ratio"] in row
    t = report["bundle"]["test"]
    row = next(ln for ln in section.splitlines() if ln.startswith("| `bundle` |"))
    assert "%.2f %%" % (100 * t["int8"]["accuracy"]) in row and "| %.2f |" % t["cpu"]["ratio"] in row
