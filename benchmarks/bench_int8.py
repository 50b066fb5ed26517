"""INT8 ÷ float CPU time per image of every zoo model on ONNX Runtime (one interleaved run: ratios, not absolutes).

    .venv/bin/python benchmarks/bench_int8.py [--rounds 7] [--json]

Compares each float zoo model with its shipped INT8 copy (``edgeconf/data/zoo/int8/``) on the same test
images: 1 intra-op thread, batch 1, process CPU time, median of interleaved rounds. Prints the CPU's
vector flags, since INT8 speed on x86 depends on VNNI.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

import edgeconf
from edgeconf.devices.detect import cpu_flags
from edgeconf.export.cpu_cost import PROTOCOL, interleaved_cpu_us

ZOO = os.path.join(os.path.dirname(edgeconf.__file__), "data", "zoo")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with open(os.path.join(ZOO, "zoo.json"), encoding="utf-8") as f:
        zoo = json.load(f)
    with open(os.path.join(ZOO, "int8", "int8.json"), encoding="utf-8") as f:
        int8 = json.load(f)
    try:
        from edgeconf.datasets import load_fashion_mnist

        x = (load_fashion_mnist("test")[0][:500].astype(np.float32) / 255.0)[:, None]
    except Exception:  # no data set here: random images time the same arithmetic
        x = np.random.default_rng(0).random((500, 1, 28, 28), dtype=np.float32)
    feeds = {}
    for name, r in int8["models"].items():
        if "file" in r:
            feeds[name] = (os.path.join(ZOO, zoo["models"][name]["file"]), x)
            feeds[name + ".int8"] = (os.path.join(ZOO, r["file"]), x)
    t = interleaved_cpu_us(feeds, rounds=args.rounds)
    rows = [{"model": n, "float_us": t[n]["cpu_us"], "int8_us": t[n + ".int8"]["cpu_us"],
             "ratio": round(t[n + ".int8"]["cpu_us"] / t[n]["cpu_us"], 3)} for n in int8["models"] if n in t]
    flags = cpu_flags()
    if args.json:
        print(json.dumps({"protocol": PROTOCOL, "cpu_flags": flags, "rows": rows}, indent=1))
        return 0
    print("%s; CPU flags: %s" % (PROTOCOL, ", ".join(flags or []) or "unknown"))
    print("%-8s %10s %10s %8s" % ("model", "float µs", "INT8 µs", "ratio"))
    for r in rows:
        print("%-8s %10.1f %10.1f %8.3f" % (r["model"], r["float_us"], r["int8_us"], r["ratio"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
