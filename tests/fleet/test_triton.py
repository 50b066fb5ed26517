"""The triton backend against a real Triton Inference Server on 127.0.0.1 (PyTriton on CPU)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from edgeconf.backends.triton import Expectation, RemoteSettings, TritonRunner
from edgeconf.bundle import load_bundle
from edgeconf.errors import BackendUnavailableError, ModelLoadError

from fleet_servers import free_port

pytestmark = pytest.mark.fleet

EXPECT = Expectation((1, 28, 28), "float32", 10, "logits")


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _same(a, b):
    assert [r.class_id for r in a] == [r.class_id for r in b]
    np.testing.assert_allclose([r.confidence for r in a], [r.confidence for r in b], atol=1e-5)


@pytest.mark.parametrize("proto", ["grpc", "http"])
def test_remote_answers_equal_local_execution(proto, fleet_bundle, edge_bundles, images):
    with load_bundle(fleet_bundle, memo=False) as local, load_bundle(edge_bundles[proto], memo=False) as edge:
        assert edge.stages[1].runner.remote and edge.stages[1].runner.backend == "triton"
        want = local.classify_batch(images)
        got = edge.classify_batch(images)
        one = edge.classify(images[0])
        _same(want, got)
        _same(want[:1], [one])
        assert all(r.stage == 1 and r.remote_failure is None for r in got)
        c = edge.counters
        assert c.remote_inputs == len(images) + 1 and c.remote_failures == 0
        stats = edge.stages[1].runner.stats.to_json()
        assert stats["answered"] == len(images) + 1 and stats["failures"] == {}


def test_load_checks_server_metadata(triton_server):
    r = TritonRunner(triton_server.grpc_url, "big", expect=EXPECT)
    assert r.inputs[0].shape == (None, 1, 28, 28) and r.inputs[0].dtype == "float32"
    assert r.max_batch == 64
    r.close()


@pytest.mark.parametrize("model, words", [("wrong_shape", "takes input"), ("wrong_classes", "answers 5 classes but the bundle has 10")])
def test_server_model_that_does_not_fit_the_stage(triton_server, model, words):
    with pytest.raises(ModelLoadError, match=words):
        TritonRunner(triton_server.grpc_url, model, expect=EXPECT)


@pytest.mark.parametrize("proto", ["grpc", "http"])
def test_model_the_server_does_not_have(triton_server, proto):
    url = triton_server.grpc_url if proto == "grpc" else triton_server.http_url
    with pytest.raises(ModelLoadError, match="has no model 'nope'"):
        TritonRunner(url, "nope", expect=EXPECT)


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_unreachable_url(scheme):
    pytest.importorskip("tritonclient.%s" % scheme)
    url = "%s://127.0.0.1:%d" % (scheme, free_port())  # nothing listens there
    with pytest.raises(BackendUnavailableError, match="cannot reach the Triton server"):
        TritonRunner(url, "big", settings=RemoteSettings(connect_timeout_s=2.0), expect=EXPECT)


def test_an_http_client_that_cannot_be_built_is_one_error_and_no_traceback_at_exit(monkeypatch):
    """tritonclient's HTTP client closes itself in ``__del__``; one whose constructor failed used to print an
    AttributeError traceback when it was collected. Its constructor still fails on an address parse_url refuses
    (port 99999): built the runner's way, that is one BackendUnavailableError and nothing at collection."""
    import gc

    http = pytest.importorskip("tritonclient.http")
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    shell = TritonRunner.__new__(TritonRunner)  # the address bypasses parse_url, as nothing else can now
    shell._module, shell.address, shell.url = http, "127.0.0.1:99999", "http://127.0.0.1:99999"
    with pytest.raises(BackendUnavailableError, match="cannot create an HTTP client for http://127.0.0.1:99999: Port out of range"):
        shell._new_http(1.0)
    gc.collect()
    assert unraisable == []
    try:  # the library's own constructor, as the runner called it before: the traceback this avoids
        http.InferenceServerClient("127.0.0.1:99999")
    except Exception:
        pass
    gc.collect()
    assert [type(u.exc_value) for u in unraisable] == [AttributeError]


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "grpc://127.0.0.1:99999", "http://[zz]:8000"])
def test_bad_url_in_an_edge_bundle_is_one_line_at_load(fleet_bundle, tmp_path, url):
    import json
    import os
    import subprocess

    from edgeconf.export.triton_repo import build_repo

    pytest.importorskip("tritonclient.http")
    build_repo(fleet_bundle, str(tmp_path / "repo"), edge=str(tmp_path / "edge"), url="http://127.0.0.1:8000")
    path = os.path.join(str(tmp_path / "edge"), "edgeconf.json")
    with open(path) as f:
        data = json.load(f)
    data["stages"][1]["url"] = url  # edited by hand
    with open(path, "w") as f:
        json.dump(data, f)
    np.savez(str(tmp_path / "x.npz"), x=np.zeros((2, 28, 28), np.uint8))
    p = subprocess.run([sys.executable, "-m", "edgeconf", "classify", str(tmp_path / "edge"), str(tmp_path / "x.npz")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and len(p.stderr.splitlines()) == 1, p.stderr
    assert p.stderr.startswith("edgeconf: error: ") and "url %r" % url in p.stderr and "Traceback" not in p.stderr


def test_delay_past_the_deadline_falls_back_and_opens_the_breaker(fleet_bundle, edge_bundles, triton_server, images):
    clock = FakeClock()
    with load_bundle(fleet_bundle, memo=False) as local:
        local_first = [int(np.argmax(local.stages[0].runner.run(local.preprocessing.batch([im]))["logits"])) for im in images[:4]]
    edge = load_bundle(edge_bundles["grpc"], memo=True)
    runner = TritonRunner(triton_server.grpc_url, "big", settings=RemoteSettings(deadline_ms=200, breaker_failures=3,
                                                                                   breaker_cooldown_s=30),
                          expect=EXPECT, breaker_clock=clock)
    edge.stages[1].runner.close()
    edge.stages[1].runner = runner
    try:
        triton_server.set_delay(1500)
        results = [edge.classify(im) for im in images[:4]]
        # every input answered, by the local stage, marked as a remote failure
        assert [r.class_id for r in results] == local_first
        assert [r.stage for r in results] == [0, 0, 0, 0]
        assert [r.remote_failure for r in results] == ["timeout", "timeout", "timeout", "circuit_open"]
        assert edge.counters.remote_failures == 4 and edge.counters.remote_reasons == {"timeout": 3, "circuit_open": 1}
        assert runner.breaker.state == "open"
        attempts = runner.stats.attempts
        edge.classify(images[4])
        assert runner.stats.attempts == attempts  # open: the server was not called
        c = edge.counters  # 5 reached the remote stage; the 2 the open breaker answered here were never sent
        assert c.remote_inputs == 5 and c.remote_sent == 3 and c.remote_reasons == {"timeout": 3, "circuit_open": 2}
        assert len(edge.memo) == 0  # fallback answers are never remembered
        json_row = results[0].to_json()
        assert json_row["remote_failure"] == "timeout"
    finally:
        triton_server.set_delay(0)
    _drain(triton_server)
    clock.t += 31  # the cool-down is over: the next request is the probe, and it succeeds
    res = edge.classify(images[5])
    assert res.remote_failure is None and res.stage == 1
    assert runner.breaker.state == "closed" and runner.breaker.probes == 1
    edge.close()


def _drain(server) -> None:
    """Wait (bounded by a long deadline, not by sleeping) until requests queued behind the delay are done."""
    r = TritonRunner(server.grpc_url, "big", settings=RemoteSettings(deadline_ms=60000))
    r.run_trusted({"input": np.zeros((1, 1, 28, 28), np.float32)}, ["logits"])
    r.close()


@pytest.mark.slow
def test_server_killed_mid_run_falls_back_then_recovers(fleet_bundle, edge_bundles, triton_server, images):
    clock = FakeClock()
    local = load_bundle(fleet_bundle, memo=False)
    want = local.classify_batch(images)
    local_first = [int(np.argmax(local.stages[0].runner.run(local.preprocessing.batch([im]))["logits"])) for im in images]
    local.close()
    edge = load_bundle(edge_bundles["grpc"], memo=False)
    runner = TritonRunner(triton_server.grpc_url, "big", settings=RemoteSettings(deadline_ms=2000, retries=1,
                                                                                   breaker_failures=2, breaker_cooldown_s=30),
                          expect=EXPECT, breaker_clock=clock)
    edge.stages[1].runner.close()
    edge.stages[1].runner = runner
    answers = []
    try:
        for i in range(0, 8, 2):
            answers += edge.classify_batch(images[i:i + 2])
        triton_server.kill()
        for i in range(8, 16, 2):
            answers += edge.classify_batch(images[i:i + 2])
        assert runner.breaker.state == "open"
        triton_server.start()
        _warm_one(triton_server)
        _channel_ready(runner)
        clock.t += 31
        for i in range(16, 24, 2):
            answers += edge.classify_batch(images[i:i + 2])
    finally:
        edge.close()
    assert len(answers) == len(images)  # no answer lost
    before, during, after = answers[:8], answers[8:16], answers[16:]
    _same(want[:8], before)
    _same(want[16:], after)
    assert all(r.remote_failure is None for r in before + after)
    assert all(r.remote_failure in ("unavailable", "circuit_open") for r in during)
    assert [r.class_id for r in during] == local_first[8:16]
    assert runner.breaker.probes == 1 and runner.breaker.state == "closed"


def _channel_ready(runner) -> None:
    """Wait until the runner's own gRPC channel has reconnected (a condition, bounded; not a fixed sleep)."""
    import time

    t_end = time.monotonic() + 60
    while time.monotonic() < t_end:
        try:
            if runner._grpc.is_server_live(client_timeout=5):
                return
        except Exception:
            time.sleep(0.05)
    raise AssertionError("the runner's channel did not reconnect within 60 s")


def _warm_one(server) -> None:
    r = TritonRunner(server.grpc_url, "big", settings=RemoteSettings(deadline_ms=60000))
    for n in (1, 2):
        r.run_trusted({"input": np.zeros((n, 1, 28, 28), np.float32)}, ["logits"])
    r.close()


def test_missing_tritonclient_names_the_extra(monkeypatch):
    from edgeconf.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # import of it fails, as without the package
    with pytest.raises(MissingDependencyError, match=r"pip install .tritonclient\[grpc,http\]>=2\.30. \(edgeconf.s \[fleet\] extra\)"):
        TritonRunner("grpc://127.0.0.1:1", "big")


def test_the_whole_cascade_served_as_one_fused_model(triton_server, fused_fleet_bundle, images):
    """``triton-repo --fused``: raw uint8 images in one request to the real server; the answers are the staged
    cascade's (class and answering stage identical, confidence within 1e-5)."""
    import tritonclient.grpc as grpcclient

    batch = np.stack(images)
    client = grpcclient.InferenceServerClient(triton_server.grpc_url.split("://", 1)[1])
    inp = grpcclient.InferInput("image", list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch)
    names = ("class", "confidence", "stage")
    res = client.infer("cascade", [inp], outputs=[grpcclient.InferRequestedOutput(n) for n in names])
    got = {n: res.as_numpy(n).reshape(-1) for n in names}
    client.close()
    with load_bundle(fused_fleet_bundle, form="staged", memo=False) as staged:
        want = staged.classify_batch(images)
    assert got["class"].tolist() == [r.class_id for r in want]
    assert got["stage"].tolist() == [r.stage for r in want]
    assert set(got["stage"].tolist()) == {0, 1}  # both branches of the graph ran in this one request
    np.testing.assert_allclose(got["confidence"], [r.confidence for r in want], atol=1e-5)
