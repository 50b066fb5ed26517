"""The tensorrt backend: lazy import, API-generation choice, spec mapping, and the runner's code paths
for both API generations driven through fake tensorrt/pycuda modules (real ONNX Runtime underneath)."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest

import trt_fakes
from edgeconf.backends import prepare
from edgeconf.backends.onnxruntime import OnnxRuntimeRunner
from edgeconf.backends.tensorrt import (BINDINGS, TENSORS, BatchOutOfProfileError, BatchRange, api_of_module,
                                        batch_range, numpy_dtype, public_dtypes, select_api, shape_from_dims,
                                        stage_model_path)
from edgeconf.bundle import StageSpec
from edgeconf.engine_format import EngineCompatibilityError, EngineHeader, NotAnEngineError, write_engine
from edgeconf.errors import BackendUnavailableError, InputValidationError, MissingDependencyError, ModelLoadError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -- pure decisions -------------------------------------------------------------------------------
@pytest.mark.parametrize("version,tensor,binding,want", [
    ("8.0.1.6", False, True, BINDINGS),
    ("8.2.1.8", False, True, BINDINGS),
    ("8.4.3.1", False, True, BINDINGS),
    ("8.5.2.2", True, True, TENSORS),
    ("8.6.1", True, True, TENSORS),
    ("8.6.1", False, True, BINDINGS),  # an odd build without the tensor API
    ("10.3.0.30", True, False, TENSORS),
    ("10.3.0", True, True, TENSORS),  # bindings are gone in 10 whatever attributes say
    ("11.0.0", True, False, TENSORS),
])
def test_select_api(version, tensor, binding, want):
    assert select_api(version, tensor, binding) == want


def test_select_api_refuses():
    with pytest.raises(BackendUnavailableError, match="8.0 or newer"):
        select_api("7.1.3")
    with pytest.raises(BackendUnavailableError, match="neither"):
        select_api("10.0.1", has_tensor_api=False)
    with pytest.raises(BackendUnavailableError):
        select_api("garbage")


@pytest.mark.parametrize("version,want", [("8.2.1.8", BINDINGS), ("8.6.1", TENSORS), ("10.3.0", TENSORS)])
def test_api_of_fake_modules(version, want):
    trt = trt_fakes.make_tensorrt(version, trt_fakes.FakeCuda())
    assert api_of_module(trt) == want


def test_dtype_and_shape_mapping():
    DT = trt_fakes.DataType
    assert [numpy_dtype(d) for d in (DT.FLOAT, DT.HALF, DT.INT8, DT.INT32, DT.BOOL, DT.UINT8, DT.INT64)] == [
        "float32", "float16", "int8", "int32", "bool", "uint8", "int64"]
    assert numpy_dtype("DataType.FLOAT") == "float32"
    with pytest.raises(BackendUnavailableError, match="BF16"):
        numpy_dtype(DT.BF16)
    assert shape_from_dims((-1, 1, 28, 28)) == (None, 1, 28, 28)
    assert shape_from_dims([4, 10]) == (4, 10)
    assert shape_from_dims(()) == ()


def test_batch_range_and_public_dtypes():
    r = batch_range((1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))
    assert r == BatchRange(1, 4, 16)
    r.check(1, "x")
    r.check(16, "x")
    with pytest.raises(BatchOutOfProfileError, match=r"batch size 17 .* \(1\.\.16\).*--profile 1,4,17") as info:
        r.check(17, "x", "m.engine")
    assert isinstance(info.value, InputValidationError)
    got = public_dtypes({"a": "int32", "b": "float32", "c": "float16", "d": "int8"},
                        [{"name": "a", "dtype": "int64"}, {"name": "b", "dtype": "float32"},
                         {"name": "c", "dtype": "float32"}, {"name": "d", "dtype": "float64"}])
    assert got == {"a": "int64", "b": "float32", "c": "float32", "d": "int8"}


# -- lazy import ----------------------------------------------------------------------------------
def test_backend_module_imports_without_tensorrt_and_fails_only_when_selected(tmp_path, two_models):
    """In a fresh interpreter where tensorrt/pycuda cannot be imported."""
    engine = str(tmp_path / "m.engine")
    write_engine(engine, open(two_models[0], "rb").read(), EngineHeader(tensorrt="8.2.1"))
    code = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorrt', 'pycuda'):
            raise ImportError('No module named ' + name)
sys.meta_path.insert(0, Block())
import edgeconf.backends.tensorrt, edgeconf.backends.ort_tensorrt, edgeconf.engine_format
from edgeconf.backends import prepare, availability
rows = {n: ok for n, ok, _ in availability()}
assert rows['tensorrt'] is False and rows['onnxruntime'] is True, rows
prepare(%r, backend='onnxruntime').close()
from edgeconf.errors import MissingDependencyError
try:
    prepare(%r, backend='tensorrt')
except MissingDependencyError as e:
    print('MSG', e)
else:
    raise SystemExit('no error')
""" % (two_models[0], engine)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    msg = out.stdout.split("MSG", 1)[1]
    assert "python3-libnvinfer" in msg and "edgeconf's [tensorrt] extra" in msg and "edgeconf[" not in msg


