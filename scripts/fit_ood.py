"""Give a cascade out-of-distribution heads on stages 1 and 2, so crops that are no class are answered "unknown";
this is the last step of the shipped live bundle.

    .venv/bin/python scripts/fit_ood.py --bundle CASCADE [--out edgeconf/data/zoo/live] [--data DIR]
                                        [--seeds 100-199] [--item-seeds SEEDS] [--keep 0.998] [--escalate-keep 0.90] [--next-keep 0.998]

Two bundles ship: ``zoo/bundle`` (written by ``scripts/train_zoo.py``) classifies whole images and carries no OOD
head, so ``classify`` and ``bench`` on FashionMNIST pay nothing for it; ``zoo/live`` is what ``demo``, ``run`` and
the GUI use on camera crops: ``scripts/train_live.py`` builds its cascade (the zoo's models fine-tuned for the
demo scene) and runs this script on it with ``--out edgeconf/data/zoo/live``. Re-run ``train_live.py`` after
``train_zoo.py`` and after any change to the demo scene. Everything is seeded, so the same cascade and scene give
the same head. What it fits (``edgeconf.export.ood``, method ``learned``, on stage 1's last feature map):

* in-distribution: the zoo's held-out calibration split (10 000 FashionMNIST train images, ``default_rng(0)``,
  as ``train_zoo.py`` carves it) and crops of whole objects from demo scenes (exact and jittered boxes);
* no class: crops of background, of two merged objects, of objects cut by the frame edge and strips of objects
  (``edgeconf.live.scene_crops``) from demo scenes with seeds outside ``HELD_OUT_SEEDS``;
* the scenes: ``--seeds`` (default 100-199) draw their items from the shipped sample as ``demo://`` does (100 seeds
  put every one of its 300 items on screen; 30 left some out, and the head called the crops of items it had never
  seen whole unknown); ``--item-seeds`` (off by default) adds scenes whose items come from the calibration split;
* stage 1 (the zoo's ``tiny``, the weakest): unknown above the ``--keep`` quantile (99.8 %) of the scores of a
  held-out 30 % of the in-distribution inputs, a lenient threshold; between the ``--escalate-keep`` quantile (90 %)
  and it, a **doubt band**: stage 1 may not answer, the crop goes on to stage 2;
* stage 2 (``student``): its own head, fitted the same way on its last feature map from the same crops, unknown above
  its ``--next-keep`` quantile (99.8 %); it judges every crop that reaches it (unsure of its class or in doubt).
  ``--escalate-keep 0`` fits stage 1 alone, with no band (the earlier recipe, with ``--keep 0.995``).

``benchmarks/bench_unknown.py`` measures the result on the held-out scene seeds and on real photographs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Iterator, List, Optional, Tuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))

import photo_video  # noqa: E402
from edgeconf.bundle import read_manifest, write_manifest  # noqa: E402
from edgeconf.datasets import load_fashion_mnist  # noqa: E402
from edgeconf.export.ood import fit_stage_ood  # noqa: E402
from edgeconf.live import demo_scene  # noqa: E402
from edgeconf.live.scene_crops import KEEP_CLASS, scene_crops  # noqa: E402

CALIB_SIZE = 10000  # scripts/train_zoo.py: the calibration split held out of the train split
SPLIT_SEED = 0
NEGATIVE_KINDS = ("border", "merged", "background", "sliver")
#: scikit-image pictures used as examples of what is no class: none of them is one of the photographs that
#: benchmarks/photo_video.py (PHOTOS) measures with (motorcycle_right.png, the other eye of motorcycle_left, left out too)
PHOTO_NEGATIVES = photo_video.NEGATIVES


def held_out() -> range:
    return getattr(demo_scene, "HELD_OUT_SEEDS", range(1, 100))


def parse_seeds(text: str) -> List[int]:
    out: List[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def scene_data(seeds: List[int], frames: int, step: int, sample: Optional[Tuple[np.ndarray, np.ndarray]] = None):
    """Object and no-class crops of demo scenes; ``sample`` replaces the shipped items the scene draws."""
    pos, neg = [], []
    for seed in seeds:
        scene = demo_scene.DemoScene(seed=seed, objects=6 + 2 * (seed % 3), frames=frames, sample=sample)
        for c in scene_crops(scene, range(0, frames, step), seed=10000 + seed, slivers=True):
            if c.kind in KEEP_CLASS:
                pos.append(c.image)
            elif c.kind in NEGATIVE_KINDS:
                neg.append(c.image)
        print("[scene] seed %d: %d object crops, %d no-class crops so far" % (seed, len(pos), len(neg)), flush=True)
    return pos, neg


def photo_negatives(frames: int = 40, per_frame: int = 6, seed: int = 7) -> List[np.ndarray]:
    """Random boxes (as benchmarks/bench_unknown.py cuts them) of pan-and-zoom frames of ``PHOTO_NEGATIVES`` and
    scikit-image's 200 LFW faces, from its installed data folder (never downloaded); [] without scikit-image."""
    folder = photo_video.photo_folder()
    if folder is None:
        return []
    paths = [os.path.join(folder, n) for n in PHOTO_NEGATIVES if os.path.isfile(os.path.join(folder, n))]
    if set(map(os.path.basename, paths)) & set(photo_video.PHOTOS):
        raise SystemExit("fit_ood: a negative picture is one the benchmark measures with")
    rng = np.random.default_rng(seed)
    out: List[np.ndarray] = []
    for path in paths:
        for fr in photo_video.pan_zoom(photo_video.read_rgb(path), frames):
            for _ in range(per_frame):
                s, ar = int(rng.integers(36, 200)), float(rng.uniform(0.6, 1.6))
                w, h = min(639, int(s * ar)), min(479, int(s / ar))
                x, y = int(rng.integers(0, 640 - w)), int(rng.integers(0, 480 - h))
                out.append(np.ascontiguousarray(fr[y:y + h, x:x + w]))
    faces = os.path.join(folder, "lfw_subset.npy")
    if os.path.isfile(faces):
        for f in np.load(faces, allow_pickle=False):
            out.append(np.repeat((np.clip(f, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2))
    return out


def sample_answers(folder: str) -> dict:
    """What the bundle answers on the shipped sample (300 FashionMNIST test images, OOD rules on): one character
    per image, the class id (0-9) or "u" for unknown; a test checks the shipped files against it."""
    from edgeconf.bundle import load_bundle
    from edgeconf.live.demo_scene import load_sample

    x, y = load_sample()
    with load_bundle(folder, memo=False, threads=1) as cascade:
        answers = [int(r.class_id) for r in cascade.classify_batch(list(x))]
    return {"file": "fashion_sample.npz", "images": len(answers),
            "correct": int(sum(a == int(t) for a, t in zip(answers, y))), "unknown": int(sum(a < 0 for a in answers)),
            "answers": "".join("u" if a < 0 else str(a) for a in answers)}


def refresh_sample_answers(folder: str) -> None:
    """Re-record ``live_training.sample_answers`` in the manifest (when present) after the OOD rules changed."""
    manifest = read_manifest(folder, verify=True)
    if isinstance(manifest.extra.get("live_training"), dict):
        manifest.extra["live_training"]["sample_answers"] = sample_answers(folder)
        write_manifest(folder, manifest)


@contextlib.contextmanager
def _target(bundle: str, out: str, name: str, seeds: str, item_seeds: str, photos: int) -> Iterator[str]:
    """The folder to fit in: ``bundle`` itself, or a copy that replaces ``out`` only once the fit succeeded."""
    if not out:
        yield bundle
        return
    out = os.path.abspath(out)
    tmp = tempfile.mkdtemp(prefix=".fit-ood-", dir=os.path.dirname(out))
    try:
        folder = os.path.join(tmp, "bundle")
        shutil.copytree(bundle, folder)
        manifest = read_manifest(folder, verify=True)
        manifest.name = name
        manifest.provenance = dict(manifest.provenance, derived_from=os.path.basename(os.path.normpath(bundle)),
                                   ood="OOD heads: scripts/fit_ood.py (learned, seeds %s%s%s)"
                                   % (seeds, ", calibration-item seeds %s" % item_seeds if item_seeds else "",
                                      ", %d crops of other pictures" % photos if photos else ""),
                                   ood_seeds={"scenes": seeds, "calibration_items": item_seeds})
        write_manifest(folder, manifest)
        yield folder
        old = out + ".old"
        if os.path.isdir(out):
            os.replace(out, old)
        os.replace(folder, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, help="the cascade to start from (left unchanged when --out is given; "
                    "scripts/train_live.py passes the live cascade it built)")
    ap.add_argument("--out", default="edgeconf/data/zoo/live", help="where the bundle with the OOD head goes "
                    "(replaced atomically); '' fits in place")
    ap.add_argument("--name", default="fashion-cascade3-live", help="the new bundle's name")
    ap.add_argument("--data", default=None, help="FashionMNIST IDX folder (default: the Debian package)")
    ap.add_argument("--seeds", default="100-199", help="demo scene seeds for object and no-class crops (items from the "
                    "shipped sample, as demo:// draws them)")
    ap.add_argument("--item-seeds", default="", help="more demo scenes whose items are drawn from the calibration "
                    "split instead of the shipped sample (scene-rendered crops of other shapes; e.g. 200-229; tried, "
                    "not the default: docs/unknown.md)")
    ap.add_argument("--no-photo-negatives", action="store_true", help="leave out the crops of scikit-image pictures "
                    "(PHOTO_NEGATIVES and its LFW faces; none is a benchmark photograph) among the no-class examples")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--step", type=int, default=12, help="use every STEP-th frame")
    ap.add_argument("--keep", type=float, default=0.998, help="stage 1's OOD threshold: this quantile of held-out "
                    "in-distribution scores")
    ap.add_argument("--escalate-keep", type=float, default=0.90, help="lower edge of stage 1's doubt band (a quantile "
                    "of the same scores); 0: no band and no stage-2 head")
    ap.add_argument("--next-keep", type=float, default=0.998, help="stage 2's OOD threshold (quantile of its scores)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    item_seeds = parse_seeds(args.item_seeds) if args.item_seeds else []
    bad = sorted(set(seeds + item_seeds) & set(held_out()))
    if bad:
        ap.error("seeds %s are held out for evaluation (HELD_OUT_SEEDS); pick others" % bad)
    t0 = time.time()
    x, y = load_fashion_mnist("train", args.data)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    calib = np.sort(perm[:CALIB_SIZE])
    pos, neg = scene_data(seeds, args.frames, args.step)
    if item_seeds:
        p2, n2 = scene_data(item_seeds, args.frames, args.step, sample=(x[calib], y[calib]))
        pos, neg = pos + p2, neg + n2
    photos = [] if args.no_photo_negatives else photo_negatives()
    if not args.no_photo_negatives and not photos:
        ap.error("no scikit-image pictures here for the photo negatives (pip install scikit-image, or "
                 "--no-photo-negatives)")
    neg = neg + photos
    print("[photos] %d crops of other pictures as no-class examples" % len(photos), flush=True)
    pre = read_manifest(args.bundle, verify=False).preprocessing  # crops as the bundle's models see them
    pre_pos, pre_neg = pre.batch(pos), pre.batch(neg)
    band = args.escalate_keep or None
    with _target(args.bundle, args.out, args.name, args.seeds, args.item_seeds, len(photos)) as folder:
        report = fit_stage_ood(folder, x[calib], y[calib], negatives=pre_neg, extra_positives=pre_pos, stage=0,
                               method="learned", keep=args.keep, seed=0, threads=args.threads, escalate_keep=band)
        reports = [report.to_json()]
        if band is not None:
            reports.append(fit_stage_ood(folder, x[calib], y[calib], negatives=pre_neg, extra_positives=pre_pos,
                                         stage=1, method="learned", keep=args.next_keep, seed=0,
                                         threads=args.threads).to_json())
        refresh_sample_answers(folder)
    out = dict(reports[0], stages=reports)
    out["scene_seeds"] = args.seeds
    out["item_seeds"] = args.item_seeds
    out["photo_negatives"] = len(photos)
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
