"""Per-image CPU time of several ONNX models on ONNX Runtime, measured in interleaved rounds.

One intra-op thread, batch 1, process CPU time (what ``edgeconf bench`` compares). The models take
turns within each round, so drift of a shared machine hits all of them alike; the median round is
reported and ratios are meant to be read within one call.
"""
from __future__ import annotations

import time
from typing import Dict, Tuple

import numpy as np


def _session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def interleaved_cpu_us(models: Dict[str, Tuple[str, np.ndarray]], rounds: int = 7, per_round: int = 200,
                       warmup: int = 30) -> Dict[str, Dict[str, float]]:
    """``name → (onnx path, model-ready inputs)`` → ``name → {"cpu_us", "wall_us"}`` per image (medians of rounds)."""
    sessions = {}
    for name, (path, xs) in models.items():
        if xs.shape[0] == 0:
            raise ValueError("no inputs to time %s with" % name)
        sess = _session(path)
        feed, out = sess.get_inputs()[0].name, sess.get_outputs()[0].name
        for i in range(warmup):
            sess.run([out], {feed: xs[i % xs.shape[0]][None]})
        sessions[name] = (sess, feed, out, xs)
    cpu: Dict[str, list] = {n: [] for n in models}
    wall: Dict[str, list] = {n: [] for n in models}
    for r in range(rounds):
        for name, (sess, feed, out, xs) in sessions.items():
            batch = [xs[(r * per_round + i) % xs.shape[0]][None] for i in range(per_round)]
            c0, w0 = time.process_time(), time.perf_counter()
            for x in batch:
                sess.run([out], {feed: x})
            cpu[name].append((time.process_time() - c0) / per_round * 1e6)
            wall[name].append((time.perf_counter() - w0) / per_round * 1e6)
    return {n: {"cpu_us": round(float(np.median(cpu[n])), 2), "wall_us": round(float(np.median(wall[n])), 2)}
            for n in models}


PROTOCOL = "ONNX Runtime CPUExecutionProvider, 1 intra-op thread, batch 1, process CPU time, median of interleaved rounds"

__all__ = ["interleaved_cpu_us", "PROTOCOL"]
