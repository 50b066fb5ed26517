"""Small real ONNX models built with onnx.helper for the tests."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def linear_classifier(weight: np.ndarray, bias: Optional[np.ndarray] = None, input_shape: Sequence[int] = (1, 28, 28),
                      input_name: str = "input", output_name: str = "logits", extra_outputs: bool = False) -> onnx.ModelProto:
    """``logits = flatten(x) @ weight + bias`` with a dynamic batch axis; optionally also a 'features' output."""
    features = int(np.prod(input_shape))
    weight = np.asarray(weight, dtype=np.float32)
    assert weight.shape[0] == features, (weight.shape, features)
    classes = weight.shape[1]
    bias = np.zeros(classes, np.float32) if bias is None else np.asarray(bias, np.float32)
    nodes = [
        helper.make_node("Flatten", [input_name], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], [output_name]),
    ]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", classes])]
    if extra_outputs:
        nodes.append(helper.make_node("Relu", ["flat"], ["features"]))
        outputs.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", features]))
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", *input_shape])],
        outputs,
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def random_classifier(seed: int, input_shape: Sequence[int] = (1, 28, 28), classes: int = 10, scale: float = 0.05,
                      **kw) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    features = int(np.prod(input_shape))
    return linear_classifier(rng.normal(0, scale, (features, classes)), rng.normal(0, 0.1, classes),
                             input_shape=input_shape, **kw)


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def mlp_classifier(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray,
                   input_shape: Sequence[int] = (1, 28, 28)) -> onnx.ModelProto:
    """``logits = relu(flatten(x) @ w1 + b1) @ w2 + b2``; nodes named ``flatten``, ``gemm1``, ``relu``, ``gemm2``."""
    features = int(np.prod(input_shape))
    w1, w2 = np.asarray(w1, np.float32), np.asarray(w2, np.float32)
    assert w1.shape[0] == features and w2.shape[0] == w1.shape[1], (w1.shape, w2.shape)
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "W1", "B1"], ["hidden"], name="gemm1"),
        helper.make_node("Relu", ["hidden"], ["act"], name="relu"),
        helper.make_node("Gemm", ["act", "W2", "B2"], ["logits"], name="gemm2"),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", w2.shape[1]])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(np.asarray(b1, np.float32), "B1"),
         numpy_helper.from_array(w2, "W2"), numpy_helper.from_array(np.asarray(b2, np.float32), "B2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def with_ood_output(model: onnx.ModelProto, name: str = "ood") -> onnx.ModelProto:
    """A copy of a ``linear_classifier`` that also outputs ``ood = mean(flat(x)²)`` per input: inputs near 0
    score low (known), large inputs high (unknown) — a stand-in OOD head with a score anyone can compute."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.node.extend([helper.make_node("Mul", ["flat", "flat"], ["ood_sq"]),
                         helper.make_node("ReduceMean", ["ood_sq"], [name], axes=[1], keepdims=0)])
    m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N"]))
    opset = m.opset_import[0].version
    if opset >= 18:  # ReduceMean takes axes as an input from opset 18
        m.graph.node[-1].ClearField("attribute")
        m.graph.node[-1].attribute.extend([helper.make_attribute("keepdims", 0)])
        m.graph.node[-1].input.append("ood_axes")
        m.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "ood_axes"))
    onnx.checker.check_model(m)
    return m
