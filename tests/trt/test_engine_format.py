"""Engine file format: header round-trips, damaged files, non-engines, compatibility messages, describe."""
from __future__ import annotations

import json
import os
import struct
import warnings

import onnx
import pytest

from edgeconf.engine_format import (DeviceRuntime, EngineCompatibilityError, EngineHeader, EngineHeaderError,
                                    NotAnEngineError, PlainPlanWarning, check_compatible, compatibility,
                                    decode_metadata, describe, onnx_metadata, read_engine, read_header, read_plan,
                                    rebuild_command, same_tensorrt, sidecar_path, strip_header, write_engine)
from edgeconf.errors import BackendUnavailableError, ModelLoadError

PLAN = bytes(range(256)) * 40  # stands in for a TensorRT plan: binary, 10 KiB


def header(**kw) -> EngineHeader:
    base = dict(tensorrt="8.2.1.8", gpu="NVIDIA Tegra X1", compute_capability="5.3", board="jetson-nano-4gb",
                precision="fp16", inputs=[{"name": "input", "shape": [None, 1, 28, 28], "dtype": "float32"}],
                outputs=[{"name": "probs", "shape": [None, 10], "dtype": "float32"}],
                profile={"min": 1, "opt": 4, "max": 32}, workspace_mb=256, source_onnx="small.onnx",
                source_onnx_sha256="ab" * 32, edgeconf={"score": "margin", "threshold": 0.42, "labels": ["a", "b"]})
    base.update(kw)
    return EngineHeader(**base)


def test_write_read_round_trip_with_sidecar(tmp_path):
    path = str(tmp_path / "m.engine")
    h = write_engine(path, PLAN, header())
    assert h.plan_bytes == len(PLAN) and len(h.plan_sha256) == 64 and h.created and h.tool.startswith("edgeconf")
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<I", raw[:4])
    assert json.loads(raw[4:4 + n].decode("utf-8"))["format"] == "edgeconf.engine"
    assert raw[4 + n:] == PLAN
    got, plan = read_plan(path)
    assert plan == PLAN
    assert got.to_json() == h.to_json()
    assert got.edgeconf["threshold"] == 0.42 and got.tensorrt == "8.2.1.8"
    with open(sidecar_path(path)) as f:
        assert json.load(f) == h.to_json()
    assert got.metadata_props()["edgeconf.labels"] == json.dumps(["a", "b"])


def test_strip_writes_the_bare_plan(tmp_path):
    path = str(tmp_path / "m.engine")
    write_engine(path, PLAN, header())
    out = str(tmp_path / "m.plan")
    assert strip_header(path, out) == len(PLAN)
    with open(out, "rb") as f:
        assert f.read() == PLAN
    with pytest.warns(PlainPlanWarning):
        plain = read_engine(out)
    assert plain.plain and plain.read_plan() == PLAN
    with pytest.raises(ModelLoadError, match="overwrite"):
        strip_header(path, path)
    os.symlink(path, str(tmp_path / "link.engine"))  # the same file by another name: refused too
    with pytest.raises(ModelLoadError, match="overwrite"):
        strip_header(str(tmp_path / "link.engine"), path)
    kept = read_engine(path)
    assert kept.header.is_edgeconf and kept.read_plan() == PLAN  # the source keeps its header


def test_foreign_header_is_kept(tmp_path):
    path = tmp_path / "yolo.engine"
    meta = json.dumps({"author": "someone", "batch": 1}).encode()
    path.write_bytes(struct.pack("<I", len(meta)) + meta + PLAN)
    h = read_header(str(path))
    assert not h.is_edgeconf and h.extra == {"author": "someone", "batch": 1}
    assert describe(str(path))["format"].startswith("foreign header")


@pytest.mark.parametrize("cut", [3, 10, 40])
def test_truncated_header(tmp_path, cut):
    path = str(tmp_path / "m.engine")
    write_engine(path, PLAN, header())
    with open(path, "rb") as f:
        raw = f.read()
    if cut < 6:
        (tmp_path / "m.engine").write_bytes(raw[:cut])
        with pytest.raises(NotAnEngineError):
            read_engine(path)
        return
    (tmp_path / "m.engine").write_bytes(raw[:cut])
    with pytest.raises(EngineHeaderError, match="truncated"):
        read_engine(path)


