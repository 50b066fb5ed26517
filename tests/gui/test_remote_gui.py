"""A bundle whose last stage is remote and its server unreachable: the window shows the fallbacks and the
event log gets ``remote_failure`` and ``summary`` events, as ``edgeconf demo`` and ``run`` write them."""
from __future__ import annotations

import json
import os
import shutil

import pytest

pytest.importorskip("PySide6", reason="PySide6 is not installed (pip install '.[gui]')")
pytest.importorskip("pyqtgraph", reason="pyqtgraph is not installed (pip install '.[gui]')")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed")

from edgeconf.backends.base import Runner, TensorSpec  # noqa: E402
from edgeconf.errors import RemoteStageError  # noqa: E402
from edgeconf.gui.window import MainWindow  # noqa: E402

pytestmark = pytest.mark.gui

WAIT_MS = 20000


class UnreachableServer(Runner):
    """The runner of a remote stage whose server does not answer (what the Triton runner raises then)."""

    backend = "triton"
    remote = True

    def __init__(self) -> None:
        self.inputs = (TensorSpec("input", (None, 1, 28, 28), "float32"),)
        self.outputs = (TensorSpec("logits", (None, 10), "float32"),)

    def run_trusted(self, feeds, output_names):
        raise RemoteStageError("cannot reach grpc://127.0.0.1:9", "unavailable")


@pytest.fixture
def remote_bundle(gui_bundle, tmp_path, monkeypatch):
    """A copy of the GUI bundle whose last stage is served by Triton at a port nothing listens on; stage 1 sends
    every crop on (threshold 1.0). Loading checks the server, so the server is stood in for by a runner that
    fails every call as an unreachable one does (the server went away after the bundle loaded)."""
    import edgeconf.bundle as bundle_mod

    folder = str(tmp_path / "remote_bundle")
    shutil.copytree(gui_bundle, folder)
    path = os.path.join(folder, "edgeconf.json")
    with open(path) as f:
        manifest = json.load(f)
    manifest["stages"][0]["threshold"] = 1.0
    last = manifest["stages"][-1]
    last.update(onnx=last["model"], model="large", backend="triton", url="grpc://127.0.0.1:9", deadline_ms=50.0)
    with open(path, "w") as f:
        json.dump(manifest, f)
    monkeypatch.setattr(bundle_mod, "_prepare_remote", lambda spec, manifest: (UnreachableServer(), "remote-test"))
    return folder


def test_a_failing_remote_stage_is_shown_and_logged(qtbot, settings, remote_bundle, tmp_path):
    events = tmp_path / "events.jsonl"
    win = MainWindow(bundle=remote_bundle, source="demo://?size=640x480&objects=5&seed=3", settings=settings,
                     regions="truth", events_path=str(events), output_dir=str(tmp_path))
    qtbot.addWidget(win)
    win.resize(1052, 708)
    win.show()
    assert win.start()
    qtbot.waitUntil(lambda: win.model.stats.latest is not None and win.model.stats.latest.remote_failures > 0,
                    timeout=WAIT_MS)
    assert [s.remote for s in win.model.stages] == [False, True]
    win.cascade_panel.refresh(win.model)
    text = win.cascade_panel.summary.text()
    p = win.model.stats.latest
    assert "stage 2 remote: <b>%d fallbacks</b>" % p.remote_failures in text and "unavailable" in text
    assert "of %d crops that reached it: %d sent" % (p.remote_inputs, p.remote_calls) in text
    assert p.remote_calls == p.remote_inputs  # an unreachable server is tried for every crop: each one was sent
    win.close()  # stops the worker: the event log gets its summary and stop events

    rows = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [r["type"] for r in rows]
    fails = [r for r in rows if r["type"] == "remote_failure"]
    assert fails and all(r["reasons"].get("unavailable") for r in fails)
    assert sum(r["inputs"] for r in fails) == fails[-1]["total"] and fails[-1]["calls"] >= fails[-1]["total"]
    assert fails[-1]["reached"] == fails[-1]["calls"]
    assert kinds.count("summary") == 1 and kinds[-1] == "stop" and kinds.index("summary") > kinds.index(fails[-1]["type"])
    summary = rows[kinds.index("summary")]
    assert summary["counters"]["remote_failures"] == fails[-1]["total"]
    assert summary["frames"] >= 1 and summary["power"] == "not measured"
    for key in ("wall_s", "fps", "cpu", "latency_ms", "source_state", "interrupted"):
        assert key in summary


def test_crops_the_open_breaker_answered_here_are_not_shown_as_sent():
    from edgeconf.gui.model import GuiModel, StageInfo, StatsPoint
    from edgeconf.gui.panels import remote_text

    model = GuiModel(stages=[StageInfo("small", 0.5, "margin"), StageInfo("big", 0.0, "margin", remote=True)])
    p = StatsPoint(t=0.0, frame=9, pipeline_fps=10.0, display_fps=None, latency_ms=1.0, answers=200, model_inputs=200,
                   memo_hits=0, exits=(200, 0), stage_calls=(200, 130), memo_hit_rate_recent=None,
                   escalation_rate_recent=None, remote_calls=30, remote_failures=112,
                   remote_reasons={"circuit_open": 100, "timeout": 12}, remote_inputs=130)
    text = remote_text(model, p)
    assert text.endswith("stage 2 remote: <b>112 fallbacks</b></span> (answered by the last local stage: circuit_open "
                         "100, timeout 12) of 130 crops that reached it: 30 sent, 100 answered here while the circuit "
                         "breaker was open")
    ok = StatsPoint(**dict(p.__dict__, remote_calls=130, remote_failures=0, remote_reasons={}))
    assert remote_text(model, ok) == " · stage 2 remote: 130 crops sent, no fallback"
    none = StatsPoint(**dict(p.__dict__, remote_inputs=0, remote_calls=0, remote_failures=0, remote_reasons={}))
    assert remote_text(model, none) == " · stage 2 remote: no crop reached it yet"


def test_a_bundle_without_a_remote_stage_says_nothing_about_remote(qtbot, settings, gui_bundle, tmp_path):
    win = MainWindow(bundle=gui_bundle, source="demo://?size=640x480&objects=5&seed=3", settings=settings,
                     regions="truth", output_dir=str(tmp_path))
    qtbot.addWidget(win)
    win.show()
    assert win.start()
    qtbot.waitUntil(lambda: win.model.stats.latest is not None and win.model.stats.latest.answers > 0, timeout=WAIT_MS)
    win.cascade_panel.refresh(win.model)
    assert "remote" not in win.cascade_panel.summary.text()
    win.close()
