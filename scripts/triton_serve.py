"""Serve a Triton model repository (as ``edgeconf triton-repo`` writes it) with a real Triton Inference Server
on this machine's CPU, through NVIDIA PyTriton: for tests and ``benchmarks/bench_fleet.py``, never for production
(on a GPU server run ``tritonserver --model-repository REPO``).

Each model's ``config.pbtxt`` is read with Triton's own protobuf schema (names, data types, dims, max batch size,
dynamic batching) and its ``1/model.onnx`` runs in ONNX Runtime inside the function PyTriton binds. Runs under the
Python 3.12 environment ``.venv-triton`` that ``scripts/setup.sh`` creates (PyTriton's server needs that
interpreter's ``lib`` folder on ``LD_LIBRARY_PATH``; ``edgeconf.testing``-style helpers in tests/fleet set it).

``--control FILE``: a JSON file read before each request, ``{"delay_ms": 200}`` makes every request that slow
(for deadline tests); a missing file means no delay. ``--ready FILE`` is written once the server answers.
Binds 127.0.0.1 only.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time

import numpy as np


def _control(path: str) -> dict:
    if not path:
        return {}
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _models(repo: str):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    for name in sorted(os.listdir(repo)):
        cfg_path = os.path.join(repo, name, "config.pbtxt")
        if not os.path.isfile(cfg_path):
            continue
        cfg = model_config_pb2.ModelConfig()
        with open(cfg_path, "r", encoding="utf-8") as f:
            text_format.Parse(f.read(), cfg)
        versions = sorted(int(v) for v in os.listdir(os.path.join(repo, name)) if v.isdigit())
        yield name, cfg, os.path.join(repo, name, str(versions[-1]), cfg.default_model_filename or "model.onnx")


def _np_dtype(data_type: int):
    from tritonclient.grpc import model_config_pb2 as pb

    return {pb.TYPE_FP32: np.float32, pb.TYPE_FP16: np.float16, pb.TYPE_FP64: np.float64, pb.TYPE_INT64: np.int64,
            pb.TYPE_INT32: np.int32, pb.TYPE_UINT8: np.uint8, pb.TYPE_INT8: np.int8, pb.TYPE_BOOL: np.bool_}[data_type]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--metrics-port", type=int, default=0)
    ap.add_argument("--control", default="")
    ap.add_argument("--ready", default="")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per model")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    def make_infer(path: str, out_names, out_types):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])

        @batch
        def infer(**inputs):
            delay = float(_control(args.control).get("delay_ms", 0) or 0)
            if delay > 0:
                time.sleep(delay / 1e3)
            values = sess.run(out_names, inputs)
            # outputs declared with a reshape to [] come back from ONNX Runtime as (N,): add the declared axis;
            # and ORT's int64 arrays are numpy 'q' (longlong), which numpy 2 does not count as np.int64
            return {k: np.asarray(v.reshape(v.shape[0], 1) if v.ndim == 1 else v, dtype=t)
                    for k, v, t in zip(out_names, values, out_types)}

        return infer

    cfg = TritonConfig(grpc_address="127.0.0.1", http_address="127.0.0.1", grpc_port=args.grpc_port,
                       http_port=args.http_port, metrics_port=args.metrics_port or args.http_port + 2,
                       allow_metrics=False, log_verbose=0)
    with Triton(config=cfg) as triton:
        for name, mc, path in _models(args.repo):
            inputs = [Tensor(name=i.name, dtype=_np_dtype(i.data_type), shape=tuple(int(d) for d in i.dims)) for i in mc.input]
            outputs = [Tensor(name=o.name, dtype=_np_dtype(o.data_type), shape=tuple(int(d) for d in o.dims)) for o in mc.output]
            batcher = DynamicBatcher(max_queue_delay_microseconds=int(mc.dynamic_batching.max_queue_delay_microseconds))
            triton.bind(model_name=name, infer_func=make_infer(path, [o.name for o in mc.output],
                                                                  [_np_dtype(o.data_type) for o in mc.output]), inputs=inputs,
                        outputs=outputs, config=ModelConfig(max_batch_size=int(mc.max_batch_size), batcher=batcher),
                        strict=True)
        triton.run()
        if args.ready:
            with open(args.ready + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(args.ready + ".tmp", args.ready)
        print("triton_serve: serving %s on grpc 127.0.0.1:%d, http 127.0.0.1:%d" % (args.repo, args.grpc_port, args.http_port),
              flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
