"""``edgeconf bench`` on a small subset with real ONNX bundles built by the tests (and on the zoo when shipped)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from edgeconf.bench.benchmark import (CONFIG_NAMES, StageOutputs, default_paths, make_stream, open_meter, perturb, ratios,
                            sweep)
from edgeconf.cli import cli, main

DUPS = (0.0, 0.5, 1.0)
CONFIG_KEYS = {"accuracy": float, "cpu_s": float, "wall_s": float, "latency_ms": dict, "stage_calls": list}
NULLABLE = ("energy_j", "escalation_rate", "memo_hit_rate", "memo_false_hit_rate")


def _invoke(args):
    result = CliRunner().invoke(cli, ["bench"] + [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def run(models, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = _invoke(["--bundle", models["bundle"], "--baseline", models["baseline"], "--early-exit", models["early_exit"],
                      "--data", data_dir, "--duplicate", "0,0.5,1", "--limit", 300, "--chunk", 100,
                      "--memo-sampling", "off",  # every input looked up: hit counts exact on any machine
                      "--target", "dual-drop=50", "--target", "dual-cpu=20", "--target", "cost-model=1.05",
                      "--out", out / "out.json", "--predictions", out / "pred.npz", "--report", out / "rep"])
    with open(out / "out.json") as f:
        payload = json.load(f)
    with np.load(out / "pred.npz", allow_pickle=False) as z:
        arrays = dict(z)
    return {"json": payload, "npz": arrays, "dir": out, "output": result.output}


def test_json_follows_the_issue_schema(run):
    payload = run["json"]
    assert isinstance(payload, list) and [p["duplicate"] for p in payload] == list(DUPS)
    for obj in payload:
        assert obj["dataset"].endswith("fmnist0:test") and obj["n"] == 300 and obj["batch"] == 1
        assert isinstance(obj["duplicate"], float) and obj["stream_length"] == 300 + round(obj["duplicate"] * 300)
        assert set(obj["configs"]) == set(CONFIG_NAMES)  # early_exit included: a multi-exit bundle was given
        for name, c in obj["configs"].items():
            for key, kind in CONFIG_KEYS.items():
                assert isinstance(c[key], kind), (name, key)
            for key in NULLABLE:
                assert key in c and (c[key] is None or isinstance(c[key], float)), (name, key, c.get(key))
            assert set(c["latency_ms"]) >= {"mean", "p50", "p95", "p99"}
            lat = c["latency_ms"]
            assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
            assert all(isinstance(x, int) for x in c["stage_calls"])
            assert 0.0 <= c["accuracy"] <= 1.0 and c["cpu_s"] > 0 and c["wall_s"] > 0
        assert set(obj["ratios"]) == set(obj["configs"])
        for name, r in obj["ratios"].items():
            assert set(r) == {"cpu_s", "wall_s", "energy_j"}
            assert r["cpu_s"] == pytest.approx(obj["configs"][name]["cpu_s"] / obj["configs"]["big"]["cpu_s"])
            assert r["wall_s"] == pytest.approx(obj["configs"][name]["wall_s"] / obj["configs"]["big"]["wall_s"])
        assert obj["ratios"]["big"]["cpu_s"] == pytest.approx(1.0)
        c = obj["configs"]
        assert len(c["big"]["stage_calls"]) == 1 and c["big"]["stage_calls"][0] == obj["stream_length"]
        assert c["first"]["stage_calls"] == [obj["stream_length"]]
        assert c["big"]["escalation_rate"] is None and c["big"]["memo_hit_rate"] is None
        assert c["dual"]["memo_hit_rate"] is None and c["dual"]["escalation_rate"] is not None
        assert c["dual"]["escalation_rate"] == pytest.approx(c["dual"]["stage_calls"][1] / c["dual"]["stage_calls"][0])


def test_accuracies_equal_a_numpy_recomputation(run, sample):
    images, labels = sample
    assert run["npz"]["duplicates"].tolist() == [obj["duplicate"] for obj in run["json"]]  # d<i>_ is ratio i
    for i, obj in enumerate(run["json"]):
        z = {k[len("d%d_" % i):]: v for k, v in run["npz"].items() if k.startswith("d%d_" % i)}
        assert np.array_equal(z["labels"], labels[z["source"]])
        for name, c in obj["configs"].items():
            pred = z["pred_" + name]
            assert pred.shape == (obj["stream_length"],) and pred.min() >= 0
            assert c["accuracy"] == pytest.approx(float(np.mean(pred == z["labels"])), abs=1e-12)
        # the cascade configurations all answer like the cascade itself; 'first' is stage 1 alone
        for name in ("dual", "dual_memo_exact", "early_exit"):
            assert np.array_equal(z["pred_" + name], z["reference"]), name


def exact_sampling(obj):
    """The sampling settings of the exact-key memo configuration in one bench JSON object (None: off)."""
    return obj["configs"]["dual_memo_exact"]["memo"]["sampling"]


def test_exact_memo_hit_rate_equals_the_duplication_ratio(run, sample):
    """With --memo-sampling off every input is looked up, so the counts are exact whatever the machine's timing
    (the adaptive sampling prices lookups with a clock; its decisions are tested with an injected one)."""
    images, _ = sample
    assert all(obj["memo_sampling"] == "off" and exact_sampling(obj) is None for obj in run["json"])
    assert len({im.tobytes() for im in images}) == len(images)  # no repeats in the base samples
    for i, obj in enumerate(run["json"]):
        c = obj["configs"]["dual_memo_exact"]
        d, n = obj["duplicate"], obj["n"]
        assert c["memo_hits"] == round(d * n)
        assert c["memo_hit_rate"] == pytest.approx(d * n / (n + d * n))
        assert c["memo_hits"] / n == pytest.approx(d)
        assert c["memo_false_hit_rate"] == 0.0 and c["memo_false_hits"] == 0
        assert c["stage_calls"][0] == n  # every distinct input ran once, every copy was answered from memory
        z = run["npz"]
        seen, repeat = set(), []
        for src in z["d%d_source" % i]:
            repeat.append(int(src) in seen)
            seen.add(int(src))
        assert np.array_equal(z["d%d_memo_hit_dual_memo_exact" % i], np.array(repeat, bool))
        # perceptual keys hit at least every exact copy
        assert obj["configs"]["dual_memo"]["memo_hits"] >= c["memo_hits"]
        assert obj["configs"]["dual_memo_paper"]["memo_hits"] >= c["memo_hits"]


def test_energy_is_null_without_a_sensor(run):
    meter, source, note = open_meter("auto")
    if meter is not None:
        meter.close()
        pytest.skip("this machine has a power sensor (%s)" % source)
    for obj in run["json"]:
        assert obj["power_source"] is None
        assert all(c["energy_j"] is None for c in obj["configs"].values())
        assert all(r["energy_j"] is None for r in obj["ratios"].values())
    assert "not measured" in run["output"]


def test_report_writes_markdown_and_pngs(run):
    rep = run["dir"] / "rep"
    md = (rep / "report.md").read_text()
    assert "# edgeconf bench report" in md and "![Cost vs accuracy over λ](tradeoff.png)" in md
    for d in DUPS:
        assert "## Duplicate %g" % d in md
    assert md.count("| dual_memo_exact |") == 2 * len(DUPS)  # main table and per-input cost table
    for name in ("tradeoff.png", "costs.png"):
        data = (rep / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000
    assert "dual vs big: accuracy" in run["output"] and "(need ≤ 20)" in run["output"]  # the --target lines


def test_tradeoff_curve_matches_brute_force(run):
    t = run["json"][0]["tradeoff"]
    assert t is not None and len(t["lambda"]) == len(t["accuracy"]) == len(t["cost_ratio"])
    assert t["lambda"][0] == 0.0 and t["lambda"][-1] == 1.0
    assert all(a <= b + 1e-12 for a, b in zip(t["escalation"], t["escalation"][1:]))
    # the measured dual and the curve's chosen point describe the same cascade on the base samples (d = 0)
    assert t["chosen"]["accuracy"] == pytest.approx(run["json"][0]["configs"]["dual"]["accuracy"])
    assert t["chosen"]["escalation"] == pytest.approx(run["json"][0]["configs"]["dual"]["escalation_rate"])
    # ...and the curve is priced in the measured points' unit (process CPU): it passes through the measured dual
    configs = run["json"][0]["configs"]
    if configs["dual"]["cpu_s"] > configs["first"]["cpu_s"]:
        assert t["chosen"]["cost_ratio"] == pytest.approx(run["json"][0]["ratios"]["dual"]["cpu_s"], rel=1e-9)
    assert "process CPU" in t["unit"]


def test_later_stages_are_priced_in_process_cpu():
    from edgeconf.bench.benchmark import ConfigResult, later_stage_cpu

    def result(cpu, calls, model):
        return ConfigResult("x", 0.9, cpu, cpu, None, {}, calls, model, None, None, None)

    first = result(1.0, [100], [0.5])
    dual = result(1.6, [100, 30, 10], [0.5, 0.2, 0.2])  # 0.6 s beyond stage 1, stages 2 and 3 equal model time
    assert later_stage_cpu(dual, first) == pytest.approx([0.3 / 30, 0.3 / 10])
    assert later_stage_cpu(result(0.9, [100, 30], [0.5, 0.1]), first) == [0.0]  # noise below first: no negative cost


def test_sweep_equals_a_plain_loop():
    rng = np.random.default_rng(3)
    n = 400
    labels = rng.integers(0, 10, n)
    p1 = np.where(rng.random(n) < 0.7, labels, rng.integers(0, 10, n))
    p2 = np.where(rng.random(n) < 0.9, labels, rng.integers(0, 10, n))
    s1, s2 = rng.random(n), rng.random(n)
    lams = np.array([0.0, 0.1, 0.33, 0.5, 0.9, 1.0])
    for combine in ("last", "best"):
        out = StageOutputs([p1, p2], [s1, s2], labels, combine, [0.5, 0.0])
        sw = sweep(out, lams)
        for lam, acc, esc in zip(sw["lambda"], sw["accuracy"], sw["escalation"]):
            esc_mask = s1 < lam
            second = p2 if combine == "last" else np.where(s2 > s1, p2, p1)
            want = np.mean(np.where(esc_mask, second, p1) == labels)
            assert acc == pytest.approx(want) and esc == pytest.approx(esc_mask.mean())


def test_three_stage_sweep_equals_a_plain_simulation():
    """Later thresholds stay fixed; accuracy and later-stage cost follow the cascade rule input by input."""
    rng = np.random.default_rng(4)
    n = 500
    labels = rng.integers(0, 10, n)
    preds = [np.where(rng.random(n) < q, labels, rng.integers(0, 10, n)) for q in (0.7, 0.85, 0.95)]
    scores = [rng.random(n) for _ in range(3)]
    costs = [2.0, 10.0]
    lams = np.array([0.0, 0.2, 0.5, 0.77, 1.0])
    for combine in ("last", "best"):
        out = StageOutputs(preds, scores, labels, combine, [0.5, 0.4, 0.0])
        sw = sweep(out, lams, stage_costs=costs)
        for lam, acc, esc, later in zip(sw["lambda"], sw["accuracy"], sw["escalation"], sw["later_cost"]):
            right, spent = 0, 0.0
            for i in range(n):
                kept_p, kept_s = preds[0][i], scores[0][i]
                if scores[0][i] < lam:
                    for k in (1, 2):
                        spent += costs[k - 1]
                        if combine == "last" or scores[k][i] > kept_s:
                            kept_p, kept_s = preds[k][i], scores[k][i]
                        if k == 2 or scores[k][i] >= 0.4:
                            break
                right += kept_p == labels[i]
            assert acc == pytest.approx(right / n)
            assert later == pytest.approx(spent / n)
            assert esc == pytest.approx(np.mean(scores[0] < lam))


def test_stream_protocol(sample):
    images, labels = sample
    s = make_stream(images, labels, 0.5, seed=7)
    assert len(s) == 450 and s.is_copy.sum() == 150
    assert np.array_equal(np.sort(s.source[~s.is_copy]), np.arange(300))
    assert len(set(s.source[s.is_copy])) == 150  # copies without replacement while d <= 1
    assert np.array_equal(s.images, images[s.source]) and np.array_equal(s.labels, labels[s.source])
    again = make_stream(images, labels, 0.5, seed=7)
    assert np.array_equal(again.source, s.source)
    assert not np.array_equal(make_stream(images, labels, 0.5, seed=8).source, s.source)
    assert len(make_stream(images, labels, 2.0).source) == 900
    near = make_stream(images, labels, 1.0, seed=7, near_duplicate=True)
    assert np.array_equal(near.images[~near.is_copy], images[near.source[~near.is_copy]])
    changed = [not np.array_equal(near.images[i], images[near.source[i]]) for i in np.flatnonzero(near.is_copy)]
    assert all(changed)


def test_perturb_is_a_near_duplicate(sample):
    images, _ = sample
    rng = np.random.default_rng(0)
    for img in images[:20]:
        p = perturb(img, rng)
        assert p.shape == img.shape and p.dtype == np.uint8
        diff = np.abs(p.astype(int) - img.astype(int))
        assert diff.any()
        # best 1-pixel realignment brings it close to the original
        best = min(np.abs(np.roll(np.roll(p.astype(int), -dy, 0), -dx, 1) - img.astype(int))[2:-2, 2:-2].mean()
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        assert best < 12


def test_near_duplicates_defeat_exact_keys(models, data_dir):
    result = _invoke(["--bundle", models["bundle"], "--baseline", models["baseline"], "--data", data_dir,
                      "--duplicate", "1", "--near-duplicate", "--limit", 120,
                      "--configs", "big,dual,dual_memo_exact,dual_memo_paper", "--json"])
    obj = json.loads(result.stdout)
    assert isinstance(obj, dict) and obj["near_duplicate"] is True and obj["stream_length"] == 240
    assert obj["memo_sampling"] == "adaptive" and exact_sampling(obj) is not None  # the default
    assert set(obj["configs"]) == {"big", "dual", "dual_memo_exact", "dual_memo_paper"}
    assert obj["configs"]["dual_memo_exact"]["memo_hits"] == 0
    paper = obj["configs"]["dual_memo_paper"]
    assert paper["memo_false_hits"] <= paper["memo_hits"]
    assert paper["memo_false_hit_rate"] == (paper["memo_false_hits"] / paper["memo_hits"] if paper["memo_hits"] else 0.0)


def test_ratios_need_a_baseline():
    assert ratios({}) == {}


def test_user_errors_are_one_line(models, data_dir, capsys):
    for args, words in ((["--duplicate", "x"], "--duplicate"), (["--duplicate", "-1"], "between 0 and 100"),
                        (["--duplicate", "1e9"], "between 0 and 100"), (["--duplicate", "nan"], "between 0 and 100"),
                        (["--duplicate", "0,,1"], "empty ratio"), (["--duplicate", ","], "at least one ratio"),
                        (["--seed", "-1"], "--seed"), (["--configs", ""], "names no configuration"),
                        (["--configs", "huge"], "unknown configurations"),
                        (["--bundle", os.path.join(models["root"], "nope")], "does not exist")):
        with pytest.raises(SystemExit) as exc:
            main(["bench", "--baseline", models["baseline"], "--data", data_dir, "--limit", "10"]
                 + (["--bundle", models["bundle"]] if "--bundle" not in args else []) + args)
        assert exc.value.code == (1 if "--bundle" in args else 2)  # bad option values are usage errors
        err = capsys.readouterr().err
        assert err.startswith("edgeconf: error:") and err.count("\n") == 1 and words in err, err


@pytest.mark.slow
def test_shipped_zoo(tmp_path, data_dir):
    paths = default_paths()
    if not (os.path.isdir(paths["bundle"]) and os.path.isfile(paths["baseline"])):
        pytest.skip("the shipped zoo (edgeconf/data/zoo) is not installed")
    _invoke(["--data", data_dir, "--duplicate", "0,1", "--limit", 300, "--chunk", 100, "--out", tmp_path / "o.json",
             "--predictions", tmp_path / "p.npz", "--memo-sampling", "off"])
    payload = json.loads((tmp_path / "o.json").read_text())
    with np.load(tmp_path / "p.npz", allow_pickle=False) as z:
        arrays = dict(z)
    want = {"big", "first", "dual", "dual_memo", "dual_memo_paper", "dual_memo_exact"}
    if os.path.isdir(paths["early_exit"]):
        want.add("early_exit")
    for i, obj in enumerate(payload):
        assert set(obj["configs"]) == want
        for name, c in obj["configs"].items():
            pred = arrays["d%d_pred_%s" % (i, name)]
            assert c["accuracy"] == pytest.approx(float(np.mean(pred == arrays["d%d_labels" % i])))
        exact = obj["configs"]["dual_memo_exact"]
        assert exact["memo_hits"] == round(obj["duplicate"] * obj["n"]) and exact["memo_false_hits"] == 0
        assert obj["configs"]["big"]["accuracy"] > 0.8 and obj["configs"]["dual"]["accuracy"] > 0.8


def test_energy_from_a_power_sensor(models, data_dir, tmp_path):
    """A fake Jetson Nano INA3221 tree at a constant 5 W: every configuration gets joules = 5 W × its wall time.

    Deterministic: the bench reads the sensor just before and just after each timed window, and this meter
    interpolates across any gap between readings (exact for a constant power), so how often the sampling
    thread got the CPU does not matter.
    """
    import math

    from edgeconf.bench.benchmark import BenchSettings, run_bench
    from edgeconf.devices.meter import EnergyMeter
    from edgeconf.devices.power import open_power_source

    dev = tmp_path / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    dev.mkdir(parents=True)
    (dev / "rail_name_0").write_text("POM_5V_IN\n")
    (dev / "in_power0_input").write_text("5000\n")
    meter = EnergyMeter(open_power_source("ina3221-iio", root=str(tmp_path)), max_gap_s=math.inf)
    settings = BenchSettings(bundle=models["bundle"], baseline=models["baseline"], early_exit=None, duplicates=[0.0],
                             limit=60, data=data_dir, configs=["big", "first", "dual"], chunk=20)
    (run,) = run_bench(settings, meter=meter)
    obj = run.to_json()
    assert obj["power_source"] == "ina3221-iio"
    for name, c in obj["configs"].items():
        assert c["energy_j"] == pytest.approx(5.0 * c["wall_s"], rel=1e-6), name
        assert obj["ratios"][name]["energy_j"] == pytest.approx(c["energy_j"] / obj["configs"]["big"]["energy_j"])


def test_batches_count_repeats_inside_a_batch(models, data_dir):
    result = _invoke(["--bundle", models["bundle"], "--baseline", models["baseline"], "--data", data_dir,
                      "--duplicate", "1", "--limit", 100, "--batch", 8, "--configs", "big,dual,dual_memo_exact",
                      "--memo-sampling", "off", "--json"])  # every input looked up: counts exact on any machine
    obj = json.loads(result.stdout)
    assert obj["batch"] == 8 and obj["stream_length"] == 200
    assert obj["memo_sampling"] == "off" and exact_sampling(obj) is None
    exact = obj["configs"]["dual_memo_exact"]
    assert exact["memo_hits"] == 100 and exact["memo_hit_rate"] == pytest.approx(0.5)
    assert exact["stage_calls"][0] == 100 and exact["memo_false_hits"] == 0
    assert obj["configs"]["dual"]["stage_calls"][0] == 200


def test_help_lists_the_issue_options():
    result = CliRunner().invoke(cli, ["bench", "--help"])
    assert result.exit_code == 0
    for opt in ("--bundle", "--baseline", "--data", "--duplicate", "--near-duplicate", "--batch", "--threads",
                "--limit", "--seed", "--json", "--out", "--report", "--predictions"):
        assert opt in result.output, opt


@pytest.mark.parametrize("memo_cpu, met", [(1.02, True), (1.10, False)])
def test_memo_overhead_target_at_duplicate_0(memo_cpu, met):
    from edgeconf.bench.benchmark import ConfigResult, targets

    def cfg(name, cpu):
        return ConfigResult(name, 0.9, cpu, cpu, None, {}, [10], [cpu], None, None, None)

    configs = {"big": cfg("big", 10.0), "dual": cfg("dual", 1.0), "dual_memo": cfg("dual_memo", memo_cpu)}
    out = targets(configs, {"dual": {"cpu_s": 0.1}, "dual_memo": {"cpu_s": memo_cpu / 10}}, 0.0, {"memo-overhead": 1.03})
    assert out["dual_memo_at_duplicate_0"]["cpu_ratio_vs_dual"] == pytest.approx(memo_cpu)
    assert out["dual_memo_at_duplicate_0"]["met"] is met
    # evaluated on a stream without repeats only
    assert "dual_memo_at_duplicate_0" not in targets(configs, {}, 1.0, {"memo-overhead": 1.03})


def test_memo_target_at_duplicate_1_carries_the_bound_of_free_repeats():
    from types import SimpleNamespace

    from edgeconf.bench.benchmark import ConfigResult, targets
    from edgeconf.bench.report import target_lines

    def cfg(name, cpu):
        return ConfigResult(name, 0.9, cpu, cpu, None, {}, [10], [cpu], None, None, None)

    configs = {"big": cfg("big", 10.0), "dual": cfg("dual", 1.5), "dual_memo": cfg("dual_memo", 1.2)}
    rat = {"dual": {"cpu_s": 0.15}, "dual_memo": {"cpu_s": 0.12}}
    out = targets(configs, rat, 1.0, {"memo-cpu": 0.08}, first_share=0.5)["dual_memo_at_duplicate_1"]
    assert out["repeat_bound"] == pytest.approx(0.075) and out["first_share"] == 0.5 and out["met"] is False
    line = target_lines(SimpleNamespace(targets={"dual_memo_at_duplicate_1": out}))[0]
    assert "at best 0.075 (dual × 50 % first sightings" in line
    # without dual (or without the stream's share) there is no bound, and the line says nothing of one
    del configs["dual"]
    out = targets(configs, rat, 1.0, {"memo-cpu": 0.08}, first_share=0.5)["dual_memo_at_duplicate_1"]
    assert out["repeat_bound"] is None
    assert "at best" not in target_lines(SimpleNamespace(targets={"dual_memo_at_duplicate_1": out}))[0]


def test_equal_accuracies_print_no_negative_zero():
    from types import SimpleNamespace

    from edgeconf.bench.report import target_lines

    run = SimpleNamespace(targets={"dual_vs_big": {"accuracy_drop_points": 0.0, "max_drop_points": 0.0,
                                                   "cpu_ratio": 0.5, "max_cpu_ratio": 0.6, "met": True}})
    line = target_lines(run)[0]
    assert "accuracy 0.00 points (need ≥ 0.00)" in line and "-0.00" not in line and "−0.00" not in line
    run.targets["dual_vs_big"].update(accuracy_drop_points=0.25, max_drop_points=0.1)
    assert "accuracy -0.25 points (need ≥ −0.10)" in target_lines(run)[0]
    run.targets["dual_vs_big"].update(accuracy_drop_points=-0.5)
    assert "accuracy +0.50 points" in target_lines(run)[0]


# ----------------------------------------------------------------- the report's notes, baseline line and plots
def _bench_runs(models, data_dir, **kw):
    from edgeconf.bench.benchmark import BenchSettings, run_bench

    settings = dict(bundle=models["bundle"], baseline=None, early_exit=None, duplicates=[0.0], limit=100,
                    data=data_dir, configs=["first", "dual"], power="none", chunk=50)
    settings.update(kw)
    return run_bench(BenchSettings(**settings))


def test_report_md_without_a_baseline_says_none_and_lists_the_notes(models, data_dir, tmp_path):
    _invoke(["--bundle", models["bundle"], "--data", data_dir, "--limit", 100, "--configs", "big,first,dual",
             "--report", tmp_path / "rep"])
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "- baseline: none (no --baseline" in md and "`None`" not in md
    table_end = md.index("| dual |")
    no_big = md.index("- note: no --baseline for bundle")
    limit = md.index("- note: --limit 100: a seeded random sample of 100 of 300 samples")
    assert table_end < limit < no_big < md.index("Per input:")  # under the table, in the terminal's order
    for name in ("costs.png", "tradeoff.png"):
        assert (tmp_path / "rep" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_md_with_a_baseline_names_it(run, models):
    md = (run["dir"] / "rep" / "report.md").read_text()
    assert "- baseline: `%s`" % models["baseline"] in md and "no --baseline" not in md
    assert md.count("- note: --limit 300: a seeded random sample") == 0  # 300 of 300: all samples
    assert md.count("- note: --limit 300: all 300 samples used") == len(DUPS)  # under each table


def test_costs_title_mentions_ratios_only_with_a_baseline(models, data_dir):
    from edgeconf.bench.report import costs_figure

    without = costs_figure(_bench_runs(models, data_dir)).axes[0].get_title()
    assert "no baseline" in without and "ratio vs big" not in without
    with_big = costs_figure(_bench_runs(models, data_dir, baseline=models["baseline"],
                                        configs=["big", "first", "dual"])).axes[0].get_title()
    assert "(labels: CPU ratio vs big)" in with_big


def test_tradeoff_plot_shows_every_point_with_a_legend_outside(models, data_dir):
    """Near-duplicates: the measured dual is drawn on the curve's inputs (base samples) and so on the curve at the
    chosen λ; every point lies inside the limits, the legend (dotted line labelled) outside the axes."""
    from edgeconf.bench.report import base_accuracy, tradeoff_figure

    run_ = _bench_runs(models, data_dir, baseline=models["baseline"], configs=["big", "first", "dual"],
                       duplicates=[0.5], near_duplicate=True)[0]
    fig = tradeoff_figure(run_)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    dual = next(line for label, line in lines.items() if label.startswith("dual, measured"))
    chosen = next(line for label, line in lines.items() if label.startswith("chosen"))
    assert dual.get_ydata()[0] == pytest.approx(chosen.get_ydata()[0])
    assert dual.get_ydata()[0] == pytest.approx(base_accuracy(run_, "dual") * 100)
    assert "over the 150-input stream, perturbed copies included: %.2f %%" % (
        run_.configs["dual"].accuracy * 100) in dual.get_label()
    assert "big's accuracy" in lines and "big − 0.3 points" in lines
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for line in ax.get_lines():
        xs, ys = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        if line.get_label() in ("big's accuracy", "big − 0.3 points"):  # axhline: y only
            assert y0 < ys[0] < y1
            continue
        assert (xs > x0).all() and (xs < x1).all() and (ys > y0).all() and (ys < y1).all(), line.get_label()
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert not legend.overlaps(ax.get_window_extent())
    assert {t.get_text() for t in ax.get_legend().get_texts()} == set(lines)


def test_notes_are_printed_once_in_order(models, data_dir, sample, tmp_path):
    from edgeconf.bench.benchmark import unique_notes

    assert unique_notes(["b", "a", "b", "c", "a"]) == ["b", "a", "c"] and unique_notes(None) == []
    images, labels = sample
    big = np.repeat(np.repeat(images[:60], 2, axis=1), 2, axis=2)  # 56×56 for a 28×28 bundle
    np.savez(tmp_path / "big.npz", x=big, y=labels[:60])
    result = _invoke(["--bundle", models["bundle"], "--data", tmp_path / "big.npz", "--limit", 40,
                      "--configs", "first,dual,dual_memo", "--report", tmp_path / "rep", "--out", tmp_path / "o.json"])
    note = "the bundle resizes the images (56×56) to 28×28"
    assert result.output.count(note) == 1
    assert (tmp_path / "rep" / "report.md").read_text().count(note) == 1
    notes = json.loads((tmp_path / "o.json").read_text())["notes"]
    assert [n.split(":")[0] for n in notes] == ["--limit 40", note + " (stretch)"]


def test_small_cpu_seconds_keep_their_digits_in_the_cost_check():
    """A cost check on a small run must show why it fails: 0.00346 s against 0.00325 s, not 0.00 s against 0.00 s."""
    from edgeconf.bench.report import _seconds

    assert (_seconds(0.003456), _seconds(0.00325), _seconds(2.257)) == ("0.00346 s", "0.00325 s", "2.26 s")


def test_fused_form_leaves_later_stage_times_and_the_cost_model_out_with_a_note(models, data_dir, tmp_path):
    """A fused call times every stage as one: the later stages' model time is not measured (null, not 0), and the
    cost-model target, which needs it, is not judged; a note says why instead of a made-up `× 0.00` verdict."""
    import shutil

    from edgeconf.export.fuse import fuse_bundle

    bundle = str(tmp_path / "fused_bundle")
    shutil.copytree(models["bundle"], bundle)
    fuse_bundle(bundle)
    out = tmp_path / "fused.json"
    result = _invoke(["--bundle", bundle, "--baseline", models["baseline"], "--early-exit", "none", "--data", data_dir,
                      "--limit", 100, "--configs", "big,first,dual", "--form", "fused",
                      "--target", "cost-model=1.05", "--out", out])
    with open(out) as f:
        obj = json.load(f)
    dual = obj["configs"]["dual"]
    assert obj["form"]["dual"] == "fused" and dual["stage_model_s"][0] > 0
    assert dual["stage_model_s"][1:] == [None] * (len(dual["stage_model_s"]) - 1)
    assert "dual_cost_model" not in obj["targets"] and "dual cost" not in result.output
    assert any("not measured apart" in n for n in obj["notes"])
    assert any(n.startswith("target cost-model not evaluated: it needs first and dual") for n in obj["notes"])
    assert obj["tradeoff"] is None


def test_targets_asked_for_but_not_evaluated_are_noted(models, data_dir, tmp_path):
    out = tmp_path / "t.json"
    _invoke(["--bundle", models["bundle"], "--baseline", models["baseline"], "--early-exit", "none", "--data", data_dir,
             "--limit", 100, "--configs", "big,dual", "--target", "cost-model=1.05", "--target", "memo-cpu=0.5",
             "--target", "dual-cpu=20", "--out", out])
    with open(out) as f:
        obj = json.load(f)
    assert set(obj["targets"]) == {"dual_vs_big"}  # the one the run could judge
    notes = obj["notes"]
    assert any(n.startswith("target memo-cpu not evaluated: it needs big and dual_memo in --configs and 1 in --duplicate")
               for n in notes), notes
    assert any(n.startswith("target cost-model not evaluated: it needs first and dual in --configs") for n in notes)
    assert not any("dual-cpu" in n for n in notes)


def test_memo_target_names_the_streams_bound(models, data_dir):
    result = _invoke(["--bundle", models["bundle"], "--baseline", models["baseline"], "--early-exit", "none",
                      "--data", data_dir, "--limit", 100, "--duplicate", "0.5", "--configs", "big,dual,dual_memo",
                      "--target", "memo-cpu=0.5", "--json"])
    obj = json.loads(result.stdout)
    assert obj["targets"] == {}  # judged at duplicate 1 only
    result = _invoke(["--bundle", models["bundle"], "--baseline", models["baseline"], "--early-exit", "none",
                      "--data", data_dir, "--limit", 100, "--duplicate", "1", "--configs", "big,dual,dual_memo",
                      "--target", "memo-cpu=0.5", "--json"])
    t = json.loads(result.stdout)["targets"]["dual_memo_at_duplicate_1"]
    assert t["first_share"] == 0.5  # 100 samples, 100 copies
    assert t["repeat_bound"] == pytest.approx(json.loads(result.stdout)["ratios"]["dual"]["cpu_s"] * 0.5)


def test_bad_output_paths_fail_before_the_run_and_nothing_is_written(models, data_dir, tmp_path, capsys):
    """A --predictions or --report path under a regular file, or any output over a file of the bundle, fails at
    once in one line: the earlier --out file stays as it was and the bundle is intact."""
    import shutil

    bundle = tmp_path / "B"
    shutil.copytree(models["bundle"], str(bundle))
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    prev = tmp_path / "prev.json"
    prev.write_text('{"earlier": true}\n')
    (tmp_path / "afile").write_text("x")
    for extra, words in ((["--predictions", tmp_path / "afile" / "p.npz"], "cannot write --predictions"),
                         (["--report", tmp_path / "afile" / "rep"], "cannot write --report"),
                         (["--out", bundle / "edgeconf.json"], "--out %s is a file of bundle" % (bundle / "edgeconf.json")),
                         (["--predictions", bundle / "s2.onnx"], "is a file of bundle %s, an input of this run" % bundle)):
        args = ["bench", bundle, "--data", data_dir, "--configs", "first", "--limit", "20"]
        if "--out" not in extra:
            args += ["--out", prev]
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args + extra])
        err = capsys.readouterr().err
        assert prev.read_text() == '{"earlier": true}\n', err
        assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before, err
        assert exc.value.code == 1 and err.count("\n") == 1 and words in err, err
        if "afile" in str(extra[1]):
            assert "%s is a file, not a folder" % (tmp_path / "afile") in err
