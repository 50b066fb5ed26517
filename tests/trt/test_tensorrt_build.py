"""Engine builder: defaults from device profiles, precision plans per TensorRT version, head layers, profiles,
parser errors, calibration batching, and full builds through fake TensorRT 8.2 / 10.3 / 11 modules."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import trt_fakes
from edgeconf.backends import prepare
from edgeconf.backends.onnxruntime import OnnxRuntimeRunner
from edgeconf.engine_format import read_header
from edgeconf.errors import ConfigError, DataError, ModelLoadError
from edgeconf.export.tensorrt_build import (DEFAULT_PROFILE, BatchProfile, CalibrationBatcher, ParserIssue,
                                            build_engine, format_parser_errors, is_head_layer, load_model_inputs,
                                            model_has_qdq, parse_batch_profile, plan_precision, profile_shapes,
                                            resolve_options)
from edgeconf.preprocess import Preprocessing


def headed(tmp_path, name="headed.onnx", seed=3, **kw):
    from onnx_models import random_classifier

    from edgeconf.export.head import add_confidence_head

    model = add_confidence_head(random_classifier(seed, **kw), score="margin", threshold=0.3,
                                labels=[str(i) for i in range(10)], preprocessing=Preprocessing((28, 28), 1))
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


def qdq_model(tmp_path):
    rng = np.random.default_rng(0)
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"], name="quant"),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dequant"),
         helper.make_node("Flatten", ["dq"], ["flat"], axis=1, name="flatten"),
         helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], name="fc")],
        "qdq", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(np.array(0.02, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z"),
         numpy_helper.from_array(rng.normal(0, 0.05, (784, 10)).astype(np.float32), "W"),
         numpy_helper.from_array(np.zeros(10, np.float32), "B")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = str(tmp_path / "qdq.onnx")
    onnx.save(m, path)
    return path


# -- options and profiles -------------------------------------------------------------------------
def test_parse_batch_profile():
    assert parse_batch_profile("1,8,32") == BatchProfile(1, 8, 32)
    assert parse_batch_profile(" 4 ") == BatchProfile(4, 4, 4)
    for bad in ("8,1,32", "0,1,2", "1,2", "a,b,c", "1,2,3,4"):
        with pytest.raises(ConfigError, match="--profile"):
            parse_batch_profile(bad)


def profile(pid):
    from edgeconf.devices.profiles import get_profile

    return get_profile(pid)


@pytest.mark.parametrize("pid,precision,workspace", [
    ("jetson-nano-4gb", "fp16", 256),
    ("jetson-nano-2gb", "fp16", None),
    ("jetson-xavier-nx", "fp16", None),
    ("jetson-orin-nano", "fp16", None),
    ("jetson-agx-orin", "fp16", None),
    ("x86-nvidia", "fp16", 2048),
])
def test_defaults_come_from_the_device_profile(pid, precision, workspace):
    prof = profile(pid)
    opts = resolve_options(prof)
    assert opts.precision == precision
    assert opts.workspace_mb == (workspace if workspace is not None else prof.trt_workspace_mb)
    assert opts.workspace_mb == prof.trt_workspace_mb
    assert opts.device_profile == pid and opts.profile == DEFAULT_PROFILE
    assert any("from device profile %s" % pid in n for n in opts.notes)


def test_explicit_choices_win_and_contradictions_are_errors(tmp_path):
    nano = profile("jetson-nano-4gb")
    opts = resolve_options(nano, precision="fp32", workspace_mb=128, batch_profile="1,2,8")
    assert (opts.precision, opts.workspace_mb, opts.profile) == ("fp32", 128, BatchProfile(1, 2, 8))
    for nano_id in ("jetson-nano-4gb", "jetson-nano-2gb"):
        with pytest.raises(ConfigError, match="cannot run INT8: its Maxwell GPU .compute capability 5.3. has no INT8 "
                                              "support; FP16 is the fast option there: build with --fp16"):
            resolve_options(profile(nano_id), precision="int8", calib=str(tmp_path))
    with pytest.raises(ConfigError, match="does not fit.*256"):
        resolve_options(nano, workspace_mb=4096)
    with pytest.raises(ConfigError, match="no NVIDIA GPU"):
        resolve_options(profile("x86-cpu"))
    with pytest.raises(ConfigError, match="positive"):
        resolve_options(None, workspace_mb=0)
    plain = resolve_options(None)
    assert (plain.precision, plain.workspace_mb) == ("fp32", 1024)


def test_int8_without_calibration_data_is_refused(tmp_path):
    orin = profile("jetson-agx-orin")
    assert orin.int8
    with pytest.raises(ConfigError, match="INT8 needs calibration data: pass --calib DATA"):
        resolve_options(orin, precision="int8")
    with pytest.raises(DataError, match="does not exist"):
        resolve_options(orin, precision="int8", calib=str(tmp_path / "missing"))
    cache = tmp_path / "calib.cache"
    cache.write_bytes(b"x")
    assert resolve_options(orin, precision="int8", calib_cache=str(cache)).precision == "int8"
    qdq = tmp_path / "m_qdq.onnx"
    qdq.write_bytes(b"x")  # resolve_options checks that the file exists; the build reads it
    assert resolve_options(orin, precision="int8", qdq_model=str(qdq)).qdq_model == str(qdq)


@pytest.mark.parametrize("version,precision,qdq,given,calib,want", [
    ("8.2.1", "fp32", False, False, False, ((), False, False, False, False)),
    ("8.2.1", "fp16", False, False, False, (("FP16",), False, False, False, True)),
    ("8.2.1", "int8", False, False, True, (("FP16", "INT8"), True, False, False, True)),
    ("8.2.1", "int8", True, False, False, (("FP16", "INT8"), False, False, False, True)),
    ("10.3.0", "int8", False, True, False, (("FP16", "INT8"), True, False, False, True)),  # QDQ ranges → calibrator
    ("10.3.0", "fp16", False, False, False, (("FP16",), False, False, False, True)),
    ("11.0.0", "int8", False, True, True, ((), False, True, True, False)),
    ("11.0.0", "int8", True, False, False, ((), False, True, False, False)),
    ("11.0.0", "fp32", False, False, False, ((), False, False, False, False)),
])
def test_plan_precision(version, precision, qdq, given, calib, want):
    p = plan_precision(version, precision, qdq, given, calib)
    assert (p.flags, p.calibrator, p.strongly_typed, p.use_qdq_model, p.keep_head_fp32) == want


def test_plan_precision_refusals():
    with pytest.raises(ConfigError, match="QDQ model.*--qdq"):
        plan_precision("11.0.0", "int8", False, False, True)  # calibration data is no use on 11
    with pytest.raises(ConfigError, match="no FP16 builder flag"):
        plan_precision("11.1.0", "fp16", False, False, False)
    with pytest.raises(ConfigError, match="calibration data"):
        plan_precision("8.2.1", "int8", False, False, False)
    with pytest.raises(ConfigError, match="too old"):
        plan_precision("7.1.3", "fp16", False, False, False)


def test_head_layers():
    assert is_head_layer("edgeconf/softmax")
    assert is_head_layer("/edgeconf/margin")
    assert is_head_layer("edgeconf_logits_f32")
    assert is_head_layer("(Unnamed Layer* 12) [Shuffle]", ["edgeconf_scaled"])
    assert is_head_layer("(Unnamed Layer* 3) [ElementWise]", ["exit"])
    assert not is_head_layer("/features/conv1/Conv", ["/features/conv1/Conv_output_0"])
    assert not is_head_layer("Gemm_0", ["logits"])
    assert not is_head_layer("my_edgeconf_layer")


def test_profile_shapes():
    b = BatchProfile(1, 4, 16)
    assert profile_shapes("x", (-1, 1, 28, 28), b) == ((1, 1, 28, 28), (4, 1, 28, 28), (16, 1, 28, 28))
    assert profile_shapes("x", (2, 3, 8, 8), b) == ((2, 3, 8, 8),) * 3
    with pytest.raises(ConfigError, match="fixed image size"):
        profile_shapes("x", (-1, 3, -1, -1), b)


def test_parser_error_message_names_nodes():
    nodes = [("fc", "Gemm"), ("edgeconf/topk2", "TopK")]
    msg = format_parser_errors([ParserIssue("No importer registered for op: TopK", 1)], nodes, "m.onnx", "8.0.1")
    assert "node 'edgeconf/topk2' (TopK)" in msg and "TensorRT 8.0.1 cannot parse m.onnx" in msg
    assert "may not support TopK" in msg
    msg = format_parser_errors([ParserIssue("bad", -1, "given_name", "Einsum")], nodes, "m.onnx", "10.3")
    assert "node 'given_name' (Einsum)" in msg
    assert "the graph" in format_parser_errors([ParserIssue("Invalid graph")], nodes, "m.onnx", "8.2")


def test_model_has_qdq(tmp_path, two_models):
    assert model_has_qdq(onnx.load(qdq_model(tmp_path)))
    assert not model_has_qdq(onnx.load(two_models[0]))


# -- calibration batching -------------------------------------------------------------------------
def test_calibration_batches_cover_the_data_in_order(rng):
    data = rng.random((20, 1, 28, 28)).astype(np.float64)
    b = CalibrationBatcher(data, 8, (None, 1, 28, 28))
    assert (len(b), b.batch_size, b.dropped) == (2, 8, 4)
    batches = list(b)
    assert [x.shape for x in batches] == [(8, 1, 28, 28)] * 2
    assert all(x.dtype == np.float32 and x.flags["C_CONTIGUOUS"] for x in batches)
    np.testing.assert_allclose(np.concatenate(batches), data[:16].astype(np.float32))
    assert b.next_batch() is None
    b.reset()
    np.testing.assert_array_equal(b.next_batch(), batches[0])
    assert len(list(b)) == 2  # iterating again starts over


def test_calibration_small_data_and_limit(rng):
    small = CalibrationBatcher(rng.random((5, 1, 4, 4)), 8, (None, 1, 4, 4))
    assert (len(small), small.batch_size, small.dropped) == (1, 5, 0)
    limited = CalibrationBatcher(rng.random((100, 1, 4, 4)), 8, (None, 1, 4, 4), limit=30)
    assert (len(limited), limited.dropped) == (3, 6)


def test_calibration_data_errors(rng):
    with pytest.raises(DataError, match="dimension 2 is 5 but the model needs 4"):
        CalibrationBatcher(rng.random((4, 1, 5, 4)), 2, (None, 1, 4, 4))
    with pytest.raises(DataError, match="needs 4 dimensions"):
        CalibrationBatcher(rng.random((4, 16)), 2, (None, 1, 4, 4))
    with pytest.raises(DataError, match="no samples"):
        CalibrationBatcher(np.zeros((0, 1, 4, 4)), 2, (None, 1, 4, 4))
    bad = rng.random((4, 1, 4, 4))
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        CalibrationBatcher(bad, 2, (None, 1, 4, 4))
    with pytest.raises(ConfigError):
        CalibrationBatcher(rng.random((4, 1, 4, 4)), 0, (None, 1, 4, 4))


def test_load_model_inputs(tmp_path, rng):
    ready = rng.random((6, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "ready.npy", ready)
    np.testing.assert_array_equal(load_model_inputs(str(tmp_path / "ready.npy"), [None, 1, 28, 28]), ready)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "imgs.npz", x=images)
    pre = Preprocessing((28, 28), 1)
    got = load_model_inputs(str(tmp_path / "imgs.npz"), [None, 1, 28, 28], pre, limit=3)
    np.testing.assert_allclose(got, pre.batch(list(images[:3])))
    with pytest.raises(DataError, match="no preprocessing metadata"):
        load_model_inputs(str(tmp_path / "imgs.npz"), [None, 1, 28, 28], None)


# -- builds through fake TensorRT -----------------------------------------------------------------
def build_calls(trt, kind):
    return [c for c in trt.calls if c[0] == kind]


@pytest.mark.parametrize("version,workspace_api", [("8.2.1.8", "max_workspace_size"), ("10.3.0.30", "set_memory_pool_limit")])
def test_fp16_build_keeps_the_head_in_fp32_and_runs(monkeypatch, tmp_path, rng, version, workspace_api):
    trt, cuda = trt_fakes.install(monkeypatch, version)
    src = headed(tmp_path)
    opts = resolve_options(profile("jetson-nano-4gb"), batch_profile="1,4,16")
    out = str(tmp_path / "m.engine")
    layers = []
    orig_create = trt.Builder.create_network

    def spy(self, flags=0):
        net = orig_create(self, flags)
        layers.append(net)
        return net

    monkeypatch.setattr(trt.Builder, "create_network", spy)
    header = build_engine(src, opts, out)
    config = build_calls(trt, "build")[0][1]
    assert config.flags == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    if workspace_api == "max_workspace_size":
        assert config.max_workspace_size == 256 << 20 and not hasattr(config, "set_memory_pool_limit")
    else:
        assert config.pool_limits == {"WORKSPACE": 256 << 20}
    assert config.profiles[0].shapes["input"] == ((1, 1, 28, 28), (4, 1, 28, 28), (16, 1, 28, 28))
    flags = build_calls(trt, "create_network")[0][1]
    assert flags == (1 if version.startswith("8.") else 0)  # explicit batch before 10
    net = layers[0]
    kept = {layer.name for layer in net.layers if layer.precision_set}
    head_float = {"edgeconf/temperature", "edgeconf/softmax", "edgeconf/margin"}
    assert head_float <= kept
    assert all(name.startswith("edgeconf/") for name in kept)
    assert not any(layer.precision_set for layer in net.layers if not layer.name.startswith("edgeconf/"))
    exit_layer = [layer for layer in net.layers if layer.get_output(0).name == "exit"][0]
    assert not exit_layer.precision_set  # a bool comparison has no float precision
    assert header.extra["head_fp32_layers"] == len(kept)
    h = read_header(out)
    assert (h.tensorrt, h.gpu, h.compute_capability, h.precision, h.workspace_mb) == (version, "NVIDIA Tegra X1", "5.3",
                                                                                      "fp16", 256)
    assert h.profile == {"min": 1, "opt": 4, "max": 16} and h.board == "jetson-nano-4gb"
    assert h.edgeconf["threshold"] == 0.3 and h.edgeconf["labels"][0] == "0"
    assert h.source_onnx == "headed.onnx" and [o["name"] for o in h.outputs] == ["logits", "probs", "confidence", "exit"]
    assert os.path.isfile(out + ".json")
    assert cuda.context_depth == 0
    x = rng.random((5, 1, 28, 28), dtype=np.float32)
    with prepare(out, backend="tensorrt") as runner:
        got = runner.run(x)
    want = OnnxRuntimeRunner(src).run(x)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6)


def test_int8_build_calibrates_from_images_and_reuses_the_cache(monkeypatch, tmp_path, rng):
    trt, cuda = trt_fakes.install(monkeypatch, "8.2.1.8", gpu="Xavier", cc=(7, 2))
    src = headed(tmp_path)
    images = rng.integers(0, 256, (37, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "calib.npy", images)
    cache = str(tmp_path / "calib.cache")
    opts = resolve_options(profile("jetson-xavier-nx"), precision="int8", calib=str(tmp_path / "calib.npy"),
                           calib_cache=cache, batch_profile="1,8,32")
    build_engine(src, opts, str(tmp_path / "i8.engine"))
    config = build_calls(trt, "build")[0][1]
    assert config.flags[:2] == ["FP16", "INT8"] and "OBEY_PRECISION_CONSTRAINTS" in config.flags
    assert config.calibration_profile.shapes["input"][1] == (8, 1, 28, 28)
    assert build_calls(trt, "calibrated") == [("calibrated", 4, 8)]  # 37 samples → 4 full batches of 8
    with open(cache, "rb") as f:
        assert f.read() == b"fake-calibration-cache"
    assert read_header(str(tmp_path / "i8.engine")).precision == "int8"
    assert cuda.memory == {}  # calibrator buffer freed
    # second build: TensorRT reads the cache and asks for no batches
    opts2 = resolve_options(profile("jetson-xavier-nx"), precision="int8", calib_cache=cache)
    build_engine(src, opts2, str(tmp_path / "i8b.engine"))
    assert build_calls(trt, "calibration-cache") == [("calibration-cache", b"fake-calibration-cache")]


def test_tensorrt_11_builds_int8_from_the_qdq_model(monkeypatch, tmp_path):
    trt, _ = trt_fakes.install(monkeypatch, "11.0.0")
    src = headed(tmp_path)
    with pytest.raises(ConfigError, match="QDQ model"):
        build_engine(src, resolve_options(None, precision="int8", calib=str(tmp_path)), str(tmp_path / "x.engine"))
    qdq = qdq_model(tmp_path)
    opts = resolve_options(None, precision="int8", qdq_model=qdq)
    header = build_engine(src, opts, str(tmp_path / "q.engine"))
    assert header.extra["built_from"] == "qdq.onnx" and header.source_onnx == "headed.onnx"
    config = build_calls(trt, "build")[0][1]
    assert config.flags == [] and config.int8_calibrator is None
    strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert build_calls(trt, "create_network")[0][1] == strongly


@pytest.mark.parametrize("version", ["8.2.1.8", "10.3.0.30"])
def test_unsupported_operator_names_the_node(monkeypatch, tmp_path, version):
    trt_fakes.install(monkeypatch, version, unsupported_ops=("TopK",))
    src = headed(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        build_engine(src, resolve_options(None), str(tmp_path / "x.engine"))
    msg = str(info.value)
    assert "node 'edgeconf/top2' (TopK)" in msg
    assert "TensorRT %s cannot parse" % version in msg and "may not support TopK" in msg
    assert not os.path.exists(str(tmp_path / "x.engine"))


def test_build_without_tensorrt_names_the_package(tmp_path):
    from edgeconf.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="python3-libnvinfer"):
        build_engine(headed(tmp_path), resolve_options(None), str(tmp_path / "x.engine"))


# -- the exporter's INT8 decisions drive TensorRT 8.x/10.x -------------------------------------------------
def exporter_int8(tmp_path):
    """A headed float MLP and its INT8 copy made by edgeconf's exporter, which keeps the fragile layer gemm2
    in float (its dead hidden unit's outgoing weights of 1000 wreck per-channel INT8)."""
    from onnx_models import mlp_classifier

    from edgeconf.export.head import add_confidence_head
    from edgeconf.export.quantize import quantize_int8

    rng = np.random.default_rng(5)
    w1 = np.concatenate([rng.normal(0, 0.08, (784, 20)), np.zeros((784, 1))], axis=1)
    x = rng.random((1500, 1, 28, 28), dtype=np.float32) - 0.5
    b1 = np.concatenate([np.zeros(20), [-1.0]])
    w2 = np.concatenate([np.eye(10), -np.eye(10), np.full((1, 10), 1000.0)], axis=0)  # class k: h_k - h_k+10
    model = add_confidence_head(mlp_classifier(w1, b1, w2, np.zeros(10)), score="margin", threshold=0.3,
                                preprocessing=Preprocessing((28, 28), 1))
    src = str(tmp_path / "float.onnx")
    onnx.save(model, src)
    y = OnnxRuntimeRunner(src).run(x)["logits"].argmax(1)  # the float model is the teacher: 100 % by definition
    rep = quantize_int8(src, str(tmp_path / "q.onnx"), (x, y), method="minmax", fit_samples=500, budget=3.0,
                        cpu_rounds=0)
    assert rep.float_layers == ["gemm2"]
    return src, rep.path


@pytest.mark.parametrize("version,number", [("8.2.1.8", 8201), ("10.3.0.30", 100300)])
def test_int8_engine_makes_the_exporters_decisions(monkeypatch, tmp_path, version, number):
    from edgeconf.export.tensorrt_build import qdq_activation_scales

    src, qdq = exporter_int8(tmp_path)
    trt, cuda = trt_fakes.install(monkeypatch, version, gpu="Orin", cc=(8, 7))
    layers = []
    orig_create = trt.Builder.create_network
    monkeypatch.setattr(trt.Builder, "create_network", lambda self, flags=0: layers.append(orig_create(self, flags))
                        or layers[-1])
    opts = resolve_options(profile("jetson-agx-orin"), precision="int8", qdq_model=qdq)
    header = build_engine(src, opts, str(tmp_path / "m.engine"))
    config = build_calls(trt, "build")[0][1]
    assert config.flags[:2] == ["FP16", "INT8"] and config.int8_calibrator is not None
    cache = build_calls(trt, "calibration-cache")[0][1].decode()
    lines = cache.splitlines()
    assert lines[0] == "TRT-%d-EntropyCalibration2" % number
    scales = qdq_activation_scales(onnx.load(qdq))
    assert {"flat", "hidden", "act"} <= set(scales) and len(lines) == 1 + len(scales)
    import struct

    for line in lines[1:]:
        name, value = line.split(": ")
        assert struct.unpack(">f", bytes.fromhex(value))[0] == pytest.approx(scales[name], rel=1e-7)
    assert not build_calls(trt, "calibrated")  # no batches: the ranges are the exporter's
    net = layers[0]
    fp32 = {layer.name for layer in net.layers if layer.precision_set}
    assert "gemm2" in fp32 and "gemm1" not in fp32 and "edgeconf/softmax" in fp32
    assert header.extra["int8_float_layers"] == ["gemm2"] and header.extra["int8_ranges_from"] == "q.onnx"
    assert header.extra["built_from"] == "float.onnx" and header.precision == "int8"


def test_qdq_scales_must_be_symmetric(tmp_path):
    from edgeconf.export.tensorrt_build import qdq_activation_scales

    m = onnx.load(qdq_model(tmp_path))
    assert qdq_activation_scales(m) == {"input": pytest.approx(0.02)}
    for init in m.graph.initializer:
        if init.name == "z":
            init.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), "z"))
    with pytest.raises(ConfigError, match="zero point"):
        qdq_activation_scales(m)