def test_truncated_plan(tmp_path):
    path = str(tmp_path / "m.engine")
    write_engine(path, PLAN, header())
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 100)
    with pytest.raises(EngineHeaderError, match="truncated.*%d bytes" % len(PLAN)):
        read_engine(path)
    # header only, no plan at all
    with open(path, "rb") as f:
        (n,) = struct.unpack("<I", f.read(4))
    with open(path, "r+b") as f:
        f.truncate(4 + n)
    with pytest.raises(EngineHeaderError, match="no TensorRT plan"):
        read_engine(path)


def test_corrupt_header_and_corrupt_plan(tmp_path):
    path = tmp_path / "m.engine"
    bad = b'{"format": "edgeconf.engine", tensorrt: }'
    path.write_bytes(struct.pack("<I", len(bad)) + bad + PLAN)
    with pytest.raises(EngineHeaderError, match="corrupt engine header"):
        read_engine(str(path))
    invalid_utf8 = b'{"a": "\xff\xfe"}'
    path.write_bytes(struct.pack("<I", len(invalid_utf8)) + invalid_utf8 + PLAN)
    with pytest.raises(EngineHeaderError, match="corrupt engine header"):
        read_engine(str(path))
    # bytes that do not start like a header are taken for a plain plan (TensorRT has the last word)
    other = b'["x"]'
    path.write_bytes(struct.pack("<I", len(other)) + other + PLAN)
    with pytest.warns(PlainPlanWarning):
        assert read_engine(str(path)).plain
    write_engine(str(path), PLAN, header())
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # flip a byte of the plan
    path.write_bytes(bytes(raw))
    with pytest.raises(EngineHeaderError, match="sha256"):
        read_engine(str(path))
    huge = struct.pack("<I", 0x7FFFFFFF) + b'{"a":1}' + PLAN
    path.write_bytes(huge)
    with pytest.raises(EngineHeaderError, match="not plausible"):
        read_engine(str(path))


@pytest.mark.parametrize("name,content,what", [
    ("model.onnx", None, "an ONNX model"),
    ("empty.engine", b"", "empty"),
    ("notes.engine", b"hello, this is a README and not an engine at all\n" * 4, "a text file"),
    ("pic.engine", b"\x89PNG\r\n\x1a\n" + bytes(200), "a PNG image"),
    ("ckpt.engine", b"PK\x03\x04" + bytes(200), "a zip archive"),
    ("arr.engine", b"\x93NUMPY" + bytes(200), "a numpy"),
    ("tiny.engine", b"\x01\x02\x03\x04\x05\x06\x07\x08", "too small"),
    ("notes.onnx", b"hello, this is a README and not a model at all\n" * 4, "a text file"),  # bytes before the name
    ("empty.onnx", b"", "empty.*--out MODEL.engine"),  # never 'write an engine over empty.onnx'
])
def test_non_engine_files_are_named(tmp_path, two_models, name, content, what):
    path = tmp_path / name
    if content is None:
        path.write_bytes(open(two_models[0], "rb").read())
    else:
        path.write_bytes(content)
    with pytest.raises(NotAnEngineError, match=what) as info:
        read_engine(str(path))
    assert "edgeconf engine" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        read_engine(str(tmp_path / "nope.engine"))


def test_plain_plan_warns(tmp_path):
    path = tmp_path / "plain.plan"
    path.write_bytes(PLAN)
    with pytest.warns(PlainPlanWarning, match="no edgeconf header"):
        engine = read_engine(str(path))
    assert engine.header is None and engine.plan_offset == 0
    info = describe(str(path))
    assert info["header"] is None and "plain" in info["format"]
    with pytest.warns(PlainPlanWarning, match="cannot be checked"):
        check_compatible(None, DeviceRuntime("8.2.1"), str(path))


def test_same_tensorrt():
    assert same_tensorrt("8.2.1.8", "8.2.1.8")
    assert same_tensorrt("8.2.1", "8.2.1.8")
    assert not same_tensorrt("8.2.1.8", "8.2.1.9")
    assert not same_tensorrt("8.0.1.6", "8.2.1.8")
    assert not same_tensorrt("10.3.0", "8.2.1")
    assert not same_tensorrt("", "8.2.1")


