"""What ONNX Runtime's If costs per call in the batch-1 fused graph, against a staged stage-1 call.

Run: .venv/bin/python benchmarks/bench_fused_if.py [--bundle DIR] [--limit N] [--rounds R]

The bundle is fused with ``--batch 1`` into a temporary copy. On the test images stage 1 answers (the If takes
its else branch), four contenders classify each image with one plain ``InferenceSession.run`` (one thread,
spinning off): ``stage1_staged_call`` (the stage-1 model on host-preprocessed floats, as bench_floor's
hand-written loop calls it), ``graph_without_if`` (the fused graph with its condition and If removed: stage 1
and its class only), ``graph_with_condition`` (the same, the condition still computed and returned) and
``fused_graph`` (the whole batch-1 graph). Process CPU µs per image, median and range over interleaved
rounds, GC paused while timed; the differences are the condition's and the If's cost. Prints figures only.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from typing import Callable, Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_floor import StagedFloor, measure  # noqa: E402


def _variant(model_bytes: bytes, keep_condition: bool) -> bytes:
    """The fused graph without its If: the class from stage 1's probabilities (and the condition as an output)."""
    import onnx
    from onnx import helper

    m = onnx.load_from_string(model_bytes)
    g = m.graph
    cond = next(n for n in g.node if n.op_type == "If").input[0]
    producers = {o: n for n in g.node for o in n.output}
    chain = set()
    if not keep_condition:  # the nodes that make only the condition
        todo = [cond]
        while todo:
            n = producers.get(todo.pop())
            if n is not None and id(n) not in chain and n.op_type != "Sub":
                chain.add(id(n))
                todo.extend(x for x in n.input if x in producers and producers[x].op_type in ("Less", "Reshape"))
    keep = [n for n in g.node if n.op_type != "If" and id(n) not in chain]
    probs = next(n for n in g.node if n.op_type == "Softmax").output[0]
    for n in keep:
        if n.op_type == "ArgMax":
            n.input[0] = probs
    del g.node[:]
    g.node.extend(keep)
    outs = [helper.make_tensor_value_info("class", onnx.TensorProto.INT64, [1])]
    if keep_condition:
        outs.append(helper.make_tensor_value_info(cond, onnx.TensorProto.BOOL, []))
    del g.output[:]
    g.output.extend(outs)
    return m.SerializeToString()


def main(argv: Optional[List[str]] = None) -> int:
    import onnxruntime as ort

    from edgeconf import data_path
    from edgeconf.backends.threads import Threads
    from edgeconf.datasets import load_fashion_mnist
    from edgeconf.export.fuse import fuse_bundle
    from edgeconf.fused import runtime_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=os.path.join(data_path("zoo"), "bundle"))
    ap.add_argument("--limit", type=int, default=2000, help="test images to pick from (default 2000)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    x, _ = load_fashion_mnist("test")
    x = np.ascontiguousarray(x[: args.limit])
    tmp = tempfile.mkdtemp(prefix="bench_fused_if_")
    try:
        folder = os.path.join(tmp, "bundle")
        shutil.copytree(args.bundle, folder)
        fuse_bundle(folder, batch=1, check=False)
        full = runtime_model(os.path.join(folder, "fused.onnx"))
        floor = StagedFloor(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    opts = Threads(1, 1, False, True, "bench").session_options(ort)

    def session(b: bytes):
        return ort.InferenceSession(b, sess_options=opts, providers=["CPUExecutionProvider"])

    s1, name1 = floor.sessions[0], floor.inputs[0]
    h, w = floor.h, floor.w
    conf = np.array([s1.run(["confidence"], {name1: (im.astype(np.float32) * floor.gain + floor.offset)
                                             .reshape(1, 1, h, w)})[0][0] for im in x])
    easy = np.ascontiguousarray(x[conf >= floor.thresholds[0]])
    if floor.ood[0] is not None:
        print("note: stage 1 has an OOD rule; its unknown inputs are not separated here")

    def staged(img: np.ndarray) -> np.ndarray:  # one image, as bench_floor's hand-written loop calls stage 1
        f = img.astype(np.float32) * floor.gain
        if floor.offset:
            f += floor.offset
        return s1.run(["probs", "confidence"], {name1: f.reshape(1, 1, h, w)})[0].argmax(axis=1)

    def graph(b: bytes, names: List[str]) -> Callable[[np.ndarray], np.ndarray]:
        s = session(b)
        return lambda img: s.run(names, {"image": img})[0]

    cond_variant = _variant(full, True)
    import onnx

    cond_name = onnx.load_from_string(cond_variant).graph.output[1].name
    contenders: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "stage1_staged_call": staged,
        "graph_without_if": graph(_variant(full, False), ["class"]),
        "graph_with_condition": graph(cond_variant, ["class", cond_name]),
        "fused_graph": graph(full, ["class"]),
    }
    names = list(contenders)
    per = measure(contenders, easy, batch=1, chunk=250, rounds=args.rounds)["per_input_s"]
    print("bench_fused_if: %s, %d of %d test images answered by stage 1, %d rounds; process CPU µs per image"
          % (args.bundle, len(easy), len(x), args.rounds))
    base = per["stage1_staged_call"]
    for n in names:
        v = [t * 1e6 for t in per[n]]
        r = [a / b for a, b in zip(per[n], base)]
        print("  %-22s %7.1f µs (range %.1f–%.1f)   ÷ stage1_staged_call %.3f (%.3f–%.3f)"
              % (n, statistics.median(v), min(v), max(v), statistics.median(r), min(r), max(r)))
    d_if = [a - b for a, b in zip(per["fused_graph"], per["graph_with_condition"])]
    d_all = [a - b for a, b in zip(per["fused_graph"], per["graph_without_if"])]
    print("  the If alone: %.1f µs per call (%.1f %% of a staged stage-1 call); condition and If: %.1f µs (%.1f %%)"
          % (statistics.median(d_if) * 1e6, 100 * statistics.median(d_if) / statistics.median(base),
             statistics.median(d_all) * 1e6, 100 * statistics.median(d_all) / statistics.median(base)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
