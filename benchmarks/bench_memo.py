"""The memo cache's own costs: memory per entry and lookup time at 1 M entries, key time, and what the memo
costs a cascade on a stream without repeats (adaptive sampling on and off) and saves on one with repeats.

Run: .venv/bin/python benchmarks/bench_memo.py [--entries 1000000] [--json]

Memory is what the cache holds once filled with ``--entries`` answers of 10 classes: the process's resident
memory after minus before, per entry (keys made one by one, as lookups make them, each stored with an exact
pre-key as ``classify`` stores it; ``arrays`` is the part in numpy arrays and ``array.array``s, the rest is
the key and pre-key dicts). Lookup times are medians over blocks of
timed ``get`` calls (hits on stored keys, misses on fresh ones). Stream costs are process CPU per input of
``Cascade.classify`` on the shipped bundle over FashionMNIST test images, memo off vs on, interleaved in one
process, ratios per round. Prints figures only; asserts nothing.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

from edgeconf.hashing import prekey
from edgeconf.memo import Answer, MemoCache, Sampling

TARGETS = {"bytes_per_entry_r0": 400, "lookup_us": 5.0, "bytes_per_entry_r4": 1024}


def _answers(n: int, classes: int = 10) -> List[Answer]:
    probs = np.full(classes, 1.0 / classes, np.float32)
    return [Answer(i % classes, 0.5, i % 3, probs) for i in range(min(n, 1000))]


def _rss() -> int:
    """Resident memory of this process in bytes (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fill(kind: str, radius: int, entries: int, seed: int = 0) -> Dict[str, Any]:
    """Memory per entry and lookup times of a cache filled with ``entries`` random keys."""
    probe = MemoCache(1, kind)
    nbytes = probe.key_bytes
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (entries, nbytes), dtype=np.uint8)
    pres = rng.integers(-2**63, 2**63 - 1, entries, dtype=np.int64).tolist()  # pre-keys: 64-bit ints, as hash() gives
    answers = _answers(entries)
    gc.collect()
    before = _rss()
    t0 = time.perf_counter()
    cache = MemoCache(entries, kind, radius, sampling=None)
    for i in range(entries):  # each key made as a lookup makes it: a new bytes object the cache keeps
        cache.put(rows[i].tobytes(), "fp", answers[i % len(answers)], pres[i])
    fill_s = time.perf_counter() - t0
    gc.collect()
    held = _rss() - before
    step = max(1, entries // 20000)
    hits = [rows[i].tobytes() for i in range(0, entries, step)][:20000]
    misses = [bytes(row) for row in rng.integers(0, 256, (20000, nbytes), dtype=np.uint8)]
    out = {"key": kind, "radius": radius, "entries": entries, "bytes_per_entry": held / entries,
           "arrays_bytes_per_entry": cache.nbytes() / entries, "put_us": fill_s / entries * 1e6}
    for name, probe_keys in (("hit", hits), ("miss", misses)):
        blocks = []
        for a in range(0, len(probe_keys), 1000):
            block = probe_keys[a:a + 1000]
            t = time.perf_counter()
            for k in block:
                cache.get(k, "fp")
            blocks.append((time.perf_counter() - t) / len(block))
        out["get_%s_us" % name] = statistics.median(blocks) * 1e6
    if radius:
        near = []
        for k in hits[:5000]:
            b = bytearray(k)
            b[0] ^= 0b101  # two bits away: found through the radius index
            near.append(bytes(b))
        t = time.perf_counter()
        found = sum(cache.get(k, "fp") is not None for k in near)
        out["get_near_us"] = (time.perf_counter() - t) / len(near) * 1e6
        out["near_found"] = found / len(near)
    del cache, rows, pres
    gc.collect()
    return out


def key_times(images: np.ndarray) -> Dict[str, float]:
    """Median µs per key over blocks of 200 images: each key kind, and the exact pre-key every lookup makes first."""
    out = {}
    makers = [(kind, MemoCache(1, kind).key) for kind in ("exact", "dhash64", "dhash256")] + [("prekey", prekey)]
    for kind, make in makers:
        blocks = []
        for a in range(0, 2000, 200):
            t = time.perf_counter()
            for img in images[a:a + 200]:
                make(img)
            blocks.append((time.perf_counter() - t) / 200)
        out["%s_key_us" % kind] = statistics.median(blocks) * 1e6
    return out


def interleaved_cpu(cascades: Dict[str, Any], order: List[str], stream: np.ndarray, chunk: int = 500) -> Dict[str, float]:
    """Process CPU seconds of each cascade's ``classify`` over ``stream``, chunk by chunk: each chunk runs every
    cascade, starting one further along ``order`` each time, with the garbage collector paused in the chunk."""
    cpu = {n: 0.0 for n in cascades}
    order = list(order)
    for a in range(0, len(stream), chunk):
        part = stream[a:a + chunk]
        gc.collect()
        gc.disable()
        try:
            for name in order:
                classify = cascades[name].classify
                t = time.process_time()
                for img in part:
                    classify(img)
                cpu[name] += time.process_time() - t
        finally:
            gc.enable()
        order = order[1:] + order[:1]
    return cpu


def stream_costs(images: np.ndarray, rounds: int) -> Dict[str, Any]:
    """Process CPU per input of classify: no memo, memo with sampling, memo without; no repeats and 50 % repeats."""
    from edgeconf import data_path
    from edgeconf.bundle import load_bundle

    folder = os.path.join(data_path("zoo"), "bundle")
    runs: Dict[str, Any] = {}
    rng = np.random.default_rng(1)
    streams = {"no repeats": images,
               "every image twice": images[rng.permutation(np.concatenate([np.arange(len(images) // 2)] * 2))]}
    for sname, stream in streams.items():
        cascades = {"no memo": load_bundle(folder, memo=False), "memo, adaptive": load_bundle(folder),
                    "memo, every input": load_bundle(folder)}
        per: Dict[str, List[float]] = {n: [] for n in cascades}
        stats: Dict[str, Any] = {}
        for c in cascades.values():
            for img in images[:64]:
                c.classify(img)
        for r in range(rounds):
            for name, c in cascades.items():  # a fresh cache per round: every round sees the stream from the start
                if name == "memo, adaptive":
                    c.memo = MemoCache(len(stream), "dhash256", 0, sampling=Sampling())
                elif name == "memo, every input":
                    c.memo = MemoCache(len(stream), "dhash256", 0, sampling=None)
            order = list(cascades) if r % 2 == 0 else list(cascades)[::-1]
            cpu = interleaved_cpu(cascades, order, stream)
            for n in cascades:
                per[n].append(cpu[n] / len(stream))
            stats = {n: c.memo.stats.to_json() for n, c in cascades.items() if c.memo is not None}
        base = per["no memo"]
        runs[sname] = {"cpu_us_per_input": {n: statistics.median(v) * 1e6 for n, v in per.items()},
                       "ratio_to_no_memo": {n: {"median": statistics.median([a / b for a, b in zip(v, base)]),
                                                "min": min(a / b for a, b in zip(v, base)),
                                                "max": max(a / b for a, b in zip(v, base))}
                                            for n, v in per.items() if n != "no memo"},
                       "memo_stats_last_round": stats, "inputs": len(stream)}
        for c in cascades.values():
            c.close()
    return runs


def main(argv: Optional[List[str]] = None) -> int:
    from edgeconf.datasets import load_fashion_mnist

    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--stream", type=int, default=10000, help="test images in the stream runs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-stream", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    images, _ = load_fashion_mnist("test")
    report: Dict[str, Any] = {"targets": TARGETS, "keys": key_times(images[:2000]), "caches": []}
    for kind, radius in (("exact", 0), ("dhash256", 0), ("dhash64", 0), ("dhash256", 4)):
        report["caches"].append(fill(kind, radius, args.entries))
    if not args.skip_stream:
        report["streams"] = stream_costs(np.ascontiguousarray(images[: args.stream]), args.rounds)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("memo cache, %d entries of 10-class answers (random keys)" % args.entries)
    print("  key time on a 28x28 image: " + ", ".join("%s %.2f µs" % (k.replace("_key_us", ""), v)
                                                    for k, v in report["keys"].items()))
    for c in report["caches"]:
        extra = ""
        if c["radius"]:
            extra = ", near (2 bits off) %.2f µs, found %.0f %%" % (c["get_near_us"], c["near_found"] * 100)
        target = TARGETS["bytes_per_entry_r4" if c["radius"] else "bytes_per_entry_r0"]
        print("  %-8s radius %d: %6.0f B/entry (target ≤ %d; arrays %.0f), put %.2f µs, get hit %.2f µs, miss %.2f µs%s"
              % (c["key"], c["radius"], c["bytes_per_entry"], target, c["arrays_bytes_per_entry"], c["put_us"],
                 c["get_hit_us"], c["get_miss_us"], extra))
    for sname, r in report.get("streams", {}).items():
        print("  stream, %s: classify CPU per input %s" % (sname, ", ".join(
            "%s %.1f µs" % kv for kv in r["cpu_us_per_input"].items())))
        for n, st in r["ratio_to_no_memo"].items():
            ms = r["memo_stats_last_round"][n]
            print("    %-18s ÷ no memo: %.3f (range over rounds %.3f–%.3f); answers from the memo %.1f %%, %d inputs "
                  "skipped" % (n, st["median"], st["min"], st["max"], 100.0 * ms["hits"] / r["inputs"], ms["skipped"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