def test_version_mismatch_message_names_both_versions_and_the_rebuild_command():
    h = header()
    rt = DeviceRuntime("10.3.0.30", "Orin", "8.7", "jetson-orin-nano")
    result = compatibility(h, rt, "stage1.engine")
    assert not result.ok
    msg = result.message
    assert "TensorRT 8.2.1.8" in msg and "TensorRT 10.3.0.30" in msg
    assert "NVIDIA Tegra X1 (compute 5.3)" in msg and "Orin (compute 8.7)" in msg
    assert "edgeconf engine small.onnx --fp16 --workspace 256 --profile 1,4,32 --out stage1.engine" in msg
    assert "on this device" in msg
    with pytest.raises(EngineCompatibilityError) as info:
        check_compatible(h, rt, "stage1.engine")
    assert isinstance(info.value, BackendUnavailableError)


def test_gpu_mismatch_alone():
    h = header(tensorrt="10.3.0")
    result = compatibility(h, DeviceRuntime("10.3.0", "NVIDIA GeForce RTX 3060", "8.6"), "m.engine")
    assert not result.ok and len(result.problems) == 1
    assert "built for NVIDIA Tegra X1 (compute 5.3) but this device has NVIDIA GeForce RTX 3060 (compute 8.6)" in result.message
    assert "TensorRT 10.3.0 but" not in result.message


def test_same_compute_capability_other_gpu_is_only_a_note():
    h = header(tensorrt="10.3.0", gpu="NVIDIA GeForce RTX 3060", compute_capability="8.6")
    rt = DeviceRuntime("10.3.0", "NVIDIA RTX A2000", "8.6")
    result = compatibility(h, rt)
    assert result.ok and result.notes
    with pytest.warns(UserWarning, match="same compute capability"):
        check_compatible(h, rt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_compatible(h, DeviceRuntime("10.3.0", "NVIDIA GeForce RTX 3060", "8.6")).ok


def test_rebuild_command_variants():
    assert rebuild_command(None, "x.engine") == "edgeconf engine MODEL.onnx --out x.engine"
    cmd = rebuild_command(header(precision="int8", profile=None, workspace_mb=None), "my model.engine")
    assert cmd == "edgeconf engine small.onnx --int8 --calib DATA --out 'my model.engine'"


def test_onnx_metadata_and_decode(tmp_path, two_models):
    model = onnx.load(two_models[0])
    onnx.helper.set_model_props(model, {"edgeconf.threshold": "0.3", "edgeconf.labels": '["a"]', "other": "x",
                                        "edgeconf.note": "not json"})
    path = str(tmp_path / "meta.onnx")
    onnx.save(model, path)
    meta = onnx_metadata(path)
    assert meta == {"threshold": 0.3, "labels": ["a"], "note": "not json"}
    assert decode_metadata({"x": "1"}) == {}
    with pytest.raises(ModelLoadError):
        onnx_metadata(str(tmp_path / "nothing.onnx"))


def test_describe_for_inspect(tmp_path):
    path = str(tmp_path / "m.engine")
    write_engine(path, PLAN, header())
    info = describe(path)
    json.dumps(info)  # JSON-ready for `edgeconf inspect --json`
    assert info["kind"] == "engine" and info["sidecar"] and info["plan_bytes"] == len(PLAN)
    assert info["tensorrt"] == "8.2.1.8" and info["precision"] == "fp16" and info["edgeconf"]["threshold"] == 0.42
    assert info["rebuild"].startswith("edgeconf engine small.onnx")


def test_inspect_command_shows_the_header(tmp_path):
    from click.testing import CliRunner

    from edgeconf.commands.inspect import inspect_cmd

    path = str(tmp_path / "m.engine")
    write_engine(path, PLAN, header())
    res = CliRunner().invoke(inspect_cmd, [path, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["header"]["source_onnx_sha256"] == "ab" * 32


def test_header_types_are_validated(tmp_path):
    path = tmp_path / "m.engine"
    bad = json.dumps({"format": "edgeconf.engine", "inputs": "nope"}).encode()
    path.write_bytes(struct.pack("<I", len(bad)) + bad + PLAN)
    with pytest.raises(EngineHeaderError, match="inputs"):
        read_engine(str(path))
