"""Issue-2 performance figures: cascade orchestration overhead, memo lookup, batched cascade throughput.

Run: .venv/bin/python benchmarks/bench_core.py [--json]
Prints ratios measured within one run (the machine is shared and noisy); asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Optional

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from onnx_models import linear_classifier, save  # noqa: E402

from edgeconf.backends import prepare  # noqa: E402
from edgeconf.cascade import Cascade, Stage  # noqa: E402
from edgeconf.memo import Answer, MemoCache  # noqa: E402


def conv_classifier(seed: int, width: int):
    """A small conv net (Conv-Relu-MaxPool-Gemm) so stage time is model-like, not call overhead."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.1, (width, 1, 3, 3)).astype(np.float32)
    fc = rng.normal(0, 0.05, (width * 14 * 14, 10)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fc", "b"], ["logits"])]
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc"),
                           numpy_helper.from_array(np.zeros(10, np.float32), "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def median_us(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def time_cascade(cascade: Cascade, x: np.ndarray, n: int, warm: int = 50) -> dict:
    """Batch-1 run of ``n`` inputs: total time vs the stages' own model time (counters reset after warm-up)."""
    for i in range(warm):
        cascade.run(x[i])
    cascade.reset_counters()
    t0 = time.perf_counter()
    for i in range(n):
        cascade.run(x[i])
    total = time.perf_counter() - t0
    stage_sum = sum(cascade.counters.stage_seconds)
    return {"inputs": n, "escalation_rate": cascade.counters.escalation_rate,
            "total_us_per_input": total / n * 1e6, "stage_us_per_input": stage_sum / n * 1e6,
            "overhead_ratio": total / stage_sum, "overhead_us_per_input": (total - stage_sum) / n * 1e6}


def orchestration_overhead(tmp: str, n: int = 2000) -> dict:
    """Total cascade time per input vs the sum of the invoked stages' own model time, batch 1."""
    paths = [save(conv_classifier(s, 8), os.path.join(tmp, "s%d.onnx" % s)) for s in (1, 2)]
    runners = [prepare(p, threads=1) for p in paths]
    cascade = Cascade([Stage("a", runners[0], "margin", 0.5), Stage("b", runners[1], "margin", 0.0)])
    x = np.random.default_rng(0).normal(size=(n, 1, 28, 28)).astype(np.float32)
    res = time_cascade(cascade, x, n)
    # raw ORT session time for the same calls, without edgeconf's runner layer
    sess = [r.session for r in runners]
    t0 = time.perf_counter()
    for i in range(n):
        sess[0].run(["logits"], {"input": x[i:i + 1]})
    raw1 = time.perf_counter() - t0
    res.update(target_overhead_ratio=1.05, raw_ort_stage1_us=raw1 / n * 1e6)
    return res


def orchestration_zoo(n: int = 3000) -> Optional[dict]:
    """The same overhead ratio on the shipped zoo bundle and real FashionMNIST test images."""
    folder = os.path.join(os.path.dirname(__file__), "..", "edgeconf", "data", "zoo", "bundle")
    if not os.path.isdir(folder):
        return None
    from edgeconf.bundle import load_bundle
    from edgeconf.datasets import load_fashion_mnist
    from edgeconf.errors import DataError

    try:
        images, _ = load_fashion_mnist("test")
    except DataError:
        return None
    cascade = load_bundle(folder, threads=1, memo=False)
    x = cascade.preprocessing.batch(list(images[:n]))
    return time_cascade(cascade, x, n, warm=100)


def memo_lookup(entries: int = 100_000) -> dict:
    rng = np.random.default_rng(1)
    out = {}
    answer = Answer(1, 0.9, 0, np.full(10, 0.1, np.float32))
    exact = MemoCache(capacity=entries, key="exact")
    imgs = rng.integers(0, 256, (512, 28, 28), dtype=np.uint8)
    keys = [exact.key(imgs[i % 512] + np.uint8(i // 512)) for i in range(entries)]
    for k in keys:
        exact.put(k, "fp", answer)
    probe = keys[::997][:100]
    out["exact_get_us_median"] = median_us(lambda it=iter(probe * 50): exact.get(next(it), "fp"), 5000)
    out["exact_key_us_median"] = median_us(lambda: exact.key(imgs[0]), 2000)
    for bits in (64, 256):
        cache = MemoCache(capacity=entries, key="dhash%d" % bits, radius=4)
        words = rng.integers(0, 2**63, (entries, bits // 64), dtype=np.int64).astype(np.uint64)
        for row in words:
            cache.put(row, "fp", answer)
        miss = rng.integers(0, 2**63, (200, bits // 64), dtype=np.int64).astype(np.uint64)
        out["dhash%d_r4_get_miss_us_median" % bits] = median_us(lambda it=iter(list(miss) * 3): cache.get(next(it), "fp"), 500)
        near = words[::1000].copy()
        near[:, 0] ^= np.uint64(0b111)
        out["dhash%d_r4_get_near_us_median" % bits] = median_us(lambda it=iter(list(near) * 5): cache.get(next(it), "fp"), 500)
        out["dhash%d_key_us_median" % bits] = median_us(lambda: cache.key(imgs[0]), 2000)
    out["targets_us"] = {"exact": 10, "dhash_r4": 200}
    out["entries"] = entries
    return out


def batched_throughput(tmp: str, batch: int = 256, rounds: int = 40) -> dict:
    """Throughput with 10 % of each batch escalated vs stage 1 alone (stage 2 of similar cost)."""
    paths = [save(conv_classifier(s, 8), os.path.join(tmp, "t%d.onnx" % s)) for s in (3, 4)]
    r1, r2 = (prepare(p, threads=1) for p in paths)
    x = np.random.default_rng(2).normal(size=(batch, 1, 28, 28)).astype(np.float32)
    from edgeconf.confidence import margin, softmax

    conf = margin(softmax(r1.run(x)["logits"]))
    thr = float(np.quantile(conf, 0.10))  # 10 % below the threshold escalate
    cascade = Cascade([Stage("a", r1, "margin", thr), Stage("b", r2, "margin", 0.0)])
    only = Cascade([Stage("a", r1, "margin", 0.0)])
    t_c, t_1 = [], []
    for _ in range(rounds):  # interleave so drift hits both alike
        t0 = time.perf_counter()
        res = cascade.run_batch(x)
        t_c.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        only.run_batch(x)
        t_1.append(time.perf_counter() - t0)
    esc = res.stage_counts[1] / batch
    return {"batch": batch, "escalated_share": esc, "cascade_per_s": batch / statistics.median(t_c),
            "stage1_only_per_s": batch / statistics.median(t_1),
            "throughput_ratio": statistics.median(t_1) / statistics.median(t_c), "target_ratio": 0.8}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = {"orchestration": orchestration_overhead(tmp), "orchestration_zoo": orchestration_zoo(),
               "memo": memo_lookup(), "batched": batched_throughput(tmp)}
    if args.json:
        print(json.dumps(res, indent=2))
        return
    o, m, b = res["orchestration"], res["memo"], res["batched"]
    print("cascade orchestration, batch 1 (%d inputs, escalation %.2f):" % (o["inputs"], o["escalation_rate"]))
    print("  total %.1f us/input, stages %.1f us/input -> ratio %.3f (target <= 1.05)" % (
        o["total_us_per_input"], o["stage_us_per_input"], o["overhead_ratio"]))
    print("  (raw ORT session.run for stage 1 alone: %.1f us)" % o["raw_ort_stage1_us"])
    z = res["orchestration_zoo"]
    if z:
        print("cascade orchestration on the shipped zoo bundle, FashionMNIST test images (escalation %.3f):" % z["escalation_rate"])
        print("  total %.1f us/input, stages %.1f us/input -> ratio %.3f (target <= 1.05); overhead %.1f us/input" % (
            z["total_us_per_input"], z["stage_us_per_input"], z["overhead_ratio"], z["overhead_us_per_input"]))
    else:
        print("cascade orchestration on the zoo bundle: skipped (no shipped zoo or no FashionMNIST data)")
    print("memo lookup at %d entries (median):" % m["entries"])
    print("  exact get %.2f us (target <= 10); computing an exact key %.2f us" % (m["exact_get_us_median"], m["exact_key_us_median"]))
    for bits in (64, 256):
        print("  dhash%d radius 4: miss %.1f us, near hit %.1f us (target <= 200); computing the key %.1f us" % (
            bits, m["dhash%d_r4_get_miss_us_median" % bits], m["dhash%d_r4_get_near_us_median" % bits],
            m["dhash%d_key_us_median" % bits]))
    print("batched cascade, batch %d, %.0f %% escalated:" % (b["batch"], b["escalated_share"] * 100))
    print("  %.0f inputs/s vs stage-1-only %.0f inputs/s -> ratio %.3f (target >= 0.8)" % (
        b["cascade_per_s"], b["stage1_only_per_s"], b["throughput_ratio"]))


if __name__ == "__main__":
    main()
