"""The evidence rule (a track shows a class only once its detections' mean score reaches the shipped detector's
``class_score``, or enough answers named a class; docs/pipeline.md, "When a track shows a class"): what it does, rule
off against rule on, on the training-side data it was chosen on and on any other scenes.

1. A photo video of training-side pictures: the OOD fit's negative pictures (``photo_video.NEGATIVES``), each as it
   is, mirrored and turned, plus two mosaics of scikit-image's 200 LFW faces; 40 pan-and-zoom frames each (none is
   one of the benchmark's photographs, ``photo_video.PHOTOS``). Share of the answers that are ``unknown``.
2. Demo scenes (validation seeds 230-244 by default: outside the evaluation seeds and the OOD fit's 100-199) through
   ``run_demo``: accuracy among class answers, with ``unknown`` counted wrong, and over all matched track-frames.

The figures are deterministic (no timing). Prints measured numbers; asserts nothing.

Run: .venv/bin/python benchmarks/bench_class_evidence.py [--rules detector:class_score=0,detector]
                                                         [--seeds 230-244] [--frames 300] [--no-photos] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any, Dict, Iterator, List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import photo_video  # noqa: E402
from edgeconf.bundle import load_bundle  # noqa: E402
from edgeconf.live.cli import DEFAULT_BUNDLE, run_demo  # noqa: E402


def lfw_mosaic(folder: str, seed: int) -> np.ndarray:
    """80 of scikit-image's LFW faces (25×25, grey) at 100×100 px in a 10×8 grid, picked with ``seed``."""
    import cv2

    faces = np.load(os.path.join(folder, "lfw_subset.npy"), allow_pickle=False)
    idx = np.random.default_rng(seed).permutation(len(faces))[:80]
    tiles = [cv2.resize((np.clip(faces[i], 0, 1) * 255).astype(np.uint8), (100, 100)) for i in idx]
    grid = np.concatenate([np.concatenate(tiles[r * 10:(r + 1) * 10], axis=1) for r in range(8)], axis=0)
    return np.repeat(grid[..., None], 3, axis=2)


def training_pictures() -> Iterator[np.ndarray]:
    """The training-side pictures (RGB): each negative picture as it is, mirrored, turned; then two face mosaics."""
    folder = photo_video.photo_folder()
    if folder is None:
        return
    base = [photo_video.read_rgb(os.path.join(folder, n)) for n in photo_video.NEGATIVES
            if os.path.isfile(os.path.join(folder, n))]
    yield from base
    for im in base:
        yield np.ascontiguousarray(im[:, ::-1])
        yield np.ascontiguousarray(np.transpose(im, (1, 0, 2))[::-1])
    if os.path.isfile(os.path.join(folder, "lfw_subset.npy")):
        yield lfw_mosaic(folder, 0)
        yield lfw_mosaic(folder, 1)


def write_training_video(path: str, per_picture: int = 40) -> int:
    """Write the training-side photo video (MJPG .avi, 640×480); returns its frame count (0: no scikit-image)."""
    import cv2

    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    n = 0
    try:
        for im in training_pictures():
            for fr in photo_video.pan_zoom(im, per_picture):
                writer.write(cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
                n += 1
    finally:
        writer.release()
    return n


def photo_figures(regions: str, path: str, frames: int) -> Dict[str, Any]:
    from edgeconf.live.pipeline import Pipeline
    from edgeconf.live.sources import open_source

    cascade = load_bundle(DEFAULT_BUNDLE)
    source = open_source("file://%s?realtime=0" % path)
    try:
        c = Pipeline(cascade, source, regions=regions).run(max_frames=frames)
    finally:
        source.close()
        cascade.close()
    return {"frames": c.frames, "answers": c.answers, "unknown": c.unknown, "unknown_rate": c.unknown_rate}


def scene_figures(regions: str, seeds: List[int], frames: int) -> Dict[str, Any]:
    tot = {"correct": 0, "scored": 0, "unknown": 0, "unanswered": 0}
    for seed in seeds:
        s = run_demo(frames=frames, objects=(6, 8, 10)[seed % 3], seed=seed, regions=regions, bundle_path=DEFAULT_BUNDLE)
        for k in tot:
            tot[k] += int(s["classification"].get(k, 0))
    c, sc, u, na = tot["correct"], tot["scored"], tot["unknown"], tot["unanswered"]
    tot.update(accuracy=c / sc if sc else None, accuracy_unknown_wrong=c / (sc + u) if sc + u else None,
               accuracy_all=c / (sc + u + na) if sc + u + na else None)
    return tot


def parse_seeds(text: str) -> List[int]:
    out: List[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--rules", default="detector:class_score=0,detector",
                    help="comma-separated regions specs to compare (detector:class_score=0 is the rule off)")
    ap.add_argument("--seeds", default="230-244", help="demo scene seeds (objects 6/8/10 by seed %% 3)")
    ap.add_argument("--frames", type=int, default=300, help="frames per scene")
    ap.add_argument("--no-photos", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    seeds = parse_seeds(args.seeds)
    out: Dict[str, Any] = {"bench": "class_evidence", "rules": rules, "seeds": seeds, "frames": args.frames,
                           "photos": {}, "scenes": {}}
    if not args.no_photos:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "training_photos.avi")
            n = write_training_video(path)
            for r in rules:
                out["photos"][r] = photo_figures(r, path, n) if n else "not measured (scikit-image is not installed)"
    for r in rules:
        out["scenes"][r] = scene_figures(r, seeds, args.frames)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    pct = lambda v: "--" if v is None else "%.2f %%" % (100 * v)  # noqa: E731
    for r in rules:
        p = out["photos"].get(r)
        if isinstance(p, dict):
            print("%-24s training-side photo video (%d frames): %d answers, %s unknown" % (
                r, p["frames"], p["answers"], pct(p["unknown_rate"])))
        elif p:
            print("%-24s training-side photo video: %s" % (r, p))
        s = out["scenes"][r]
        print("%-24s scenes %s, %d frames each: accuracy %s of class answers, %s with unknown wrong, %s of all "
              "(right %d, class answers %d, unknown %d, no answer yet %d)" % (
                  r, args.seeds, args.frames, pct(s["accuracy"]), pct(s["accuracy_unknown_wrong"]),
                  pct(s["accuracy_all"]), s["correct"], s["scored"], s["unknown"], s["unanswered"]))


if __name__ == "__main__":
    main()
