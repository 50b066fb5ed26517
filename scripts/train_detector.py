"""Train the shipped region detector: a tiny CenterNet on synthetic demo scenes, exported as a YOLO-layout ONNX.

    .venv/bin/python scripts/train_detector.py [--out edgeconf/data/detector] [--epochs 24] [--threads 2]

What it does, all on the CPU with fixed seeds (a few minutes on two cores):

1. renders frames of ``DemoScene`` for training seeds ``TRAIN_SEEDS`` (never the held-out evaluation seeds
   ``edgeconf.live.demo_scene.HELD_OUT_SEEDS``), with scene settings drawn per seed (object count and sizes,
   clutter, noise, lighting) and items from FashionMNIST's *train* split (the demo draws test images), then
   scales them to the detector's input (320×240, as ``DetectorRegions`` letterboxes a 640×480 frame);
2. trains a centre heatmap + box size + centre offset network on random zoomed crops (penalty-reduced focal loss
   on the heatmap, L1 on log sizes and offsets); objects less than ``MIN_VISIBLE`` visible are ignored;
3. exports one ONNX graph that also decodes: peaks of the heatmap (3×3 max-pool) become rows
   ``(cx, cy, w, h, objectness, class score)`` in input pixels, the YOLOv5 layout ``(1, cells, 6)`` that
   ``edgeconf.live.regions.DetectorRegions`` reads, with ``names`` metadata (one class, "object") and the
   operating point (``conf``, ``iou``) under ``edgeconf.detector``;
4. checks the ONNX file against torch and reports recall/precision on validation seeds (also never evaluated on).

Data: ``--data DIR`` or ``$EDGECONF_FASHION_MNIST`` or the Debian package ``dataset-fashion-mnist``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import List, Optional, Tuple

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from edgeconf.atomic import write_bytes  # noqa: E402
from edgeconf.live.demo_scene import HELD_OUT_SEEDS, DemoScene  # noqa: E402

INPUT_HW = (240, 320)  # the detector's input (h, w): a 640×480 frame at half size
STRIDE = 8
CROP = 160  # training crops (square), a multiple of 16
MIN_VISIBLE = 0.35  # less visible objects are neither positives nor negatives
TRAIN_SEEDS = range(1000, 1300)
VAL_SEEDS = range(1900, 1910)
FRAMES_PER_SEED = 8
CONF = 0.3  # operating point written into the model: rows below are not detections
IOU = 0.6  # NMS: touching objects overlap a little; only near-duplicates are suppressed
BOX_WEIGHT = 2.0  # the IoU term: box precision decides what the classifier sees


# --------------------------------------------------------------------------------------------- model
def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyCenterNet(nn.Module):
    """Strides 2-4-8-16, the 1/16 features upsampled onto the 1/8 ones; 5 maps at 1/8: heat, dx, dy, log w, log h."""

    def __init__(self) -> None:
        super().__init__()
        self.s2 = conv(3, 12, 2)
        self.s4 = conv(12, 24, 2)
        self.s8 = nn.Sequential(conv(24, 32, 2), conv(32, 32))
        self.s16 = nn.Sequential(conv(32, 48, 2), conv(48, 48), conv(48, 48))
        self.lateral = nn.Conv2d(48, 32, 1)
        self.head = conv(32, 32)
        self.out = nn.Conv2d(32, 5, 1)
        nn.init.constant_(self.out.bias, 0.0)
        with torch.no_grad():
            self.out.bias[0] = -4.0  # a heatmap that starts near 0 (focal-loss practice)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f8 = self.s8(self.s4(self.s2(x)))
        f16 = self.s16(f8)
        up = F.interpolate(self.lateral(f16), scale_factor=2.0, mode="nearest")
        return self.out(self.head(f8 + up))


class Decoded(nn.Module):
    """The network plus its decoding, for export: rows (cx, cy, w, h, peak score, 1) in input pixels."""

    def __init__(self, net: TinyCenterNet, hw: Tuple[int, int]) -> None:
        super().__init__()
        self.net = net
        gh, gw = hw[0] // STRIDE, hw[1] // STRIDE
        gy, gx = torch.meshgrid(torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32), indexing="ij")
        self.register_buffer("gx", gx.reshape(1, -1))
        self.register_buffer("gy", gy.reshape(1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        heat = torch.sigmoid(out[:, 0:1])
        peak = heat * (F.max_pool2d(heat, 3, 1, 1) == heat).to(heat.dtype)
        n = out.shape[0]
        flat = out.reshape(n, 5, -1)
        cx = (self.gx + torch.sigmoid(flat[:, 1])) * STRIDE
        cy = (self.gy + torch.sigmoid(flat[:, 2])) * STRIDE
        w = torch.exp(flat[:, 3].clamp(-4.0, 5.0)) * STRIDE
        h = torch.exp(flat[:, 4].clamp(-4.0, 5.0)) * STRIDE
        score = peak.reshape(n, -1)
        rows = torch.stack([cx, cy, w, h, score, torch.ones_like(score)], dim=2)
        return rows


# --------------------------------------------------------------------------------------------- data
def fashion_train(root: Optional[str]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    from edgeconf.datasets import load_fashion_mnist
    from edgeconf.errors import EdgeconfError

    try:
        return load_fashion_mnist("train", root)
    except EdgeconfError as exc:
        print("FashionMNIST train split unavailable (%s); drawing the shipped sample instead" % exc, file=sys.stderr)
        return None


def scene_for(seed: int, sample: Optional[Tuple[np.ndarray, np.ndarray]]) -> DemoScene:
    """A scene with settings drawn from the seed, so the detector sees many kinds of scene."""
    rng = np.random.default_rng([seed, 99])
    lo = int(rng.integers(28, 60))
    hi = int(rng.integers(lo + 16, 132))
    return DemoScene(seed=seed, objects=int(rng.integers(2, 13)), clutter=int(rng.integers(0, 11)),
                     noise=float(rng.uniform(0, 8)), lighting=float(rng.uniform(0, 0.3)), object_size=(lo, hi),
                     sample=sample)


def render_pool(seeds: range, sample, frames_per_seed: int) -> Tuple[np.ndarray, List[np.ndarray]]:
    """Frames at the detector's input size and their objects: per frame an array (x1, y1, x2, y2, visible)."""
    images, objects = [], []
    t0 = time.perf_counter()
    for n, seed in enumerate(seeds):
        if seed in HELD_OUT_SEEDS:
            raise SystemExit("seed %d is a held-out evaluation seed; the detector must never train on it" % seed)
        scene = scene_for(seed, sample)
        rng = np.random.default_rng([seed, 7])
        for i in sorted(rng.choice(1800, frames_per_seed, replace=False)):
            image, truth = scene.render(int(i))
            small = cv2.resize(image, (INPUT_HW[1], INPUT_HW[0]), interpolation=cv2.INTER_LINEAR)
            images.append(small)
            k = INPUT_HW[1] / image.shape[1]
            objects.append(np.array([[t.box[0] * k, t.box[1] * k, t.box[2] * k, t.box[3] * k, t.visible_fraction]
                                     for t in truth], np.float32).reshape(-1, 5))
        if (n + 1) % 50 == 0:
            print("  rendered %d/%d scenes (%.0f s)" % (n + 1, len(seeds), time.perf_counter() - t0), file=sys.stderr)
    return np.stack(images), objects


