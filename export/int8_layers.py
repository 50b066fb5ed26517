"""Per-layer quantization error, measured with ONNX Runtime's quantization debugger (``qdq_loss_debug``).

Both models run on the same inputs with every intermediate tensor exposed. For each quantized layer
the debugger gives the signal-to-quantization-noise ratio (SQNR, dB) of its output in the INT8 model
against the float model. That error accumulates along the graph, so a layer is charged only with the
noise it adds: the noise-to-signal ratio at its output minus the worst one at its float inputs.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence

import numpy as np
import onnx

#: Operators that carry weights or do the arithmetic worth quantizing; others (pooling, reshapes,
#: activations) follow their producers and are never kept in float on their own.
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Concat", "AveragePool",
               "GlobalAveragePool", "Attention", "LSTM", "GRU", "InstanceNormalization", "LayerNormalization")


@dataclass
class LayerError:
    """One layer's quantization error on the measuring samples."""

    node: str
    op: str
    output: str
    sqnr_db: float  # of the layer's output, INT8 model vs float model (higher is better)
    added_noise: float  # noise-to-signal ratio the layer adds (its output's minus its inputs' worst)

    def to_json(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class _Reader:
    def __init__(self, name: str, x: np.ndarray, batch: int) -> None:
        self.name, self.x, self.batch, self.i = name, x, batch, 0

    def get_next(self):
        if self.i >= self.x.shape[0]:
            return None
        b = self.x[self.i:self.i + self.batch]
        self.i += self.batch
        return {self.name: b}

    def __iter__(self):
        self.i = 0
        return iter(self.get_next, None)


def _noise(sqnr_db: float) -> float:
    return float(10.0 ** (-sqnr_db / 10.0))


def quantized_layers(qdq: onnx.ModelProto, candidates: Sequence[str]) -> List[onnx.NodeProto]:
    """Nodes of ``qdq`` named in ``candidates`` that read at least one DequantizeLinear output (i.e. run in INT8)."""
    dq_out = {o for n in qdq.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    wanted = set(candidates)
    return [n for n in qdq.graph.node if n.name in wanted and any(i in dq_out for i in n.input)]


def layer_errors(float_path: str, qdq_path: str, x: np.ndarray, candidates: Sequence[str],
                 batch: int = 64) -> List[LayerError]:
    """Each quantized candidate layer's error on ``x`` (model-ready), worst (most added noise) first."""
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_signal_to_quantization_noice_ratio,
                                                         modify_model_output_intermediate_tensors)

    qdq = onnx.load(qdq_path)
    flt = onnx.load(float_path)
    layers = quantized_layers(qdq, candidates)
    if not layers:
        return []
    float_nodes = {n.name: n for n in flt.graph.node}
    input_name = flt.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="edgeconf-int8-debug-") as tmp:
        fa, qa = os.path.join(tmp, "float_aug.onnx"), os.path.join(tmp, "qdq_aug.onnx")
        modify_model_output_intermediate_tensors(float_path, fa)
        modify_model_output_intermediate_tensors(qdq_path, qa)
        f_act = collect_activations(fa, _Reader(input_name, x, batch))
        q_act = collect_activations(qa, _Reader(input_name, x, batch))

    def sqnr(tensor: str) -> float:
        if tensor == input_name or tensor not in f_act or tensor not in q_act:
            return float("inf")  # the network input, or a tensor only one side exposes: no error to charge
        return float(compute_signal_to_quantization_noice_ratio(f_act[tensor], q_act[tensor]))

    out: List[LayerError] = []
    for node in layers:
        fnode = float_nodes.get(node.name)
        if fnode is None or not fnode.output:
            continue
        o = fnode.output[0]
        s_out = sqnr(o)
        ins = [sqnr(i) for i in fnode.input if i in f_act or i == input_name]
        worst_in = max((_noise(s) for s in ins if np.isfinite(s)), default=0.0)
        added = max(0.0, _noise(s_out) - worst_in) if np.isfinite(s_out) else 0.0
        out.append(LayerError(node.name, node.op_type, o, s_out, added))
    out.sort(key=lambda e: (-e.added_noise, e.sqnr_db))
    return out


__all__ = ["LayerError", "layer_errors", "quantized_layers", "COMPUTE_OPS"]
