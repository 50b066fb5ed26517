from __future__ import annotations

import numpy as np
import pytest

from edgeconf.backends import availability, backend_names, prepare, register_backend
from edgeconf.backends.onnxruntime import resolve_providers
from edgeconf.errors import BackendUnavailableError, ConfigError, InputValidationError, ModelLoadError
from onnx_models import random_classifier, save


def test_runner_specs_and_numpy_parity(tmp_path, rng):
    model = random_classifier(3)
    path = save(model, tmp_path / "m.onnx")
    with prepare(path) as runner:
        assert [s.name for s in runner.inputs] == ["input"]
        assert runner.inputs[0].shape == (None, 1, 28, 28)
        assert runner.inputs[0].dtype == "float32"
        assert [(s.name, s.shape, s.dtype) for s in runner.outputs] == [("logits", (None, 10), "float32")]
        x = rng.normal(size=(5, 1, 28, 28)).astype(np.float32)
        out = runner.run(x)["logits"]
    from onnx import numpy_helper

    w = numpy_helper.to_array(model.graph.initializer[0])
    b = numpy_helper.to_array(model.graph.initializer[1])
    np.testing.assert_allclose(out, x.reshape(5, -1) @ w + b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 28, 28), np.float32), "expects 4 dimensions"),
    (np.zeros((2, 1, 28, 27), np.float32), "dimension 3 must be 28"),
    (np.zeros((2, 1, 28, 28), np.float64), "dtype float32"),
    (np.full((1, 1, 28, 28), np.nan, np.float32), "NaN or infinite"),
    ([[1.0]], "numpy array"),
])
def test_runner_rejects_bad_inputs(tmp_path, bad, message):
    runner = prepare(save(random_classifier(3), tmp_path / "m.onnx"))
    with pytest.raises(InputValidationError, match=message):
        runner.run(bad)


def test_trusted_run_is_the_public_unchecked_call_and_the_cascade_uses_it(tmp_path, two_models):
    """``run`` validates then calls ``run_trusted``; the cascade validates once, then calls ``run_trusted``."""
    from edgeconf.backends.base import Runner
    from edgeconf.cascade import Cascade, Stage

    assert "run_trusted" in Runner.__abstractmethods__
    runner = prepare(two_models[0])
    x = np.zeros((2, 1, 28, 28), np.float32)
    np.testing.assert_array_equal(runner.run_trusted({"input": x}, ["logits"])["logits"], runner.run(x)["logits"])
    calls = []

    class Recording(type(runner)):
        def run(self, *a, **k):  # the cascade must never pay for a second validation
            raise AssertionError("the cascade called run()")

        def run_trusted(self, feeds, names):
            calls.append(names)
            return super().run_trusted(feeds, names)

    stages = [Stage("a", Recording(two_models[0]), threshold=1.0), Stage("b", Recording(two_models[1]))]
    Cascade(stages).run_batch(np.zeros((3, 1, 28, 28), np.float32))
    assert calls == [["logits"], ["logits"]]
    with pytest.raises(InputValidationError):  # ...and its entry still validates
        Cascade(stages).run_batch(np.zeros((3, 1, 28, 27), np.float32))


def test_runner_rejects_wrong_names(tmp_path):
    runner = prepare(save(random_classifier(3), tmp_path / "m.onnx"))
    x = np.zeros((1, 1, 28, 28), np.float32)
    with pytest.raises(InputValidationError, match="unexpected \\['other'\\]"):
        runner.run({"input": x, "other": x})
    with pytest.raises(InputValidationError, match="unknown outputs"):
        runner.run(x, output_names=["probs"])


def test_truncated_and_foreign_files_are_model_load_errors(tmp_path):
    good = save(random_classifier(3), tmp_path / "m.onnx")
    data = open(good, "rb").read()
    (tmp_path / "trunc.onnx").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.onnx").write_text("not a model")
    for name in ("trunc.onnx", "text.onnx"):
        with pytest.raises(ModelLoadError, match=r"%s is not an ONNX model \(.*\); is it a complete .onnx file\?" % name):
            prepare(str(tmp_path / name))
    with pytest.raises(ModelLoadError, match="does not exist"):
        prepare(str(tmp_path / "missing.onnx"))


