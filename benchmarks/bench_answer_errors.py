"""Issue-14 accuracy read as causes: what every matched track-frame showed on the demo scenes, and why the wrong ones
are wrong (``edgeconf.live.answer_errors``).

Runs the pipeline as ``edgeconf demo`` does (every frame, the shipped live bundle) on scenes (held-out seeds 1, 2, 3
with 6, 8, 10 objects by default) and counts each matched track-frame once: right, wrong (the classifier gets the
object's own 28×28 sample image wrong / identity switch / the track mostly wrong on this object / early / flicker),
"unknown" (before or after a class was shown), or no answer yet; split by the object's view (border, occluded,
clear). The three accuracies follow from the counts. Prints measured numbers; asserts nothing.

Run: .venv/bin/python benchmarks/bench_answer_errors.py [--regions detector,truth] [--seeds 1,2,3] [--objects 6,8,10]
                                                         [--frames 600] [--json]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from edgeconf.bundle import load_bundle  # noqa: E402
from edgeconf.live.answer_errors import WRONG_CAUSES, AnswerLog  # noqa: E402
from edgeconf.live.cli import DEFAULT_BUNDLE, demo_uri  # noqa: E402
from edgeconf.live.demo_scene import load_sample  # noqa: E402
from edgeconf.live.pipeline import Pipeline  # noqa: E402
from edgeconf.live.sources import open_source  # noqa: E402

VIEWS = ("clear", "border", "occluded")


def wrong_items(bundle: str) -> List[int]:
    """Sample images the bundle's cascade answers wrongly (or "unknown") as their own 28×28 originals."""
    images, labels = load_sample()
    cascade = load_bundle(bundle, memo=False)
    try:
        answers = cascade.classify_batch([np.repeat(im[:, :, None], 3, axis=2) for im in images])
    finally:
        cascade.close()
    return [i for i, (a, y) in enumerate(zip(answers, labels)) if a.unknown or int(a.class_id) != int(y)]


def one(bundle: str, regions: str, seed: int, objects: int, frames: int) -> AnswerLog:
    log = AnswerLog()
    cascade = load_bundle(bundle)
    source = open_source(demo_uri(seed, objects, "640x480", 30.0, frames, realtime=False))
    try:
        pipe = Pipeline(cascade, source, regions=regions, refresh_frames=30)

        def score(res: Any) -> None:
            if res.truth is not None:
                h, w = res.image.shape[:2]
                log.update(res.frame_index, res.truth, [t for t in res.tracks if t.frames_since_match == 0], (w, h))

        pipe.run(max_frames=frames, on_result=score)
    finally:
        source.close()
        cascade.close()
    return log


def totals(counts: Dict[str, Dict[str, int]]) -> Dict[str, Any]:
    n = {k: v.get("all", 0) for k, v in counts.items()}
    right = n.get("right", 0)
    wrong = sum(v for k, v in n.items() if k.startswith("wrong"))
    unknown = sum(v for k, v in n.items() if k.startswith("unknown"))
    none = n.get("no answer yet", 0)
    return {"matched": right + wrong + unknown + none, "right": right, "wrong": wrong, "unknown": unknown,
            "no_answer_yet": none,
            "accuracy": right / (right + wrong) if right + wrong else None,
            "accuracy_unknown_wrong": right / (right + wrong + unknown) if right + wrong + unknown else None,
            "accuracy_all": right / (right + wrong + unknown + none) if right + wrong + unknown + none else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--bundle", default=DEFAULT_BUNDLE)
    ap.add_argument("--regions", default="detector", help="comma-separated region proposers")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--objects", default="6,8,10")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    objects = [int(s) for s in args.objects.split(",")]
    if len(seeds) != len(objects):
        ap.error("give one --objects count per seed")
    bad = wrong_items(args.bundle)
    out: Dict[str, Any] = {"bench": "answer_errors", "seeds": seeds, "objects": objects, "frames": args.frames,
                           "sample_items_wrong": len(bad), "regions": {}}
    for regions in [r.strip() for r in args.regions.split(",") if r.strip()]:
        counts: Dict[str, Dict[str, int]] = collections.defaultdict(lambda: collections.Counter())
        for seed, n in zip(seeds, objects):
            for k, v in one(args.bundle, regions, seed, n, args.frames).breakdown(bad).items():
                counts[k].update(v)
        counts = {k: dict(v) for k, v in counts.items()}
        out["regions"][regions] = {"counts": counts, "totals": totals(counts)}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print("scenes %s (%s objects), %d frames each; the bundle gets %d of the sample's images wrong as 28x28 originals"
          % (seeds, objects, args.frames, len(bad)))
    order = ["right"] + ["wrong: " + c for c in WRONG_CAUSES] + ["unknown: no class shown before",
                                                                 "unknown: after a class", "no answer yet"]
    for regions, r in out["regions"].items():
        t = r["totals"]
        print("\n%s: %d matched track-frames" % (regions, t["matched"]))
        print("  %-40s %6s %6s %6s %8s" % ("shown", "all", *VIEWS))
        for k in order:
            v = r["counts"].get(k, {})
            print("  %-40s %6d %6d %6d %8d" % (k, v.get("all", 0), *(v.get(x, 0) for x in VIEWS)))
        pct = lambda v: "--" if v is None else "%.1f %%" % (100 * v)  # noqa: E731
        print("  accuracy: %s of class answers, %s with unknown counted wrong, %s of all matched track-frames" % (
            pct(t["accuracy"]), pct(t["accuracy_unknown_wrong"]), pct(t["accuracy_all"])))


if __name__ == "__main__":
    main()
