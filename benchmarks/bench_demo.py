"""Issue-6 performance figures: `edgeconf demo` end to end at 640×480 with about 6 objects.

Targets (issue 6): >= 30 fps end to end on this 2-core machine, per-frame latency p95 reported, memo hit
rate >= 50 %. Every frame is processed (lossless demo source, as fast as possible), so fps is the
pipeline's capacity including rendering the synthetic scene on its own thread.

Run: .venv/bin/python benchmarks/bench_demo.py [--bundle FOLDER] [--frames 300] [--repeats 3] [--json]
Uses the shipped zoo bundle by default. Prints measured numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from edgeconf.live.cli import DEFAULT_BUNDLE, run_demo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=DEFAULT_BUNDLE)
    ap.add_argument("--baseline", default=None)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--objects", type=int, default=6)
    ap.add_argument("--regions", default=None, help="default: the demo's default (see edgeconf demo --help)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    runs = []
    for r in range(args.repeats):
        kw = dict(frames=args.frames, objects=args.objects, size="640x480", seed=1 + r, bundle_path=args.bundle,
                  baseline_path=args.baseline)
        if args.regions:
            kw["regions"] = args.regions
        s = run_demo(**kw)
        runs.append({"seed": 1 + r, "fps": s["fps"], "p50_ms": s["latency_ms"]["p50"], "p95_ms": s["latency_ms"]["p95"],
                     "memo_hit_rate": s["memo_hit_rate"], "escalation_rate": s["escalation_rate"],
                     "accuracy": s["accuracy"]["accuracy"], "mota": s["tracking"]["mota"], "idf1": s["tracking"]["idf1"],
                     "compute_saved": s["compute"].get("saved"), "regions": s["regions"]})
    fps = [r["fps"] for r in runs]
    out = {"bench": "demo", "frames": args.frames, "objects": args.objects, "runs": runs,
           "fps_median": statistics.median(fps), "fps_min": min(fps),
           "p95_ms_median": statistics.median(r["p95_ms"] for r in runs),
           "memo_hit_rate_min": min(r["memo_hit_rate"] or 0.0 for r in runs),
           "targets": {"fps": 30.0, "memo_hit_rate": 0.5}}
    out["meets_targets"] = out["fps_min"] >= 30.0 and out["memo_hit_rate_min"] >= 0.5
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for r in runs:
        print("seed %d: %.1f fps, latency p50 %.2f ms p95 %.2f ms, memo %.1f %%, escalation %s, accuracy %s, MOTA %s, "
              "compute saved %s" % (r["seed"], r["fps"], r["p50_ms"], r["p95_ms"], 100 * (r["memo_hit_rate"] or 0),
                                    r["escalation_rate"], r["accuracy"], r["mota"], r["compute_saved"]))
    print("median %.1f fps (min %.1f), p95 %.2f ms; memo hit rate min %.1f %%; targets met: %s" % (
        out["fps_median"], out["fps_min"], out["p95_ms_median"], 100 * out["memo_hit_rate_min"], out["meets_targets"]))


if __name__ == "__main__":
    main()
