"""edgeconf against the hand-written floor: the same bundle run by a plain onnxruntime loop and by edgeconf.

Run: .venv/bin/python benchmarks/bench_floor.py [--bundle DIR] [--limit N] [--rounds R] [--json]

The floor is what a careful engineer writes by hand with plain onnxruntime (one intra-op thread, spinning off,
sequential): per input, preprocess the raw uint8 image with numpy, run stage 1 with ``InferenceSession.run``,
read the graph's own ``probs``/``confidence`` outputs (and its ``ood`` output where the stage has an
out-of-distribution rule: above its threshold the answer is unknown; above its ``escalate`` edge, where the rule has
a doubt band, the stage may not answer) and go on to the next stage while the confidence is below the bundle's
threshold or the input is in the doubt band; per batch, the same on the whole batch and on each stage's unsure subset. The fused
floor runs the bundle's fused graph (``edgeconf fuse``, made here in a temporary copy) with one plain call.

edgeconf runs the same bundle through ``load_bundle(..., memo=False)`` and ``classify``/``classify_batch`` with
its default threading; at batch > 1 ``edgeconf_staged`` reads the answers' class array (``Answers.class_ids``,
as the floor returns one) and ``edgeconf_staged_objects`` the class of each per-input answer object. All contenders classify the same images in one process, in rotating order over chunks,
with the garbage collector paused inside timed windows; cost is process CPU time (``time.process_time``).
Each round gives one ratio per contender pair; the script prints the median and the range over rounds. It also
checks that every contender gives the same classes. Prints figures only; asserts nothing.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from edgeconf.backends.threads import Threads
from edgeconf.bundle import load_bundle, read_manifest


def _sessions(paths: List[str]) -> List[Any]:
    import onnxruntime as ort

    opts = Threads(1, 1, False, True, "hand-written floor").session_options(ort)
    return [ort.InferenceSession(p, sess_options=opts, providers=["CPUExecutionProvider"]) for p in paths]


class StagedFloor:
    """The hand-written staged loop: numpy preprocessing, one ``InferenceSession.run`` per stage."""

    def __init__(self, folder: str) -> None:
        m = read_manifest(folder)
        if any(st.input != "image" for st in m.stages):
            raise SystemExit("bench_floor needs a bundle whose stages all take the image")
        self.sessions = _sessions([os.path.join(folder, st.model) for st in m.stages])
        self.inputs = [s.get_inputs()[0].name for s in self.sessions]
        self.thresholds = [st.threshold for st in m.stages]
        # a stage's out-of-distribution rule (the graph's `ood` output above its threshold: answer unknown, -1;
        # above its escalate edge: this stage may not answer, the next one decides)
        self.ood = [(st.ood.output, st.ood.threshold, np.inf if st.ood.escalate is None else st.ood.escalate)
                    if st.ood is not None and st.ood.output else None for st in m.stages]
        if any(st.ood is not None and not st.ood.output for st in m.stages):
            raise SystemExit("bench_floor's hand-written loop reads OOD scores from the graph's own output only")
        self.names = [["probs", "confidence"] + ([o[0]] if o else []) for o in self.ood]
        pre = m.preprocessing
        if pre.channels != 1 or pre.layout != "NCHW" or pre.dtype != "float32":
            raise SystemExit("bench_floor's hand-written loop handles grey NCHW float32 bundles")
        self.gain = np.float32(pre.scale / pre.std[0])
        self.offset = np.float32(-pre.mean[0] / pre.std[0])
        self.h, self.w = pre.size

    def one(self, images: np.ndarray) -> np.ndarray:
        out = np.empty(len(images), np.int64)
        last = len(self.sessions) - 1
        for i, img in enumerate(images):
            x = img.astype(np.float32) * self.gain
            if self.offset:
                x += self.offset
            x = x.reshape(1, 1, self.h, self.w)
            for k, sess in enumerate(self.sessions):
                got = sess.run(self.names[k], {self.inputs[k]: x})
                if self.ood[k] is not None and got[2][0] > self.ood[k][1]:
                    out[i] = -1  # unknown: no later stage runs
                    break
                if k == last or (got[1][0] >= self.thresholds[k]
                                 and not (self.ood[k] is not None and got[2][0] > self.ood[k][2])):
                    out[i] = got[0][0].argmax()
                    break
        return out

    def batch(self, images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float32) * self.gain
        if self.offset:
            x += self.offset
        x = x.reshape(len(images), 1, self.h, self.w)
        out = np.empty(len(images), np.int64)
        active = np.arange(len(images))
        last = len(self.sessions) - 1
        for k, sess in enumerate(self.sessions):
            got = sess.run(self.names[k], {self.inputs[k]: x})
            probs, conf = got[0], got[1]
            done = np.ones(len(active), bool) if k == last else conf >= self.thresholds[k]
            out[active[done]] = probs[done].argmax(axis=1)
            if self.ood[k] is not None:
                score = got[2].reshape(-1)
                if k < last:
                    done &= ~(score > self.ood[k][2])  # in the doubt band: the next stage decides
                unknown = score > self.ood[k][1]
                out[active[unknown]] = -1  # unknown: no later stage runs
                done |= unknown
            active = active[~done]
            if not active.size:
                break
            x = x[~done]
        return out


class FusedFloor:
    """The fused graph with one plain ``InferenceSession.run`` per call (uint8 pixels in)."""

    def __init__(self, path: str) -> None:
        from edgeconf.fused import runtime_model

        import onnxruntime as ort

        opts = Threads(1, 1, False, True, "hand-written floor").session_options(ort)
        self.session = ort.InferenceSession(runtime_model(path), sess_options=opts, providers=["CPUExecutionProvider"])

    def one(self, images: np.ndarray) -> np.ndarray:
        out = np.empty(len(images), np.int64)
        run = self.session.run
        for i in range(len(images)):
            out[i] = run(["class"], {"image": images[i:i + 1]})[0][0]
        return out

    def batch(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(["class"], {"image": images})[0]


def edgeconf_one(cascade: Any) -> Callable[[np.ndarray], np.ndarray]:
    def run(images: np.ndarray) -> np.ndarray:
        classify = cascade.classify
        return np.array([classify(img).class_id for img in images], np.int64)
    return run


def edgeconf_batch(cascade: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The answers' class array, as the floor returns one (no per-input objects are built)."""
    def run(images: np.ndarray) -> np.ndarray:
        return cascade.classify_batch(images).class_ids
    return run


