"""The memo and floor benchmark scripts run end to end on tiny inputs and report what they measured.

Times are never asserted (the machine is shared); what is asserted is what the scripts count and check: lookups per
variant, answers agreeing with the hand-written floor, the shape of the report.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytest.importorskip("onnxruntime")


def _run(script: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args, "--json"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def _fashion_or_skip() -> None:
    from edgeconf.datasets import load_fashion_mnist

    try:
        load_fashion_mnist("test")
    except Exception as exc:  # the Debian package is missing
        pytest.skip("FashionMNIST is not installed: %s" % exc)


def test_bench_memo_parts_counts_each_variants_lookups():
    _fashion_or_skip()
    res = _run("bench_memo_parts.py", "--rounds", "1", "--stream", "300")
    v = res["variants"]
    assert res["inputs"] == 300
    assert v["no memo"]["lookups_last_round"] is None and v["no memo"]["ratio_median"] == 1.0
    assert v["every input"]["lookups_last_round"] == 300
    assert v["skip only"]["lookups_last_round"] == 0
    assert v["countdown 1/64"]["lookups_last_round"] == 300 // 64
    assert v["countdown 1/16"]["lookups_last_round"] == 300 // 16
    assert v["burst 8 in 512"]["lookups_last_round"] == 7  # inputs 1-7 of the first 512 (the count starts at 1)
    assert 128 <= v["adaptive"]["lookups_last_round"] < 300  # the warm-up, then sampled
    assert all(r["us_per_input"] > 0 for r in v.values())


def test_bench_memo_reports_storage_and_streams():
    _fashion_or_skip()
    res = _run("bench_memo.py", "--entries", "2000", "--stream", "300", "--rounds", "1")
    kinds = {(c["key"], c["radius"]) for c in res["caches"]}
    assert ("dhash256", 0) in kinds and ("dhash256", 4) in kinds and ("exact", 0) in kinds
    # (resident memory moves in pages, so 2000 entries may show 0 B; the arrays are counted exactly)
    assert all(c["entries"] == 2000 and c["arrays_bytes_per_entry"] > 0 for c in res["caches"])
    near = [c for c in res["caches"] if c["radius"]]
    assert near and all(c["near_found"] == 1.0 for c in near)  # a key 2 bits off is found within radius 4
    assert set(res["streams"]) == {"no repeats", "every image twice"}


def test_bench_floor_answers_agree_with_the_hand_written_loop():
    _fashion_or_skip()
    res = _run("bench_floor.py", "--limit", "64", "--rounds", "1", "--batches", "1,16", "--no-fused")
    for batch in ("batch 1", "batch 16"):
        r = res["results"][batch]
        assert set(r["agreement_with_floor_staged"].values()) == {1.0}
        assert "edgeconf_staged / floor_staged" in r["ratios"]


def test_bench_cascade_bound_reports_the_cheapest_chains_that_reach_the_target():
    _fashion_or_skip()
    res = _run("bench_cascade_bound.py", "--rounds", "1", "--limit", "300")
    with open(os.path.join(ROOT, "edgeconf", "data", "zoo", "zoo.json"), encoding="utf-8") as f:
        zoo = json.load(f)
    assert res["images"] == 300
    assert set(res["models"]) == set(zoo["models"]) and res["models"]["big"]["ratio"] == 1.0
    assert res["target_accuracy"] == pytest.approx(res["big_test_accuracy"] - 0.001, abs=1e-5)
    chains = res["chains"]
    assert ["tiny", "student", "big"] in [c["stages"] for c in chains]
    for c in chains:
        assert c["reach"][0] == 1.0 and all(a >= b for a, b in zip(c["reach"], c["reach"][1:]))
        if c["reached"]:
            assert c["accuracy"] >= res["target_accuracy"] - 1e-5
    reached = [c["ratio"] for c in chains if c["reached"]]
    assert reached == sorted(reached) and res["cheapest_reaching"] == (reached[0] if reached else None)
    ship = res["shipped_bundle"]
    assert ship["stages"] == zoo["bundle"]["stages"] and ship["thresholds"] == zoo["bundle"]["thresholds"]
    # the bundle's own graphs (their `exit` outputs) escalate exactly the inputs the simulation does
    calls = res["shipped_stage_calls"]
    assert [c["stage"] for c in calls] == [1, 2, 3]
    assert [c["reach"] for c in calls] == pytest.approx(ship["reach"], abs=1e-4)
    assert all(c["inside_median_us"] > 0 and c["alone_median_us"] > 0 for c in calls)


def test_bench_threshold_transfer_scores_the_shipped_thresholds_as_the_zoo_records_them():
    _fashion_or_skip()
    res = _run("bench_threshold_transfer.py", "--resamples", "2", "--splits", "1", "--margins", "0,0.2")
    with open(os.path.join(ROOT, "edgeconf", "data", "zoo", "zoo.json"), encoding="utf-8") as f:
        bundle = json.load(f)["bundle"]
    assert res["chain"] == bundle["stages"] and res["shipped_thresholds"] == bundle["thresholds"]
    # the script's own cascade simulation gives the exporter's recorded accuracies on both splits
    assert res["shipped"]["calib"]["cascade"] == pytest.approx(bundle["calib_point"]["accuracy"], abs=1e-4)
    assert res["shipped"]["test"]["cascade"] == pytest.approx(bundle["test_point"]["accuracy"], abs=1e-4)
    for split in ("calib", "test"):
        s = res["shipped"][split]
        n = 10000
        assert s["diff_points"] == pytest.approx(100 * (s["only_cascade_right"] - s["only_big_right"]) / n, abs=1e-3)
        assert s["diff_points"] == pytest.approx(100 * (s["cascade"] - s["big"]), abs=1e-3)
        assert 0 < s["paired_se_points"] < 1
    assert res["margins_points"] == [0.0, 0.2]
    for section, searches in (("calib_to_test", 2), ("test_half_to_other_half", 2)):
        rows = res[section]
        assert set(rows) == {"0.0", "0.2"}
        for r in rows.values():
            assert r["n"] == searches and r["drop_min_points"] <= r["drop_mean_points"] <= r["drop_max_points"]
            assert 0 < r["model_ratio_min"] <= r["model_ratio_mean"] <= r["model_ratio_max"] <= 1.5
            assert 0.0 <= r["share_within_0.1"] <= 1.0


def test_bench_threshold_transfer_refuses_bad_margins():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_threshold_transfer.py"),
                          "--margins", "a,b"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2 and "--margins" in out.stderr
