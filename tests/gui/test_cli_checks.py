"""``edgeconf gui``'s arguments are checked before the window opens (so before anything is saved), and a bad
value already in the settings does not keep the window from starting."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("PySide6", reason="PySide6 is not installed (pip install '.[gui]')")
pytest.importorskip("pyqtgraph", reason="pyqtgraph is not installed (pip install '.[gui]')")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed")

pytestmark = pytest.mark.gui


def _gui(tmp_path, *args):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path / "config"), HOME=str(tmp_path))
    return subprocess.run([sys.executable, "-m", "edgeconf", "gui", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=str(tmp_path))


@pytest.mark.parametrize("args, words", [
    (["--regions", "foo"], ["unknown regions 'foo'", "motion"]),
    (["--regions", "motion:bogus=1"], ["unknown option(s) bogus", "min_area"]),
    (["--regions", "detector:/nope/model.onnx"], ["no such detector model", "/nope/model.onnx"]),
    (["--regions", "detector:class_score=abc"], ["class_score must be a number in [0, 1]", "'abc'"]),  # a value
    (["--regions", "motion:guided=maybe"], ["guided must be true or false"]),
    (["--power", "bogus"], ["unknown --power source 'bogus'", "rapl"]),
    (["--source", "/nope/clip.mp4"], ["no such video file", "/nope/clip.mp4"]),
    (["--source", "demo://?seed=abc"], ["seed must be an integer"]),
    (["--screenshot", "x.png"], ["--screenshot", "add --quit-after"]),
    (["--fleet", "http://x/edgeconf"], ["not an MQTT URI", "--fleet takes", "mqtt://HOST:1883/edgeconf"]),
    (["--fleet", "mqtt://x"], ["no topic base", "--fleet takes"]),
    (["--fleet", "mqtt://[::1/edgeconf"], ["cannot be read", "Invalid IPv6 URL", "--fleet takes"]),  # a typo
])
def test_bad_arguments_are_one_line_errors_and_save_nothing(tmp_path, args, words):
    quit_after = [] if "--screenshot" in args else ["--quit-after", "3"]
    out = _gui(tmp_path, *args, *quit_after)
    usage = args[0] in ("--regions", "--power", "--screenshot")  # a bad option value: exit 2, naming --help
    assert out.returncode == (2 if usage else 1), (out.returncode, out.stderr[-2000:])
    assert ("--help" in out.stderr) == usage
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("edgeconf: error: "), out.stderr
    for w in words:
        assert w in out.stderr, (w, out.stderr)
    assert "/DEVICE" not in out.stderr  # --fleet takes the topic base, not a device's topic
    assert not (tmp_path / "config" / "edgeconf" / "edgeconf-gui.conf").exists()


@pytest.mark.parametrize("args, named", [
    (["--telemetry", "mqtt://127.0.0.1:1/edgeconf/x"], "--telemetry does not apply"),
    (["BUNDLE", "--source", "demo://", "--regions", "full", "--events", "ev.jsonl", "--power", "none", "--no-start"],
     "BUNDLE, --source, --regions, --events, --power, --no-start do not apply"),
])
def test_fleet_refuses_the_operator_windows_options(tmp_path, gui_bundle, args, named):
    """--fleet used to drop these silently (nothing published under --telemetry, no event log, ...)."""
    args = [gui_bundle if a == "BUNDLE" else a for a in args]
    out = _gui(tmp_path, "--fleet", "mqtt://127.0.0.1:1/edgeconf", *args, "--quit-after", "3")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, (out.returncode, out.stderr[-2000:])
    assert out.stderr.startswith("edgeconf: error: --fleet opens the fleet view") and named in out.stderr
    assert "(see 'edgeconf gui --help')" in out.stderr
    assert not (tmp_path / "ev.jsonl").exists() and not (tmp_path / "config" / "edgeconf" / "edgeconf-gui.conf").exists()


def test_the_help_says_what_fleet_and_telemetry_take():
    from click.testing import CliRunner

    from edgeconf.gui.cli import gui_cmd

    text = " ".join(CliRunner().invoke(gui_cmd, ["--help"], terminal_width=400).output.split())
    tele = text.split("--telemetry", 1)[1].split("--fleet", 1)[0]
    for w in ("mqtts://", "tls=1", "ca=FILE", "queue=N", "frames=0", "interval=S"):
        assert w in tele, w
    fleet = text.split("--fleet", 1)[1]
    assert "topic base" in fleet and "mqtt://HOST:1883/edgeconf" in fleet


def test_good_arguments_pass_the_checks():
    from edgeconf.gui.cli import check_arguments

    for regions in (None, "detector", "detector:class_score=0", "motion", "full", "truth"):
        check_arguments(regions, "auto", "demo://?seed=2")
    check_arguments(None, "none", "rtsp://192.0.2.1/cam")  # a stream is not opened here (the window retries it)
    check_arguments(None, "null", "0")


def test_a_bad_regions_value_in_the_settings_falls_back_to_the_default_with_a_notice(qtbot, settings, gui_bundle):
    from edgeconf.gui.window import MainWindow
    from edgeconf.live.defaults import DEFAULT_REGIONS

    settings.setValue("regions", "foo")
    settings.sync()
    win = MainWindow(bundle=gui_bundle, settings=settings)
    qtbot.addWidget(win)
    assert win.model.regions == DEFAULT_REGIONS and win.controls.regions_text() == DEFAULT_REGIONS
    assert "foo" in win.settings_notice and "foo" in win.statusBar().currentMessage()
    win.controls.regions_combo.setEditText("foo")  # typed in the window: refused at Start, nothing runs
    assert win.start() is False and win.worker is None
    assert "unknown regions 'foo'" in win.statusBar().currentMessage()
    win.close()


def _clip(path, frames=4):
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    return str(path)


@pytest.mark.parametrize("args, words", [
    (["--regions", "truth", "--source", "CLIP"], ["regions 'truth'", "clip.avi has none", "--regions detector"]),
    (["--regions", "truth", "--source", "rtsp://127.0.0.1:9/cam"], ["regions 'truth'", "rtsp://127.0.0.1:9/cam has none"]),
    (["--source", "CLIP", "--events", "/nonexistent-folder/e.jsonl"], ["cannot write the event log", "does not exist"]),
])
def test_what_run_refuses_before_it_starts_is_refused_before_the_window(tmp_path, args, words):
    clip = _clip(tmp_path / "clip.avi")
    out = _gui(tmp_path, *[clip if a == "CLIP" else a for a in args], "--quit-after", "3")
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("edgeconf: error: "), out.stderr
    for w in words:
        assert w in out.stderr, (w, out.stderr)
    assert not (tmp_path / "config" / "edgeconf" / "edgeconf-gui.conf").exists()


def test_a_run_that_fails_in_the_window_exits_non_zero_with_a_complete_event_log(tmp_path):
    import json

    events = tmp_path / "e.jsonl"
    out = _gui(tmp_path, "--source", "v4l2:///dev/edgeconf-no-such-camera", "--events", str(events), "--quit-after", "1")
    errors = [line for line in out.stderr.splitlines() if line.startswith("edgeconf:")]
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    assert len(errors) == 1 and "the run failed: no such camera device /dev/edgeconf-no-such-camera" in errors[0]
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert [r["type"] for r in records] == ["start", "source", "summary", "stop"], records
    assert records[0]["source"] == "v4l2:///dev/edgeconf-no-such-camera" and records[0]["gui"] is True
    assert records[1]["state"] == "failed" and records[2]["frames"] == 0 and records[2]["source_state"] == "failed"
    assert records[3]["reason"] == "failed"
