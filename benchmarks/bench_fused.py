"""Fused vs staged cascade on ONNX Runtime CPU: process CPU per image at batch 1 and batch 256, one thread.

Both forms of the shipped bundle (fused into temporary copies: the ``--batch 1`` graph for batch 1, and the
any-batch graph at batch 1 and 256) classify the same FashionMNIST test images
(the Debian package; the shipped 300-image sample without it), through ``classify``/``classify_batch`` with
the memo off, in interleaved chunks so load on the machine falls on both alike. Prints CPU µs per image and
fused ÷ staged for each batch size (and the raw graph call, the floor of the fused form), plus whether the
answers were identical. Ratios within one run are the figure to read; absolute times move with the machine.

    .venv/bin/python benchmarks/bench_fused.py [--bundle DIR] [--limit N] [--rounds R] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from edgeconf import data_path  # noqa: E402
from edgeconf.bundle import load_bundle  # noqa: E402
from edgeconf.errors import DataError  # noqa: E402


def images(limit: int) -> np.ndarray:
    from edgeconf.datasets import load_fashion_mnist

    try:
        x, _ = load_fashion_mnist("test")
    except DataError:
        x = np.load(data_path("fashion_sample.npz"))["images"]
    return x[:limit]


def cpu_per_image(fn: Callable[[np.ndarray], Any], x: np.ndarray) -> float:
    t = time.process_time()
    fn(x)
    return (time.process_time() - t) / max(1, len(x))


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=data_path("zoo", "bundle"))
    ap.add_argument("--limit", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the median is reported)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from edgeconf.export.fuse import fuse_bundle

    x = images(args.limit)
    tmp = tempfile.mkdtemp(prefix="edgeconf-bench-fused-")
    try:
        forms = {}
        for key, batch in (("1", 1), ("N", None)):  # the batch-1 graph (--batch 1) and the any-batch graph
            folder = os.path.join(tmp, "bundle" + key)
            shutil.copytree(args.bundle, folder)
            fuse_bundle(folder, batch=batch, check=False)
            forms[key] = load_bundle(folder, memo=False, threads=1, form="fused")
        staged = load_bundle(args.bundle, memo=False, threads=1, form="staged")
        want = staged.classify_batch(list(x))
        same = all((a.class_id, a.stage) == (b.class_id, b.stage) and abs(a.confidence - b.confidence) <= 1e-5
                   for fused in forms.values() for a, b in zip(want, fused.classify_batch(list(x))))
        names = ["class", "confidence", "stage", "stages_run", "probs"]

        def one(c: Any) -> Callable[[np.ndarray], None]:
            return lambda xs: [c.classify(im) for im in xs]

        def many(c: Any) -> Callable[[np.ndarray], None]:
            return lambda xs: [c.classify_batch(list(xs[a:a + 256])) for a in range(0, len(xs), 256)]

        def call(c: Any, b: int) -> Callable[[np.ndarray], None]:
            run = c.fused_runner.run_trusted
            return lambda xs: [run({"image": xs[a:a + b]}, names) for a in range(0, len(xs), b)]

        cases: Dict[str, Dict[str, Callable[[np.ndarray], Any]]] = {
            "batch 1": {"staged": one(staged), "fused": one(forms["1"]), "fused graph call": call(forms["1"], 1)},
            "batch 1, any-batch graph": {"staged": one(staged), "fused": one(forms["N"]),
                                         "fused graph call": call(forms["N"], 1)},
            "batch 256": {"staged": many(staged), "fused": many(forms["N"]), "fused graph call": call(forms["N"], 256)},
        }
        for fns in cases.values():  # warm-up
            for fn in fns.values():
                fn(x[:256])
        chunk = 500
        times: Dict[str, Dict[str, List[float]]] = {b: {k: [] for k in fns} for b, fns in cases.items()}
        for r in range(args.rounds):
            for b, fns in cases.items():
                acc = {k: 0.0 for k in fns}
                order = list(fns) if r % 2 == 0 else list(reversed(list(fns)))
                for a in range(0, len(x), chunk):
                    for k in order:
                        acc[k] += cpu_per_image(fns[k], x[a:a + chunk]) * len(x[a:a + chunk])
                for k in fns:
                    times[b][k].append(acc[k] / len(x))
        staged.close()
        for fused in forms.values():
            fused.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result: Dict[str, Any] = {"bundle": args.bundle, "images": int(len(x)), "rounds": args.rounds, "threads": 1,
                              "identical_answers": bool(same), "clock": "time.process_time", "per_image_us": {},
                              "fused_over_staged": {}}
    for b, per in times.items():
        med = {k: float(np.median(v)) * 1e6 for k, v in per.items()}
        result["per_image_us"][b] = {k: round(v, 2) for k, v in med.items()}
        result["fused_over_staged"][b] = round(med["fused"] / med["staged"], 3)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("fused vs staged, ONNX Runtime CPU, 1 thread, %d images, median of %d interleaved rounds (process CPU)"
          % (len(x), args.rounds))
    print("%-26s %12s %12s %18s %16s" % ("batch", "staged µs", "fused µs", "fused graph µs", "fused ÷ staged"))
    for b in cases:
        u = result["per_image_us"][b]
        print("%-26s %12.1f %12.1f %18.1f %16.3f" % (b, u["staged"], u["fused"], u["fused graph call"],
                                                    result["fused_over_staged"][b]))
    print("identical answers (class, stage; confidence within 1e-5): %s" % ("yes" if same else "NO"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
