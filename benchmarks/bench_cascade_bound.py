"""The cheapest a cascade of the shipped zoo's models can be on this machine: a floor under `edgeconf bench`'s `dual`.

Run: .venv/bin/python benchmarks/bench_cascade_bound.py [--rounds 7] [--limit N] [--json]

1. Every zoo model's ONNX Runtime CPU time per image is measured here (``edgeconf.export.cpu_cost``: one
   intra-op thread, batch 1, process CPU time, median of interleaved rounds) and divided by `big`'s.
2. Each model's logits on the FashionMNIST test split, at the temperature it ships with (``zoo.json``).
3. For every chain the zoo offers (a model → a stronger one, and model → `mid` or `student` → `big`), the
   cheapest thresholds that reach `big`'s test accuracy − 0.1 point **on the test split itself**: hindsight,
   thresholds scored on the data they were chosen on, so no deployable threshold policy does better with
   these models. Two stages: the exporter's sweep (2000 values); three: every (t1, t2) on a 501 × 501 grid.
   The shipped bundle's chain is also scored at its own thresholds.
4. The shipped bundle's own stage files run as a plain loop (each image: stage 1, then the next stage while
   the graph's ``exit`` output says no): the CPU time of each stage's calls inside the cascade against the
   same stage run alone many times in a row. A stage that runs on a few inputs finds its weights pushed out
   of the caches by the others, so its calls cost more there than a model timed alone.

Cost is model time only (stage 1, plus each later stage × the share of inputs that reach it), priced with
this machine's measured times: no preprocessing, no Python, no memo. `edgeconf bench` adds edgeconf's
per-input path on top, so where the cheapest chain's model time alone is above issue 17's target (0.15 of
`big`), no runtime work meets that target with these models on this machine type. Prints figures; asserts
nothing.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import edgeconf  # noqa: E402
from edgeconf.export.cpu_cost import PROTOCOL, interleaved_cpu_us  # noqa: E402
from edgeconf.export.errors import PolicyError  # noqa: E402
from edgeconf.export.thresholds import evaluate, grid_three_stage, select, tradeoff_curve  # noqa: E402

ZOO = os.path.join(os.path.dirname(edgeconf.__file__), "data", "zoo")
TARGET_RATIO = 0.15  # issue 17: `dual` <= 0.15 of big's CPU at accuracy >= big - 0.1 point
BELOW = 0.001  # the accuracy margin under big's (0.1 point)
MIDDLE = ("mid", "student")  # the zoo's second stages of three-stage chains


def model_inputs(limit: Optional[int]):
    """FashionMNIST test images as the zoo's models take them ((N, 1, 28, 28) float32 in [0, 1]) and labels."""
    from edgeconf.datasets import load_fashion_mnist

    images, labels = load_fashion_mnist("test")
    if limit:
        images, labels = images[:limit], labels[:limit]
    return (images.astype(np.float32) / 255.0)[:, None], labels.astype(np.int64)


