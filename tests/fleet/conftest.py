"""Fixtures of the fleet tests: a real bundle, its Triton repository, and real servers on 127.0.0.1.

The Triton server (NVIDIA PyTriton on CPU, Python 3.12 environment ``.venv-triton``) starts once per session;
tests that need it skip with the reason where it cannot start. Nothing here contacts any address but 127.0.0.1.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts"))

from fleet_servers import MosquittoProcess, TritonProcess  # noqa: E402
from onnx_models import random_classifier, save  # noqa: E402

LABELS = ["c%d" % i for i in range(10)]
LIVE_BUNDLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "edgeconf", "data", "zoo", "live")


@pytest.fixture(scope="session")
def fleet_bundle(tmp_path_factory):
    """A two-stage 28×28 grey bundle; stage 1's threshold 1.0 sends every input on to stage 2 (the served one)."""
    from edgeconf.bundle import MemoSettings, StageSpec, save_bundle
    from edgeconf.preprocess import Preprocessing

    folder = tmp_path_factory.mktemp("fleet")
    a = save(random_classifier(1, scale=0.2), folder / "a.onnx")
    b = save(random_classifier(2, scale=0.2), folder / "b.onnx")
    stages = [StageSpec("small", "small.onnx", "margin", 1.0), StageSpec("big", "big.onnx", "margin", 0.0)]
    save_bundle(str(folder / "bundle"), stages, {"small.onnx": a, "big.onnx": b}, LABELS,
                Preprocessing(size=(28, 28), channels=1), memo=MemoSettings(True, "exact", 0, 1024), name="fleet-test")
    return str(folder / "bundle")


@pytest.fixture(scope="session")
def fused_fleet_bundle(fleet_bundle, tmp_path_factory):
    """A copy of the fleet bundle with its fused graph (any batch) and a stage-1 threshold that lets some inputs exit."""
    import shutil

    from edgeconf.bundle import read_manifest, write_manifest
    from edgeconf.export.fuse import fuse_bundle

    folder = str(tmp_path_factory.mktemp("fused") / "bundle")
    shutil.copytree(fleet_bundle, folder)
    manifest = read_manifest(folder)
    manifest.stages[0].threshold = 0.5  # about half of the test images exit at stage 1
    write_manifest(folder, manifest)
    fuse_bundle(folder)
    return folder


@pytest.fixture(scope="session")
def triton_server(fleet_bundle, fused_fleet_bundle, tmp_path_factory):
    """A running Triton server with the bundle's stage 'big' and two models that do not fit it."""
    why = TritonProcess.why_unavailable()
    if why:
        pytest.skip("Triton server cannot start here: %s" % why)
    pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (pip install '.[fleet]')")
    from edgeconf.atomic import write_bytes, write_text
    from edgeconf.export.triton_repo import build_repo, config_pbtxt, describe_onnx

    work = tmp_path_factory.mktemp("triton")
    repo = str(work / "repo")
    build_repo(fleet_bundle, repo, kind="cpu")
    build_repo(fused_fleet_bundle, repo, kind="cpu", fused=True, name="cascade")  # the whole cascade as one model
    build_repo(LIVE_BUNDLE, repo, stages=["3"], kind="cpu")  # the shipped live bundle's last stage ('stage3')
    for name, model in (("wrong_shape", random_classifier(3, input_shape=(1, 32, 32))),
                        ("wrong_classes", random_classifier(4, classes=5))):
        src = save(model, work / (name + ".onnx"))
        os.makedirs(os.path.join(repo, name, "1"))
        with open(src, "rb") as f:
            write_bytes(os.path.join(repo, name, "1", "model.onnx"), f.read())
        write_text(os.path.join(repo, name, "config.pbtxt"), config_pbtxt(describe_onnx(src, name, name), kind="KIND_CPU"))
    server = TritonProcess(repo, str(work))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.skip("Triton server did not start: %s" % exc)
    try:
        _warm(server)
        yield server
    finally:
        server.stop()


def _warm(server: TritonProcess) -> None:
    """First requests of each batch size are slow (allocation); make them before any test measures deadlines."""
    from edgeconf.backends.triton import RemoteSettings, TritonRunner

    for url in (server.grpc_url, server.http_url):
        r = TritonRunner(url, "big", settings=RemoteSettings(deadline_ms=30000))
        for n in (1, 2, 4, 8, 16, 32):
            r.run_trusted({"input": np.zeros((n, 1, 28, 28), np.float32)}, ["logits"])
        r.close()


@pytest.fixture(scope="session")
def edge_bundles(fleet_bundle, triton_server, tmp_path_factory):
    """protocol -> an edge bundle whose stage 'big' is served by the session's server."""
    from edgeconf.export.triton_repo import build_repo

    out = {}
    for proto, url in (("grpc", triton_server.grpc_url), ("http", triton_server.http_url)):
        work = tmp_path_factory.mktemp("edge_" + proto)
        build_repo(fleet_bundle, str(work / "repo"), edge=str(work / "edge"), url=url, deadline_ms=2000)
        out[proto] = str(work / "edge")
    return out


@pytest.fixture
def images():
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(24)]


@pytest.fixture
def mosquitto(tmp_path):
    """A fresh mosquitto broker on a free port of 127.0.0.1 (skips where mosquitto is not installed)."""
    why = MosquittoProcess.why_unavailable()
    if why:
        pytest.skip(why)
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install '.[fleet]')")
    broker = MosquittoProcess(str(tmp_path))
    broker.start()
    yield broker
    broker.stop()