def crop_sample(image: np.ndarray, objs: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """A random zoomed, flipped, colour-jittered CROP×CROP piece and its objects (boxes clipped; visibility cut)."""
    zoom = float(np.exp(rng.uniform(math.log(0.7), math.log(1.4))))
    h, w = image.shape[:2]
    zh, zw = max(CROP, int(round(h * zoom))), max(CROP, int(round(w * zoom)))
    sy, sx = zh / h, zw / w
    img = cv2.resize(image, (zw, zh), interpolation=cv2.INTER_LINEAR)
    y0, x0 = int(rng.integers(0, zh - CROP + 1)), int(rng.integers(0, zw - CROP + 1))
    img = img[y0:y0 + CROP, x0:x0 + CROP]
    out = []
    for x1, y1, x2, y2, vis in objs:
        bx1, by1, bx2, by2 = x1 * sx - x0, y1 * sy - y0, x2 * sx - x0, y2 * sy - y0
        cx1, cy1, cx2, cy2 = max(bx1, 0), max(by1, 0), min(bx2, CROP), min(by2, CROP)
        if cx2 - cx1 < 1 or cy2 - cy1 < 1:
            continue
        kept = (cx2 - cx1) * (cy2 - cy1) / max((bx2 - bx1) * (by2 - by1), 1e-6)
        out.append((cx1, cy1, cx2, cy2, vis * kept))  # what the crop cuts off counts as hidden
    boxes = np.array(out, np.float32).reshape(-1, 5)
    if rng.random() < 0.5:
        img = img[:, ::-1]
        boxes[:, [0, 2]] = CROP - boxes[:, [2, 0]]
    gain = rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, 3)
    img = np.clip(img.astype(np.float32) * gain + rng.uniform(-15, 15), 0, 255)
    return img, boxes


