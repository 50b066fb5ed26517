"""docs/zoo.md's first part is what scripts/train_zoo.py writes from the shipped zoo.json, and rewriting it keeps the
sections other scripts generate (quantize_zoo, train_live, zoo_cheaper) and the text between them."""
from __future__ import annotations

import json
import os
import sys

import pytest

import edgeconf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO = os.path.join(os.path.dirname(edgeconf.__file__), "data", "zoo")


@pytest.fixture(scope="module")
def train_zoo():
    pytest.importorskip("torch")
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import train_zoo as module
    finally:
        sys.path.pop(0)
    return module


@pytest.fixture(scope="module")
def zoo() -> dict:
    with open(os.path.join(ZOO, "zoo.json"), encoding="utf-8") as f:
        return json.load(f)


def test_docs_zoo_md_is_current_with_zoo_json(train_zoo, zoo, tmp_path):
    shipped = os.path.join(ROOT, "docs", "zoo.md")
    with open(shipped, encoding="utf-8") as f:
        text = f.read()
    copy = tmp_path / "zoo.md"
    copy.write_text(text, encoding="utf-8")
    train_zoo.write_docs(zoo, str(copy))
    assert copy.read_text(encoding="utf-8") == text, "docs/zoo.md is stale: rerun the script that wrote zoo.json"


def test_rewriting_keeps_the_other_scripts_sections(train_zoo, zoo, tmp_path):
    doc = tmp_path / "zoo.md"
    tail = "<!-- int8:begin (x) -->\nINT8 text\n<!-- int8:end -->\n\nhand-written note\n\n<!-- live:begin (y) -->\nz\n<!-- live:end -->\n"
    doc.write_text("# an old first part\n\nold table\n\n" + tail, encoding="utf-8")
    train_zoo.write_docs(zoo, str(doc))
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# The FashionMNIST reference zoo\n") and "old table" not in text
    assert text.endswith("\n\n" + tail)
    assert "`%s`" % zoo["bundle"]["stages"][0] in text.split("## Default bundle")[1]


def test_the_default_bundle_is_recorded_with_its_maker(zoo):
    """A default bundle made on top of train_zoo's zoo (scripts/zoo_cheaper.py --ship) says so, with its stages'
    own costs; its stage models are zoo models with their files."""
    b = zoo["bundle"]
    for name in b["stages"]:
        assert name in zoo["models"] and os.path.isfile(os.path.join(ZOO, zoo["models"][name]["file"]))
    if "made_by" in b:
        assert b["made_by"].startswith("scripts/zoo_cheaper.py --ship ")
        assert set(b["costs_us"]) == set(b["stages"]) and all(v > 0 for v in b["costs_us"].values())
        assert b["test_cost_ratio"] == pytest.approx(b["test_point"]["cost"] * 1000.0 / b["costs_us"]["big"], abs=1e-4)