def test_provider_selection():
    assert resolve_providers(None, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    both = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(["trt", ("cuda", {"device_id": 0})], both) == [
        "TensorrtExecutionProvider", ("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    with pytest.raises(BackendUnavailableError, match="'cuda' is not available"):
        resolve_providers(["cuda"], ["CPUExecutionProvider"])


def test_registry_is_lazy_and_reports_unusable_backends():
    assert {"onnxruntime", "tensorrt"} <= set(backend_names())
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        prepare("x.onnx", backend="nope")
    register_backend("broken", "edgeconf_no_such_module:prepare")
    try:
        rows = {name: (ok, detail) for name, ok, detail in availability()}
        assert rows["onnxruntime"][0] is True
        assert rows["broken"][0] is False and "edgeconf_no_such_module" in rows["broken"][1]
        with pytest.raises(BackendUnavailableError, match="backend 'broken' cannot be loaded"):
            prepare("x.onnx", backend="broken")
    finally:
        from edgeconf import backends

        backends._REGISTRY.pop("broken")


def test_bound_calls_match_the_plain_call_and_reuse_their_buffers(tmp_path, rng):
    runner = prepare(save(random_classifier(5), tmp_path / "m.onnx"))
    call = runner.bind((1, 1, 28, 28), np.float32, ["logits"])
    assert type(call).__name__ == "_IoBoundCall"  # ONNX Runtime's IO binding on the CPU provider
    seen = []
    for _ in range(3):
        x = rng.normal(size=(1, 1, 28, 28)).astype(np.float32)
        call.input[...] = x
        out = call.run()
        np.testing.assert_allclose(out["logits"], runner.run(x)["logits"], rtol=1e-6, atol=1e-6)
        seen.append(out["logits"])
    assert seen[0] is seen[2]  # one output buffer, overwritten by every call: callers copy what they keep


def test_the_default_bound_call_runs_on_run_trusted():
    """A backend implements only run_trusted; bind works on top of it."""
    from edgeconf.backends.base import BoundCall, Runner, TensorSpec

    class Doubler(Runner):
        inputs = (TensorSpec("x", (None, 3), "float32"),)
        outputs = (TensorSpec("y", (None, 3), "float32"),)

        def run_trusted(self, feeds, output_names):
            return {"y": feeds["x"] * 2}

    call = Doubler().bind((1, 3), "float32", ["y"])
    assert type(call) is BoundCall
    call.input[...] = [[1, 2, 3]]
    np.testing.assert_array_equal(call.run()["y"], [[2, 4, 6]])


def test_a_model_too_new_for_onnxruntime_says_so(tmp_path):
    """The message names the opset needed, what the installed runtime runs, and the release to upgrade to."""
    import onnxruntime as ort

    from edgeconf.backends.onnxruntime import explain_load_error, first_release_for, newest_opset

    model = random_classifier(3)
    model.opset_import[0].version = 99
    path = save(model, tmp_path / "new.onnx")
    with pytest.raises(ModelLoadError) as info:
        prepare(path)
    assert "new.onnx needs ONNX opset 99 but onnxruntime %s runs opsets up to" % ort.__version__ in str(info.value)
    assert "\n" not in str(info.value)
    # what onnxruntime 1.11 says about the shipped opset-17 models (its own words, measured on Python 3.8)
    said = RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed: ... Current official support "
                        "for domain ai.onnx is till opset 16.")
    good = save(random_classifier(3), tmp_path / "m17.onnx")
    msg = explain_load_error(good, said, "1.11.1")
    assert msg.endswith("m17.onnx needs ONNX opset 17 but onnxruntime 1.11.1 runs opsets up to 16; upgrade onnxruntime "
                        "to 1.12 or newer: pip install -U 'onnxruntime>=1.12' (on a Jetson: the onnxruntime-gpu wheel for "
                        "your JetPack from the Jetson Zoo) or re-export the model at opset 16 or lower")
    assert newest_opset("1.10.0") == 15 and newest_opset("1.12.1") == 17 and newest_opset("9.0") is None
    assert first_release_for(17) == "1.12" and first_release_for(99) is None
    other = explain_load_error(good, RuntimeError("something else\nsecond line"), "1.16.0")
    assert other == "onnxruntime 1.16.0 cannot load %s: something else" % good