def targets(boxes: np.ndarray, size: int) -> Tuple[np.ndarray, ...]:
    """Heat (1×g×g), ignore weight (g×g), and per-object (cell index, dx, dy, log w, log h) at stride 8."""
    g = size // STRIDE
    heat = np.zeros((g, g), np.float32)
    weight = np.ones((g, g), np.float32)
    ys, xs = np.mgrid[0:g, 0:g].astype(np.float32)
    reg = []
    ignored = []
    for x1, y1, x2, y2, vis in boxes:
        if vis < MIN_VISIBLE:
            ignored.append((x1, y1, x2, y2))
            continue
        cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
        ix, iy = min(int(cx), g - 1), min(int(cy), g - 1)
        w, h = (x2 - x1) / STRIDE, (y2 - y1) / STRIDE
        sx, sy = max(0.5, w / 6), max(0.5, h / 6)
        gauss = np.exp(-((xs - ix) ** 2) / (2 * sx * sx) - ((ys - iy) ** 2) / (2 * sy * sy))
        np.maximum(heat, gauss, out=heat)
        reg.append((iy * g + ix, cx - ix, cy - iy, math.log(max(w, 0.25)), math.log(max(h, 0.25))))
    for x1, y1, x2, y2 in ignored:  # no penalty inside a barely visible object's box, unless a real one is there
        c1, r1 = int(x1 // STRIDE), int(y1 // STRIDE)
        c2, r2 = int(math.ceil(x2 / STRIDE)), int(math.ceil(y2 / STRIDE))
        block = heat[r1:r2, c1:c2] < 0.3
        weight[r1:r2, c1:c2][block] = 0.0
    return heat[None], weight, np.array(reg, np.float32).reshape(-1, 5)


def batch(pool, objects, idx, rng):
    imgs, heats, weights, regs = [], [], [], []
    for b, i in enumerate(idx):
        img, boxes = crop_sample(pool[i], objects[i], rng)
        heat, weight, reg = targets(boxes, CROP)
        imgs.append(img.transpose(2, 0, 1) / 255.0)
        heats.append(heat)
        weights.append(weight)
        if len(reg):
            regs.append(np.concatenate([np.full((len(reg), 1), b, np.float32), reg], axis=1))
    reg = np.concatenate(regs) if regs else np.zeros((0, 6), np.float32)
    return (torch.from_numpy(np.stack(imgs).astype(np.float32)), torch.from_numpy(np.stack(heats)),
            torch.from_numpy(np.stack(weights)), torch.from_numpy(reg))


def loss_fn(out: torch.Tensor, heat: torch.Tensor, weight: torch.Tensor, reg: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    pred = torch.sigmoid(out[:, 0:1]).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1.0).float()
    neg = (1 - pos) * weight[:, None]
    pos_loss = -(torch.log(pred) * (1 - pred) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - pred) * pred ** 2 * (1 - heat) ** 4 * neg).sum()
    n_pos = pos.sum().clamp(min=1.0)
    focal = (pos_loss + neg_loss) / n_pos
    if len(reg):
        b, cell = reg[:, 0].long(), reg[:, 1].long()
        flat = out.reshape(out.shape[0], 5, -1)
        picked = flat[b, :, cell]  # (K, 5)
        centre = torch.sigmoid(picked[:, 1:3])
        off = F.l1_loss(centre, reg[:, 2:4])
        size = F.l1_loss(picked[:, 3:5], reg[:, 4:6])
        # 1 - IoU of the decoded box with the true one (cell units): the crop the classifier gets is this box
        half = torch.exp(picked[:, 3:5].clamp(-4.0, 5.0)) / 2
        t_half = torch.exp(reg[:, 4:6]) / 2
        lo = torch.maximum(centre - half, reg[:, 2:4] - t_half)
        hi = torch.minimum(centre + half, reg[:, 2:4] + t_half)
        inter = (hi - lo).clamp(min=0).prod(dim=1)
        union = (4 * half.prod(dim=1)) + (4 * t_half.prod(dim=1)) - inter
        box = (1 - inter / union.clamp(min=1e-6)).mean()
    else:
        off = size = box = out.sum() * 0.0
    return focal + off + size + BOX_WEIGHT * box, focal, off, size, box