def logits_of(path: str, x: np.ndarray, batch: int = 500) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    feed = sess.get_inputs()[0].name
    return np.concatenate([sess.run(["logits"], {feed: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def cheapest(chain: List[str], logits: Dict[str, np.ndarray], y: np.ndarray, temps: Dict[str, float],
             us: Dict[str, float], target: float) -> dict:
    """The cheapest thresholds of ``chain`` that reach ``target`` on (logits, y); the most accurate when none does."""
    z = [logits[n] for n in chain]
    t = [temps[n] for n in chain]
    c = [us[n] for n in chain]
    if len(chain) == 2:
        curve = tradeoff_curve(z, y, c, scores="margin", temperatures=t, n=2000)
        try:
            op, reached = select(curve, "match:%.6f" % target), True
        except PolicyError:
            op, reached = select(curve, "max-accuracy"), False
        thr = op.thresholds
    else:
        thr, reached = grid_three_stage(z, y, t, c, target)
    return point(chain, thr, reached, z, y, t, c)


def point(chain: List[str], thr: List[float], reached: Optional[bool], z: List[np.ndarray], y: np.ndarray,
          t: List[float], c: List[float]) -> dict:
    op = evaluate(z, y, thr, c, temperatures=t)
    return {"stages": chain, "thresholds": [round(float(v), 4) for v in thr], "reached": reached,
            "accuracy": round(op.accuracy, 5), "reach": [round(r, 4) for r in op.reach],
            "model_us": round(op.cost, 2)}


def stage_calls(folder: str, x: np.ndarray, rounds: int) -> List[dict]:
    """Per stage of the bundle in ``folder``: median CPU µs of a call inside a plain cascade loop over ``x`` and
    run alone (the same inputs, in a row), the mean inside, and the share of inputs that reach it."""
    import time

    from edgeconf.export.cpu_cost import _session

    k = len([f for f in os.listdir(folder) if f.startswith("stage") and f.endswith(".onnx")])
    sessions = [_session(os.path.join(folder, "stage%d.onnx" % (i + 1))) for i in range(k)]
    feeds = [s.get_inputs()[0].name for s in sessions]
    clock = time.process_time_ns
    inside: List[List[int]] = [[] for _ in sessions]
    alone: List[List[int]] = [[] for _ in sessions]
    for _ in range(rounds):
        for s, f, t in zip(sessions, feeds, alone):
            for i in range(min(len(x), 300)):
                a = clock()
                s.run(["exit"], {f: x[i:i + 1]})
                t.append(clock() - a)
        for i in range(len(x)):
            xi = x[i:i + 1]
            for s, f, t in zip(sessions, feeds, inside):
                a = clock()
                done = bool(s.run(["exit"], {f: xi})[0].reshape(-1)[0])
                t.append(clock() - a)
                if done:
                    break
    n = rounds * len(x)
    return [{"stage": i + 1, "reach": round(len(t) / n, 4), "inside_median_us": round(float(np.median(t)) / 1e3, 1),
             "inside_mean_us": round(float(np.mean(t)) / 1e3, 1), "alone_median_us": round(float(np.median(a)) / 1e3, 1)}
            for i, (t, a) in enumerate(zip(inside, alone)) if t]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (default 7)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N test images (a quick look)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with open(os.path.join(ZOO, "zoo.json"), encoding="utf-8") as f:
        zoo = json.load(f)
    models = zoo["models"]
    x, y = model_inputs(args.limit)
    paths = {n: os.path.join(ZOO, m["file"]) for n, m in models.items()}
    timed = interleaved_cpu_us({n: (p, x[:500]) for n, p in paths.items()}, rounds=args.rounds)
    us = {n: timed[n]["cpu_us"] for n in models}
    temps = {n: float(m["temperature"]) for n, m in models.items()}
    logits = {n: logits_of(p, x) for n, p in paths.items()}
    big_acc = float((logits["big"].argmax(1) == y).mean())
    target = big_acc - BELOW
    by_cost = sorted((n for n in models if n != "big"), key=lambda n: us[n])
    chains = [[a, b] for a, b in itertools.combinations(by_cost + ["big"], 2) if b in MIDDLE + ("big",)]
    chains += [[a, m, "big"] for a in by_cost for m in MIDDLE if a != m and by_cost.index(a) < by_cost.index(m)]
    rows = [cheapest(ch, logits, y, temps, us, target) for ch in chains]
    for r in rows:
        r["ratio"] = round(r["model_us"] / us["big"], 4)
    rows.sort(key=lambda r: (not r["reached"], r["ratio"]))
    shipped = zoo["bundle"]
    ch = list(shipped["stages"])
    ship = point(ch, list(shipped["thresholds"]), None, [logits[n] for n in ch], y, [temps[n] for n in ch],
                 [us[n] for n in ch])
    ship["ratio"] = round(ship["model_us"] / us["big"], 4)
    best = next((r for r in rows if r["reached"]), None)
    calls = stage_calls(os.path.join(ZOO, "bundle"), x, rounds=1 if args.limit else 2)
    report = {"protocol": PROTOCOL, "machine": platform.processor() or platform.machine(), "images": int(len(y)),
              "big_test_accuracy": round(big_acc, 5), "target_accuracy": round(target, 5),
              "target_ratio": TARGET_RATIO,
              "models": {n: {"cpu_us": us[n], "ratio": round(us[n] / us["big"], 4)} for n in models},
              "chains": rows, "shipped_bundle": ship, "shipped_stage_calls": calls,
              "cheapest_reaching": best["ratio"] if best else None}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print("%s; %d FashionMNIST test images; big %.2f %%, target %.2f %% (big − 0.1 point)"
          % (PROTOCOL, len(y), 100 * big_acc, 100 * target))
    print("model time per image, measured here:")
    for n in sorted(models, key=lambda n: us[n]):
        print("  %-8s %7.1f µs  ÷ big %.3f" % (n, us[n], us[n] / us["big"]))
    print("cheapest thresholds on the test split itself (hindsight), model time only:")
    print("  %-24s %-16s %8s  %-22s %s" % ("stages", "thresholds", "accuracy", "reach", "÷ big"))
    for r in rows + [ship]:
        flag = (" reaches" if r["reached"] else " (does not reach)") if r is not ship else " (shipped thresholds)"
        print("  %-24s %-16s %7.2f %%  %-22s %.3f%s" % (" → ".join(r["stages"]), r["thresholds"],
                                                       100 * r["accuracy"], r["reach"], r["ratio"], flag))
    print("the shipped bundle's stage calls (CPU µs per call): inside a plain cascade loop vs the stage alone, in a row:")
    for c in calls:
        print("  stage %d  reach %.4f  inside: median %6.1f, mean %6.1f  alone: median %6.1f"
              % (c["stage"], c["reach"], c["inside_median_us"], c["inside_mean_us"], c["alone_median_us"]))
    if best:
        print("cheapest chain that reaches the target: %s, model time %.3f of big (issue 17's target for `dual`, "
              "edgeconf's own path included: %.2f)" % (" → ".join(best["stages"]), best["ratio"], TARGET_RATIO))
    else:
        print("no chain of these models reaches the target on this data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
