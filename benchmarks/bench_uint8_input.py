"""What uint8 model inputs would save: the hand-written staged loop with float32 inputs (numpy preprocessing on
the host, as edgeconf does) against the same loop on copies of the stages that take the raw uint8 pixels and do
the bundle's arithmetic in the graph (Cast, Mul, Add in front of each model); each both with plain
``InferenceSession.run`` calls and through IO binding (edgeconf's batch-1 call).

Run: .venv/bin/python benchmarks/bench_uint8_input.py [--bundle DIR] [--limit N] [--rounds R]

Both loops classify the same test images, interleaved in one process (``bench_floor.measure``: rotating order
over chunks, GC paused while timed, process CPU time); prints per-input µs, the ratio and whether the classes
agree. An experiment for issue 17 ("uint8 input"): edgeconf's model inputs are float; nothing here is shipped.
Prints figures only; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import List, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_floor import StagedFloor, measure, ratio_stats  # noqa: E402

from edgeconf import data_path  # noqa: E402
from edgeconf.bundle import read_manifest  # noqa: E402
from edgeconf.datasets import load_fashion_mnist  # noqa: E402


def uint8_copy(src: str, dst: str, scale: float, offset: float) -> None:
    """``src`` with a uint8 input of the same name and shape, cast and scaled in the graph."""
    m = onnx.load(src)
    g = m.graph
    old = g.input[0]
    name = old.name
    dims = [d for d in old.type.tensor_type.shape.dim]
    raw = name + "_u8"
    new = helper.make_tensor_value_info(name, TensorProto.UINT8, [d.dim_param or d.dim_value for d in dims])
    for node in g.node:  # the model's own nodes read the float tensor, now made in the graph
        node.input[:] = [raw if i == name else i for i in node.input]
    g.initializer.extend([helper.make_tensor(raw + "_scale", TensorProto.FLOAT, [], [scale]),
                          helper.make_tensor(raw + "_offset", TensorProto.FLOAT, [], [offset])])
    pre = [helper.make_node("Cast", [name], [raw + "_f"], to=TensorProto.FLOAT),
           helper.make_node("Mul", [raw + "_f", raw + "_scale"], [raw + "_s" if offset else raw])]
    if offset:
        pre.append(helper.make_node("Add", [raw + "_s", raw + "_offset"], [raw]))
    nodes = pre + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    g.input.remove(old)
    g.input.insert(0, new)
    onnx.checker.check_model(m)
    onnx.save(m, dst)


class Uint8Floor(StagedFloor):
    """The staged floor on uint8-input copies: no host arithmetic, the image is the model input."""

    def __init__(self, folder: str, tmp: str) -> None:
        super().__init__(folder)
        from bench_floor import _sessions

        paths = []
        for st in read_manifest(folder).stages:
            dst = os.path.join(tmp, os.path.basename(st.model))
            uint8_copy(os.path.join(folder, st.model), dst, float(self.gain), float(self.offset))
            paths.append(dst)
        self.sessions = _sessions(paths)

    def one(self, images: np.ndarray) -> np.ndarray:
        out = np.empty(len(images), np.int64)
        last = len(self.sessions) - 1
        for i, img in enumerate(images):
            x = img.reshape(1, 1, self.h, self.w)
            for k, sess in enumerate(self.sessions):
                got = sess.run(self.names[k], {self.inputs[k]: x})
                if self.ood[k] is not None and got[2][0] > self.ood[k][1]:
                    out[i] = -1
                    break
                if k == last or got[1][0] >= self.thresholds[k]:
                    out[i] = got[0][0].argmax()
                    break
        return out


class BoundFloor:
    """The staged loop through IO binding (edgeconf's batch-1 call): each stage's input and its ``probs`` and
    ``confidence`` outputs bound once to numpy arrays; the image is written into the bound input (cast and scaled
    on the host for float32 inputs, copied as it is for uint8 inputs)."""

    def __init__(self, paths: List[str], thresholds: List[float], gain: float, offset: float, pixels: bool) -> None:
        import onnxruntime as ort
        from bench_floor import _sessions

        self.sessions = _sessions(paths)
        self.thresholds = thresholds
        self.gain, self.offset, self.pixels = np.float32(gain), np.float32(offset), pixels
        self.bound = []
        for sess in self.sessions:
            inp = sess.get_inputs()[0]
            h, w = inp.shape[-2], inp.shape[-1]
            buf = np.zeros((1, 1, h, w), np.uint8 if pixels else np.float32)
            binding = sess.io_binding()
            binding.bind_ortvalue_input(inp.name, ort.OrtValue.ortvalue_from_numpy(buf))
            probs = np.zeros((1, sess.get_outputs()[0].shape[-1] or 10), np.float32)
            conf = np.zeros((1,), np.float32)
            binding.bind_ortvalue_output("probs", ort.OrtValue.ortvalue_from_numpy(probs))
            binding.bind_ortvalue_output("confidence", ort.OrtValue.ortvalue_from_numpy(conf))
            self.bound.append((buf.reshape(h, w), binding, probs, conf))

    def one(self, images: np.ndarray) -> np.ndarray:
        out = np.empty(len(images), np.int64)
        last = len(self.sessions) - 1
        for i, img in enumerate(images):
            for k, sess in enumerate(self.sessions):
                flat, binding, probs, conf = self.bound[k]
                flat[...] = img
                if not self.pixels:
                    np.multiply(flat, self.gain, out=flat)
                    if self.offset:
                        np.add(flat, self.offset, out=flat)
                sess.run_with_iobinding(binding)
                if k == last or conf[0] >= self.thresholds[k]:
                    out[i] = probs[0].argmax()
                    break
        return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--bundle", default=os.path.join(data_path("zoo"), "bundle"))
    ap.add_argument("--limit", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=512)
    args = ap.parse_args(argv)
    images, _ = load_fashion_mnist("test")
    images = np.ascontiguousarray(images[: args.limit])
    with tempfile.TemporaryDirectory(prefix="bench_uint8_") as tmp:
        floor = StagedFloor(args.bundle)
        u8 = Uint8Floor(args.bundle, tmp)
        floats = [os.path.join(args.bundle, st.model) for st in read_manifest(args.bundle).stages]
        pix = [os.path.join(tmp, os.path.basename(p)) for p in floats]
        gain, offset = float(floor.gain), float(floor.offset)
        contenders = {"run, float32 input, host preprocessing": floor.one,
                      "run, uint8 input, arithmetic in graph": u8.one,
                      "bound, float32 input": BoundFloor(floats, floor.thresholds, gain, offset, False).one,
                      "bound, uint8 input": BoundFloor(pix, floor.thresholds, gain, offset, True).one}
        res = measure(contenders, images, 1, args.chunk, args.rounds)
    per = res["per_input_s"]
    names = list(contenders)
    print("bench_uint8_input: %s, %d test images per round, %d rounds, batch 1, process CPU per input"
          % (args.bundle, len(images), args.rounds))
    for n in names:
        print("  %-40s %6.1f µs (median; range %.1f–%.1f)   same classes: %.2f %%"
              % (n, 1e6 * float(np.median(per[n])), 1e6 * min(per[n]), 1e6 * max(per[n]),
                 100 * res["agreement_with_%s" % names[0]][n]))
    for a, b, what in ((1, 0, "InferenceSession.run"), (3, 2, "IO binding (edgeconf's batch-1 call)")):
        r = ratio_stats(per[names[a]], per[names[b]])
        print("  uint8 / float32, %s: %.3f (range over rounds %.3f–%.3f)" % (what, r["median"], r["min"], r["max"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