# --------------------------------------------------------------------------------------------- export and check
def export(net: TinyCenterNet, path: str, meta: dict) -> None:
    import onnx

    model = Decoded(net.eval(), INPUT_HW).eval()
    example = torch.zeros(1, 3, *INPUT_HW)
    tmp = path + ".tmp.onnx"
    torch.onnx.export(model, (example,), tmp, input_names=["images"], output_names=["output0"], opset_version=17,
                      dynamo=False, do_constant_folding=True)
    proto = onnx.load(tmp)
    os.remove(tmp)
    del proto.metadata_props[:]
    for key, value in (("names", json.dumps({"0": "object"})), ("edgeconf.detector", json.dumps(meta, sort_keys=True))):
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(proto)
    write_bytes(path, proto.SerializeToString())
    with torch.no_grad():
        x = torch.rand(1, 3, *INPUT_HW)
        want = model(x).numpy()
    import onnxruntime as ort

    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    err = float(np.abs(got[..., :4] - want[..., :4]).max() / max(1.0, float(np.abs(want[..., :4]).max())))
    # a score may be a peak on one side and not on the other where two neighbours are equal to rounding
    flips = (got[..., 4] == 0) != (want[..., 4] == 0)
    score_err = float(np.abs(got[..., 4] - want[..., 4])[~flips].max())
    if err > 1e-4 or score_err > 1e-4 or flips.mean() > 0.01:
        raise SystemExit("the exported model differs from torch: boxes by %.2g (relative), scores by %.2g, %d peak(s)"
                         " differ" % (err, score_err, int(flips.sum())))


