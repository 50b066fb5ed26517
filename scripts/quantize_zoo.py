"""INT8 copies of the shipped FashionMNIST zoo, the default bundle with INT8 stages, and their report.

    .venv/bin/python scripts/quantize_zoo.py [--zoo edgeconf/data/zoo] [--docs docs/zoo.md] [--data DIR]

Run it after ``scripts/train_zoo.py`` (which rewrites docs/zoo.md): one command re-makes everything.
Calibration data is the zoo's calibration split (10,000 images held out of train, numpy default_rng(0));
the report is on the 10,000-image test split only. Every model goes through ``edgeconf.export.quantize``
with its defaults (method chosen on held-out calibration images, 0.5-point budgets); a copy ships under
``<zoo>/int8/`` only when it meets the issue's targets on test (accuracy ≥ float − 0.5 points, ECE ≤
float ECE + 0.5 points). The INT8 bundle re-uses the float bundle's stages and threshold search on the
INT8 stages' calibration outputs. CPU times: one interleaved run for every float and INT8 model.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from edgeconf.datasets import FASHION_LABELS, load_fashion_mnist  # noqa: E402

CALIB_SIZE = 10000  # as scripts/train_zoo.py
SPLIT_SEED = 0
TARGET_ACC, TARGET_ECE = 0.005, 0.005  # issue 16: per stage
BUNDLE_ACC = 0.003  # issue 16: the INT8 bundle vs the float bundle
CHECK_N = 2000  # tests/export/test_zoo_int8.py re-runs the shipped files on the first CHECK_N test images
BEGIN, END = "<!-- int8:begin (scripts/quantize_zoo.py) -->", "<!-- int8:end -->"


def splits(root):
    xtr, ytr = load_fashion_mnist("train", root)
    xte, yte = load_fashion_mnist("test", root)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(ytr))
    ci = np.sort(perm[:CALIB_SIZE])
    return (xtr[ci], ytr[ci]), (xte, yte)


def ready(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0)[:, None]


def file_info(path: str, root: str) -> dict:
    from edgeconf.bundle import sha256_file

    return {"file": os.path.relpath(path, root).replace(os.sep, "/"), "sha256": sha256_file(path),
            "bytes": os.path.getsize(path)}


def probs_of(path: str, x: np.ndarray) -> np.ndarray:
    from edgeconf.export.data import run_outputs

    return run_outputs(path, x, ["probs"])["probs"]


def check_numbers(path: str, x: np.ndarray, y: np.ndarray) -> dict:
    from edgeconf.confidence import expected_calibration_error

    p = probs_of(path, x)
    return {"accuracy": float((p.argmax(1) == y).mean()), "ece": round(expected_calibration_error(p, y), 6)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default=os.path.join(HERE, "..", "edgeconf", "data", "zoo"))
    ap.add_argument("--docs", default=os.path.join(HERE, "..", "docs", "zoo.md"))
    ap.add_argument("--data", default=None, help="FashionMNIST folder (default: the Debian package)")
    args = ap.parse_args()
    from edgeconf.export.quantize import quantize_int8

    zoo_dir = os.path.abspath(args.zoo)
    with open(os.path.join(zoo_dir, "zoo.json"), encoding="utf-8") as f:
        zoo = json.load(f)
    (xc_raw, yc), (xt_raw, yt) = splits(args.data)
    xc, xt = ready(xc_raw), ready(xt_raw)
    out_dir = os.path.join(zoo_dir, "int8")
    work = tempfile.mkdtemp(prefix="edgeconf-quantize-zoo-")
    t0 = time.time()
    rows: Dict[str, dict] = {}
    made: Dict[str, str] = {}
    for name, m in zoo["models"].items():
        src = os.path.join(zoo_dir, m["file"])
        dst = os.path.join(work, name + ".onnx")
        print("[int8] %s ..." % name, flush=True)
        rep = quantize_int8(src, dst, (xc, yc), test=(xt, yt), cpu_rounds=0,
                            progress=lambda msg, n=name: print("  %s: %s (%.0fs)" % (n, msg, time.time() - t0), flush=True))
        r = rep.to_json()
        r.pop("path")
        r["source"] = m["file"]
        r["meets_targets"] = bool(rep.int8_accuracy >= rep.float_accuracy - TARGET_ACC - 1e-12
                                  and rep.int8_ece <= rep.float_ece + TARGET_ECE + 1e-12)
        rows[name], made[name] = r, dst
        print("[int8] %-8s float %.4f / ECE %.4f   INT8 %.4f / ECE %.4f   agree %.4f   %s, %d float layers -> %s" % (
            name, rep.float_accuracy, rep.float_ece, rep.int8_accuracy, rep.int8_ece, rep.agreement, rep.method,
            len(rep.float_layers), "ships" if r["meets_targets"] else "NOT shipped"), flush=True)

    # one interleaved CPU-time run over every float and INT8 model
    from edgeconf.export.cpu_cost import PROTOCOL, interleaved_cpu_us

    feeds = {}
    for name, m in zoo["models"].items():
        feeds[name] = (os.path.join(zoo_dir, m["file"]), xt[:500])
        feeds[name + ".int8"] = (made[name], xt[:500])
    cpu = interleaved_cpu_us(feeds)
    for name in rows:
        f_us, q_us = cpu[name]["cpu_us"], cpu[name + ".int8"]["cpu_us"]
        rows[name]["cpu"] = {"float_us": f_us, "int8_us": q_us, "ratio": round(q_us / f_us, 4), "protocol": PROTOCOL}
        print("[cpu] %-8s float %.1f us  INT8 %.1f us  ratio %.3f" % (name, f_us, q_us, q_us / f_us), flush=True)

    # ship the copies that meet the targets
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(os.path.join(out_dir, "models"))
    for name, r in rows.items():
        if r["meets_targets"]:
            dst = os.path.join(out_dir, "models", name + ".onnx")
            shutil.copyfile(made[name], dst)
            r.update(file_info(dst, zoo_dir))
            r["check"] = {"samples": CHECK_N, "float": check_numbers(os.path.join(zoo_dir, zoo["models"][name]["file"]),
                                                                       xt[:CHECK_N], yt[:CHECK_N]),
                          "int8": check_numbers(dst, xt[:CHECK_N], yt[:CHECK_N])}

    bundle = int8_bundle(zoo, zoo_dir, rows, made, cpu, (xc, yc), (xt, yt), out_dir)
    report = {"dataset": zoo.get("dataset"), "calibration": "zoo calibration split (%d images held out of train, "
              "numpy default_rng(%d)); report on the %d-image test split" % (CALIB_SIZE, SPLIT_SEED, len(yt)),
              "targets": {"stage_accuracy_points": 100 * TARGET_ACC, "stage_ece_points": 100 * TARGET_ECE,
                          "bundle_accuracy_points": 100 * BUNDLE_ACC},
              "cpu_protocol": PROTOCOL, "cpu_flags": cpu_flags(), "models": rows, "bundle": bundle}
    with open(os.path.join(out_dir, "int8.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, sort_keys=False)
        f.write("\n")
    write_docs(args.docs, report)
    shutil.rmtree(work, ignore_errors=True)
    print("[done] %.0fs" % (time.time() - t0), flush=True)
    return 0


def cpu_flags() -> List[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return sorted(fl for fl in flags if fl.startswith(("avx512", "avx_vnni", "amx")) or fl in ("avx2", "avx"))


def int8_bundle(zoo, zoo_dir, rows, made, cpu, calib, test, out_dir) -> dict:
    """The default bundle's stages in INT8, thresholds by the float bundle's search on INT8 calibration outputs."""
    from edgeconf.export.calibration import fit_temperature
    from edgeconf.export.data import run_outputs
    from train_zoo import grid_three_stage, write_fixed_cascade  # noqa: E402 (the float bundle's own search)

    b = zoo["bundle"]
    stages = list(b["stages"])
    if not all(rows[s]["meets_targets"] for s in stages):
        return {"shipped": False, "reason": "a stage misses its INT8 targets: %s"
                % [s for s in stages if not rows[s]["meets_targets"]]}
    (xc, yc), (xt, yt) = calib, test
    paths = [os.path.join(out_dir, "models", s + ".onnx") for s in stages]
    lc = [run_outputs(p, xc, ["logits"])["logits"] for p in paths]
    temps = [fit_temperature(z, yc).temperature for z in lc]
    costs = [cpu[s + ".int8"]["cpu_us"] for s in stages]
    target = float(b["policy"].split(":", 1)[1]) if b["policy"].startswith("match:") else None
    if target is None or b.get("search") != "grid" or len(stages) != 3:
        return {"shipped": False, "reason": "quantize_zoo.py reproduces the grid search of three-stage bundles only"}
    thr, reached = grid_three_stage(lc, yc, temps, costs, target)
    dst = os.path.join(out_dir, "bundle")
    op, test_op, runtime = write_fixed_cascade(paths, thr, temps, [c / 1000.0 for c in costs], b["combine"], dst,
                                               "fashion-cascade3-int8", (xc, yc), (xt, yt), b["policy"])
    float_costs = [cpu[s]["cpu_us"] for s in stages]
    float_reach = b["test_point"]["reach"]
    float_cost = float(np.dot(float_reach, float_costs))
    int8_cost = float(np.dot(test_op.reach, costs))
    float_acc = b["runtime_test"]["accuracy"]
    info = {"shipped": True, "folder": "int8/bundle", "stages": stages, "policy": b["policy"], "search": "grid",
            "reached_target_on_calib": bool(reached), "thresholds": [round(t, 6) for t in thr],
            "temperatures": [round(t, 5) for t in temps], "calib_point": op.to_json(), "test_point": test_op.to_json(),
            "runtime_test": runtime, "float_bundle": {"accuracy": float_acc, "reach": float_reach,
                                                      "expected_cpu_us": round(float_cost, 2)},
            "expected_cpu_us": round(int8_cost, 2), "cost_ratio_vs_float_bundle": round(int8_cost / float_cost, 4),
            "meets_accuracy_target": bool(runtime["accuracy"] >= float_acc - BUNDLE_ACC - 1e-12),
            "meets_cost_target_here": bool(int8_cost <= float_cost)}
    info["check"] = {"samples": CHECK_N, "accuracy": bundle_accuracy(dst, xt[:CHECK_N], yt[:CHECK_N])}
    print("[bundle] INT8 %s: thresholds %s, test accuracy %.4f (float bundle %.4f), expected CPU %.1f us vs float "
          "%.1f us" % (" -> ".join(stages), info["thresholds"], runtime["accuracy"], float_acc, int8_cost, float_cost),
          flush=True)
    return info


def bundle_accuracy(folder: str, x: np.ndarray, y: np.ndarray) -> float:
    from edgeconf.bundle import load_bundle

    with load_bundle(folder, memo=False, threads=1) as cascade:
        res = cascade.run_batch(x)
    return float((res.class_ids == y).mean())


def pct(v) -> str:
    return "—" if v is None else "%.2f %%" % (100 * v)


def write_docs(path: str, rep: dict) -> None:
    lines = [BEGIN, "## INT8 (`int8/`)", "",
             "Made by `scripts/quantize_zoo.py` with `edgeconf.export.quantize` defaults: per-channel symmetric INT8 "
             "weights (7-bit range), symmetric INT8 activations, the calibration method chosen on held-out calibration "
             "images, layers kept in float only where the 0.5-point budgets need it, head and logits in float, "
             "temperature re-fitted on the INT8 outputs. Calibration: %s. CPU time: %s; this CPU's vector flags: %s."
             % (rep["calibration"], rep["cpu_protocol"], ", ".join(rep["cpu_flags"]) or "unknown"), "",
             "| model | method | float layers | float acc. | INT8 acc. | float ECE | INT8 ECE | agreement | T float → INT8 "
             "| float µs | INT8 µs | INT8 ÷ float | shipped |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|"]
    for name, r in rep["models"].items():
        lines.append("| `%s` | %s | %s | %s | %s | %s | %s | %.4f | %.3f → %.3f | %.1f | %.1f | %.2f | %s |" % (
            name, r["method"], ", ".join("`%s`" % n for n in r["float_layers"]) or "none", pct(r["float_accuracy"]),
            pct(r["int8_accuracy"]), pct(r["float_ece"]), pct(r["int8_ece"]), r["agreement"],
            r["float_temperature"], r["temperature"], r["cpu"]["float_us"], r["cpu"]["int8_us"], r["cpu"]["ratio"],
            "yes" if r["meets_targets"] else "no"))
    b = rep["bundle"]
    lines.append("")
    if b.get("shipped"):
        lines += ["Default bundle with INT8 stages (`int8/bundle/`): %s, thresholds %s chosen on the INT8 stages' "
                  "calibration outputs (policy `%s`, grid search as for the float bundle). On the test split: accuracy "
                  "%s vs the float bundle's %s (target: ≥ float − 0.3 points: %s); expected model CPU time %.1f µs vs "
                  "%.1f µs (ratio %.3f; same or lower cost on this CPU: %s)."
                  % (" → ".join("`%s`" % s for s in b["stages"]), b["thresholds"], b["policy"],
                     pct(b["runtime_test"]["accuracy"]), pct(b["float_bundle"]["accuracy"]),
                     "met" if b["meets_accuracy_target"] else "missed", b["expected_cpu_us"],
                     b["float_bundle"]["expected_cpu_us"], b["cost_ratio_vs_float_bundle"],
                     "yes" if b["meets_cost_target_here"] else "no")]
    else:
        lines.append("Default bundle with INT8 stages: not shipped (%s)." % b.get("reason"))
    lines += ["", "Why INT8 is not faster for the small models on this CPU: it has AVX2 but no VNNI (no AVX512-VNNI or "
              "AVX-VNNI), so ONNX Runtime's INT8 kernels multiply with 16-bit intermediate sums (`vpmaddubsw`), and "
              "with symmetric activations each ReLU stays a separate float op between DequantizeLinear and "
              "QuantizeLinear (ONNX Runtime folds ReLU into the quantization only for asymmetric uint8 activations): "
              "for models of 1–15 MFLOPs the extra passes cost more than the cheaper arithmetic saves; the largest "
              "model gains. On Orin-class boards TensorRT runs INT8 on tensor cores and fuses ReLU with the "
              "convolution; NVIDIA documents the Orin GPU's dense INT8 throughput at about twice its FP16 rate "
              "(documentation, not measured here).", END]
    text = open(path, encoding="utf-8").read() if os.path.isfile(path) else ""
    block = "\n".join(lines) + "\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
