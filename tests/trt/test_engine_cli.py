"""``edgeconf engine``: strip, single-model and bundle builds, the parity check, and its errors (fake TensorRT)."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

import trt_fakes
from edgeconf.bundle import StageSpec, read_manifest, save_bundle
from edgeconf.cli import main
from edgeconf.engine_format import EngineHeader, read_header, write_engine
from edgeconf.export import engine_cli
from edgeconf.export.engine_cli import TOLERANCES, parity_report
from edgeconf.preprocess import Preprocessing

LABELS = [str(i) for i in range(10)]


def headed(tmp_path, name, seed):
    from onnx_models import random_classifier

    from edgeconf.export.head import add_confidence_head

    model = add_confidence_head(random_classifier(seed), score="margin", threshold=0.3, labels=LABELS,
                                preprocessing=Preprocessing((28, 28), 1))
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


# -- parity ------------------------------------------------------------------------------------------
def outputs(probs, threshold=0.3):
    probs = np.asarray(probs, np.float32)
    top = np.sort(probs, axis=1)
    margin = top[:, -1] - top[:, -2]
    return {"probs": probs, "confidence": margin, "exit": margin >= threshold}


def test_parity_identical_and_within_tolerance(rng):
    p = rng.dirichlet(np.ones(10), 200)
    rep = parity_report(outputs(p), outputs(p), {}, "fp16")
    assert rep.passed and rep.max_abs_diff_probs == 0 and rep.class_agreement == 1 and rep.exit_agreement == 1
    noisy = p + rng.uniform(-5e-3, 5e-3, p.shape)
    rep = parity_report(outputs(p), outputs(noisy), {}, "fp16")
    assert rep.max_abs_diff_probs <= 5e-3 + 1e-7 and rep.max_abs_diff_probs <= TOLERANCES["fp16"].probs_abs
    assert not parity_report(outputs(p), outputs(noisy), {}, "fp32").passed  # too loose for FP32


def test_parity_failures_name_what_differs(rng):
    p = rng.dirichlet(np.ones(10), 100)
    q = p.copy()
    q[:10] = np.roll(q[:10], 1, axis=1)  # 10 % of answers change class
    rep = parity_report(outputs(p), outputs(q), {}, "int8")
    assert not rep.passed
    assert any("max |Δprob|" in s for s in rep.problems) and any("class agreement 0.9" in s for s in rep.problems)
    rep = parity_report(outputs(p), outputs(q), {}, "int8", tolerance=1.0)
    assert any("class agreement" in s for s in rep.problems) and not any("Δprob" in s for s in rep.problems)
    nan = q.copy()
    nan[0, 0] = np.nan
    assert parity_report(outputs(p), outputs(nan), {}, "fp16", tolerance=1.0).max_abs_diff_probs == float("inf")


def test_parity_from_logits_and_metadata(rng):
    logits = rng.normal(0, 2, (50, 10))
    meta = {"temperature": 2.0, "score": "maxp", "threshold": 0.5, "logits": "logits"}
    rep = parity_report({"logits": logits}, {"logits": logits + 1e-4}, meta, "fp32")
    assert rep.passed and rep.exit_agreement == 1.0
    assert parity_report({"logits": logits}, {"logits": logits}, {}, "fp32").exit_agreement is None


# -- strip -------------------------------------------------------------------------------------------
def test_strip_command(tmp_path, capsys):
    plan = bytes(range(256)) * 8
    src = str(tmp_path / "m.engine")
    write_engine(src, plan, EngineHeader(tensorrt="8.2.1"))
    code, out, err = run_cli(capsys, "engine", "--strip", src, "--out", str(tmp_path / "m.plan"), "--json")
    assert code == 0, err
    assert json.loads(out)["bytes"] == len(plan)
    assert (tmp_path / "m.plan").read_bytes() == plan


def test_strip_errors_are_one_line(tmp_path, capsys, two_models):
    code, _, err = run_cli(capsys, "engine", "--strip", two_models[0], "--out", str(tmp_path / "x.plan"))
    assert code == 1 and err.count("\n") == 1 and "is an ONNX model, not a TensorRT engine" in err
    code, _, err = run_cli(capsys, "engine", "--strip", two_models[0])
    assert code == 1 and "--out" in err


# -- builds ------------------------------------------------------------------------------------------
def test_build_model_check_and_up_to_date(monkeypatch, tmp_path, capsys, rng):
    trt, _ = trt_fakes.install(monkeypatch, "10.3.0.30", gpu="Orin", cc=(8, 7))
    src = headed(tmp_path, "m.onnx", 1)
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "data.npy", images)
    out = str(tmp_path / "m.engine")
    code, stdout, err = run_cli(capsys, "engine", src, "--out", out, "--device", "jetson-orin-nano",
                                "--profile", "1,4,16", "--check", str(tmp_path / "data.npy"), "--json")
    assert code == 0, err
    res = json.loads(stdout)
    assert res["engines"][0]["status"] == "built" and res["options"]["precision"] == "fp16"
    check = res["check"][0]
    assert check["passed"] and check["samples"] == 40 and check["max_abs_diff_probs"] < 1e-6
    assert check["class_agreement"] == 1.0 and check["exit_agreement"] == 1.0
    execs = [c[1]["input"][0] for c in trt.calls if c[0] == "execute"]
    assert max(execs) == 16  # the check ran in chunks within the profile
    h = read_header(out)
    assert h.gpu == "Orin" and h.board == "jetson-orin-nano"
    code, stdout, _ = run_cli(capsys, "engine", src, "--out", out, "--device", "jetson-orin-nano", "--profile", "1,4,16")
    assert code == 0 and stdout.startswith("up to date")
    code, stdout, _ = run_cli(capsys, "engine", src, "--out", out, "--device", "jetson-orin-nano", "--profile", "1,4,16",
                              "--force")
    assert stdout.startswith("built")


def test_check_failure_exits_nonzero(monkeypatch, tmp_path, capsys, rng):
    trt_fakes.install(monkeypatch, "8.2.1.8")
    src = headed(tmp_path, "m.onnx", 1)
    other = headed(tmp_path, "other.onnx", 2)
    np.save(tmp_path / "data.npy", rng.random((30, 1, 28, 28)).astype(np.float32))
    from edgeconf.backends.onnxruntime import OnnxRuntimeRunner

    monkeypatch.setattr(engine_cli, "open_engine", lambda path: OnnxRuntimeRunner(other))  # a wrong "engine"
    code, _, err = run_cli(capsys, "engine", src, "--out", str(tmp_path / "m.engine"), "--device", "jetson-nano-4gb",
                           "--check", str(tmp_path / "data.npy"))
    assert code == 1 and "differs from ONNX Runtime beyond the fp16 tolerance" in err and "class agreement" in err


def test_bundle_gets_one_engine_per_stage(monkeypatch, tmp_path, capsys, rng):
    trt_fakes.install(monkeypatch, "8.2.1.8")
    a, b = headed(tmp_path, "small.onnx", 1), headed(tmp_path, "big.onnx", 2)
    bundle = str(tmp_path / "bundle")
    save_bundle(bundle, [StageSpec("small", "small.onnx", threshold=0.3), StageSpec("big stage", "big.onnx", threshold=0.3)],
                {"small.onnx": a, "big.onnx": b}, LABELS, Preprocessing((28, 28), 1))
    out = str(tmp_path / "bundle-trt")
    code, stdout, err = run_cli(capsys, "engine", bundle, "--out", out, "--device", "jetson-nano-4gb", "--json")
    assert code == 0, err
    rows = json.loads(stdout)["engines"]
    assert [r["stage"] for r in rows] == ["small", "big stage"]
    manifest = read_manifest(out, verify=True)  # every file hashed, engines included
    assert [s.engine for s in manifest.stages] == ["engines/small.engine", "engines/big_stage.engine"]
    assert [s.model for s in manifest.stages] == ["small.onnx", "big.onnx"]  # ONNX kept as the fallback
    assert {"engines/small.engine", "engines/small.engine.json", "small.onnx"} <= set(manifest.files)
    assert manifest.provenance["engines"]["precision"] == "fp16"
    assert read_manifest(bundle).stages[0].engine is None  # the source bundle is untouched
    # the stage hook loads the engines and the cascade answers like ONNX Runtime's
    from edgeconf.backends import prepare
    from edgeconf.backends.tensorrt import stage_model_path

    x = rng.random((6, 1, 28, 28), dtype=np.float32)
    for spec in manifest.stages:
        path, backend = stage_model_path(spec, "tensorrt", out)
        assert backend == "tensorrt" and path.endswith(".engine")
        with prepare(path, backend=backend) as eng, prepare(os.path.join(out, spec.model)) as ref:
            np.testing.assert_allclose(eng.run(x)["probs"], ref.run(x)["probs"], atol=1e-6)
    # in place, a second time: engines are replaced, nothing is left over
    code, _, err = run_cli(capsys, "engine", out, "--out", out, "--device", "jetson-nano-4gb", "--force")
    assert code == 0, err
    again = read_manifest(out, verify=True)
    assert [s.engine for s in again.stages] == ["engines/small.engine", "engines/big_stage.engine"]


def test_int8_without_calibration_data_cli(monkeypatch, tmp_path, capsys):
    trt_fakes.install(monkeypatch, "10.3.0")
    src = headed(tmp_path, "m.onnx", 1)
    code, _, err = run_cli(capsys, "engine", src, "--out", str(tmp_path / "m.engine"), "--int8", "--device", "jetson-agx-orin")
    assert code == 1 and "INT8 needs calibration data: pass --calib DATA" in err
    code, _, err = run_cli(capsys, "engine", src, "--out", str(tmp_path / "m.engine"), "--int8", "--device", "jetson-nano-4gb",
                           "--calib", str(tmp_path))
    assert code == 1 and "Jetson Nano 4GB cannot run INT8: its Maxwell GPU" in err and "build with --fp16" in err
    assert "\n" not in err.strip() and "Traceback" not in err


def test_usage_errors(tmp_path, capsys, two_models):
    code, _, err = run_cli(capsys, "engine", two_models[0])
    assert code == 1 and "--out is required" in err
    code, _, err = run_cli(capsys, "engine", str(tmp_path / "missing.onnx"), "--out", "x")
    assert code == 1 and "does not exist" in err
    code, _, err = run_cli(capsys, "engine", two_models[0], "--out", "x.engine", "--device", "no-such-board")
    assert code == 1 and "unknown device profile" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "engine", two_models[0], "--out", "x.engine", "--device", "x86-nvidia",
                           "--profile", "8,1,2")
    assert code == 1 and "--profile" in err
    # one precision only: two flags together are refused before anything runs (the last one used to win)
    for flags in (("--fp16", "--fp32"), ("--fp32", "--int8"), ("--int8", "--fp16", "--fp32")):
        code, _, err = run_cli(capsys, "engine", two_models[0], "--out", "x.engine", *flags)
        assert code == 2 and "choose one precision" in err and all(f in err for f in flags), err
    # this machine is detected as a CPU host: the defaults say why no engine can be built here
    code, _, err = run_cli(capsys, "engine", two_models[0], "--out", "x.engine")
    assert code == 1 and ("no NVIDIA GPU" in err or "python3-libnvinfer" in err)


def test_a_bundle_build_that_fails_leaves_no_folder(tmp_path, capsys):
    """No TensorRT here: the build fails, and neither OUT nor OUT/engines is left behind."""
    a, b = headed(tmp_path, "small.onnx", 1), headed(tmp_path, "big.onnx", 2)
    bundle = str(tmp_path / "bundle")
    save_bundle(bundle, [StageSpec("small", "small.onnx", threshold=0.3), StageSpec("big", "big.onnx", threshold=0.3)],
                {"small.onnx": a, "big.onnx": b}, LABELS, Preprocessing((28, 28), 1))
    code, stdout, err = run_cli(capsys, "engine", bundle, "--out", str(tmp_path / "b2"), "--device", "x86-nvidia")
    assert code == 1 and err.strip().splitlines()[-1].startswith("edgeconf: error: tensorrt"), err
    assert not os.path.exists(str(tmp_path / "b2"))


def test_a_missing_qdq_model_is_named_and_qdq_without_int8_is_noted(tmp_path):
    from edgeconf.devices.profiles import get_profile
    from edgeconf.errors import DataError
    from edgeconf.export.tensorrt_build import resolve_options

    orin = get_profile("jetson-agx-orin")
    with pytest.raises(DataError, match="QDQ model .*nothere.onnx does not exist"):
        resolve_options(orin, precision="int8", qdq_model=str(tmp_path / "nothere.onnx"))
    qdq = headed(tmp_path, "m_qdq.onnx", 3)
    opts = resolve_options(orin, qdq_model=qdq)
    assert any("--qdq is ignored for fp16 builds" in n for n in opts.notes)


def test_inspect_on_an_engine_sidecar_points_at_the_engine_and_engines_print_readably(tmp_path, capsys):
    path = str(tmp_path / "m.engine")
    write_engine(path, b"\x00" * 2048, EngineHeader(tensorrt="8.2.1", gpu="Orin", precision="fp16"))
    code, stdout, err = run_cli(capsys, "inspect", path + ".json")
    assert code == 1 and "is the sidecar of engine" in err and "edgeconf inspect %s" % path in err
    code, stdout, err = run_cli(capsys, "inspect", path)
    assert code == 0 and "TensorRT: 8.2.1" in stdout and "precision: fp16" in stdout and not stdout.lstrip().startswith("{")