def validate(path: str, sample, seeds: range = VAL_SEEDS) -> dict:
    """Recall and precision at IoU 0.5 through DetectorRegions (the path the pipeline uses) on validation seeds."""
    from edgeconf.live.regions import DetectorRegions
    from edgeconf.live.tracking import iou_matrix

    det = DetectorRegions(path, normalized=False)
    hits = required = false = found = 0
    for seed in seeds:
        scene = scene_for(seed, sample)
        for i in range(0, 1800, 60):
            image, truth = scene.render(i)
            boxes = [d.box for d in det.propose(image)]
            gt = [t.box for t in truth if t.visible_fraction >= 0.5]
            weak = [t.box for t in truth if t.visible_fraction < 0.5]
            iou = iou_matrix(gt, boxes)
            matched_d = set()
            for r in range(len(gt)):
                j = int(np.argmax(iou[r])) if len(boxes) else -1
                if j >= 0 and iou[r, j] >= 0.5 and j not in matched_d:
                    matched_d.add(j)
                    hits += 1
            required += len(gt)
            wiou = iou_matrix(weak, boxes)
            for j in range(len(boxes)):
                if j not in matched_d and not (len(weak) and wiou[:, j].max() >= 0.5):
                    false += 1
            found += len(boxes)
    det.close()
    return {"recall": hits / max(1, required), "precision": 1 - false / max(1, found), "objects": required,
            "seeds": [seeds.start, seeds.stop - 1]}


# --------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "edgeconf", "data", "detector"))
    ap.add_argument("--data", default=None, help="FashionMNIST folder (default: $EDGECONF_FASHION_MNIST or the Debian package)")
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--scenes", type=int, default=len(TRAIN_SEEDS), help="training scenes (seeds from %d)" % TRAIN_SEEDS.start)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (one is fastest on a shared 2-core machine)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--val-scenes", type=int, default=len(VAL_SEEDS), help="validation scenes (seeds from %d)" % VAL_SEEDS.start)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    cv2.setNumThreads(1)
    sample = fashion_train(args.data)
    seeds = range(TRAIN_SEEDS.start, TRAIN_SEEDS.start + args.scenes)
    t0 = time.perf_counter()
    pool, objects = render_pool(seeds, sample, FRAMES_PER_SEED)
    print("pool: %d frames from %d scenes, %d objects (%.0f s)" % (len(pool), len(seeds), sum(len(o) for o in objects),
                                                                   time.perf_counter() - t0), file=sys.stderr)
    net = TinyCenterNet()
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = len(pool) // args.batch
    total = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total, pct_start=0.1)
    rng = np.random.default_rng(0)
    step = 0
    for epoch in range(args.epochs):
        net.train()
        order = rng.permutation(len(pool))
        sums = np.zeros(5)
        for k in range(steps_per_epoch):
            x, heat, weight, reg = batch(pool, objects, order[k * args.batch:(k + 1) * args.batch], rng)
            losses = loss_fn(net(x), heat, weight, reg)
            opt.zero_grad()
            losses[0].backward()
            opt.step()
            sched.step()
            step += 1
            sums += [float(v.detach()) for v in losses]
        sums /= steps_per_epoch
        print("epoch %2d/%d  loss %.3f (heat %.3f, offset %.3f, size %.3f, 1-IoU %.3f)  %.0f s" % (
            epoch + 1, args.epochs, *sums, time.perf_counter() - t0), file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "detector.onnx")
    meta = {"conf": CONF, "iou": IOU, "input_hw": list(INPUT_HW), "stride": STRIDE, "parameters": params,
            "train_seeds": [seeds.start, seeds.stop - 1], "frames_per_seed": FRAMES_PER_SEED, "epochs": args.epochs,
            "held_out_seeds": [HELD_OUT_SEEDS.start, HELD_OUT_SEEDS.stop - 1],
            "items": "FashionMNIST train split" if sample is not None else "shipped sample",
            "script": "scripts/train_detector.py"}
    export(net, path, meta)
    val = validate(path, sample, range(VAL_SEEDS.start, VAL_SEEDS.start + args.val_scenes))
    print("validation (seeds %d-%d): recall %.4f, precision %.4f on %d objects" % (
        val["seeds"][0], val["seeds"][1], val["recall"], val["precision"], val["objects"]), file=sys.stderr)
    print("wrote %s (%d parameters, %.0f kB) in %.0f s" % (path, params, os.path.getsize(path) / 1024,
                                                            time.perf_counter() - t0))


if __name__ == "__main__":
    main()