def test_non_engine_file_fails_before_tensorrt_is_needed(tmp_path, two_models):
    with pytest.raises(NotAnEngineError, match="ONNX model"):
        prepare(two_models[0], backend="tensorrt")


def test_missing_pycuda_is_named(monkeypatch, tmp_path, two_models):
    trt_fakes.install(monkeypatch, "8.2.1.8")
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)  # import raises ImportError
    engine = str(tmp_path / "m.engine")
    write_engine(engine, open(two_models[0], "rb").read(), EngineHeader(tensorrt="8.2.1.8"))
    with pytest.raises(MissingDependencyError, match="pycuda"):
        prepare(engine, backend="tensorrt")


def test_a_folder_named_tensorrt_is_not_tensorrt(monkeypatch):
    """tests/tensorrt on sys.path imports as an empty namespace package named tensorrt."""
    import types

    from edgeconf.backends.tensorrt import import_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(MissingDependencyError, match="python3-libnvinfer"):
        import_tensorrt()


# -- runner through fakes -------------------------------------------------------------------------
def headed_model(tmp_path, seed=1):
    from onnx_models import random_classifier

    from edgeconf.export.head import add_confidence_head

    model = add_confidence_head(random_classifier(seed), score="margin", threshold=0.3, temperature=1.5,
                                labels=[str(i) for i in range(10)])
    path = str(tmp_path / ("headed%d.onnx" % seed))
    onnx.save(model, path)
    return path


def engine_for(tmp_path, onnx_path, trt_version, gpu="NVIDIA Tegra X1", cc="5.3", name="m.engine"):
    from edgeconf.engine_format import onnx_metadata, sha256_file
    from edgeconf.export.tensorrt_build import onnx_io_specs

    ins, outs = onnx_io_specs(onnx.load(onnx_path))
    h = EngineHeader(tensorrt=trt_version, gpu=gpu, compute_capability=cc, precision="fp16", inputs=ins, outputs=outs,
                     profile={"min": 1, "opt": 4, "max": 16}, source_onnx=os.path.basename(onnx_path),
                     source_onnx_sha256=sha256_file(onnx_path), edgeconf=onnx_metadata(onnx_path))
    path = str(tmp_path / name)
    with open(onnx_path, "rb") as f:
        write_engine(path, f.read(), h)  # the fake runtime "deserialises" ONNX bytes
    return path


