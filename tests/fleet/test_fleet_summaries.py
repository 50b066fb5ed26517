"""What the summaries of `edgeconf demo` and `edgeconf classify` say about a remote stage, against the real Triton
server of the fleet tests on 127.0.0.1."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

LIVE_BUNDLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "edgeconf", "data", "zoo", "live")

pytestmark = pytest.mark.fleet


def _edge_sending_every_crop(triton_server, tmp_path, deadline_ms: int) -> None:
    """tmp_path/edge: the shipped live bundle with its last stage served by ``triton_server``; stages 1 and 2 never
    answer, so every crop a model sees goes on to the served stage."""
    from edgeconf.bundle import read_manifest, write_manifest
    from edgeconf.export.triton_repo import build_repo

    build_repo(LIVE_BUNDLE, str(tmp_path / "repo"), stages=["3"], kind="cpu", edge=str(tmp_path / "edge"),
               url=triton_server.grpc_url, deadline_ms=deadline_ms)
    m = read_manifest(str(tmp_path / "edge"))
    for spec in m.stages[:2]:
        spec.threshold, spec.ood = 1.0, None
    write_manifest(str(tmp_path / "edge"), m)


def test_demo_does_not_count_the_remote_stage_as_this_boards_compute(triton_server, tmp_path):
    from click.testing import CliRunner

    from edgeconf.cli import cli

    # a long deadline: every remote request is answered
    _edge_sending_every_crop(triton_server, tmp_path, deadline_ms=30000)
    args = ["demo", "--bundle", str(tmp_path / "edge"), "--frames", "40",
            "--no-live"]
    r = CliRunner().invoke(cli, args + ["--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    c, comp = s["counters"], s["compute"]
    assert c["remote_calls"] > 0 and c["remote_failures"] == 0
    assert c["remote_seconds"] > 0  # the wait was measured, and kept apart from model_seconds
    assert comp["remote_stages"] == ["stage3"]
    assert comp["remote_wait_s"] == round(c["remote_seconds"], 4)
    assert comp["cascade_model_s"] == round(c["model_seconds"], 4)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    line = [x for x in r.output.splitlines() if x.startswith("compute saved")][0]
    assert "of this board's model time" in line and "remote stage wait" in line
    assert line.endswith("s, not this board's compute")


def test_crops_the_open_breaker_answered_here_are_not_reported_as_sent(triton_server, mosquitto, tmp_path):
    """demo against a server slower than the deadline: after 3 timeouts the breaker opens and answers crops here
    without sending them. The summary, its text line, the remote_failure events and the MQTT status count those
    apart from the crops sent."""
    from click.testing import CliRunner

    from edgeconf.cli import cli
    from edgeconf.live.cli import _fleet_lines

    from mqtt_subscriber import Subscriber

    _edge_sending_every_crop(triton_server, tmp_path, deadline_ms=50)
    sub = Subscriber(mosquitto.port, "edgeconf/cam-r/#")
    triton_server.set_delay(400)
    try:
        r = CliRunner().invoke(cli, ["demo", "--bundle", str(tmp_path / "edge"), "--frames", "30", "--no-live", "--json",
                                     "--events", str(tmp_path / "events.jsonl"),
                                     "--telemetry", mosquitto.uri + "/edgeconf/cam-r"])
        assert r.exit_code == 0, r.output
        msgs = sub.until(lambda t, m: t.endswith("/state") and m.get("online") is False, "offline state")
    finally:
        triton_server.set_delay(0)
        sub.close()
    s = json.loads(r.output)
    c = s["counters"]
    breaker = c["remote_reasons"].get("circuit_open", 0)
    assert breaker > 0 and c["remote_failures"] == c["remote_inputs"]  # every crop fell back
    assert c["remote_calls"] == c["remote_inputs"] - breaker  # only what went out counts as sent
    assert c["remote_calls"] == c["remote_reasons"].get("timeout", 0)
    line = [x for x in _fleet_lines(s) if x.startswith("remote")][0]
    assert line == ("remote        %d crops reached the remote stage: %d sent, %d answered here while the circuit "
                    "breaker was open; %d answered by the last local stage instead (%s)"
                    % (c["remote_inputs"], c["remote_calls"], breaker, c["remote_failures"],
                       ", ".join("%s %d" % kv for kv in sorted(c["remote_reasons"].items()))))
    last = [e for e in (json.loads(x) for x in open(tmp_path / "events.jsonl")) if e["type"] == "remote_failure"][-1]
    assert (last["reached"], last["calls"], last["total"]) == (c["remote_inputs"], c["remote_calls"], c["remote_failures"])
    status = [m for t, m in msgs if t == "edgeconf/cam-r/status"][-1]
    assert status["remote"] == {"inputs": c["remote_inputs"], "calls": c["remote_calls"],
                                "failures": c["remote_failures"], "reasons": c["remote_reasons"]}
    _drain(triton_server)


def test_classify_summary_counts_remote_fallbacks(triton_server, fleet_bundle, tmp_path, capsys):
    from edgeconf.commands.classify import classify_cmd
    from edgeconf.export.triton_repo import build_repo

    build_repo(fleet_bundle, str(tmp_path / "repo"), edge=str(tmp_path / "edge"), url=triton_server.grpc_url,
               deadline_ms=100)
    rng = np.random.default_rng(3)
    np.savez(str(tmp_path / "x.npz"), x=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8))
    triton_server.set_delay(1500)  # the server answers well past the deadline: every remote request falls back
    try:
        with pytest.raises(SystemExit) as done:
            classify_cmd.main([str(tmp_path / "edge"), str(tmp_path / "x.npz"), "--out", str(tmp_path / "rows.jsonl"),
                               "--batch", "2"], standalone_mode=True)
        assert done.value.code == 0
    finally:
        triton_server.set_delay(0)
    err = capsys.readouterr().err
    rows = [json.loads(x) for x in open(tmp_path / "rows.jsonl")]
    failed = [r for r in rows if r.get("remote_failure")]
    assert len(failed) == 8
    summary = json.loads(err.splitlines()[-1][len("summary: "):])
    assert summary["remote_inputs"] == 8 and summary["remote_failures"] == 8
    # three requests of 2 time out (sent); the breaker (3 failures) is then open: the last 2 are answered here unsent
    assert summary["remote_reasons"] == {"timeout": 6, "circuit_open": 2}
    assert summary["remote_sent"] == 6
    # the wait on the server is reported apart from this machine's model time, and every row lists it
    assert summary["remote_seconds"] == summary["stage_seconds"][1] and summary["remote_seconds"] >= 0.29  # 3 x 100 ms
    assert summary["model_seconds"] == summary["stage_seconds"][0]
    assert all(r["stages_run"] == 1 and len(r["stage_ms"]) == 2 for r in failed)
    assert sum(r["stage_ms"][1] for r in failed) == pytest.approx(1e3 * summary["remote_seconds"], abs=0.01)
    assert ("remote stage wait %.3f s (the server's work and the network, not this machine's compute; model time here "
            "%.3f s)" % (summary["remote_seconds"], summary["model_seconds"])) in err
    assert ("8 inputs reached the remote stage: 6 sent, 2 answered here while the circuit breaker was open; 8 of them "
            "answered by the last local stage instead (circuit_open 2, timeout 6); their rows carry remote_failure") in err
    _drain(triton_server)


def _drain(server) -> None:
    """Wait (bounded by a long deadline) until the requests queued behind the delay are done."""
    from edgeconf.backends.triton import RemoteSettings, TritonRunner

    r = TritonRunner(server.grpc_url, "big", settings=RemoteSettings(deadline_ms=60000))
    r.run_trusted({"input": np.zeros((1, 1, 28, 28), np.float32)}, ["logits"])
    r.close()
