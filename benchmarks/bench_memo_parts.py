"""Where the memo's cost goes on a stream without repeats: the skip decision, the sampled lookups, the policy.

Run: .venv/bin/python benchmarks/bench_memo_parts.py [--rounds 6] [--stream 10000] [--json]

Every variant is a shallow copy of one cascade (the shipped ``zoo/bundle``), so all share the same ONNX Runtime
sessions and no variant carries another session's speed; only the memo attached differs. Variants:

* ``no memo`` — the reference;
* ``adaptive`` — a bundle's memo (``Sampling()`` defaults);
* ``every input`` — every input looked up (``sampling=None``);
* ``skip only`` — a memo whose skip decision is a plain countdown that never lets an input through: the cost of
  asking the memo at all;
* ``countdown 1/64``, ``countdown 1/16`` — the same countdown letting one input in 64 (16) through to a lookup,
  by position: the cost of sparse lookups without the sampler's own bookkeeping;
* ``burst 8 in 512`` — the same number of lookups as ``countdown 1/64``, but eight consecutive inputs in every
  512: what a lookup costs when the one before it was moments ago;
* ``sampling every=64`` — ``Sampling(every=64)``: fewer sampled lookups, the same machinery.

FashionMNIST test images, interleaved in chunks of 500 (each chunk starts one variant further along; the order is
reversed every round), process CPU per
input, ratios to ``no memo`` per round (median and range). A fresh cache per round. Prints figures only;
asserts nothing.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
from typing import Any, Callable, Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench_memo import interleaved_cpu  # noqa: E402
from edgeconf.memo import MemoCache, Sampling  # noqa: E402


def _countdown(cache: MemoCache, every: Optional[int]) -> MemoCache:
    """Replace the cache's skip decision by a countdown: one input in ``every`` looked up (None: none)."""
    left = [every or 1]

    def skip(image: np.ndarray) -> bool:
        if every is None:
            return True
        left[0] -= 1
        if left[0]:
            return True
        left[0] = every
        return False

    cache.skip = skip  # type: ignore[method-assign]
    return cache


def _burst(cache: MemoCache, period: int, length: int) -> MemoCache:
    """Replace the cache's skip decision: the first ``length`` inputs of every ``period`` looked up."""
    seen = [0]

    def skip(image: np.ndarray) -> bool:
        seen[0] += 1
        return seen[0] % period >= length

    cache.skip = skip  # type: ignore[method-assign]
    return cache


def _variants(n: int) -> Dict[str, Callable[[], Optional[MemoCache]]]:
    key = "dhash256"
    return {
        "no memo": lambda: None,
        "adaptive": lambda: MemoCache(n, key, 0, sampling=Sampling()),
        "every input": lambda: MemoCache(n, key, 0, sampling=None),
        "skip only": lambda: _countdown(MemoCache(n, key, 0, sampling=None), None),
        "countdown 1/64": lambda: _countdown(MemoCache(n, key, 0, sampling=None), 64),
        "countdown 1/16": lambda: _countdown(MemoCache(n, key, 0, sampling=None), 16),
        "burst 8 in 512": lambda: _burst(MemoCache(n, key, 0, sampling=None), 512, 8),
        "sampling every=64": lambda: MemoCache(n, key, 0, sampling=Sampling(every=64)),
    }


def measure(images: np.ndarray, rounds: int, chunk: int = 500) -> Dict[str, Any]:
    from edgeconf import data_path
    from edgeconf.bundle import load_bundle

    base = load_bundle(os.path.join(data_path("zoo"), "bundle"), memo=False, threads=1)
    makers = _variants(len(images))
    cascades = {name: copy.copy(base) for name in makers}  # one set of sessions for all
    for c in cascades.values():
        for img in images[:64]:
            c.classify(img)
    per: Dict[str, List[float]] = {name: [] for name in makers}
    lookups: Dict[str, Optional[int]] = {}
    for r in range(rounds):
        for name, make in makers.items():
            cascades[name].memo = make()
        order = list(makers) if r % 2 == 0 else list(makers)[::-1]
        cpu = interleaved_cpu(cascades, order, images, chunk)
        for name in makers:
            per[name].append(cpu[name] / len(images))
    for name, c in cascades.items():
        s = c.memo.stats if c.memo is not None else None
        lookups[name] = None if s is None else s.hits + s.misses
    ref = per["no memo"]
    out = {"inputs": len(images), "rounds": rounds, "variants": {}}
    for name, v in per.items():
        ratios = [a / b for a, b in zip(v, ref)]
        out["variants"][name] = {"us_per_input": statistics.median(v) * 1e6, "ratio_median": statistics.median(ratios),
                                 "ratio_min": min(ratios), "ratio_max": max(ratios), "lookups_last_round": lookups[name]}
    return out


def main() -> None:
    from edgeconf.datasets import load_fashion_mnist

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--stream", type=int, default=10000, help="test images in the stream (no repeats)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    images, _ = load_fashion_mnist("test")
    res = measure(np.ascontiguousarray(images[:args.stream]), args.rounds)
    res["load_average"] = os.getloadavg()
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print("memo parts on %d FashionMNIST test images without repeats, %d rounds, shared sessions (load %.1f)"
          % (res["inputs"], res["rounds"], res["load_average"][0]))
    for name, r in res["variants"].items():
        print("  %-18s %6.1f µs/input  ÷ no memo %.3f (%.3f–%.3f)  lookups %s"
              % (name, r["us_per_input"], r["ratio_median"], r["ratio_min"], r["ratio_max"],
                 "—" if r["lookups_last_round"] is None else r["lookups_last_round"]))


if __name__ == "__main__":
    main()
