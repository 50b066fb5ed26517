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


def test_demo_does_not_count_the_remote_stage_as_this_boards_compute(triton_server, tmp_path):
    from click.testing import CliRunner

    from edgeconf.cli import cli
    from edgeconf.export.triton_repo import build_repo

    # the shipped live bundle with its last stage served; a long deadline: every remote request is answered
    build_repo(LIVE_BUNDLE, str(tmp_path / "repo"), stages=["3"], kind="cpu", edge=str(tmp_path / "edge"),
               url=triton_server.grpc_url, deadline_ms=30000)
    from edgeconf.bundle import read_manifest, write_manifest

    m = read_manifest(str(tmp_path / "edge"))
    for spec in m.stages[:2]:
        spec.threshold, spec.ood = 1.0, None  # every crop a model answers goes on to the served stage
    write_manifest(str(tmp_path / "edge"), m)
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
    assert sum(summary["remote_reasons"].values()) == 8
    assert set(summary["remote_reasons"]) <= {"timeout", "circuit_open"}
    assert "remote stage: 8 of 8 inputs sent to it were answered by the last local stage instead" in err
    _drain(triton_server)


def _drain(server) -> None:
    """Wait (bounded by a long deadline) until the requests queued behind the delay are done."""
    from edgeconf.backends.triton import RemoteSettings, TritonRunner

    r = TritonRunner(server.grpc_url, "big", settings=RemoteSettings(deadline_ms=60000))
    r.run_trusted({"input": np.zeros((1, 1, 28, 28), np.float32)}, ["logits"])
    r.close()
