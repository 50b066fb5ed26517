"""ONNX Runtime's TensorRT execution provider: options and the engine cache keyed so nothing stale is reused."""
from __future__ import annotations

import os

import pytest

from edgeconf.backends.ort_tensorrt import (PROVIDER, CacheIdentity, cache_dir, decode_infer_lib_version,
                                            default_cache_root, parse_nvidia_smi, prepare, provider_options,
                                            tensorrt_providers)
from edgeconf.errors import BackendUnavailableError, ConfigError

BASE = CacheIdentity("0123456789ab" + "cd" * 26, "1.16.3", "8.2.1.8", "NVIDIA Tegra X1", "5.3", "fp16")


def test_cache_key_changes_with_every_part():
    keys = {BASE.key()}
    for change in (dict(model_sha256="ff" * 32), dict(ort_version="1.17.0"), dict(tensorrt_version="8.2.1.9"),
                   dict(gpu="Orin"), dict(compute_capability="8.7"), dict(precision="fp32")):
        other = CacheIdentity(**dict(BASE.__dict__, **change))
        keys.add(other.key())
    assert len(keys) == 7


def test_cache_key_is_stable_readable_and_safe():
    key = BASE.key()
    assert key == CacheIdentity(**BASE.__dict__).key()
    assert key.startswith("0123456789ab_ort1.16.3_trt8.2.1.8_NVIDIA-Tegra-X1-sm53_fp16_")
    assert "/" not in key and " " not in key
    weird = CacheIdentity("a" * 64, "1.0", "10.0", "GPU / with:odd*chars", "", "int8")
    assert "/" not in weird.key() and ":" not in weird.key()
    assert cache_dir("/c", BASE) == os.path.join("/c", key)


def test_default_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGECONF_CACHE", str(tmp_path))
    assert default_cache_root() == os.path.join(str(tmp_path), "ort-tensorrt")
    monkeypatch.delenv("EDGECONF_CACHE")
    assert default_cache_root().endswith(os.path.join(".cache", "edgeconf", "ort-tensorrt"))


def test_provider_options():
    opts = provider_options("/cache/x", fp16=True, workspace_mb=256, device_id=1)
    assert opts == {"device_id": 1, "trt_fp16_enable": True, "trt_int8_enable": False,
                    "trt_max_workspace_size": 256 << 20, "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": "/cache/x"}
    timed = provider_options("/cache/x", timing_cache=True)
    assert timed["trt_timing_cache_enable"] is True and timed["trt_timing_cache_path"] == "/cache/x"
    off = provider_options(None)
    assert off["trt_engine_cache_enable"] is False and "trt_engine_cache_path" not in off
    int8 = provider_options(None, int8=True, int8_calibration_table="calib.flatbuffers")
    assert int8["trt_int8_enable"] and int8["trt_fp16_enable"]
    assert int8["trt_int8_calibration_table_name"] == "calib.flatbuffers"
    with pytest.raises(ConfigError, match="calibration table"):
        provider_options(None, int8=True)
    with pytest.raises(ConfigError, match="workspace"):
        provider_options(None, workspace_mb=0)


@pytest.mark.parametrize("raw,want", [(8001, "8.0.1"), (8201, "8.2.1"), (8601, "8.6.1"), (100300, "10.3.0"),
                                      (100800, "10.8.0"), (90200, "9.2.0")])
def test_decode_infer_lib_version(raw, want):
    assert decode_infer_lib_version(raw) == want


def test_parse_nvidia_smi():
    assert parse_nvidia_smi("NVIDIA GeForce RTX 3060, 8.6\n") == ("NVIDIA GeForce RTX 3060", "8.6")
    assert parse_nvidia_smi("") is None


def test_providers_with_known_versions(tmp_path):
    provs = tensorrt_providers("ab" * 32, fp16=True, workspace_mb=512, cache_root=str(tmp_path), ort_version="1.16.3",
                               tensorrt_version="8.2.1.8", gpu=("NVIDIA Tegra X1", "5.3"))
    name, opts = provs[0]
    assert name == PROVIDER and provs[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert os.path.isdir(opts["trt_engine_cache_path"])
    assert os.path.dirname(opts["trt_engine_cache_path"]) == str(tmp_path)
    again = tensorrt_providers("ab" * 32, fp16=True, cache_root=str(tmp_path), ort_version="1.16.3",
                               tensorrt_version="8.2.1.8", gpu=("NVIDIA Tegra X1", "5.3"))[0][1]
    assert again["trt_engine_cache_path"] == opts["trt_engine_cache_path"]
    upgraded = tensorrt_providers("ab" * 32, fp16=True, cache_root=str(tmp_path), ort_version="1.16.3",
                                  tensorrt_version="8.2.3.0", gpu=("NVIDIA Tegra X1", "5.3"))[0][1]
    assert upgraded["trt_engine_cache_path"] != opts["trt_engine_cache_path"]


def test_unknown_tensorrt_or_gpu_turns_the_cache_off(tmp_path, monkeypatch):
    import edgeconf.backends.ort_tensorrt as mod

    monkeypatch.setattr(mod, "detect_tensorrt_version", lambda: None)
    with pytest.warns(UserWarning, match="cache is off"):
        provs = tensorrt_providers("ab" * 32, cache_root=str(tmp_path), ort_version="1.16.3", gpu=("X", "8.6"))
    assert provs[0][1]["trt_engine_cache_enable"] is False
    assert os.listdir(str(tmp_path)) == []


def test_prepare_here_says_the_provider_is_missing(two_models, tmp_path):
    """This machine's onnxruntime has no TensorRT EP: a typed error naming it and the CPU way out, not a crash, and
    no warning about an engine cache that could never be used."""
    import warnings

    with pytest.raises(BackendUnavailableError, match="TensorrtExecutionProvider.*--backend onnxruntime"), \
            warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare(two_models[0], fp16=True, cache_root=str(tmp_path))
