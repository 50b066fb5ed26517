"""The Python around the model calls at batch N: edgeconf's batch path against the hand-written loop, ORT replayed.

Run: .venv/bin/python benchmarks/bench_batch_overhead.py [--bundle DIR] [--batch 256] [--limit N] [--rounds R]

Every ``InferenceSession.run`` of both contenders is first made for real (recording its outputs), then
replayed from the recording, so what is timed is only the work around the calls: preprocessing, gathering
the unsure subset, the answer arrays, counters, and (for ``edgeconf_objects``) one ``CascadeResult`` per
input. This is the part of ``benchmarks/bench_floor.py``'s ratio that edgeconf controls, measured without the
model time's noise. Contenders: ``floor`` (bench_floor's ``StagedFloor.batch``), ``edgeconf_arrays``
(``classify_batch(...).class_ids``) and ``edgeconf_objects`` (the class of each per-input answer object).
Process CPU µs per input, median and range over interleaved rounds, GC paused while timed. Prints figures only.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_floor import StagedFloor  # noqa: E402


class Replay:
    """Stands in for an ``InferenceSession``: records the real outputs once, then returns them in call order."""

    def __init__(self, session: Any) -> None:
        self.session, self.calls, self.i, self.recording = session, [], 0, True

    def run(self, names: List[str], feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        if self.recording:
            out = self.session.run(names, feeds)
            self.calls.append(out)
            return out
        out = self.calls[self.i]
        self.i = (self.i + 1) % len(self.calls)
        return out


def main(argv: Optional[List[str]] = None) -> int:
    from edgeconf import data_path
    from edgeconf.bundle import load_bundle
    from edgeconf.datasets import load_fashion_mnist

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=os.path.join(data_path("zoo"), "bundle"))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--limit", type=int, default=4096, help="test images per round (default 4096)")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(argv)
    images, _ = load_fashion_mnist("test")
    images = np.ascontiguousarray(images[: args.limit])
    chunks = [images[a:a + args.batch] for a in range(0, len(images), args.batch)]
    floor = StagedFloor(args.bundle)
    cascade = load_bundle(args.bundle, memo=False, form="staged", batch=args.batch)
    replays = [Replay(s) for s in floor.sessions]
    floor.sessions = replays
    for st in cascade.stages:
        st.runner.session = Replay(st.runner.session)
        replays.append(st.runner.session)

    contenders: Dict[str, Callable[[], None]] = {
        "floor": lambda: [floor.batch(c) for c in chunks],
        "edgeconf_arrays": lambda: [cascade.classify_batch(c).class_ids for c in chunks],
        "edgeconf_objects": lambda: [np.array([r.class_id for r in cascade.classify_batch(c)], np.int64)
                                     for c in chunks],
    }
    contenders["floor"]()  # the recordings: one real pass of each (the two object/array passes make the same calls)
    contenders["edgeconf_arrays"]()
    for r in replays:
        r.recording, r.i = False, 0
    names = list(contenders)
    per: Dict[str, List[float]] = {n: [] for n in names}
    for rnd in range(args.rounds):
        for k in range(len(names)):
            name = names[(rnd + k) % len(names)]
            gc.collect()
            gc.disable()
            try:
                t0 = time.process_time()
                contenders[name]()
                per[name].append((time.process_time() - t0) / len(images))
            finally:
                gc.enable()
    print("bench_batch_overhead: bundle %s, batch %d, %d images per round, %d rounds; process CPU µs per input "
          "around the model calls (ONNX Runtime outputs replayed)" % (args.bundle, args.batch, len(images), args.rounds))
    for name in names:
        v = [x * 1e6 for x in per[name]]
        print("  %-18s %7.3f µs/input (median; range %.3f–%.3f)" % (name, statistics.median(v), min(v), max(v)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