@pytest.mark.parametrize("version", ["8.2.1.8", "8.6.1.6", "10.3.0.30"])
def test_runner_matches_onnxruntime_on_both_api_generations(monkeypatch, tmp_path, rng, version):
    trt, cuda = trt_fakes.install(monkeypatch, version)
    onnx_path = headed_model(tmp_path)
    engine = engine_for(tmp_path, onnx_path, version)
    ref = OnnxRuntimeRunner(onnx_path)
    with prepare(engine, backend="tensorrt") as runner:
        assert runner.api == (BINDINGS if version.startswith("8.2") else TENSORS)
        assert [s.to_json() for s in runner.inputs] == [s.to_json() for s in ref.inputs]
        assert [s.to_json() for s in runner.outputs] == [s.to_json() for s in ref.outputs]
        assert runner.metadata == {k: v for k, v in runner.metadata.items() if k.startswith("edgeconf.")}
        assert '"margin"' == runner.metadata["edgeconf.score"]
        assert runner.batch_range == BatchRange(1, 4, 16)
        for batch in (1, 3, 16, 2):  # grow, then shrink: buffers are reused
            x = rng.random((batch, 1, 28, 28), dtype=np.float32)
            got = runner.run(x)
            want = ref.run(x)
            assert list(got) == list(want)
            for k in want:
                assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
                np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6)
        sub = runner.run(x, output_names=["exit"])
        assert list(sub) == ["exit"] and sub["exit"].dtype == np.bool_
        with pytest.raises(BatchOutOfProfileError, match="batch size 17"):
            runner.run(rng.random((17, 1, 28, 28), dtype=np.float32))
        with pytest.raises(InputValidationError):
            runner.run(rng.random((2, 1, 27, 28), dtype=np.float32))
        assert cuda.context_depth == 0  # every push was popped
        live = dict(cuda.memory)
        assert live
    assert cuda.memory == {} and set(live) <= set(cuda.freed)  # buffers freed on close
    assert cuda.detached == 1 and cuda.context_depth == 0
    runner.close()  # twice is fine
    ref.close()


def test_execution_paths_are_the_documented_ones(monkeypatch, tmp_path, rng):
    """8.x: execute_async_v2 with a bindings list; 10.x: set_tensor_address + execute_async_v3."""
    onnx_path = headed_model(tmp_path)
    seen = {}
    for version in ("8.2.1.8", "10.3.0.30"):
        trt, cuda = trt_fakes.install(monkeypatch, version)
        engine = engine_for(tmp_path, onnx_path, version, name="e%s.engine" % version)
        calls = []
        ctx_cls = trt.IExecutionContext
        for meth in ("execute_async_v2", "execute_async_v3", "set_tensor_address", "set_binding_shape", "set_input_shape"):
            if hasattr(ctx_cls, meth):
                orig = getattr(ctx_cls, meth)

                def wrapped(self, *a, _orig=orig, _name=meth, **kw):
                    calls.append(_name)
                    return _orig(self, *a, **kw)
                monkeypatch.setattr(ctx_cls, meth, wrapped)
        with prepare(engine, backend="tensorrt") as runner:
            runner.run(rng.random((2, 1, 28, 28), dtype=np.float32))
        seen[version] = set(calls)
    assert seen["8.2.1.8"] == {"set_binding_shape", "execute_async_v2"}
    assert seen["10.3.0.30"] == {"set_input_shape", "set_tensor_address", "execute_async_v3"}


def test_version_mismatch_stops_before_deserialising(monkeypatch, tmp_path):
    trt, cuda = trt_fakes.install(monkeypatch, "10.3.0.30", gpu="Orin", cc=(8, 7))
    engine = engine_for(tmp_path, headed_model(tmp_path), "8.2.1.8")
    with pytest.raises(EngineCompatibilityError) as info:
        prepare(engine, backend="tensorrt")
    msg = str(info.value)
    assert "TensorRT 8.2.1.8" in msg and "TensorRT 10.3.0.30" in msg and "compute 5.3" in msg and "compute 8.7" in msg
    assert "edgeconf engine headed1.onnx --fp16" in msg
    assert not [c for c in trt.calls if c[0] == "deserialize"]
    assert cuda.context_depth == 0 and cuda.detached == 1


