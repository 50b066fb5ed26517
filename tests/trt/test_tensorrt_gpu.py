"""Real TensorRT on a real GPU: build, run, compare with ONNX Runtime. Skipped where TensorRT/pycuda/GPU are missing."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

from edgeconf.preprocess import Preprocessing


def _real_tensorrt() -> str:
    """Empty string when real TensorRT, pycuda and a GPU are usable here, else why not."""
    try:
        import tensorrt

        if not hasattr(tensorrt, "__version__"):
            return "tensorrt is not installed (only a folder of that name is on sys.path)"
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() < 1:
            return "no CUDA device"
    except Exception as exc:  # ImportError, or pycuda without a driver
        return "TensorRT/pycuda/GPU unavailable: %s" % exc
    return ""


WHY = _real_tensorrt()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(bool(WHY), reason=WHY or "ok")]


def headed(tmp_path, name="m.onnx", seed=1):
    from onnx_models import random_classifier

    from edgeconf.export.head import add_confidence_head

    model = add_confidence_head(random_classifier(seed), score="margin", threshold=0.3,
                                labels=[str(i) for i in range(10)], preprocessing=Preprocessing((28, 28), 1))
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-3), ("fp16", 1e-2)])
def test_build_and_run_real_engine(tmp_path, rng, precision, atol):
    from edgeconf.backends import prepare
    from edgeconf.export.tensorrt_build import build_engine, resolve_options

    src = headed(tmp_path)
    out = str(tmp_path / ("m_%s.engine" % precision))
    header = build_engine(src, resolve_options(None, precision=precision, workspace_mb=256, batch_profile="1,4,16"), out)
    print("built with TensorRT %s on %s (compute %s): %d plan bytes" % (header.tensorrt, header.gpu,
                                                                          header.compute_capability, header.plan_bytes))
    ref = prepare(src)
    with prepare(out, backend="tensorrt") as eng:
        print("API generation:", eng.api)
        assert [s.to_json() for s in eng.outputs] == [s.to_json() for s in ref.outputs]
        for batch in (1, 7, 16):
            x = rng.random((batch, 1, 28, 28), dtype=np.float32)
            got, want = eng.run(x), ref.run(x)
            for k in want:
                assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
            np.testing.assert_allclose(got["probs"], want["probs"], atol=atol)
            assert (got["probs"].argmax(1) == want["probs"].argmax(1)).mean() >= 0.9
        from edgeconf.backends.tensorrt import BatchOutOfProfileError

        with pytest.raises(BatchOutOfProfileError):
            eng.run(rng.random((17, 1, 28, 28), dtype=np.float32))


def test_header_mismatch_is_refused_before_tensorrt(tmp_path):
    from edgeconf.backends import prepare
    from edgeconf.engine_format import EngineCompatibilityError, read_plan, write_engine
    from edgeconf.export.tensorrt_build import build_engine, resolve_options

    src = headed(tmp_path)
    out = str(tmp_path / "m.engine")
    build_engine(src, resolve_options(None, workspace_mb=256), out)
    header, plan = read_plan(out)
    header.tensorrt = "7.0.0"
    write_engine(out, plan, header)
    with pytest.raises(EngineCompatibilityError, match="TensorRT 7.0.0"):
        prepare(out, backend="tensorrt")


def test_cli_bundle_and_check(tmp_path, rng, capsys):
    from edgeconf.bundle import StageSpec, read_manifest, save_bundle
    from edgeconf.cli import main

    a, b = headed(tmp_path, "a.onnx", 1), headed(tmp_path, "b.onnx", 2)
    bundle = str(tmp_path / "bundle")
    save_bundle(bundle, [StageSpec("a", "a.onnx"), StageSpec("b", "b.onnx")], {"a.onnx": a, "b.onnx": b},
                [str(i) for i in range(10)], Preprocessing((28, 28), 1))
    np.save(tmp_path / "data.npy", rng.integers(0, 256, (64, 28, 28), dtype=np.uint8))
    with pytest.raises(SystemExit) as info:
        main(["engine", bundle, "--out", bundle, "--fp16", "--workspace", "256", "--check", str(tmp_path / "data.npy"),
              "--json"])
    out = capsys.readouterr()
    assert info.value.code == 0, out.err
    print(out.out)
    assert all(c["passed"] for c in json.loads(out.out)["check"])
    assert all(s.engine for s in read_manifest(bundle).stages)
    assert os.path.isfile(os.path.join(bundle, "engines", "a.engine"))