def edgeconf_batch_objects(cascade: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The class of each per-input answer object (a caller that iterates the answers)."""
    def run(images: np.ndarray) -> np.ndarray:
        return np.array([r.class_id for r in cascade.classify_batch(images)], np.int64)
    return run


def measure(contenders: Dict[str, Callable[[np.ndarray], np.ndarray]], images: np.ndarray, batch: int,
            chunk: int, rounds: int) -> Dict[str, Any]:
    """Process CPU per input of each contender, per round (rotating order over chunks, GC paused while timed)."""
    names = list(contenders)
    per_round: Dict[str, List[float]] = {n: [] for n in names}
    answers: Dict[str, np.ndarray] = {}
    chunk = max(batch, chunk // batch * batch)
    warm = images[: max(batch, 64)]
    for fn in contenders.values():  # warm-up: sessions, bound buffers, caches
        for a in range(0, len(warm), batch):
            fn(warm[a:a + batch])
    for r in range(rounds):
        cpu = {n: 0.0 for n in names}
        preds = {n: np.empty(len(images), np.int64) for n in names}
        for ci, a in enumerate(range(0, len(images), chunk)):
            part = images[a:a + chunk]
            gc.collect()
            gc.disable()
            try:
                for k in range(len(names)):
                    name = names[(ci + r + k) % len(names)]
                    fn = contenders[name]
                    t0 = time.process_time()
                    got = [fn(part[b:b + batch]) for b in range(0, len(part), batch)]
                    cpu[name] += time.process_time() - t0
                    preds[name][a:a + len(part)] = np.concatenate(got)
            finally:
                gc.enable()
        for n in names:
            per_round[n].append(cpu[n] / len(images))
        answers = preds
    ref = answers[names[0]]
    agree = {n: float(np.mean(answers[n] == ref)) for n in names}
    return {"per_input_s": per_round, "agreement_with_%s" % names[0]: agree}


def ratio_stats(num: List[float], den: List[float]) -> Dict[str, float]:
    r = [a / b for a, b in zip(num, den)]
    return {"median": statistics.median(r), "min": min(r), "max": max(r)}


def main(argv: Optional[List[str]] = None) -> int:
    from edgeconf import data_path
    from edgeconf.datasets import load_fashion_mnist

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=os.path.join(data_path("zoo"), "bundle"))
    ap.add_argument("--limit", type=int, default=5000, help="test images per round (default 5000)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=512, help="inputs per contender turn")
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--no-fused", action="store_true", help="skip the fused form")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    images, _ = load_fashion_mnist("test")
    images = np.ascontiguousarray(images[: args.limit])
    import onnxruntime as ort

    report: Dict[str, Any] = {
        "machine": "%s, %d CPUs, %s" % (platform.processor() or platform.machine(), os.cpu_count() or 0,
                                        platform.platform()),
        "onnxruntime": ort.__version__, "bundle": args.bundle, "inputs_per_round": len(images), "rounds": args.rounds,
        "cost": "process CPU seconds per input (time.process_time), all contenders interleaved in one process",
        "results": {}}
    tmp = tempfile.mkdtemp(prefix="bench_floor_")
    try:
        fused_folders: Dict[int, Optional[str]] = {}
        fused_note = ""
        if not args.no_fused:
            try:
                from edgeconf.export.fuse import fuse_bundle

                for b in (1, None):
                    folder = os.path.join(tmp, "fused%s" % (b or "N"))
                    shutil.copytree(args.bundle, folder)
                    fuse_bundle(folder, batch=b)
                    fused_folders[1 if b == 1 else 0] = folder
            except ImportError:
                fused_note = "fused: not available in this build"
            except Exception as exc:  # a bundle the fuser refuses: staged figures only
                fused_note = "fused: not available for this bundle (%s)" % str(exc).splitlines()[0][:200]
        floor = StagedFloor(args.bundle)
        for batch in [int(b) for b in args.batches.split(",")]:
            staged = load_bundle(args.bundle, memo=False, form="staged", batch=batch)
            contenders: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
                "floor_staged": floor.one if batch == 1 else floor.batch,
                "edgeconf_staged": edgeconf_one(staged) if batch == 1 else edgeconf_batch(staged)}
            if batch > 1:
                contenders["edgeconf_staged_objects"] = edgeconf_batch_objects(staged)
            fused = None
            folder = fused_folders.get(1 if batch == 1 else 0)
            if folder:
                ffloor = FusedFloor(os.path.join(folder, "fused.onnx"))
                fused = load_bundle(folder, memo=False, form="fused", batch=batch)
                contenders["floor_fused"] = ffloor.one if batch == 1 else ffloor.batch
                contenders["edgeconf_fused"] = edgeconf_one(fused) if batch == 1 else edgeconf_batch(fused)
            res = measure(contenders, images, batch, args.chunk, args.rounds)
            per = res["per_input_s"]
            res["threads"] = staged.threads.to_json()
            res["ratios"] = {"edgeconf_staged / floor_staged": ratio_stats(per["edgeconf_staged"], per["floor_staged"])}
            if "edgeconf_staged_objects" in per:
                res["ratios"]["edgeconf_staged_objects / floor_staged"] = ratio_stats(per["edgeconf_staged_objects"],
                                                                                      per["floor_staged"])
            if fused is not None:
                res["ratios"]["edgeconf_fused / floor_fused"] = ratio_stats(per["edgeconf_fused"], per["floor_fused"])
                res["ratios"]["edgeconf_fused / floor_staged"] = ratio_stats(per["edgeconf_fused"], per["floor_staged"])
                res["ratios"]["floor_fused / floor_staged"] = ratio_stats(per["floor_fused"], per["floor_staged"])
                fused.close()
            staged.close()
            report["results"]["batch %d" % batch] = res
        if fused_note:
            report["fused"] = fused_note
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("bench_floor: %s; onnxruntime %s" % (report["machine"], report["onnxruntime"]))
    print("bundle %s, %d FashionMNIST test images per round, %d rounds; %s"
          % (args.bundle, len(images), args.rounds, report["cost"]))
    for key, res in report["results"].items():
        print("\n%s (edgeconf threads: %s)" % (key, Threads(**res["threads"]).describe()))
        for name, values in res["per_input_s"].items():
            print("  %-23s %8.1f µs/input (median of rounds; range %.1f–%.1f)   same classes as floor_staged: %.2f %%"
                  % (name, statistics.median(values) * 1e6, min(values) * 1e6, max(values) * 1e6,
                     100 * res["agreement_with_floor_staged"][name]))
        for name, st in res["ratios"].items():
            print("  %-40s %.3f  (range over rounds %.3f–%.3f)" % (name, st["median"], st["min"], st["max"]))
    if report.get("fused"):
        print("\n%s" % report["fused"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