def test_plain_plan_loads_with_a_warning(monkeypatch, tmp_path, rng):
    trt_fakes.install(monkeypatch, "10.3.0")
    onnx_path = headed_model(tmp_path)
    plain = tmp_path / "plain.plan"
    plain.write_bytes(open(onnx_path, "rb").read())
    with pytest.warns(UserWarning, match="plain TensorRT plan"):
        runner = prepare(str(plain), backend="tensorrt")
    with runner:
        out = runner.run(rng.random((2, 1, 28, 28), dtype=np.float32))
        assert out["probs"].shape == (2, 10) and runner.metadata == {}


def test_undeserialisable_plan_is_a_clear_error(monkeypatch, tmp_path):
    trt_fakes.install(monkeypatch, "8.2.1.8")
    bogus = bytes(range(256)) * 4
    path = str(tmp_path / "bad.engine")
    write_engine(path, bogus, EngineHeader(tensorrt="8.2.1.8", gpu="NVIDIA Tegra X1", compute_capability="5.3",
                                           source_onnx="m.onnx"))
    with pytest.raises(ModelLoadError, match="could not deserialise.*edgeconf engine m.onnx"):
        prepare(path, backend="tensorrt")


def test_int64_outputs_come_back_as_int64_on_tensorrt_8(monkeypatch, tmp_path, rng):
    """TensorRT 8 turns int64 I/O into int32; the runner returns what the ONNX model declares."""
    from onnx import TensorProto, helper

    trt_fakes.install(monkeypatch, "8.2.1.8")
    g = helper.make_graph([helper.make_node("ArgMax", ["x"], ["cls"], axis=1, keepdims=0)], "argmax",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
                          [helper.make_tensor_value_info("cls", TensorProto.INT64, ["N"])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = str(tmp_path / "argmax.onnx")
    onnx.save(m, path)
    engine = engine_for(tmp_path, path, "8.2.1.8", name="argmax.engine")
    with prepare(engine, backend="tensorrt") as runner:
        assert runner.outputs[0].dtype == "int64"
        x = rng.random((3, 5), dtype=np.float32)
        out = runner.run(x)["cls"]
        assert out.dtype == np.int64 and (out == x.argmax(1)).all()


# -- bundles: which file a stage loads ------------------------------------------------------------
def test_stage_model_path(monkeypatch, tmp_path, two_models):
    folder = str(tmp_path)
    spec = StageSpec("s1", "a.onnx")
    os.replace(two_models[0], tmp_path / "a.onnx")
    assert stage_model_path(spec, "onnxruntime", folder) == (os.path.realpath(str(tmp_path / "a.onnx")), "onnxruntime")
    with pytest.warns(UserWarning, match="no TensorRT engine"):
        assert stage_model_path(spec, "tensorrt", folder)[1] == "onnxruntime"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stage_model_path(spec, "auto", folder)[1] == "onnxruntime"
    engine = engine_for(tmp_path, str(tmp_path / "a.onnx"), "8.2.1.8", name="a.engine")
    with_engine = StageSpec("s1", "a.onnx", engine="a.engine")
    assert stage_model_path(with_engine, "tensorrt", folder) == (os.path.realpath(engine), "tensorrt")
    # auto without TensorRT here: ONNX
    assert stage_model_path(with_engine, "auto", folder)[1] == "onnxruntime"
    # auto with a matching TensorRT + GPU: the engine; with another GPU: ONNX
    trt_fakes.install(monkeypatch, "8.2.1.8")
    assert stage_model_path(with_engine, "auto", folder) == (os.path.realpath(engine), "tensorrt")
    trt_fakes.install(monkeypatch, "8.2.1.8", gpu="Xavier", cc=(7, 2))
    assert stage_model_path(with_engine, "auto", folder)[1] == "onnxruntime"
    from edgeconf.errors import ConfigError

    with pytest.raises(ConfigError, match="inside the bundle"):
        stage_model_path(StageSpec("s1", "../x.onnx"), "auto", folder)
