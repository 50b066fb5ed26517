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
    (["--power", "bogus"], ["unknown --power source 'bogus'", "rapl"]),
    (["--source", "/nope/clip.mp4"], ["no such video file", "/nope/clip.mp4"]),
    (["--source", "demo://?seed=abc"], ["seed must be an integer"]),
    (["--screenshot", "x.png"], ["--screenshot", "add --quit-after"]),
    (["--fleet", "http://x/edgeconf"], ["not an MQTT URI", "--fleet takes", "mqtt://HOST:1883/edgeconf"]),
    (["--fleet", "mqtt://x"], ["no topic base", "--fleet takes"]),
])
def test_bad_arguments_are_one_line_errors_and_save_nothing(tmp_path, args, words):
    quit_after = [] if "--screenshot" in args else ["--quit-after", "3"]
    out = _gui(tmp_path, *args, *quit_after)
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("edgeconf: error: "), out.stderr
    for w in words:
        assert w in out.stderr, (w, out.stderr)
    assert "/DEVICE" not in out.stderr  # --fleet takes the topic base, not a device's topic
    assert not (tmp_path / "config" / "edgeconf" / "edgeconf-gui.conf").exists()


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
